//! PostgreSQL store: a pool of connections, one transaction per operation, shared by any number
//! of gateway processes.
//!
//! Where the SQLite store serialises everything through one writer, here every call takes a
//! pooled connection and runs its own transaction; the database does the isolation:
//! - `claim` is one statement: the oldest due deliveries are selected `FOR UPDATE SKIP LOCKED`
//!   and leased in the same `UPDATE`, so concurrent claimers (in this process or another) skip
//!   each other's rows instead of waiting or double-claiming.
//! - `complete` locks its delivery row first (`FOR UPDATE`), so completions of one delivery are
//!   serialised and the lease owner it checks is the committed one (fencing).
//! - Ingest inserts a whole call's events and deliveries with one multi-row statement each
//!   (`UNNEST` of arrays); a repeated event id hits `ON CONFLICT DO NOTHING`.
//! - Plugin versions of one name are numbered under a row lock on `plugins`, so concurrent
//!   uploads get distinct numbers.
//!
//! Layout choices:
//! - The schema mirrors SQLite's: timestamps are `BIGINT` [`Millis`]; specs, payloads and headers
//!   are JSON *text* (not `JSONB`), so what is read back is byte for byte what was written and
//!   decodes exactly as in SQLite; component bytes are `BYTEA`.
//! - Ids and names are `COLLATE "C"`: the log pages and claim orders by id in byte order, as
//!   SQLite does, whatever the database's collation.
//! - The queue index is partial (`WHERE status = 'pending'`) on `(next_attempt_at, id)`, the
//!   order claim takes; excluded and disabled webhooks are filtered while walking it.
//!
//! Migrations run at start-up in one transaction that first takes a transaction-level advisory
//! lock, so processes starting together apply them once; `hookyard_schema` holds the version.
//!
//! Change notices (see the `store` module) are `NOTIFY`s sent inside the transaction that made
//! the change, so they go out exactly when it commits. A background task holds one extra
//! connection that `LISTEN`s and forwards notices to [`Store::subscribe`] receivers: this
//! process's own changes arrive the same way as other processes'. When that connection drops,
//! the task reconnects with a short backoff and then announces both kinds of change, since
//! notices sent meanwhile are lost. The channel is `hookyard_changes` in the `public` schema and
//! `hookyard_changes_<schema>` otherwise, because notifications are database-wide and
//! deployments in different schemas must not wake each other.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use sha2::{Digest, Sha256};
use tokio::sync::{broadcast, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{FromSql, ToSql};
use tokio_postgres::{AsyncMessage, Config, Row};
use tokio_postgres_rustls::MakeRustlsConnect;

mod connections;
mod event_types;
mod log;
mod sources;

use super::batch::{Batch, Batcher};
use super::encode::{
    encode_events, outcome_str, to_json, Arg, Dialect, EncodedAttempt, EncodedCompletion,
    EncodedEvent, LogQuery, PURGE_EVERY,
};
use super::postgres_tls;
use super::{
    ClaimRequest, Error, PluginRecord, PluginVersion, Result, Store, StoreChange, CHANGE_CAPACITY,
};
use crate::model::{
    now_ms, Attempt, AttemptOutcome, Completion, Delivery, DeliveryFilter, DeliveryStatus, Event,
    EventToIngest, IngestResult, Job, Millis, Next, Page, QueueStats, RequestLog, Webhook,
    WebhookSpec,
};

/// Connections in the pool unless the caller asks for another size.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Transactions of ingests (and, apart, of completions) committing at once; each takes whatever
/// callers queued meanwhile (group commit, see [`super::batch`]).
const COMMITTERS: usize = 4;
/// Callers sharing one transaction, at most.
const MAX_CALLS_PER_COMMIT: usize = 128;
/// How long connecting may take when the URL sets no `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const POOL_WAIT: Duration = Duration::from_secs(30);
/// Key of the advisory lock migrations hold ("hookyard" in ASCII).
const MIGRATION_LOCK: i64 = 0x686f_6f6b_7961_7264;
/// Notification channel in the `public` schema; other schemas append their name.
const CHANNEL: &str = "hookyard_changes";
/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;
/// First and longest wait before the listener reconnects.
const LISTEN_BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Schema migrations; `hookyard_schema.version` is how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE webhooks (
    id         TEXT COLLATE "C" PRIMARY KEY,
    name       TEXT COLLATE "C" NOT NULL UNIQUE,
    enabled    BOOLEAN NOT NULL,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- Insertion order, the tie-break of `webhooks()` (SQLite uses its rowid).
    seq        BIGINT GENERATED ALWAYS AS IDENTITY
);

CREATE TABLE events (
    id          TEXT COLLATE "C" PRIMARY KEY,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    context     TEXT NOT NULL,
    occurred_at BIGINT NOT NULL,
    received_at BIGINT NOT NULL
);

CREATE TABLE deliveries (
    id              TEXT COLLATE "C" PRIMARY KEY,
    event_id        TEXT COLLATE "C" NOT NULL REFERENCES events (id),
    webhook_id      TEXT COLLATE "C" NOT NULL,
    event_type      TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'succeeded', 'dead', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    total_attempts  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,
    lease_owner     TEXT,
    lease_until     BIGINT,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- The queue: claim (oldest due first) and queue_stats.
CREATE INDEX deliveries_queue ON deliveries (next_attempt_at, id) WHERE status = 'pending';
-- The Webhook Log, newest first, by webhook and optionally status.
CREATE INDEX deliveries_log ON deliveries (webhook_id, status, id DESC);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id DESC);
-- Duplicate ingests count an event's deliveries; the log filters by event.
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE attempts (
    delivery_id      TEXT COLLATE "C" NOT NULL REFERENCES deliveries (id),
    attempt_no       INTEGER NOT NULL,
    started_at       BIGINT NOT NULL,
    duration_ms      BIGINT NOT NULL,
    request          TEXT,
    response_status  INTEGER,
    response_headers TEXT NOT NULL,
    response_body    TEXT,
    error            TEXT,
    outcome          TEXT NOT NULL,
    PRIMARY KEY (delivery_id, attempt_no)
);
"#,
    r#"
CREATE TABLE plugin_versions (
    name       TEXT COLLATE "C" NOT NULL,
    version    INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    size       BIGINT NOT NULL,
    wasm       BYTEA NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, sha256)
);

CREATE TABLE plugins (
    name   TEXT COLLATE "C" PRIMARY KEY,
    active INTEGER
);
"#,
    r#"
-- Inbound message ids already accepted, per webhook (replay protection).
CREATE TABLE inbound_messages (
    scope      TEXT COLLATE "C" NOT NULL,
    message_id TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (scope, message_id)
);
CREATE INDEX inbound_messages_expiry ON inbound_messages (expires_at);
"#,
    r#"
-- Message-bus sources (src/source/): spec as JSON, pause state apart.
CREATE TABLE sources (
    name       TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT NOT NULL,
    paused     BOOLEAN NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
    log::MIGRATION,
    r#"
-- migration for shared connections (src/connections.rs): spec as JSON, secrets sealed.
CREATE TABLE connections (
    name       TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
"#,
    r#"
-- migration for the event catalog (src/catalog/): spec as JSON; and the events ingested with a
-- type the catalog does not list, counted per type.
CREATE TABLE event_types (
    name       TEXT COLLATE "C" PRIMARY KEY,
    spec       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE TABLE uncataloged_event_types (
    name      TEXT COLLATE "C" PRIMARY KEY,
    count     BIGINT NOT NULL,
    last_seen BIGINT NOT NULL
);
"#,
];

/// Everything PostgreSQL reports is [`Error::Database`], except a closed connection, which is
/// [`Error::Unavailable`].
impl From<tokio_postgres::Error> for Error {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.is_closed() {
            Error::Unavailable(format!("PostgreSQL connection closed: {}", describe(&e)))
        } else {
            Error::Database(describe(&e))
        }
    }
}

impl From<PoolError> for Error {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => {
                Error::Unavailable(format!("cannot connect to PostgreSQL: {}", describe(&e)))
            }
            other => Error::Unavailable(format!("no PostgreSQL connection: {other}")),
        }
    }
}

/// The server's message, or the underlying cause (`Display` of the error alone says only
/// "db error" or "error connecting to server").
fn describe(e: &tokio_postgres::Error) -> String {
    match (e.as_db_error(), std::error::Error::source(e)) {
        (Some(db), _) => format!("{}: {}", db.code().code(), db.message()),
        (None, Some(cause)) => format!("{e}: {cause}"),
        (None, None) => e.to_string(),
    }
}

/// The [`Store`] backed by a PostgreSQL database (one schema of it).
///
/// Cheap to share behind an `Arc`. Dropping it stops its listener; pooled connections close
/// when the last in-flight call returns them.
pub struct PostgresStore {
    pool: Pool,
    /// Ingests of concurrent callers, committed together.
    ingests: Batcher<Ingests>,
    /// Completions of concurrent callers, committed together.
    completions: Batcher<Completions>,
    /// Where change notices go, in this database.
    channel: String,
    /// Change notices received by the listener.
    changes: broadcast::Sender<StoreChange>,
    /// The listener task, aborted on drop.
    listener: tokio::task::JoinHandle<()>,
    /// Backend pid of the listener's connection (0 while reconnecting), for tests.
    listener_pid: Arc<AtomicI32>,
    /// Calls of `remember_message`, to purge expired ids now and then.
    remembered: AtomicU64,
    /// Host, database and schema, for `Debug` (never the password).
    location: String,
    /// Where the retention purge's sweep of events without deliveries goes on from.
    purge_cursor: std::sync::Mutex<Option<(Millis, String)>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        self.listener.abort();
        self.pool.close();
    }
}

impl PostgresStore {
    /// Connects to the database a `postgres://` or `postgresql://` URL names (a key=value
    /// connection string works too), with [`DEFAULT_POOL_SIZE`] connections, brings its schema
    /// up to date and starts listening for changes. A schema other than `public` is chosen with
    /// `options=-c%20search_path%3Dname` in the URL; it must exist.
    pub async fn open(url: &str) -> Result<PostgresStore> {
        Self::open_with_pool_size(url, DEFAULT_POOL_SIZE).await
    }

    /// [`PostgresStore::open`] with `pool_size` pooled connections (plus one for the listener).
    pub async fn open_with_pool_size(url: &str, pool_size: usize) -> Result<PostgresStore> {
        // No parser message echoes the URL (which may hold a password).
        let postgres_tls::Connection {
            mut config, tls, ..
        } = postgres_tls::connection(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("hookyard");
        }
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(|e| Error::Database(format!("cannot build the connection pool: {e}")))?;

        let schema = {
            let mut client = pool.get().await?;
            migrate(&mut client).await?
        };
        let channel = channel_for(&schema);
        let location = format!(
            "{}/{}?schema={schema}",
            hosts(&config),
            config.get_dbname().unwrap_or_default()
        );

        let mut listen_config = config;
        listen_config
            .application_name("hookyard-listener")
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        let (changes, _) = broadcast::channel(CHANGE_CAPACITY);
        let listener_pid = Arc::new(AtomicI32::new(0));
        let (ready_tx, ready) = oneshot::channel();
        let listener = tokio::spawn(listen(
            listen_config,
            tls,
            channel.clone(),
            changes.clone(),
            listener_pid.clone(),
            ready_tx,
        ));
        let started = ready
            .await
            .unwrap_or_else(|_| Err(Error::Unavailable("the listener task ended".to_owned())));
        if let Err(e) = started {
            listener.abort();
            return Err(e);
        }
        Ok(PostgresStore {
            ingests: Batcher::start(
                Ingests { pool: pool.clone() },
                COMMITTERS,
                MAX_CALLS_PER_COMMIT,
            ),
            completions: Batcher::start(
                Completions {
                    pool: pool.clone(),
                    channel: channel.clone(),
                },
                COMMITTERS,
                MAX_CALLS_PER_COMMIT,
            ),
            pool,
            channel,
            changes,
            listener,
            listener_pid,
            remembered: AtomicU64::new(0),
            location,
            purge_cursor: std::sync::Mutex::new(None),
        })
    }

    /// Whether the change listener is connected right now (false while it reconnects, when
    /// other processes' changes may be missed until it is back).
    pub fn listening(&self) -> bool {
        self.listener_pid.load(Ordering::SeqCst) != 0
    }

    /// Backend pid of the listening connection, 0 while it reconnects (tests terminate it).
    #[cfg(test)]
    fn listener_pid(&self) -> i32 {
        self.listener_pid.load(Ordering::SeqCst)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        Ok(self.pool.get().await?)
    }
}

/// `host:port` of each configured host, for `Debug` and logs.
fn hosts(config: &Config) -> String {
    let ports = config.get_ports();
    config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let host = match host {
                tokio_postgres::config::Host::Tcp(name) => name.clone(),
                tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
            };
            match ports.get(i).or(ports.first()) {
                Some(port) => format!("{host}:{port}"),
                None => host,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The notification channel of a schema: readable when it fits, hashed when it would not.
fn channel_for(schema: &str) -> String {
    if schema == "public" {
        return CHANNEL.to_owned();
    }
    let named = format!("{CHANNEL}_{schema}");
    if named.len() <= MAX_IDENTIFIER {
        return named;
    }
    let digest = Sha256::digest(schema.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("{CHANNEL}_{hex}")
}

/// `name` as a quoted SQL identifier.
fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Runs the migrations this schema has not seen yet, in one transaction under an advisory lock
/// (concurrent starters wait, then find nothing left to do). Returns the schema's name.
async fn migrate(client: &mut deadpool_postgres::Object) -> Result<String> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let schema: Option<String> = get(&tx.query_one("SELECT current_schema()", &[]).await?, 0)?;
    let schema = schema.ok_or_else(|| {
        Error::Database(
            "no schema of the search_path exists: create it or fix options=-c search_path=..."
                .to_owned(),
        )
    })?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS hookyard_schema (
             one     BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one),
             version INTEGER NOT NULL
         );
         INSERT INTO hookyard_schema (version) VALUES (0) ON CONFLICT DO NOTHING;",
    )
    .await?;
    let version: i32 = get(
        &tx.query_one("SELECT version FROM hookyard_schema", &[])
            .await?,
        0,
    )?;
    let known = MIGRATIONS.len();
    let version = usize::try_from(version)
        .map_err(|_| Error::Corrupt(format!("negative schema version {version}")))?;
    if version > known {
        return Err(Error::Database(format!(
            "the database schema is version {version}, newer than this build knows ({known})"
        )));
    }
    for sql in &MIGRATIONS[version..] {
        tx.batch_execute(sql).await?;
    }
    if version < known {
        let known = i32::try_from(known).unwrap_or(i32::MAX);
        tx.execute("UPDATE hookyard_schema SET version = $1", &[&known])
            .await?;
    }
    tx.commit().await?;
    Ok(schema)
}

/// The listener task: keeps one connection LISTENing on `channel` and forwards notices to
/// `changes`. Answers `ready` once the first LISTEN is in place (or failed); later drops are
/// retried forever with a backoff, and each reconnect announces both kinds of change.
async fn listen(
    config: Config,
    tls: MakeRustlsConnect,
    channel: String,
    changes: broadcast::Sender<StoreChange>,
    pid: Arc<AtomicI32>,
    ready: oneshot::Sender<Result<()>>,
) {
    let mut ready = Some(ready);
    let mut backoff = LISTEN_BACKOFF.0;
    loop {
        let mut listened = false;
        let result = listen_once(&config, &tls, &channel, &changes, &pid, || {
            listened = true;
            match ready.take() {
                Some(ready) => {
                    let _ = ready.send(Ok(()));
                }
                None => {
                    tracing::info!(channel = %channel, "change listener reconnected");
                    let _ = changes.send(StoreChange::Webhooks);
                    let _ = changes.send(StoreChange::Plugins);
                    let _ = changes.send(StoreChange::EventTypes);
                }
            }
        })
        .await;
        pid.store(0, Ordering::SeqCst);
        let error = match result {
            Ok(()) => "the connection closed".to_owned(),
            Err(e) => e.to_string(),
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(Error::Unavailable(format!(
                "cannot listen for changes: {error}"
            ))));
            return;
        }
        if listened {
            backoff = LISTEN_BACKOFF.0;
        }
        tracing::warn!(channel = %channel, error = %error, retry_in_ms = backoff.as_millis() as u64,
            "change listener lost its connection");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(LISTEN_BACKOFF.1);
    }
}

/// One listening connection, until it drops. Calls `on_listening` once LISTEN is in place.
async fn listen_once(
    config: &Config,
    tls: &MakeRustlsConnect,
    channel: &str,
    changes: &broadcast::Sender<StoreChange>,
    pid: &AtomicI32,
    on_listening: impl FnOnce(),
) -> Result<()> {
    let (client, mut connection) = config.connect(tls.clone()).await?;
    // The connection only makes progress while polled, so it is pumped alongside the setup.
    let pump = async {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => match StoreChange::parse(n.payload()) {
                    Some(change) => {
                        let _ = changes.send(change);
                    }
                    None => tracing::debug!(payload = n.payload(), "unknown change notice"),
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(Error::from(e)),
                None => return Ok(()),
            }
        }
    };
    tokio::pin!(pump);
    let setup = async {
        client
            .batch_execute(&format!("LISTEN {}", quote_ident(channel)))
            .await?;
        let row = client.query_one("SELECT pg_backend_pid()", &[]).await?;
        get::<i32>(&row, 0)
    };
    let backend = tokio::select! {
        backend = setup => backend?,
        ended = &mut pump => {
            ended?;
            return Err(Error::Unavailable("the connection closed before LISTEN".to_owned()));
        }
    };
    pid.store(backend, Ordering::SeqCst);
    on_listening();
    let ended = pump.await;
    drop(client);
    ended
}

/// Column `i`, a decoding failure being [`Error::Corrupt`].
fn get<'a, T: FromSql<'a>>(row: &'a Row, i: usize) -> Result<T> {
    row.try_get(i)
        .map_err(|e| Error::Corrupt(format!("column {i}: {e}")))
}

fn get_u32(row: &Row, i: usize) -> Result<u32> {
    let v: i32 = get(row, i)?;
    u32::try_from(v).map_err(|_| Error::Corrupt(format!("column {i}: {v} is negative")))
}

fn get_u64(row: &Row, i: usize) -> Result<u64> {
    let v: i64 = get(row, i)?;
    u64::try_from(v).map_err(|_| Error::Corrupt(format!("column {i}: {v} is negative")))
}

fn get_opt_u16(row: &Row, i: usize) -> Result<Option<u16>> {
    let v: Option<i32> = get(row, i)?;
    v.map(|v| u16::try_from(v).map_err(|_| Error::Corrupt(format!("column {i}: {v} is no u16"))))
        .transpose()
}

fn get_json<T: serde::de::DeserializeOwned>(row: &Row, i: usize) -> Result<T> {
    let text: &str = get(row, i)?;
    serde_json::from_str(text).map_err(|e| Error::Corrupt(format!("column {i}: {e}")))
}

/// A delivery from the [`delivery_cols`] starting at column `at` (`total_attempts` last).
fn delivery_row(row: &Row, at: usize) -> Result<Delivery> {
    let status: &str = get(row, at + 4)?;
    let status = DeliveryStatus::parse(status)
        .ok_or_else(|| Error::Corrupt(format!("unknown delivery status {status:?}")))?;
    Ok(Delivery {
        id: get(row, at)?,
        event_id: get(row, at + 1)?,
        event_type: get(row, at + 2)?,
        webhook_id: get(row, at + 3)?,
        status,
        attempts: get_u32(row, at + 13)?,
        attempts_since_replay: get_u32(row, at + 5)?,
        next_attempt_at: get(row, at + 6)?,
        last_status: get_opt_u16(row, at + 7)?,
        last_error: get(row, at + 8)?,
        created_at: get(row, at + 9)?,
        updated_at: get(row, at + 10)?,
        source: log::source_column(row, at + 11)?,
        origin: get(row, at + 12)?,
    })
}

fn webhook_row(row: &Row) -> Result<Webhook> {
    let mut spec: WebhookSpec = get_json(row, 1)?;
    // The column is what claim filters on; the spec agrees with it unless edited by hand.
    spec.enabled = get(row, 2)?;
    Ok(Webhook {
        id: get(row, 0)?,
        spec,
        created_at: get(row, 3)?,
        updated_at: get(row, 4)?,
    })
}

/// An event from the [`event_cols`] starting at column `at`.
fn event_row(row: &Row, at: usize) -> Result<Event> {
    Ok(Event {
        id: get(row, at)?,
        event_type: get(row, at + 1)?,
        data: get_json(row, at + 2)?,
        context: get_json(row, at + 3)?,
        occurred_at: get(row, at + 4)?,
        received_at: get(row, at + 5)?,
    })
}

fn attempt_row(row: &Row) -> Result<Attempt> {
    let outcome = match get::<&str>(row, 9)? {
        "succeeded" => AttemptOutcome::Succeeded,
        "retry" => AttemptOutcome::Retry,
        "dead" => AttemptOutcome::Dead,
        "skipped" => AttemptOutcome::Skipped,
        other => return Err(Error::Corrupt(format!("unknown outcome {other:?}"))),
    };
    let request: Option<&str> = get(row, 4)?;
    let request = request
        .map(serde_json::from_str::<RequestLog>)
        .transpose()
        .map_err(|e| Error::Corrupt(format!("attempt request: {e}")))?;
    Ok(Attempt {
        delivery_id: get(row, 0)?,
        attempt_no: get_u32(row, 1)?,
        started_at: get(row, 2)?,
        duration_ms: get_u64(row, 3)?,
        request,
        response_status: get_opt_u16(row, 5)?,
        response_headers: get_json(row, 6)?,
        response_body: get(row, 7)?,
        error: get(row, 8)?,
        outcome,
        plugin: log::plugin_columns(row, 10)?,
    })
}

/// Maps a uniqueness violation on `webhooks` to [`Error::Conflict`].
fn webhook_write_error(e: tokio_postgres::Error, hook: &Webhook) -> Error {
    if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
        match e.as_db_error().and_then(|db| db.constraint()) {
            Some("webhooks_name_key") => {
                return Error::Conflict(format!("a webhook named {:?} exists", hook.spec.name))
            }
            Some("webhooks_pkey") => {
                return Error::Conflict(format!("a webhook with id {:?} exists", hook.id))
            }
            _ => {}
        }
    }
    e.into()
}

/// Sends a change notice when (and only if) the transaction commits.
async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    channel: &str,
    change: StoreChange,
) -> Result<()> {
    let stmt = tx.prepare_cached("SELECT pg_notify($1, $2)").await?;
    tx.execute(&stmt, &[&channel, &change.as_str()]).await?;
    Ok(())
}

/// Ingests `events` inside `tx` with three statements whatever their number: insert the events,
/// insert the new ones' deliveries, count the duplicates' deliveries.
async fn ingest_in(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[&EncodedEvent],
) -> Result<Vec<IngestResult>> {
    // The first occurrence of an id is the one stored; the rest are its duplicates.
    let mut first: HashMap<&str, usize> = HashMap::with_capacity(events.len());
    for (i, e) in events.iter().enumerate() {
        first.entry(e.event.id.as_str()).or_insert(i);
    }
    // Inserting in id order makes concurrent ingests of overlapping ids wait on each other
    // instead of deadlocking.
    let mut order: Vec<usize> = first.values().copied().collect();
    order.sort_unstable_by(|&a, &b| events[a].event.id.cmp(&events[b].event.id));

    let mut ids = Vec::with_capacity(order.len());
    let mut types = Vec::with_capacity(order.len());
    let mut data = Vec::with_capacity(order.len());
    let mut contexts = Vec::with_capacity(order.len());
    let mut occurred = Vec::with_capacity(order.len());
    let mut received = Vec::with_capacity(order.len());
    for &i in &order {
        let e = &events[i];
        ids.push(e.event.id.as_str());
        types.push(e.event.event_type.as_str());
        data.push(e.data.as_str());
        contexts.push(e.context.as_str());
        occurred.push(e.event.occurred_at);
        received.push(e.event.received_at);
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO events (id, type, data, context, occurred_at, received_at) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                                  $5::int8[], $6::int8[]) \
             ON CONFLICT (id) DO NOTHING RETURNING id",
        )
        .await?;
    let inserted: HashSet<String> = tx
        .query(
            &stmt,
            &[&ids, &types, &data, &contexts, &occurred, &received],
        )
        .await?
        .iter()
        .map(|r| get::<String>(r, 0))
        .collect::<Result<_>>()?;

    let (mut d_ids, mut d_events, mut d_hooks, mut d_types, mut d_at) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut d_owners, mut d_until) = (Vec::new(), Vec::new());
    let (mut d_sources, mut d_origins) = (Vec::new(), Vec::new());
    for &i in &order {
        let e = &events[i];
        if !inserted.contains(&e.event.id) {
            continue;
        }
        for (webhook_id, delivery_id) in &e.deliveries {
            d_ids.push(delivery_id.as_str());
            d_events.push(e.event.id.as_str());
            d_hooks.push(webhook_id.as_str());
            d_types.push(e.event.event_type.as_str());
            d_at.push(e.event.received_at);
            d_owners.push(e.lease.as_ref().map(|l| l.owner.as_str()));
            d_until.push(e.lease.as_ref().map(|l| l.until));
            d_sources.push(e.source);
            d_origins.push(e.origin.as_deref());
        }
    }
    if !d_ids.is_empty() {
        let stmt = tx
            .prepare_cached(
                "INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, attempts, \
                 total_attempts, next_attempt_at, lease_owner, lease_until, created_at, \
                 updated_at, source, origin) \
                 SELECT d.id, d.event_id, d.webhook_id, d.event_type, 'pending', 0, 0, d.at, \
                        d.owner, d.until, d.at, d.at, d.source, d.origin \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int8[], \
                             $6::text[], $7::int8[], $8::text[], $9::text[]) \
                      AS d (id, event_id, webhook_id, event_type, at, owner, until, source, \
                            origin)",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &d_ids, &d_events, &d_hooks, &d_types, &d_at, &d_owners, &d_until, &d_sources,
                &d_origins,
            ],
        )
        .await?;
    }

    let duplicates: Vec<&str> = events
        .iter()
        .enumerate()
        .filter(|(i, e)| {
            first.get(e.event.id.as_str()) != Some(i) || !inserted.contains(&e.event.id)
        })
        .map(|(_, e)| e.event.id.as_str())
        .collect();
    let mut counts: HashMap<String, usize> = HashMap::new();
    if !duplicates.is_empty() {
        let stmt = tx
            .prepare_cached(
                "SELECT event_id, COUNT(*) FROM deliveries WHERE event_id = ANY($1::text[]) \
                 GROUP BY event_id",
            )
            .await?;
        for row in tx.query(&stmt, &[&duplicates]).await? {
            let n: i64 = get(&row, 1)?;
            counts.insert(get(&row, 0)?, usize::try_from(n).unwrap_or(0));
        }
    }

    Ok(events
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let id = &e.event.id;
            if first.get(id.as_str()) == Some(&i) && inserted.contains(id) {
                IngestResult {
                    id: id.clone(),
                    deliveries: e.deliveries.len(),
                    duplicate: false,
                }
            } else {
                IngestResult {
                    id: id.clone(),
                    deliveries: counts.get(id).copied().unwrap_or(0),
                    duplicate: true,
                }
            }
        })
        .collect())
}

/// Ingest calls, many to a transaction.
struct Ingests {
    pool: Pool,
}

#[async_trait]
impl Batch for Ingests {
    type Item = Vec<EncodedEvent>;
    type Output = Vec<IngestResult>;

    async fn commit(&self, calls: &[Vec<EncodedEvent>]) -> Result<Vec<Vec<IngestResult>>> {
        // One statement per table for all the calls: an id repeated across calls is a
        // duplicate of its first occurrence, as within one call.
        let events: Vec<&EncodedEvent> = calls.iter().flatten().collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut results = ingest_in(&tx, &events).await?.into_iter();
        tx.commit().await?;
        Ok(calls
            .iter()
            .map(|call| results.by_ref().take(call.len()).collect())
            .collect())
    }
}

/// Completions, many to a transaction.
struct Completions {
    pool: Pool,
    channel: String,
}

#[async_trait]
impl Batch for Completions {
    type Item = (String, EncodedCompletion);
    type Output = bool;

    async fn commit(&self, calls: &[(String, EncodedCompletion)]) -> Result<Vec<bool>> {
        // The calls' statements are pipelined on the one connection (each call's own statements
        // stay in order), issued in delivery id order so that rows are locked in that order and
        // two transactions never wait on each other in a cycle.
        let mut order: Vec<usize> = (0..calls.len()).collect();
        order.sort_by(|a, b| {
            calls[*a]
                .1
                .attempt
                .delivery_id
                .cmp(&calls[*b].1.attempt.delivery_id)
        });
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let done = futures_util::future::try_join_all(order.iter().map(|&i| {
            let (owner, completion) = &calls[i];
            complete_in(&tx, owner, completion)
        }))
        .await?;
        let mut held = vec![false; calls.len()];
        let mut any_disabled = false;
        for (&i, (was_held, disabled)) in order.iter().zip(done) {
            let followups = &calls[i].1.followups;
            if was_held && !followups.is_empty() {
                ingest_in(&tx, &followups.iter().collect::<Vec<_>>()).await?;
            }
            held[i] = was_held;
            any_disabled |= disabled;
        }
        if any_disabled {
            notify(&tx, &self.channel, StoreChange::Webhooks).await?;
        }
        tx.commit().await?;
        Ok(held)
    }
}

/// Returns whether `owner` held the lease and whether a webhook was disabled.
async fn complete_in(
    tx: &deadpool_postgres::Transaction<'_>,
    owner: &str,
    c: &EncodedCompletion,
) -> Result<(bool, bool)> {
    let a = &c.attempt;
    // The row lock serialises completions (and claims) of this delivery until commit.
    let stmt = tx
        .prepare_cached("SELECT status, lease_owner FROM deliveries WHERE id = $1 FOR UPDATE")
        .await?;
    let Some(current) = tx.query_opt(&stmt, &[&a.delivery_id]).await? else {
        return Ok((false, false));
    };
    let status: &str = get(&current, 0)?;
    let lease_owner: Option<&str> = get(&current, 1)?;
    let now = now_ms();

    // Attempt numbers only grow: a fenced worker may log the number the new owner was given,
    // in which case the later of the two takes the next free one.
    let stmt = tx
        .prepare_cached("SELECT COALESCE(MAX(attempt_no), 0) FROM attempts WHERE delivery_id = $1")
        .await?;
    let mut last_no = get_u32(&tx.query_one(&stmt, &[&a.delivery_id]).await?, 0)?;
    for e in &c.earlier {
        last_no = insert_attempt(tx, &e.attempt, &e.request, &e.response_headers, last_no).await?;
    }
    let attempt_no = insert_attempt(tx, a, &c.request, &c.response_headers, last_no).await?;
    let attempt_no = i32::try_from(attempt_no)
        .map_err(|_| Error::Database(format!("attempt number {attempt_no} is too large")))?;
    let logged = 1 + i32::try_from(c.earlier.len()).unwrap_or(0);

    let held = status == DeliveryStatus::Pending.as_str() && lease_owner == Some(owner);
    if held {
        let (status, next_attempt_at) = match c.next {
            Next::Succeeded => (DeliveryStatus::Succeeded, None),
            Next::Dead => (DeliveryStatus::Dead, None),
            Next::Skipped => (DeliveryStatus::Skipped, None),
            Next::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
        };
        let stmt = tx
            .prepare_cached(
                "UPDATE deliveries SET status = $2, next_attempt_at = $3, lease_owner = NULL, \
                 lease_until = NULL, attempts = attempts + $8, \
                 total_attempts = GREATEST(total_attempts, $4), last_status = $5, \
                 last_error = $6, updated_at = $7 WHERE id = $1",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &a.delivery_id,
                &status.as_str(),
                &next_attempt_at,
                &attempt_no,
                &a.response_status.map(i32::from),
                &a.error,
                &now,
                &logged,
            ],
        )
        .await?;
    } else {
        // The next claim must hand out a number above the one just logged.
        let stmt = tx
            .prepare_cached(
                "UPDATE deliveries SET total_attempts = GREATEST(total_attempts, $2) WHERE id = $1",
            )
            .await?;
        tx.execute(&stmt, &[&a.delivery_id, &attempt_no]).await?;
    }

    let mut disabled = false;
    if c.disable_webhook {
        let stmt = tx
            .prepare_cached(
                "UPDATE webhooks SET enabled = FALSE, \
                 spec = jsonb_set(spec::jsonb, '{enabled}', 'false')::text, updated_at = $2 \
                 WHERE id = (SELECT webhook_id FROM deliveries WHERE id = $1) AND enabled",
            )
            .await?;
        disabled = tx.execute(&stmt, &[&a.delivery_id, &now]).await? > 0;
    }
    Ok((held, disabled))
}

/// Logs one attempt under the first number above `last_no` (and above the number it was made
/// under); returns the number used.
pub(super) async fn insert_attempt(
    tx: &deadpool_postgres::Transaction<'_>,
    a: &Attempt,
    request: &Option<String>,
    response_headers: &str,
    last_no: u32,
) -> Result<u32> {
    let attempt_no = a.attempt_no.max(last_no.saturating_add(1));
    let number = i32::try_from(attempt_no)
        .map_err(|_| Error::Database(format!("attempt number {attempt_no} is too large")))?;
    let (plugin_name, plugin_version) = EncodedAttempt::plugin_of(a);
    let plugin_version = plugin_version.and_then(|v| i32::try_from(v).ok());
    let stmt = tx
        .prepare_cached(concat!(
            "INSERT INTO attempts (",
            attempt_cols!(),
            ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        ))
        .await?;
    tx.execute(
        &stmt,
        &[
            &a.delivery_id,
            &number,
            &a.started_at,
            &i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
            request,
            &a.response_status.map(i32::from),
            &response_headers,
            &a.response_body,
            &a.error,
            &outcome_str(a.outcome),
            &plugin_name,
            &plugin_version,
        ],
    )
    .await?;
    Ok(attempt_no)
}

#[async_trait]
impl Store for PostgresStore {
    async fn insert_webhook(&self, hook: &Webhook) -> Result<()> {
        let spec = to_json(&hook.spec)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO webhooks (id, name, enabled, spec, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &hook.id,
                &hook.spec.name,
                &hook.spec.enabled,
                &spec,
                &hook.created_at,
                &hook.updated_at,
            ],
        )
        .await
        .map_err(|e| webhook_write_error(e, hook))?;
        notify(&tx, &self.channel, StoreChange::Webhooks).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn update_webhook(&self, hook: &Webhook) -> Result<bool> {
        let spec = to_json(&hook.spec)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE webhooks SET name = $2, enabled = $3, spec = $4, updated_at = $5 \
                 WHERE id = $1",
            )
            .await?;
        let changed = tx
            .execute(
                &stmt,
                &[
                    &hook.id,
                    &hook.spec.name,
                    &hook.spec.enabled,
                    &spec,
                    &hook.updated_at,
                ],
            )
            .await
            .map_err(|e| webhook_write_error(e, hook))?
            > 0;
        if changed {
            notify(&tx, &self.channel, StoreChange::Webhooks).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn rewrite_webhooks(&self, rewrite: super::WebhookRewrite) -> Result<usize> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The row locks make processes starting at once take turns; the later ones read what
        // the first wrote.
        let rows = tx
            .query(
                concat!(
                    "SELECT ",
                    webhook_cols!(),
                    " FROM webhooks ORDER BY id FOR UPDATE"
                ),
                &[],
            )
            .await?;
        let update = tx
            .prepare_cached("UPDATE webhooks SET spec = $2 WHERE id = $1")
            .await?;
        let mut changed = 0;
        for row in &rows {
            let mut hook = webhook_row(row)?;
            if rewrite(&mut hook)? {
                tx.execute(&update, &[&hook.id, &to_json(&hook.spec)?])
                    .await?;
                changed += 1;
            }
        }
        if changed > 0 {
            notify(&tx, &self.channel, StoreChange::Webhooks).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached("SELECT 1 FROM webhooks WHERE id = $1")
            .await?;
        if tx.query_opt(&stmt, &[&id]).await?.is_none() {
            return Ok(false);
        }
        // Deliveries before the webhook row: `complete` locks a delivery, then (410) its
        // webhook, and taking them in the same order cannot deadlock with it.
        let stmt = tx
            .prepare_cached(
                "UPDATE deliveries SET status = 'dead', last_error = 'webhook deleted', \
                 next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = $2 \
                 WHERE webhook_id = $1 AND status = 'pending'",
            )
            .await?;
        tx.execute(&stmt, &[&id, &now_ms()]).await?;
        let stmt = tx
            .prepare_cached("DELETE FROM webhooks WHERE id = $1")
            .await?;
        if tx.execute(&stmt, &[&id]).await? == 0 {
            // Deleted by someone else meanwhile: leave their result alone.
            tx.rollback().await?;
            return Ok(false);
        }
        notify(&tx, &self.channel, StoreChange::Webhooks).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn webhook(&self, id_or_name: &str) -> Result<Option<Webhook>> {
        let client = self.client().await?;
        // An id match wins over a name match.
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                webhook_cols!(),
                " FROM webhooks WHERE id = $1 OR name = $1 ORDER BY id = $1 DESC LIMIT 1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&id_or_name])
            .await?
            .map(|row| webhook_row(&row))
            .transpose()
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                webhook_cols!(),
                " FROM webhooks ORDER BY created_at, seq"
            ))
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(webhook_row)
            .collect()
    }

    async fn ingest(&self, events: Vec<EventToIngest>) -> Result<Vec<IngestResult>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        self.ingests.submit(encode_events(events)?).await
    }

    async fn event(&self, id: &str) -> Result<Option<Event>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "SELECT ",
                event_cols!(),
                " FROM events WHERE id = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&id])
            .await?
            .map(|row| event_row(&row, 0))
            .transpose()
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Job>> {
        if req.limit == 0 {
            return Ok(Vec::new());
        }
        let limit = i64::try_from(req.limit).unwrap_or(i64::MAX);
        let lease_until = req.now.saturating_add(req.lease_ms);
        let client = self.client().await?;
        // One statement: pick and lock the oldest due rows nobody else is locking, lease them,
        // and return them with their events.
        let stmt = client
            .prepare_cached(
                "WITH due AS ( \
                     SELECT d.id FROM deliveries d JOIN webhooks w ON w.id = d.webhook_id \
                     WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
                       AND (d.lease_until IS NULL OR d.lease_until <= $1) \
                       AND w.enabled AND d.webhook_id <> ALL($2::text[]) \
                     ORDER BY d.next_attempt_at, d.id \
                     LIMIT $3 \
                     FOR UPDATE OF d SKIP LOCKED \
                 ) \
                 UPDATE deliveries d SET lease_owner = $4, lease_until = $5 \
                 FROM due, events e \
                 WHERE d.id = due.id AND e.id = d.event_id \
                 RETURNING d.id, d.event_id, d.event_type, d.webhook_id, d.status, d.attempts, \
                   d.next_attempt_at, d.last_status, d.last_error, d.created_at, d.updated_at, \
                   d.source, d.origin, d.total_attempts, \
                   e.id, e.type, e.data, e.context, e.occurred_at, e.received_at",
            )
            .await?;
        let rows = client
            .query(
                &stmt,
                &[
                    &req.now,
                    &req.exclude_webhooks,
                    &limit,
                    &req.owner,
                    &lease_until,
                ],
            )
            .await?;
        let mut jobs = rows
            .iter()
            .map(|row| {
                Ok(Job {
                    delivery: delivery_row(row, 0)?,
                    attempt_no: get_u32(row, 13)?.saturating_add(1),
                    event: event_row(row, 14)?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // RETURNING has no order of its own.
        jobs.sort_unstable_by(|a, b| {
            (a.delivery.next_attempt_at, &a.delivery.id)
                .cmp(&(b.delivery.next_attempt_at, &b.delivery.id))
        });
        Ok(jobs)
    }

    async fn release(&self, owner: &str, delivery_ids: &[String]) -> Result<()> {
        if delivery_ids.is_empty() {
            return Ok(());
        }
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL \
                 WHERE id = ANY($1::text[]) AND lease_owner = $2 AND status = 'pending'",
            )
            .await?;
        client.execute(&stmt, &[&delivery_ids, &owner]).await?;
        Ok(())
    }

    async fn complete(&self, owner: &str, completion: Completion) -> Result<bool> {
        let encoded = EncodedCompletion::new(completion)?;
        self.completions.submit((owner.to_owned(), encoded)).await
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Page<Delivery>> {
        let query = LogQuery::new(filter, Dialect::Postgres);
        let mut params: Vec<&(dyn ToSql + Sync)> = query
            .args
            .iter()
            .map(|a| match a {
                Arg::Text(t) => t as &(dyn ToSql + Sync),
                Arg::Int(i) => i as &(dyn ToSql + Sync),
            })
            .collect();
        params.push(&query.fetch);
        let client = self.client().await?;
        let stmt = client.prepare_cached(&query.sql).await?;
        let items = client
            .query(&stmt, &params)
            .await?
            .iter()
            .map(|row| delivery_row(row, 0))
            .collect::<Result<Vec<_>>>()?;
        Ok(query.page(items))
    }

    async fn delivery(&self, id: &str) -> Result<Option<(Delivery, Vec<Attempt>)>> {
        let mut client = self.client().await?;
        // One snapshot for the delivery and its attempts.
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let stmt = tx
            .prepare_cached(concat!(
                "SELECT ",
                delivery_cols!(),
                " FROM deliveries WHERE id = $1"
            ))
            .await?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await? else {
            return Ok(None);
        };
        let delivery = delivery_row(&row, 0)?;
        let stmt = tx
            .prepare_cached(concat!(
                "SELECT ",
                attempt_cols!(),
                " FROM attempts WHERE delivery_id = $1 ORDER BY attempt_no"
            ))
            .await?;
        let attempts = tx
            .query(&stmt, &[&id])
            .await?
            .iter()
            .map(attempt_row)
            .collect::<Result<Vec<_>>>()?;
        tx.commit().await?;
        Ok(Some((delivery, attempts)))
    }

    async fn replay_delivery(&self, id: &str, now: Millis) -> Result<Option<Delivery>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(concat!(
                "UPDATE deliveries SET status = 'pending', attempts = 0, \
                 next_attempt_at = $2, lease_owner = NULL, lease_until = NULL, \
                 updated_at = $2 WHERE id = $1 AND source <> 'inbound' RETURNING ",
                delivery_cols!()
            ))
            .await?;
        client
            .query_opt(&stmt, &[&id, &now])
            .await?
            .map(|row| delivery_row(&row, 0))
            .transpose()
    }

    async fn replay_dead(&self, webhook_id: &str, now: Millis) -> Result<u64> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE deliveries SET status = 'pending', attempts = 0, \
                 next_attempt_at = $2, lease_owner = NULL, lease_until = NULL, \
                 updated_at = $2 WHERE webhook_id = $1 AND status = 'dead' \
                 AND source NOT IN ('inbound', 'test')",
            )
            .await?;
        Ok(client.execute(&stmt, &[&webhook_id, &now]).await?)
    }

    async fn queue_stats(&self, now: Millis) -> Result<QueueStats> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT COUNT(*), \
                 COUNT(*) FILTER (WHERE d.next_attempt_at <= $1 AND w.enabled), \
                 MIN(d.next_attempt_at) FILTER (WHERE w.enabled) \
                 FROM deliveries d LEFT JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.status = 'pending'",
            )
            .await?;
        let row = client.query_one(&stmt, &[&now]).await?;
        let oldest: Option<Millis> = get(&row, 2)?;
        let oldest_due_age_ms = match oldest {
            Some(at) if at <= now => u64::try_from(now - at).unwrap_or(0),
            _ => 0,
        };
        Ok(QueueStats {
            pending: get_u64(&row, 0)?,
            due: get_u64(&row, 1)?,
            oldest_due_age_ms,
        })
    }

    async fn due_count(&self, now: Millis, at_most: u64) -> Result<u64> {
        let at_most = i64::try_from(at_most).unwrap_or(i64::MAX);
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT COUNT(*) FROM (SELECT 1 FROM deliveries d \
                 JOIN webhooks w ON w.id = d.webhook_id \
                 WHERE d.status = 'pending' AND w.enabled AND d.next_attempt_at <= $1 \
                 LIMIT $2) AS due",
            )
            .await?;
        let row = client.query_one(&stmt, &[&now, &at_most]).await?;
        get_u64(&row, 0)
    }

    async fn add_plugin_version(
        &self,
        name: &str,
        sha256: &str,
        wasm: Vec<u8>,
        now: Millis,
    ) -> Result<PluginVersion> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        // The plugin's row lock numbers its versions one upload at a time.
        let stmt = tx
            .prepare_cached("INSERT INTO plugins (name) VALUES ($1) ON CONFLICT DO NOTHING")
            .await?;
        tx.execute(&stmt, &[&name]).await?;
        let stmt = tx
            .prepare_cached("SELECT 1 FROM plugins WHERE name = $1 FOR UPDATE")
            .await?;
        tx.execute(&stmt, &[&name]).await?;

        let stmt = tx
            .prepare_cached(
                "SELECT version, size, created_at FROM plugin_versions \
                 WHERE name = $1 AND sha256 = $2",
            )
            .await?;
        let (version, size, created_at) = match tx.query_opt(&stmt, &[&name, &sha256]).await? {
            Some(row) => (get_u32(&row, 0)?, get_u64(&row, 1)?, get(&row, 2)?),
            None => {
                let stmt = tx
                    .prepare_cached(
                        "SELECT COALESCE(MAX(version), 0) + 1 FROM plugin_versions \
                         WHERE name = $1",
                    )
                    .await?;
                let version: i32 = get(&tx.query_one(&stmt, &[&name]).await?, 0)?;
                let size = i64::try_from(wasm.len()).unwrap_or(i64::MAX);
                let stmt = tx
                    .prepare_cached(
                        "INSERT INTO plugin_versions (name, version, sha256, size, wasm, \
                         created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                    )
                    .await?;
                tx.execute(&stmt, &[&name, &version, &sha256, &size, &wasm, &now])
                    .await?;
                notify(&tx, &self.channel, StoreChange::Plugins).await?;
                let version = u32::try_from(version)
                    .map_err(|_| Error::Corrupt(format!("plugin version {version}")))?;
                (version, wasm.len() as u64, now)
            }
        };
        tx.commit().await?;
        Ok(PluginVersion {
            name: name.to_owned(),
            version,
            sha256: sha256.to_owned(),
            size,
            created_at,
        })
    }

    async fn plugins(&self) -> Result<Vec<PluginRecord>> {
        let mut client = self.client().await?;
        let tx = client
            .build_transaction()
            .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
            .read_only(true)
            .start()
            .await?;
        let stmt = tx
            .prepare_cached("SELECT name, active FROM plugins ORDER BY name")
            .await?;
        let mut records = tx
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|row| {
                let active: Option<i32> = get(row, 1)?;
                Ok(PluginRecord {
                    name: get(row, 0)?,
                    active: active.and_then(|v| u32::try_from(v).ok()),
                    versions: Vec::new(),
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let stmt = tx
            .prepare_cached(
                "SELECT name, version, sha256, size, created_at FROM plugin_versions \
                 ORDER BY name, version",
            )
            .await?;
        let mut versions: HashMap<String, Vec<PluginVersion>> = HashMap::new();
        for row in tx.query(&stmt, &[]).await? {
            let v = PluginVersion {
                name: get(&row, 0)?,
                version: get_u32(&row, 1)?,
                sha256: get(&row, 2)?,
                size: get_u64(&row, 3)?,
                created_at: get(&row, 4)?,
            };
            versions.entry(v.name.clone()).or_default().push(v);
        }
        tx.commit().await?;
        for record in &mut records {
            record.versions = versions.remove(&record.name).unwrap_or_default();
        }
        Ok(records)
    }

    async fn plugin_wasm(&self, name: &str, version: u32) -> Result<Option<Vec<u8>>> {
        let Ok(version) = i32::try_from(version) else {
            return Ok(None);
        };
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("SELECT wasm FROM plugin_versions WHERE name = $1 AND version = $2")
            .await?;
        client
            .query_opt(&stmt, &[&name, &version])
            .await?
            .map(|row| get(&row, 0))
            .transpose()
    }

    async fn set_active_plugin(&self, name: &str, version: u32) -> Result<bool> {
        let Ok(version) = i32::try_from(version) else {
            return Ok(false);
        };
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "UPDATE plugins SET active = $2 WHERE name = $1 AND EXISTS \
                 (SELECT 1 FROM plugin_versions WHERE name = $1 AND version = $2)",
            )
            .await?;
        let activated = tx.execute(&stmt, &[&name, &version]).await? == 1;
        if activated {
            notify(&tx, &self.channel, StoreChange::Plugins).await?;
        }
        tx.commit().await?;
        Ok(activated)
    }

    async fn remember_message(
        &self,
        scope: &str,
        message_id: &str,
        until: Millis,
        now: Millis,
    ) -> Result<bool> {
        let client = self.client().await?;
        if self
            .remembered
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PURGE_EVERY)
        {
            let stmt = client
                .prepare_cached("DELETE FROM inbound_messages WHERE expires_at <= $1")
                .await?;
            client.execute(&stmt, &[&now]).await?;
        }
        // A live record wins; an expired one is taken over as if it were new. Concurrent
        // callers with one id wait on the key, and only the first sees a new row.
        let stmt = client
            .prepare_cached(
                "INSERT INTO inbound_messages (scope, message_id, expires_at) \
                 VALUES ($1, $2, $3) ON CONFLICT (scope, message_id) \
                 DO UPDATE SET expires_at = EXCLUDED.expires_at \
                 WHERE inbound_messages.expires_at <= $4",
            )
            .await?;
        Ok(client
            .execute(&stmt, &[&scope, &message_id, &until, &now])
            .await?
            == 1)
    }

    async fn log_delivery(&self, entry: crate::model::LoggedDelivery) -> Result<()> {
        self.log_finished(entry).await
    }
    async fn purge(&self, policy: &super::PurgePolicy) -> Result<super::Purged> {
        self.purge_batch(policy).await
    }
    async fn row_counts(&self) -> Result<super::RowCounts> {
        self.estimate_rows().await
    }

    async fn sources(&self) -> Result<Vec<super::StoredSource>> {
        self.list_sources().await
    }
    async fn insert_source(&self, source: &super::StoredSource) -> Result<()> {
        self.insert_source_row(source).await
    }
    async fn update_source(&self, source: &super::StoredSource) -> Result<bool> {
        self.update_source_row(source).await
    }
    async fn delete_source(&self, name: &str) -> Result<bool> {
        self.delete_source_row(name).await
    }

    async fn connections(&self) -> Result<Vec<crate::connections::Connection>> {
        self.list_connections().await
    }
    async fn connection(&self, name: &str) -> Result<Option<crate::connections::Connection>> {
        self.connection_named(name).await
    }
    async fn insert_connection(&self, connection: &crate::connections::Connection) -> Result<()> {
        self.insert_connection_row(connection).await
    }
    async fn update_connection(&self, connection: &crate::connections::Connection) -> Result<bool> {
        self.update_connection_row(connection).await
    }
    async fn delete_connection(&self, name: &str) -> Result<crate::connections::Deletion> {
        self.delete_connection_row(name).await
    }
    async fn event_types(&self) -> Result<Vec<super::StoredEventType>> {
        self.list_event_types().await
    }
    async fn insert_event_type(&self, event_type: &super::StoredEventType) -> Result<()> {
        self.insert_event_type_row(event_type).await
    }
    async fn update_event_type(&self, event_type: &super::StoredEventType) -> Result<bool> {
        self.update_event_type_row(event_type).await
    }
    async fn delete_event_type(&self, name: &str) -> Result<bool> {
        self.delete_event_type_row(name).await
    }
    async fn count_uncataloged(&self, seen: &[super::TypeSeen]) -> Result<()> {
        self.add_uncataloged(seen).await
    }
    async fn uncataloged(&self) -> Result<Vec<super::TypeSeen>> {
        self.list_uncataloged().await
    }

    fn subscribe(&self) -> broadcast::Receiver<StoreChange> {
        self.changes.subscribe()
    }
}

/// Test databases: a fresh schema per test, dropped afterwards.
///
/// The base URL is `HOOKYARD_TEST_POSTGRES_URL` (default
/// `postgres://postgres@127.0.0.1:5432/test`). [`TestSchema::create`] makes a schema named
/// `hy_test_<unix seconds>_<uuid>` and a URL whose `options` put it first on the `search_path`
/// (`...?options=-c%20search_path%3Dhy_test_...`); dropping the guard runs `DROP SCHEMA ...
/// CASCADE`, even when the test panicked, and every creation first drops `hy_test_` schemas more
/// than an hour old (left by killed runs). An unreachable server fails the test, unless
/// `HOOKYARD_TEST_POSTGRES=skip`, which makes [`TestSchema::create`] return `None`.
#[cfg(test)]
pub(crate) mod test_support {
    use tokio_postgres::NoTls;

    use crate::model::now_ms;

    /// Where the tests' PostgreSQL is when the environment does not say.
    pub(crate) const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
    /// Prefix of test schema names.
    const PREFIX: &str = "hy_test_";
    /// Test schemas older than this are dropped by later runs.
    const STALE_SECS: i64 = 3600;

    /// The base URL, or `None` when PostgreSQL tests are skipped on purpose.
    pub(crate) fn base_url() -> Option<String> {
        if std::env::var("HOOKYARD_TEST_POSTGRES").as_deref() == Ok("skip") {
            eprintln!("HOOKYARD_TEST_POSTGRES=skip: PostgreSQL test skipped");
            return None;
        }
        Some(
            std::env::var("HOOKYARD_TEST_POSTGRES_URL")
                .ok()
                .filter(|url| !url.is_empty())
                .unwrap_or_else(|| DEFAULT_URL.to_owned()),
        )
    }

    /// `base` with `schema` as its search path.
    pub(crate) fn with_search_path(base: &str, schema: &str) -> String {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{schema}")
    }

    /// A connection to `base`, or a test failure that says what to do.
    pub(crate) async fn connect(base: &str) -> tokio_postgres::Client {
        match tokio_postgres::connect(base, NoTls).await {
            Ok((client, connection)) => {
                tokio::spawn(connection);
                client
            }
            Err(e) => {
                // Where, without the password a URL may hold.
                let at = std::str::FromStr::from_str(base)
                    .map(|config: tokio_postgres::Config| {
                        format!(
                            "{}/{}",
                            super::hosts(&config),
                            config.get_dbname().unwrap_or_default()
                        )
                    })
                    .unwrap_or_else(|_| "an unparsable URL".to_owned());
                panic!(
                    "PostgreSQL for the tests is unreachable at {at} ({}). Start it, point \
                     HOOKYARD_TEST_POSTGRES_URL at one, or set HOOKYARD_TEST_POSTGRES=skip to \
                     skip the PostgreSQL tests",
                    super::describe(&e)
                )
            }
        }
    }

    /// A schema that lives as long as this guard.
    pub(crate) struct TestSchema {
        /// Schema name.
        pub(crate) name: String,
        /// The base URL with the schema as search path.
        pub(crate) url: String,
        base: String,
    }

    impl TestSchema {
        /// Creates a fresh schema; `None` when PostgreSQL tests are skipped.
        pub(crate) async fn create() -> Option<TestSchema> {
            let base = base_url()?;
            let client = connect(&base).await;
            drop_stale(&client).await;
            let name = format!(
                "{PREFIX}{}_{}",
                now_ms() / 1000,
                uuid::Uuid::now_v7().simple()
            );
            client
                .batch_execute(&format!("CREATE SCHEMA {name}"))
                .await
                .expect("create the test schema");
            Some(TestSchema {
                url: with_search_path(&base, &name),
                name,
                base,
            })
        }
    }

    impl Drop for TestSchema {
        fn drop(&mut self) {
            // Drop cannot await, and the test's runtime may be shutting down: use a thread
            // with a runtime of its own.
            let (base, name) = (self.base.clone(), self.name.clone());
            let dropped = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let (client, connection) = tokio_postgres::connect(&base, NoTls)
                        .await
                        .map_err(|e| e.to_string())?;
                    tokio::spawn(connection);
                    client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await
                        .map_err(|e| e.to_string())
                })
            })
            .join();
            if let Ok(Err(e)) = dropped {
                eprintln!("could not drop test schema {}: {e}", self.name);
            }
        }
    }

    /// Drops test schemas left behind more than [`STALE_SECS`] ago.
    async fn drop_stale(client: &tokio_postgres::Client) {
        let Ok(rows) = client
            .query(
                "SELECT nspname::text FROM pg_namespace WHERE starts_with(nspname::text, $1)",
                &[&PREFIX],
            )
            .await
        else {
            return;
        };
        let now = now_ms() / 1000;
        for row in rows {
            let name: String = row.get(0);
            let created = name
                .strip_prefix(PREFIX)
                .and_then(|rest| rest.split('_').next())
                .and_then(|secs| secs.parse::<i64>().ok());
            if created.is_some_and(|secs| now - secs > STALE_SECS) {
                // Another run may be dropping it too.
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                    .await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::test_support::{connect, with_search_path, TestSchema};
    use super::*;
    use crate::model::new_id;
    use crate::store::conformance;

    async fn open_store(schema: &TestSchema) -> PostgresStore {
        PostgresStore::open(&schema.url)
            .await
            .expect("open the PostgreSQL store")
    }

    /// Runs each conformance check against a fresh schema.
    macro_rules! conformance_tests {
        ($($name:ident),* $(,)?) => {
            mod conformance_checks {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread")]
                    async fn $name() {
                        let Some(schema) = TestSchema::create().await else { return };
                        conformance::$name(Arc::new(open_store(&schema).await)).await;
                    }
                )*
            }
        };
    }

    for_each_check!(conformance_tests);

    #[tokio::test(flavor = "multi_thread")]
    async fn persists_across_reopen() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let url = schema.url.clone();
        conformance::persists_across_reopen(|| {
            let url = url.clone();
            async move {
                Arc::new(PostgresStore::open(&url).await.expect("open store")) as Arc<dyn Store>
            }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_migrations_both_succeed() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let (a, b) = tokio::join!(
            PostgresStore::open(&schema.url),
            PostgresStore::open(&schema.url)
        );
        let (a, b) = (a.expect("first store"), b.expect("second store"));
        a.insert_webhook(&conformance::webhook("hook"))
            .await
            .expect("insert webhook");
        assert_eq!(b.webhooks().await.expect("list").len(), 1);
        drop((a, b));

        let client = connect(&schema.url).await;
        let version: i32 = client
            .query_one("SELECT version FROM hookyard_schema", &[])
            .await
            .expect("schema version")
            .get(0);
        assert_eq!(version as usize, MIGRATIONS.len());

        // Reopening runs nothing again; a newer schema is refused.
        drop(open_store(&schema).await);
        client
            .execute("UPDATE hookyard_schema SET version = 99", &[])
            .await
            .expect("set version");
        let newer = PostgresStore::open(&schema.url).await;
        assert!(matches!(newer, Err(Error::Database(_))), "{newer:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn claims_are_exclusive_across_stores() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let stores = [
            Arc::new(open_store(&schema).await),
            Arc::new(open_store(&schema).await),
        ];
        let h1 = conformance::webhook("one");
        let h2 = conformance::webhook("two");
        stores[0].insert_webhook(&h1).await.expect("insert");
        stores[1].insert_webhook(&h2).await.expect("insert");
        let events = (0..150)
            .map(|i| EventToIngest {
                event: conformance::event(&format!("evt-{i}"), "user.created", conformance::T0 + i),
                deliveries: vec![
                    (h1.id.clone(), new_id("msg")),
                    (h2.id.clone(), new_id("msg")),
                ],
                lease: None,
            })
            .collect();
        stores[0].ingest(events).await.expect("ingest");

        let mut workers = Vec::new();
        for w in 0..8 {
            let store = stores[w % 2].clone();
            workers.push(tokio::spawn(async move {
                let owner = format!("worker-{w}");
                let mut got = Vec::new();
                loop {
                    let jobs = store
                        .claim(ClaimRequest {
                            owner: owner.clone(),
                            now: conformance::T0 + 1_000,
                            lease_ms: conformance::LEASE,
                            limit: 7,
                            exclude_webhooks: Vec::new(),
                        })
                        .await
                        .expect("claim");
                    if jobs.is_empty() {
                        return got;
                    }
                    assert!(jobs.iter().all(|j| j.event.id == j.delivery.event_id));
                    got.extend(jobs.into_iter().map(|j| j.delivery.id));
                }
            }));
        }
        let mut seen = HashSet::new();
        for worker in workers {
            for id in worker.await.expect("worker task") {
                assert!(seen.insert(id.clone()), "{id} was claimed twice");
            }
        }
        assert_eq!(seen.len(), 300);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn other_stores_hear_of_changes() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let writer = open_store(&schema).await;
        let reader = open_store(&schema).await;
        let mut rx = reader.subscribe();
        writer
            .insert_webhook(&conformance::webhook("hook"))
            .await
            .expect("insert webhook");
        let within = Duration::from_secs(1);
        let change = tokio::time::timeout(within, rx.recv()).await;
        assert!(
            matches!(change, Ok(Ok(StoreChange::Webhooks))),
            "{change:?}"
        );
        writer
            .add_plugin_version("shape", "sha", vec![1], conformance::T0)
            .await
            .expect("add plugin");
        let change = tokio::time::timeout(within, rx.recv()).await;
        assert!(matches!(change, Ok(Ok(StoreChange::Plugins))), "{change:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn listener_reconnects_and_announces_everything() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let store = open_store(&schema).await;
        let mut rx = store.subscribe();
        let pid = store.listener_pid();
        assert_ne!(pid, 0);
        let admin = connect(&schema.url).await;
        admin
            .execute("SELECT pg_terminate_backend($1)", &[&pid])
            .await
            .expect("terminate the listener");

        // Whatever was missed meanwhile: every kind is announced after reconnecting.
        let mut got = HashSet::new();
        while got.len() < 3 {
            let change = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("notices after the reconnect")
                .expect("channel open");
            got.insert(change);
        }
        let new_pid = store.listener_pid();
        assert!(new_pid != 0 && new_pid != pid, "{pid} -> {new_pid}");

        let other = open_store(&schema).await;
        other
            .insert_webhook(&conformance::webhook("hook"))
            .await
            .expect("insert webhook");
        assert_eq!(
            conformance::next_change(&mut rx).await,
            StoreChange::Webhooks
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn notices_stay_within_their_schema() {
        let (Some(one), Some(two)) = (TestSchema::create().await, TestSchema::create().await)
        else {
            return;
        };
        let here = open_store(&one).await;
        let elsewhere = open_store(&two).await;
        let mut rx = here.subscribe();
        elsewhere
            .add_plugin_version("shape", "sha", vec![1], conformance::T0)
            .await
            .expect("add plugin elsewhere");
        // Committed after the other schema's notice: it would come first if that leaked here.
        here.insert_webhook(&conformance::webhook("hook"))
            .await
            .expect("insert webhook");
        assert_eq!(
            conformance::next_change(&mut rx).await,
            StoreChange::Webhooks
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_ingests_of_the_same_ids_store_each_once() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let stores = [
            Arc::new(open_store(&schema).await),
            Arc::new(open_store(&schema).await),
        ];
        let hook = conformance::webhook("hook");
        stores[0].insert_webhook(&hook).await.expect("insert");
        let batch = |reverse: bool| {
            let mut events: Vec<EventToIngest> = (0..50)
                .map(|i| EventToIngest {
                    event: conformance::event(&format!("evt-{i}"), "user.created", conformance::T0),
                    deliveries: vec![(hook.id.clone(), new_id("msg"))],
                    lease: None,
                })
                .collect();
            if reverse {
                events.reverse();
            }
            events
        };
        let mut tasks = Vec::new();
        for round in 0..4 {
            let store = stores[round % 2].clone();
            let events = batch(round % 2 == 1);
            tasks.push(tokio::spawn(async move { store.ingest(events).await }));
        }
        let mut new = HashSet::new();
        for task in tasks {
            for result in task.await.expect("task").expect("ingest") {
                assert_eq!(result.deliveries, 1);
                if !result.duplicate {
                    assert!(new.insert(result.id.clone()), "{} stored twice", result.id);
                }
            }
        }
        assert_eq!(new.len(), 50);
        let stats = stores[1].queue_stats(conformance::T0).await.expect("stats");
        assert_eq!(stats.pending, 50);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn unreachable_server_is_unavailable() {
        let refused = PostgresStore::open("postgres://postgres@127.0.0.1:1/test").await;
        assert!(matches!(refused, Err(Error::Unavailable(_))), "{refused:?}");
        let bad = PostgresStore::open("postgres://[oops").await;
        assert!(matches!(bad, Err(Error::Database(_))), "{bad:?}");
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn missing_schema_is_reported() {
        let Some(base) = test_support::base_url() else {
            return;
        };
        let url = with_search_path(
            &base,
            &format!("hy_missing_{}", uuid::Uuid::now_v7().simple()),
        );
        let missing = PostgresStore::open(&url).await;
        match missing {
            Err(Error::Database(msg)) => assert!(msg.contains("search_path"), "{msg}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn channels() {
        assert_eq!(channel_for("public"), "hookyard_changes");
        assert_eq!(channel_for("tenant_a"), "hookyard_changes_tenant_a");
        let long = channel_for(&"x".repeat(63));
        assert!(long.len() <= MAX_IDENTIFIER, "{long}");
        assert_ne!(long, channel_for(&"y".repeat(63)));
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
    }
}
