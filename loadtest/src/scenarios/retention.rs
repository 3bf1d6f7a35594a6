//! The retention scenario: ingest and delivery rates while the retention purge deletes a big
//! backlog of old rows, against the same load on the same backlog with retention off.
//!
//! Each of the two phases starts its own gateway, seeds its store with `--seed-deliveries` old
//! succeeded deliveries, each with its event and one attempt (three rows per delivery: 333,334
//! make a million rows), written straight into the store with SQL (`sqlite3` for SQLite,
//! the harness's PostgreSQL connection otherwise), 10 days old. The gateway is then restarted
//! (so SQLite's row counts include the seed) with retention on (`succeeded_days = 7`, a purge
//! every second in batches of `retention.batch_size`) or off (every `*_days = 0`), and the e2e
//! fixed-rate load runs. The purge row notes how many rows were purged during the phase and how
//! many were left.

use std::time::Instant;

use anyhow::{bail, Context};

use super::{flow_type, webhook, Phases, Plan, Runner, DEFAULT_RATE};
use crate::generator::Drive;
use crate::receiver::Mode;
use crate::report::thousands;

const DAY_MS: i64 = 86_400_000;

impl Runner {
    /// Both phases of the retention scenario (see the module docs).
    pub(super) async fn retention(&mut self) -> anyhow::Result<()> {
        if self.settings.phases == Phases::Max {
            eprintln!("  retention: only a fixed-rate phase; skipped with --phases max");
            return Ok(());
        }
        for purge in [false, true] {
            let mut options = self.settings.gateway.clone();
            options.plugin = None;
            let days = if purge { "7" } else { "0" };
            for (key, value) in [
                ("HOOKYARD_RETENTION_SUCCEEDED_DAYS", days),
                (
                    "HOOKYARD_RETENTION_FAILED_DAYS",
                    if purge { "30" } else { "0" },
                ),
                (
                    "HOOKYARD_RETENTION_EVENTS_DAYS",
                    if purge { "30" } else { "0" },
                ),
                ("HOOKYARD_RETENTION_INTERVAL_SECS", "1"),
            ] {
                options.env.push((key.to_owned(), value.to_owned()));
            }
            let spec = webhook("lt-0", &["lt.flow"], self.receiver.url(0));
            let gateway = crate::gateway::Gateway::start(&options).await?;
            gateway.create_webhook(&spec).await?;
            let seeded = Instant::now();
            seed(&gateway, self.settings.seed_deliveries).await?;
            eprintln!(
                "  retention: seeded {} old deliveries ({} rows) in {:.1} s",
                thousands(self.settings.seed_deliveries as f64),
                thousands(3.0 * self.settings.seed_deliveries as f64),
                seeded.elapsed().as_secs_f64()
            );
            // Restarted on the seeded store: SQLite counts its rows at start-up.
            let gateway = gateway.restart().await?;
            let started = self.started(gateway).await?;
            let s = self.settings.clone();
            let rate = s.rate.unwrap_or(DEFAULT_RATE);
            let purged = |m: &std::collections::HashMap<String, f64>| {
                m.get("hookyard_retention_purged_total{table=\"deliveries\"}")
                    .copied()
                    .unwrap_or(0.0)
            };
            let before = purged(&started.gateway.metrics().await?);
            let plan = Plan {
                scenario: "retention",
                label: format!(
                    "{}/s, purge {}",
                    thousands(rate),
                    if purge { "running" } else { "off" }
                ),
                modes: vec![Mode::Ok],
                route: std::sync::Arc::new(|_, _| true),
                measured: vec![0],
                events_per_request: 1,
                event_type: flow_type,
                drive: Drive::Fixed {
                    rate,
                    connections: s.connections,
                },
                duration: s.duration,
                wait_queue: true,
                outage: None,
            };
            let mut row = self.phase(&started, plan).await?;
            let metrics = started.gateway.metrics().await?;
            let after = purged(&metrics);
            let left = metrics
                .get("hookyard_store_rows{table=\"deliveries\"}")
                .copied()
                .unwrap_or(0.0);
            let note = format!(
                "{} deliveries purged during the phase (with their attempts and events), {} \
                 deliveries in the store after",
                thousands(after - before),
                thousands(left)
            );
            eprintln!("  {note}");
            row.diag.notes.push(note);
            self.rows.push(row);
            started.gateway.stop().await;
        }
        Ok(())
    }
}

/// Writes `n` succeeded deliveries of 10 days ago, with their events and attempts, straight
/// into the gateway's store.
async fn seed(gateway: &crate::gateway::Gateway, n: u64) -> anyhow::Result<()> {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
        - 10 * DAY_MS;
    if let Some(url) = gateway.postgres_store_url()? {
        let sql = format!(
            "INSERT INTO events (id, type, data, context, occurred_at, received_at) \
             SELECT 'seed-' || i, 'lt.seed', \
                    '{{\"seed\": ' || i || ', \"email\": \"user' || i || '@example.com\"}}', \
                    'null', {at}, {at} FROM generate_series(1, {n}) AS i; \
             INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, attempts, \
                    total_attempts, created_at, updated_at) \
             SELECT 'msg_seed_' || i, 'seed-' || i, 'wh_seed', 'lt.seed', 'succeeded', 1, 1, \
                    {at}, {at} FROM generate_series(1, {n}) AS i; \
             INSERT INTO attempts (delivery_id, attempt_no, started_at, duration_ms, \
                    response_status, response_headers, outcome) \
             SELECT 'msg_seed_' || i, 1, {at}, 5, 200, '[]', 'succeeded' \
             FROM generate_series(1, {n}) AS i; ANALYZE;"
        );
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .context("connecting to PostgreSQL to seed")?;
        tokio::spawn(connection);
        client.batch_execute(&sql).await.context("seeding")?;
        return Ok(());
    }
    let Some(db) = gateway.sqlite_file() else {
        bail!("the gateway has neither a SQLite file nor a PostgreSQL schema");
    };
    let series =
        format!("WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n})");
    let sql = format!(
        "PRAGMA busy_timeout = 120000;\n\
         BEGIN IMMEDIATE;\n\
         INSERT INTO events (id, type, data, context, occurred_at, received_at) {series} \
         SELECT 'seed-' || i, 'lt.seed', \
                '{{\"seed\": ' || i || ', \"email\": \"user' || i || '@example.com\"}}', \
                'null', {at}, {at} FROM s;\n\
         INSERT INTO deliveries (id, event_id, webhook_id, event_type, status, attempts, \
                total_attempts, created_at, updated_at) {series} \
         SELECT 'msg_seed_' || i, 'seed-' || i, 'wh_seed', 'lt.seed', 'succeeded', 1, 1, \
                {at}, {at} FROM s;\n\
         INSERT INTO attempts (delivery_id, attempt_no, started_at, duration_ms, \
                response_status, response_headers, outcome) {series} \
         SELECT 'msg_seed_' || i, 1, {at}, 5, 200, '[]', 'succeeded' FROM s;\n\
         INSERT INTO events_fts (rowid, id, data) SELECT rowid, id, substr(data, 1, 262144) \
         FROM events WHERE rowid > (SELECT coalesce(max(id), 0) FROM events_fts_docsize);\n\
         COMMIT;\n"
    );
    let mut child = tokio::process::Command::new("sqlite3")
        .arg(&db)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("running sqlite3 to seed the SQLite store (is the sqlite3 command installed?)")?;
    {
        use tokio::io::AsyncWriteExt;
        let mut stdin = child.stdin.take().context("sqlite3's stdin")?;
        stdin.write_all(sql.as_bytes()).await?;
    }
    let status = child.wait().await?;
    if !status.success() {
        bail!("sqlite3 failed seeding {}: {status}", db.display());
    }
    Ok(())
}
