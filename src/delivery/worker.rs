//! The worker pool: claims due deliveries and sends them.
//!
//! One dispatcher loop claims batches from the store with a lease and spawns one task per
//! delivery. Concurrency is bounded twice: globally (`delivery.concurrency`) and per webhook
//! (`per_webhook_concurrency` or the webhook's `max_concurrency`). A webhook at its limit is left
//! out of the next claim, and a delivery claimed for it in the same batch is released at once,
//! so a slow or hanging endpoint only ever occupies its own slots and never delays the others.
//!
//! Every attempt ends in [`Store::complete`], which logs it and moves the delivery on; the lease
//! makes sure a delivery abandoned by a crashed process is picked up again.

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
use crate::delivery::signing;
use crate::metrics::Metrics;
use crate::model::{
    now_ms, Attempt, AttemptOutcome, Completion, EventToIngest, Job, Next, PluginFailure,
    RequestLog, SinkMessage, Webhook,
};
use crate::store::{ClaimRequest, Store};
use crate::webhooks::WebhookDirectory;

/// Headers whose values the Webhook Log never shows.
const REDACTED: &str = "[redacted]";

/// How much of a response body the response phase (write-back) may see.
const WRITEBACK_BODY_CAP: usize = 1 << 20;

/// Deliveries claimed per round trip to the store, at most.
const CLAIM_BATCH: usize = 256;

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
        let exclude: Vec<String> = self
            .per_webhook
            .iter()
            .filter(|e| e.value().1.available_permits() == 0)
            .map(|e| e.key().clone())
            .collect();
        let req = ClaimRequest {
            owner: self.owner.clone(),
            now: now_ms(),
            lease_ms: (self.config.lease_secs * 1000) as i64,
            limit: self.webhook_room(free.min(CLAIM_BATCH)),
            exclude_webhooks: exclude,
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
        let mut first = Some(first);
        let mut give_back = Vec::new();
        for job in jobs {
            let global = match first.take() {
                Some(p) => p,
                None => match self.slots.clone().try_acquire_owned() {
                    Ok(p) => p,
                    Err(_) => {
                        give_back.push(job.delivery.id);
                        continue;
                    }
                },
            };
            let Some(local) = self.webhook_slot(&job.delivery.webhook_id) else {
                give_back.push(job.delivery.id);
                continue;
            };
            let this = self.clone();
            tokio::spawn(async move {
                this.metrics.in_flight.inc();
                this.deliver(job).await;
                this.metrics.in_flight.dec();
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
        if !give_back.is_empty() {
            if let Err(e) = self.store.release(&self.owner, &give_back).await {
                warn!(error = %e, "releasing deliveries failed; they return after their lease");
            }
        }
        claimed
    }

    /// How many deliveries the enabled webhooks could start here now, up to `cap`: a claim asks
    /// for no more, so a batch is not claimed for a webhook short of slots only to be released.
    /// At least one, so deliveries of a webhook this process does not know yet are still claimed
    /// (and the webhook looked up).
    fn webhook_room(&self, cap: usize) -> usize {
        let mut room = 0;
        for hook in self.webhooks.enabled() {
            room += match self.per_webhook.get(&hook.id) {
                Some(entry) => entry.value().1.available_permits(),
                None => self.webhook_limit(&hook) as usize,
            };
            if room >= cap {
                return cap;
            }
        }
        room.max(1)
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

    /// Makes one attempt of a claimed delivery and records it.
    async fn deliver(&self, job: Job) {
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
        let completion = match hook {
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
        if disable {
            if let Err(e) = self.webhooks.reload(self.store.as_ref()).await {
                warn!(error = %e, "reloading webhooks failed");
            }
        }
    }

    async fn attempt(
        &self,
        hook: &Webhook,
        job: &Job,
        started_at: i64,
        clock: Instant,
    ) -> Completion {
        let shaped = match self.shaper.outgoing(hook, &job.event).await {
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
        let attempt = Attempt {
            delivery_id: job.delivery.id.clone(),
            attempt_no: job.attempt_no,
            started_at,
            duration_ms: duration.as_millis() as u64,
            request: Some(exchange.request),
            response_status: exchange.status,
            response_headers: exchange.headers,
            response_body: exchange.body,
            error: exchange.error.or(writeback_error),
            outcome: outcome_of(&next),
        };
        Completion {
            attempt,
            next,
            disable_webhook: disable,
            followups,
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
        };
        Completion {
            attempt,
            next,
            disable_webhook: false,
            followups: Vec::new(),
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
        for field in &identify_by {
            if let Some(value) = crate::sink::lookup(&job.event.data, field) {
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

    /// Retry later, unless this was the last attempt allowed.
    fn retry_or_dead(&self, hook: &Webhook, job: &Job, retry_after: Option<Duration>) -> Next {
        let made = job.delivery.attempts + 1;
        if made >= hook.spec.retry.max_attempts.max(1) {
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
        let mut log = RequestLog {
            method: method.clone(),
            url: hook.spec.url.clone(),
            headers: Vec::new(),
            body: truncate(&request.body, self.config.log_body_bytes),
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
        };
        let url = match target_url(&hook.spec.url, &request) {
            Ok(url) => url,
            Err(e) => return fail(log, e, true),
        };
        log.url = url.to_string();
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
        let mut refreshed = false;
        loop {
            let credentials = match auth::credentials(&self.tokens, &hook.id, &hook.spec.auth).await
            {
                Ok(c) => c,
                Err(e) => return fail(log, format!("auth: {e}"), false),
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
                        error_chain(&e)
                    };
                    return fail(log, error, refused);
                }
            };
            let status = response.status().as_u16();
            if status == 401 && auth::uses_oauth(&hook.spec.auth) && !refreshed {
                if let Some(stale) = token {
                    // The token may have been revoked early: fetch a new one and resend once.
                    self.tokens.invalidate(&hook.id, &stale);
                    refreshed = true;
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
            };
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

fn outcome_name(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Succeeded => "succeeded",
        AttemptOutcome::Retry => "retry",
        AttemptOutcome::Dead => "dead",
        AttemptOutcome::Skipped => "skipped",
    }
}

/// The webhook URL with the plugin's path suffix and query.
fn target_url(base: &str, request: &OutgoingRequest) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| format!("invalid url: {e}"))?;
    if let Some(path) = &request.path {
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
    }
    if let Some(query) = &request.query {
        url.set_query(Some(query));
    }
    Ok(url)
}

/// Headers as the log shows them: credentials and signatures replaced.
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
                || secret_header.as_deref() == Some(n);
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
