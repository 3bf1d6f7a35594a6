//! Sources in PostgreSQL (see [`crate::store::sources`]).

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::PostgresStore;
use crate::store::sources::StoredSource;
use crate::store::{Error, Result};

fn source_row(row: &Row) -> Result<StoredSource> {
    Ok(StoredSource {
        name: row.try_get(0)?,
        spec: row.try_get(1)?,
        paused: row.try_get(2)?,
        created_at: row.try_get(3)?,
        updated_at: row.try_get(4)?,
    })
}

impl PostgresStore {
    pub(super) async fn list_sources(&self) -> Result<Vec<StoredSource>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT name, spec, paused, created_at, updated_at FROM sources \
                 ORDER BY created_at, name",
            )
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(source_row)
            .collect()
    }

    pub(super) async fn insert_source_row(&self, s: &StoredSource) -> Result<()> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "INSERT INTO sources (name, spec, paused, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await?;
        client
            .execute(
                &stmt,
                &[&s.name, &s.spec, &s.paused, &s.created_at, &s.updated_at],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    Error::Conflict(format!("a source named {:?} exists", s.name))
                } else {
                    e.into()
                }
            })?;
        Ok(())
    }

    pub(super) async fn update_source_row(&self, s: &StoredSource) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "UPDATE sources SET spec = $2, paused = $3, updated_at = $4 WHERE name = $1",
            )
            .await?;
        let changed = client
            .execute(&stmt, &[&s.name, &s.spec, &s.paused, &s.updated_at])
            .await?;
        Ok(changed > 0)
    }

    pub(super) async fn delete_source_row(&self, name: &str) -> Result<bool> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached("DELETE FROM sources WHERE name = $1")
            .await?;
        Ok(client.execute(&stmt, &[&name]).await? > 0)
    }
}
