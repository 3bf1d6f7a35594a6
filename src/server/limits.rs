//! Limits at the edge that are not hyper's own: the open-file budget and the connection caps
//! derived from it, the request body deadline, and the per-client rate limit of `/v1/inbound`.
//!
//! Invariants:
//! - The two listeners' default caps together take at most 9/16 of RLIMIT_NOFILE, so a flood
//!   of the public listener leaves descriptors for the admin listener, the store, plugins and
//!   outgoing deliveries. Connections beyond a cap wait in the kernel's backlog (they cost the
//!   process no descriptor) until one closes.
//! - A request body is read whole within `server.body_timeout_ms` of its head, however slowly
//!   its bytes trickle in (tower-http's `TimeoutBody` restarts its timer at every frame, so a
//!   byte every few seconds would keep it alive forever).
//! - The rate limiter remembers at most `server.inbound_rate_max_clients` addresses.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use hyper::body::{Body, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::time::{Instant, Sleep};

use super::ApiError;
use crate::config::ServerConfig;

/// Used when RLIMIT_NOFILE cannot be read or is unlimited.
const NOFILE_FALLBACK: u64 = 65_536;

/// Raises the soft RLIMIT_NOFILE to the hard limit; returns the soft limit in force after.
/// For the binary's start-up: a library embedded in another process leaves its limits alone.
pub fn raise_nofile_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let mut limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        if limit.current.is_some_and(|soft| soft < hard) {
            let raised = rustix::process::Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            };
            match setrlimit(Resource::Nofile, raised) {
                Ok(()) => limit.current = Some(hard),
                Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
            }
        }
    }
    limit.current.unwrap_or(NOFILE_FALLBACK)
}

/// The soft RLIMIT_NOFILE in force.
fn nofile_limit() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .current
        .unwrap_or(NOFILE_FALLBACK)
}

/// The connection caps of the public and the admin listener: the configured ones, or shares of
/// the open-file limit.
pub fn connection_caps(server: &ServerConfig) -> (usize, usize) {
    caps_for(server, nofile_limit())
}

fn caps_for(server: &ServerConfig, nofile: u64) -> (usize, usize) {
    let share = |divisor: u64| {
        usize::try_from(nofile / divisor)
            .unwrap_or(usize::MAX)
            .max(4)
    };
    let public = match server.max_connections {
        0 => share(2),
        n => n,
    };
    let admin = match server.admin_max_connections {
        0 => share(16),
        n => n,
    };
    (public, admin)
}

/// A request body that must end by a deadline set when its head arrived.
pub struct DeadlineBody<B> {
    inner: B,
    deadline: Instant,
    /// Created the first time the body has to wait: a body already buffered costs no timer.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> DeadlineBody<B> {
    /// `inner`, which must end within `timeout` from now.
    pub fn new(inner: B, timeout: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Instant::now() + timeout,
            sleep: None,
        }
    }
}

/// The body did not arrive within `server.body_timeout_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within server.body_timeout_ms")]
pub struct BodyTimeout;

impl<B> Body for DeadlineBody<B>
where
    B: Body + Unpin,
    B::Error: Into<axum::BoxError>,
{
    type Data = B::Data;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let deadline = this.deadline;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyTimeout.into()))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Token buckets per client address for `/v1/inbound`.
pub struct InboundRateLimit {
    limiter: RwLock<Arc<DefaultKeyedRateLimiter<IpAddr>>>,
    quota: Quota,
    max_clients: usize,
    /// Held while pruning, so one caller prunes and the others go on.
    pruning: Mutex<()>,
    clock: DefaultClock,
    /// Requests refused.
    refused: Counter,
}

impl InboundRateLimit {
    /// The limiter `server` configures, counting refusals in `refused`; none when
    /// `inbound_rate_per_sec` is 0.
    pub fn from_config(server: &ServerConfig, refused: Counter) -> Option<InboundRateLimit> {
        let rate = NonZeroU32::new(server.inbound_rate_per_sec)?;
        let burst = NonZeroU32::new(server.inbound_rate_burst).unwrap_or(rate);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Some(InboundRateLimit {
            limiter: RwLock::new(Arc::new(RateLimiter::dashmap(quota))),
            quota,
            max_clients: server.inbound_rate_max_clients.max(1),
            pruning: Mutex::new(()),
            clock: DefaultClock::default(),
            refused,
        })
    }

    /// Takes a token for `addr`, or says how long until there is one.
    pub fn check(&self, addr: IpAddr) -> Result<(), Duration> {
        let limiter = match self.limiter.read() {
            Ok(l) => l.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        };
        if limiter.len() >= self.max_clients {
            self.prune(&limiter);
        }
        limiter.check_key(&client_key(addr)).map_err(|not_until| {
            self.refused.inc();
            not_until.wait_time_from(self.clock.now())
        })
    }

    /// Client addresses remembered.
    pub fn clients(&self) -> usize {
        match self.limiter.read() {
            Ok(l) => l.len(),
            Err(poisoned) => poisoned.into_inner().len(),
        }
    }

    /// Forgets the addresses whose bucket is full again (they are as new); if that leaves too
    /// many, starts over with an empty limiter: the memory bound wins over the limit.
    fn prune(&self, limiter: &Arc<DefaultKeyedRateLimiter<IpAddr>>) {
        let Ok(_one) = self.pruning.try_lock() else {
            return;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
        if limiter.len() >= self.max_clients {
            tracing::warn!(
                clients = limiter.len(),
                max = self.max_clients,
                "inbound rate limiter full of active clients: starting over"
            );
            let fresh = Arc::new(RateLimiter::dashmap(self.quota));
            match self.limiter.write() {
                Ok(mut l) => *l = fresh,
                Err(poisoned) => *poisoned.into_inner() = fresh,
            }
        }
    }
}

/// The key of a client: its IPv4 address, or its IPv6 /64 (one host usually holds a whole
/// /64, so keying on single IPv6 addresses would let it mint fresh buckets at will).
fn client_key(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}

/// Middleware of `/v1/inbound`: 429 with `Retry-After` when the client is over its rate.
pub async fn limit_inbound(
    State(limit): State<Arc<InboundRateLimit>>,
    request: Request,
    next: Next,
) -> Response {
    let addr = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip());
    // Requests that did not come through a listener (tests calling the router) have no address.
    if let Some(addr) = addr {
        if let Err(wait) = limit.check(addr) {
            let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            tracing::debug!(client = %addr, retry_after = secs, "inbound rate limited");
            let mut response = ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this address",
            )
            .into_response();
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
            return response;
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn default_caps_leave_room_for_the_admin_listener_and_the_rest() {
        let server = Config::default().server;
        let (public, admin) = caps_for(&server, 256);
        assert_eq!((public, admin), (128, 16));
        let mut server = server;
        server.max_connections = 10;
        server.admin_max_connections = 3;
        assert_eq!(caps_for(&server, 256), (10, 3));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        let c: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(client_key(a), client_key(b));
        assert_ne!(client_key(a), client_key(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(client_key(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    fn limiter(rate: u32, burst: u32, max_clients: usize) -> InboundRateLimit {
        let mut server = Config::default().server;
        server.inbound_rate_per_sec = rate;
        server.inbound_rate_burst = burst;
        server.inbound_rate_max_clients = max_clients;
        InboundRateLimit::from_config(&server, Counter::default()).unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_waits_others_are_unaffected() {
        let limit = limiter(1, 3, 100);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        for _ in 0..3 {
            assert!(limit.check(a).is_ok());
        }
        let wait = limit.check(a).unwrap_err();
        assert_eq!(limit.refused.get(), 1);
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert!(limit.check(b).is_ok());
    }

    #[test]
    fn remembered_clients_are_bounded() {
        let limit = limiter(1, 1, 50);
        for i in 0..1000u32 {
            let addr = IpAddr::V4((0x0a00_0000 + i).into());
            let _ = limit.check(addr);
            assert!(limit.clients() <= 50, "{} clients", limit.clients());
        }
    }

    #[test]
    fn off_when_the_rate_is_zero() {
        let mut server = Config::default().server;
        server.inbound_rate_per_sec = 0;
        assert!(InboundRateLimit::from_config(&server, Counter::default()).is_none());
    }

    /// A body that yields a byte at every tick of its interval, forever.
    struct Trickle(tokio::time::Interval);

    impl Body for Trickle {
        type Data = bytes::Bytes;
        type Error = std::convert::Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
            match self.0.poll_tick(cx) {
                Poll::Ready(_) => {
                    Poll::Ready(Some(Ok(Frame::data(bytes::Bytes::from_static(b"x")))))
                }
                Poll::Pending => Poll::Pending,
            }
        }
    }

    #[tokio::test]
    async fn a_trickling_body_fails_at_the_deadline() {
        let body = Trickle(tokio::time::interval(Duration::from_millis(20)));
        let mut body = DeadlineBody::new(body, Duration::from_millis(300));
        let started = Instant::now();
        let mut frames = 0;
        let error = loop {
            let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
            match frame {
                Some(Ok(_)) => frames += 1,
                Some(Err(e)) => break e,
                None => panic!("the body ended"),
            }
        };
        let elapsed = started.elapsed();
        assert!(error.is::<BodyTimeout>(), "{error}");
        assert!(frames >= 5, "{frames} frames before the deadline");
        assert!(
            elapsed >= Duration::from_millis(300) && elapsed < Duration::from_secs(3),
            "{elapsed:?}"
        );
    }
}
