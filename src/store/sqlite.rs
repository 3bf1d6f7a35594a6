//! SQLite store: one database file in WAL mode, written by one thread that group-commits.
//!
//! SQLite admits one writer at a time and a durable commit costs an fsync, so committing each
//! ingest on its own would cap throughput at the disk's fsync rate. Instead every write is a
//! command sent to a single writer thread, which folds whatever is queued into one
//! `BEGIN IMMEDIATE` transaction and commits once: N concurrent callers share one fsync. Each
//! command runs inside its own SAVEPOINT, so a failing command rolls back alone and the others
//! still commit. Replies are sent only after COMMIT returns, which keeps "committed means
//! durable" (`synchronous=FULL`).
//!
//! Delivery never queues behind ingest: the writer has two queues. Ingests (the only writes a
//! client outside can flood) go to the bulk queue; everything else (claims, completions and
//! their attempt rows, releases, admin writes) to the urgent one. Each group commit takes every
//! urgent command waiting (up to `MAX_BATCH`, 1024) first, then ingests until they hold
//! `MAX_INGEST_EVENTS` (512) events (at least one ingest command whenever any waits, so ingest
//! never starves either). A completion sent while thousands of ingests wait is therefore in the
//! next commit, and a full bulk queue slows the ingest callers only.
//!
//! Reads never queue behind writes: WAL lets a small pool of read-only connections see the last
//! commit while the next batch is being written. An in-memory database cannot be shared between
//! connections, so there reads go through the writer as well.
//!
//! Nor do commits wait for checkpoints: a thread of its own copies the WAL back into the
//! database file ([`Checkpointer`]), where SQLite's automatic checkpoint would stop the writer
//! every 1000 WAL pages to copy them and fsync the file.
//!
//! Layout choices:
//! - Timestamps are [`Millis`] integers; specs, payloads and headers are JSON text.
//! - Delivery ids are UUIDv7 (`msg_...`), so `ORDER BY id` is creation order and the log pages
//!   by id.
//! - The queue index is partial (`WHERE status = 'pending'`) and leads with `webhook_id`: claim
//!   walks it once per enabled, non-excluded webhook, so a big backlog of a saturated or
//!   disabled webhook is never scanned, and finished deliveries never bloat it.
//! - `webhooks.enabled` duplicates `$.enabled` of the spec so claim can filter on a column; the
//!   two are always written together.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::types::Type;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension, Row};
use tokio::sync::{broadcast, mpsc, oneshot};

mod connections;
mod event_types;
mod log;
mod sources;

use super::encode::{
    encode_events, outcome_str, to_json, Arg, Dialect, EncodedAttempt, EncodedCompletion,
    EncodedEvent, LogQuery, PURGE_EVERY,
};
use super::{
    ClaimRequest, Error, PluginRecord, PluginVersion, Result, Store, StoreChange, CHANGE_CAPACITY,
};
use crate::model::{
    now_ms, Attempt, AttemptOutcome, Completion, Delivery, DeliveryFilter, DeliveryStatus, Event,
    EventToIngest, IngestResult, Job, Millis, Next, Page, QueueStats, RequestLog, Webhook,
    WebhookSpec,
};

/// Most commands folded into one transaction.
const MAX_BATCH: usize = 1024;
/// Most ingested events (over all ingest commands) in one transaction: bounds the time a commit
/// spends on ingest, so the delivery-side commands behind it wait at most one short commit.
const MAX_INGEST_EVENTS: usize = 512;
/// Commands of each queue that may wait for the writer before their callers are slowed down.
const QUEUE_CAPACITY: usize = 8192;
/// Idle read connections kept open.
const MAX_IDLE_READERS: usize = 8;
/// How long a connection waits for a lock held by another process.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements cached per connection.
const STATEMENT_CACHE: usize = 64;

/// The ingest back-pressure's count of due deliveries ([`Store::due_count`]): webhook by
/// webhook, a range of the queue index each, stopping at `?2`; the retries waiting are never
/// read.
const DUE_COUNT: &str = "SELECT COUNT(*) FROM (SELECT 1 FROM webhooks w \
    CROSS JOIN deliveries d INDEXED BY deliveries_queue \
    WHERE w.enabled = 1 AND d.webhook_id = w.id AND d.status = 'pending' \
    AND d.next_attempt_at <= ?1 LIMIT ?2)";

/// Schema migrations; `PRAGMA user_version` is how many have run.
const MIGRATIONS: &[&str] = &[
    r#"
CREATE TABLE webhooks (
    id         TEXT PRIMARY KEY NOT NULL,
    name       TEXT NOT NULL UNIQUE,
    enabled    INTEGER NOT NULL,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE events (
    id          TEXT PRIMARY KEY NOT NULL,
    type        TEXT NOT NULL,
    data        TEXT NOT NULL,
    context     TEXT NOT NULL,
    occurred_at INTEGER NOT NULL,
    received_at INTEGER NOT NULL
);

CREATE TABLE deliveries (
    id              TEXT PRIMARY KEY NOT NULL,
    event_id        TEXT NOT NULL REFERENCES events (id),
    webhook_id      TEXT NOT NULL,
    event_type      TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('pending', 'succeeded', 'dead', 'skipped')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    total_attempts  INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,
    lease_owner     TEXT,
    lease_until     INTEGER,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
);

-- The queue: claim (per webhook, oldest due first) and queue_stats.
CREATE INDEX deliveries_queue ON deliveries (webhook_id, next_attempt_at, id)
    WHERE status = 'pending';
-- The Webhook Log, newest first, by webhook and optionally status.
CREATE INDEX deliveries_log ON deliveries (webhook_id, status, id DESC);
CREATE INDEX deliveries_webhook ON deliveries (webhook_id, id DESC);
-- Duplicate ingests count an event's deliveries; the log filters by event.
CREATE INDEX deliveries_event ON deliveries (event_id);

CREATE TABLE attempts (
    delivery_id      TEXT NOT NULL REFERENCES deliveries (id),
    attempt_no       INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,
    duration_ms      INTEGER NOT NULL,
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
    name       TEXT NOT NULL,
    version    INTEGER NOT NULL,
    sha256     TEXT NOT NULL,
    size       INTEGER NOT NULL,
    wasm       BLOB NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (name, version),
    UNIQUE (name, sha256)
);

CREATE TABLE plugins (
    name   TEXT PRIMARY KEY NOT NULL,
    active INTEGER
);
"#,
    r#"
-- Inbound message ids already accepted, per webhook (replay protection).
CREATE TABLE inbound_messages (
    scope      TEXT NOT NULL,
    message_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (scope, message_id)
);
CREATE INDEX inbound_messages_expiry ON inbound_messages (expires_at);
"#,
    r#"
-- Message-bus sources (src/source/): spec as JSON, pause state apart.
CREATE TABLE sources (
    name       TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,
    paused     INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#,
    log::MIGRATION,
    r#"
-- migration for shared connections (src/connections.rs): spec as JSON, secrets sealed.
CREATE TABLE connections (
    name       TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
"#,
    r#"
-- migration for the event catalog (src/catalog/): spec as JSON; and the events ingested with a
-- type the catalog does not list, counted per type.
CREATE TABLE event_types (
    name       TEXT PRIMARY KEY NOT NULL,
    spec       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE TABLE uncataloged_event_types (
    name      TEXT PRIMARY KEY NOT NULL,
    count     INTEGER NOT NULL,
    last_seen INTEGER NOT NULL
);
"#,
    log::INDEX_PER_COMMIT,
];

/// Decoding failures are [`Error::Corrupt`]; everything else SQLite reports is
/// [`Error::Database`].
impl From<rusqlite::Error> for Error {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::InvalidColumnType(..) => Error::Corrupt(e.to_string()),
            other => Error::Database(other.to_string()),
        }
    }
}

/// The [`Store`] backed by one SQLite database.
///
/// Cheap to share behind an `Arc`. Dropping it (or [`SqliteStore::close`]) lets the writer
/// finish the batch in hand, commit it and stop.
pub struct SqliteStore {
    /// Commands to the writer thread; `None` once dropped.
    tx: Option<mpsc::Sender<Msg>>,
    /// Ingests to the writer thread (the bulk queue, see the module docs); `None` once dropped.
    bulk: Option<mpsc::Sender<BulkCommand>>,
    /// The writer thread, joined on close.
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Read-only connections; `None` for an in-memory database (reads use the writer).
    readers: Option<Arc<ReadPool>>,
    /// Set by `close`: reads fail fast instead of opening new connections.
    closed: Arc<AtomicBool>,
    /// Transactions committed by the writer.
    commits: Arc<AtomicU64>,
    /// Change notices, sent after the commit that made the change.
    changes: broadcast::Sender<StoreChange>,
    /// Calls of `remember_message`, to purge expired ids now and then.
    remembered: AtomicU64,
    /// Where the database lives, for `Debug`.
    location: String,
    /// The WAL checkpoint thread (file databases only).
    checkpointer: Mutex<Option<Checkpointer>>,
    /// Rows of the log's tables, counted once at open and kept up to date by every commit.
    counts: Arc<log::LogCounts>,
    /// Where the retention purge's sweep of events without deliveries goes on from.
    purge_cursor: Arc<AtomicI64>,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Process-wide SQLite settings, applied once before the first connection: no memory
/// statistics, so SQLite's allocator does not take a global mutex on every `malloc` and `free`
/// (the savepoint journals of each group commit allocate and free in a loop).
fn configure_sqlite() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` may be called before `sqlite3_initialize` (after it, it
        // refuses with SQLITE_MISUSE and changes nothing) and must not run while another thread
        // calls into SQLite: `Once` keeps it from running twice or beside itself, and every
        // connection hookyard opens is opened after it (the stores call it first; nothing else
        // in the process uses SQLite). SQLITE_CONFIG_MEMSTATUS takes one int.
        #[allow(unsafe_code)]
        let rc = unsafe {
            rusqlite::ffi::sqlite3_config(
                rusqlite::ffi::SQLITE_CONFIG_MEMSTATUS,
                0 as std::ffi::c_int,
            )
        };
        if rc != rusqlite::ffi::SQLITE_OK {
            tracing::debug!(
                rc,
                "SQLite was initialised already; memory statistics stay on"
            );
        }
    });
}

impl SqliteStore {
    /// Opens (creating it and its parent directories if needed) the database at `path` and
    /// brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore> {
        configure_sqlite();
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() {
                crate::private_files::create_dir(parent).map_err(|e| {
                    Error::Database(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
        }
        // Created 0600 before SQLite opens it: SQLite gives the -wal and -shm files the
        // database file's mode, so all three stay private.
        crate::private_files::touch(path)
            .map_err(|e| Error::Database(format!("cannot create {}: {e}", path.display())))?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(Error::Database(format!(
                "{} cannot use WAL (journal_mode is {mode})",
                path.display()
            )));
        }
        configure_writer(&conn)?;
        migrate(&conn)?;
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)?;
        let checkpointer = Checkpointer::start(path)?;
        let readers = Arc::new(ReadPool {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        });
        Self::start(
            conn,
            Some(readers),
            Some(checkpointer),
            path.display().to_string(),
        )
    }

    /// Opens a database by URL: `sqlite://relative/path.db`, `sqlite:///absolute/path.db`,
    /// `sqlite:path.db` or `sqlite::memory:` (a private in-memory database, for tests).
    /// A `?query` suffix is ignored.
    pub fn open_url(url: &str) -> Result<SqliteStore> {
        match parse_url(url)? {
            Location::Memory => Self::open_memory(),
            Location::File(path) => Self::open(&path),
        }
    }

    /// Opens a private in-memory database (gone when the store is dropped).
    pub fn open_memory() -> Result<SqliteStore> {
        configure_sqlite();
        let conn = Connection::open_in_memory()?;
        configure_writer(&conn)?;
        migrate(&conn)?;
        Self::start(conn, None, None, ":memory:".to_owned())
    }

    fn start(
        conn: Connection,
        readers: Option<Arc<ReadPool>>,
        checkpointer: Option<Checkpointer>,
        location: String,
    ) -> Result<SqliteStore> {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (bulk, bulk_rx) = mpsc::channel(QUEUE_CAPACITY);
        let counts = Arc::new(log::LogCounts::load(&conn)?);
        let commits = Arc::new(AtomicU64::new(0));
        let counter = commits.clone();
        // The writer waits on two queues at once: a current-thread runtime without drivers
        // runs that wait (the channels need no I/O or timer driver).
        let waiter = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| Error::Unavailable(format!("cannot start the writer's waiter: {e}")))?;
        let writer = std::thread::Builder::new()
            .name("hookyard-sqlite-writer".to_owned())
            .spawn(move || writer_loop(conn, Queues::new(rx, bulk_rx, waiter), &counter))
            .map_err(|e| Error::Unavailable(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            tx: Some(tx),
            bulk: Some(bulk),
            writer: Mutex::new(Some(writer)),
            readers,
            closed: Arc::new(AtomicBool::new(false)),
            commits,
            changes: broadcast::channel(CHANGE_CAPACITY).0,
            remembered: AtomicU64::new(0),
            location,
            checkpointer: Mutex::new(checkpointer),
            counts,
            purge_cursor: Arc::new(AtomicI64::new(0)),
        })
    }

    /// Stops the store: queued writes are committed and answered, later calls fail with
    /// [`Error::Unavailable`]. Returns once the writer thread has exited.
    pub async fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Some(checkpointer) = take(&self.checkpointer) {
            let _ = tokio::task::spawn_blocking(move || drop(checkpointer)).await;
        }
        if let Some(tx) = &self.tx {
            // An error means the writer is already gone, which is what we want.
            let _ = tx.send(Msg::Shutdown).await;
        }
        if let Some(handle) = take(&self.writer) {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        if let Some(pool) = &self.readers {
            pool.clear();
        }
    }

    /// How many transactions the writer has committed (each may hold many callers' writes).
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Runs `f` on the writer thread inside the current batch's transaction and returns its
    /// result once that transaction is committed.
    async fn write<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the store is closed".to_owned()))?;
        let (reply, answer) = oneshot::channel();
        let command = Box::new(Command {
            f: Some(f),
            result: None,
            reply,
        });
        tx.send(Msg::Run(command))
            .await
            .map_err(|_| Error::Unavailable("the SQLite writer has stopped".to_owned()))?;
        answer.await.map_err(|_| {
            Error::Unavailable("the SQLite writer stopped before answering".to_owned())
        })?
    }

    /// [`SqliteStore::write`] through the bulk queue, for ingests of `events` events: committed
    /// after the urgent commands waiting, at most [`MAX_INGEST_EVENTS`] events to a commit.
    async fn write_bulk<T, F>(&self, events: usize, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let bulk = self
            .bulk
            .as_ref()
            .ok_or_else(|| Error::Unavailable("the store is closed".to_owned()))?;
        let (reply, answer) = oneshot::channel();
        let command = Box::new(Command {
            f: Some(f),
            result: None,
            reply,
        });
        bulk.send(BulkCommand { command, events })
            .await
            .map_err(|_| Error::Unavailable("the SQLite writer has stopped".to_owned()))?;
        answer.await.map_err(|_| {
            Error::Unavailable("the SQLite writer stopped before answering".to_owned())
        })?
    }

    /// Tells subscribers about a committed change (none listening is fine).
    fn announce(&self, change: StoreChange) {
        let _ = self.changes.send(change);
    }

    /// Runs `f` in a read transaction on a pooled read-only connection (on the writer for an
    /// in-memory database).
    async fn read<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Unavailable("the store is closed".to_owned()));
        }
        let Some(pool) = self.readers.clone() else {
            return self.write(f).await;
        };
        tokio::task::spawn_blocking(move || pool.run(f))
            .await
            .map_err(|e| Error::Unavailable(format!("read task failed: {e}")))?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        drop(take(&self.checkpointer));
        // Closing the channels ends the writer after it has drained and committed the queues.
        self.tx = None;
        self.bulk = None;
        if let Some(handle) = take(&self.writer) {
            if handle.thread().id() != std::thread::current().id() {
                let _ = handle.join();
            }
        }
    }
}

/// Takes what `slot` holds, poisoned or not (a thread handle to join when stopping).
fn take<T>(slot: &Mutex<Option<T>>) -> Option<T> {
    match slot.lock() {
        Ok(mut guard) => guard.take(),
        Err(poisoned) => poisoned.into_inner().take(),
    }
}

/// Where [`SqliteStore::open_url`] points.
#[derive(Debug, PartialEq)]
enum Location {
    Memory,
    File(PathBuf),
}

/// The database file a `sqlite:` URL names; none for an in-memory database.
pub fn database_path(url: &str) -> Result<Option<PathBuf>> {
    Ok(match parse_url(url)? {
        Location::Memory => None,
        Location::File(path) => Some(path),
    })
}

fn parse_url(url: &str) -> Result<Location> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| Error::Database(format!("not a sqlite: URL: {url}")))?;
    let rest = rest.split_once('?').map_or(rest, |(path, _)| path);
    match rest {
        "" => Err(Error::Database(format!("no database path in {url}"))),
        ":memory:" => Ok(Location::Memory),
        path => Ok(Location::File(PathBuf::from(path))),
    }
}

/// How often the checkpoint thread copies the WAL back into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL size (pages) at which the writer checkpoints by itself, should the checkpoint thread
/// fall behind. Under sustained maximum load it does (passive checkpoints cannot catch up with a
/// busy writer), so the WAL file grows to this size (64 MiB of 4 KiB pages) and is reused. A
/// quarter of it lost the throughput gain (docs/LOADTEST.md).
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

/// The thread that checkpoints the WAL, copying committed pages back into the database file.
///
/// It runs `PRAGMA wal_checkpoint(PASSIVE)` on its own connection every [`CHECKPOINT_EVERY`]: a
/// passive checkpoint neither waits for nor blocks the writer and the readers. Left to SQLite's
/// automatic checkpoint (every 1000 WAL pages), the writer thread itself stops between commits to
/// copy pages and fsync the database file, and every caller waiting for a commit waits for that
/// too. The writer still checkpoints by itself past [`WRITER_CHECKPOINT_PAGES`], which bounds the
/// WAL should this thread fall behind. Dropping it stops the thread and waits for it.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: &Path) -> Result<Checkpointer> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("hookyard-sqlite-checkpoint".to_owned())
            .spawn(move || {
                // A failing disk fails every tick: say so when it starts and when it ends.
                let mut failing = false;
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    match conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        Err(e) if !failing => {
                            tracing::warn!(error = %e, "checkpointing the SQLite WAL failed; retrying every {} ms", CHECKPOINT_EVERY.as_millis());
                            failing = true;
                        }
                        Ok(()) if failing => {
                            tracing::info!("checkpointing the SQLite WAL works again");
                            failing = false;
                        }
                        _ => {}
                    }
                }
            })
            .map_err(|e| Error::Unavailable(format!("cannot start the checkpoint thread: {e}")))?;
        Ok(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        // The thread wakes as soon as the channel closes.
        self.stop = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Pragmas and caches of the connection that writes.
fn configure_writer(conn: &Connection) -> Result<()> {
    conn.pragma_update(None, "synchronous", "FULL")?;
    // Every command of a group commit runs in a savepoint, and SQLite keeps the pages a
    // savepoint changes in a sub-journal so that it can roll them back. With temporary files on
    // disk (the default), a sub-journal past 64 KiB spills into a temporary file: under load
    // that was ~20 `pwrite`s per delivery, three times what the WAL and its checkpoint need. In
    // memory it is a copy, truncated when the savepoint is released.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    Ok(())
}

/// Runs the migrations this database has not seen yet, each in its own transaction.
fn migrate(conn: &Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(Error::Database(format!(
            "the database schema is version {version}, newer than this build knows ({known})"
        )));
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Lazily opened read-only connections to a database file.
struct ReadPool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl ReadPool {
    fn take(&self) -> Option<Connection> {
        match self.idle.lock() {
            Ok(mut idle) => idle.pop(),
            Err(poisoned) => poisoned.into_inner().pop(),
        }
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = match self.idle.lock() {
            Ok(idle) => idle,
            Err(poisoned) => poisoned.into_inner(),
        };
        if idle.len() < MAX_IDLE_READERS {
            idle.push(conn);
        }
    }

    fn clear(&self) {
        let conns = match self.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(poisoned) => std::mem::take(&mut *poisoned.into_inner()),
        };
        drop(conns);
    }

    fn open(&self) -> Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "query_only", "ON")?;
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        Ok(conn)
    }

    /// Runs `f` in one read transaction, so multi-statement reads see one snapshot.
    fn run<T>(&self, f: impl FnOnce(&Connection) -> Result<T>) -> Result<T> {
        let conn = match self.take() {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = (|| {
            let tx = conn.unchecked_transaction()?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        self.give_back(conn);
        result
    }
}

/// What the writer thread receives.
enum Msg {
    /// A write (or, for an in-memory database, a read).
    Run(Box<dyn Batched>),
    /// Commit what is in hand and stop.
    Shutdown,
}

/// A command with its result type erased, so one batch can hold commands of any type.
trait Batched: Send {
    /// Runs the command; true when it succeeded (its savepoint is then kept).
    fn run(&mut self, conn: &Connection) -> bool;
    /// Makes the command fail with `err`, whatever it did.
    fn fail(&mut self, err: Error);
    /// Answers the caller; `commit_error` is set when the batch's COMMIT failed.
    fn reply(self: Box<Self>, commit_error: Option<&str>);
}

struct Command<T, F> {
    f: Option<F>,
    result: Option<Result<T>>,
    reply: oneshot::Sender<Result<T>>,
}

impl<T, F> Batched for Command<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(f) = self.f.take() else {
            return false;
        };
        let result = catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
            Err(Error::Database(
                "a store operation panicked; it was rolled back".to_owned(),
            ))
        });
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn fail(&mut self, err: Error) {
        self.f = None;
        self.result = Some(Err(err));
    }

    fn reply(self: Box<Self>, commit_error: Option<&str>) {
        let result = match (self.result, commit_error) {
            (Some(Ok(_)), Some(e)) => Err(Error::Database(format!("commit failed: {e}"))),
            (Some(result), _) => result,
            (None, _) => Err(Error::Unavailable("the command was not run".to_owned())),
        };
        // The caller may have given up waiting; its write stands regardless.
        let _ = self.reply.send(result);
    }
}

/// An ingest waiting in the bulk queue, with the number of events it holds.
struct BulkCommand {
    command: Box<dyn Batched>,
    events: usize,
}

/// The writer's two queues (see the module docs), and an ingest taken from the bulk queue that
/// did not fit in the last commit.
struct Queues {
    urgent: mpsc::Receiver<Msg>,
    bulk: mpsc::Receiver<BulkCommand>,
    carried: Option<BulkCommand>,
    urgent_open: bool,
    bulk_open: bool,
    waiter: tokio::runtime::Runtime,
}

/// What [`Queues::next_batch`] found.
enum Taken {
    /// Commands to commit (possibly none, when only a shutdown came), and whether a shutdown
    /// came after them.
    Batch { shutdown: bool },
    /// Both queues are closed and empty.
    Closed,
}

impl Queues {
    fn new(
        urgent: mpsc::Receiver<Msg>,
        bulk: mpsc::Receiver<BulkCommand>,
        waiter: tokio::runtime::Runtime,
    ) -> Queues {
        Queues {
            urgent,
            bulk,
            carried: None,
            urgent_open: true,
            bulk_open: true,
            waiter,
        }
    }

    /// Blocks until some command waits, then fills `batch` with the next group commit: every
    /// urgent command waiting (up to [`MAX_BATCH`]), then ingests up to [`MAX_INGEST_EVENTS`]
    /// events (at least one ingest command when any waits).
    fn next_batch(&mut self, batch: &mut Vec<Box<dyn Batched>>) -> Taken {
        if self.carried.is_none() {
            let first = self.wait();
            match first {
                None => return Taken::Closed,
                Some(Ok(Msg::Shutdown)) => return Taken::Batch { shutdown: true },
                Some(Ok(Msg::Run(cmd))) => batch.push(cmd),
                Some(Err(ingest)) => self.carried = Some(ingest),
            }
        }
        while batch.len() < MAX_BATCH {
            match self.urgent.try_recv() {
                Ok(Msg::Run(cmd)) => batch.push(cmd),
                // Commands behind a shutdown are dropped: their callers see `Unavailable`.
                Ok(Msg::Shutdown) => return Taken::Batch { shutdown: true },
                Err(_) => break,
            }
        }
        let mut events = 0;
        let mut ingests = 0;
        while batch.len() < MAX_BATCH {
            let next = match self.carried.take() {
                Some(ingest) => ingest,
                None => match self.bulk.try_recv() {
                    Ok(ingest) => ingest,
                    Err(_) => break,
                },
            };
            if ingests > 0 && events + next.events > MAX_INGEST_EVENTS {
                self.carried = Some(next);
                break;
            }
            events += next.events;
            ingests += 1;
            batch.push(next.command);
        }
        Taken::Batch { shutdown: false }
    }

    /// Waits for the first command of either queue, urgent first; `None` once both are closed
    /// and empty.
    fn wait(&mut self) -> Option<std::result::Result<Msg, BulkCommand>> {
        /// What one wait saw.
        enum Woke {
            Urgent(Option<Msg>),
            Bulk(Option<BulkCommand>),
            BothClosed,
        }
        loop {
            let Queues {
                urgent,
                bulk,
                urgent_open,
                bulk_open,
                waiter,
                ..
            } = self;
            let (urgent_open_now, bulk_open_now) = (*urgent_open, *bulk_open);
            let woke = waiter.block_on(async {
                tokio::select! {
                    biased;
                    msg = urgent.recv(), if urgent_open_now => Woke::Urgent(msg),
                    ingest = bulk.recv(), if bulk_open_now => Woke::Bulk(ingest),
                    else => Woke::BothClosed,
                }
            });
            match woke {
                Woke::Urgent(Some(msg)) => return Some(Ok(msg)),
                Woke::Bulk(Some(ingest)) => return Some(Err(ingest)),
                // A closed queue is empty: wait on the other one.
                Woke::Urgent(None) => self.urgent_open = false,
                Woke::Bulk(None) => self.bulk_open = false,
                Woke::BothClosed => return None,
            }
        }
    }

    /// On shutdown: the ingests already queued (the carried one first), at most [`MAX_BATCH`]
    /// at a time; false when none is left.
    fn drain_bulk(&mut self, batch: &mut Vec<Box<dyn Batched>>) -> bool {
        if let Some(ingest) = self.carried.take() {
            batch.push(ingest.command);
        }
        while batch.len() < MAX_BATCH {
            match self.bulk.try_recv() {
                Ok(ingest) => batch.push(ingest.command),
                Err(_) => break,
            }
        }
        !batch.is_empty()
    }

    fn close(&mut self) {
        self.urgent.close();
        self.bulk.close();
    }
}

/// The writer thread: blocks for a command, takes the next group commit from the queues (see
/// [`Queues::next_batch`]), runs it in one transaction, commits, answers, repeats. Ends when
/// every sender is gone or on `Shutdown`.
fn writer_loop(conn: Connection, mut queues: Queues, commits: &AtomicU64) {
    let mut batch: Vec<Box<dyn Batched>> = Vec::with_capacity(MAX_BATCH);
    loop {
        let shutdown = match queues.next_batch(&mut batch) {
            Taken::Closed => break,
            Taken::Batch { shutdown } => shutdown,
        };
        if !batch.is_empty() {
            run_batch(&conn, &mut batch, commits);
        }
        if shutdown {
            // Ingests queued before the shutdown are committed too, as `close` promises.
            while queues.drain_bulk(&mut batch) {
                run_batch(&conn, &mut batch, commits);
            }
            break;
        }
    }
    queues.close();
    // Commands still queued are dropped here and their callers see `Unavailable`.
    drop(queues);
    drop(conn);
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([])?;
    Ok(())
}

/// One group commit.
fn run_batch(conn: &Connection, batch: &mut Vec<Box<dyn Batched>>, commits: &AtomicU64) {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        let why = format!("cannot begin a transaction: {e}");
        for mut cmd in batch.drain(..) {
            cmd.fail(Error::Database(why.clone()));
            cmd.reply(None);
        }
        return;
    }
    let mut aborted: Option<String> = None;
    for cmd in batch.iter_mut() {
        if let Err(e) = exec(conn, "SAVEPOINT cmd") {
            aborted = Some(format!("cannot open a savepoint: {e}"));
            break;
        }
        let ended = if cmd.run(conn) {
            exec(conn, "RELEASE cmd")
        } else {
            exec(conn, "ROLLBACK TO cmd").and_then(|()| exec(conn, "RELEASE cmd"))
        };
        if let Err(e) = ended {
            aborted = Some(format!("cannot end a savepoint: {e}"));
            break;
        }
        // SQLite rolls the whole transaction back on some errors (disk full, I/O): the work of
        // the commands before this one is gone too.
        if conn.is_autocommit() {
            aborted = Some("the transaction was rolled back by SQLite".to_owned());
            break;
        }
    }
    if aborted.is_none() {
        // The events this group inserted go into the text index in one statement (one FTS5
        // segment per commit, not one per command). A failure leaves them for the next commit.
        if let Err(e) = log::index_new_events(conn) {
            if conn.is_autocommit() {
                aborted = Some(format!("indexing the new events failed: {e}"));
            } else {
                tracing::warn!(error = %e, "indexing the new events for text search failed; the next commit retries");
            }
        }
    }
    if let Some(why) = aborted {
        if !conn.is_autocommit() {
            let _ = exec(conn, "ROLLBACK");
        }
        for mut cmd in batch.drain(..) {
            cmd.fail(Error::Database(why.clone()));
            cmd.reply(None);
        }
        return;
    }
    match exec(conn, "COMMIT") {
        Ok(()) => {
            commits.fetch_add(1, Ordering::Relaxed);
            for cmd in batch.drain(..) {
                cmd.reply(None);
            }
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = exec(conn, "ROLLBACK");
            }
            let why = e.to_string();
            for cmd in batch.drain(..) {
                cmd.reply(Some(&why));
            }
        }
    }
}

fn conversion_error(
    column: usize,
    err: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(column, Type::Text, err.into())
}

fn json_column<T: serde::de::DeserializeOwned>(
    row: &Row<'_>,
    column: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(column)?;
    serde_json::from_str(&text).map_err(|e| conversion_error(column, e))
}

fn delivery_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let status: String = row.get(4)?;
    let status = DeliveryStatus::parse(&status)
        .ok_or_else(|| conversion_error(4, format!("unknown delivery status {status:?}")))?;
    Ok(Delivery {
        id: row.get(0)?,
        event_id: row.get(1)?,
        event_type: row.get(2)?,
        webhook_id: row.get(3)?,
        status,
        attempts: row.get(13)?,
        attempts_since_replay: row.get(5)?,
        next_attempt_at: row.get(6)?,
        last_status: row.get(7)?,
        last_error: row.get(8)?,
        created_at: row.get(9)?,
        updated_at: row.get(10)?,
        source: log::source_column(row, 11)?,
        origin: row.get(12)?,
    })
}

fn webhook_row(row: &Row<'_>) -> rusqlite::Result<Webhook> {
    let mut spec: WebhookSpec = json_column(row, 1)?;
    // The column is what claim filters on; the spec agrees with it unless edited by hand.
    spec.enabled = row.get(2)?;
    Ok(Webhook {
        id: row.get(0)?,
        spec,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
    })
}

fn event_row(row: &Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: row.get(0)?,
        event_type: row.get(1)?,
        data: json_column(row, 2)?,
        context: json_column(row, 3)?,
        occurred_at: row.get(4)?,
        received_at: row.get(5)?,
    })
}

fn attempt_row(row: &Row<'_>) -> rusqlite::Result<Attempt> {
    let outcome: String = row.get(9)?;
    let outcome = match outcome.as_str() {
        "succeeded" => AttemptOutcome::Succeeded,
        "retry" => AttemptOutcome::Retry,
        "dead" => AttemptOutcome::Dead,
        "skipped" => AttemptOutcome::Skipped,
        other => return Err(conversion_error(9, format!("unknown outcome {other:?}"))),
    };
    let request: Option<String> = row.get(4)?;
    let request = request
        .map(|text| serde_json::from_str::<RequestLog>(&text))
        .transpose()
        .map_err(|e| conversion_error(4, e))?;
    Ok(Attempt {
        delivery_id: row.get(0)?,
        attempt_no: row.get(1)?,
        started_at: row.get(2)?,
        duration_ms: row.get(3)?,
        request,
        response_status: row.get(5)?,
        response_headers: json_column(row, 6)?,
        response_body: row.get(7)?,
        error: row.get(8)?,
        outcome,
        plugin: log::plugin_columns(row, 10)?,
    })
}

/// Maps a uniqueness violation on `webhooks` to [`Error::Conflict`].
fn webhook_write_error(e: rusqlite::Error, hook: &Webhook) -> Error {
    if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) {
        let msg = e.to_string();
        if msg.contains("webhooks.name") {
            return Error::Conflict(format!("a webhook named {:?} exists", hook.spec.name));
        }
        if msg.contains("webhooks.id") {
            return Error::Conflict(format!("a webhook with id {:?} exists", hook.id));
        }
    }
    e.into()
}

fn find_webhook(conn: &Connection, id_or_name: &str) -> Result<Option<Webhook>> {
    let by_id = conn
        .prepare_cached(concat!(
            "SELECT ",
            webhook_cols!(),
            " FROM webhooks WHERE id = ?1"
        ))?
        .query_row([id_or_name], webhook_row)
        .optional()?;
    if by_id.is_some() {
        return Ok(by_id);
    }
    Ok(conn
        .prepare_cached(concat!(
            "SELECT ",
            webhook_cols!(),
            " FROM webhooks WHERE name = ?1"
        ))?
        .query_row([id_or_name], webhook_row)
        .optional()?)
}

fn find_event(conn: &Connection, id: &str) -> Result<Option<Event>> {
    Ok(conn
        .prepare_cached(concat!(
            "SELECT ",
            event_cols!(),
            " FROM events WHERE id = ?1"
        ))?
        .query_row([id], event_row)
        .optional()?)
}

fn ingest_in(conn: &Connection, events: &[EncodedEvent]) -> Result<Vec<IngestResult>> {
    let mut insert_event = conn.prepare_cached(
        "INSERT INTO events (id, type, data, context, occurred_at, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (id) DO NOTHING",
    )?;
    let mut insert_delivery = conn.prepare_cached(
        "INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, attempts, \
         total_attempts, next_attempt_at, lease_owner, lease_until, created_at, updated_at, \
         source, origin) \
         VALUES (?1, ?2, ?3, ?4, 'pending', 0, 0, ?5, ?6, ?7, ?5, ?5, ?8, ?9)",
    )?;
    let mut count = conn.prepare_cached("SELECT COUNT(*) FROM deliveries WHERE event_id = ?1")?;
    let mut results = Vec::with_capacity(events.len());
    for e in events {
        let ev = &e.event;
        let inserted = insert_event.execute(params![
            ev.id,
            ev.event_type,
            e.data,
            e.context,
            ev.occurred_at,
            ev.received_at
        ])?;
        if inserted == 0 {
            let existing: usize = count.query_row([&ev.id], |r| r.get(0))?;
            results.push(IngestResult {
                id: ev.id.clone(),
                deliveries: existing,
                duplicate: true,
            });
            continue;
        }
        let (owner, until) = match &e.lease {
            Some(lease) => (Some(lease.owner.as_str()), Some(lease.until)),
            None => (None, None),
        };
        for (webhook_id, delivery_id) in &e.deliveries {
            insert_delivery.execute(params![
                delivery_id,
                ev.id,
                webhook_id,
                ev.event_type,
                ev.received_at,
                owner,
                until,
                e.source,
                e.origin
            ])?;
        }
        results.push(IngestResult {
            id: ev.id.clone(),
            deliveries: e.deliveries.len(),
            duplicate: false,
        });
    }
    Ok(results)
}

fn claim_in(conn: &Connection, req: &ClaimRequest) -> Result<Vec<Job>> {
    if req.limit == 0 {
        return Ok(Vec::new());
    }
    let limit = i64::try_from(req.limit).unwrap_or(i64::MAX);
    let webhooks: Vec<String> = conn
        .prepare_cached("SELECT id FROM webhooks WHERE enabled = 1")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    // Each enabled webhook's oldest due deliveries; the oldest `limit` of all of them win.
    let mut due = conn.prepare_cached(
        "SELECT next_attempt_at, id FROM deliveries INDEXED BY deliveries_queue \
         WHERE webhook_id = ?1 AND status = 'pending' AND next_attempt_at <= ?2 \
           AND (lease_until IS NULL OR lease_until <= ?2) \
         ORDER BY next_attempt_at, id LIMIT ?3",
    )?;
    let mut candidates: Vec<(Millis, String)> = Vec::new();
    for webhook_id in webhooks
        .iter()
        .filter(|id| !req.exclude_webhooks.contains(id))
    {
        let rows = due.query_map(params![webhook_id, req.now, limit], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?;
        for row in rows {
            candidates.push(row?);
        }
    }
    candidates.sort_unstable();
    candidates.truncate(req.limit);

    let lease_until = req.now.saturating_add(req.lease_ms);
    let mut lease = conn.prepare_cached(concat!(
        "UPDATE deliveries SET lease_owner = ?2, lease_until = ?3 WHERE id = ?1 RETURNING ",
        delivery_cols!()
    ))?;
    let mut events: HashMap<String, Event> = HashMap::new();
    let mut jobs = Vec::with_capacity(candidates.len());
    for (_, id) in candidates {
        let delivery = lease.query_row(params![id, req.owner, lease_until], delivery_row)?;
        let total = delivery.attempts;
        let event = match events.get(&delivery.event_id) {
            Some(event) => event.clone(),
            None => {
                let event = find_event(conn, &delivery.event_id)?.ok_or_else(|| {
                    Error::Corrupt(format!(
                        "delivery {} refers to missing event {}",
                        delivery.id, delivery.event_id
                    ))
                })?;
                events.insert(event.id.clone(), event.clone());
                event
            }
        };
        jobs.push(Job {
            delivery,
            event,
            attempt_no: total.saturating_add(1),
        });
    }
    Ok(jobs)
}

/// Returns whether `owner` held the lease and whether a webhook was disabled; none when the
/// delivery does not exist (nothing was logged).
fn complete_in(
    conn: &Connection,
    owner: &str,
    c: &EncodedCompletion,
) -> Result<Option<(bool, bool)>> {
    let a = &c.attempt;
    let current: Option<(String, Option<String>)> = conn
        .prepare_cached("SELECT status, lease_owner FROM deliveries WHERE id = ?1")?
        .query_row([&a.delivery_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((status, lease_owner)) = current else {
        return Ok(None);
    };
    let now = now_ms();

    // Attempt numbers only grow: a fenced worker may log the number the new owner was given,
    // in which case the later of the two takes the next free one.
    let mut last_no: u32 = conn
        .prepare_cached("SELECT COALESCE(MAX(attempt_no), 0) FROM attempts WHERE delivery_id = ?1")?
        .query_row([&a.delivery_id], |r| r.get(0))?;
    for e in &c.earlier {
        last_no = insert_attempt(conn, &e.attempt, &e.request, &e.response_headers, last_no)?;
    }
    let attempt_no = insert_attempt(conn, a, &c.request, &c.response_headers, last_no)?;
    let logged = 1 + c.earlier.len() as u32;

    let held = status == DeliveryStatus::Pending.as_str() && lease_owner.as_deref() == Some(owner);
    if held {
        let (status, next_attempt_at) = match c.next {
            Next::Succeeded => (DeliveryStatus::Succeeded, None),
            Next::Dead => (DeliveryStatus::Dead, None),
            Next::Skipped => (DeliveryStatus::Skipped, None),
            Next::RetryAt(at) => (DeliveryStatus::Pending, Some(at)),
        };
        conn.prepare_cached(
            "UPDATE deliveries SET status = ?2, next_attempt_at = ?3, lease_owner = NULL, \
             lease_until = NULL, attempts = attempts + ?8, \
             total_attempts = MAX(total_attempts, ?4), last_status = ?5, last_error = ?6, \
             updated_at = ?7 WHERE id = ?1",
        )?
        .execute(params![
            a.delivery_id,
            status.as_str(),
            next_attempt_at,
            attempt_no,
            a.response_status,
            a.error,
            now,
            logged
        ])?;
    } else {
        // The next claim must hand out a number above the one just logged.
        conn.prepare_cached(
            "UPDATE deliveries SET total_attempts = MAX(total_attempts, ?2) WHERE id = ?1",
        )?
        .execute(params![a.delivery_id, attempt_no])?;
    }

    let mut disabled = false;
    if c.disable_webhook {
        disabled = conn
            .prepare_cached(
                "UPDATE webhooks SET enabled = 0, spec = json_set(spec, '$.enabled', json('false')), \
                 updated_at = ?2 \
                 WHERE id = (SELECT webhook_id FROM deliveries WHERE id = ?1) AND enabled = 1",
            )?
            .execute(params![a.delivery_id, now])?
            > 0;
    }
    Ok(Some((held, disabled)))
}

/// Logs one attempt under the first number above `last_no` (and above the number it was made
/// under); returns the number used.
pub(super) fn insert_attempt(
    conn: &Connection,
    a: &Attempt,
    request: &Option<String>,
    response_headers: &str,
    last_no: u32,
) -> Result<u32> {
    let attempt_no = a.attempt_no.max(last_no.saturating_add(1));
    let (plugin_name, plugin_version) = EncodedAttempt::plugin_of(a);
    conn.prepare_cached(concat!(
        "INSERT INTO attempts (",
        attempt_cols!(),
        ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)"
    ))?
    .execute(params![
        a.delivery_id,
        attempt_no,
        a.started_at,
        i64::try_from(a.duration_ms).unwrap_or(i64::MAX),
        request,
        a.response_status,
        response_headers,
        a.response_body,
        a.error,
        outcome_str(a.outcome),
        plugin_name,
        plugin_version,
    ])?;
    Ok(attempt_no)
}

fn list_deliveries(conn: &Connection, filter: &DeliveryFilter) -> Result<Page<Delivery>> {
    let query = LogQuery::new(filter, Dialect::Sqlite);
    let mut args: Vec<rusqlite::types::Value> = query
        .args
        .iter()
        .map(|a| match a {
            Arg::Text(t) => rusqlite::types::Value::Text(t.clone()),
            Arg::Int(i) => rusqlite::types::Value::Integer(*i),
        })
        .collect();
    args.push(query.fetch.into());
    let items = conn
        .prepare_cached(&query.sql)?
        .query_map(params_from_iter(args), delivery_row)?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(query.page(items))
}

#[async_trait]
impl Store for SqliteStore {
    async fn insert_webhook(&self, hook: &Webhook) -> Result<()> {
        let hook = hook.clone();
        let spec = to_json(&hook.spec)?;
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO webhooks (id, name, enabled, spec, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                hook.id,
                hook.spec.name,
                hook.spec.enabled,
                spec,
                hook.created_at,
                hook.updated_at
            ])
            .map_err(|e| webhook_write_error(e, &hook))?;
            Ok(())
        })
        .await?;
        self.announce(StoreChange::Webhooks);
        Ok(())
    }

    async fn update_webhook(&self, hook: &Webhook) -> Result<bool> {
        let hook = hook.clone();
        let spec = to_json(&hook.spec)?;
        let changed = self
            .write(move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE webhooks SET name = ?2, enabled = ?3, spec = ?4, updated_at = ?5 \
                         WHERE id = ?1",
                    )?
                    .execute(params![
                        hook.id,
                        hook.spec.name,
                        hook.spec.enabled,
                        spec,
                        hook.updated_at
                    ])
                    .map_err(|e| webhook_write_error(e, &hook))?;
                Ok(changed > 0)
            })
            .await?;
        if changed {
            self.announce(StoreChange::Webhooks);
        }
        Ok(changed)
    }

    async fn rewrite_webhooks(&self, rewrite: super::WebhookRewrite) -> Result<usize> {
        // One writer transaction: nothing else writes meanwhile.
        let changed = self
            .write(move |conn| {
                let hooks = conn
                    .prepare_cached(concat!("SELECT ", webhook_cols!(), " FROM webhooks"))?
                    .query_map([], webhook_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                let mut changed = 0;
                let mut update =
                    conn.prepare_cached("UPDATE webhooks SET spec = ?2 WHERE id = ?1")?;
                for mut hook in hooks {
                    if rewrite(&mut hook)? {
                        update.execute(params![hook.id, to_json(&hook.spec)?])?;
                        changed += 1;
                    }
                }
                Ok(changed)
            })
            .await?;
        if changed > 0 {
            self.announce(StoreChange::Webhooks);
        }
        Ok(changed)
    }

    async fn delete_webhook(&self, id: &str) -> Result<bool> {
        let id = id.to_owned();
        let deleted = self
            .write(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM webhooks WHERE id = ?1")?
                    .execute([&id])?;
                if deleted == 0 {
                    return Ok(false);
                }
                conn.prepare_cached(
                    "UPDATE deliveries SET status = 'dead', last_error = 'webhook deleted', \
                 next_attempt_at = NULL, lease_owner = NULL, lease_until = NULL, updated_at = ?2 \
                 WHERE webhook_id = ?1 AND status = 'pending'",
                )?
                .execute(params![id, now_ms()])?;
                Ok(true)
            })
            .await?;
        if deleted {
            self.announce(StoreChange::Webhooks);
        }
        Ok(deleted)
    }

    async fn webhook(&self, id_or_name: &str) -> Result<Option<Webhook>> {
        let key = id_or_name.to_owned();
        self.read(move |conn| find_webhook(conn, &key)).await
    }

    async fn webhooks(&self) -> Result<Vec<Webhook>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(concat!(
                    "SELECT ",
                    webhook_cols!(),
                    " FROM webhooks ORDER BY created_at, rowid"
                ))?
                .query_map([], webhook_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn ingest(&self, events: Vec<EventToIngest>) -> Result<Vec<IngestResult>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = encode_events(events)?;
        let results = self
            .write_bulk(encoded.len(), move |conn| ingest_in(conn, &encoded))
            .await?;
        self.counts.ingested(&results);
        Ok(results)
    }

    async fn event(&self, id: &str) -> Result<Option<Event>> {
        let id = id.to_owned();
        self.read(move |conn| find_event(conn, &id)).await
    }

    async fn claim(&self, req: ClaimRequest) -> Result<Vec<Job>> {
        self.write(move |conn| claim_in(conn, &req)).await
    }

    async fn release(&self, owner: &str, delivery_ids: &[String]) -> Result<()> {
        if delivery_ids.is_empty() {
            return Ok(());
        }
        let owner = owner.to_owned();
        let ids = delivery_ids.to_vec();
        self.write(move |conn| {
            let mut release = conn.prepare_cached(
                "UPDATE deliveries SET lease_owner = NULL, lease_until = NULL \
                 WHERE id = ?1 AND lease_owner = ?2 AND status = 'pending'",
            )?;
            for id in &ids {
                release.execute(params![id, owner])?;
            }
            Ok(())
        })
        .await
    }

    async fn complete(&self, owner: &str, completion: Completion) -> Result<bool> {
        let owner = owner.to_owned();
        let encoded = EncodedCompletion::new(completion)?;
        let logged = 1 + encoded.earlier.len() as i64;
        let (found, held, disabled, followups) = self
            .write(move |conn| {
                let Some((held, disabled)) = complete_in(conn, &owner, &encoded)? else {
                    return Ok((false, false, false, Vec::new()));
                };
                let mut followups = Vec::new();
                if held && !encoded.followups.is_empty() {
                    followups = ingest_in(conn, &encoded.followups)?;
                }
                Ok((true, held, disabled, followups))
            })
            .await?;
        if found {
            self.counts.attempts_logged(logged);
        }
        self.counts.ingested(&followups);
        if disabled {
            self.announce(StoreChange::Webhooks);
        }
        Ok(held)
    }

    async fn deliveries(&self, filter: &DeliveryFilter) -> Result<Page<Delivery>> {
        let filter = filter.clone();
        self.read(move |conn| list_deliveries(conn, &filter)).await
    }

    async fn delivery(&self, id: &str) -> Result<Option<(Delivery, Vec<Attempt>)>> {
        let id = id.to_owned();
        self.read(move |conn| {
            let Some(delivery) = conn
                .prepare_cached(concat!(
                    "SELECT ",
                    delivery_cols!(),
                    " FROM deliveries WHERE id = ?1"
                ))?
                .query_row([&id], delivery_row)
                .optional()?
            else {
                return Ok(None);
            };
            let attempts = conn
                .prepare_cached(concat!(
                    "SELECT ",
                    attempt_cols!(),
                    " FROM attempts WHERE delivery_id = ?1 ORDER BY attempt_no"
                ))?
                .query_map([&id], attempt_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok(Some((delivery, attempts)))
        })
        .await
    }

    async fn replay_delivery(&self, id: &str, now: Millis) -> Result<Option<Delivery>> {
        let id = id.to_owned();
        self.write(move |conn| {
            Ok(conn
                .prepare_cached(concat!(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, \
                     next_attempt_at = ?2, lease_owner = NULL, lease_until = NULL, \
                     updated_at = ?2 WHERE id = ?1 AND source <> 'inbound' RETURNING ",
                    delivery_cols!()
                ))?
                .query_row(params![id, now], delivery_row)
                .optional()?)
        })
        .await
    }

    async fn replay_dead(&self, webhook_id: &str, now: Millis) -> Result<u64> {
        let webhook_id = webhook_id.to_owned();
        self.write(move |conn| {
            let n = conn
                .prepare_cached(
                    "UPDATE deliveries SET status = 'pending', attempts = 0, \
                     next_attempt_at = ?2, lease_owner = NULL, lease_until = NULL, \
                     updated_at = ?2 WHERE webhook_id = ?1 AND status = 'dead' \
                     AND source NOT IN ('inbound', 'test')",
                )?
                .execute(params![webhook_id, now])?;
            Ok(n as u64)
        })
        .await
    }

    async fn queue_stats(&self, now: Millis) -> Result<QueueStats> {
        self.read(move |conn| {
            let (pending, due, oldest): (u64, u64, Option<Millis>) = conn
                .prepare_cached(
                    "SELECT COUNT(*), \
                     COALESCE(SUM(d.next_attempt_at <= ?1 AND w.enabled = 1), 0), \
                     MIN(CASE WHEN w.enabled = 1 THEN d.next_attempt_at END) \
                     FROM deliveries d INDEXED BY deliveries_queue \
                     LEFT JOIN webhooks w ON w.id = d.webhook_id \
                     WHERE d.status = 'pending'",
                )?
                .query_row([now], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            let oldest_due_age_ms = match oldest {
                Some(at) if at <= now => u64::try_from(now - at).unwrap_or(0),
                _ => 0,
            };
            Ok(QueueStats {
                pending,
                due,
                oldest_due_age_ms,
            })
        })
        .await
    }

    async fn due_count(&self, now: Millis, at_most: u64) -> Result<u64> {
        let at_most = i64::try_from(at_most).unwrap_or(i64::MAX);
        self.read(move |conn| {
            // Webhook by webhook, a range of the queue index each: never the retries waiting.
            let n: u64 = conn
                .prepare_cached(DUE_COUNT)?
                .query_row(params![now, at_most], |r| r.get(0))?;
            Ok(n)
        })
        .await
    }

    async fn add_plugin_version(
        &self,
        name: &str,
        sha256: &str,
        wasm: Vec<u8>,
        now: Millis,
    ) -> Result<PluginVersion> {
        let (name, sha256) = (name.to_owned(), sha256.to_owned());
        let (stored, added) = self.write(move |conn| {
            let existing = conn
                .prepare_cached(
                    "SELECT version, size, created_at FROM plugin_versions \
                     WHERE name = ?1 AND sha256 = ?2",
                )?
                .query_row(params![name, sha256], |r| {
                    Ok((r.get::<_, u32>(0)?, r.get::<_, u64>(1)?, r.get::<_, Millis>(2)?))
                })
                .optional()?;
            let added = existing.is_none();
            let (version, size, created_at) = match existing {
                Some(found) => found,
                None => {
                    let version: u32 = conn
                        .prepare_cached(
                            "SELECT COALESCE(MAX(version), 0) + 1 FROM plugin_versions WHERE name = ?1",
                        )?
                        .query_row([&name], |r| r.get(0))?;
                    let size = wasm.len() as u64;
                    conn.prepare_cached(
                        "INSERT INTO plugin_versions (name, version, sha256, size, wasm, created_at) \
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                    )?
                    .execute(params![name, version, sha256, size, wasm, now])?;
                    conn.prepare_cached("INSERT INTO plugins (name) VALUES (?1) ON CONFLICT DO NOTHING")?
                        .execute([&name])?;
                    (version, size, now)
                }
            };
            Ok((
                PluginVersion {
                    name,
                    version,
                    sha256,
                    size,
                    created_at,
                },
                added,
            ))
        })
        .await?;
        if added {
            self.announce(StoreChange::Plugins);
        }
        Ok(stored)
    }

    async fn plugins(&self) -> Result<Vec<PluginRecord>> {
        self.read(move |conn| {
            let mut records: Vec<PluginRecord> = conn
                .prepare_cached("SELECT name, active FROM plugins ORDER BY name")?
                .query_map([], |r| {
                    Ok(PluginRecord {
                        name: r.get(0)?,
                        active: r.get(1)?,
                        versions: Vec::new(),
                    })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut stmt = conn.prepare_cached(
                "SELECT name, version, sha256, size, created_at FROM plugin_versions \
                 WHERE name = ?1 ORDER BY version",
            )?;
            for record in &mut records {
                record.versions = stmt
                    .query_map([&record.name], |r| {
                        Ok(PluginVersion {
                            name: r.get(0)?,
                            version: r.get(1)?,
                            sha256: r.get(2)?,
                            size: r.get(3)?,
                            created_at: r.get(4)?,
                        })
                    })?
                    .collect::<rusqlite::Result<_>>()?;
            }
            Ok(records)
        })
        .await
    }

    async fn plugin_wasm(&self, name: &str, version: u32) -> Result<Option<Vec<u8>>> {
        let name = name.to_owned();
        self.read(move |conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT wasm FROM plugin_versions WHERE name = ?1 AND version = ?2",
                )?
                .query_row(params![name, version], |r| r.get(0))
                .optional()?)
        })
        .await
    }

    async fn set_active_plugin(&self, name: &str, version: u32) -> Result<bool> {
        let name = name.to_owned();
        let activated = self
            .write(move |conn| {
                let n = conn
                    .prepare_cached(
                        "UPDATE plugins SET active = ?2 WHERE name = ?1 AND EXISTS \
                         (SELECT 1 FROM plugin_versions WHERE name = ?1 AND version = ?2)",
                    )?
                    .execute(params![name, version])?;
                Ok(n == 1)
            })
            .await?;
        if activated {
            self.announce(StoreChange::Plugins);
        }
        Ok(activated)
    }

    async fn remember_message(
        &self,
        scope: &str,
        message_id: &str,
        until: Millis,
        now: Millis,
    ) -> Result<bool> {
        let (scope, message_id) = (scope.to_owned(), message_id.to_owned());
        let purge = self
            .remembered
            .fetch_add(1, Ordering::Relaxed)
            .is_multiple_of(PURGE_EVERY);
        self.write(move |conn| {
            if purge {
                conn.prepare_cached("DELETE FROM inbound_messages WHERE expires_at <= ?1")?
                    .execute([now])?;
            }
            // A live record wins; an expired one is taken over as if it were new.
            let n = conn
                .prepare_cached(
                    "INSERT INTO inbound_messages (scope, message_id, expires_at) \
                     VALUES (?1, ?2, ?3) ON CONFLICT (scope, message_id) \
                     DO UPDATE SET expires_at = excluded.expires_at \
                     WHERE inbound_messages.expires_at <= ?4",
                )?
                .execute(params![scope, message_id, until, now])?;
            Ok(n == 1)
        })
        .await
    }

    async fn log_delivery(&self, entry: crate::model::LoggedDelivery) -> Result<()> {
        self.log_finished(entry).await
    }
    async fn purge(&self, policy: &super::PurgePolicy) -> Result<super::Purged> {
        self.purge_batch(policy).await
    }
    async fn row_counts(&self) -> Result<super::RowCounts> {
        Ok(self.counts.get())
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::model::new_id;
    use crate::store::conformance;
    use crate::store::{DEFAULT_PAGE, MAX_PAGE};

    /// A directory removed when dropped (drop the store first).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new() -> TempDir {
            let dir = std::env::temp_dir().join(format!("hookyard-sqlite-{}", new_id("test")));
            std::fs::create_dir_all(&dir).expect("create temp dir");
            TempDir(dir)
        }

        /// A database path whose parent does not exist yet.
        fn db(&self) -> PathBuf {
            self.0.join("nested").join("hookyard.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn file_store(dir: &TempDir) -> Arc<SqliteStore> {
        Arc::new(SqliteStore::open(&dir.db()).expect("open store"))
    }

    /// Runs each conformance check against a file database and an in-memory one.
    macro_rules! conformance_tests {
        ($($name:ident),* $(,)?) => {
            mod on_file {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread")]
                    async fn $name() {
                        let dir = TempDir::new();
                        conformance::$name(file_store(&dir)).await;
                    }
                )*
            }
            mod in_memory {
                use super::*;
                $(
                    #[tokio::test(flavor = "multi_thread")]
                    async fn $name() {
                        let store = SqliteStore::open_url("sqlite::memory:").expect("open store");
                        conformance::$name(Arc::new(store)).await;
                    }
                )*
            }
        };
    }

    for_each_check!(conformance_tests);

    #[tokio::test(flavor = "multi_thread")]
    async fn persists_across_reopen() {
        let dir = TempDir::new();
        let path = dir.db();
        conformance::persists_across_reopen(|| {
            let path = path.clone();
            async move { Arc::new(SqliteStore::open(&path).expect("open store")) as Arc<dyn Store> }
        })
        .await;
    }

    /// The savepoints of a group commit keep their sub-journals in memory: spilled into a
    /// temporary file, they cost more `pwrite`s than the WAL itself.
    #[tokio::test]
    async fn the_writer_keeps_savepoint_journals_in_memory() {
        let dir = TempDir::new();
        let store = file_store(&dir);
        let temp_store: i64 = store
            .write(|conn| Ok(conn.pragma_query_value(None, "temp_store", |r| r.get(0))?))
            .await
            .expect("read the pragma");
        assert_eq!(temp_store, 2, "temp_store is not MEMORY");
    }

    /// The checkpoint thread copies committed pages into the database file by itself: far below
    /// the writer's own checkpoint threshold, the file grows within a few ticks of a commit.
    #[tokio::test(flavor = "multi_thread")]
    async fn a_thread_checkpoints_the_wal() {
        let dir = TempDir::new();
        let store = file_store(&dir);
        let hook = conformance::webhook("hook");
        store.insert_webhook(&hook).await.expect("insert webhook");
        let size = || std::fs::metadata(dir.db()).map_or(0, |m| m.len());
        // The schema and the webhook reach the file first.
        tokio::time::sleep(CHECKPOINT_EVERY * 3).await;
        let before = size();
        let events = (0..500)
            .map(|i| EventToIngest {
                event: conformance::event(&format!("evt-{i}"), "user.created", conformance::T0),
                deliveries: vec![(hook.id.clone(), new_id("msg"))],
                lease: None,
            })
            .collect();
        store.ingest(events).await.expect("ingest");
        let wal = dir.db().with_extension("db-wal");
        let wal_pages = std::fs::metadata(&wal).map_or(0, |m| m.len()) / 4096;
        assert!(
            wal_pages < WRITER_CHECKPOINT_PAGES as u64,
            "the writer would checkpoint {wal_pages} pages itself"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while size() <= before {
            assert!(
                std::time::Instant::now() < deadline,
                "the database file stayed at {before} bytes: nothing checkpointed the WAL"
            );
            tokio::time::sleep(CHECKPOINT_EVERY / 2).await;
        }
        store.close().await;
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn concurrent_ingests_share_commits() {
        const N: usize = 200;
        let dir = TempDir::new();
        let store = file_store(&dir);
        let hook = conformance::webhook("hook");
        store.insert_webhook(&hook).await.expect("insert webhook");
        let before = store.commits();

        let mut tasks = Vec::new();
        for i in 0..N {
            let store = store.clone();
            let hook_id = hook.id.clone();
            tasks.push(tokio::spawn(async move {
                let event =
                    conformance::event(&format!("evt-{i}"), "user.created", conformance::T0);
                store
                    .ingest(vec![EventToIngest {
                        event,
                        deliveries: vec![(hook_id, new_id("msg"))],
                        lease: None,
                    }])
                    .await
            }));
        }
        for task in tasks {
            let results = task.await.expect("task").expect("ingest");
            assert!(!results[0].duplicate);
            assert_eq!(results[0].deliveries, 1);
        }
        let commits = store.commits() - before;
        assert!(commits < N as u64, "{N} ingests took {commits} commits");

        let page = store
            .deliveries(&DeliveryFilter {
                limit: 1000,
                ..Default::default()
            })
            .await
            .expect("list");
        assert_eq!(page.items.len(), N);
        let stats = store.queue_stats(conformance::T0).await.expect("stats");
        assert_eq!(stats.due, N as u64);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn log_pages_are_capped() {
        let store = SqliteStore::open_memory().expect("open store");
        let hook = conformance::webhook("hook");
        store.insert_webhook(&hook).await.expect("insert webhook");
        let events = (0..MAX_PAGE + 5)
            .map(|i| EventToIngest {
                event: conformance::event(&format!("evt-{i}"), "user.created", conformance::T0),
                deliveries: vec![(hook.id.clone(), new_id("msg"))],
                lease: None,
            })
            .collect();
        store.ingest(events).await.expect("ingest");
        let all = |limit| DeliveryFilter {
            limit,
            ..Default::default()
        };
        let page = store.deliveries(&all(50_000)).await.expect("list");
        assert_eq!(page.items.len(), MAX_PAGE);
        assert!(page.next_cursor.is_some());
        let page = store.deliveries(&all(0)).await.expect("list");
        assert_eq!(page.items.len(), DEFAULT_PAGE);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn disabling_keeps_spec_json_in_step() {
        let dir = TempDir::new();
        let store = file_store(&dir);
        let hook = conformance::webhook("gone");
        store.insert_webhook(&hook).await.expect("insert webhook");
        let event = conformance::event("evt-1", "user.created", conformance::T0);
        store
            .ingest(vec![EventToIngest {
                event,
                deliveries: vec![(hook.id.clone(), new_id("msg"))],
                lease: None,
            }])
            .await
            .expect("ingest");
        let job = store
            .claim(ClaimRequest {
                owner: "w".to_owned(),
                now: conformance::T0,
                lease_ms: 1_000,
                limit: 1,
                exclude_webhooks: Vec::new(),
            })
            .await
            .expect("claim")
            .remove(0);
        let completion = Completion {
            attempt: Attempt {
                delivery_id: job.delivery.id.clone(),
                attempt_no: job.attempt_no,
                started_at: conformance::T0,
                duration_ms: 1,
                request: None,
                response_status: Some(410),
                response_headers: Vec::new(),
                response_body: None,
                error: Some("HTTP 410".to_owned()),
                outcome: AttemptOutcome::Dead,
                plugin: None,
            },
            next: Next::Dead,
            disable_webhook: true,
            followups: Vec::new(),
            earlier: Vec::new(),
        };
        assert!(store.complete("w", completion).await.expect("complete"));

        let conn = Connection::open(dir.db()).expect("open raw");
        let (column, in_spec, spec): (bool, bool, String) = conn
            .query_row(
                "SELECT enabled, json_extract(spec, '$.enabled'), spec FROM webhooks WHERE id = ?1",
                [&hook.id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("read webhook row");
        assert!(!column);
        assert!(!in_spec);
        let spec: WebhookSpec = serde_json::from_str(&spec).expect("the spec still parses");
        assert!(!spec.enabled);
    }

    /// Polls `done` every 5 ms for at most 20 s.
    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !done() {
            assert!(std::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A completion (and the command behind it) sent while thousands of ingests wait for the
    /// writer is in the very next group commit, ahead of every one of them; the ingests all
    /// commit afterwards, at most `MAX_INGEST_EVENTS` to a commit. With one FIFO queue the
    /// completion would wait for the flood (its probe would count ~4,000 events).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_completion_overtakes_a_flood_of_ingests() {
        const FLOOD: usize = 4000;
        let dir = TempDir::new();
        let store = file_store(&dir);
        let hook = conformance::webhook("hook");
        store.insert_webhook(&hook).await.expect("insert webhook");
        store
            .ingest(vec![EventToIngest {
                event: conformance::event("first", "user.created", conformance::T0),
                deliveries: vec![(hook.id.clone(), new_id("msg"))],
                lease: None,
            }])
            .await
            .expect("ingest");
        let jobs = store
            .claim(conformance::claim_req("w1", conformance::T0 + 10, 10))
            .await
            .expect("claim");
        assert_eq!(jobs.len(), 1);
        let job = jobs[0].clone();

        // Hold the writer in a commit while the flood and the completion queue up.
        let (open_gate, gate) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = oneshot::channel::<()>();
        let held = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_| {
                        let _ = entered_tx.send(());
                        let _ = gate.recv_timeout(Duration::from_secs(30));
                        Ok(())
                    })
                    .await
            })
        };
        entered.await.expect("the writer runs the gate");

        let flood: Vec<_> = (0..FLOOD)
            .map(|i| {
                let store = store.clone();
                let hook_id = hook.id.clone();
                tokio::spawn(async move {
                    let event =
                        conformance::event(&format!("evt-{i}"), "user.created", conformance::T0);
                    store
                        .ingest(vec![EventToIngest {
                            event,
                            deliveries: vec![(hook_id, new_id("msg"))],
                            lease: None,
                        }])
                        .await
                })
            })
            .collect();
        let bulk = store.bulk.clone().expect("open");
        eventually("the flood is queued", || {
            QUEUE_CAPACITY - bulk.capacity() == FLOOD
        })
        .await;

        let completed = {
            let store = store.clone();
            let completion = conformance::completion(&job, Next::Succeeded, Some(200));
            tokio::spawn(async move { store.complete("w1", completion).await })
        };
        let urgent = store.tx.clone().expect("open");
        eventually("the completion is queued", || {
            QUEUE_CAPACITY - urgent.capacity() == 1
        })
        .await;
        // Queued right behind the completion: what its transaction saw.
        let delivery_id = job.delivery.id.clone();
        let probe = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |conn| {
                        let events: i64 =
                            conn.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))?;
                        let status: String = conn.query_row(
                            "SELECT status FROM deliveries WHERE id = ?1",
                            [&delivery_id],
                            |r| r.get(0),
                        )?;
                        Ok((events, status))
                    })
                    .await
            })
        };
        eventually("the probe is queued", || {
            QUEUE_CAPACITY - urgent.capacity() == 2
        })
        .await;
        let before = store.commits();
        open_gate.send(()).expect("open the gate");

        held.await.expect("task").expect("gate");
        assert!(completed.await.expect("task").expect("complete"));
        let (events, status) = probe.await.expect("task").expect("probe");
        assert_eq!(status, "succeeded", "the completion committed first");
        assert_eq!(
            events, 1,
            "no ingest of the flood committed before the completion"
        );

        for task in flood {
            let results = task.await.expect("task").expect("ingest");
            assert_eq!(results[0].deliveries, 1);
        }
        let commits = store.commits() - before;
        let least = (FLOOD / MAX_INGEST_EVENTS) as u64;
        assert!(
            commits > least,
            "{FLOOD} ingests in {commits} commits: more than {MAX_INGEST_EVENTS} to a commit"
        );
        let stats = store.queue_stats(conformance::T0).await.expect("stats");
        assert_eq!(stats.pending, FLOOD as u64);
    }

    /// The back-pressure's count reads a range of the queue index per webhook.
    #[test]
    fn due_count_reads_only_due_ranges_of_the_queue_index() {
        let conn = Connection::open_in_memory().expect("open");
        migrate(&conn).expect("migrate");
        let plan: Vec<String> = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {DUE_COUNT}"))
            .expect("explain")
            .query_map(params![0, 10], |r| r.get::<_, String>(3))
            .expect("plan")
            .collect::<rusqlite::Result<_>>()
            .expect("rows");
        let text = plan.join("\n");
        assert!(
            text.contains("INDEX deliveries_queue (webhook_id=? AND next_attempt_at<?)"),
            "{text}"
        );
    }

    /// `close` commits the ingests queued before it, whichever queue they are in.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn close_commits_queued_ingests() {
        let dir = TempDir::new();
        let store = file_store(&dir);
        let hook = conformance::webhook("hook");
        store.insert_webhook(&hook).await.expect("insert webhook");
        let (open_gate, gate) = std::sync::mpsc::channel::<()>();
        let (entered_tx, entered) = oneshot::channel::<()>();
        let held = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |_| {
                        let _ = entered_tx.send(());
                        let _ = gate.recv_timeout(Duration::from_secs(30));
                        Ok(())
                    })
                    .await
            })
        };
        entered.await.expect("the writer runs the gate");
        let ingests: Vec<_> = (0..50)
            .map(|i| {
                let store = store.clone();
                let hook_id = hook.id.clone();
                tokio::spawn(async move {
                    store
                        .ingest(vec![EventToIngest {
                            event: conformance::event(&format!("e{i}"), "t", conformance::T0),
                            deliveries: vec![(hook_id, new_id("msg"))],
                            lease: None,
                        }])
                        .await
                })
            })
            .collect();
        let bulk = store.bulk.clone().expect("open");
        eventually("the ingests are queued", || {
            QUEUE_CAPACITY - bulk.capacity() == 50
        })
        .await;
        drop(bulk);
        let closing = {
            let store = store.clone();
            tokio::spawn(async move { store.close().await })
        };
        let urgent = store.tx.clone().expect("open");
        eventually("the shutdown is queued", || {
            QUEUE_CAPACITY - urgent.capacity() == 1
        })
        .await;
        drop(urgent);
        open_gate.send(()).expect("open the gate");
        held.await.expect("task").expect("gate");
        closing.await.expect("close");
        for task in ingests {
            task.await
                .expect("task")
                .expect("committed before the close");
        }
        let reopened = SqliteStore::open(&dir.db()).expect("reopen");
        let stats = reopened.queue_stats(conformance::T0).await.expect("stats");
        assert_eq!(stats.pending, 50);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn close_stops_the_writer() {
        let dir = TempDir::new();
        let store = file_store(&dir);
        store
            .insert_webhook(&conformance::webhook("hook"))
            .await
            .expect("insert webhook");
        store.close().await;
        store.close().await;
        let write = store.insert_webhook(&conformance::webhook("late")).await;
        assert!(matches!(write, Err(Error::Unavailable(_))), "{write:?}");
        let read = store.webhooks().await;
        assert!(matches!(read, Err(Error::Unavailable(_))), "{read:?}");

        let reopened = file_store(&dir);
        assert_eq!(reopened.webhooks().await.expect("list").len(), 1);
    }

    #[test]
    fn schema_is_versioned() {
        let dir = TempDir::new();
        let path = dir.db();
        drop(SqliteStore::open(&path).expect("open store"));
        let conn = Connection::open(&path).expect("open raw");
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .expect("user_version");
        assert_eq!(version, MIGRATIONS.len() as i64);
        let mode: String = conn
            .pragma_query_value(None, "journal_mode", |r| r.get(0))
            .expect("journal_mode");
        assert_eq!(mode, "wal");

        // Reopening runs nothing again.
        drop(SqliteStore::open(&path).expect("reopen store"));

        conn.pragma_update(None, "user_version", 99)
            .expect("set user_version");
        drop(conn);
        let newer = SqliteStore::open(&path);
        assert!(matches!(newer, Err(Error::Database(_))), "{newer:?}");
    }

    #[test]
    fn urls() {
        assert_eq!(parse_url("sqlite::memory:").ok(), Some(Location::Memory));
        assert_eq!(parse_url("sqlite://:memory:").ok(), Some(Location::Memory));
        assert_eq!(
            parse_url("sqlite://data/hookyard.db").ok(),
            Some(Location::File(PathBuf::from("data/hookyard.db")))
        );
        assert_eq!(
            parse_url("sqlite:///var/lib/hookyard.db?mode=rwc").ok(),
            Some(Location::File(PathBuf::from("/var/lib/hookyard.db")))
        );
        assert_eq!(
            parse_url("sqlite:hookyard.db").ok(),
            Some(Location::File(PathBuf::from("hookyard.db")))
        );
        assert!(parse_url("postgres://localhost/db").is_err());
        assert!(parse_url("sqlite://").is_err());
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn open_url_creates_the_file() {
        let dir = TempDir::new();
        let path = dir.db();
        let store = SqliteStore::open_url(&format!("sqlite://{}", path.display())).expect("open");
        assert!(store.webhooks().await.expect("list").is_empty());
        drop(store);
        assert!(path.exists());
    }
}
