//! What both stores share on the way in and out of SQL: the column lists each store's row
//! decoders read, and the values encoded before a write (JSON text, outcome names), so that the
//! work is done by the caller and not inside the store's transaction.

use super::Result;
use crate::model::{Attempt, AttemptOutcome, Completion, Event, EventToIngest, Next};

/// The columns a store's `delivery_row` reads, in its order.
macro_rules! delivery_cols {
    () => {
        "id, event_id, event_type, webhook_id, status, attempts, next_attempt_at, last_status, \
         last_error, created_at, updated_at"
    };
}

/// The columns a store's `webhook_row` reads, in its order.
macro_rules! webhook_cols {
    () => {
        "id, spec, enabled, created_at, updated_at"
    };
}

/// The columns a store's `event_row` reads, in its order.
macro_rules! event_cols {
    () => {
        "id, type, data, context, occurred_at, received_at"
    };
}

/// The columns a store's `attempt_row` reads, in its order.
macro_rules! attempt_cols {
    () => {
        "delivery_id, attempt_no, started_at, duration_ms, request, response_status, \
         response_headers, response_body, error, outcome"
    };
}

/// `remember_message` purges expired inbound message ids once per this many calls.
pub(super) const PURGE_EVERY: u64 = 256;

/// JSON text of `value`, as the stores keep it.
pub(super) fn to_json<T: serde::Serialize + ?Sized>(value: &T) -> Result<String> {
    serde_json::to_string(value)
        .map_err(|e| super::Error::Database(format!("cannot encode JSON: {e}")))
}

/// How an attempt's outcome is stored.
pub(super) fn outcome_str(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Succeeded => "succeeded",
        AttemptOutcome::Retry => "retry",
        AttemptOutcome::Dead => "dead",
        AttemptOutcome::Skipped => "skipped",
    }
}

/// An event with its JSON already encoded.
pub(super) struct EncodedEvent {
    pub(super) event: Event,
    pub(super) data: String,
    pub(super) context: String,
    pub(super) deliveries: Vec<(String, String)>,
}

/// [`EncodedEvent`]s of `events`, in order.
pub(super) fn encode_events(events: Vec<EventToIngest>) -> Result<Vec<EncodedEvent>> {
    events
        .into_iter()
        .map(|e| {
            Ok(EncodedEvent {
                data: to_json(&e.event.data)?,
                context: to_json(&e.event.context)?,
                event: e.event,
                deliveries: e.deliveries,
            })
        })
        .collect()
}

/// A completion with its JSON already encoded.
pub(super) struct EncodedCompletion {
    pub(super) attempt: Attempt,
    pub(super) request: Option<String>,
    pub(super) response_headers: String,
    pub(super) next: Next,
    pub(super) disable_webhook: bool,
    /// Committed with the completion, only when the lease was held.
    pub(super) followups: Vec<EncodedEvent>,
}

impl EncodedCompletion {
    /// Encodes `completion`.
    pub(super) fn new(completion: Completion) -> Result<EncodedCompletion> {
        Ok(EncodedCompletion {
            request: completion
                .attempt
                .request
                .as_ref()
                .map(to_json)
                .transpose()?,
            response_headers: to_json(&completion.attempt.response_headers)?,
            attempt: completion.attempt,
            next: completion.next,
            disable_webhook: completion.disable_webhook,
            followups: encode_events(completion.followups)?,
        })
    }
}
