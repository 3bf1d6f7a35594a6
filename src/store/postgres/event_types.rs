//! The event catalog in PostgreSQL (see [`crate::store::event_types`]).

use tokio_postgres::error::SqlState;
use tokio_postgres::Row;

use super::{notify, PostgresStore};
use crate::store::event_types::{StoredEventType, TypeSeen};
use crate::store::{Error, Result, StoreChange};

fn event_type_row(row: &Row) -> Result<StoredEventType> {
    Ok(StoredEventType {
        name: row.try_get(0)?,
        spec: row.try_get(1)?,
        created_at: row.try_get(2)?,
        updated_at: row.try_get(3)?,
    })
}

impl PostgresStore {
    pub(super) async fn list_event_types(&self) -> Result<Vec<StoredEventType>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT name, spec, created_at, updated_at FROM event_types ORDER BY name",
            )
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(event_type_row)
            .collect()
    }

    pub(super) async fn insert_event_type_row(&self, t: &StoredEventType) -> Result<()> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO event_types (name, spec, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4)",
            )
            .await?;
        tx.execute(&stmt, &[&t.name, &t.spec, &t.created_at, &t.updated_at])
            .await
            .map_err(|e| {
                if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                    Error::Conflict(format!("an event type named {:?} exists", t.name))
                } else {
                    e.into()
                }
            })?;
        notify(&tx, &self.channel, StoreChange::EventTypes).await?;
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn update_event_type_row(&self, t: &StoredEventType) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached("UPDATE event_types SET spec = $2, updated_at = $3 WHERE name = $1")
            .await?;
        let changed = tx
            .execute(&stmt, &[&t.name, &t.spec, &t.updated_at])
            .await?
            > 0;
        if changed {
            notify(&tx, &self.channel, StoreChange::EventTypes).await?;
        }
        tx.commit().await?;
        Ok(changed)
    }

    pub(super) async fn delete_event_type_row(&self, name: &str) -> Result<bool> {
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached("DELETE FROM event_types WHERE name = $1")
            .await?;
        let deleted = tx.execute(&stmt, &[&name]).await? > 0;
        if deleted {
            notify(&tx, &self.channel, StoreChange::EventTypes).await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    pub(super) async fn add_uncataloged(&self, seen: &[TypeSeen]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        // In name order, so that processes adding counts for the same types at once lock the
        // rows in the same order (no deadlock).
        let mut seen: Vec<&TypeSeen> = seen.iter().collect();
        seen.sort_by(|a, b| a.event_type.cmp(&b.event_type));
        let mut client = self.client().await?;
        let tx = client.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO uncataloged_event_types (name, count, last_seen) \
                 VALUES ($1, $2, $3) ON CONFLICT (name) DO UPDATE SET \
                 count = uncataloged_event_types.count + excluded.count, \
                 last_seen = GREATEST(uncataloged_event_types.last_seen, excluded.last_seen)",
            )
            .await?;
        for s in seen {
            let count = i64::try_from(s.count).unwrap_or(i64::MAX);
            tx.execute(&stmt, &[&s.event_type, &count, &s.last_seen])
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub(super) async fn list_uncataloged(&self) -> Result<Vec<TypeSeen>> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT name, count, last_seen FROM uncataloged_event_types ORDER BY name",
            )
            .await?;
        client
            .query(&stmt, &[])
            .await?
            .iter()
            .map(|row| {
                Ok(TypeSeen {
                    event_type: row.try_get(0)?,
                    count: row.try_get::<_, i64>(1)?.max(0) as u64,
                    last_seen: row.try_get(2)?,
                })
            })
            .collect()
    }
}
