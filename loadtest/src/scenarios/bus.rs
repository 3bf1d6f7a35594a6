//! The bus scenarios (`bus-nats`, `bus-amqp`), two rows each:
//!
//! 1. **backlog**: `--bus-backlog` events are published first, then a source is created and
//!    drains them. Their type matches no webhook, as in the ingest scenario's rows, so this is
//!    what consuming itself costs and the figure to compare with batched HTTP ingest: events
//!    committed per second from the source's creation (connecting to the broker included) to
//!    the last commit. Publishing is not in it (on this machine the broker confirms publishes
//!    slower than a source consumes).
//! 2. **flow**: events published as fast as the broker confirms them, for the phase's
//!    duration, while a source consumes them (acknowledging each batch once committed) and
//!    delivers them to the receiver.
//!
//! For the flow row:
//! The row's "accepted" column is what the gateway committed from the bus per second (publish
//! start to the last commit, read from `hookyard_source_messages_total{outcome="committed"}`),
//! the figure to compare with the ingest scenario's batched HTTP row; the broker's publish rate
//! is in a note, since the source cannot consume faster than the messages arrive. Lag is publish
//! to delivery (the event carries the publisher's `sent_at_ns`). Every event has an id in its
//! body, so the receiver's lost/duplicated columns count by event as elsewhere.

use std::time::{Duration, Instant};

use anyhow::Context;
use async_nats::jetstream;
use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::json;

use super::{fill_deliveries, push_event, webhook, Route, Runner};
use crate::gateway::Monitor;
use crate::generator::GenStats;
use crate::procfs;
use crate::receiver::{new_histogram, Mode};
use crate::report::Row;

/// Messages published before waiting for the broker's confirmations.
const PUBLISH_WINDOW: usize = 500;
/// The source's name in the gateway.
const SOURCE: &str = "lt-bus";

/// Which broker.
#[derive(Debug, Clone, Copy)]
pub enum Bus {
    /// NATS JetStream (a stream and a durable pull consumer).
    Nats,
    /// RabbitMQ (a durable queue).
    Amqp,
}

/// Where the brokers are, and the backlog drained in the first row.
#[derive(Debug, Clone)]
pub struct BusUrls {
    /// `nats://host:port`.
    pub nats: String,
    /// `amqp://user:password@host:port/vhost`.
    pub amqp: String,
    /// Events published before the backlog row's source starts.
    pub backlog: u64,
}

/// A connected publisher and what the source needs to know.
enum Publisher {
    Nats {
        js: jetstream::Context,
        stream: String,
        subject: String,
    },
    Amqp {
        connection: lapin::Connection,
        channel: lapin::Channel,
        queue: String,
    },
}

impl Publisher {
    async fn connect(bus: Bus, urls: &BusUrls, name: &str) -> anyhow::Result<Publisher> {
        Ok(match bus {
            Bus::Nats => {
                let client = async_nats::connect(urls.nats.as_str())
                    .await
                    .with_context(|| format!("connecting to NATS at {}", urls.nats))?;
                let js = jetstream::new(client);
                let (stream, subject) = (name.replace('-', "_"), format!("{name}.events"));
                js.create_stream(jetstream::stream::Config {
                    name: stream.clone(),
                    subjects: vec![subject.clone()],
                    ..Default::default()
                })
                .await
                .context("creating the stream")?;
                Publisher::Nats {
                    js,
                    stream,
                    subject,
                }
            }
            Bus::Amqp => {
                let connection =
                    lapin::Connection::connect(&urls.amqp, lapin::ConnectionProperties::default())
                        .await
                        .context("connecting to RabbitMQ")?;
                let channel = connection.create_channel().await?;
                channel
                    .confirm_select(ConfirmSelectOptions::default())
                    .await?;
                channel
                    .queue_declare(
                        name.into(),
                        QueueDeclareOptions {
                            durable: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .context("declaring the queue")?;
                Publisher::Amqp {
                    connection,
                    channel,
                    queue: name.to_owned(),
                }
            }
        })
    }

    /// The spec of the source `name` for the gateway.
    fn source(&self, urls: &BusUrls, name: &str) -> serde_json::Value {
        match self {
            Publisher::Nats {
                stream, subject, ..
            } => json!({"name": name, "type": "nats", "url": urls.nats,
                        "stream": stream, "subject": subject}),
            Publisher::Amqp { queue, .. } => {
                json!({"name": name, "type": "amqp", "url": urls.amqp, "queue": queue})
            }
        }
    }

    /// Publishes `bodies` (pipelined) and waits for the broker's confirmations; true for each
    /// confirmed one.
    async fn publish(&self, bodies: Vec<String>) -> Vec<bool> {
        let mut confirmed = Vec::with_capacity(bodies.len());
        match self {
            Publisher::Nats { js, subject, .. } => {
                let mut pending = Vec::with_capacity(bodies.len());
                for body in bodies {
                    pending.push(js.publish(subject.clone(), body.into()).await.ok());
                }
                for ack in pending {
                    confirmed.push(match ack {
                        Some(ack) => ack.await.is_ok(),
                        None => false,
                    });
                }
            }
            Publisher::Amqp { channel, queue, .. } => {
                let mut pending = Vec::with_capacity(bodies.len());
                for body in bodies {
                    let sent = channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            body.as_bytes(),
                            BasicProperties::default().with_delivery_mode(2),
                        )
                        .await;
                    pending.push(sent.ok());
                }
                for confirm in pending {
                    confirmed.push(match confirm {
                        Some(c) => c.await.is_ok_and(|c| c.is_ack()),
                        None => false,
                    });
                }
            }
        }
        confirmed
    }

    async fn remove(self) {
        match self {
            Publisher::Nats { js, stream, .. } => {
                let _ = js.delete_stream(&stream).await;
            }
            Publisher::Amqp {
                connection,
                channel,
                queue,
            } => {
                let _ = channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await;
                let _ = connection.close(200, "done".into()).await;
            }
        }
    }
}

/// The source of the backlog row.
const BACKLOG_SOURCE: &str = "lt-bus-backlog";
/// Event type of the backlog row: no webhook subscribes to it.
const BACKLOG_TYPE: &str = "lt.backlog";

/// Events the gateway committed from the source `source` (summed over processes).
async fn committed(gw: &crate::gateway::Gateway, source: &str) -> u64 {
    let Ok(metrics) = gw.metrics_sum().await else {
        return 0;
    };
    metrics
        .iter()
        .filter(|(k, _)| {
            k.starts_with("hookyard_source_messages_total")
                && k.contains(&format!("source=\"{source}\""))
                && k.contains("outcome=\"committed\"")
        })
        .map(|(_, v)| *v as u64)
        .sum()
}

impl Runner {
    /// One bus scenario: publish for the phase's duration, wait until everything is committed
    /// and delivered, report.
    pub(super) async fn bus(&mut self, bus: Bus) -> anyhow::Result<()> {
        let scenario = match bus {
            Bus::Nats => "bus-nats",
            Bus::Amqp => "bus-amqp",
        };
        let urls = self.settings.bus.clone();
        let started = self
            .start(None, &[webhook("lt-0", &["lt.flow"], self.receiver.url(0))])
            .await?;
        if urls.backlog > 0 {
            self.bus_backlog(bus, scenario, &started).await?;
        }
        let gw = &started.gateway;
        let run = self.next_run();
        let name = format!("hookyard-lt-{}-{run}", std::process::id());
        let publisher = Publisher::connect(bus, &urls, &name).await?;
        gw.admin_post("/admin/v1/sources", &publisher.source(&urls, SOURCE))
            .await?;
        let session = self.receiver.begin(run, &[Mode::Ok]);
        let duration = self.settings.duration;
        eprintln!("  {scenario} — publish as fast as confirmed for {duration:?}");

        let pids = gw.pids();
        let monitor = Monitor::start(gw);
        let g0 = procfs::sample_sum(&pids);
        let h0 = procfs::sample(None);
        let t0 = Instant::now();
        let mut accepted = Vec::new();
        let mut latency = new_histogram();
        while t0.elapsed() < duration {
            let first = accepted.len() as u64;
            let bodies = (first..first + PUBLISH_WINDOW as u64)
                .map(|seq| {
                    let mut out = String::with_capacity(256);
                    push_event(&mut out, run, seq, "lt.flow", false);
                    out
                })
                .collect();
            let window = Instant::now();
            accepted.extend(publisher.publish(bodies).await);
            let _ = latency.record(window.elapsed().as_micros() as u64);
        }
        let published_at = Instant::now();
        let sent = accepted.len() as u64;
        let confirmed = accepted.iter().filter(|a| **a).count() as u64;

        // Drain: every confirmed event committed, then delivered.
        let deadline = Instant::now() + self.settings.drain_timeout;
        let mut committed_at = None;
        let mut last_commit = 0;
        while Instant::now() < deadline {
            last_commit = committed(gw, SOURCE).await;
            if last_commit >= confirmed {
                committed_at = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while Instant::now() < deadline && session.hooks[0].delivered() < confirmed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let g1 = procfs::sample_sum(&pids);
        let h1 = procfs::sample(None);
        let (peak_kib, _) = monitor.finish().await;

        let gen = GenStats {
            requests: sent,
            events_sent: sent,
            events_accepted: confirmed,
            errors: sent - confirmed,
            refused: 0,
            error_samples: Vec::new(),
            late: 0,
            max_delay: Duration::ZERO,
            latency,
            started: t0,
            finished: published_at,
            accepted,
        };
        let commit_secs = committed_at
            .unwrap_or_else(Instant::now)
            .duration_since(t0)
            .as_secs_f64()
            .max(1e-9);
        let mut row = Row {
            scenario: scenario.into(),
            load: format!("max, publisher windows of {PUBLISH_WINDOW}"),
            accepted_per_s: Some(last_commit as f64 / commit_secs),
            errors: gen.errors,
            rss_idle_mib: Some(started.idle_rss_mib),
            ..Row::default()
        };
        let route: Route = std::sync::Arc::new(|_, _| true);
        fill_deliveries(&mut row, &session, &[0], &route, &gen);
        row.cpu_pct = g0.zip(g1).map(|(a, b)| procfs::cpu_percent(&a, &b));
        row.rss_load_mib = Some(peak_kib as f64 / 1024.0);
        row.diag.idle_cpu_pct = Some(started.idle_cpu_pct);
        row.diag.harness_cpu_pct = h0.zip(h1).map(|(a, b)| procfs::cpu_percent(&a, &b));
        row.diag.ingest_ms = Some([
            gen.latency.value_at_quantile(0.5) as f64 / 1000.0,
            gen.latency.value_at_quantile(0.99) as f64 / 1000.0,
        ]);
        row.diag.notes.push(format!(
            "accepted = committed from the bus per second (publish start to last commit); the broker confirmed {}/s ({confirmed} of {sent}); ingest column = one window of {PUBLISH_WINDOW} publishes until confirmed",
            crate::report::thousands(gen.accepted_per_sec())
        ));
        if committed_at.is_none() {
            row.diag.notes.push(format!(
                "only {last_commit} of {confirmed} committed within the drain timeout"
            ));
        }
        self.print_row(&row);
        self.rows.push(row);
        publisher.remove().await;
        started.gateway.stop().await;
        Ok(())
    }
}

impl Runner {
    /// The backlog row: publish `--bus-backlog` events of a type no webhook takes, then start a
    /// source and time it draining them (see the module doc).
    async fn bus_backlog(
        &mut self,
        bus: Bus,
        scenario: &str,
        started: &super::Started,
    ) -> anyhow::Result<()> {
        let urls = self.settings.bus.clone();
        let gw = &started.gateway;
        let run = self.next_run();
        let name = format!("hookyard-lt-{}-{run}", std::process::id());
        let publisher = Publisher::connect(bus, &urls, &name).await?;
        let total = urls.backlog;
        eprintln!("  {scenario} — publish a backlog of {total}, then drain it");
        let published_from = Instant::now();
        let mut confirmed = 0u64;
        let mut seq = 0u64;
        while seq < total {
            let end = (seq + PUBLISH_WINDOW as u64).min(total);
            let bodies = (seq..end)
                .map(|n| {
                    let mut out = String::with_capacity(256);
                    push_event(&mut out, run, n, BACKLOG_TYPE, false);
                    out
                })
                .collect();
            confirmed += publisher
                .publish(bodies)
                .await
                .into_iter()
                .filter(|c| *c)
                .count() as u64;
            seq = end;
        }
        let publish_secs = published_from.elapsed().as_secs_f64().max(1e-9);

        let pids = gw.pids();
        // `--perf-record`: a profile of the gateway while it drains.
        let record_to = self
            .settings
            .perf_record
            .as_ref()
            .map(|dir| dir.join(format!("{scenario}-backlog.perf.data")));
        let perf = crate::perf::Perf::start(&pids, None, record_to.as_deref()).await;
        let monitor = Monitor::start(gw);
        let g0 = procfs::sample_sum(&pids);
        let h0 = procfs::sample(None);
        let t0 = Instant::now();
        gw.admin_post(
            "/admin/v1/sources",
            &publisher.source(&urls, BACKLOG_SOURCE),
        )
        .await?;
        let deadline = t0 + self.settings.drain_timeout;
        let mut done = None;
        let mut last = 0;
        while Instant::now() < deadline {
            last = committed(gw, BACKLOG_SOURCE).await;
            if last >= confirmed {
                done = Some(Instant::now());
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let g1 = procfs::sample_sum(&pids);
        let h1 = procfs::sample(None);
        let (peak_kib, _) = monitor.finish().await;
        perf.finish().await;
        let secs = done
            .unwrap_or_else(Instant::now)
            .duration_since(t0)
            .as_secs_f64()
            .max(1e-9);
        let mut row = Row {
            scenario: scenario.into(),
            load: format!(
                "backlog of {}, no webhook",
                crate::report::thousands(total as f64)
            ),
            accepted_per_s: Some(last as f64 / secs),
            errors: total - confirmed,
            rss_idle_mib: Some(started.idle_rss_mib),
            ..Row::default()
        };
        row.cpu_pct = g0.zip(g1).map(|(a, b)| procfs::cpu_percent(&a, &b));
        row.rss_load_mib = Some(peak_kib as f64 / 1024.0);
        row.diag.harness_cpu_pct = h0.zip(h1).map(|(a, b)| procfs::cpu_percent(&a, &b));
        row.diag.notes.push(format!(
            "accepted = committed from the bus per second, source created to last commit ({last} in {secs:.2} s); published beforehand at {}/s",
            crate::report::thousands(confirmed as f64 / publish_secs)
        ));
        if done.is_none() {
            row.diag.notes.push(format!(
                "only {last} of {confirmed} committed within the drain timeout"
            ));
        }
        self.print_row(&row);
        self.rows.push(row);
        gw.admin_post(
            &format!("/admin/v1/sources/{BACKLOG_SOURCE}/pause"),
            &json!({}),
        )
        .await?;
        publisher.remove().await;
        Ok(())
    }
}
