//! The accept loop of a listener: a connection cap, timeouts, optional TLS, graceful shutdown.
//!
//! Each accepted connection holds a permit of the listener's semaphore; with none left the loop
//! stops accepting, so further connections wait in the kernel's backlog. A failing `accept`
//! (EMFILE, ENFILE, ENOBUFS) is retried with a growing pause, logged once while it lasts, and
//! never ends the listener.
//!
//! A connection is served by hyper's HTTP/1 machinery with:
//! - `header_read_timeout`: hyper's timer, running whenever a request head is awaited (from
//!   the connection's start, or the end of the previous response: idle keep-alive connections
//!   end with it too); the TLS handshake gets the same time of its own;
//! - the body deadline ([`super::limits::DeadlineBody`]);
//! - the idle timeout: a connection that moves no byte for that long while none of its requests
//!   is in a handler (a client that stopped reading its response) is dropped.
//!
//! On shutdown the loop stops accepting and hyper-util's [`GracefulShutdown`] lets requests in
//! flight finish (idle connections close at once), for at most the grace period.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower_service::Service as _;
use tracing::{debug, info, warn};

use super::limits::DeadlineBody;
use crate::config::ServerConfig;

/// How one listener treats its connections.
#[derive(Clone)]
pub struct ListenerLimits {
    /// See `server.header_read_timeout_ms`.
    pub header_read_timeout: Duration,
    /// See `server.body_timeout_ms`.
    pub body_timeout: Duration,
    /// See `server.idle_timeout_ms`.
    pub idle_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
    /// How long open connections may take to finish at shutdown.
    pub grace: Duration,
}

impl ListenerLimits {
    /// The limits `server` sets, with a cap of `max_connections`.
    pub fn new(server: &ServerConfig, max_connections: usize) -> ListenerLimits {
        ListenerLimits {
            header_read_timeout: Duration::from_millis(server.header_read_timeout_ms),
            body_timeout: Duration::from_millis(server.body_timeout_ms),
            idle_timeout: Duration::from_millis(server.idle_timeout_ms),
            max_connections: max_connections.max(1),
            grace: Duration::from_secs(server.shutdown_grace_secs),
        }
    }
}

/// Longest pause between two `accept` attempts while they fail.
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// Serves `router` on `listener` until `shutdown`, then lets open connections finish.
/// `metrics`: the listener's gauge of open connections and counter of failed accepts.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    router: Router,
    limits: ListenerLimits,
    tls: Option<TlsAcceptor>,
    metrics: (Gauge, Counter),
    shutdown: impl Future<Output = ()>,
) {
    let (open_connections, accept_errors) = metrics;
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let builder = Arc::new(builder);
    let mut backoff: Option<Duration> = None;
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                // The semaphore is never closed.
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, remote) = match accepted {
            Ok(accepted) => {
                if backoff.take().is_some() {
                    info!(listener = name, "accepting connections again");
                }
                accepted
            }
            // The client gave up before we took its connection: nothing to do with the listener.
            Err(e) if is_connection_error(&e) => continue,
            Err(e) => {
                accept_errors.inc();
                let pause = match backoff {
                    None => {
                        warn!(listener = name, error = %e, "accept failed; retrying with a pause until it succeeds");
                        Duration::from_millis(10)
                    }
                    Some(pause) => (pause * 2).min(MAX_ACCEPT_BACKOFF),
                };
                backoff = Some(pause);
                drop(permit);
                tokio::select! {
                    _ = &mut shutdown => break,
                    _ = tokio::time::sleep(pause) => continue,
                }
            }
        };
        // Small responses go out at once rather than waiting on Nagle's algorithm.
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            builder: builder.clone(),
            router: router.clone(),
            limits: limits.clone(),
            remote,
        };
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let open = open_connections.clone();
        open.inc();
        tokio::spawn(async move {
            let _permit = permit;
            conn.run(stream, tls, watcher).await;
            open.dec();
        });
    }
    drop(listener);
    let open = graceful.count();
    if open > 0 {
        debug!(
            listener = name,
            open, "waiting for open connections to finish"
        );
    }
    if tokio::time::timeout(limits.grace, graceful.shutdown())
        .await
        .is_err()
    {
        warn!(
            listener = name,
            "connections still open after the grace period: dropped"
        );
    }
}

/// Errors of `accept` that concern one connection, not the listener.
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection and what it needs to be served.
struct Connection {
    builder: Arc<hyper::server::conn::http1::Builder>,
    router: Router,
    limits: ListenerLimits,
    remote: SocketAddr,
}

impl Connection {
    async fn run(
        self,
        stream: TcpStream,
        tls: Option<TlsAcceptor>,
        watcher: hyper_util::server::graceful::Watcher,
    ) {
        let activity = Arc::new(Activity::default());
        let io = Tracked {
            inner: stream,
            activity: activity.clone(),
        };
        match tls {
            None => self.http(io, activity, watcher).await,
            Some(acceptor) => {
                let handshake =
                    tokio::time::timeout(self.limits.header_read_timeout, acceptor.accept(io));
                match handshake.await {
                    Ok(Ok(io)) => self.http(io, activity, watcher).await,
                    Ok(Err(e)) => debug!(client = %self.remote, error = %e, "TLS handshake failed"),
                    Err(_) => debug!(client = %self.remote, "TLS handshake timed out"),
                }
            }
        }
    }

    async fn http<I>(
        self,
        io: I,
        activity: Arc<Activity>,
        watcher: hyper_util::server::graceful::Watcher,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Connection {
            builder,
            router,
            limits,
            remote,
        } = self;
        let (body_timeout, idle_timeout) = (limits.body_timeout, limits.idle_timeout);
        let requests = activity.clone();
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request = request.map(|body| DeadlineBody::new(body, body_timeout));
            request.extensions_mut().insert(ConnectInfo(remote));
            let busy = Busy::start(requests.clone());
            let response = router.clone().call(request);
            async move {
                let response = response.await;
                drop(busy);
                response
            }
        });
        let served = watcher.watch(builder.serve_connection(TokioIo::new(io), service));
        tokio::select! {
            result = served => {
                if let Err(e) = result {
                    debug!(client = %remote, error = %e, "connection ended with an error");
                }
            }
            _ = activity.idle_for(idle_timeout) => {
                debug!(client = %remote, "idle connection closed");
            }
        }
    }
}

/// What the idle timer watches on a connection: bytes moved and requests in handlers.
#[derive(Default)]
struct Activity {
    /// Bumped by every read or write that moved bytes, and by every request's start and end.
    moves: AtomicU64,
    /// Requests of this connection inside a handler.
    busy: AtomicU64,
}

impl Activity {
    /// Resolves once nothing has moved for `idle` (within a quarter of it) while no handler
    /// was busy. Checks four times per period rather than timestamping every read and write.
    async fn idle_for(&self, idle: Duration) {
        let tick = idle / 4;
        let mut last = self.moves.load(Ordering::Relaxed);
        let mut quiet = 0;
        loop {
            tokio::time::sleep(tick).await;
            let now = self.moves.load(Ordering::Relaxed);
            if now != last || self.busy.load(Ordering::Relaxed) > 0 {
                last = now;
                quiet = 0;
            } else {
                quiet += 1;
                if quiet >= 4 {
                    return;
                }
            }
        }
    }
}

/// A request inside its handler; counted until dropped.
struct Busy(Arc<Activity>);

impl Busy {
    fn start(activity: Arc<Activity>) -> Busy {
        activity.busy.fetch_add(1, Ordering::Relaxed);
        activity.moves.fetch_add(1, Ordering::Relaxed);
        Busy(activity)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
        self.0.moves.fetch_add(1, Ordering::Relaxed);
    }
}

/// A stream that counts the reads and writes that moved bytes.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    fn moved(&self, n: usize) {
        if n > 0 {
            self.activity.moves.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            self.moved(buf.filled().len() - before);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            self.moved(n);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            self.moved(n);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
