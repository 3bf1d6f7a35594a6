//! Durable state: webhooks, events, the delivery queue and the Webhook Log.
//!
//! # The delivery queue
//!
//! Every delivery is one row. Its state machine:
//!
//! ```text
//!                 ingest (same transaction as its event)     ingest with a lease
//!                         |                                       (handed to its worker)
//!                         v                                        v
//!    +------------>   pending  --------- claim ---------> pending + lease(owner, until)
//!    |                 ^   ^                                   |        |
//!    | replay          |   +--- complete(RetryAt) / release ---+        | lease expires:
//!    |                 |                                                | claimable again
//!    |                 +------------------------------------------------+
//!    |                                                             |
//!  dead / succeeded / skipped  <---- complete(Dead | Succeeded | Skipped)
//! ```
//!
//! Invariants every implementation keeps:
//! - **Committed means durable.** `ingest` returns only after the event and all its deliveries
//!   are committed (fsync'd) in one transaction; either all of them exist or none do.
//! - **Idempotent ingest.** An event id is stored once; ingesting it again enqueues nothing and
//!   reports `duplicate`.
//! - **A lease at ingest is a claim.** An event ingested with a [`Lease`](crate::model::Lease)
//!   commits its deliveries already leased to that owner, exactly as if it had claimed them in the
//!   same transaction: nobody else claims them until the lease expires, and the owner completes
//!   them as claimed ones. A duplicate event leases nothing.
//! - **Claiming is exclusive while the lease lasts.** `claim` hands out only `pending` deliveries
//!   that are due (`next_attempt_at <= now`), whose webhook exists and is enabled, and that hold no
//!   unexpired lease; it sets `lease_owner` and `lease_until`. Two claimers never get the same
//!   delivery while its lease runs.
//! - **Fencing.** `complete` and `release` act only when the caller still holds the lease
//!   (`lease_owner` matches). A worker whose lease expired and was re-claimed elsewhere cannot
//!   overwrite the newer owner's result; its attempt is still logged.
//! - **At least once.** A worker that dies leaves its deliveries leased; when the lease expires
//!   they are claimable again. Nothing leaves `pending` except through `complete`.
//! - **Attempt numbers** increase by one per logged attempt across replays; `attempts` on the
//!   delivery counts attempts since creation or the last replay and is what `max_attempts` limits.
//!
//! The SQLite implementation serialises writes through one writer thread that commits many
//! callers' work in one transaction (group commit), so ingest is not bounded by one fsync per
//! event. The PostgreSQL implementation claims with `FOR UPDATE SKIP LOCKED` under the same rules.
//!
//! # Change notification
//!
//! Several gateway processes may share one PostgreSQL database, and each keeps webhooks and
//! plugins in memory. Every committed webhook insert, update (including the gateway disabling a
//! webhook after a 410), delete, every new plugin version and every activation is announced to
//! [`Store::subscribe`] receivers, of this process and (PostgreSQL) of every other process on the
//! same schema. A notice says only *what kind* of thing changed; receivers reload it. Notices may
//! repeat, and a receiver that lags behind gets `RecvError::Lagged`, which it must treat as
//! "everything changed".

use std::sync::Arc;

use async_trait::async_trait;

use crate::model::{
    Attempt, Completion, Delivery, DeliveryFilter, Event, EventToIngest, IngestResult, Job,
    LoggedDelivery, Millis, Page, QueueStats, Webhook,
};

mod batch;
#[macro_use]
mod encode;
#[cfg(test)]
#[macro_use]
mod conformance;
pub mod event_types;
pub mod postgres;
pub mod postgres_tls;
pub mod retention;
pub mod sources;
pub mod sqlite;

pub(crate) use encode::search_terms;
pub use event_types::{StoredEventType, TypeSeen};
pub use retention::{PurgePolicy, Purged, RowCounts};
pub use sources::StoredSource;

/// Page size of the Webhook Log when the filter gives none.
pub(crate) const DEFAULT_PAGE: usize = 100;
/// Largest page of the Webhook Log.
pub(crate) const MAX_PAGE: usize = 1000;
/// Capacity of the change broadcast; a receiver further behind than this sees `Lagged`.
pub(crate) const CHANGE_CAPACITY: usize = 64;

/// Opens the store a URL names: `sqlite:...` (see [`sqlite::SqliteStore::open_url`]) or
/// `postgres://...` / `postgresql://...` (see [`postgres::PostgresStore::open`]). Schema
/// migrations run before it returns.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let scheme = url.split_once(':').map(|(scheme, _)| scheme);
    match scheme {
        Some("postgres" | "postgresql") => Ok(Arc::new(postgres::PostgresStore::open(url).await?)),
        Some("sqlite") => {
            let url = url.to_owned();
            // Opening a file and migrating it blocks.
            let store = tokio::task::spawn_blocking(move || sqlite::SqliteStore::open_url(&url))
                .await
                .map_err(|e| {
                    Error::Unavailable(format!("opening the SQLite store failed: {e}"))
                })??;
            Ok(Arc::new(store))
        }
        // Only the scheme is shown: the rest of a URL may hold a password.
        _ => Err(Error::Database(format!(
            "unsupported store URL scheme {:?}: expected sqlite:, postgres:// or postgresql://",
            scheme.unwrap_or("")
        ))),
    }
}

/// What kind of record changed; see "Change notification" above.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreChange {
    /// A webhook was inserted, updated, disabled or deleted.
    Webhooks,
    /// A plugin version was added or a version was activated.
    Plugins,
    /// An event type of the catalog was inserted, updated or deleted.
    EventTypes,
}

impl StoreChange {
    /// The name used as the PostgreSQL notification payload.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreChange::Webhooks => "webhooks",
            StoreChange::Plugins => "plugins",
            StoreChange::EventTypes => "event_types",
        }
    }

    /// Parses [`StoreChange::as_str`].
    pub fn parse(s: &str) -> Option<StoreChange> {
        match s {
            "webhooks" => Some(StoreChange::Webhooks),
            "plugins" => Some(StoreChange::Plugins),
            "event_types" => Some(StoreChange::EventTypes),
            _ => None,
        }
    }
}

/// Errors of a store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A unique name is taken.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The database failed.
    #[error("database error: {0}")]
    Database(String),
    /// The store is shutting down or its writer is gone.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be decoded.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    /// A stored secret cannot be decrypted with the configured keys (names the webhook).
    #[error("secret: {0}")]
    Secret(String),
}

/// Rewrites one stored webhook in place (see [`Store::rewrite_webhooks`]); true when it changed
/// it. Only the spec's secret fields may change: the name, `enabled` and timestamps are kept.
pub type WebhookRewrite = Arc<dyn Fn(&mut Webhook) -> Result<bool> + Send + Sync>;

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a worker asks for when it claims work.
#[derive(Debug, Clone)]
pub struct ClaimRequest {
    /// The claiming worker (process) id, recorded as the lease owner.
    pub owner: String,
    /// The current time.
    pub now: Millis,
    /// How long the lease lasts.
    pub lease_ms: i64,
    /// At most this many deliveries.
    pub limit: usize,
    /// Skip deliveries of these webhooks (they are at their concurrency limit here).
    pub exclude_webhooks: Vec<String>,
}

/// The storage interface. Implementations: [`sqlite::SqliteStore`], [`postgres::PostgresStore`].
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Inserts a new webhook. A taken name is [`Error::Conflict`].
    async fn insert_webhook(&self, hook: &Webhook) -> Result<()>;
    /// Replaces a webhook by id. Returns false when there is none. A taken name is
    /// [`Error::Conflict`].
    async fn update_webhook(&self, hook: &Webhook) -> Result<bool>;
    /// Deletes a webhook by id; its pending deliveries become `dead` ("webhook deleted").
    /// Returns false when there is none.
    async fn delete_webhook(&self, id: &str) -> Result<bool>;
    /// A webhook by id or, failing that, by name.
    async fn webhook(&self, id_or_name: &str) -> Result<Option<Webhook>>;
    /// All webhooks, in creation order.
    async fn webhooks(&self) -> Result<Vec<Webhook>>;
    /// Applies `rewrite` to every stored webhook's spec, as stored, and writes back those it
    /// changed, in one transaction that holds the rows locked: processes doing the same at once
    /// take turns, and a concurrent update is neither lost nor overwritten. An error from
    /// `rewrite` rolls everything back. Returns how many changed. Used by
    /// [`crate::secrets::store::SecretStore::reencrypt_all`].
    ///
    /// The default reads, then updates one by one: correct only without concurrent writers
    /// (test stores); both real backends override it.
    async fn rewrite_webhooks(&self, rewrite: WebhookRewrite) -> Result<usize> {
        let mut changed = 0;
        for mut hook in self.webhooks().await? {
            if rewrite(&mut hook)? && self.update_webhook(&hook).await? {
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// Commits events and their deliveries (see the invariants above). Results are in input
    /// order. An id repeated within one call is a duplicate of its first occurrence.
    async fn ingest(&self, events: Vec<EventToIngest>) -> Result<Vec<IngestResult>>;
    /// An event by id.
    async fn event(&self, id: &str) -> Result<Option<Event>>;

    /// Leases due deliveries to a worker, oldest due first.
    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Job>>;
    /// Gives leased deliveries back without an attempt (e.g. their webhook is saturated here).
    async fn release(&self, owner: &str, delivery_ids: &[String]) -> Result<()>;
    /// Logs an attempt and moves its delivery on, and commits its follow-up events (write-backs)
    /// in the same transaction. Returns false when `owner` no longer held the lease: the attempt
    /// is logged but the delivery is left to its new owner and the follow-ups are dropped.
    async fn complete(&self, owner: &str, completion: Completion) -> Result<bool>;

    /// The Webhook Log, newest first.
    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Page<Delivery>>;
    /// One delivery with every attempt, oldest attempt first.
    async fn delivery(&self, id: &str) -> Result<Option<(Delivery, Vec<Attempt>)>>;
    /// Makes a finished delivery pending again, due now, with a fresh attempt budget. A pending
    /// delivery is made due now. Returns the delivery, none when unknown.
    async fn replay_delivery(&self, id: &str, now: Millis) -> Result<Option<Delivery>>;
    /// Replays every `dead` delivery of a webhook; returns how many.
    async fn replay_dead(&self, webhook_id: &str, now: Millis) -> Result<u64>;
    /// Writes a finished delivery with its event and attempts in one transaction (a refused
    /// inbound push). Nothing ever claims it; replay refuses it.
    async fn log_delivery(&self, entry: LoggedDelivery) -> Result<()>;
    /// Deletes one batch of what `policy` says is past its time, in one short transaction:
    /// finished deliveries with their attempts, then events none of whose deliveries remain.
    /// Pending deliveries and their events are never touched. See [`retention`].
    async fn purge(&self, policy: &PurgePolicy) -> Result<Purged>;
    /// How many rows the log's tables hold: exact counts kept up to date (SQLite) or the
    /// database's own estimates (PostgreSQL); never a count over a table.
    async fn row_counts(&self) -> Result<RowCounts>;
    /// Queue depth and age, for `/metrics`. `pending` counts every pending delivery; `due` and the
    /// oldest due age count only those a worker may claim (their webhook exists and is enabled),
    /// so a paused webhook's backlog does not look like a stuck queue.
    async fn queue_stats(&self, now: Millis) -> Result<QueueStats>;

    /// The `due` of [`Store::queue_stats`], counted no further than `at_most`: the ingest
    /// back-pressure's frequent check, whose cost must not grow with a backlog past its bound
    /// (nor with the deliveries waiting for a retry).
    async fn due_count(&self, now: Millis, at_most: u64) -> Result<u64> {
        Ok(self.queue_stats(now).await?.due.min(at_most))
    }

    /// Stores a plugin version: the next version number of `name`, or the existing version when
    /// the same content (sha256) was uploaded before under that name.
    async fn add_plugin_version(
        &self,
        name: &str,
        sha256: &str,
        wasm: Vec<u8>,
        now: Millis,
    ) -> Result<PluginVersion>;
    /// Every plugin with its versions (without their bytes) and active version.
    async fn plugins(&self) -> Result<Vec<PluginRecord>>;
    /// The bytes of one plugin version.
    async fn plugin_wasm(&self, name: &str, version: u32) -> Result<Option<Vec<u8>>>;
    /// Makes `version` the active version of `name`. False when there is no such version.
    async fn set_active_plugin(&self, name: &str, version: u32) -> Result<bool>;

    /// Records that the inbound message `message_id` was seen for `scope` (a webhook id) and
    /// keeps the record until `until`. Returns false when it was already recorded and has not
    /// expired at `now` (a replay); a record with `until <= now` counts as expired. Shared by
    /// every process on the same database. Expired records may be purged along the way.
    async fn remember_message(
        &self,
        scope: &str,
        message_id: &str,
        until: Millis,
        now: Millis,
    ) -> Result<bool>;

    /// Every message-bus source, oldest first (see [`sources`]).
    async fn sources(&self) -> Result<Vec<StoredSource>>;
    /// Inserts a source. A taken name is [`Error::Conflict`].
    async fn insert_source(&self, source: &StoredSource) -> Result<()>;
    /// Replaces a source's spec and pause state by name. False when there is none.
    async fn update_source(&self, source: &StoredSource) -> Result<bool>;
    /// Deletes a source by name. False when there is none.
    async fn delete_source(&self, name: &str) -> Result<bool>;

    /// Every shared connection, by name (see [`crate::connections`]).
    async fn connections(&self) -> Result<Vec<crate::connections::Connection>>;
    /// A connection by name.
    async fn connection(&self, name: &str) -> Result<Option<crate::connections::Connection>>;
    /// Inserts a connection. A taken name is [`Error::Conflict`]. Sends a `Webhooks` notice.
    async fn insert_connection(&self, connection: &crate::connections::Connection) -> Result<()>;
    /// Replaces a connection's spec by name (the webhooks on it send the new credentials from
    /// their next attempt). False when there is none. Sends a `Webhooks` notice.
    async fn update_connection(&self, connection: &crate::connections::Connection) -> Result<bool>;
    /// Deletes a connection by name, unless a webhook names it (checked in the same
    /// transaction: [`crate::connections::Deletion::InUse`] lists them).
    async fn delete_connection(&self, name: &str) -> Result<crate::connections::Deletion>;
    /// Every event type of the catalog, by name (see [`event_types`]).
    async fn event_types(&self) -> Result<Vec<StoredEventType>>;
    /// Inserts an event type. A taken name is [`Error::Conflict`].
    async fn insert_event_type(&self, event_type: &StoredEventType) -> Result<()>;
    /// Replaces an event type's spec by name. False when there is none.
    async fn update_event_type(&self, event_type: &StoredEventType) -> Result<bool>;
    /// Deletes an event type by name. False when there is none.
    async fn delete_event_type(&self, name: &str) -> Result<bool>;
    /// Adds counts of events ingested with types the catalog does not list: each type's count
    /// is added to its total, and its last sighting is the later of the stored one and this.
    /// Adds from several processes at once all count.
    async fn count_uncataloged(&self, seen: &[TypeSeen]) -> Result<()>;
    /// Every type counted by [`Store::count_uncataloged`], by name, with its totals.
    async fn uncataloged(&self) -> Result<Vec<TypeSeen>>;

    /// Notices of committed webhook and plugin changes, from this process and (PostgreSQL) every
    /// other process on the same database schema. See "Change notification" above.
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoreChange>;
}

/// One uploaded version of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PluginVersion {
    /// Plugin name.
    pub name: String,
    /// 1, 2, ... per name.
    pub version: u32,
    /// Hex sha256 of the component bytes.
    pub sha256: String,
    /// Size of the component in bytes.
    pub size: u64,
    /// Upload time (Unix ms).
    #[schema(value_type = i64)]
    pub created_at: Millis,
}

/// A plugin: its versions and which one is active.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct PluginRecord {
    /// Plugin name.
    pub name: String,
    /// The version webhooks that do not pin one use.
    pub active: Option<u32>,
    /// Every version, oldest first.
    pub versions: Vec<PluginVersion>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread")]
    async fn open_picks_the_backend_by_scheme() {
        let store = open("sqlite::memory:").await.expect("sqlite in memory");
        assert!(store.webhooks().await.expect("list").is_empty());

        for url in ["mysql://localhost/db", "postgre://x", "", "hookyard.db"] {
            let refused = open(url).await;
            assert!(matches!(refused, Err(Error::Database(_))), "{url}");
        }
        match open("mysql://user:secret@host/db").await {
            Err(e) => assert!(!e.to_string().contains("secret"), "{e}"),
            Ok(_) => panic!("mysql is not a store"),
        }

        let Some(schema) = postgres::test_support::TestSchema::create().await else {
            return;
        };
        let store = open(&schema.url).await.expect("postgres://");
        store
            .insert_webhook(&conformance::webhook("hook"))
            .await
            .expect("insert webhook");
        let alias = schema.url.replacen("postgres://", "postgresql://", 1);
        let store = open(&alias).await.expect("postgresql://");
        assert_eq!(store.webhooks().await.expect("list").len(), 1);
    }
}
