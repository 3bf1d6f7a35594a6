//! What each source of this process is doing, for `GET /admin/v1/sources` and `/metrics`.
//!
//! The board is per process: with several gateway processes on one database, each reports its
//! own consumer's counters (the broker's lag is the same for all of them).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;
use tokio::sync::Notify;

use crate::model::{now_ms, Millis};

/// Failures kept per source, newest last.
const RECENT_FAILURES: usize = 20;

/// The state of one source in this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// Connecting to the broker (or waiting to retry after a failure).
    Connecting,
    /// Consuming.
    Running,
    /// Not pulling: the delivery queue is deeper than `max_queue_depth`.
    Throttled,
    /// Paused through the admin API.
    Paused,
    /// Failing; `last_error` says why, and it is retried.
    Failing,
}

/// One message that could not become an event.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Failure {
    /// When (Unix ms).
    #[schema(value_type = i64)]
    pub at: Millis,
    /// Subject or routing key.
    pub subject: String,
    /// The id the event would have had.
    pub id: String,
    /// Why, and what the broker was told (dead-lettered).
    pub reason: String,
}

/// Counters and state of one source.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SourceStatus {
    /// What it is doing.
    pub state: SourceState,
    /// Messages taken from the broker.
    pub consumed: u64,
    /// Events committed (new ones).
    pub committed: u64,
    /// Messages whose event id was already stored (redeliveries): acknowledged, not enqueued.
    pub duplicates: u64,
    /// Messages that could not become events, sent to the broker's dead-letter route.
    pub dead_lettered: u64,
    /// Messages waiting in the broker (NATS: the consumer's pending count; AMQP: the queue's
    /// ready messages), as last read; none before the first read.
    pub lag: Option<u64>,
    /// The last connection or commit error, cleared by the next success.
    pub last_error: Option<String>,
    /// The latest dead-lettered messages with their reasons, newest last.
    #[schema(value_type = Vec<Failure>)]
    pub recent_failures: VecDeque<Failure>,
    /// When the state last changed (Unix ms).
    #[schema(value_type = i64)]
    pub since: Millis,
}

impl Default for SourceStatus {
    fn default() -> Self {
        SourceStatus {
            state: SourceState::Connecting,
            consumed: 0,
            committed: 0,
            duplicates: 0,
            dead_lettered: 0,
            lag: None,
            last_error: None,
            recent_failures: VecDeque::new(),
            since: now_ms(),
        }
    }
}

/// Every source's status in this process, and the bell that makes the runner re-read the
/// stored sources at once (after an admin change) instead of at its next periodic read.
#[derive(Debug, Default)]
pub struct SourceBoard {
    statuses: Mutex<HashMap<String, SourceStatus>>,
    changed: Notify,
}

impl SourceBoard {
    /// A copy of one source's status.
    pub fn get(&self, name: &str) -> Option<SourceStatus> {
        self.lock().get(name).cloned()
    }

    /// Changes one source's status (created when missing).
    pub fn update(&self, name: &str, f: impl FnOnce(&mut SourceStatus)) {
        let mut statuses = self.lock();
        f(statuses.entry(name.to_owned()).or_default());
    }

    /// Sets the state (and when it changed).
    pub fn set_state(&self, name: &str, state: SourceState) {
        self.update(name, |s| {
            if s.state != state {
                s.state = state;
                s.since = now_ms();
            }
        });
    }

    /// Records a dead-lettered message.
    pub fn failed(&self, name: &str, failure: Failure) {
        self.update(name, |s| {
            s.dead_lettered += 1;
            if s.recent_failures.len() == RECENT_FAILURES {
                s.recent_failures.pop_front();
            }
            s.recent_failures.push_back(failure);
        });
    }

    /// Forgets a deleted source.
    pub fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    /// Forgets every source but those `keep` says.
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        self.lock().retain(|name, _| keep(name));
    }

    /// Wakes the runner to re-read the stored sources now.
    pub fn ring(&self) {
        self.changed.notify_one();
    }

    /// Resolves when [`SourceBoard::ring`] was called (since the last wait, or during it).
    pub async fn rung(&self) {
        self.changed.notified().await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, SourceStatus>> {
        // A panic while holding this lock cannot leave the counters inconsistent in a way that
        // matters more than losing them: keep serving.
        self.statuses
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
