//! The event catalog in SQLite (see [`crate::store::event_types`]).

use rusqlite::{params, ErrorCode, Row};

use super::SqliteStore;
use crate::store::event_types::{StoredEventType, TypeSeen};
use crate::store::{Error, Result, StoreChange};

fn event_type_row(row: &Row<'_>) -> rusqlite::Result<StoredEventType> {
    Ok(StoredEventType {
        name: row.get(0)?,
        spec: row.get(1)?,
        created_at: row.get(2)?,
        updated_at: row.get(3)?,
    })
}

impl SqliteStore {
    pub(super) async fn list_event_types(&self) -> Result<Vec<StoredEventType>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT name, spec, created_at, updated_at FROM event_types ORDER BY name",
                )?
                .query_map([], event_type_row)?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    pub(super) async fn insert_event_type_row(&self, t: &StoredEventType) -> Result<()> {
        let t = t.clone();
        self.write(move |conn| {
            conn.prepare_cached(
                "INSERT INTO event_types (name, spec, created_at, updated_at) \
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![t.name, t.spec, t.created_at, t.updated_at])
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == ErrorCode::ConstraintViolation =>
                {
                    Error::Conflict(format!("an event type named {:?} exists", t.name))
                }
                other => other.into(),
            })?;
            Ok(())
        })
        .await?;
        self.announce(StoreChange::EventTypes);
        Ok(())
    }

    pub(super) async fn update_event_type_row(&self, t: &StoredEventType) -> Result<bool> {
        let t = t.clone();
        let changed = self
            .write(move |conn| {
                let changed = conn
                    .prepare_cached(
                        "UPDATE event_types SET spec = ?2, updated_at = ?3 WHERE name = ?1",
                    )?
                    .execute(params![t.name, t.spec, t.updated_at])?;
                Ok(changed > 0)
            })
            .await?;
        if changed {
            self.announce(StoreChange::EventTypes);
        }
        Ok(changed)
    }

    pub(super) async fn delete_event_type_row(&self, name: &str) -> Result<bool> {
        let name = name.to_owned();
        let deleted = self
            .write(move |conn| {
                let deleted = conn
                    .prepare_cached("DELETE FROM event_types WHERE name = ?1")?
                    .execute([&name])?;
                Ok(deleted > 0)
            })
            .await?;
        if deleted {
            self.announce(StoreChange::EventTypes);
        }
        Ok(deleted)
    }

    pub(super) async fn add_uncataloged(&self, seen: &[TypeSeen]) -> Result<()> {
        if seen.is_empty() {
            return Ok(());
        }
        let seen = seen.to_vec();
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(
                "INSERT INTO uncataloged_event_types (name, count, last_seen) \
                 VALUES (?1, ?2, ?3) ON CONFLICT (name) DO UPDATE SET \
                 count = uncataloged_event_types.count + excluded.count, \
                 last_seen = MAX(uncataloged_event_types.last_seen, excluded.last_seen)",
            )?;
            for s in &seen {
                let count = i64::try_from(s.count).unwrap_or(i64::MAX);
                stmt.execute(params![s.event_type, count, s.last_seen])?;
            }
            Ok(())
        })
        .await
    }

    pub(super) async fn list_uncataloged(&self) -> Result<Vec<TypeSeen>> {
        self.read(|conn| {
            Ok(conn
                .prepare_cached(
                    "SELECT name, count, last_seen FROM uncataloged_event_types ORDER BY name",
                )?
                .query_map([], |row| {
                    Ok(TypeSeen {
                        event_type: row.get(0)?,
                        count: row.get::<_, i64>(1)?.max(0) as u64,
                        last_seen: row.get(2)?,
                    })
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }
}
