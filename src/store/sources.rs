//! Message-bus sources as the store keeps them (see [`crate::source`]).
//!
//! The store knows a source only by name: its spec is JSON text that [`crate::source`] writes
//! and reads, so the storage layer does not depend on the brokers' settings. `paused` is apart
//! from the spec because pausing is runtime state that re-applying the config must not undo.
//! Every gateway process on the same database runs every source that is not paused (the broker
//! balances their consumers), and re-reads this table to follow creations, pauses, resumes and
//! deletions made through any of them.

use crate::model::Millis;

/// One stored source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredSource {
    /// Unique name.
    pub name: String,
    /// The source's spec as JSON text.
    pub spec: String,
    /// Paused sources are not consumed by any process.
    pub paused: bool,
    /// Creation time.
    pub created_at: Millis,
    /// Last change of spec or pause state.
    pub updated_at: Millis,
}
