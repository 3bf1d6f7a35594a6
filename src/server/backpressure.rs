//! Ingest back-pressure: while more deliveries are due than `delivery.ingest_backlog_limit`,
//! `POST /v1/events` and `POST /v1/events/batch` answer `503 Service Unavailable` with a
//! `Retry-After` header and the error code `backlogged`, so that a flood of ingests cannot grow
//! the queue (and the lag of every delivery in it) without bound while the workers fall behind.
//!
//! - **The backlog** is the store's count of due deliveries ([`Store::due_count`]): pending,
//!   their time come, of an enabled webhook; in flight or waiting for a worker. Deliveries waiting
//!   for a retry do not count (an endpoint that is down must not stop the ingest of everyone
//!   else), nor do a paused webhook's. It is read every [`READ_EVERY`] by one task per process
//!   ([`watch`]), never more than `limit + 1`, so the check on the request path is an atomic
//!   load and the query's cost does not grow with the backlog. Every process sharing the
//!   database sees the same backlog.
//! - **503, not 429**: the caller did nothing wrong and has no quota to respect; the gateway
//!   is overloaded for everyone. 503 with `Retry-After` is what HTTP clients, queues and load
//!   balancers already retry (429 would read as "this client sends too much").
//! - **Nothing accepted is lost**: the refusal happens before the request is parsed or anything
//!   is committed; what was answered 202 before stays queued and is delivered.
//! - **Sources** (message buses) ask [`IngestBacklog::retry_after`] before pulling a batch and
//!   wait that long instead of pulling while it answers `Some`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, Shared};
use crate::config::DeliveryConfig;
use crate::model::now_ms;
use crate::store::Store;

/// How often [`watch`] reads the backlog.
pub const READ_EVERY: Duration = Duration::from_millis(200);

/// The backlog as last read, the limit, and their metrics.
#[derive(Debug)]
pub struct IngestBacklog {
    /// Refuse while more than this many deliveries are due; 0: never.
    limit: u64,
    /// The `Retry-After` of a refusal.
    retry_after: Duration,
    /// Due deliveries at the last read (at most `limit + 1`).
    due: AtomicU64,
    /// Whether `due` is over the limit, as of the last read.
    over: AtomicBool,
    /// `hookyard_ingest_refused_total`: ingest requests refused for the backlog.
    refused: Counter,
    /// `hookyard_ingest_backlog`: the due backlog at the last read (capped at `limit + 1`).
    gauge: Gauge,
}

impl IngestBacklog {
    /// The back-pressure `config` asks for, with its metrics registered in `registry`.
    pub fn register(config: &DeliveryConfig, registry: &mut Registry) -> IngestBacklog {
        let backlog = IngestBacklog::new(config);
        registry.register(
            "ingest_refused",
            "Ingest requests refused with 503 because the due backlog passed delivery.ingest_backlog_limit",
            backlog.refused.clone(),
        );
        registry.register(
            "ingest_backlog",
            "Due deliveries as last read by the ingest back-pressure (counted up to the limit + 1)",
            backlog.gauge.clone(),
        );
        backlog
    }

    /// The back-pressure `config` asks for, its metrics registered nowhere.
    pub fn new(config: &DeliveryConfig) -> IngestBacklog {
        IngestBacklog {
            limit: config.ingest_backlog_limit,
            retry_after: Duration::from_secs(config.ingest_retry_after_secs.max(1)),
            due: AtomicU64::new(0),
            over: AtomicBool::new(false),
            refused: Counter::default(),
            gauge: Gauge::default(),
        }
    }

    /// Whether there is a limit at all.
    pub fn enabled(&self) -> bool {
        self.limit > 0
    }

    /// `Some(how long to wait)` while ingest is refused; `None` while it is accepted.
    pub fn retry_after(&self) -> Option<Duration> {
        self.over
            .load(Ordering::Relaxed)
            .then_some(self.retry_after)
    }

    /// Due deliveries at the last read (at most the limit + 1).
    pub fn due(&self) -> u64 {
        self.due.load(Ordering::Relaxed)
    }

    /// Takes a new reading of the backlog.
    pub fn record(&self, due: u64) {
        self.due.store(due, Ordering::Relaxed);
        self.gauge.set(i64::try_from(due).unwrap_or(i64::MAX));
        self.over
            .store(self.enabled() && due > self.limit, Ordering::Relaxed);
    }

    /// Reads the backlog from `store` and records it. On an error the last reading stands (the
    /// ingest's own commit will tell the caller if the store is down).
    pub async fn read(&self, store: &dyn Store) {
        if !self.enabled() {
            return;
        }
        match store
            .due_count(now_ms(), self.limit.saturating_add(1))
            .await
        {
            Ok(due) => self.record(due),
            Err(e) => tracing::debug!(error = %e, "reading the due backlog failed"),
        }
    }

    /// The answer to a refused ingest.
    fn refusal(&self, retry_after: Duration) -> Response {
        self.refused.inc();
        let secs = retry_after.as_secs().max(1);
        let mut response = ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backlogged",
            format!(
                "more than {} deliveries are waiting to be sent; nothing was accepted, retry in {secs} s",
                self.limit
            ),
        )
        .into_response();
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        response
    }
}

/// Reads the backlog every [`READ_EVERY`] until `stop` resolves (returns at once when there is
/// no limit).
pub async fn watch(
    backlog: Arc<IngestBacklog>,
    store: Arc<dyn Store>,
    stop: impl std::future::Future<Output = ()>,
) {
    if !backlog.enabled() {
        return;
    }
    tokio::pin!(stop);
    let mut every = tokio::time::interval(READ_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stop => return,
            _ = every.tick() => backlog.read(store.as_ref()).await,
        }
    }
}

/// The ingest routes' guard: 503 + `Retry-After` while the backlog is over the limit.
pub async fn refuse_when_backlogged(
    State(state): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    match state.backlog.retry_after() {
        Some(wait) => state.backlog.refusal(wait),
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(limit: u64) -> DeliveryConfig {
        let mut config = crate::config::Config::default().delivery;
        config.ingest_backlog_limit = limit;
        config.ingest_retry_after_secs = 3;
        config
    }

    #[test]
    fn refuses_only_past_the_limit() {
        let backlog = IngestBacklog::new(&config(10));
        assert_eq!(backlog.retry_after(), None);
        backlog.record(10);
        assert_eq!(backlog.retry_after(), None, "at the limit is still fine");
        backlog.record(11);
        assert_eq!(backlog.retry_after(), Some(Duration::from_secs(3)));
        backlog.record(0);
        assert_eq!(backlog.retry_after(), None, "accepted again once drained");
    }

    #[test]
    fn zero_is_no_limit() {
        let backlog = IngestBacklog::new(&config(0));
        backlog.record(u64::MAX);
        assert!(!backlog.enabled());
        assert_eq!(backlog.retry_after(), None);
    }

    #[test]
    fn a_refusal_says_when_to_retry() {
        let backlog = IngestBacklog::new(&config(1));
        let response = backlog.refusal(Duration::from_secs(3));
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
        assert_eq!(backlog.refused.get(), 1);
    }
}
