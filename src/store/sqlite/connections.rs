//! Shared connections in SQLite (see [`crate::connections`]).
//!
//! The spec is JSON text (its secrets already sealed by the encrypting wrapper). Deleting checks
//! the webhooks' specs for the name in the same write: the single writer makes the check and
//! the delete one step, so no webhook can start using the connection in between.

use rusqlite::{params, ErrorCode, OptionalExtension, Row};

use super::{to_json, SqliteStore};
use crate::connections::{Connection, ConnectionSpec, Deletion};
use crate::store::{Error, Result, StoreChange};

const COLUMNS: &str = "name, spec, created_at, updated_at";

fn connection_row(row: &Row<'_>) -> rusqlite::Result<(String, i64, i64)> {
    Ok((row.get(1)?, row.get(2)?, row.get(3)?))
}

fn decode((spec, created_at, updated_at): (String, i64, i64)) -> Result<Connection> {
    let spec: ConnectionSpec =
        serde_json::from_str(&spec).map_err(|e| Error::Corrupt(format!("connection spec: {e}")))?;
    Ok(Connection {
        spec,
        created_at,
        updated_at,
    })
}

impl SqliteStore {
    pub(super) async fn list_connections(&self) -> Result<Vec<Connection>> {
        let rows = self
            .read(|conn| {
                Ok(conn
                    .prepare_cached(&format!("SELECT {COLUMNS} FROM connections ORDER BY name"))?
                    .query_map([], connection_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?)
            })
            .await?;
        rows.into_iter().map(decode).collect()
    }

    pub(super) async fn connection_named(&self, name: &str) -> Result<Option<Connection>> {
        let name = name.to_owned();
        let row = self
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(&format!(
                        "SELECT {COLUMNS} FROM connections WHERE name = ?1"
                    ))?
                    .query_row([&name], connection_row)
                    .optional()?)
            })
            .await?;
        row.map(decode).transpose()
    }

    pub(super) async fn insert_connection_row(&self, connection: &Connection) -> Result<()> {
        let spec = to_json(&connection.spec)?;
        let (name, created_at, updated_at) = (
            connection.spec.name.clone(),
            connection.created_at,
            connection.updated_at,
        );
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO connections (name, spec, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![name, spec, created_at, updated_at])
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == ErrorCode::ConstraintViolation =>
                {
                    Error::Conflict(format!("a connection named {name:?} exists"))
                }
                other => other.into(),
            })?;
            Ok(())
        })
        .await?;
        self.announce(StoreChange::Webhooks);
        Ok(())
    }

    pub(super) async fn update_connection_row(&self, connection: &Connection) -> Result<bool> {
        let spec = to_json(&connection.spec)?;
        let (name, updated_at) = (connection.spec.name.clone(), connection.updated_at);
        let changed = self
            .write(move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE connections SET spec = ?2, updated_at = ?3 WHERE name = ?1",
                    )?
                    .execute(params![name, spec, updated_at])?;
                Ok(changed > 0)
            })
            .await?;
        if changed {
            // Webhooks on the connection now send other credentials.
            self.announce(StoreChange::Webhooks);
        }
        Ok(changed)
    }

    pub(super) async fn delete_connection_row(&self, name: &str) -> Result<Deletion> {
        let name = name.to_owned();
        let deletion = self
            .write(move |conn| {
                let users = conn
                    .prepare_cached(
                        "SELECT name FROM webhooks \
                         WHERE json_extract(spec, '$.connection') = ?1 ORDER BY name",
                    )?
                    .query_map([&name], |row| row.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                if !users.is_empty() {
                    return Ok(Deletion::InUse(users));
                }
                let deleted = conn
                    .prepare_cached("DELETE FROM connections WHERE name = ?1")?
                    .execute([&name])?;
                Ok(if deleted > 0 {
                    Deletion::Deleted
                } else {
                    Deletion::NotFound
                })
            })
            .await?;
        if deletion == Deletion::Deleted {
            self.announce(StoreChange::Webhooks);
        }
        Ok(deletion)
    }
}
