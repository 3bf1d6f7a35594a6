//! The scenarios, and the measured phase they are made of.
//!
//! Each scenario starts its own gateway (fresh database, start-up timed, idle RSS read after
//! its webhooks exist), runs one or more phases, and stops it. A phase: a new receiver session
//! (so a late delivery of an earlier phase is a stray, not a duplicate), load for `duration`,
//! then a bounded wait until every accepted event reached its measured endpoints and, where
//! the scenario expects it, the gateway's queue is empty.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hyper::Method;
use serde_json::{json, Value};

mod bus;
mod retention;

pub use bus::BusUrls;

use crate::clock;
use crate::gateway::{self, Gateway, Monitor, INGEST_TOKEN};
use crate::generator::{self, Drive, GenStats, Load};
use crate::perf::Perf;
use crate::procfs;
use crate::receiver::{new_histogram, Mode, Receiver, Session};
use crate::report::{thousands, Row};

/// Every scenario, in the order `all` runs them.
pub const ALL: &[&str] = &[
    "ingest",
    "e2e",
    "field-map",
    "python",
    "js",
    "field-map-fresh",
    "python-fresh",
    "js-fresh",
    "fanout",
    "outage",
    "hang",
    "bus-nats",
    "bus-amqp",
    "retention",
];

/// The fixed rate used when neither `--rate` nor a measured maximum gives one.
const DEFAULT_RATE: f64 = 500.0;
/// How long an idle gateway is left alone before its RSS is read.
const SETTLE: Duration = Duration::from_secs(1);
/// Of the hang scenario's events, one in this many goes to the hanging endpoint.
const HANG_EVERY: u64 = 10;

/// Which phases to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Phases {
    /// Maximum rate, then the fixed rate.
    Both,
    /// Maximum rate only.
    Max,
    /// Fixed rate only.
    Fixed,
}

/// What the command line decided.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How gateways are started.
    pub gateway: gateway::Options,
    /// Length of each phase's load.
    pub duration: Duration,
    /// Fixed rate in events per second (default: half the scenario's measured maximum).
    pub rate: Option<f64>,
    /// Which phases run.
    pub phases: Phases,
    /// Open loop: connections, the bound on requests in flight.
    pub connections: usize,
    /// Closed loop: concurrent senders of single events.
    pub max_connections: usize,
    /// Events per batch in the batched ingest phase.
    pub batch_size: u64,
    /// Closed loop: concurrent senders of batches.
    pub batch_connections: usize,
    /// Webhooks of the fan-out scenario.
    pub fanout: usize,
    /// How long the receiver answers 503 in the outage scenario.
    pub outage: Duration,
    /// Fixed rate of the outage scenario (default: the e2e fixed rate).
    pub outage_rate: Option<f64>,
    /// Longest wait for the queue to drain after a phase.
    pub drain_timeout: Duration,
    /// Count SQLite syncs with `perf stat`.
    pub perf_stat: bool,
    /// Write a `perf record` profile of each phase into this directory.
    pub perf_record: Option<PathBuf>,
    /// The brokers of the bus scenarios.
    pub bus: BusUrls,
    /// The plugin components of the plugin scenarios.
    pub plugins: PluginFiles,
    /// Old deliveries (each with its event and one attempt) the retention scenario seeds.
    pub seed_deliveries: u64,
}

/// The plugin components of the plugin scenarios.
#[derive(Debug, Clone)]
pub struct PluginFiles {
    /// `field_map.wasm`.
    pub field_map: PathBuf,
    /// The Python example plugin (`examples/plugins-python`).
    pub python: PathBuf,
    /// The JavaScript example plugin (`examples/plugins-js`).
    pub js: PathBuf,
}

/// The plugin of a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plugin {
    FieldMap,
    Python,
    Js,
}

impl Plugin {
    fn name(self) -> &'static str {
        match self {
            Plugin::FieldMap => "field-map",
            Plugin::Python => "python",
            Plugin::Js => "js",
        }
    }

    /// The webhook's `plugin` section; `fresh`: a new instance for every call.
    fn spec(self, fresh: bool) -> Value {
        let config = match self {
            Plugin::FieldMap => field_map_config(),
            // The example plugins send the event's data along (with the receiver's marks).
            Plugin::Python | Plugin::Js => json!({"include_data": true}),
        };
        let mut spec = json!({"name": self.name(), "config": config});
        if fresh {
            spec["instances"] = json!("fresh");
        }
        spec
    }
}

/// Which hooks get event `seq`: `route(seq, hook)`.
type Route = Arc<dyn Fn(u64, usize) -> bool + Send + Sync>;

/// One phase to run on a gateway.
struct Plan {
    scenario: &'static str,
    label: String,
    modes: Vec<Mode>,
    route: Route,
    /// The hooks whose deliveries, lag and losses the row reports.
    measured: Vec<usize>,
    events_per_request: u64,
    event_type: fn(u64) -> &'static str,
    drive: Drive,
    duration: Duration,
    /// Also wait for `hookyard_queue_depth` to reach 0 (not when a hook never drains).
    wait_queue: bool,
    /// Hook 0 answers 503 for this long from the start, then 200.
    outage: Option<Duration>,
}

/// A gateway with what was measured before load.
struct Started {
    gateway: Gateway,
    idle_rss_mib: f64,
    /// CPU while idle (the settle time after start-up), percent of one core.
    idle_cpu_pct: f64,
    /// With a plugin: the first (cold) start's time, ms, and idle RSS, MiB.
    cold: Option<(f64, f64)>,
}

/// Runs the scenarios and collects the rows.
pub struct Runner {
    settings: Settings,
    receiver: Receiver,
    scratch: tempfile::TempDir,
    run_ids: AtomicU64,
    /// The baseline's requests per second.
    pub ceiling: Option<f64>,
    /// The rows so far.
    pub rows: Vec<Row>,
    /// The e2e scenario's fixed-phase rate and row, which outage and hang compare with.
    e2e_fixed: Option<(f64, Row)>,
}

fn flow_type(_: u64) -> &'static str {
    "lt.flow"
}

fn hang_or_flow(seq: u64) -> &'static str {
    if seq % HANG_EVERY == HANG_EVERY - 1 {
        "lt.hang"
    } else {
        "lt.flow"
    }
}

/// One event's JSON, `sent_at_ns` stamped now.
fn push_event(out: &mut String, run: u64, seq: u64, event_type: &str, envelope: bool) {
    use std::fmt::Write as _;
    let now = clock::now_ns();
    let data = format!(
        r#"{{"run":{run},"seq":{seq},"sent_at_ns":{now},"username":"user{seq}","email":"User{seq}@Example.COM","groups":["staff","vpn"],"active":true}}"#
    );
    if envelope {
        // The body the gateway delivers without a plugin: what the baseline sends.
        let _ = write!(
            out,
            r#"{{"type":"{event_type}","timestamp":"2026-01-01T00:00:00Z","data":{data},"context":null}}"#
        );
    } else {
        let _ = write!(
            out,
            r#"{{"id":"lt-{run}-{seq}","type":"{event_type}","data":{data}}}"#
        );
    }
}

/// Request bodies for the gateway: one event, or a batch of `n`.
fn gateway_body(run: u64, n: u64, event_type: fn(u64) -> &'static str) -> generator::BodyFn {
    Arc::new(move |first| {
        let mut out = String::with_capacity(256 * n as usize);
        if n == 1 {
            push_event(&mut out, run, first, event_type(first), false);
        } else {
            out.push('[');
            for seq in first..first + n {
                if seq > first {
                    out.push(',');
                }
                push_event(&mut out, run, seq, event_type(seq), false);
            }
            out.push(']');
        }
        Bytes::from(out)
    })
}

/// The field-map scenario's mapping: the marks the receiver needs, plus rows a real mapping
/// would have (nesting, case conversion, a constant).
fn field_map_config() -> Value {
    json!({"request": [
        {"api_field": "run", "field": "run"},
        {"api_field": "seq", "field": "seq"},
        {"api_field": "sent_at_ns", "field": "sent_at_ns"},
        {"api_field": "id", "field": "@id"},
        {"api_field": "event", "field": "@type", "convert": "upper_snake"},
        {"api_field": "user.name", "field": "username"},
        {"api_field": "user.email", "field": "email", "convert": "lower"},
        {"api_field": "user.groups", "field": "groups"},
        {"api_field": "user.active", "field": "active"},
        {"api_field": "source", "value": "hookyard"}
    ]})
}

fn webhook(name: &str, events: &[&str], url: String) -> Value {
    json!({
        "name": name,
        "events": events,
        "url": url,
        "timeout_ms": 10000,
        // Enough attempts to outlast the outage scenario's 503s with the harness's backoff.
        "retry": {"max_attempts": 100},
    })
}

/// Syncs timed by the disk probe of the baseline.
const FSYNC_PROBES: usize = 1000;

/// Times `n` rounds of an 8 KiB write and `fdatasync` in a file under `dir` (the gateway's
/// store lives on the same file system): the floor of a durable commit on this machine.
fn fsync_probe(dir: &std::path::Path, n: usize) -> anyhow::Result<hdrhistogram::Histogram<u64>> {
    use std::os::unix::fs::FileExt;
    let path = dir.join("fsync-probe");
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .with_context(|| format!("creating {}", path.display()))?;
    // Preallocated, like a WAL being reused: the size does not change while probing.
    const SPAN: u64 = 4 << 20;
    file.set_len(SPAN)?;
    file.sync_all()?;
    let page = vec![0x5au8; 8192];
    let mut lat = new_histogram();
    for i in 0..n as u64 {
        file.write_at(&page, (i * 8192) % SPAN)?;
        let t = Instant::now();
        file.sync_data()?;
        let _ = lat.record((t.elapsed().as_micros() as u64).max(1));
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(lat)
}

fn ms(histogram_us: u64) -> f64 {
    histogram_us as f64 / 1000.0
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

impl Runner {
    /// Starts the receiver.
    pub async fn new(settings: Settings) -> anyhow::Result<Runner> {
        Ok(Runner {
            settings,
            receiver: Receiver::start().await?,
            scratch: tempfile::Builder::new()
                .prefix("hookyard-loadtest-perf-")
                .tempdir()?,
            run_ids: AtomicU64::new(1),
            ceiling: None,
            rows: Vec::new(),
            e2e_fixed: None,
        })
    }

    fn next_run(&self) -> u64 {
        self.run_ids.fetch_add(1, Ordering::Relaxed)
    }

    fn fixed_rate(&self, measured_max: Option<f64>) -> f64 {
        self.settings
            .rate
            .or(measured_max.map(|m| (m / 2.0).max(1.0).round()))
            .unwrap_or(DEFAULT_RATE)
    }

    /// The generator against the receiver alone, with the body the gateway would deliver:
    /// the loopback ceiling every other figure is a share of.
    pub async fn baseline(&mut self) -> anyhow::Result<()> {
        let run = self.next_run();
        let session = self.receiver.begin(run, &[Mode::Ok]);
        let body: generator::BodyFn = Arc::new(move |seq| {
            let mut out = String::with_capacity(256);
            push_event(&mut out, run, seq, "lt.flow", true);
            Bytes::from(out)
        });
        let load = Load {
            addrs: vec![self.receiver.addr()],
            path: "/r/0".to_owned(),
            bearer: None,
            events_per_request: 1,
            body,
            // The receiver is plain HTTP, with or without --tls.
            tls: None,
        };
        let h0 = procfs::sample(None);
        let drive = Drive::Max {
            connections: self.settings.max_connections,
        };
        let gen = generator::run(load, drive, self.settings.duration).await;
        let h1 = procfs::sample(None);
        let route: Route = Arc::new(|_, _| true);
        let mut row = Row {
            scenario: "baseline".into(),
            load: format!("max, {} conns", self.settings.max_connections),
            accepted_per_s: Some(gen.accepted_per_sec()),
            errors: gen.errors,
            ..Row::default()
        };
        fill_deliveries(&mut row, &session, &[0], &route, &gen);
        row.diag.ingest_ms = Some(latency_ms(&gen));
        row.diag.harness_cpu_pct = h0.zip(h1).map(|(a, b)| procfs::cpu_percent(&a, &b));
        row.diag.notes.push(
            "generator and receiver only (no gateway); ingest column = request round trip".into(),
        );
        let dir = self.scratch.path().to_owned();
        match tokio::task::spawn_blocking(move || fsync_probe(&dir, FSYNC_PROBES)).await? {
            Ok(lat) => row.diag.notes.push(format!(
                "disk: an 8 KiB write + fdatasync p50 / p99 / max {:.2} / {:.2} / {:.2} ms ({FSYNC_PROBES} calls; every accepted event waits for one)",
                ms(lat.value_at_quantile(0.5)),
                ms(lat.value_at_quantile(0.99)),
                ms(lat.max()),
            )),
            Err(e) => row.diag.notes.push(format!("disk probe failed: {e:#}")),
        }
        push_error_notes(&mut row, &gen);
        self.ceiling = row.accepted_per_s;
        self.print_row(&row);
        self.rows.push(row);
        Ok(())
    }

    /// Runs one scenario by name.
    pub async fn scenario(&mut self, name: &str) -> anyhow::Result<()> {
        match name {
            "ingest" => self.ingest().await,
            "e2e" => self.e2e("e2e", None).await,
            "field-map" => self.e2e("field-map", Some((Plugin::FieldMap, false))).await,
            "python" => self.e2e("python", Some((Plugin::Python, false))).await,
            "js" => self.e2e("js", Some((Plugin::Js, false))).await,
            "field-map-fresh" => {
                self.e2e("field-map-fresh", Some((Plugin::FieldMap, true)))
                    .await
            }
            "python-fresh" => self.e2e("python-fresh", Some((Plugin::Python, true))).await,
            "js-fresh" => self.e2e("js-fresh", Some((Plugin::Js, true))).await,
            "fanout" => self.fanout().await,
            "outage" => self.outage().await,
            "hang" => self.hang().await,
            "bus-nats" => self.bus(bus::Bus::Nats).await,
            "bus-amqp" => self.bus(bus::Bus::Amqp).await,
            "retention" => self.retention().await,
            other => anyhow::bail!("unknown scenario {other:?} (known: {})", ALL.join(", ")),
        }
    }

    /// Measures a gateway started elsewhere while it idles, as [`Runner::start`] does.
    async fn started(&self, gateway: Gateway) -> anyhow::Result<Started> {
        let pids = gateway.pids();
        let before = procfs::sample_sum(&pids).context("reading the gateway's CPU")?;
        tokio::time::sleep(SETTLE).await;
        let idle = procfs::sample_sum(&pids).context("reading the gateway's RSS")?;
        Ok(Started {
            idle_cpu_pct: procfs::cpu_percent(&before, &idle),
            idle_rss_mib: mib(idle.rss_kib),
            gateway,
            cold: None,
        })
    }

    async fn start(&self, plugin: Option<Plugin>, webhooks: &[Value]) -> anyhow::Result<Started> {
        let mut options = self.settings.gateway.clone();
        let files = &self.settings.plugins;
        options.plugin = plugin.map(|p| {
            let path = match p {
                Plugin::FieldMap => files.field_map.clone(),
                Plugin::Python => files.python.clone(),
                Plugin::Js => files.js.clone(),
            };
            (p.name().to_owned(), path)
        });
        let mut gateway = Gateway::start(&options).await?;
        // With several processes: through the first one; every one is ready already.
        for spec in webhooks {
            gateway.create_webhook(spec).await?;
        }
        if options.processes > 1 {
            // Time for the others to see the webhooks (change notices, or their reload).
            tokio::time::sleep(SETTLE).await;
        }
        // With a plugin, the first start compiles it (and keeps the compiler's memory): that
        // start is reported in a note, the rows measure a restart on the warm code cache.
        let mut cold = None;
        if plugin.is_some() {
            tokio::time::sleep(SETTLE).await;
            let rss = procfs::sample_sum(&gateway.pids()).map_or(0.0, |s| mib(s.rss_kib));
            cold = Some((gateway.startup.as_secs_f64() * 1000.0, rss));
            eprintln!(
                "  gateway pid {:?} cold start (compiling the plugin) in {:.0} ms, idle RSS {rss:.1} MiB; restarting",
                gateway.pids(),
                gateway.startup.as_secs_f64() * 1000.0
            );
            gateway = gateway.restart().await?;
        }
        let pids = gateway.pids();
        let before = procfs::sample_sum(&pids).context("reading the gateway's CPU")?;
        tokio::time::sleep(SETTLE).await;
        let idle = procfs::sample_sum(&pids).context("reading the gateway's RSS")?;
        let idle_cpu_pct = procfs::cpu_percent(&before, &idle);
        eprintln!(
            "  gateway pid {pids:?} ready in {:.0} ms, idle RSS {:.1} MiB",
            gateway.startup.as_secs_f64() * 1000.0,
            mib(idle.rss_kib)
        );
        Ok(Started {
            gateway,
            idle_rss_mib: mib(idle.rss_kib),
            idle_cpu_pct,
            cold,
        })
    }

    async fn ingest(&mut self) -> anyhow::Result<()> {
        let started = self.start(None, &[]).await?;
        let s = self.settings.clone();
        let plan = |label: String, n: u64, drive: Drive| Plan {
            scenario: "ingest",
            label,
            modes: Vec::new(),
            route: Arc::new(|_, _| false),
            measured: Vec::new(),
            events_per_request: n,
            event_type: flow_type,
            drive,
            duration: s.duration,
            wait_queue: false,
            outage: None,
        };
        let mut max = None;
        if s.phases != Phases::Fixed {
            let drive = Drive::Max {
                connections: s.max_connections,
            };
            let row = self
                .phase(
                    &started,
                    plan(format!("max, {} conns", s.max_connections), 1, drive),
                )
                .await?;
            max = row.accepted_per_s;
            self.rows.push(row);
            let drive = Drive::Max {
                connections: s.batch_connections,
            };
            let label = format!(
                "max, batches of {}, {} conns",
                s.batch_size, s.batch_connections
            );
            let row = self
                .phase(&started, plan(label, s.batch_size, drive))
                .await?;
            self.rows.push(row);
        }
        if s.phases != Phases::Max {
            let rate = self.fixed_rate(max);
            let drive = Drive::Fixed {
                rate,
                connections: s.connections,
            };
            let row = self
                .phase(&started, plan(format!("{}/s", thousands(rate)), 1, drive))
                .await?;
            self.rows.push(row);
        }
        started.gateway.stop().await;
        Ok(())
    }

    async fn e2e(
        &mut self,
        scenario: &'static str,
        plugin: Option<(Plugin, bool)>,
    ) -> anyhow::Result<()> {
        let mut spec = webhook("lt-0", &["lt.flow"], self.receiver.url(0));
        if let Some((plugin, fresh)) = plugin {
            spec["plugin"] = plugin.spec(fresh);
        }
        let started = self.start(plugin.map(|(p, _)| p), &[spec]).await?;
        let fixed = self.max_then_fixed(&started, scenario, 1).await?;
        if scenario == "e2e" {
            self.e2e_fixed = fixed;
        }
        started.gateway.stop().await;
        Ok(())
    }

    async fn fanout(&mut self) -> anyhow::Result<()> {
        let n = self.settings.fanout.max(1);
        let specs: Vec<Value> = (0..n)
            .map(|i| webhook(&format!("lt-{i}"), &["lt.flow"], self.receiver.url(i)))
            .collect();
        let started = self.start(None, &specs).await?;
        self.max_then_fixed(&started, "fanout", n).await?;
        started.gateway.stop().await;
        Ok(())
    }

    /// A max phase and a fixed phase at half its event rate; returns the fixed phase's rate
    /// and row.
    async fn max_then_fixed(
        &mut self,
        started: &Started,
        scenario: &'static str,
        hooks: usize,
    ) -> anyhow::Result<Option<(f64, Row)>> {
        let s = self.settings.clone();
        let plan = |label: String, drive: Drive| Plan {
            scenario,
            label,
            modes: vec![Mode::Ok; hooks],
            route: Arc::new(|_, _| true),
            measured: (0..hooks).collect(),
            events_per_request: 1,
            event_type: flow_type,
            drive,
            duration: s.duration,
            wait_queue: true,
            outage: None,
        };
        let mut max = None;
        if s.phases != Phases::Fixed {
            let drive = Drive::Max {
                connections: s.max_connections,
            };
            let row = self
                .phase(
                    started,
                    plan(format!("max, {} conns", s.max_connections), drive),
                )
                .await?;
            max = row.deliveries_per_s.map(|d| d / hooks as f64);
            self.rows.push(row);
        }
        if s.phases == Phases::Max {
            return Ok(None);
        }
        let rate = self.fixed_rate(max);
        let drive = Drive::Fixed {
            rate,
            connections: s.connections,
        };
        let label = if hooks > 1 {
            format!("{} events/s", thousands(rate))
        } else {
            format!("{}/s", thousands(rate))
        };
        let row = self.phase(started, plan(label, drive)).await?;
        self.rows.push(row.clone());
        Ok(Some((rate, row)))
    }

    /// The fixed rate of the outage and hang scenarios: `--rate`, else the e2e fixed rate.
    fn comparison_rate(&self) -> f64 {
        self.settings
            .rate
            .or(self.e2e_fixed.as_ref().map(|(r, _)| *r))
            .unwrap_or(DEFAULT_RATE)
    }

    async fn outage(&mut self) -> anyhow::Result<()> {
        let started = self
            .start(None, &[webhook("lt-0", &["lt.flow"], self.receiver.url(0))])
            .await?;
        let s = self.settings.clone();
        let rate = s.outage_rate.unwrap_or_else(|| self.comparison_rate());
        let plan = Plan {
            scenario: "outage",
            label: format!(
                "{}/s, 503 for {} s",
                thousands(rate),
                s.outage.as_secs_f64()
            ),
            modes: vec![Mode::Unavailable],
            route: Arc::new(|_, _| true),
            measured: vec![0],
            events_per_request: 1,
            event_type: flow_type,
            drive: Drive::Fixed {
                rate,
                connections: s.connections,
            },
            duration: s.outage + s.duration,
            wait_queue: true,
            outage: Some(s.outage),
        };
        let row = self.phase(&started, plan).await?;
        self.rows.push(row);
        started.gateway.stop().await;
        Ok(())
    }

    async fn hang(&mut self) -> anyhow::Result<()> {
        let mut hanging = webhook("lt-hang", &["lt.hang"], self.receiver.url(0));
        hanging["timeout_ms"] = json!(2000);
        hanging["max_concurrency"] = json!(4);
        let flowing = webhook("lt-flow", &["lt.flow"], self.receiver.url(1));
        let started = self.start(None, &[hanging, flowing]).await?;
        let s = self.settings.clone();
        // The flowing webhook gets the e2e fixed rate; the hanging one a tenth on top.
        let flow_rate = self.comparison_rate();
        let total = flow_rate * HANG_EVERY as f64 / (HANG_EVERY - 1) as f64;
        let plan = Plan {
            scenario: "hang",
            label: format!(
                "{}/s flowing + {}/s to a hanging endpoint",
                thousands(flow_rate),
                thousands(total - flow_rate)
            ),
            modes: vec![Mode::Hang, Mode::Ok],
            route: Arc::new(|seq, hook| (hang_or_flow(seq) == "lt.hang") == (hook == 0)),
            measured: vec![1],
            events_per_request: 1,
            event_type: hang_or_flow,
            drive: Drive::Fixed {
                rate: total,
                connections: s.connections,
            },
            duration: s.duration,
            wait_queue: false,
            outage: None,
        };
        let mut row = self.phase(&started, plan).await?;
        if let Some((_, e2e)) = &self.e2e_fixed {
            if let (Some(a), Some(b)) = (row.lag_ms, e2e.lag_ms) {
                row.diag.notes.push(format!(
                    "flowing lag p50/p99 {:.2}/{:.2} ms vs e2e fixed {:.2}/{:.2} ms",
                    a[0], a[1], b[0], b[1]
                ));
            }
        }
        self.rows.push(row);
        started.gateway.stop().await;
        Ok(())
    }

    /// Runs one phase and makes its row.
    async fn phase(&mut self, started: &Started, plan: Plan) -> anyhow::Result<Row> {
        let gw = &started.gateway;
        let s = &self.settings;
        eprintln!(
            "  {} — {} for {:?}",
            plan.scenario, plan.label, plan.duration
        );
        let run = self.next_run();
        let session = self.receiver.begin(run, &plan.modes);
        let n = plan.events_per_request;
        let load = Load {
            addrs: gw.publics(),
            path: if n > 1 {
                "/v1/events/batch".into()
            } else {
                "/v1/events".into()
            },
            bearer: Some(INGEST_TOKEN.into()),
            events_per_request: n,
            body: gateway_body(run, n, plan.event_type),
            tls: gw.tls(),
        };
        let record_to = s.perf_record.as_ref().map(|dir| {
            let name = file_stem(&format!("{}-{}", plan.scenario, plan.label));
            dir.join(format!("{name}.perf.data"))
        });
        let stat_dir = s.perf_stat.then(|| self.scratch.path());
        let pids = gw.pids();
        let perf = Perf::start(&pids, stat_dir, record_to.as_deref()).await;
        let monitor = Monitor::start(gw);
        let m0 = gw.metrics_sum().await.ok();
        let bytes0 = gw.store_bytes().await;
        let g0 = procfs::sample_sum(&pids);
        let h0 = procfs::sample(None);

        let recovery = plan.outage.map(|outage| {
            let (session, public, tls) = (session.clone(), gw.public, gw.tls());
            tokio::spawn(async move {
                tokio::time::sleep(outage).await;
                let depth = metric(public, tls.as_ref(), "hookyard_queue_depth").await;
                session.hooks[0].set_mode(Mode::Ok);
                (Instant::now(), depth)
            })
        });
        let gen = generator::run(load, plan.drive, plan.duration).await;
        let recovered = match recovery {
            Some(task) => Some(task.await?),
            None => None,
        };

        // Drain: every accepted event at its measured hooks, then (maybe) an empty queue.
        let expected: Vec<u64> = plan
            .measured
            .iter()
            .map(|&h| count_routed(&gen.accepted, &plan.route, h))
            .collect();
        let deadline = Instant::now() + s.drain_timeout;
        let mut drained = false;
        let mut last_depth = None;
        loop {
            let delivered = plan
                .measured
                .iter()
                .zip(&expected)
                .all(|(&h, &e)| session.hooks[h].delivered() >= e);
            if delivered {
                if !plan.wait_queue {
                    drained = true;
                    break;
                }
                last_depth = gw.queue_depth().await.ok();
                if last_depth == Some(0) {
                    drained = true;
                    break;
                }
            }
            if Instant::now() > deadline {
                break;
            }
            let pause = if delivered { 100 } else { 20 };
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let end = Instant::now();
        let g1 = procfs::sample_sum(&pids);
        let h1 = procfs::sample(None);
        let (peak_kib, gauges) = monitor.finish().await;
        let counts = perf.finish().await;
        let m1 = gw.metrics_sum().await.ok();
        let bytes1 = gw.store_bytes().await;

        let mut row = Row {
            scenario: plan.scenario.into(),
            load: plan.label.clone(),
            accepted_per_s: Some(gen.accepted_per_sec()),
            errors: gen.errors,
            rss_idle_mib: Some(started.idle_rss_mib),
            rss_load_mib: Some(mib(peak_kib)),
            cpu_pct: g0.zip(g1).map(|(a, b)| procfs::cpu_percent(&a, &b)),
            ..Row::default()
        };
        if !plan.measured.is_empty() {
            fill_deliveries(&mut row, &session, &plan.measured, &plan.route, &gen);
        }
        let d = &mut row.diag;
        d.startup_ms = Some(gw.startup.as_secs_f64() * 1000.0);
        d.idle_cpu_pct = Some(started.idle_cpu_pct);
        let others = gw.other_startups();
        if !others.is_empty() {
            d.notes.push(format!(
                "{} gateway processes: RSS, CPU and in flight are their sums, due / depth the \
                 first's; start-up is the first's (it migrates the store), the others took {} ms",
                others.len() + 1,
                others
                    .iter()
                    .map(|t| format!("{:.0}", t.as_secs_f64() * 1000.0))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if let Some((ms, rss)) = started.cold {
            d.notes.push(format!(
                "warm restart; the cold start compiling the plugin took {ms:.0} ms, idle RSS {rss:.1} MiB"
            ));
        }
        d.ingest_ms = Some(latency_ms(&gen));
        if matches!(plan.drive, Drive::Fixed { .. }) {
            d.late = Some((gen.late, gen.max_delay.as_secs_f64() * 1000.0));
        }
        if gauges.samples > 0 {
            d.in_flight = Some(gauges.mean_in_flight());
            d.due = Some((gauges.mean_due(), gauges.max_depth));
        }
        d.harness_cpu_pct = h0.zip(h1).map(|(a, b)| procfs::cpu_percent(&a, &b));
        let items = if plan.measured.is_empty() {
            gen.events_accepted
        } else {
            plan.measured
                .iter()
                .map(|&h| session.hooks[h].delivered())
                .sum()
        };
        if let (Some(a), Some(b)) = (g0, g1) {
            if items > 0 {
                let cpu = b.cpu_ticks.saturating_sub(a.cpu_ticks) as f64 / procfs::clk_tck() as f64;
                d.cpu_us_per_item = Some(cpu * 1e6 / items as f64);
            }
        }
        if let (Some(a), Some(b)) = (&m0, &m1) {
            let mean = |name: &str| {
                let delta = |suffix: &str| {
                    let key = format!("{name}_{suffix}");
                    let labelled = format!("{key}{{");
                    // Summed over label sets: the plugin metrics are labelled by plugin and
                    // version.
                    let total = |m: &std::collections::HashMap<String, f64>| -> f64 {
                        m.iter()
                            .filter(|(k, _)| **k == key || k.starts_with(&labelled))
                            .map(|(_, v)| *v)
                            .sum()
                    };
                    total(b) - total(a)
                };
                let count = delta("count");
                (count > 0.0).then(|| delta("sum") / count)
            };
            d.attempt_ms = mean("hookyard_delivery_attempt_duration_seconds").map(|s| s * 1e3);
            d.plugin_us = mean("hookyard_plugin_call_duration_seconds").map(|s| s * 1e6);
            let plugin_calls: f64 = b
                .iter()
                .filter(|(k, _)| k.starts_with("hookyard_plugin_calls_total"))
                .map(|(k, v)| v - a.get(k).copied().unwrap_or(0.0))
                .sum();
            if plugin_calls > 0.0 && items > 0 {
                d.notes.push(format!(
                    "{:.2} plugin calls per delivery",
                    plugin_calls / items as f64
                ));
            }
            for outcome in ["retry", "dead", "skipped"] {
                let key = format!("hookyard_delivery_attempts_total{{outcome=\"{outcome}\"}}");
                let n = b.get(&key).copied().unwrap_or(0.0) - a.get(&key).copied().unwrap_or(0.0);
                if n > 0.0 {
                    d.notes
                        .push(format!("{} attempts ended {outcome}", thousands(n)));
                }
            }
        }
        match (bytes0, bytes1) {
            (Ok(b0), Ok(b1)) if items > 0 && !plan.measured.is_empty() => d.notes.push(format!(
                "store grew {:.2} KB per delivery ({:.1} MiB for {})",
                b1.saturating_sub(b0) as f64 / items as f64 / 1000.0,
                b1.saturating_sub(b0) as f64 / 1048576.0,
                thousands(items as f64)
            )),
            (Err(e), _) | (_, Err(e)) => d.notes.push(format!("store size not measured: {e:#}")),
            _ => {}
        }
        if counts.is_some() && s.gateway.postgres.is_some() {
            // perf attaches to the gateway processes; PostgreSQL commits in its server.
            d.notes
                .push("no syncs/s: PostgreSQL's fsyncs are its server's, not counted".into());
        } else if let Some(c) = counts {
            let secs = (end - gen.started).as_secs_f64().max(1e-9);
            d.syncs_per_s = Some(c.syncs as f64 / secs);
            if c.syncs > 0 {
                d.per_sync = Some(items as f64 / c.syncs as f64);
            }
            if items > 0 {
                d.notes.push(format!(
                    "{:.1} WAL pwrites per item",
                    c.pwrites as f64 / items as f64
                ));
            }
        }
        if !drained {
            d.notes.push(format!(
                "NOT DRAINED after {} s (queue depth {})",
                s.drain_timeout.as_secs(),
                last_depth.map_or("?".into(), |v| v.to_string())
            ));
        }
        if let (Some((at, depth)), Some(outage)) = (recovered, plan.outage) {
            let hook = &session.hooks[0];
            let rate = match plan.drive {
                Drive::Fixed { rate, .. } => rate,
                Drive::Max { .. } => 0.0,
            };
            // Requests due before the receiver came back form the backlog.
            let cut = ((at - gen.started).as_secs_f64() * rate).ceil() as usize;
            let firsts = hook.first_delivery_times();
            let last_backlog = gen
                .accepted
                .iter()
                .enumerate()
                .take(cut)
                .filter(|(_, a)| **a)
                .filter_map(|(seq, _)| firsts.get(seq).copied().filter(|t| *t > 0))
                .max();
            let drain = last_backlog.map(|t| {
                clock::instant_of(t)
                    .saturating_duration_since(at)
                    .as_secs_f64()
            });
            row.diag.notes.push(format!(
                "backlog {} after {} s of 503s ({} answered); backlog drained {} s after recovery",
                depth.map_or("?".into(), |d| thousands(d as f64)),
                outage.as_secs(),
                thousands(hook.refused() as f64),
                drain.map_or("?".into(), |d| format!("{d:.1}"))
            ));
        }
        if plan.modes.contains(&Mode::Hang) {
            let held: u64 = session.hooks.iter().map(|h| h.hung()).sum();
            let slots = if s.gateway.processes > 1 {
                "max_concurrency 4, per process or shared as the gateway enforces it"
            } else {
                "4 slots"
            };
            row.diag.notes.push(format!(
                "hanging endpoint: {held} requests held (2 s timeout, {slots})"
            ));
        }
        if plan.measured.len() > 1 {
            row.diag
                .notes
                .push(format!("{} webhooks per event", plan.measured.len()));
        }
        let strays = session.stray.load(Ordering::Relaxed);
        if strays > 0 {
            row.diag
                .notes
                .push(format!("{strays} stray requests at the receiver"));
        }
        let problems = gw.log_problems();
        if problems > 0 {
            row.diag
                .notes
                .push(format!("{problems} warnings in the gateway log so far"));
        }
        push_error_notes(&mut row, &gen);
        self.print_row(&row);
        Ok(row)
    }

    fn print_row(&self, row: &Row) {
        eprint!(
            "{}",
            crate::report::markdown(std::slice::from_ref(row), self.ceiling)
                .lines()
                .filter(|l| l.starts_with("| ") && !l.starts_with("| scenario"))
                .map(|l| format!("    {l}\n"))
                .collect::<String>()
        );
    }
}

/// Accepted events routed to `hook`.
fn count_routed(accepted: &[bool], route: &Route, hook: usize) -> u64 {
    accepted
        .iter()
        .enumerate()
        .filter(|(seq, a)| **a && route(*seq as u64, hook))
        .count() as u64
}

/// A phase's name made safe for a file name: anything but ASCII letters and digits becomes `-`.
fn file_stem(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

/// With `LOADTEST_LAG_DUMP=<dir>`, writes one line per delivered event of `hook`
/// (`seq`, milliseconds from the phase's start to its first delivery, its lag in µs) to a file
/// named after the phase: to see when in a phase the slow deliveries happened.
fn dump_lags(row: &Row, h: usize, hook: &crate::receiver::Hook, firsts: &[u64], gen: &GenStats) {
    let Some(dir) = std::env::var_os("LOADTEST_LAG_DUMP") else {
        return;
    };
    let lags = hook.first_lags_us();
    // The phase's start as wall-clock time, to line the file up with other recordings.
    let started_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .saturating_sub(gen.started.elapsed())
        .as_secs_f64()
        * 1e3;
    let mut text = format!("# phase started at unix ms {started_unix_ms:.3}\nseq at_ms lag_us\n");
    for (seq, at) in firsts.iter().enumerate().filter(|(_, t)| **t > 0) {
        let at_ms = clock::instant_of(*at)
            .saturating_duration_since(gen.started)
            .as_secs_f64()
            * 1e3;
        let lag = lags.get(seq).copied().unwrap_or(0);
        text.push_str(&format!("{seq} {at_ms:.3} {lag}\n"));
    }
    let name = file_stem(&format!("{}-{}-hook{h}", row.scenario, row.load));
    let path = std::path::Path::new(&dir).join(format!("{name}.txt"));
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("cannot write {}: {e}", path.display());
    }
}

/// Deliveries per second, lag, losses and duplicates of the measured hooks.
fn fill_deliveries(
    row: &mut Row,
    session: &Session,
    measured: &[usize],
    route: &Route,
    gen: &GenStats,
) {
    let mut lag = new_histogram();
    let mut delivered = 0u64;
    let mut lost = 0u64;
    let mut unexpected = 0u64;
    let mut dup_events = 0u64;
    let mut dup_msgs = 0u64;
    let mut last = 0u64;
    for &h in measured {
        let hook = &session.hooks[h];
        let _ = lag.add(hook.lag());
        delivered += hook.delivered();
        let (e, m) = hook.duplicates();
        dup_events += e;
        dup_msgs += m;
        last = last.max(hook.last_at());
        let firsts = hook.first_delivery_times();
        dump_lags(row, h, hook, &firsts, gen);
        for (seq, accepted) in gen.accepted.iter().enumerate() {
            let got = firsts.get(seq).is_some_and(|t| *t > 0);
            if *accepted && route(seq as u64, h) && !got {
                lost += 1;
            }
            if !*accepted && got {
                unexpected += 1;
            }
        }
    }
    if last > 0 {
        let window = clock::instant_of(last)
            .saturating_duration_since(gen.started)
            .as_secs_f64()
            .max(1e-9);
        row.deliveries_per_s = Some(delivered as f64 / window);
    } else {
        row.deliveries_per_s = Some(0.0);
    }
    if !lag.is_empty() {
        row.lag_ms = Some([
            ms(lag.value_at_quantile(0.5)),
            ms(lag.value_at_quantile(0.99)),
            ms(lag.value_at_quantile(0.999)),
        ]);
    }
    row.lost = Some(lost);
    row.duplicated = Some(dup_events);
    if dup_msgs > 0 {
        row.diag
            .notes
            .push(format!("{dup_msgs} webhook-ids answered 2xx twice"));
    }
    if unexpected > 0 {
        row.diag.notes.push(format!(
            "{unexpected} events delivered whose ingest request failed (committed before the error)"
        ));
    }
}

fn latency_ms(gen: &GenStats) -> [f64; 2] {
    [
        ms(gen.latency.value_at_quantile(0.5)),
        ms(gen.latency.value_at_quantile(0.99)),
    ]
}

fn push_error_notes(row: &mut Row, gen: &GenStats) {
    if gen.refused > 0 {
        row.diag.notes.push(format!(
            "{} ingest requests refused with 503 + Retry-After (back-pressure; not errors, not \
             lost: never accepted)",
            gen.refused
        ));
    }
    if let Some(first) = gen.error_samples.first() {
        row.diag.notes.push(format!(
            "errors e.g. {:?}",
            first.chars().take(120).collect::<String>()
        ));
    }
}

/// One value of a gateway's `/metrics`.
async fn metric(
    public: std::net::SocketAddr,
    tls: Option<&tokio_rustls::TlsConnector>,
    name: &str,
) -> Option<u64> {
    let (_, body) = generator::one_shot(public, tls, Method::GET, "/metrics", None, Bytes::new())
        .await
        .ok()?;
    let m = gateway::parse_metrics(&String::from_utf8_lossy(&body));
    m.get(name).map(|v| *v as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_bodies_carry_dense_sequence_numbers() {
        let body = gateway_body(4, 3, hang_or_flow)(7);
        let events: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
        let seqs: Vec<u64> = events
            .iter()
            .map(|e| e["data"]["seq"].as_u64().expect("seq"))
            .collect();
        assert_eq!(seqs, [7, 8, 9]);
        assert_eq!(events[0]["id"], "lt-4-7");
        assert_eq!(events[2]["type"], "lt.hang");
        assert_eq!(events[0]["type"], "lt.flow");
        assert_eq!(events[0]["data"]["run"], 4);
    }

    #[test]
    fn single_bodies_are_one_event() {
        let body = gateway_body(1, 1, flow_type)(0);
        let event: Value = serde_json::from_slice(&body).expect("a JSON object");
        assert_eq!(event["data"]["seq"], 0);
        assert!(event["data"]["sent_at_ns"].as_u64().is_some());
    }

    #[test]
    fn routes_count_only_accepted_events() {
        let accepted = [true, false, true, true];
        let even: Route = Arc::new(|seq, hook| (seq % 2 == 0) == (hook == 0));
        assert_eq!(count_routed(&accepted, &even, 0), 2);
        assert_eq!(count_routed(&accepted, &even, 1), 1);
    }
}
