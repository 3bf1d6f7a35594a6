//! The event catalog as the store keeps it (see [`crate::catalog`]).
//!
//! Like sources, the store knows an event type only by name: its spec (description, JSON
//! Schema, example, deprecated) is JSON text that [`crate::catalog`] writes and reads. Beside
//! the catalog, the store keeps a count of events ingested with a type the catalog does not
//! list: each process counts in memory and adds its counts here now and then
//! ([`Store::count_uncataloged`](super::Store::count_uncataloged)), so the totals are those of
//! every process on the database.

use crate::model::Millis;

/// One stored event type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEventType {
    /// Unique name (`user.created`).
    pub name: String,
    /// The type's spec as JSON text.
    pub spec: String,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// Events ingested with a type the catalog did not list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypeSeen {
    /// The event type.
    pub event_type: String,
    /// How many such events were accepted.
    pub count: u64,
    /// When the last one was.
    pub last_seen: Millis,
}
