//! What both stores share on the way in and out of SQL: the column lists each store's row
//! decoders read, and the values encoded before a write (JSON text, outcome names), so that the
//! work is done by the caller and not inside the store's transaction.

use super::{Result, DEFAULT_PAGE, MAX_PAGE};
use crate::model::{
    Attempt, AttemptOutcome, Completion, Delivery, DeliveryFilter, Event, EventToIngest, Lease,
    Next, Page,
};

/// The columns a store's `delivery_row` reads, in its order.
macro_rules! delivery_cols {
    () => {
        "id, event_id, event_type, webhook_id, status, attempts, next_attempt_at, last_status, \
         last_error, created_at, updated_at, total_attempts"
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
    pub(super) lease: Option<Lease>,
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
                lease: e.lease,
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

/// A Webhook Log query: newest first, filtered, one row more than a page so that the page knows
/// whether another follows.
pub(super) struct LogQuery {
    /// The statement; its text parameters are [`LogQuery::args`], then the row limit.
    pub(super) sql: String,
    /// The filter values, in parameter order.
    pub(super) args: Vec<String>,
    /// Rows to fetch (the page size plus one), the last parameter.
    pub(super) fetch: i64,
    page: usize,
}

impl LogQuery {
    /// The query for `filter`; `placeholder(n)` spells parameter `n` (from 1) in the store's SQL.
    pub(super) fn new(filter: &DeliveryFilter, placeholder: impl Fn(usize) -> String) -> LogQuery {
        let page = match filter.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut sql = String::from(concat!(
            "SELECT ",
            delivery_cols!(),
            " FROM deliveries WHERE 1 = 1"
        ));
        let mut args = Vec::new();
        let conditions = [
            ("webhook_id =", filter.webhook_id.clone()),
            ("status =", filter.status.map(|s| s.as_str().to_owned())),
            ("event_type =", filter.event_type.clone()),
            ("event_id =", filter.event_id.clone()),
            ("id <", filter.cursor.clone()),
        ];
        for (column, value) in conditions {
            if let Some(value) = value {
                args.push(value);
                sql.push_str(&format!(" AND {column} {}", placeholder(args.len())));
            }
        }
        sql.push_str(&format!(
            " ORDER BY id DESC LIMIT {}",
            placeholder(args.len() + 1)
        ));
        LogQuery {
            sql,
            args,
            fetch: i64::try_from(page + 1).unwrap_or(i64::MAX),
            page,
        }
    }

    /// The page of the fetched `items`, with the cursor of the next page when there is one.
    pub(super) fn page(&self, mut items: Vec<Delivery>) -> Page<Delivery> {
        let next_cursor = if items.len() > self.page {
            items.truncate(self.page);
            items.last().map(|d| d.id.clone())
        } else {
            None
        };
        Page { items, next_cursor }
    }
}
