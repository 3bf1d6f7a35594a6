//! The load generator: HTTP/1.1 keep-alive connections driven open loop (a fixed schedule) or
//! closed loop (as fast as answers come back).
//!
//! Open loop: request `i` is due at `start + i / rate`, whatever happened to the earlier ones; a
//! pool of connections (each one request at a time) takes due requests in order. When every
//! connection is busy a due request waits, and one sent more than [`LATE`] after its time counts
//! as late: the schedule is kept (no coordinated omission in the rate), and lateness says when
//! the generator, not the gateway, was the limit. Closed loop: each connection sends its next
//! request as soon as the previous one is answered.
//!
//! Request `i` carries the events `[i * n, (i + 1) * n)` (`n` = events per request), so event
//! sequence numbers are dense and the receiver can index them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};
use tokio_rustls::TlsConnector;

use crate::receiver::new_histogram;

/// A request sent later than this after its scheduled time is late.
pub const LATE: Duration = Duration::from_millis(10);
/// A request not answered within this is an error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Error messages kept as examples.
const ERROR_SAMPLES: usize = 5;

/// Builds the body of the request that carries events from `first_seq` on; it stamps
/// `sent_at_ns` itself, right before the request is sent.
pub type BodyFn = Arc<dyn Fn(u64) -> Bytes + Send + Sync>;

/// What to send where.
#[derive(Clone)]
pub struct Load {
    /// Server addresses: request `i` goes to `addrs[i % len]` (round robin per request; each
    /// sender keeps a keep-alive connection to every address).
    pub addrs: Vec<SocketAddr>,
    /// Request path (`/v1/events`).
    pub path: String,
    /// Bearer token, if any.
    pub bearer: Option<String>,
    /// Events in one request (1, or the batch size).
    pub events_per_request: u64,
    /// The body of a request, by its first event's sequence number.
    pub body: BodyFn,
    /// HTTPS with this client (`--tls`, to a gateway); `None`: plain HTTP.
    pub tls: Option<TlsConnector>,
}

/// How hard to push.
#[derive(Clone, Copy, Debug)]
pub enum Drive {
    /// `connections` senders, each sending again as soon as it is answered.
    Max { connections: usize },
    /// `rate` requests per second on a fixed schedule, at most `connections` in flight.
    Fixed { rate: f64, connections: usize },
}

/// What a generator run did.
pub struct GenStats {
    /// Requests sent (answered or failed).
    pub requests: u64,
    /// Events in the requests sent.
    pub events_sent: u64,
    /// Events in requests answered 2xx.
    pub events_accepted: u64,
    /// Requests answered non-2xx or failed in transport (not the refusals below).
    pub errors: u64,
    /// Requests refused with `503` and a `Retry-After` (the gateway's ingest back-pressure,
    /// `delivery.ingest_backlog_limit`): not errors; a closed-loop sender waits the Retry-After
    /// before its next request, as a well-behaved client would.
    pub refused: u64,
    /// A few of the errors.
    pub error_samples: Vec<String>,
    /// Open loop: requests sent more than [`LATE`] after their scheduled time.
    pub late: u64,
    /// Open loop: the largest delay behind schedule.
    pub max_delay: Duration,
    /// Response time of the 2xx requests, microseconds.
    pub latency: Histogram<u64>,
    /// When sending began.
    pub started: Instant,
    /// When the last answer came (or the last request failed).
    pub finished: Instant,
    /// By event sequence number: accepted (answered 2xx).
    pub accepted: Vec<bool>,
}

impl GenStats {
    /// Accepted events per second over the run.
    pub fn accepted_per_sec(&self) -> f64 {
        let secs = (self.finished - self.started).as_secs_f64().max(1e-9);
        self.events_accepted as f64 / secs
    }
}

/// What one sender saw; merged into [`GenStats`] at the end.
struct Tally {
    requests: u64,
    events_sent: u64,
    errors: u64,
    refused: u64,
    error_samples: Vec<String>,
    late: u64,
    max_delay: Duration,
    latency: Histogram<u64>,
    accepted_ranges: Vec<u64>,
    finished: Option<Instant>,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            requests: 0,
            events_sent: 0,
            errors: 0,
            refused: 0,
            error_samples: Vec::new(),
            late: 0,
            max_delay: Duration::ZERO,
            latency: new_histogram(),
            accepted_ranges: Vec::new(),
            finished: None,
        }
    }

    fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES {
            self.error_samples.push(message);
        }
    }
}

/// One keep-alive HTTP/1.1 connection (over TLS with a connector), opened on first use and
/// again after an error.
struct Conn {
    addr: SocketAddr,
    tls: Option<TlsConnector>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl Conn {
    fn new(addr: SocketAddr, tls: Option<TlsConnector>) -> Conn {
        Conn {
            addr,
            tls,
            sender: None,
        }
    }

    async fn sender(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(connect(self.addr, self.tls.as_ref()).await?);
        }
        let sender = self
            .sender
            .as_mut()
            .ok_or_else(|| anyhow!("no connection"))?;
        sender.ready().await.context("connection not ready")?;
        Ok(sender)
    }

    /// Sends one request and reads the whole answer.
    async fn send(&mut self, request: Request<Full<Bytes>>) -> anyhow::Result<(StatusCode, Bytes)> {
        self.send_with_retry_after(request)
            .await
            .map(|(status, _, body)| (status, body))
    }

    /// [`Conn::send`], with the answer's `Retry-After` (in seconds) when it has one.
    async fn send_with_retry_after(
        &mut self,
        request: Request<Full<Bytes>>,
    ) -> anyhow::Result<(StatusCode, Option<Duration>, Bytes)> {
        let exchange = async {
            let sender = self.sender().await?;
            let response = sender.send_request(request).await?;
            let status = response.status();
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let body = response.into_body().collect().await?.to_bytes();
            anyhow::Ok((status, retry_after, body))
        };
        let result = match tokio::time::timeout(REQUEST_TIMEOUT, exchange).await {
            Ok(r) => r,
            Err(_) => Err(anyhow!("no answer within {REQUEST_TIMEOUT:?}")),
        };
        if result.is_err() {
            self.sender = None;
        }
        result
    }
}

async fn connect(
    addr: SocketAddr,
    tls: Option<&TlsConnector>,
) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(addr)
        .await
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_nodelay(true)?;
    let sender = match tls {
        None => {
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender
        }
        Some(connector) => {
            let stream = crate::tls::connect(connector, addr, stream).await?;
            let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = connection.await;
            });
            sender
        }
    };
    Ok(sender)
}

fn build_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json");
    if let Some(token) = bearer {
        builder = builder.header("authorization", format!("Bearer {token}"));
    }
    builder
        .body(Full::new(body))
        .expect("a request of valid parts")
}

/// One request on a fresh connection (admin calls, health and metrics polls), over TLS with a
/// connector.
pub async fn one_shot(
    addr: SocketAddr,
    tls: Option<&TlsConnector>,
    method: Method,
    path: &str,
    bearer: Option<&str>,
    body: Bytes,
) -> anyhow::Result<(StatusCode, Bytes)> {
    let mut conn = Conn::new(addr, tls.cloned());
    conn.send(build_request(addr, method, path, bearer, body))
        .await
}

/// A sender's connections: one per address of the load.
fn conns(load: &Load) -> Vec<Conn> {
    load.addrs
        .iter()
        .map(|&a| Conn::new(a, load.tls.clone()))
        .collect()
}

/// Sends request `i` of `load` (the events from `i * events_per_request` on) over the
/// connection to its address, and tallies it. Returns the Retry-After of a refusal.
async fn send_one(conns: &mut [Conn], load: &Load, i: u64, tally: &mut Tally) -> Option<Duration> {
    let n = load.events_per_request;
    let seq = i * n;
    let conn = &mut conns[(i % conns.len() as u64) as usize];
    let body = (load.body)(seq);
    let request = build_request(
        conn.addr,
        Method::POST,
        &load.path,
        load.bearer.as_deref(),
        body,
    );
    let sent = Instant::now();
    let result = conn.send_with_retry_after(request).await;
    let done = Instant::now();
    tally.requests += 1;
    tally.events_sent += n;
    tally.finished = Some(done);
    match result {
        Ok((status, _, _)) if status.is_success() => {
            let us = (done - sent).as_micros() as u64;
            let _ = tally.latency.record(us.max(1));
            tally.accepted_ranges.push(seq);
            None
        }
        Ok((StatusCode::SERVICE_UNAVAILABLE, Some(wait), _)) => {
            tally.refused += 1;
            Some(wait)
        }
        Ok((status, _, body)) => {
            let text = String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned();
            tally.error(format!("{status}: {text}"));
            None
        }
        Err(e) => {
            tally.error(format!("{e:#}"));
            None
        }
    }
}

/// Runs `load` for `duration` as `drive` says.
pub async fn run(load: Load, drive: Drive, duration: Duration) -> GenStats {
    let load = Arc::new(load);
    let started = Instant::now();
    let tallies = match drive {
        Drive::Max { connections } => closed_loop(load.clone(), connections, duration).await,
        Drive::Fixed { rate, connections } => {
            open_loop(load.clone(), rate, connections, duration).await
        }
    };
    merge(tallies, started, load.events_per_request)
}

async fn closed_loop(load: Arc<Load>, connections: usize, duration: Duration) -> Vec<Tally> {
    let deadline = Instant::now() + duration;
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (load, next) = (load.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut conns = conns(&load);
            let mut tally = Tally::new();
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if let Some(wait) = send_one(&mut conns, &load, i, &mut tally).await {
                    let until = (Instant::now() + wait).min(deadline);
                    tokio::time::sleep_until(until.into()).await;
                }
            }
            tally
        }));
    }
    let mut tallies = Vec::new();
    for task in tasks {
        if let Ok(t) = task.await {
            tallies.push(t);
        }
    }
    tallies
}

async fn open_loop(
    load: Arc<Load>,
    rate: f64,
    connections: usize,
    duration: Duration,
) -> Vec<Tally> {
    let total = (rate * duration.as_secs_f64()).round().max(1.0) as u64;
    let (tx, rx) = mpsc::unbounded_channel::<(u64, Instant)>();
    let rx = Arc::new(Mutex::new(rx));
    let mut tasks = Vec::new();
    for _ in 0..connections.max(1) {
        let (load, rx) = (load.clone(), rx.clone());
        tasks.push(tokio::spawn(async move {
            let mut conns = conns(&load);
            let mut tally = Tally::new();
            loop {
                let job = rx.lock().await.recv().await;
                let Some((i, due)) = job else { break };
                let delay = Instant::now().saturating_duration_since(due);
                if delay > LATE {
                    tally.late += 1;
                }
                tally.max_delay = tally.max_delay.max(delay);
                // Open loop: the schedule decides when to send, a refusal included.
                let _ = send_one(&mut conns, &load, i, &mut tally).await;
            }
            tally
        }));
    }
    // The schedule: every request whose time has come is handed out, then sleep until the
    // next one's (the timer's millisecond resolution is why several may be due at once).
    let start = Instant::now();
    let due = |i: u64| start + Duration::from_secs_f64(i as f64 / rate);
    let mut i = 0;
    while i < total {
        let now = Instant::now();
        while i < total && due(i) <= now {
            if tx.send((i, due(i))).is_err() {
                break;
            }
            i += 1;
        }
        if i < total {
            tokio::time::sleep_until(due(i).into()).await;
        }
    }
    drop(tx);
    let mut tallies = Vec::new();
    for task in tasks {
        if let Ok(t) = task.await {
            tallies.push(t);
        }
    }
    tallies
}

fn merge(tallies: Vec<Tally>, started: Instant, n: u64) -> GenStats {
    let mut stats = GenStats {
        requests: 0,
        events_sent: 0,
        events_accepted: 0,
        errors: 0,
        refused: 0,
        error_samples: Vec::new(),
        late: 0,
        max_delay: Duration::ZERO,
        latency: new_histogram(),
        started,
        finished: started,
        accepted: Vec::new(),
    };
    for t in tallies {
        stats.requests += t.requests;
        stats.events_sent += t.events_sent;
        stats.errors += t.errors;
        stats.refused += t.refused;
        stats.late += t.late;
        stats.max_delay = stats.max_delay.max(t.max_delay);
        let _ = stats.latency.add(&t.latency);
        for e in t.error_samples {
            if stats.error_samples.len() < ERROR_SAMPLES {
                stats.error_samples.push(e);
            }
        }
        if let Some(f) = t.finished {
            stats.finished = stats.finished.max(f);
        }
        for first in t.accepted_ranges {
            let end = (first + n) as usize;
            if stats.accepted.len() < end {
                stats.accepted.resize(end, false);
            }
            stats.accepted[first as usize..end].fill(true);
            stats.events_accepted += n;
        }
    }
    stats
}
