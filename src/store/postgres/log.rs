//! The Webhook Log in PostgreSQL: its schema additions (sources, full-text index, plugin per
//! attempt), finished deliveries written whole, the retention purge and the row estimates.
//!
//! Full text: `events.search` is a generated `tsvector` of each event's id and data (the first
//! 256 KiB) under the `simple` configuration (lowercased words, no stemming, no stop words),
//! with punctuation turned into spaces first so that words split as SQLite's `unicode61` and
//! [`crate::store::encode::search_terms`] split them; a GIN index serves `@@`. Being a column
//! of the row, it is written by the same INSERT as the event, in the same transaction.
//!
//! Row counts are the statistics' live-tuple estimates (`pg_stat_user_tables.n_live_tup`):
//! one catalog read, whatever the tables' size, shared by every process on the database.

use tokio_postgres::Row;

use super::{get, insert_attempt, PostgresStore};
use crate::model::{DeliverySource, LoggedDelivery, Millis, PluginUsed};
use crate::store::encode::{encode_events, to_json};
use crate::store::{Error, PurgePolicy, Purged, Result, RowCounts};

/// The migration of the searchable log and retention.
pub(super) const MIGRATION: &str = r#"
-- migration for the searchable Webhook Log and retention (issue 20, parts 4 and 5)
ALTER TABLE deliveries
    ADD COLUMN source TEXT NOT NULL DEFAULT 'webhook'
        CHECK (source IN ('webhook', 'sink', 'inbound', 'test')),
    ADD COLUMN origin TEXT COLLATE "C";
ALTER TABLE attempts ADD COLUMN plugin_name TEXT, ADD COLUMN plugin_version INTEGER;
UPDATE deliveries d SET source = 'sink', origin = e.data::jsonb ->> 'webhook_id'
    FROM events e WHERE e.id = d.event_id AND d.event_type LIKE 'hookyard.sink.%';
-- Sources other than 'webhook' are few: partial, so ingest of webhook deliveries pays nothing.
CREATE INDEX deliveries_source ON deliveries (source, id) WHERE source <> 'webhook';
CREATE INDEX deliveries_origin ON deliveries (origin, id) WHERE origin IS NOT NULL;
-- Retention: finished deliveries by kind and age; pending ones (the queue) are not in it.
CREATE INDEX deliveries_finished ON deliveries (status, updated_at) WHERE status <> 'pending';
CREATE INDEX events_received ON events (received_at, id);
ALTER TABLE events ADD COLUMN search tsvector GENERATED ALWAYS AS (
    to_tsvector('simple'::regconfig,
        translate(id, $p$"{}[]:,.@-_/\+'!?;=&()<>|~*%^#`$p$, '                                 '))
    || to_tsvector('simple'::regconfig,
        translate(left(data, 262144), $p$"{}[]:,.@-_/\+'!?;=&()<>|~*%^#`$p$,
                  '                                 '))
) STORED;
CREATE INDEX events_search ON events USING GIN (search);
"#;

/// The source column of a delivery row.
pub(super) fn source_column(row: &Row, i: usize) -> Result<DeliverySource> {
    let text: &str = get(row, i)?;
    DeliverySource::parse(text)
        .ok_or_else(|| Error::Corrupt(format!("unknown delivery source {text:?}")))
}

/// The plugin columns (name, version) of an attempt row starting at `i`.
pub(super) fn plugin_columns(row: &Row, i: usize) -> Result<Option<PluginUsed>> {
    let name: Option<String> = get(row, i)?;
    let version: Option<i32> = get(row, i + 1)?;
    Ok(match (name, version.and_then(|v| u32::try_from(v).ok())) {
        (Some(name), Some(version)) => Some(PluginUsed { name, version }),
        _ => None,
    })
}

impl PostgresStore {
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
        let ev = &event.event;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO events (id, type, data, context, occurred_at, received_at) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &ev.id,
                &ev.event_type,
                &event.data,
                &event.context,
                &ev.occurred_at,
                &ev.received_at,
            ],
        )
        .await?;
        let last = entry.attempts.last();
        let logged = i32::try_from(entry.attempts.len()).unwrap_or(i32::MAX);
        let stmt = tx
            .prepare_cached(
                "INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, attempts, \
                 total_attempts, next_attempt_at, created_at, updated_at, last_status, \
                 last_error, source, origin) \
                 VALUES ($1, $2, $3, $4, $5, $6, $6, NULL, $7, $7, $8, $9, $10, $11)",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &entry.delivery_id,
                &ev.id,
                &entry.webhook_id,
                &ev.event_type,
                &entry.status.as_str(),
                &logged,
                &ev.received_at,
                &last.and_then(|a| a.response_status).map(i32::from),
                &last.and_then(|a| a.error.clone()),
                &event.source,
                &event.origin,
            ],
        )
        .await?;
        let mut last_no = 0;
        for attempt in &entry.attempts {
            let request = attempt.request.as_ref().map(to_json).transpose()?;
            let headers = to_json(&attempt.response_headers)?;
            last_no = insert_attempt(&tx, attempt, &request, &headers, last_no).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// One retention batch (see [`crate::store::retention`]) in one transaction. Rows are
    /// taken `FOR UPDATE SKIP LOCKED`, so processes purging at once share the work.
    pub(super) async fn purge_batch(&self, policy: &PurgePolicy) -> Result<Purged> {
        let limit = i64::try_from(policy.limit).unwrap_or(i64::MAX);
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let mut ids: Vec<String> = Vec::new();
        let mut event_ids: Vec<String> = Vec::new();
        let kinds = [
            (policy.succeeded_before, "status = 'succeeded'"),
            (policy.failed_before, "status IN ('dead', 'skipped')"),
        ];
        for (before, which) in kinds {
            let Some(before) = before else { continue };
            let room = limit - ids.len() as i64;
            if room <= 0 {
                break;
            }
            // `status <> 'pending'` spelled out so that the partial index is seen to apply.
            let stmt = tx
                .prepare_cached(&format!(
                    "SELECT id, event_id FROM deliveries \
                     WHERE status <> 'pending' AND {which} AND updated_at < $1 \
                     LIMIT $2 FOR UPDATE SKIP LOCKED"
                ))
                .await?;
            for row in tx.query(&stmt, &[&before, &room]).await? {
                ids.push(get(&row, 0)?);
                event_ids.push(get(&row, 1)?);
            }
        }
        let mut purged = Purged {
            more: ids.len() as i64 >= limit,
            ..Purged::default()
        };
        if !ids.is_empty() {
            let stmt = tx
                .prepare_cached("DELETE FROM attempts WHERE delivery_id = ANY($1::text[])")
                .await?;
            purged.attempts = tx.execute(&stmt, &[&ids]).await?;
            let stmt = tx
                .prepare_cached("DELETE FROM deliveries WHERE id = ANY($1::text[])")
                .await?;
            purged.deliveries = tx.execute(&stmt, &[&ids]).await?;
        }
        if let Some(events_before) = policy.events_before {
            let orphans = tx
                .prepare_cached(
                    "DELETE FROM events e WHERE e.id = ANY($1::text[]) AND e.received_at < $2 \
                     AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.event_id = e.id)",
                )
                .await?;
            event_ids.sort_unstable();
            event_ids.dedup();
            if !event_ids.is_empty() {
                purged.events += tx.execute(&orphans, &[&event_ids, &events_before]).await?;
            }
            // Events that never had a delivery (or lost them before they were old enough): a
            // sweep in order of receipt from where the last one stopped. One it passes that still
            // has deliveries goes with its last delivery, above.
            let room = limit - purged.events as i64;
            if room > 0 {
                let from = self
                    .purge_cursor
                    .lock()
                    .map(|c| c.clone())
                    .unwrap_or_else(|e| e.into_inner().clone())
                    .unwrap_or((Millis::MIN, String::new()));
                let stmt = tx
                    .prepare_cached(
                        "SELECT received_at, id FROM events \
                         WHERE (received_at, id) > ($1, $2) AND received_at < $3 \
                         ORDER BY received_at, id LIMIT $4",
                    )
                    .await?;
                let rows = tx
                    .query(&stmt, &[&from.0, &from.1, &events_before, &room])
                    .await?;
                let swept: Vec<String> = rows
                    .iter()
                    .map(|r| get::<String>(r, 1))
                    .collect::<Result<_>>()?;
                let reached = match rows.last() {
                    Some(row) => Some((get::<Millis>(row, 0)?, get::<String>(row, 1)?)),
                    None => None,
                };
                if !swept.is_empty() {
                    purged.events += tx.execute(&orphans, &[&swept, &events_before]).await?;
                }
                purged.more |= rows.len() as i64 >= room;
                tx.commit().await?;
                if let Some(reached) = reached {
                    match self.purge_cursor.lock() {
                        Ok(mut c) => *c = Some(reached),
                        Err(e) => *e.into_inner() = Some(reached),
                    }
                }
                return Ok(purged);
            }
            purged.more = true;
        }
        tx.commit().await?;
        Ok(purged)
    }

    pub(super) async fn estimate_rows(&self) -> Result<RowCounts> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT relname::text, n_live_tup FROM pg_stat_user_tables \
                 WHERE relid IN ('events'::regclass, 'deliveries'::regclass, \
                                 'attempts'::regclass)",
            )
            .await?;
        let mut counts = RowCounts::default();
        for row in client.query(&stmt, &[]).await? {
            let n: i64 = get(&row, 1)?;
            match get::<&str>(&row, 0)? {
                "events" => counts.events = n,
                "deliveries" => counts.deliveries = n,
                "attempts" => counts.attempts = n,
                _ => {}
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::test_support::TestSchema;
    use super::*;
    use crate::model::{DeliveryFilter, Event, EventToIngest};
    use crate::store::encode::{Arg, Dialect, LogQuery};
    use crate::store::Store;

    /// The text search is answered from the GIN index of `events.search`, not a scan of
    /// `events`.
    #[tokio::test(flavor = "multi_thread")]
    async fn text_search_uses_the_index() {
        let Some(schema) = TestSchema::create().await else {
            return;
        };
        let store = Arc::new(PostgresStore::open(&schema.url).await.expect("open"));
        let events: Vec<EventToIngest> = (0..2_000)
            .map(|i| EventToIngest {
                event: Event {
                    id: format!("evt-{i}"),
                    event_type: "user.created".to_owned(),
                    data: serde_json::json!({"email": format!("user{i}@example.com"), "n": i})
                        .into(),
                    context: crate::model::Json::null(),
                    occurred_at: 0,
                    received_at: 0,
                },
                deliveries: Vec::new(),
                lease: None,
            })
            .collect();
        store.ingest(events).await.expect("ingest");
        let client = store.client().await.expect("client");
        client
            .batch_execute("ANALYZE events")
            .await
            .expect("analyze");
        // On a table this small the planner would rather walk it (a sequential scan, or the
        // primary key with a filter); what this shows is that the query's `search @@ tsquery`
        // is served by the GIN index, which the planner takes once walking `events` costs more
        // than the rows it expects to match (it guesses 0.5% for a word it has no statistics
        // of). Both walks are turned off here so that the index path is the one it shows.
        client
            .batch_execute("SET enable_seqscan = off; SET enable_indexscan = off")
            .await
            .expect("set");
        for q in ["user1234", "user1234@example.com"] {
            let plan = explain(&client, q).await;
            assert!(
                plan.contains("Bitmap Index Scan on events_search"),
                "{plan}"
            );
            assert!(!plan.contains("Seq Scan on events"), "{plan}");
        }
        client
            .batch_execute("RESET enable_seqscan; RESET enable_indexscan")
            .await
            .expect("reset");
        let page = store
            .deliveries(&DeliveryFilter {
                text: Some("user1234@example.com".to_owned()),
                ..Default::default()
            })
            .await
            .expect("search");
        assert!(page.items.is_empty(), "no deliveries, but the query runs");
    }

    /// The plan of the log query for the text `q`.
    async fn explain(client: &deadpool_postgres::Object, q: &str) -> String {
        let query = LogQuery::new(
            &DeliveryFilter {
                text: Some(q.to_owned()),
                ..Default::default()
            },
            Dialect::Postgres,
        );
        let Arg::Text(text) = &query.args[0] else {
            panic!("the text argument");
        };
        let sql = query
            .sql
            .replace("$1", &format!("'{text}'"))
            .replace("$2", "51");
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {sql}"), &[])
            .await
            .expect("explain")
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect();
        plan.join("\n")
    }
}
