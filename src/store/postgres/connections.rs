//! Shared connections in PostgreSQL (see [`crate::connections`]).
//!
//! The spec is JSON text (its secrets already sealed by the encrypting wrapper). Every change
//! sends a `webhooks` change notice in its transaction: the webhooks on a connection send other
//! credentials from then on, so every process reloads its directory. Deleting locks the
//! connection's row and checks the webhooks' specs for its name in the same transaction; a
//! webhook saved by another process at that very moment can still name it, and its deliveries
//! then fail (retryably) naming the missing connection.

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::{notify, to_json, PostgresStore};
use crate::connections::{Connection, ConnectionSpec, Deletion};
use crate::store::{Error, Result, StoreChange};

const COLUMNS: &str = "name, spec, created_at, updated_at";

fn connection_row(row: &Row) -> Result<Connection> {
    let spec: String = row.try_get(1)?;
    let spec: ConnectionSpec =
        serde_json::from_str(&spec).map_err(|e| Error::Corrupt(format!("connection spec: {e}")))?;
    Ok(Connection {
        spec,
        created_at: row.try_get(2)?,
        updated_at: row.try_get(3)?,
    })
}

impl PostgresStore {
    pub(super) async fn list_connections(&self) -> Result<Vec<Connection>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!("SELECT {COLUMNS} FROM connections ORDER BY name"))
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(connection_row)
            .collect()
    }

    pub(super) async fn connection_named(&self, name: &str) -> Result<Option<Connection>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM connections WHERE name = $1"
            ))
            .await?;
        client
            .query_opt(&stmt, &[&name])
            .await?
            .as_ref()
            .map(connection_row)
            .transpose()
    }

    pub(super) async fn insert_connection_row(&self, c: &Connection) -> Result<()> {
        let spec = to_json(&c.spec)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO connections (name, spec, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .await?;
        tx.execute(&stmt, &[&c.spec.name, &spec, &c.created_at, &c.updated_at])
            .await
            .map_err(|e| {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    Error::Conflict(format!("a connection named {:?} exists", c.spec.name))
                } else {
                    e.into()
                }
            })?;
        notify(&tx, &self.channel, StoreChange::Webhooks).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn update_connection_row(&self, c: &Connection) -> Result<bool> {
        let spec = to_json(&c.spec)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached("UPDATE connections SET spec = $2, updated_at = $3 WHERE name = $1")
            .await?;
        let changed = tx
            .execute(&stmt, &[&c.spec.name, &spec, &c.updated_at])
            .await?
            > 0;
        if changed {
            notify(&tx, &self.channel, StoreChange::Webhooks).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    pub(super) async fn delete_connection_row(&self, name: &str) -> Result<Deletion> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let lock = tx
            .prepare_cached("SELECT 1 FROM connections WHERE name = $1 FOR UPDATE")
            .await?;
        if tx.query_opt(&lock, &[&name]).await?.is_none() {
            return Ok(Deletion::NotFound);
        }
        let users = tx
            .prepare_cached(
                "SELECT name FROM webhooks WHERE (spec::jsonb) ->> 'connection' = $1 \
                 ORDER BY name",
            )
            .await?;
        let users: Vec<String> = tx
            .query(&users, &[&name])
            .await?
            .iter()
            .map(|row| row.try_get(0))
            .collect::<std::result::Result<_, _>>()?;
        if !users.is_empty() {
            return Ok(Deletion::InUse(users));
        }
        let delete = tx
            .prepare_cached("DELETE FROM connections WHERE name = $1")
            .await?;
        tx.execute(&delete, &[&name]).await?;
        notify(&tx, &self.channel, StoreChange::Webhooks).await?;
        tx.commit().await?;
        Ok(Deletion::Deleted)
    }
}
