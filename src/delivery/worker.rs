//! The worker pool: claims due deliveries and sends them.
//!
//! One dispatcher loop claims batches from the store with a lease and spawns one task per
//! delivery. Concurrency is bounded twice: globally (`delivery.concurrency`) and per webhook
//! (`per_webhook_concurrency` or the webhook's `max_concurrency`). A webhook at its limit is left
//! out of the next claim, so a slow or hanging endpoint only ever occupies its own slots and
//! never delays the others.
//!
//! Two shortcuts keep the queue's round trips off the path of a delivery:
//! - **Started at ingest.** When this process has free slots for all of a new event's
//!   deliveries and no known backlog, the ingest commits them already leased to it and starts
//!   them as soon as the commit returns ([`Deliverer::reserve`]): no claim at all.
//! - **Claimed ahead.** A claim may take, for a webhook whose slots are all busy, up to as many
//!   again as its limit; they wait here, and each delivery of that webhook that finishes starts
//!   the next one at once instead of waiting for the dispatcher's next claim. One whose lease
//!   could no longer cover an attempt is released instead, as are all of them on shutdown.
//!
//! Every attempt ends in [`Store::complete`], which logs it and moves the delivery on; the lease
//! makes sure a delivery abandoned by a crashed process is picked up again.
//!
//! A **test send** ([`Deliverer::send_test`]) goes through the same attempt: its event and its
//! one delivery are committed leased to this process, sent at once, and completed like any
//! other. Its delivery id ends with [`TEST_SUFFIX`], which makes its first failure final and
//! drops its write-back.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tracing::{debug, info, warn};

use crate::auth::{self, TokenCache};
use crate::config::DeliveryConfig;
use crate::delivery::client::{self, SsrfPolicy};
use crate::delivery::retry::{self, Backoff, StatusClass};
use crate::delivery::shape::{Answer, OutgoingRequest, Shaped, Shaper};
use crate::delivery::{plugin_output, signing};
use crate::metrics::Metrics;
use crate::model::{
    now_ms, Attempt, AttemptOutcome, BodyFrom, Completion, Delivery, DeliverySource,
    DeliveryStatus, Event, EventToIngest, Job, Lease, Millis, Next, PluginFailure, RequestLog,
    SinkMessage, Webhook,
};
use crate::secrets::scrub::redact_url;
use crate::store::{ClaimRequest, Store};
use crate::webhooks::WebhookDirectory;

/// Headers whose values the Webhook Log never shows.
const REDACTED: &str = "[redacted]";

/// How much of a response body the response phase (write-back) may see.
const WRITEBACK_BODY_CAP: usize = 1 << 20;

/// Deliveries claimed per round trip to the store, at most.
const CLAIM_BATCH: usize = 256;

/// What a delivery's lease must still cover besides its webhook's timeout when it starts: the
/// plugin call and recording the attempt.
const LEASE_MARGIN_MS: i64 = 5_000;

/// A delivery is queued here only if its lease would still let it start after this long.
const QUEUE_MIN_WAIT_MS: i64 = 1_000;

/// A test send (`POST /admin/v1/webhooks/{id}/test`) is told by its delivery id: one attempt,
/// never retried, no write-back.
pub use crate::model::{is_test_delivery as is_test, TEST_DELIVERY_SUFFIX as TEST_SUFFIX};

/// A new delivery of `event` to a webhook, as a job to start at once (attempt 1).
fn new_job(webhook_id: String, id: String, event: Event) -> Job {
    let (mut source, origin) = DeliverySource::of(&event);
    if is_test(&id) {
        source = DeliverySource::Test;
    }
    Job {
        delivery: Delivery {
            id,
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            webhook_id,
            status: DeliveryStatus::Pending,
            attempts: 0,
            attempts_since_replay: 0,
            next_attempt_at: Some(event.received_at),
            last_status: None,
            last_error: None,
            created_at: event.received_at,
            updated_at: event.received_at,
            source,
            origin,
        },
        event,
        attempt_no: 1,
    }
}

/// Everything a worker needs, shared by all delivery tasks.
pub struct Deliverer {
    store: Arc<dyn Store>,
    webhooks: Arc<WebhookDirectory>,
    shaper: Arc<dyn Shaper>,
    http: reqwest::Client,
    ssrf: Arc<SsrfPolicy>,
    tokens: TokenCache,
    metrics: Arc<Metrics>,
    config: DeliveryConfig,
    backoff: Backoff,
    /// Lease owner id of this process.
    owner: String,
    /// Woken by ingest and replay so new work starts without waiting for the poll interval.
    wake: Arc<Notify>,
    /// Global in-flight bound.
    slots: Arc<Semaphore>,
    /// Per-webhook in-flight bounds, keyed by webhook id; the limit travels with the semaphore so
    /// a changed limit gets a new one.
    per_webhook: DashMap<String, (u32, Arc<Semaphore>)>,
    /// Set once a claim has come back short: from then on, which webhooks may have due
    /// deliveries waiting in the store is known ([`WebhookQueue::behind`]). Until then (a
    /// backlog from before a restart) nothing starts at ingest.
    caught_up: AtomicBool,
    /// Set once the dispatcher stops: nothing more starts at ingest.
    stopping: AtomicBool,
    /// Per webhook: its deliveries running here, and those claimed ahead while its slots were
    /// all busy. A delivery that finishes starts its webhook's next queued one at once, without
    /// waiting for a claim (see [`Deliverer::queue`]).
    queues: std::sync::Mutex<HashMap<String, WebhookQueue>>,
    /// Deliveries someone waits on (a `sync` inbound push waiting for the sink's answer), each
    /// with what to wake once an attempt of it is recorded here. See [`AttemptWatch`].
    watched: Arc<DashMap<String, Arc<Notify>>>,
}

/// Wakes its holder after each attempt of its deliveries this process records; forgets them
/// when dropped. An attempt recorded by another process sharing the store wakes nobody: the
/// holder also re-reads the store now and then.
pub struct AttemptWatch {
    watched: Arc<DashMap<String, Arc<Notify>>>,
    ids: Vec<String>,
    notify: Arc<Notify>,
}

impl AttemptWatch {
    /// Resolves after an attempt of one of the deliveries was recorded (at once if one was
    /// recorded since the last call).
    pub async fn attempted(&self) {
        self.notify.notified().await;
    }
}

impl Drop for AttemptWatch {
    fn drop(&mut self) {
        for id in &self.ids {
            self.watched.remove(id);
        }
    }
}

/// A webhook's deliveries in this process, under [`Deliverer::queues`]' lock.
#[derive(Default)]
struct WebhookQueue {
    /// Tasks sending its deliveries: each takes the next queued one when it finishes.
    running: usize,
    /// Claimed, waiting for one of those tasks, oldest first, each with the end of its lease.
    waiting: VecDeque<(Job, Millis)>,
    /// Due deliveries of this webhook may be waiting in the store (a full claim took some of
    /// them, or some were handed back): its new events queue behind them instead of starting at
    /// ingest, until a claim that did not leave it out comes back short.
    behind: bool,
}

impl WebhookQueue {
    /// Whether the entry says nothing a fresh one would not.
    fn is_idle(&self) -> bool {
        self.running == 0 && self.waiting.is_empty() && !self.behind
    }
}

/// Records what a claim says about each webhook's backlog: a claim that came back short took
/// every due delivery of the webhooks it did not leave out (`excluded`); a full one may have
/// left more of those it took some of (`claimed`, their webhook ids). Webhooks some were handed
/// back for (`given_back`) have those due now.
fn note_claim(
    queues: &mut HashMap<String, WebhookQueue>,
    full: bool,
    excluded: &[String],
    claimed: &[&str],
    given_back: &[&str],
) {
    if full {
        for id in claimed {
            queues.entry((*id).to_owned()).or_default().behind = true;
        }
    } else {
        for (id, queue) in queues.iter_mut() {
            if !excluded.contains(id) {
                queue.behind = false;
            }
        }
    }
    for id in given_back {
        queues.entry((*id).to_owned()).or_default().behind = true;
    }
    queues.retain(|_, queue| !queue.is_idle());
}

/// Whether new deliveries to these webhooks may start at ingest as far as their queues go: none
/// of them has deliveries waiting, here or (as far as this process knows) in the store.
fn nothing_waits(queues: &HashMap<String, WebhookQueue>, deliveries: &[(String, String)]) -> bool {
    deliveries.iter().all(|(webhook_id, _)| {
        queues
            .get(webhook_id)
            .is_none_or(|q| !q.behind && q.waiting.is_empty())
    })
}

/// Slots taken for the deliveries of one event about to be ingested, which this process will
/// start itself (see [`Deliverer::reserve`]). Dropping it frees the slots.
pub struct Reservation {
    lease: Lease,
    /// A global and a per-webhook slot for each delivery, in order.
    slots: Vec<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Reservation {
    /// The lease the ingest must commit the deliveries under.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

/// What one HTTP exchange produced.
struct Exchange {
    request: RequestLog,
    status: Option<u16>,
    headers: Vec<(String, String)>,
    /// The body as the log keeps it (truncated).
    body: Option<String>,
    /// The body as read, up to the write-back cap, for the response phase.
    raw_body: Vec<u8>,
    error: Option<String>,
    retry_after: Option<Duration>,
    /// Refused before sending (SSRF, bad URL): retrying cannot help.
    refused: bool,
    /// Exchanges before this one within the same attempt, logged as attempts of their own:
    /// the request answered 401 before an OAuth2 token refresh.
    earlier: Vec<Attempt>,
}

impl Deliverer {
    /// Creates the deliverer. `http` must be the SSRF-protected client of [`client::build`].
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        store: Arc<dyn Store>,
        webhooks: Arc<WebhookDirectory>,
        shaper: Arc<dyn Shaper>,
        http: reqwest::Client,
        ssrf: Arc<SsrfPolicy>,
        metrics: Arc<Metrics>,
        config: DeliveryConfig,
        wake: Arc<Notify>,
    ) -> Deliverer {
        let tokens = TokenCache::new(
            http.clone(),
            metrics.clone(),
            Duration::from_secs(config.token_refresh_margin_secs),
        )
        .with_ssrf_policy(ssrf.clone());
        let backoff = Backoff {
            base_ms: config.retry_base_ms,
            factor: config.retry_factor,
            max_ms: config.retry_max_ms,
            jitter: config.retry_jitter,
        };
        Deliverer {
            slots: Arc::new(Semaphore::new(config.concurrency)),
            owner: format!("{}-{}", std::process::id(), uuid::Uuid::now_v7().simple()),
            store,
            webhooks,
            shaper,
            http,
            ssrf,
            tokens,
            metrics,
            backoff,
            config,
            wake,
            per_webhook: DashMap::new(),
            caught_up: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            queues: std::sync::Mutex::new(HashMap::new()),
            watched: Arc::new(DashMap::new()),
        }
    }

    /// Watches the attempts of `delivery_ids` (before they are committed, so none is missed).
    pub fn watch(&self, delivery_ids: &[String]) -> AttemptWatch {
        let notify = Arc::new(Notify::new());
        for id in delivery_ids {
            self.watched.insert(id.clone(), notify.clone());
        }
        AttemptWatch {
            watched: self.watched.clone(),
            ids: delivery_ids.to_vec(),
            notify,
        }
    }

    /// Takes a slot for each of an event's `deliveries` (pairs of webhook id and delivery id),
    /// all or none, so that the ingest can commit them leased to this process and
    /// [`start_reserved`](Self::start_reserved) them once committed, without a claim. None when
    /// this is off (`delivery.start_at_ingest`), the dispatcher has stopped, one of the
    /// webhooks may have due deliveries waiting (new ones queue behind them), or a slot is
    /// missing: the deliveries are then committed free and claimed as usual.
    pub fn reserve(&self, deliveries: &[(String, String)]) -> Option<Reservation> {
        if !self.config.start_at_ingest
            || deliveries.is_empty()
            || self.stopping.load(Ordering::Acquire)
            || !self.caught_up.load(Ordering::Acquire)
            || !nothing_waits(&self.lock_queues(), deliveries)
        {
            return None;
        }
        let mut slots = Vec::with_capacity(deliveries.len());
        for (webhook_id, _) in deliveries {
            let global = self.slots.clone().try_acquire_owned().ok()?;
            let local = self.webhook_slot(webhook_id)?;
            slots.push((global, local));
        }
        Some(Reservation {
            lease: Lease {
                owner: self.owner.clone(),
                until: now_ms().saturating_add((self.config.lease_secs * 1000) as i64),
            },
            slots,
        })
    }

    /// Starts the deliveries of `event`, just committed under `reservation`'s lease: the same
    /// `deliveries` that were reserved, in the same order.
    pub fn start_reserved(
        self: &Arc<Self>,
        reservation: Reservation,
        event: Event,
        deliveries: Vec<(String, String)>,
    ) {
        let events = std::iter::repeat_n(event, deliveries.len());
        for (((global, local), (webhook_id, id)), event) in
            reservation.slots.into_iter().zip(deliveries).zip(events)
        {
            let job = new_job(webhook_id, id, event);
            self.metrics.started_at_ingest.inc();
            self.start(job, global, local);
        }
    }

    /// Runs the dispatcher until `shutdown` resolves, then waits up to `grace` for in-flight
    /// deliveries. Deliveries still running after that keep their lease and are sent again
    /// after it expires (at least once).
    pub async fn run(
        self: Arc<Self>,
        shutdown: impl std::future::Future<Output = ()>,
        grace: Duration,
    ) {
        tokio::pin!(shutdown);
        let poll = Duration::from_millis(self.config.poll_interval_ms);
        loop {
            // Waiting for a free slot may be cut short by shutdown; claiming may not: a claim
            // the store committed must be started (or released), or its deliveries would sit
            // leased to this stopped process until the lease expires.
            let first = tokio::select! {
                _ = &mut shutdown => break,
                permit = self.slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            let claimed = self.dispatch_once(first).await;
            if claimed == 0 {
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(poll) => {}
                }
            }
        }
        self.stopping.store(true, Ordering::Release);
        // Claimed ahead but not started: give them back so that they need not wait for their
        // lease after a restart.
        let waiting: Vec<(Job, Millis)> = self
            .lock_queues()
            .values_mut()
            .flat_map(|q| q.waiting.drain(..))
            .collect();
        self.metrics.queued.dec_by(waiting.len() as i64);
        self.give_back_leased(waiting, now_ms()).await;
        let all = self.config.concurrency as u32;
        match tokio::time::timeout(grace, self.slots.acquire_many(all)).await {
            Ok(_) => info!("deliveries drained"),
            Err(_) => warn!(
                in_flight = all as usize - self.slots.available_permits(),
                "shutdown grace expired with deliveries in flight; they will be retried after their lease"
            ),
        }
    }

    /// Claims one batch and starts it, `first` being a free slot taken beforehand so claimed
    /// work never waits on this process. Returns how many deliveries were claimed.
    async fn dispatch_once(self: &Arc<Self>, first: OwnedSemaphorePermit) -> usize {
        let free = self.slots.available_permits() + 1;
        // Webhooks with every slot busy and a full queue here are left out.
        let exclude: Vec<String> = {
            let queues = self.lock_queues();
            self.per_webhook
                .iter()
                .filter(|e| {
                    let (limit, sem) = e.value();
                    sem.available_permits() == 0
                        && queues.get(e.key()).map_or(0, |q| q.waiting.len()) >= *limit as usize
                })
                .map(|e| e.key().clone())
                .collect()
        };
        let limit = self.webhook_room(free, CLAIM_BATCH);
        let now = now_ms();
        let lease_ms = (self.config.lease_secs * 1000) as i64;
        let req = ClaimRequest {
            owner: self.owner.clone(),
            now,
            lease_ms,
            limit,
            exclude_webhooks: exclude.clone(),
        };
        let jobs = match self.store.claim(req).await {
            Ok(jobs) => jobs,
            Err(e) => {
                warn!(error = %e, "claiming deliveries failed");
                drop(first);
                tokio::time::sleep(Duration::from_millis(self.config.poll_interval_ms)).await;
                return 0;
            }
        };
        let claimed = jobs.len();
        self.metrics.claims.inc();
        self.metrics.claimed.inc_by(claimed as u64);
        let claimed_hooks: Vec<String> =
            jobs.iter().map(|j| j.delivery.webhook_id.clone()).collect();
        let mut first = Some(first);
        let (mut give_back, mut given_back_hooks) = (Vec::new(), Vec::new());
        for job in jobs {
            let global = first
                .take()
                .or_else(|| self.slots.clone().try_acquire_owned().ok());
            let local = global
                .as_ref()
                .and_then(|_| self.webhook_slot(&job.delivery.webhook_id));
            match (global, local) {
                (Some(global), Some(local)) => self.start(job, global, local),
                _ => {
                    if let Some(job) = self.queue(job, now.saturating_add(lease_ms)) {
                        given_back_hooks.push(job.delivery.webhook_id);
                        give_back.push(job.delivery.id);
                    }
                }
            }
        }
        let full = claimed >= limit;
        note_claim(
            &mut self.lock_queues(),
            full,
            &exclude,
            &claimed_hooks.iter().map(String::as_str).collect::<Vec<_>>(),
            &given_back_hooks
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
        );
        if !full {
            self.caught_up.store(true, Ordering::Release);
        }
        self.give_back(&give_back).await;
        claimed
    }

    /// Queues a claimed `job` whose webhook has no free slot here, to be started by the next of
    /// that webhook's running deliveries to finish. Refused (the job is returned, to be handed
    /// back) when none is running here, when the webhook's queue already holds as many as its
    /// concurrency limit, or when the lease would leave too little time to send it after a wait.
    fn queue(&self, job: Job, lease_until: Millis) -> Option<Job> {
        let Some(hook) = self.webhooks.get(&job.delivery.webhook_id) else {
            return Some(job);
        };
        if !startable(&hook, lease_until, now_ms() + QUEUE_MIN_WAIT_MS) {
            return Some(job);
        }
        let mut queues = self.lock_queues();
        match queues.get_mut(&hook.id) {
            Some(queue)
                if queue.running > 0
                    && queue.waiting.len() < self.webhook_limit(&hook) as usize =>
            {
                queue.waiting.push_back((job, lease_until));
                self.metrics.queued.inc();
                None
            }
            _ => Some(job),
        }
    }

    /// Called by a task of `webhook_id` that finished a delivery: the webhook's next queued
    /// delivery that can still be started, for the task to send next, or none, and the task
    /// ends. Queued ones whose lease got too short, or whose webhook is gone or disabled, are
    /// handed back. Wakes the dispatcher when the queue runs low, so that it is refilled before
    /// it runs dry.
    async fn next_queued(&self, webhook_id: &str) -> Option<Job> {
        let hook = self.webhooks.get(webhook_id).filter(|h| h.spec.enabled);
        let now = now_ms();
        let mut stale = Vec::new();
        let next = {
            let mut queues = self.lock_queues();
            let queue = queues.entry(webhook_id.to_owned()).or_default();
            let mut next = None;
            while let Some((job, lease_until)) = queue.waiting.pop_front() {
                self.metrics.queued.dec();
                match &hook {
                    Some(hook) if startable(hook, lease_until, now) => {
                        next = Some(job);
                        break;
                    }
                    _ => stale.push((job, lease_until)),
                }
            }
            // Handed back, they are due now: the webhook's new events wait behind them.
            queue.behind |= !stale.is_empty();
            if let Some(hook) = &hook {
                if queue.waiting.len() <= self.webhook_limit(hook) as usize / 2 {
                    self.wake.notify_one();
                }
            }
            if next.is_none() {
                queue.running = queue.running.saturating_sub(1);
                if queue.is_idle() {
                    queues.remove(webhook_id);
                }
            }
            next
        };
        self.give_back_leased(stale, now).await;
        next
    }

    fn lock_queues(&self) -> std::sync::MutexGuard<'_, HashMap<String, WebhookQueue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Releases deliveries this process will not send after all. Only those whose lease has not
    /// run out: one that has may have been claimed again since (by this very process, under
    /// the same owner), and releasing it would free the new claim.
    async fn give_back_leased(&self, jobs: Vec<(Job, Millis)>, now: Millis) {
        let ids: Vec<String> = jobs
            .into_iter()
            .filter(|(_, lease_until)| *lease_until > now)
            .map(|(job, _)| job.delivery.id)
            .collect();
        self.give_back(&ids).await;
    }

    /// Releases leased deliveries this process will not send, so that they are claimable now.
    async fn give_back(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        if let Err(e) = self.store.release(&self.owner, ids).await {
            warn!(error = %e, "releasing deliveries failed; they return after their lease");
        }
    }

    /// Sends `job` on a task of its own, holding its global and per-webhook slots until done.
    fn start(
        self: &Arc<Self>,
        job: Job,
        global: OwnedSemaphorePermit,
        local: OwnedSemaphorePermit,
    ) {
        let webhook_id = job.delivery.webhook_id.clone();
        self.lock_queues()
            .entry(webhook_id.clone())
            .or_default()
            .running += 1;
        let this = self.clone();
        tokio::spawn(async move {
            let mut job = job;
            loop {
                this.metrics.in_flight.inc();
                this.deliver(job, false).await;
                this.metrics.in_flight.dec();
                // The slots pass on to the webhook's next queued delivery, if any.
                match this.next_queued(&webhook_id).await {
                    Some(next) => job = next,
                    None => break,
                }
            }
            // A saturated webhook (or process) was left out of the last claim: wake the
            // dispatcher now that a slot is free instead of letting it wait for the poll.
            let was_full = local.semaphore().available_permits() == 0
                || global.semaphore().available_permits() == 0;
            drop((global, local));
            if was_full {
                this.wake.notify_one();
            }
        });
    }

    /// How many deliveries the enabled webhooks could start (within `free` global slots) or
    /// queue here now, up to `cap`: a claim asks for no more, so a batch is not claimed for a
    /// webhook short of slots only to be released. At least one, so deliveries of a webhook this
    /// process does not know yet are still claimed (and the webhook looked up).
    fn webhook_room(&self, free: usize, cap: usize) -> usize {
        let queues = self.lock_queues();
        let (mut start, mut wait) = (0, 0);
        for hook in self.webhooks.enabled() {
            let limit = self.webhook_limit(&hook) as usize;
            start += match self.per_webhook.get(&hook.id) {
                Some(entry) => entry.value().1.available_permits(),
                None => limit,
            };
            // Behind deliveries running here, as many again may wait for their slots.
            wait += queues
                .get(&hook.id)
                .filter(|q| q.running > 0)
                .map_or(0, |q| limit.saturating_sub(q.waiting.len()));
            if start.min(free) + wait >= cap {
                return cap;
            }
        }
        (start.min(free) + wait).max(1)
    }

    /// A webhook's concurrency limit here.
    fn webhook_limit(&self, hook: &Webhook) -> u32 {
        hook.spec
            .max_concurrency
            .unwrap_or(self.config.per_webhook_concurrency)
            .max(1)
    }

    /// A slot of the webhook's own concurrency limit, if one is free.
    fn webhook_slot(&self, webhook_id: &str) -> Option<OwnedSemaphorePermit> {
        let limit = match self.webhooks.get(webhook_id) {
            Some(hook) => self.webhook_limit(&hook),
            None => self.config.per_webhook_concurrency.max(1),
        };
        let sem = {
            let mut entry = self
                .per_webhook
                .entry(webhook_id.to_owned())
                .or_insert_with(|| (limit, Arc::new(Semaphore::new(limit as usize))));
            if entry.0 != limit {
                *entry = (limit, Arc::new(Semaphore::new(limit as usize)));
            }
            entry.1.clone()
        };
        sem.try_acquire_owned().ok()
    }

    /// Sends `event` to `hook` once, now, as a test: the event and one delivery to `hook`
    /// are committed leased to this process, then sent exactly as a claimed delivery is (same
    /// plugin call, auth, signing and log), except that a failure is final (no retry) and a
    /// write-back is not made. Returns the delivery as it ended and its attempt (none when the
    /// attempt could not be recorded, which is logged).
    pub async fn send_test(
        &self,
        hook: &Webhook,
        event: Event,
    ) -> crate::store::Result<(Option<Delivery>, Attempt)> {
        let id = format!("{}{TEST_SUFFIX}", crate::model::new_id("msg"));
        let lease = Lease {
            owner: self.owner.clone(),
            until: now_ms().saturating_add((self.config.lease_secs * 1000) as i64),
        };
        self.store
            .ingest(vec![EventToIngest {
                event: event.clone(),
                deliveries: vec![(hook.id.clone(), id.clone())],
                lease: Some(lease),
            }])
            .await?;
        let job = new_job(hook.id.clone(), id.clone(), event);
        let attempt = self.deliver(job, true).await;
        let delivery = self.store.delivery(&id).await?.map(|(d, _)| d);
        attempt
            .map(|a| (delivery, a))
            .ok_or_else(|| crate::store::Error::Unavailable("the test attempt was lost".into()))
    }

    /// Makes one attempt of a claimed delivery and records it; returns the attempt when asked
    /// to keep it.
    async fn deliver(&self, job: Job, keep_attempt: bool) -> Option<Attempt> {
        let started_at = now_ms();
        let clock = Instant::now();
        let id = &job.delivery.webhook_id;
        let mut hook = self.webhooks.get(id);
        if hook.is_none() {
            // The claim saw the webhook in the store: it may be newer than this process's view
            // (created through another process). Look again before giving up on it.
            if let Err(e) = self.webhooks.reload(self.store.as_ref()).await {
                warn!(error = %e, "reloading webhooks failed");
            }
            hook = self.webhooks.get(id);
        }
        let mut completion = match hook {
            None => self.finish(
                &job,
                started_at,
                clock,
                None,
                Some("webhook deleted".into()),
                Next::Dead,
            ),
            Some(hook) => self.attempt(&hook, &job, started_at, clock).await,
        };
        if is_test(&job.delivery.id) {
            // A test event is made up: it must not change the internal system's records.
            completion.followups.clear();
        }
        let kept = keep_attempt.then(|| completion.attempt.clone());
        let outcome = completion.attempt.outcome;
        let disable = completion.disable_webhook;
        let followups = !completion.followups.is_empty();
        Metrics::count(&self.metrics.deliveries, outcome_name(outcome));
        match self.store.complete(&self.owner, completion).await {
            Ok(true) => {}
            Ok(false) => {
                warn!(delivery = %job.delivery.id, "lease lost before the attempt was recorded; another worker owns it")
            }
            Err(e) => {
                warn!(delivery = %job.delivery.id, error = %e, "recording an attempt failed; the delivery returns after its lease")
            }
        }
        if followups {
            self.wake.notify_one();
        }
        if let Some(waiter) = self.watched.get(&job.delivery.id) {
            waiter.notify_one();
        }
        if disable {
            if let Err(e) = self.webhooks.reload(self.store.as_ref()).await {
                warn!(error = %e, "reloading webhooks failed");
            }
        }
        kept
    }

    /// One attempt of `job` to `hook`; each attempt it logs names the plugin version that
    /// shaped the request.
    async fn attempt(
        &self,
        hook: &Webhook,
        job: &Job,
        started_at: i64,
        clock: Instant,
    ) -> Completion {
        let (shaped, plugin) = self.shaper.outgoing_traced(hook, &job.event).await;
        let mut completion = self
            .attempt_shaped(hook, job, started_at, clock, shaped)
            .await;
        for attempt in completion
            .earlier
            .iter_mut()
            .chain(std::iter::once(&mut completion.attempt))
        {
            attempt.plugin = plugin.clone();
        }
        completion
    }

    async fn attempt_shaped(
        &self,
        hook: &Webhook,
        job: &Job,
        started_at: i64,
        clock: Instant,
        shaped: Result<Shaped, crate::delivery::shape::ShapeError>,
    ) -> Completion {
        let shaped = match shaped {
            Ok(shaped) => shaped,
            Err(e) => {
                let next = match e.action {
                    PluginFailure::Retry => self.retry_or_dead(hook, job, None),
                    PluginFailure::DeadLetter => Next::Dead,
                    PluginFailure::Skip => Next::Skipped,
                };
                return self.finish(
                    job,
                    started_at,
                    clock,
                    None,
                    Some(format!("plugin: {}", e.message)),
                    next,
                );
            }
        };
        let requests = match shaped {
            Shaped::Skip(reason) => {
                return self.finish(
                    job,
                    started_at,
                    clock,
                    None,
                    Some(format!("skipped: {reason}")),
                    Next::Skipped,
                )
            }
            Shaped::Send(requests) => requests,
        };
        // Several requests (a plugin fanning out) are sent in order; the attempt succeeds when
        // all do, and the log shows the one that decided the outcome.
        let count = requests.len();
        let mut last = None;
        for (i, request) in requests.into_iter().enumerate() {
            let msg_id = if count == 1 {
                job.delivery.id.clone()
            } else {
                format!("{}_{i}", job.delivery.id)
            };
            let exchange = self.exchange(hook, job, &msg_id, request).await;
            let ok = exchange.status.is_some_and(|s| (200..300).contains(&s))
                && exchange.error.is_none();
            last = Some(exchange);
            if !ok {
                break;
            }
        }
        let Some(exchange) = last else {
            return self.finish(
                job,
                started_at,
                clock,
                None,
                Some("skipped: the plugin returned no request".into()),
                Next::Skipped,
            );
        };
        let duration = clock.elapsed();
        self.metrics
            .attempt_duration
            .observe(duration.as_secs_f64());
        let (next, disable) = match (exchange.status, exchange.refused) {
            (_, true) => (Next::Dead, false),
            (None, _) => (self.retry_or_dead(hook, job, None), false),
            (Some(status), _) => match retry::classify(status, &self.config.retryable_statuses) {
                StatusClass::Success => (Next::Succeeded, false),
                StatusClass::Retryable => {
                    (self.retry_or_dead(hook, job, exchange.retry_after), false)
                }
                StatusClass::Permanent => (Next::Dead, false),
                StatusClass::Gone => (Next::Dead, true),
            },
        };
        if disable {
            warn!(webhook = %hook.spec.name, "receiver answered 410 Gone; disabling the webhook");
        }
        match &next {
            Next::Dead => {
                warn!(webhook = %hook.spec.name, delivery = %job.delivery.id, status = ?exchange.status, error = ?exchange.error, "delivery failed for good")
            }
            Next::RetryAt(_) => {
                debug!(webhook = %hook.spec.name, delivery = %job.delivery.id, status = ?exchange.status, error = ?exchange.error, "delivery failed; will retry")
            }
            _ => {}
        }
        let (followups, writeback_error) = if next == Next::Succeeded {
            self.writeback(hook, job, &exchange).await
        } else {
            (Vec::new(), None)
        };
        if let Some(error) = &writeback_error {
            warn!(webhook = %hook.spec.name, delivery = %job.delivery.id, %error, "delivered, but its write-back was not made");
        }
        // A request answered 401 and sent again with a fresh token is two attempts: the
        // earlier ones are logged first, and this one starts when the last of them ended.
        let earlier = exchange.earlier;
        let started_at = earlier
            .last()
            .map_or(started_at, |e| e.started_at + e.duration_ms as i64);
        let attempt = Attempt {
            delivery_id: job.delivery.id.clone(),
            attempt_no: job.attempt_no + earlier.len() as u32,
            started_at,
            duration_ms: if earlier.is_empty() {
                duration.as_millis() as u64
            } else {
                (now_ms() - started_at).max(0) as u64
            },
            request: Some(exchange.request),
            response_status: exchange.status,
            response_headers: exchange.headers,
            response_body: exchange.body,
            error: exchange.error.or(writeback_error),
            outcome: outcome_of(&next),
            plugin: None,
        };
        Completion {
            attempt,
            next,
            disable_webhook: disable,
            followups,
            earlier,
        }
    }

    /// A completion for an attempt that sent nothing.
    fn finish(
        &self,
        job: &Job,
        started_at: i64,
        clock: Instant,
        request: Option<RequestLog>,
        error: Option<String>,
        next: Next,
    ) -> Completion {
        let attempt = Attempt {
            delivery_id: job.delivery.id.clone(),
            attempt_no: job.attempt_no,
            started_at,
            duration_ms: clock.elapsed().as_millis() as u64,
            request,
            response_status: None,
            response_headers: Vec::new(),
            response_body: None,
            error,
            outcome: outcome_of(&next),
            plugin: None,
        };
        Completion {
            attempt,
            next,
            disable_webhook: false,
            followups: Vec::new(),
            earlier: Vec::new(),
        }
    }

    /// The response phase: fields the plugin maps from the answer become a sink `update` of the
    /// record the event was about, committed with the completion. Returns the follow-up events
    /// and, when the write-back could not be made, why (for the attempt's log entry).
    async fn writeback(
        &self,
        hook: &Webhook,
        job: &Job,
        exchange: &Exchange,
    ) -> (Vec<EventToIngest>, Option<String>) {
        // The response phase is opt-in: without a `writeback` section the plugin is not asked
        // (one call per delivery instead of two).
        let Some(settings) = hook.spec.writeback.clone() else {
            return (Vec::new(), None);
        };
        if hook.spec.plugin.is_none() {
            return (Vec::new(), None);
        }
        let answer = Answer {
            status: exchange.status.unwrap_or(0),
            headers: &exchange.headers,
            body: &exchange.raw_body,
        };
        let fields = match self.shaper.response(hook, &job.event, answer).await {
            Ok(Some(fields)) if fields.as_object().is_some_and(|f| !f.is_empty()) => fields,
            Ok(_) => return (Vec::new(), None),
            Err(e) => {
                return (
                    Vec::new(),
                    Some(format!("write-back: response phase failed: {e}")),
                )
            }
        };
        let Some(sink) = self
            .webhooks
            .named(crate::sink::SINK_WEBHOOK)
            .filter(|s| s.spec.enabled)
        else {
            return (
                Vec::new(),
                Some("write-back: no [sink] is configured; fields dropped".into()),
            );
        };
        let identify_by = if settings.identify_by.is_empty() {
            vec!["id".to_owned()]
        } else {
            settings.identify_by
        };
        let mut identifiers = serde_json::Map::new();
        let data = job.event.data.to_value();
        for field in &identify_by {
            if let Some(value) = crate::sink::lookup(&data, field) {
                identifiers.insert(field.clone(), value.clone());
            }
        }
        if identifiers.is_empty() {
            return (
                Vec::new(),
                Some(format!("write-back: the event's data has none of the identifying fields {identify_by:?}")),
            );
        }
        let entity = settings
            .entity
            .or_else(|| hook.spec.inbound.as_ref().map(|i| i.entity.clone()))
            .unwrap_or_else(|| {
                job.event
                    .event_type
                    .split('.')
                    .next()
                    .unwrap_or("record")
                    .to_owned()
            });
        let message = SinkMessage {
            webhook: hook.spec.name.clone(),
            webhook_id: hook.id.clone(),
            source: "response".into(),
            entity,
            operation: "update".into(),
            identifiers: serde_json::Value::Object(identifiers),
            fields,
            event_id: Some(job.event.id.clone()),
        };
        (vec![crate::sink::message(&sink.id, &message)], None)
    }

    /// Retry later, unless this was the last attempt allowed or a test send (one attempt).
    fn retry_or_dead(&self, hook: &Webhook, job: &Job, retry_after: Option<Duration>) -> Next {
        let made = job.delivery.attempts_since_replay + 1;
        if made >= hook.spec.retry.max_attempts.max(1) || is_test(&job.delivery.id) {
            return Next::Dead;
        }
        let mut rng = rand::thread_rng();
        let delay = retry::next_delay(
            &self.backoff,
            made,
            retry_after,
            Duration::from_secs(self.config.max_retry_after_secs),
            &mut rng,
        );
        Next::RetryAt(now_ms() + delay.as_millis() as i64)
    }

    /// The token cache (shared by a connection's webhooks), for `POST .../connections/{name}/test`.
    pub fn tokens(&self) -> &TokenCache {
        &self.tokens
    }

    /// Sends one request (refreshing an OAuth2 token once on a 401) and reads the answer.
    async fn exchange(
        &self,
        hook: &Webhook,
        job: &Job,
        msg_id: &str,
        request: OutgoingRequest,
    ) -> Exchange {
        let method = request
            .method
            .as_deref()
            .unwrap_or(&hook.spec.method)
            .to_owned();
        let shown_url = |url: &str| redact_url(url, &hook.spec.secret_query_params);
        let mut log = RequestLog {
            method: method.clone(),
            url: shown_url(&hook.spec.url),
            headers: Vec::new(),
            body: truncate(&request.body, self.config.log_body_bytes),
            // Without a plugin the body is the event's default one (the sink's: its data), made
            // again from the event when the log is read: the log keeps no second copy.
            body_from: hook.spec.plugin.is_none().then(|| {
                if crate::sink::is_sink(hook) {
                    BodyFrom::EventData
                } else {
                    BodyFrom::EventEnvelope
                }
            }),
        };
        let fail = |log: RequestLog, error: String, refused: bool| Exchange {
            request: log,
            status: None,
            headers: Vec::new(),
            body: None,
            raw_body: Vec::new(),
            error: Some(error),
            retry_after: None,
            refused,
            earlier: Vec::new(),
        };
        let url = match plugin_output::target_url(&hook.spec.url, &request) {
            Ok(url) => url,
            Err(e) => return fail(log, e, true),
        };
        log.url = shown_url(url.as_str());
        if let Err(e) = client::check_url(&url, &self.ssrf) {
            return fail(log, e.to_string(), true);
        }
        let method = match reqwest::Method::from_bytes(method.as_bytes()) {
            Ok(m) => m,
            Err(_) => return fail(log, format!("invalid method {method:?}"), true),
        };
        let headers = match self.base_headers(hook, job, msg_id, &request) {
            Ok(h) => h,
            Err(e) => return fail(log, e, true),
        };
        let timeout = Duration::from_millis(hook.spec.timeout_ms);
        // A connection's webhooks share its token (one cache slot, keyed by the connection).
        let (auth_key, auth) = match self.webhooks.auth_of(hook) {
            Ok(auth) => auth,
            Err(e) => return fail(log, format!("auth: {e}"), false),
        };
        let mut refreshed = false;
        let mut earlier: Vec<Attempt> = Vec::new();
        loop {
            let sent_at = now_ms();
            let credentials = match auth::credentials(&self.tokens, &auth_key, &auth).await {
                Ok(c) => c,
                // A refused token URL or a token endpoint refusing the credentials is dead at
                // once, like a refused webhook URL; an unreachable one is retried.
                Err(e) => {
                    let permanent = e.is_permanent(&self.config.retryable_statuses);
                    return Exchange {
                        earlier,
                        ..fail(log, format!("auth: {e}"), permanent)
                    };
                }
            };
            let mut all = headers.clone();
            for (name, value) in credentials.headers {
                all.insert(name, value);
            }
            let token = credentials.oauth_token;
            log.headers = redact(&all, hook);
            let sent = self
                .http
                .request(method.clone(), url.clone())
                .headers(all)
                .body(request.body.clone())
                .timeout(timeout)
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    let refused = client::ssrf_refusal(&e).is_some();
                    let error = if e.is_timeout() {
                        format!("timed out after {} ms", hook.spec.timeout_ms)
                    } else {
                        // reqwest's text quotes the URL, credentials included.
                        error_chain(&e).replace(url.as_str(), &log.url)
                    };
                    return Exchange {
                        earlier,
                        ..fail(log, error, refused)
                    };
                }
            };
            let status = response.status().as_u16();
            if status == 401 && auth::uses_oauth(&auth) && !refreshed {
                if let Some(stale) = token {
                    // The token may have been revoked early: fetch a new one and resend once.
                    // The refused request stays in the log as an attempt of its own.
                    self.tokens.invalidate(&auth_key, &stale);
                    refreshed = true;
                    earlier.push(self.refused_for_token(job, &log, response, sent_at).await);
                    continue;
                }
            }
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| retry::parse_retry_after(v, std::time::SystemTime::now()));
            let resp_headers = response
                .headers()
                .iter()
                .map(|(k, v)| {
                    (
                        k.to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into_owned(),
                    )
                })
                .collect();
            let cap = if hook.spec.plugin.is_some() {
                WRITEBACK_BODY_CAP.max(self.config.log_body_bytes)
            } else {
                self.config.log_body_bytes
            };
            let (raw_body, body_error) = read_capped(response, cap).await;
            return Exchange {
                request: log,
                status: Some(status),
                headers: resp_headers,
                body: Some(truncate(&raw_body, self.config.log_body_bytes)),
                raw_body,
                error: body_error,
                retry_after,
                refused: false,
                earlier,
            };
        }
    }

    /// The attempt of a request the receiver answered 401 to with a token that is now
    /// refreshed: it will be sent again at once, within the same try.
    async fn refused_for_token(
        &self,
        job: &Job,
        log: &RequestLog,
        response: reqwest::Response,
        sent_at: Millis,
    ) -> Attempt {
        let headers = response
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect();
        let (body, _) = read_capped(response, self.config.log_body_bytes).await;
        Attempt {
            delivery_id: job.delivery.id.clone(),
            attempt_no: job.attempt_no,
            started_at: sent_at,
            duration_ms: (now_ms() - sent_at).max(0) as u64,
            request: Some(log.clone()),
            response_status: Some(401),
            response_headers: headers,
            response_body: Some(truncate(&body, self.config.log_body_bytes)),
            error: Some(
                "HTTP 401: the OAuth2 token was refreshed and the request sent again".into(),
            ),
            outcome: AttemptOutcome::Retry,
            plugin: None,
        }
    }

    /// Content type, static headers, the event header and the signature.
    fn base_headers(
        &self,
        hook: &Webhook,
        job: &Job,
        msg_id: &str,
        request: &OutgoingRequest,
    ) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        let content_type = request
            .content_type
            .as_deref()
            .unwrap_or("application/json");
        let insert = |headers: &mut HeaderMap, name: &str, value: &str| -> Result<(), String> {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid value of header {name}"))?;
            headers.append(name, value);
            Ok(())
        };
        insert(&mut headers, "content-type", content_type)?;
        for (name, value) in &hook.spec.headers {
            insert(&mut headers, name, value)?;
            if hook.spec.is_secret_header(name) {
                // Sensitive values are left out of Debug output and HPACK tables.
                if let Some(value) = headers.get_mut(name.as_str()) {
                    value.set_sensitive(true);
                }
            }
        }
        for (name, value) in &request.headers {
            insert(&mut headers, name, value)?;
        }
        if let Some(name) = &hook.spec.event_header {
            insert(&mut headers, name, &job.event.event_type.replace('.', "_"))?;
        }
        insert(&mut headers, "webhook-id", msg_id)?;
        let timestamp = now_ms() / 1000;
        insert(&mut headers, "webhook-timestamp", &timestamp.to_string())?;
        if hook.spec.signing.enabled {
            if let Some(secret) = &hook.spec.signing.secret {
                let signature = signing::sign(secret, msg_id, timestamp, &request.body)
                    .map_err(|e| format!("signing: {e}"))?;
                insert(&mut headers, "webhook-signature", &signature)?;
            }
        }
        Ok(headers)
    }
}

fn outcome_of(next: &Next) -> AttemptOutcome {
    match next {
        Next::Succeeded => AttemptOutcome::Succeeded,
        Next::RetryAt(_) => AttemptOutcome::Retry,
        Next::Dead => AttemptOutcome::Dead,
        Next::Skipped => AttemptOutcome::Skipped,
    }
}

/// Whether a delivery of `hook` leased until `lease_until` may still be started at `now`: its
/// attempt (the webhook's timeout) and the recording of it must end within the lease, or another
/// worker could claim it again meanwhile.
fn startable(hook: &Webhook, lease_until: Millis, now: Millis) -> bool {
    let needed = i64::try_from(hook.spec.timeout_ms)
        .unwrap_or(i64::MAX)
        .saturating_add(LEASE_MARGIN_MS);
    now.saturating_add(needed) <= lease_until
}

fn outcome_name(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Succeeded => "succeeded",
        AttemptOutcome::Retry => "retry",
        AttemptOutcome::Dead => "dead",
        AttemptOutcome::Skipped => "skipped",
    }
}

/// Headers as the log shows them: credentials, signatures and secret static headers replaced.
fn redact(headers: &HeaderMap, hook: &Webhook) -> Vec<(String, String)> {
    let secret_header = match &hook.spec.auth {
        crate::model::AuthConfig::ApiKey { header, .. } => Some(header.to_ascii_lowercase()),
        _ => None,
    };
    headers
        .iter()
        .map(|(name, value)| {
            let n = name.as_str();
            let hidden = value.is_sensitive()
                || n == "authorization"
                || n == "webhook-signature"
                || secret_header.as_deref() == Some(n)
                || hook.spec.is_secret_header(n);
            let shown = if hidden {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (n.to_owned(), shown)
        })
        .collect()
}

/// At most `cap` bytes of `body`, as text.
fn truncate(body: &[u8], cap: usize) -> String {
    let cut = &body[..body.len().min(cap)];
    String::from_utf8_lossy(cut).into_owned()
}

/// Reads at most `cap` bytes of a response body (the rest is dropped unread).
async fn read_capped(mut response: reqwest::Response, cap: usize) -> (Vec<u8>, Option<String>) {
    let mut buf = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = cap.saturating_sub(buf.len());
                buf.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if buf.len() >= cap {
                    break;
                }
            }
            Ok(None) => break,
            Err(e) => {
                return (
                    buf,
                    Some(format!("reading the response body: {}", error_chain(&e))),
                )
            }
        }
    }
    (buf, None)
}

/// An error and its sources on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_to(hooks: &[&str]) -> Vec<(String, String)> {
        hooks
            .iter()
            .map(|h| ((*h).to_owned(), format!("msg_{h}")))
            .collect()
    }

    /// A webhook whose backlog fills the claims does not keep another one's new events from
    /// starting at ingest; its own wait until a claim that looked at it comes back short.
    #[test]
    fn a_full_claim_puts_behind_only_the_webhooks_it_took_from() {
        let mut queues = HashMap::new();
        assert!(nothing_waits(&queues, &event_to(&["slow", "fast"])));

        note_claim(&mut queues, true, &[], &["slow", "slow"], &[]);
        assert!(!nothing_waits(&queues, &event_to(&["slow"])));
        assert!(nothing_waits(&queues, &event_to(&["fast"])));
        assert!(
            !nothing_waits(&queues, &event_to(&["fast", "slow"])),
            "an event to both waits"
        );

        // Short, but with "slow" left out: nothing learnt about it.
        note_claim(&mut queues, false, &["slow".to_owned()], &[], &[]);
        assert!(!nothing_waits(&queues, &event_to(&["slow"])));
        // Short and looking at every webhook: all caught up, and the entry goes.
        note_claim(&mut queues, false, &[], &["slow"], &[]);
        assert!(nothing_waits(&queues, &event_to(&["slow", "fast"])));
        assert!(queues.is_empty());
    }

    #[test]
    fn handed_back_or_queued_deliveries_hold_back_their_webhook() {
        let mut queues = HashMap::new();
        note_claim(&mut queues, false, &[], &["a", "b"], &["b"]);
        assert!(nothing_waits(&queues, &event_to(&["a"])));
        assert!(!nothing_waits(&queues, &event_to(&["b"])), "handed back");

        let mut queues = HashMap::new();
        let queue: &mut WebhookQueue = queues.entry("c".to_owned()).or_default();
        queue.running = 1;
        queue.waiting.push_back((job("c"), 0));
        note_claim(&mut queues, false, &[], &[], &[]);
        assert!(!nothing_waits(&queues, &event_to(&["c"])), "queued here");
        assert!(queues.contains_key("c"), "a busy entry stays");
    }

    fn job(webhook_id: &str) -> Job {
        Job {
            delivery: Delivery {
                id: "msg_1".to_owned(),
                event_id: "evt_1".to_owned(),
                event_type: "t".to_owned(),
                webhook_id: webhook_id.to_owned(),
                status: DeliveryStatus::Pending,
                attempts: 0,
                attempts_since_replay: 0,
                next_attempt_at: Some(0),
                last_status: None,
                last_error: None,
                created_at: 0,
                updated_at: 0,
                source: DeliverySource::Webhook,
                origin: None,
            },
            event: Event {
                id: "evt_1".to_owned(),
                event_type: "t".to_owned(),
                data: crate::model::Json::null(),
                context: crate::model::Json::null(),
                occurred_at: 0,
                received_at: 0,
            },
            attempt_no: 1,
        }
    }
}
