//! The loopback receiver: the "third party" every webhook of a scenario points at.
//!
//! `POST /r/{hook}` where `hook` is the webhook's index in the current [`Session`]. The body is
//! either the gateway's default body (`{"type", "timestamp", "data": {...}, "context"}`) or the
//! flat body the field-map scenario's mapping builds; both carry `run`, `seq` and `sent_at_ns`.
//! For each 2xx answer the receiver records the lag (now - `sent_at_ns`, one clock shared with
//! the generator), the first delivery time of `seq` (a second one is a duplicated event) and the
//! `webhook-id` (a second 2xx for one id is a duplicated message). A hook's [`Mode`] makes it
//! answer 503 (an outage) or never answer (a hanging endpoint).

use std::collections::hash_map::DefaultHasher;
use std::collections::HashSet;
use std::convert::Infallible;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::clock;

/// How a hook's endpoint answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Mode {
    /// 200 at once.
    Ok = 0,
    /// 503 at once (an outage).
    Unavailable = 1,
    /// Never answers (the request is held until the client gives up).
    Hang = 2,
}

impl Mode {
    fn from_u8(v: u8) -> Mode {
        match v {
            1 => Mode::Unavailable,
            2 => Mode::Hang,
            _ => Mode::Ok,
        }
    }
}

/// Largest lag the histograms hold, in microseconds (an hour).
const MAX_LAG_US: u64 = 3_600_000_000;

/// Largest `seq` tracked (guards the per-seq table against a bogus body).
const MAX_SEQ: usize = 100_000_000;

/// A new latency histogram in microseconds, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LAG_US, 3).expect("valid histogram bounds")
}

/// What one hook's endpoint saw, guarded by one lock (one acquisition per request).
struct Seen {
    /// By `seq`: when its first 2xx delivery arrived (clock ns), 0 when none yet.
    first_at: Vec<u64>,
    /// By `seq`: the lag of its first 2xx delivery, microseconds (for `LOADTEST_LAG_DUMP`).
    first_lag_us: Vec<u32>,
    /// Hashes of the `webhook-id`s answered 2xx.
    msg_ids: HashSet<u64>,
    /// Lag of each 2xx delivery, microseconds.
    lag: Histogram<u64>,
}

/// Counters of one hook's endpoint in one session.
pub struct Hook {
    mode: AtomicU8,
    seen: Mutex<Seen>,
    /// Distinct events delivered with a 2xx answer.
    delivered: AtomicU64,
    /// A second 2xx delivery of an event already delivered (by `seq`).
    dup_events: AtomicU64,
    /// A second 2xx delivery of one `webhook-id`.
    dup_msgs: AtomicU64,
    /// Requests answered 503 (outage mode).
    refused: AtomicU64,
    /// Requests held without an answer (hang mode).
    hung: AtomicU64,
    /// Clock ns of the last 2xx delivery.
    last_at: AtomicU64,
}

impl Hook {
    fn new(mode: Mode) -> Hook {
        Hook {
            mode: AtomicU8::new(mode as u8),
            seen: Mutex::new(Seen {
                first_at: Vec::new(),
                first_lag_us: Vec::new(),
                msg_ids: HashSet::new(),
                lag: new_histogram(),
            }),
            delivered: AtomicU64::new(0),
            dup_events: AtomicU64::new(0),
            dup_msgs: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            hung: AtomicU64::new(0),
            last_at: AtomicU64::new(0),
        }
    }

    /// Changes how the endpoint answers from now on.
    pub fn set_mode(&self, mode: Mode) {
        self.mode.store(mode as u8, Ordering::SeqCst);
    }

    /// Distinct events delivered so far.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Requests answered 503.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Requests held in hang mode.
    pub fn hung(&self) -> u64 {
        self.hung.load(Ordering::Relaxed)
    }

    /// Duplicated events and duplicated messages.
    pub fn duplicates(&self) -> (u64, u64) {
        (
            self.dup_events.load(Ordering::Relaxed),
            self.dup_msgs.load(Ordering::Relaxed),
        )
    }

    /// Clock ns of the last 2xx delivery (0: none).
    pub fn last_at(&self) -> u64 {
        self.last_at.load(Ordering::Relaxed)
    }

    /// A copy of the lag histogram.
    pub fn lag(&self) -> Histogram<u64> {
        lock(&self.seen).lag.clone()
    }

    /// The first delivery time of every `seq` (0: never delivered).
    pub fn first_delivery_times(&self) -> Vec<u64> {
        lock(&self.seen).first_at.clone()
    }

    /// The lag of every `seq`'s first delivery, microseconds (0: never delivered).
    pub fn first_lags_us(&self) -> Vec<u32> {
        lock(&self.seen).first_lag_us.clone()
    }

    fn record(&self, seq: u64, sent_at_ns: u64, msg_id: Option<&[u8]>) {
        let now = clock::now_ns();
        let lag_us = now.saturating_sub(sent_at_ns) / 1000;
        let mut seen = lock(&self.seen);
        let _ = seen.lag.record(lag_us.clamp(1, MAX_LAG_US));
        let i = seq as usize;
        if i >= MAX_SEQ {
            return;
        }
        if seen.first_at.len() <= i {
            let grown = (i + 1).max(seen.first_at.len() * 2).max(1024);
            seen.first_at.resize(grown, 0);
            seen.first_lag_us.resize(grown, 0);
        }
        if seen.first_at[i] == 0 {
            seen.first_at[i] = now.max(1);
            seen.first_lag_us[i] = lag_us.min(u32::MAX as u64) as u32;
            self.delivered.fetch_add(1, Ordering::Relaxed);
        } else {
            self.dup_events.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(id) = msg_id {
            let mut h = DefaultHasher::new();
            id.hash(&mut h);
            if !seen.msg_ids.insert(h.finish()) {
                self.dup_msgs.fetch_add(1, Ordering::Relaxed);
            }
        }
        drop(seen);
        self.last_at.fetch_max(now, Ordering::Relaxed);
    }
}

/// The hooks of one measured phase; deliveries of another phase's `run` are strays.
pub struct Session {
    /// The run id the events of this phase carry.
    pub run: u64,
    /// The hooks, by index (`/r/{index}`).
    pub hooks: Vec<Hook>,
    /// Requests of another run, of an unknown hook, or with a body without the marks.
    pub stray: AtomicU64,
}

impl Session {
    /// A session of `modes.len()` hooks for events of `run`.
    pub fn new(run: u64, modes: &[Mode]) -> Session {
        Session {
            run,
            hooks: modes.iter().map(|m| Hook::new(*m)).collect(),
            stray: AtomicU64::new(0),
        }
    }
}

/// The receiver, listening.
pub struct Receiver {
    addr: SocketAddr,
    session: Arc<RwLock<Arc<Session>>>,
}

impl Receiver {
    /// Binds `127.0.0.1:0` and serves until the process ends.
    pub async fn start() -> anyhow::Result<Receiver> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the receiver")?;
        let addr = listener.local_addr()?;
        let session = Arc::new(RwLock::new(Arc::new(Session::new(0, &[]))));
        let shared = session.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let shared = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(shared.clone(), req));
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Receiver { addr, session })
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The URL of hook `index`.
    pub fn url(&self, index: usize) -> String {
        format!("http://{}/r/{index}", self.addr)
    }

    /// Starts a new session (the counters start from zero) and returns it.
    pub fn begin(&self, run: u64, modes: &[Mode]) -> Arc<Session> {
        let session = Arc::new(Session::new(run, modes));
        *self.session.write().unwrap_or_else(|p| p.into_inner()) = session.clone();
        session
    }
}

/// The marks the generator puts in each event's data.
#[derive(Deserialize)]
struct Marks {
    run: u64,
    seq: u64,
    sent_at_ns: u64,
}

/// Either body shape: the marks under `data` (default body) or at the top (field-map).
#[derive(Deserialize)]
struct Body {
    data: Option<Marks>,
    run: Option<u64>,
    seq: Option<u64>,
    sent_at_ns: Option<u64>,
}

impl Body {
    fn marks(self) -> Option<Marks> {
        match (self.data, self.run, self.seq, self.sent_at_ns) {
            (Some(m), _, _, _) => Some(m),
            (None, Some(run), Some(seq), Some(sent_at_ns)) => Some(Marks {
                run,
                seq,
                sent_at_ns,
            }),
            _ => None,
        }
    }
}

fn reply(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

async fn handle(
    session: Arc<RwLock<Arc<Session>>>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let session = session.read().unwrap_or_else(|p| p.into_inner()).clone();
    let index = req
        .uri()
        .path()
        .strip_prefix("/r/")
        .and_then(|i| i.parse::<usize>().ok());
    let msg_id = req
        .headers()
        .get("webhook-id")
        .map(|v| v.as_bytes().to_vec());
    let Some(hook) = index.and_then(|i| session.hooks.get(i)) else {
        session.stray.fetch_add(1, Ordering::Relaxed);
        return Ok(reply(StatusCode::OK));
    };
    match Mode::from_u8(hook.mode.load(Ordering::SeqCst)) {
        Mode::Ok => {}
        Mode::Unavailable => {
            hook.refused.fetch_add(1, Ordering::Relaxed);
            return Ok(reply(StatusCode::SERVICE_UNAVAILABLE));
        }
        Mode::Hang => {
            hook.hung.fetch_add(1, Ordering::Relaxed);
            // Far beyond any timeout the scenarios set: the client gives up first.
            tokio::time::sleep(Duration::from_secs(600)).await;
            return Ok(reply(StatusCode::OK));
        }
    }
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return Ok(reply(StatusCode::BAD_REQUEST)),
    };
    let marks = serde_json::from_slice::<Body>(&body)
        .ok()
        .and_then(Body::marks);
    match marks {
        Some(m) if m.run == session.run => hook.record(m.seq, m.sent_at_ns, msg_id.as_deref()),
        _ => {
            session.stray.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(reply(StatusCode::OK))
}

/// Locks a mutex, ignoring poisoning (the data stays usable for counting).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marks(body: &str) -> Option<(u64, u64, u64)> {
        serde_json::from_str::<Body>(body)
            .ok()
            .and_then(Body::marks)
            .map(|m| (m.run, m.seq, m.sent_at_ns))
    }

    #[test]
    fn reads_the_marks_of_both_body_shapes() {
        let default_body = r#"{"type":"lt.flow","timestamp":"t","data":{"run":3,"seq":7,"sent_at_ns":99,"email":"x"},"context":null}"#;
        assert_eq!(marks(default_body), Some((3, 7, 99)));
        let mapped = r#"{"run":3,"seq":8,"sent_at_ns":100,"user":{"name":"u"}}"#;
        assert_eq!(marks(mapped), Some((3, 8, 100)));
        assert_eq!(marks(r#"{"seq":1}"#), None);
        assert_eq!(marks("not json"), None);
    }

    #[test]
    fn counts_duplicates_by_event_and_by_message() {
        let session = Session::new(1, &[Mode::Ok]);
        let hook = &session.hooks[0];
        hook.record(5, 0, Some(b"msg_a"));
        hook.record(5, 0, Some(b"msg_a"));
        hook.record(6, 0, Some(b"msg_b"));
        assert_eq!(hook.delivered(), 2);
        assert_eq!(hook.duplicates(), (1, 1));
        let firsts = hook.first_delivery_times();
        assert!(firsts[5] > 0 && firsts[6] > 0 && firsts[4] == 0);
        assert_eq!(hook.lag().len(), 3);
    }
}
