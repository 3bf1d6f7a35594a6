//! Sources in SQLite (see [`crate::store::sources`]).

use rusqlite::{params, ErrorCode, Row};

use super::SqliteStore;
use crate::store::sources::StoredSource;
use crate::store::{Error, Result};

fn source_row(row: &Row<'_>) -> rusqlite::Result<StoredSource> {
    Ok(StoredSource {
        name: row.get(0)?,
        spec: row.get(1)?,
        paused: row.get(2)?,
        created_at: row.get(3)?,
        updated_at: row.get(4)?,
    })
}

impl SqliteStore {
    pub(super) async fn list_sources(&self) -> Result<Vec<StoredSource>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT name, spec, paused, created_at, updated_at FROM sources \
                     ORDER BY created_at, name",
                )?
                .query_map([], source_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub(super) async fn insert_source_row(&self, source: &StoredSource) -> Result<()> {
        let s = source.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO sources (name, spec, paused, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![
                s.name,
                s.spec,
                s.paused,
                s.created_at,
                s.updated_at
            ])
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == ErrorCode::ConstraintViolation =>
                {
                    Error::Conflict(format!("a source named {:?} exists", s.name))
                }
                other => other.into(),
            })?;
            Ok(())
        })
        .await
    }

    pub(super) async fn update_source_row(&self, source: &StoredSource) -> Result<bool> {
        let s = source.clone();
        self.write(move |conn| {
            let changed = conn
                .prepare_cached(
                    "UPDATE sources SET spec = ?2, paused = ?3, updated_at = ?4 WHERE name = ?1",
                )?
                .execute(params![s.name, s.spec, s.paused, s.updated_at])?;
            Ok(changed > 0)
        })
        .await
    }

    pub(super) async fn delete_source_row(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        self.write(move |conn| {
            let deleted = conn
                .prepare_cached("DELETE FROM sources WHERE name = ?1")?
                .execute([&name])?;
            Ok(deleted > 0)
        })
        .await
    }
}
