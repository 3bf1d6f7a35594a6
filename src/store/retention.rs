//! Retention: the background purge of what the Webhook Log no longer keeps, and the
//! `hookyard_store_rows` gauges.
//!
//! Every `retention.interval_secs` the task runs a purge: [`Store::purge`] deletes one batch
//! (at most `retention.batch_size` deliveries with their attempts, and as many events) in one
//! transaction and says whether more is left; the task pauses `retention.pause_ms` and asks
//! again until nothing is. Small transactions with pauses between them keep the purge from
//! holding the SQLite writer (or PostgreSQL row locks) for long: ingest and delivery go on
//! meanwhile, each waiting at most for one batch.
//!
//! What is purged (the cutoffs are `now - days`; a 0 keeps the kind forever):
//! - succeeded deliveries last changed before the `succeeded_days` cutoff, with their attempts;
//! - dead and skipped deliveries (refused inbound pushes included) last changed before the
//!   `failed_days` cutoff, with their attempts;
//! - events received before the `events_days` cutoff of which no delivery remains.
//!
//! Invariants: a pending delivery is never purged, so neither is its event; an attempt goes
//! with its delivery, never before; an event goes only with or after its last delivery.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::Store;
use crate::config::RetentionConfig;
use crate::model::{now_ms, Millis};

const DAY_MS: Millis = 86_400_000;

/// What one purge batch may delete: everything finished before these times (none: kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgePolicy {
    /// Succeeded deliveries last changed before this.
    pub succeeded_before: Option<Millis>,
    /// Dead and skipped deliveries last changed before this.
    pub failed_before: Option<Millis>,
    /// Events received before this, once none of their deliveries remain.
    pub events_before: Option<Millis>,
    /// Deliveries per batch, at most (and as many events).
    pub limit: usize,
}

impl PurgePolicy {
    /// The policy of `config` at `now`.
    pub fn at(config: &RetentionConfig, now: Millis) -> PurgePolicy {
        let cutoff = |days: u32| (days > 0).then(|| now - i64::from(days) * DAY_MS);
        PurgePolicy {
            succeeded_before: cutoff(config.succeeded_days),
            failed_before: cutoff(config.failed_days),
            events_before: cutoff(config.events_days),
            limit: config.batch_size.max(1),
        }
    }

    /// Whether the policy keeps everything.
    pub fn keeps_everything(&self) -> bool {
        self.succeeded_before.is_none()
            && self.failed_before.is_none()
            && self.events_before.is_none()
    }
}

/// What one purge batch deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    /// Deliveries.
    pub deliveries: u64,
    /// Their attempts.
    pub attempts: u64,
    /// Events.
    pub events: u64,
    /// The batch was full: more may be left.
    pub more: bool,
}

/// Rows of the Webhook Log's tables.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RowCounts {
    /// `events`.
    pub events: i64,
    /// `deliveries`.
    pub deliveries: i64,
    /// `attempts`.
    pub attempts: i64,
}

/// A label naming a table.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabel {
    /// `events`, `deliveries` or `attempts`.
    pub table: String,
}

/// The retention metrics.
#[derive(Default)]
pub struct RetentionMetrics {
    rows: Family<TableLabel, Gauge>,
    purged: Family<TableLabel, Counter>,
}

impl RetentionMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> RetentionMetrics {
        let metrics = RetentionMetrics::default();
        registry.register(
            "store_rows",
            "Rows in the Webhook Log's tables (SQLite: exact; PostgreSQL: the statistics' estimate)",
            metrics.rows.clone(),
        );
        registry.register(
            "retention_purged",
            "Rows deleted by the retention purge",
            metrics.purged.clone(),
        );
        metrics
    }

    /// Sets the `hookyard_store_rows` gauges from the store (cheap: see [`Store::row_counts`]).
    pub async fn observe_rows(&self, store: &dyn Store) {
        match store.row_counts().await {
            Ok(counts) => {
                for (table, n) in [
                    ("events", counts.events),
                    ("deliveries", counts.deliveries),
                    ("attempts", counts.attempts),
                ] {
                    self.rows.get_or_create(&label(table)).set(n);
                }
            }
            Err(e) => tracing::warn!(error = %e, "reading the store's row counts failed"),
        }
    }

    fn count(&self, purged: &Purged) {
        for (table, n) in [
            ("events", purged.events),
            ("deliveries", purged.deliveries),
            ("attempts", purged.attempts),
        ] {
            self.purged.get_or_create(&label(table)).inc_by(n);
        }
    }
}

fn label(table: &str) -> TableLabel {
    TableLabel {
        table: table.to_owned(),
    }
}

/// Purges until nothing past its time is left: one batch, a pause, the next. Returns the
/// total. Stops early (with what it did) when `stop` resolves or the store fails.
pub async fn purge_all(
    store: &dyn Store,
    config: &RetentionConfig,
    metrics: &RetentionMetrics,
    stop: &mut (impl Future<Output = ()> + Unpin),
) -> Purged {
    let mut total = Purged::default();
    let policy = PurgePolicy::at(config, now_ms());
    if policy.keeps_everything() {
        return total;
    }
    loop {
        let batch = match store.purge(&policy).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "a retention purge batch failed; trying again next time");
                return total;
            }
        };
        metrics.count(&batch);
        total.deliveries += batch.deliveries;
        total.attempts += batch.attempts;
        total.events += batch.events;
        if !batch.more {
            return total;
        }
        tokio::select! {
            _ = &mut *stop => return total,
            _ = tokio::time::sleep(Duration::from_millis(config.pause_ms)) => {}
        }
    }
}

/// The retention task: a purge every `interval_secs` until `stop` resolves.
pub async fn run(
    store: Arc<dyn Store>,
    config: RetentionConfig,
    metrics: Arc<RetentionMetrics>,
    stop: impl Future<Output = ()>,
) {
    let stop = std::pin::pin!(stop);
    let mut stop = stop;
    let every = Duration::from_secs(config.interval_secs.max(1));
    loop {
        let total = purge_all(store.as_ref(), &config, &metrics, &mut stop).await;
        if total != Purged::default() {
            tracing::info!(
                deliveries = total.deliveries,
                attempts = total.attempts,
                events = total.events,
                "retention purge done"
            );
        }
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_days_keep_forever() {
        let config = RetentionConfig {
            succeeded_days: 7,
            failed_days: 0,
            events_days: 30,
            interval_secs: 60,
            batch_size: 0,
            pause_ms: 0,
        };
        let now = 100 * DAY_MS;
        let policy = PurgePolicy::at(&config, now);
        assert_eq!(policy.succeeded_before, Some(93 * DAY_MS));
        assert_eq!(policy.failed_before, None);
        assert_eq!(policy.events_before, Some(70 * DAY_MS));
        assert_eq!(policy.limit, 1);
        assert!(!policy.keeps_everything());
    }
}
