//! The Webhook Log of refused inbound pushes.
//!
//! A middleware around `POST /v1/inbound/{webhook}` looks at every answer: one that refuses the
//! push (any 4xx but 429, which the rate limit in front answers) is written to the log as a
//! delivery of source `inbound`, status `dead`, with one attempt holding the request (method,
//! path, headers with credentials and signatures redacted, the body up to
//! `refusals.body_bytes`) and the answer (status and JSON body), the reason as its error. The
//! handler names the real reason of a 401 with [`note_reason`] (the caller only ever hears
//! "unknown inbound webhook or missing or wrong credentials").
//!
//! Such entries are never sent anywhere: replay refuses them.
//!
//! Flood control: a refusal is logged only if a token bucket admits it: one bucket per
//! webhook (`refusals.per_webhook_per_minute`), and one shared by every name that is no
//! webhook (`refusals.unknown_per_minute`), so that made-up names cannot make buckets (or rows)
//! without bound. The rest are counted in `hookyard_inbound_refused_unlogged_total`; every
//! refusal is counted in `hookyard_inbound_refused_total{status}`. The body of a push refused
//! before it was read (a 401: unauthenticated bodies are not read to decide) is read for the
//! log only when the bucket admitted it, and only up to the cap.

use std::cell::RefCell;
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::body::{Body as _, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use serde_json::{json, Value};

use super::Shared;
use crate::config::RefusalsConfig;
use crate::model::{
    new_id, now_ms, Attempt, AttemptOutcome, DeliveryStatus, Event, InboundAuth, Json,
    LoggedDelivery, RequestLog, Webhook, REFUSED_INBOUND_EVENT,
};

/// How long reading an unread body for the log may take.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest answer body kept (answers are small JSON errors).
const ANSWER_CAP: usize = 16 * 1024;
/// Longest webhook name kept for a push to an unknown name.
const NAME_CAP: usize = 200;
/// What the log shows in place of a secret header or query value.
pub const REDACTED: &str = "[redacted]";

tokio::task_local! {
    static REASON: RefCell<Option<String>>;
}

/// Records why the push being answered is refused, for the log (the caller is told less).
/// Does nothing outside the middleware.
pub fn note_reason(reason: &str) {
    let _ = REASON.try_with(|r| *r.borrow_mut() = Some(reason.to_owned()));
}

/// A label naming an HTTP status.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status code.
    pub status: u16,
}

/// The sampling of refused pushes, and their counters.
pub struct RefusalLog {
    per_webhook: Option<DefaultKeyedRateLimiter<String>>,
    unknown: Option<DefaultDirectRateLimiter>,
    refused: Family<StatusLabel, Counter>,
    unlogged: Counter,
}

impl RefusalLog {
    /// The log of `config`, its counters registered in `registry`.
    pub fn register(config: &RefusalsConfig, registry: &mut Registry) -> RefusalLog {
        let log = RefusalLog::new(config);
        registry.register(
            "inbound_refused",
            "Inbound pushes refused, by status",
            log.refused.clone(),
        );
        registry.register(
            "inbound_refused_unlogged",
            "Refused inbound pushes left out of the Webhook Log by its sampling",
            log.unlogged.clone(),
        );
        log
    }

    /// The log of `config`, counters unregistered.
    pub fn new(config: &RefusalsConfig) -> RefusalLog {
        let quota = |n: u32| NonZeroU32::new(n).map(Quota::per_minute);
        RefusalLog {
            per_webhook: quota(config.per_webhook_per_minute).map(RateLimiter::dashmap),
            unknown: quota(config.unknown_per_minute).map(RateLimiter::direct),
            refused: Family::default(),
            unlogged: Counter::default(),
        }
    }

    /// Whether a refusal of a push to `webhook_id` (none: an unknown name) may be logged now.
    fn admit(&self, webhook_id: Option<&str>) -> bool {
        let admitted = match webhook_id {
            Some(id) => self
                .per_webhook
                .as_ref()
                .is_some_and(|l| l.check_key(&id.to_owned()).is_ok()),
            None => self.unknown.as_ref().is_some_and(|l| l.check().is_ok()),
        };
        if !admitted {
            self.unlogged.inc();
        }
        admitted
    }
}

impl RefusalLog {
    /// Whether a message the bus source `name` dead-lettered may be logged now: the source has a
    /// bucket of its own (`refusals.per_webhook_per_minute`), keyed apart from every webhook
    /// id. Those left out are counted by the source's own metric, not as refused pushes.
    pub fn admit_dead_letter(&self, name: &str) -> bool {
        self.per_webhook
            .as_ref()
            .is_some_and(|l| l.check_key(&crate::model::bus_origin(name)).is_ok())
    }
}

/// Whether a header is shown as `[redacted]` in the log: credentials, signatures, cookies and
/// anything named like a secret.
pub fn is_secret_header(name: &str) -> bool {
    const SECRET_WORDS: &[&str] = &[
        "auth",
        "token",
        "secret",
        "key",
        "signature",
        "password",
        "cookie",
        "session",
    ];
    let name = name.to_ascii_lowercase();
    SECRET_WORDS.iter().any(|w| name.contains(w))
}

/// Whether an answer refuses the push (and is logged).
fn is_refusal(status: StatusCode) -> bool {
    status.is_client_error() && status != StatusCode::TOO_MANY_REQUESTS
}

/// The middleware (see the module docs).
pub async fn log_refusals(State(state): State<Shared>, request: Request, next: Next) -> Response {
    let started_at = now_ms();
    let clock = Instant::now();
    let name = request
        .uri()
        .path()
        .strip_prefix("/v1/inbound/")
        .unwrap_or("")
        .to_owned();
    let method = request.method().to_string();
    let query = request.uri().query().map(str::to_owned);
    let headers = request.headers().clone();
    let tee = Arc::new(Mutex::new(TeeState {
        body: None,
        captured: Vec::new(),
        cap: state.config.refusals.body_bytes,
        ended: false,
        polled: false,
    }));
    let (parts, body) = request.into_parts();
    lock(&tee).body = Some(body);
    let request = Request::from_parts(parts, Body::new(Tee { state: tee.clone() }));
    let (response, reason) = REASON
        .scope(RefCell::new(None), async {
            let response = next.run(request).await;
            let reason = REASON.with(|r| r.borrow_mut().take());
            (response, reason)
        })
        .await;
    let status = response.status();
    if !is_refusal(status) {
        return response;
    }
    state
        .refusals
        .refused
        .get_or_create(&StatusLabel {
            status: status.as_u16(),
        })
        .inc();
    let hook = state.webhooks.named(&name);
    if !state.refusals.admit(hook.as_ref().map(|h| h.id.as_str())) {
        return response;
    }
    // A body the handler did not read (refused on its headers) is read now, capped.
    let unread = {
        let mut t = lock(&tee);
        if t.polled {
            None
        } else {
            t.body.take()
        }
    };
    let body_read = match unread {
        Some(body) => read_capped(body, state.config.refusals.body_bytes, &tee).await,
        None => true,
    };
    let captured = std::mem::take(&mut lock(&tee).captured);
    let (parts, answer) = response.into_parts();
    let answer = axum::body::to_bytes(answer, ANSWER_CAP)
        .await
        .unwrap_or_default();
    let refusal = Refusal {
        name,
        hook,
        method,
        query,
        headers,
        body: captured,
        body_read,
        status,
        answer: answer.clone(),
        reason,
        started_at,
        duration_ms: clock.elapsed().as_millis() as u64,
    };
    let entry = refusal.entry();
    let store = state.store.clone();
    tokio::spawn(async move {
        if let Err(e) = store.log_delivery(entry).await {
            tracing::warn!(error = %e, "logging a refused inbound push failed");
        }
    });
    Response::from_parts(parts, Body::from(answer))
}

/// What the log keeps of one refused push.
struct Refusal {
    name: String,
    hook: Option<Arc<Webhook>>,
    method: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Vec<u8>,
    body_read: bool,
    status: StatusCode,
    answer: Bytes,
    reason: Option<String>,
    started_at: i64,
    duration_ms: u64,
}

impl Refusal {
    fn entry(self) -> LoggedDelivery {
        let answer: Value = serde_json::from_slice(&self.answer).unwrap_or(Value::Null);
        let code = answer["error"]["code"].as_str().unwrap_or("").to_owned();
        let reason = self
            .reason
            .or_else(|| answer["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("HTTP {}", self.status.as_u16()));
        let name: String = self.name.chars().take(NAME_CAP).collect();
        let webhook_id = self.hook.as_ref().map(|h| h.id.clone());
        let event = Event {
            id: new_id("evt"),
            event_type: REFUSED_INBOUND_EVENT.to_owned(),
            data: Json::from(json!({
                "webhook": name.clone(),
                "webhook_id": webhook_id.clone(),
                "status": self.status.as_u16(),
                "code": code,
                "reason": reason,
                "body_read": self.body_read,
            })),
            context: Json::null(),
            occurred_at: self.started_at,
            received_at: self.started_at,
        };
        let inbound_auth = self
            .hook
            .as_ref()
            .and_then(|h| h.spec.inbound.as_ref())
            .map(|i| &i.auth);
        let delivery_id = new_id("msg");
        let attempt = Attempt {
            delivery_id: delivery_id.clone(),
            attempt_no: 1,
            started_at: self.started_at,
            duration_ms: self.duration_ms,
            request: Some(RequestLog {
                method: self.method,
                url: shown_path(&name, self.query.as_deref()),
                headers: redact(&self.headers, inbound_auth),
                body: String::from_utf8_lossy(&self.body).into_owned(),
                body_from: None,
            }),
            response_status: Some(self.status.as_u16()),
            response_headers: vec![("content-type".to_owned(), "application/json".to_owned())],
            response_body: Some(String::from_utf8_lossy(&self.answer).into_owned()),
            error: Some(reason),
            outcome: AttemptOutcome::Dead,
            plugin: None,
        };
        LoggedDelivery {
            event,
            delivery_id,
            webhook_id: webhook_id.unwrap_or_default(),
            status: DeliveryStatus::Dead,
            attempts: vec![attempt],
        }
    }
}

/// The path pushed to, with the values of its query (which may carry tokens) redacted.
fn shown_path(name: &str, query: Option<&str>) -> String {
    let mut path = format!("/v1/inbound/{name}");
    if let Some(query) = query.filter(|q| !q.is_empty()) {
        let shown: Vec<String> = form_urlencoded::parse(query.as_bytes())
            .map(|(k, _)| format!("{k}={REDACTED}"))
            .collect();
        path.push('?');
        path.push_str(&shown.join("&"));
    }
    path
}

/// Headers as the log shows them: credentials, signatures, cookies and anything named like a
/// secret replaced, and the webhook's own API key header.
fn redact(headers: &HeaderMap, auth: Option<&InboundAuth>) -> Vec<(String, String)> {
    let key_header = match auth {
        Some(InboundAuth::ApiKey { header, .. }) => Some(header.to_ascii_lowercase()),
        _ => None,
    };
    headers
        .iter()
        .map(|(name, value)| {
            let n = name.as_str();
            let hidden = key_header.as_deref() == Some(n) || is_secret_header(n);
            let shown = if hidden {
                REDACTED.to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (n.to_owned(), shown)
        })
        .collect()
}

/// Reads up to `cap` bytes of a body nobody read into the tee's capture; false when it could
/// not be read in time.
async fn read_capped(mut body: Body, cap: usize, tee: &Arc<Mutex<TeeState>>) -> bool {
    let read = async {
        loop {
            if lock(tee).captured.len() >= cap {
                return true;
            }
            match std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        lock(tee).capture(data);
                    }
                }
                Some(Err(_)) => return false,
                None => return true,
            }
        }
    };
    tokio::time::timeout(BODY_READ_TIMEOUT, read)
        .await
        .unwrap_or(false)
}

fn lock(tee: &Mutex<TeeState>) -> std::sync::MutexGuard<'_, TeeState> {
    tee.lock().unwrap_or_else(|e| e.into_inner())
}

/// The request body as the handler reads it, and what the log keeps of it.
struct TeeState {
    /// The request's body; left here by the middleware, taken back if the handler never read.
    body: Option<Body>,
    /// Its first `cap` bytes.
    captured: Vec<u8>,
    cap: usize,
    ended: bool,
    /// The handler read (some of) it.
    polled: bool,
}

impl TeeState {
    fn capture(&mut self, data: &Bytes) {
        let room = self.cap.saturating_sub(self.captured.len());
        self.captured
            .extend_from_slice(&data[..data.len().min(room)]);
    }
}

/// A body that copies the first bytes read through it.
struct Tee {
    state: Arc<Mutex<TeeState>>,
}

impl hyper::body::Body for Tee {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let mut state = lock(&self.state);
        state.polled = true;
        let Some(body) = state.body.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    state.capture(data);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                state.ended = true;
                Poll::Ready(None)
            }
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        let state = lock(&self.state);
        state.ended || state.body.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        lock(&self.state)
            .body
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_query_values_are_redacted() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        headers.insert("x-partner-key", "k".parse().unwrap());
        headers.insert("x-hr", "shh".parse().unwrap());
        headers.insert("webhook-signature", "v1,xyz".parse().unwrap());
        headers.insert("content-type", "application/json".parse().unwrap());
        let auth = InboundAuth::ApiKey {
            header: "X-HR".to_owned(),
            value: "shh".to_owned(),
        };
        let shown = redact(&headers, Some(&auth));
        for (name, value) in &shown {
            if name == "content-type" {
                assert_eq!(value, "application/json");
            } else {
                assert_eq!(value, REDACTED, "{name}");
            }
        }
        assert_eq!(
            shown_path("hr", Some("token=abc&x=1")),
            "/v1/inbound/hr?token=[redacted]&x=[redacted]"
        );
    }

    #[test]
    fn buckets_sample_per_webhook_and_share_one_for_unknown_names() {
        let log = RefusalLog::new(&RefusalsConfig {
            per_webhook_per_minute: 2,
            unknown_per_minute: 1,
            body_bytes: 16,
        });
        assert!(log.admit(Some("wh_a")));
        assert!(log.admit(Some("wh_a")));
        assert!(!log.admit(Some("wh_a")), "the bucket of wh_a is empty");
        assert!(log.admit(Some("wh_b")), "wh_b has its own");
        assert!(log.admit(None));
        assert!(!log.admit(None), "unknown names share one bucket");
        assert_eq!(log.unlogged.get(), 2);
    }
}
