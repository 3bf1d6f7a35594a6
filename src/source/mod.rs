//! Events from message buses: NATS JetStream ([`nats`]) and RabbitMQ ([`amqp`]) sources.
//!
//! A source is stored (see [`crate::store::sources`]); sources declared in the config are
//! written there at start-up, and the admin API creates, pauses, resumes and deletes them at
//! runtime. [`run`] keeps one consumer task per stored, unpaused source in this process and
//! follows the store (re-read every [`RECONCILE_EVERY`], and at once after an admin change in
//! this process). Several processes on one PostgreSQL database each run every source; they
//! share the broker's consumer (the same durable JetStream consumer, the same queue), so the
//! broker spreads messages among them.
//!
//! # Acknowledged only once committed
//!
//! A consumer task takes a batch (up to `batch_size` messages, waiting at most `batch_wait_ms`
//! after the first), turns each message into an event (see [`message`]) and commits the batch
//! through the same path as `POST /v1/events/batch`: the store's group commit, events and their
//! deliveries in one transaction. Only when that commit has returned are the batch's messages
//! acknowledged to the broker. Up to [`IN_FLIGHT`] batches of one consumer commit at once
//! (pulling, committing and acknowledging overlap), and batches are acknowledged in the order
//! they were taken. So:
//! - a crash (even `kill -9`) before the commit loses nothing: nothing was acknowledged, and the
//!   broker redelivers;
//! - a crash between the commit and the acknowledgement makes the broker redeliver messages that
//!   are already events; their ids are the same (see [`message`]), so the store recognises them
//!   as duplicates and enqueues nothing: they are acknowledged and counted as `duplicates`;
//! - a failed commit acknowledges nothing: the batch is handed back to the broker (NATS `nak`,
//!   AMQP `nack` with requeue) and the consumer reconnects after a backoff.
//!
//! A message that cannot become an event (not JSON, no type, an invalid id) is *poison*: it is
//! sent to the broker's dead-letter route at once (NATS `term`, which publishes a
//! `MSG_TERMINATED` advisory; AMQP `nack` without requeue, which a queue with
//! `x-dead-letter-exchange` routes there), recorded with its reason in the source's status and
//! the `hookyard_source_messages` metric, logged, and written (sampled) to the Webhook Log (see
//! [`dead_letters`]); the rest of its batch goes on.
//!
//! # Back-pressure
//!
//! Before each batch the consumer reads the delivery queue's depth (at most every
//! [`DEPTH_EVERY`]); above the source's `max_queue_depth` it stops pulling until the queue drains.
//! Unpulled messages wait in the broker, which also bounds what is in flight here: NATS by the
//! consumer's `max_ack_pending`, AMQP by the prefetch.

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::config::Config;
use crate::metrics::SourceOutcomeLabel;
use crate::model::{now_ms, IngestResult};
use crate::server::error::ApiError;
use crate::server::{ingest, Shared};
use crate::store::{self, Store, StoredSource};

pub mod amqp;
pub mod dead_letters;
pub mod message;
pub mod nats;
pub mod spec;
pub mod status;

pub use spec::{InvalidSource, SourceKind, SourceSpec, TypeFrom};
pub use status::{Failure, SourceBoard, SourceState, SourceStatus};

use message::Message;

/// How often the stored sources are re-read, so that changes made through another process
/// (pause, resume, delete, create) reach this one.
pub const RECONCILE_EVERY: Duration = Duration::from_secs(1);
/// How often the delivery queue's depth is read for back-pressure.
pub const DEPTH_EVERY: Duration = Duration::from_millis(250);
/// Batches of one consumer committing at once (see [`session`]).
pub const IN_FLIGHT: usize = 4;
/// How long a consumer waits for a first message before looking at its stop signal, lag and
/// back-pressure again.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How often the broker's lag is read.
const LAG_EVERY: Duration = Duration::from_secs(2);
/// Connecting (and declaring the stream, consumer or queue) may take this long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest wait before reconnecting after a failure.
const RETRY_BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(10));
/// A stopped consumer may take this long to finish its batch.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// A broker failure (connection, protocol, declaration).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct BrokerError(pub String);

impl BrokerError {
    fn new(what: &str, e: impl std::fmt::Display) -> BrokerError {
        BrokerError(format!("{what}: {e}"))
    }
}

/// What the consumer loop needs of a broker connection.
#[async_trait]
pub trait Broker: Send {
    /// What acknowledging one message takes.
    type Ack: Send;
    /// Waits up to `idle` for a first message (none: an empty batch), then takes what else
    /// arrives within `linger`, up to `max` messages.
    async fn next_batch(
        &mut self,
        max: usize,
        linger: Duration,
        idle: Duration,
    ) -> Result<Vec<Message<Self::Ack>>, BrokerError>;
    /// Acknowledges committed messages.
    async fn ack(&mut self, acks: Vec<Self::Ack>) -> Result<(), BrokerError>;
    /// Sends a poison message to the dead-letter route.
    async fn dead_letter(&mut self, ack: Self::Ack) -> Result<(), BrokerError>;
    /// Hands messages back for redelivery (their commit failed).
    async fn retry(&mut self, acks: Vec<Self::Ack>) -> Result<(), BrokerError>;
    /// Messages waiting in the broker.
    async fn lag(&mut self) -> Result<u64, BrokerError>;
    /// Closes the connection (unacknowledged messages go back to the broker).
    async fn close(&mut self);
}

/// Takes a batch from a broker's message stream: waits up to `idle` for a first item (none: an
/// empty batch), then takes what else arrives within `linger`, up to `max`. An error or the end
/// of the stream after the first item ends the batch and is kept in `failed`, returned by the
/// next call: what was taken is committed (and acknowledged) first.
///
/// Cancel-safe: items are taken into `taken` (owned by the caller, kept across calls), so a
/// call dropped while it lingers loses nothing; the next call goes on filling the same batch.
/// That matters for AMQP, whose `multiple` ack would settle a dropped delivery's tag.
async fn take_batch<S, T, E>(
    stream: &mut S,
    taken: &mut Vec<T>,
    failed: &mut Option<BrokerError>,
    (max, linger, idle): (usize, Duration, Duration),
    what: &str,
) -> Result<Vec<T>, BrokerError>
where
    S: futures_util::Stream<Item = Result<T, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    let ended = || BrokerError(format!("{what}: the stream ended"));
    if taken.is_empty() {
        if let Some(e) = failed.take() {
            return Err(e);
        }
        match tokio::time::timeout(idle, stream.next()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(None) => return Err(ended()),
            Ok(Some(Err(e))) => return Err(BrokerError::new(what, e)),
            Ok(Some(Ok(item))) => taken.push(item),
        }
    }
    let deadline = tokio::time::Instant::now() + linger;
    while taken.len() < max {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Err(_) => break,
            Ok(None) => {
                *failed = Some(ended());
                break;
            }
            Ok(Some(Err(e))) => {
                *failed = Some(BrokerError::new(what, e));
                break;
            }
            Ok(Some(Ok(item))) => taken.push(item),
        }
    }
    Ok(std::mem::take(taken))
}

/// Writes the sources declared in the config to the store: new names are created (not paused),
/// known ones get the declared spec and keep their pause state.
pub async fn apply_declared(config: &Config, store: &dyn Store) -> Result<(), store::Error> {
    for spec in &config.sources {
        let text = serde_json::to_string(spec)
            .map_err(|e| store::Error::Database(format!("encoding source {}: {e}", spec.name)))?;
        let now = now_ms();
        let existing = store
            .sources()
            .await?
            .into_iter()
            .find(|s| s.name == spec.name);
        match existing {
            Some(old) if old.spec == text => {}
            Some(old) => {
                store
                    .update_source(&StoredSource {
                        spec: text,
                        updated_at: now,
                        ..old
                    })
                    .await?;
            }
            None => {
                let new = StoredSource {
                    name: spec.name.clone(),
                    spec: text,
                    paused: false,
                    created_at: now,
                    updated_at: now,
                };
                match store.insert_source(&new).await {
                    // Another process starting on the same database inserted it meanwhile.
                    Err(store::Error::Conflict(_)) => {
                        store.update_source(&new).await?;
                    }
                    other => other?,
                }
            }
        }
    }
    Ok(())
}

/// A consumer task of this process.
struct Running {
    /// The stored spec it runs (JSON text): a different one restarts it.
    spec: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self, name: &str) {
        let _ = self.stop.send(true);
        let mut task = self.task;
        if tokio::time::timeout(STOP_WAIT, &mut task).await.is_err() {
            warn!(source = %name, "source did not stop in time; aborted");
            task.abort();
        }
    }
}

/// Runs the stored sources until `stop`, then stops their consumers (each finishes the batch it
/// is committing).
pub async fn run(state: Shared, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut running: HashMap<String, Running> = HashMap::new();
    loop {
        reconcile(&state, &mut running).await;
        tokio::select! {
            _ = &mut stop => break,
            _ = state.sources.rung() => {}
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
        }
    }
    for (name, r) in running.drain() {
        r.stop(&name).await;
    }
}

/// Starts, restarts and stops consumer tasks to match the store.
async fn reconcile(state: &Shared, running: &mut HashMap<String, Running>) {
    let stored = match state.store.sources().await {
        Ok(stored) => stored,
        Err(e) => {
            warn!(error = %e, "reading sources failed");
            return;
        }
    };
    let mut known = HashSet::new();
    for source in stored {
        known.insert(source.name.clone());
        let current = running.get(&source.name).map(|r| r.spec == source.spec);
        if current == Some(true) && !source.paused {
            continue;
        }
        if let Some(r) = running.remove(&source.name) {
            r.stop(&source.name).await;
        }
        if source.paused {
            state.sources.set_state(&source.name, SourceState::Paused);
            continue;
        }
        let spec = match serde_json::from_str::<SourceSpec>(&source.spec) {
            Ok(spec) => spec,
            Err(e) => {
                state.sources.update(&source.name, |s| {
                    s.state = SourceState::Failing;
                    s.last_error = Some(format!("the stored spec cannot be read: {e}"));
                });
                continue;
            }
        };
        info!(source = %spec.name, kind = spec.kind.as_str(), "starting source");
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(consume(state.clone(), spec, stop_rx));
        running.insert(
            source.name.clone(),
            Running {
                spec: source.spec,
                stop,
                task,
            },
        );
    }
    let gone: Vec<String> = running
        .keys()
        .filter(|name| !known.contains(*name))
        .cloned()
        .collect();
    for name in gone {
        if let Some(r) = running.remove(&name) {
            info!(source = %name, "source deleted: stopping");
            r.stop(&name).await;
        }
    }
    state.sources.retain(|name| known.contains(name));
}

/// One source's consumer: connects, consumes until stopped, reconnects with a backoff after
/// any failure.
async fn consume(state: Shared, spec: SourceSpec, mut stop: watch::Receiver<bool>) {
    let name = spec.name.clone();
    let mut backoff = RETRY_BACKOFF.0;
    loop {
        state.sources.set_state(&name, SourceState::Connecting);
        let started = Instant::now();
        // Not raced against the stop signal: the session finishes the batch it is committing.
        let outcome = connect_and_consume(&state, &spec, stop.clone()).await;
        let error = match outcome {
            Ok(()) => return,
            Err(e) => e,
        };
        warn!(source = %name, error = %error, "source failed; reconnecting");
        state.sources.update(&name, |s| {
            s.state = SourceState::Failing;
            s.since = now_ms();
            s.last_error = Some(error.0.clone());
        });
        if started.elapsed() > RETRY_BACKOFF.1 * 3 {
            backoff = RETRY_BACKOFF.0;
        }
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(RETRY_BACKOFF.1);
    }
}

async fn connect_and_consume(
    state: &Shared,
    spec: &SourceSpec,
    stop: watch::Receiver<bool>,
) -> Result<(), BrokerError> {
    match spec.kind {
        SourceKind::Nats => match connect(nats::NatsBroker::connect(spec), &stop).await? {
            Some(broker) => session(state, spec, broker, stop).await,
            None => Ok(()),
        },
        SourceKind::Amqp => match connect(amqp::AmqpBroker::connect(spec), &stop).await? {
            Some(broker) => session(state, spec, broker, stop).await,
            None => Ok(()),
        },
    }
}

/// Runs `connecting` for at most [`CONNECT_TIMEOUT`]; none when stopped meanwhile.
async fn connect<B>(
    connecting: impl Future<Output = Result<B, BrokerError>>,
    stop: &watch::Receiver<bool>,
) -> Result<Option<B>, BrokerError> {
    let mut stopped = stop.clone();
    tokio::select! {
        _ = stopped.wait_for(|s| *s) => Ok(None),
        broker = tokio::time::timeout(CONNECT_TIMEOUT, connecting) => broker
            .map_err(|_| BrokerError(format!("connecting took over {CONNECT_TIMEOUT:?}")))?
            .map(Some),
    }
}

/// Consumes from a connected broker until stopped (Ok) or a failure (Err).
///
/// Up to [`IN_FLIGHT`] batches are committing at once: while batch N commits, batch N+1 is
/// pulled, turned into events and handed to the store (whose group commit may join them), and
/// batch N-1 is acknowledged. Acknowledgements and hand-backs are made in the order the
/// batches were taken, never before their own commit returned: AMQP's `multiple` ack settles
/// every earlier delivery tag, so batch N+1 may only be acknowledged once batch N is settled.
async fn session<B: Broker>(
    state: &Shared,
    spec: &SourceSpec,
    mut broker: B,
    mut stop: watch::Receiver<bool>,
) -> Result<(), BrokerError> {
    let name = spec.name.as_str();
    state.sources.update(name, |s| s.last_error = None);
    state.sources.set_state(name, SourceState::Running);
    let linger = Duration::from_millis(spec.batch_wait_ms);
    let mut depth = Depth::default();
    let mut lag_due = Instant::now();
    let mut in_flight: VecDeque<Committing<B::Ack>> = VecDeque::with_capacity(IN_FLIGHT);
    // Set by the stop signal: nothing more is pulled, what is in flight is settled.
    let mut stopping = false;
    // After a failure nothing more is acknowledged: the batches still committing finish in
    // their own tasks, and the broker redelivers their messages (duplicates then, acknowledged
    // by the next session). Acknowledging them here could settle, through AMQP's `multiple`
    // ack, a failed batch whose hand-back did not reach the broker.
    let outcome = loop {
        if stopping && in_flight.is_empty() {
            break Ok(());
        }
        if !stopping && Instant::now() >= lag_due {
            lag_due = Instant::now() + LAG_EVERY;
            match broker.lag().await {
                Ok(lag) => {
                    state.sources.update(name, |s| s.lag = Some(lag));
                    state
                        .metrics
                        .source_lag
                        .get_or_create(&crate::metrics::SourceLabel {
                            source: name.to_owned(),
                        })
                        .set(i64::try_from(lag).unwrap_or(i64::MAX));
                }
                Err(e) => break Err(e),
            }
        }
        // The source's own bound on the queue, and the gateway's ingest back-pressure
        // (`delivery.ingest_backlog_limit`, which refuses HTTP ingest meanwhile): stop pulling.
        let throttled = !stopping
            && (depth.too_deep(state, spec.max_queue_depth).await
                || state.backlog.retry_after().is_some());
        if !stopping {
            let now = if throttled {
                SourceState::Throttled
            } else {
                SourceState::Running
            };
            state.sources.set_state(name, now);
        }
        let pull = !stopping && !throttled && in_flight.len() < IN_FLIGHT;
        tokio::select! {
            // Settling first keeps acknowledgements prompt and bounds what is unacknowledged.
            biased;
            committed = front(&mut in_flight), if !in_flight.is_empty() => {
                let Some(batch) = in_flight.pop_front() else { continue };
                if let Err(e) = settle(state, name, &mut broker, batch, committed).await {
                    break Err(e);
                }
            }
            // The guard `wait_for` returns is dropped at once: it must not live across awaits.
            _ = async { stop.wait_for(|s| *s).await.is_ok() }, if !stopping => stopping = true,
            batch = broker.next_batch(spec.batch_size, linger, IDLE_WAIT), if pull => {
                // A batch taken is started whatever the stop signal says: its messages are
                // out of the broker's hands until acknowledged or handed back.
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(e) => break Err(e),
                };
                if batch.is_empty() {
                    continue;
                }
                match start_batch(state, spec, &mut broker, batch).await {
                    Ok(Some(committing)) => in_flight.push_back(committing),
                    Ok(None) => {}
                    Err(e) => break Err(e),
                }
            }
            // Throttled, nothing in flight: look at the depth again soon.
            _ = tokio::time::sleep(DEPTH_EVERY), if !pull && in_flight.is_empty() => {}
        }
    };
    broker.close().await;
    outcome
}

/// A batch handed to the store: its commit task and the acknowledgements it waits for.
struct Committing<A> {
    acks: Vec<A>,
    task: tokio::task::JoinHandle<Result<Vec<IngestResult>, ApiError>>,
}

/// The outcome of the oldest batch in flight. Cancel-safe: the task keeps running, and its
/// handle stays in the queue until the outcome was taken.
async fn front<A>(in_flight: &mut VecDeque<Committing<A>>) -> Result<Vec<IngestResult>, String> {
    let Some(batch) = in_flight.front_mut() else {
        return std::future::pending().await;
    };
    match (&mut batch.task).await {
        Ok(outcome) => outcome.map_err(|e| e.message),
        Err(e) => Err(format!("the commit task failed: {e}")),
    }
}

/// The delivery queue's depth, read at most every [`DEPTH_EVERY`].
#[derive(Default)]
struct Depth {
    read_at: Option<Instant>,
    pending: u64,
}

impl Depth {
    async fn too_deep(&mut self, state: &Shared, max: u64) -> bool {
        if self.read_at.is_none_or(|at| at.elapsed() >= DEPTH_EVERY) {
            match state.store.queue_stats(now_ms()).await {
                Ok(stats) => self.pending = stats.pending,
                // Unknown depth: keep the last one; the commit will tell if the store is down.
                Err(e) => debug!(error = %e, "reading the queue depth failed"),
            }
            self.read_at = Some(Instant::now());
        }
        self.pending > max
    }
}

/// Turns a batch into events, dead-letters its poison messages and starts the commit of the
/// rest (none when the whole batch was poison).
async fn start_batch<B: Broker>(
    state: &Shared,
    spec: &SourceSpec,
    broker: &mut B,
    batch: Vec<Message<B::Ack>>,
) -> Result<Option<Committing<B::Ack>>, BrokerError> {
    let name = spec.name.as_str();
    state
        .sources
        .update(name, |s| s.consumed += batch.len() as u64);
    let mut events = Vec::with_capacity(batch.len());
    let mut acks = Vec::with_capacity(batch.len());
    for msg in batch {
        let prepared = message::to_event(spec, &msg).and_then(|event| {
            ingest::prepare(state, event, "").map_err(|e| match e.field {
                Some(field) => format!("{field}: {}", e.message),
                None => e.message,
            })
        });
        match prepared {
            Ok(event) => {
                events.push(event);
                acks.push(msg.ack);
            }
            Err(reason) => {
                let id = msg
                    .broker_id
                    .clone()
                    .unwrap_or_else(|| msg.derived_id.clone());
                warn!(source = %name, subject = %msg.subject, id = %id, reason = %reason,
                      "message cannot be an event: dead-lettered");
                dead_letters::record(state, spec, &msg, &id, &reason);
                broker.dead_letter(msg.ack).await?;
                count(state, name, "dead_lettered", 1);
                state.sources.failed(
                    name,
                    Failure {
                        at: now_ms(),
                        subject: msg.subject,
                        id,
                        reason,
                    },
                );
            }
        }
    }
    if events.is_empty() {
        return Ok(None);
    }
    let task = {
        let state = state.clone();
        tokio::spawn(async move { ingest::commit(&state, events).await })
    };
    Ok(Some(Committing { acks, task }))
}

/// Acknowledges a committed batch, or hands a failed one back.
async fn settle<B: Broker>(
    state: &Shared,
    name: &str,
    broker: &mut B,
    batch: Committing<B::Ack>,
    committed: Result<Vec<IngestResult>, String>,
) -> Result<(), BrokerError> {
    match committed {
        Ok(results) => {
            let duplicates = results.iter().filter(|r| r.duplicate).count() as u64;
            let committed = results.len() as u64 - duplicates;
            // Counted before the acknowledgement: what was committed stays committed even if
            // the acknowledgement is lost (the redelivery is then a duplicate).
            state.sources.update(name, |s| {
                s.committed += committed;
                s.duplicates += duplicates;
            });
            count(state, name, "committed", committed);
            count(state, name, "duplicate", duplicates);
            broker.ack(batch.acks).await
        }
        Err(e) => {
            let error = BrokerError(format!(
                "committing {} events failed: {}",
                batch.acks.len(),
                e
            ));
            // Handing back is a courtesy: if it fails, the broker redelivers them anyway once
            // the connection closes or their ack wait ends.
            if let Err(retry) = broker.retry(batch.acks).await {
                debug!(source = %name, error = %retry, "handing a failed batch back failed");
            }
            Err(error)
        }
    }
}

fn count(state: &Shared, source: &str, outcome: &str, n: u64) {
    if n > 0 {
        state
            .metrics
            .source_messages
            .get_or_create(&SourceOutcomeLabel {
                source: source.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc_by(n);
    }
}
