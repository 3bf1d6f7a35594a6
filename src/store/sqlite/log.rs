//! The Webhook Log in SQLite: its schema additions (sources, full-text index, plugin per
//! attempt), finished deliveries written whole, the retention purge and the row counts.
//!
//! Full text: `events_fts` is an FTS5 table over each event's id and data (the first 256 KiB),
//! external content (`content='events'`, nothing stored twice). The writer fills it once per
//! group commit with the events not indexed yet ([`index_new_events`]), in the commit's own
//! transaction: an event and its index entry become visible together, and the index grows by one
//! FTS5 segment per commit rather than one per command (FTS5 flushes at every savepoint). A
//! trigger takes entries out when events are deleted. The `unicode61` tokenizer splits on
//! everything but letters and digits, as [`crate::store::encode::search_terms`] does with the
//! query.
//!
//! Row counts are counted once at open, on the writer's connection before anything else
//! writes, and from then on moved by the writes themselves, after they commit: exact, and free
//! to read.

use std::sync::atomic::{AtomicI64, Ordering};

use rusqlite::{params, Connection, Row};

use super::{conversion_error, insert_attempt, SqliteStore};
use crate::model::{DeliverySource, IngestResult, LoggedDelivery, PluginUsed};
use crate::store::encode::{encode_events, to_json};
use crate::store::{Error, PurgePolicy, Purged, Result, RowCounts};

/// The migration of the searchable log and retention.
pub(super) const MIGRATION: &str = r#"
-- migration for the searchable Webhook Log and retention (issue 20, parts 4 and 5)
ALTER TABLE deliveries ADD COLUMN source TEXT NOT NULL DEFAULT 'webhook'
    CHECK (source IN ('webhook', 'sink', 'inbound', 'test'));
ALTER TABLE deliveries ADD COLUMN origin TEXT;
ALTER TABLE attempts ADD COLUMN plugin_name TEXT;
ALTER TABLE attempts ADD COLUMN plugin_version INTEGER;
UPDATE deliveries SET source = 'sink',
    origin = (SELECT json_extract(e.data, '$.webhook_id') FROM events e
              WHERE e.id = deliveries.event_id)
    WHERE event_type GLOB 'hookyard.sink.*';
-- Sources other than 'webhook' are few: partial, so ingest of webhook deliveries pays nothing.
CREATE INDEX deliveries_source ON deliveries (source, id) WHERE source <> 'webhook';
CREATE INDEX deliveries_origin ON deliveries (origin, id) WHERE origin IS NOT NULL;
-- Retention: finished deliveries by kind and age; pending ones (the queue) are not in it.
CREATE INDEX deliveries_finished ON deliveries (status, updated_at) WHERE status <> 'pending';

CREATE VIRTUAL TABLE events_fts USING fts5 (
    id, data, content = 'events', content_rowid = 'rowid',
    tokenize = 'unicode61 remove_diacritics 0'
);
CREATE TRIGGER events_fts_insert AFTER INSERT ON events BEGIN
    INSERT INTO events_fts (rowid, id, data)
    VALUES (new.rowid, new.id, substr(new.data, 1, 262144));
END;
CREATE TRIGGER events_fts_delete AFTER DELETE ON events BEGIN
    INSERT INTO events_fts (events_fts, rowid, id, data)
    VALUES ('delete', old.rowid, old.id, substr(old.data, 1, 262144));
END;
INSERT INTO events_fts (rowid, id, data) SELECT rowid, id, substr(data, 1, 262144) FROM events;
"#;

/// Migration: the Webhook Log's full-text index is filled once per group commit by the writer
/// ([`index_new_events`]) instead of by a trigger per inserted event. FTS5 writes its pending
/// terms out as a new index segment at every savepoint, and each command of a group commit runs
/// in one: with the trigger, every ingest request made a segment of its own (and the merges that
/// follow), the largest single cost of ingest in the profiles.
pub(super) const INDEX_PER_COMMIT: &str = r#"
DROP TRIGGER events_fts_insert;
"#;

/// Indexes, for the Webhook Log's text search, every event not indexed yet: those whose rowid is
/// above the highest one in the index. Run by the writer in each group commit's transaction
/// after its commands, so the index is one segment per commit and always complete once a
/// commit is visible. Events written by other means (a restore, a seed) are picked up too.
pub(super) fn index_new_events(conn: &Connection) -> rusqlite::Result<usize> {
    conn.prepare_cached(
        "INSERT INTO events_fts (rowid, id, data) \
         SELECT rowid, id, substr(data, 1, 262144) FROM events \
         WHERE rowid > (SELECT coalesce(max(id), 0) FROM events_fts_docsize)",
    )?
    .execute([])
}

/// The source column of a delivery row.
pub(super) fn source_column(row: &Row<'_>, i: usize) -> rusqlite::Result<DeliverySource> {
    let text: String = row.get(i)?;
    DeliverySource::parse(&text)
        .ok_or_else(|| conversion_error(i, format!("unknown delivery source {text:?}")))
}

/// The plugin columns (name, version) of an attempt row starting at `i`.
pub(super) fn plugin_columns(row: &Row<'_>, i: usize) -> rusqlite::Result<Option<PluginUsed>> {
    let name: Option<String> = row.get(i)?;
    let version: Option<u32> = row.get(i + 1)?;
    Ok(match (name, version) {
        (Some(name), Some(version)) => Some(PluginUsed { name, version }),
        _ => None,
    })
}

/// Rows of the log's tables (see the module docs).
#[derive(Debug, Default)]
pub(super) struct LogCounts {
    events: AtomicI64,
    deliveries: AtomicI64,
    attempts: AtomicI64,
}

impl LogCounts {
    /// Counts the rows, on the writer's connection before the writer starts.
    pub(super) fn load(conn: &Connection) -> Result<LogCounts> {
        let count = |table: &str| -> Result<i64> {
            Ok(conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))?)
        };
        Ok(LogCounts {
            events: AtomicI64::new(count("events")?),
            deliveries: AtomicI64::new(count("deliveries")?),
            attempts: AtomicI64::new(count("attempts")?),
        })
    }

    pub(super) fn get(&self) -> RowCounts {
        RowCounts {
            events: self.events.load(Ordering::Relaxed),
            deliveries: self.deliveries.load(Ordering::Relaxed),
            attempts: self.attempts.load(Ordering::Relaxed),
        }
    }

    /// After an ingest committed.
    pub(super) fn ingested(&self, results: &[IngestResult]) {
        let new = results.iter().filter(|r| !r.duplicate);
        let (events, deliveries) = new.fold((0, 0), |(e, d), r| (e + 1, d + r.deliveries as i64));
        self.events.fetch_add(events, Ordering::Relaxed);
        self.deliveries.fetch_add(deliveries, Ordering::Relaxed);
    }

    /// After attempts were logged.
    pub(super) fn attempts_logged(&self, n: i64) {
        self.attempts.fetch_add(n, Ordering::Relaxed);
    }

    fn purged(&self, p: &Purged) {
        self.events.fetch_sub(p.events as i64, Ordering::Relaxed);
        self.deliveries
            .fetch_sub(p.deliveries as i64, Ordering::Relaxed);
        self.attempts
            .fetch_sub(p.attempts as i64, Ordering::Relaxed);
    }
}

impl SqliteStore {
    pub(super) async fn log_finished(&self, entry: LoggedDelivery) -> Result<()> {
        if entry.status == crate::model::DeliveryStatus::Pending {
            return Err(Error::Database(
                "a logged delivery must be finished, not pending".to_owned(),
            ));
        }
        let event = encode_events(vec![crate::model::EventToIngest {
            event: entry.event,
            deliveries: Vec::new(),
            lease: None,
        }])?
        .remove(0);
        let attempts = entry
            .attempts
            .into_iter()
            .map(|a| {
                let request = a.request.as_ref().map(to_json).transpose()?;
                Ok((request, to_json(&a.response_headers)?, a))
            })
            .collect::<Result<Vec<_>>>()?;
        let logged = attempts.len() as i64;
        let (delivery_id, webhook_id, status) = (entry.delivery_id, entry.webhook_id, entry.status);
        self.write(move |conn| {
            let ev = &event.event;
            conn.prepare_cached(
                "INSERT INTO events (id, type, data, context, occurred_at, received_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![
                ev.id,
                ev.event_type,
                event.data,
                event.context,
                ev.occurred_at,
                ev.received_at
            ])?;
            let last = attempts.last().map(|(_, _, a)| a);
            conn.prepare_cached(
                "INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, attempts, \
                 total_attempts, next_attempt_at, created_at, updated_at, last_status, \
                 last_error, source, origin) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, NULL, ?7, ?7, ?8, ?9, ?10, ?11)",
            )?
            .execute(params![
                delivery_id,
                ev.id,
                webhook_id,
                ev.event_type,
                status.as_str(),
                logged,
                ev.received_at,
                last.and_then(|a| a.response_status),
                last.and_then(|a| a.error.clone()),
                event.source,
                event.origin,
            ])?;
            let mut last_no = 0;
            for (request, headers, attempt) in &attempts {
                last_no = insert_attempt(conn, attempt, request, headers, last_no)?;
            }
            Ok(())
        })
        .await?;
        self.counts.events.fetch_add(1, Ordering::Relaxed);
        self.counts.deliveries.fetch_add(1, Ordering::Relaxed);
        self.counts.attempts_logged(logged);
        Ok(())
    }

    /// One retention batch (see [`crate::store::retention`]), as one writer command: the group
    /// commit holds it with whatever else is queued, so a batch must stay small.
    pub(super) async fn purge_batch(&self, policy: &PurgePolicy) -> Result<Purged> {
        let policy = policy.clone();
        let cursor = self.purge_cursor.clone();
        let purged = self
            .write(move |conn| purge_in(conn, &policy, &cursor))
            .await?;
        self.counts.purged(&purged);
        Ok(purged)
    }
}

fn purge_in(conn: &Connection, policy: &PurgePolicy, cursor: &AtomicI64) -> Result<Purged> {
    let limit = i64::try_from(policy.limit).unwrap_or(i64::MAX);
    let mut doomed: Vec<(String, String)> = Vec::new();
    let kinds = [
        (policy.succeeded_before, "status = 'succeeded'"),
        (policy.failed_before, "status IN ('dead', 'skipped')"),
    ];
    for (before, which) in kinds {
        let Some(before) = before else { continue };
        let room = limit - doomed.len() as i64;
        if room <= 0 {
            break;
        }
        // `status <> 'pending'` spelled out so that the partial index is seen to apply.
        let sql = format!(
            "SELECT id, event_id FROM deliveries INDEXED BY deliveries_finished \
             WHERE status <> 'pending' AND {which} AND updated_at < ?1 LIMIT ?2"
        );
        let rows = conn
            .prepare_cached(&sql)?
            .query_map(params![before, room], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<Vec<(String, String)>>>()?;
        doomed.extend(rows);
    }
    let mut purged = Purged {
        more: doomed.len() as i64 >= limit,
        ..Purged::default()
    };
    {
        let mut attempts = conn.prepare_cached("DELETE FROM attempts WHERE delivery_id = ?1")?;
        let mut delivery = conn.prepare_cached("DELETE FROM deliveries WHERE id = ?1")?;
        for (id, _) in &doomed {
            purged.attempts += attempts.execute([id])? as u64;
            purged.deliveries += delivery.execute([id])? as u64;
        }
    }
    let Some(events_before) = policy.events_before else {
        return Ok(purged);
    };
    // The events of the deliveries just deleted, once none is left and they are old enough.
    let mut orphan = conn.prepare_cached(
        "DELETE FROM events WHERE id = ?1 AND received_at < ?2 \
         AND NOT EXISTS (SELECT 1 FROM deliveries WHERE event_id = ?1)",
    )?;
    let mut events: Vec<&str> = doomed.iter().map(|(_, e)| e.as_str()).collect();
    events.sort_unstable();
    events.dedup();
    for id in events {
        purged.events += orphan.execute(params![id, events_before])? as u64;
    }
    // Events that never had a delivery (or lost them before they were old enough): a sweep in
    // rowid order, from where the last one stopped, up to the first event too young to go.
    // Rowid order is the order of receipt (`received_at` is the time of the insert), so no
    // index of `received_at` is needed (nor paid for at ingest); an event stored out of that
    // order waits for the sweep to reach it. One the sweep passes that still has deliveries
    // goes with its last delivery, above.
    let room = limit - purged.events as i64;
    if room > 0 {
        let from = cursor.load(Ordering::Relaxed);
        let swept: Vec<(i64, String, i64)> = conn
            .prepare_cached(
                "SELECT rowid, id, received_at FROM events WHERE rowid > ?1 \
                 ORDER BY rowid LIMIT ?2",
            )?
            .query_map(params![from, room], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect::<rusqlite::Result<_>>()?;
        let mut reached = from;
        let mut full = swept.len() as i64 >= room;
        for (rowid, id, received_at) in &swept {
            if *received_at >= events_before {
                full = false;
                break;
            }
            purged.events += orphan.execute(params![id, events_before])? as u64;
            reached = *rowid;
        }
        cursor.store(reached, Ordering::Relaxed);
        purged.more |= full;
    } else {
        purged.more = true;
    }
    Ok(purged)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeliveryFilter;
    use crate::store::encode::{Arg, Dialect, LogQuery};

    /// The plan of the log query for `filter`, as SQLite explains it.
    fn plan(conn: &Connection, filter: &DeliveryFilter) -> String {
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
        let mut stmt = conn
            .prepare(&format!("EXPLAIN QUERY PLAN {}", query.sql))
            .expect("explain");
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .expect("plan rows")
            .collect::<rusqlite::Result<Vec<_>>>()
            .expect("plan");
        rows.join("\n")
    }

    /// Every filter of the log is answered from an index: the text search from the FTS5 index
    /// (never a scan of `events`), sources and origins from their partial indexes, time ranges
    /// as ranges of the primary key.
    #[test]
    fn log_filters_use_indexes() {
        let conn = Connection::open_in_memory().expect("open");
        super::super::migrate(&conn).expect("migrate");
        let text = plan(
            &conn,
            &DeliveryFilter {
                text: Some("ann@example.com".to_owned()),
                ..Default::default()
            },
        );
        assert!(text.contains("VIRTUAL TABLE INDEX"), "{text}");
        assert!(!text.contains("SCAN e"), "{text}");
        assert!(!text.contains("SCAN events"), "{text}");
        let source = plan(
            &conn,
            &DeliveryFilter {
                source: Some(DeliverySource::Inbound),
                ..Default::default()
            },
        );
        assert!(source.contains("deliveries_source"), "{source}");
        let origin = plan(
            &conn,
            &DeliveryFilter {
                origin: Some("wh_1".to_owned()),
                ..Default::default()
            },
        );
        assert!(origin.contains("deliveries_origin"), "{origin}");
        let since = plan(
            &conn,
            &DeliveryFilter {
                since: Some(1_765_000_000_000),
                ..Default::default()
            },
        );
        assert!(since.contains("(id>?)"), "{since}");
    }

    /// The counts the store keeps, and the rows counted.
    async fn counted(store: &SqliteStore) -> (RowCounts, RowCounts) {
        let kept = store.counts.get();
        let exact = store
            .write(|conn| {
                let n = |t: &str| -> Result<i64> {
                    Ok(conn.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?)
                };
                Ok(RowCounts {
                    events: n("events")?,
                    deliveries: n("deliveries")?,
                    attempts: n("attempts")?,
                })
            })
            .await
            .expect("count");
        (kept, exact)
    }

    /// The counts behind `hookyard_store_rows` follow every write exactly: ingest, attempts,
    /// finished deliveries logged whole, purges, and a reopen counts afresh.
    #[tokio::test(flavor = "multi_thread")]
    async fn row_counts_follow_every_write() {
        use crate::model::{EventToIngest, Next};
        use crate::store::conformance;
        use crate::store::{ClaimRequest, Store};

        let store = SqliteStore::open_memory().expect("open");
        let hook = conformance::webhook("hook");
        store.insert_webhook(&hook).await.expect("insert");
        let events = (0..5)
            .map(|i| EventToIngest {
                event: conformance::event(&format!("evt-{i}"), "user.created", conformance::T0),
                deliveries: vec![(hook.id.clone(), crate::model::new_id("msg"))],
                lease: None,
            })
            .collect::<Vec<_>>();
        store.ingest(events.clone()).await.expect("ingest");
        store.ingest(events).await.expect("ingest duplicates");
        let jobs = store
            .claim(ClaimRequest {
                owner: "w".to_owned(),
                now: conformance::T0,
                lease_ms: 1_000,
                limit: 2,
                exclude_webhooks: Vec::new(),
            })
            .await
            .expect("claim");
        for job in &jobs {
            let mut c = crate::model::Completion {
                attempt: crate::model::Attempt {
                    delivery_id: job.delivery.id.clone(),
                    attempt_no: job.attempt_no,
                    started_at: conformance::T0,
                    duration_ms: 1,
                    request: None,
                    response_status: Some(200),
                    response_headers: Vec::new(),
                    response_body: None,
                    error: None,
                    outcome: crate::model::AttemptOutcome::Succeeded,
                    plugin: None,
                },
                next: Next::Succeeded,
                disable_webhook: false,
                followups: Vec::new(),
                earlier: Vec::new(),
            };
            c.earlier.push(c.attempt.clone());
            c.attempt.attempt_no += 1;
            assert!(store.complete("w", c).await.expect("complete"));
        }
        let (kept, exact) = counted(&store).await;
        assert_eq!(kept, exact);
        assert_eq!((exact.events, exact.deliveries, exact.attempts), (5, 5, 4));
        let purged = store
            .purge(&PurgePolicy {
                succeeded_before: Some(crate::model::now_ms() + 1_000),
                failed_before: None,
                events_before: Some(crate::model::now_ms() + 1_000),
                limit: 100,
            })
            .await
            .expect("purge");
        assert_eq!(
            (purged.deliveries, purged.attempts, purged.events),
            (2, 4, 2)
        );
        let (kept, exact) = counted(&store).await;
        assert_eq!(kept, exact);
        assert_eq!((exact.events, exact.deliveries, exact.attempts), (3, 3, 0));
    }
}
