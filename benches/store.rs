//! SQLite store micro-benchmarks: ingest (serial, batched, concurrent) and the worker's
//! claim-and-complete path, on a real file (WAL, `synchronous=FULL`, so every commit is
//! fsync'd) in a temporary directory that is removed afterwards.
//!
//! `cargo bench --bench store` (see docs/BENCHMARKS.md). Each bench uses its own fresh database.
//! The numbers depend mostly on the disk's fsync latency.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, SamplingMode, Throughput};
use hookyard::model::{
    new_id, now_ms, Attempt, AttemptOutcome, Completion, Event, EventToIngest, Json, Next,
    RequestLog, Webhook, WebhookSpec,
};
use hookyard::store::sqlite::SqliteStore;
use hookyard::store::{ClaimRequest, Store};
use serde_json::{json, Value};
use tempfile::TempDir;

const OWNER: &str = "bench-worker";
const CONCURRENT: usize = 64;
const BATCH: usize = 100;
const CLAIM: usize = 100;

/// A fresh store in its own temporary directory, with one enabled webhook subscribed to all.
struct Db {
    store: Arc<SqliteStore>,
    hook: Webhook,
    data: Json,
    _dir: TempDir,
}

impl Db {
    async fn open() -> Db {
        let dir = tempfile::Builder::new()
            .prefix("hookyard-bench-store-")
            .tempdir()
            .expect("temporary directory");
        let store = SqliteStore::open(&dir.path().join("hookyard.db")).expect("open the store");
        let spec: WebhookSpec = serde_json::from_value(json!({
            "name": "bench",
            "events": ["*"],
            "url": "https://bench.example.test/hook",
        }))
        .expect("a valid spec");
        let now = now_ms();
        let hook = Webhook {
            id: new_id("wh"),
            spec,
            created_at: now,
            updated_at: now,
        };
        store.insert_webhook(&hook).await.expect("insert webhook");
        Db {
            store: Arc::new(store),
            hook,
            data: user_record().into(),
            _dir: dir,
        }
    }

    /// [`Db::open`] without the Webhook Log's full-text index: the `events_fts` table and its
    /// delete trigger dropped, so the writer's per-commit indexing statement fails at once (no
    /// such table; it is logged, and the commit goes on). The A/B of what the index costs ingest.
    async fn open_without_text_index() -> Db {
        let db = Db::open().await;
        let path = db._dir.path().join("hookyard.db");
        let conn = rusqlite::Connection::open(&path).expect("a second connection");
        conn.execute_batch("DROP TRIGGER events_fts_delete; DROP TABLE events_fts;")
            .expect("drop the full-text index");
        db
    }

    /// A new event (fresh id, received now) with one delivery to the webhook.
    fn event(&self) -> EventToIngest {
        let now = now_ms();
        EventToIngest {
            event: Event {
                id: new_id("evt"),
                event_type: "user.modified".into(),
                data: self.data.clone(),
                context: json!({"actor": {"id": 1, "username": "admin"}, "tenant": "acme-corp"})
                    .into(),
                occurred_at: now - 3,
                received_at: now,
            },
            deliveries: vec![(self.hook.id.clone(), new_id("msg"))],
            lease: None,
        }
    }

    fn events(&self, n: usize) -> Vec<EventToIngest> {
        (0..n).map(|_| self.event()).collect()
    }

    async fn ingest(&self, events: Vec<EventToIngest>) {
        ingest(&self.store, events).await
    }

    /// Ingests each event in its own task, all at once (as concurrent `POST /v1/events` do).
    async fn ingest_concurrently(&self, events: Vec<EventToIngest>) {
        let tasks: Vec<_> = events
            .into_iter()
            .map(|e| {
                let store = self.store.clone();
                tokio::spawn(async move { ingest(&store, vec![e]).await })
            })
            .collect();
        for task in tasks {
            task.await.expect("ingest task");
        }
    }

    /// Claims up to `limit` due deliveries; returns their ids.
    async fn claim(&self, limit: usize) -> Vec<String> {
        let jobs = self
            .store
            .claim(ClaimRequest {
                owner: OWNER.into(),
                now: now_ms(),
                lease_ms: 30_000,
                limit,
                exclude_webhooks: Vec::new(),
            })
            .await
            .expect("claim");
        jobs.into_iter().map(|j| j.delivery.id).collect()
    }

    /// Logs a successful attempt of each delivery, concurrently (the worker runs one task per
    /// delivery, so its completions arrive together and share commits).
    async fn complete(&self, ids: Vec<String>) {
        let tasks: Vec<_> = ids
            .into_iter()
            .map(|id| {
                let store = self.store.clone();
                tokio::spawn(async move { store.complete(OWNER, completion(id)).await })
            })
            .collect();
        for task in tasks {
            let done = task.await.expect("complete task");
            assert!(matches!(done, Ok(true)), "a completion failed: {done:?}");
        }
    }

    async fn close(self) {
        self.store.close().await;
    }
}

/// Commits `events`; panics unless each was new and got its delivery.
async fn ingest(store: &SqliteStore, events: Vec<EventToIngest>) {
    let n = events.len();
    let results = store.ingest(events).await.expect("ingest");
    assert!(
        results.len() == n && results.iter().all(|r| !r.duplicate && r.deliveries == 1),
        "ingest did not enqueue every event: {results:?}"
    );
}

/// About 700 bytes of user record, as in the plugin benches.
fn user_record() -> Value {
    json!({
        "id": 48213, "username": "jdoe", "first_name": "John", "last_name": "Doe",
        "email": "John.Doe@Example.COM", "phone": "+48 600 100 200", "employee_id": "E-0048213",
        "title": "Senior Software Engineer", "department": "Platform Engineering",
        "manager_id": 1021, "is_active": true, "is_admin": false, "mfa_enabled": true,
        "locale": "pl_PL", "devices": 3,
        "location": {"office": "Warsaw HQ", "city": "Warsaw", "country": "PL"},
        "groups": ["admin", "developers", "vpn-users", "on-call"],
        "created_at": "2023-02-14T09:30:00Z", "last_login": "2024-05-01T07:45:12+02:00"
    })
}

/// A successful attempt as the worker logs it: the request (headers, a 700-byte body), a small
/// response.
fn completion(delivery_id: String) -> Completion {
    let now = now_ms();
    Completion {
        attempt: Attempt {
            delivery_id,
            attempt_no: 1,
            started_at: now - 12,
            duration_ms: 12,
            request: Some(RequestLog {
                method: "POST".into(),
                url: "https://bench.example.test/hook".into(),
                headers: vec![
                    ("content-type".into(), "application/json".into()),
                    (
                        "webhook-id".into(),
                        "msg_0190f6a1b2c37d4e8f9a0b1c2d3e4f50".into(),
                    ),
                    ("webhook-timestamp".into(), "1714549512".into()),
                    ("webhook-signature".into(), "********".into()),
                ],
                body: user_record().to_string(),
                body_from: None,
            }),
            response_status: Some(200),
            response_headers: vec![("content-type".into(), "application/json".into())],
            response_body: Some(r#"{"ok":true}"#.into()),
            error: None,
            outcome: AttemptOutcome::Succeeded,
            plugin: None,
        },
        next: Next::Succeeded,
        disable_webhook: false,
        followups: Vec::new(),
        earlier: Vec::new(),
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let mut group = c.benchmark_group("store");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);

    // One event per call, one call at a time: one transaction, one fsync, per event.
    let db = rt.block_on(Db::open());
    group.throughput(Throughput::Elements(1));
    group.bench_function("ingest_1_event_serial", |b| {
        b.to_async(&rt)
            .iter_batched(|| db.event(), |e| db.ingest(vec![e]), BatchSize::SmallInput)
    });
    rt.block_on(db.close());

    // 100 events in one call (`POST /v1/events/batch`): one transaction. Also without the
    // full-text index of the Webhook Log, in the same run: what that index costs ingest.
    for (name, text_index) in [
        ("ingest_batch_100", true),
        ("ingest_batch_100_without_text_index", false),
    ] {
        let db = rt.block_on(async {
            if text_index {
                Db::open().await
            } else {
                Db::open_without_text_index().await
            }
        });
        group.throughput(Throughput::Elements(BATCH as u64));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_batched(
                || db.events(BATCH),
                |events| db.ingest(events),
                BatchSize::SmallInput,
            )
        });
        rt.block_on(db.close());
    }

    // 64 callers at once, one event each: the writer folds them into few transactions. Also
    // without the full-text index: each caller's command is a savepoint of the group commit.
    for (name, text_index) in [
        ("ingest_64_concurrent", true),
        ("ingest_64_concurrent_without_text_index", false),
    ] {
        let db = rt.block_on(async {
            if text_index {
                Db::open().await
            } else {
                Db::open_without_text_index().await
            }
        });
        let commits_before = db.store.commits();
        let mut calls = 0u64;
        group.throughput(Throughput::Elements(CONCURRENT as u64));
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_batched(
                || db.events(CONCURRENT),
                |events| {
                    calls += 1;
                    db.ingest_concurrently(events)
                },
                BatchSize::SmallInput,
            )
        });
        let commits = db.store.commits() - commits_before;
        if calls > 0 {
            eprintln!(
                "{name}: {calls} rounds of {CONCURRENT} ingests in {commits} commits \
                 ({:.1} events per commit)",
                (calls * CONCURRENT as u64) as f64 / commits.max(1) as f64
            );
        }
        rt.block_on(db.close());
    }

    // The worker's hot path: claim 100 due deliveries, then complete each (concurrently, as the
    // worker's tasks do). The 100 events are ingested before each iteration, untimed.
    let db = rt.block_on(Db::open());
    group.throughput(Throughput::Elements(CLAIM as u64));
    group.bench_function("claim_100_complete_each", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let db = &db;
            async move {
                let mut timed = Duration::ZERO;
                for _ in 0..iters {
                    db.ingest(db.events(CLAIM)).await;
                    let started = Instant::now();
                    let ids = db.claim(CLAIM).await;
                    assert_eq!(ids.len(), CLAIM, "claim found every due delivery");
                    db.complete(black_box(ids)).await;
                    timed += started.elapsed();
                }
                timed
            }
        })
    });
    rt.block_on(db.close());
    group.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
