//! What both stores share on the way in and out of SQL: the column lists each store's row
//! decoders read, and the values encoded before a write (JSON text, outcome names), so that the
//! work is done by the caller and not inside the store's transaction.

use super::{Result, DEFAULT_PAGE, MAX_PAGE};
use crate::model::{
    Attempt, AttemptOutcome, Completion, Delivery, DeliveryFilter, DeliverySource, Event,
    EventToIngest, Lease, Millis, Next, Page,
};

/// The columns a store's `delivery_row` reads, in its order.
macro_rules! delivery_cols {
    () => {
        "id, event_id, event_type, webhook_id, status, attempts, next_attempt_at, last_status, \
         last_error, created_at, updated_at, source, origin, total_attempts"
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
         response_headers, response_body, error, outcome, plugin_name, plugin_version"
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
    /// Where its deliveries come from ([`DeliverySource::of`], or a test send's delivery id).
    pub(super) source: &'static str,
    pub(super) origin: Option<String>,
}

/// [`EncodedEvent`]s of `events`, in order.
pub(super) fn encode_events(events: Vec<EventToIngest>) -> Result<Vec<EncodedEvent>> {
    events
        .into_iter()
        .map(|e| {
            let (mut source, origin) = DeliverySource::of(&e.event);
            if e.deliveries
                .iter()
                .any(|(_, id)| crate::model::is_test_delivery(id))
            {
                source = DeliverySource::Test;
            }
            Ok(EncodedEvent {
                source: source.as_str(),
                origin,
                data: to_json(&e.event.data)?,
                context: to_json(&e.event.context)?,
                event: e.event,
                deliveries: e.deliveries,
                lease: e.lease,
            })
        })
        .collect()
}

/// An attempt with its JSON already encoded.
pub(super) struct EncodedAttempt {
    pub(super) attempt: Attempt,
    pub(super) request: Option<String>,
    pub(super) response_headers: String,
}

impl EncodedAttempt {
    pub(super) fn new(attempt: Attempt) -> Result<EncodedAttempt> {
        Ok(EncodedAttempt {
            request: attempt
                .request
                .as_ref()
                .map(|r| to_json(&*r.for_storage()))
                .transpose()?,
            response_headers: to_json(&attempt.response_headers)?,
            attempt,
        })
    }

    /// The plugin's name and version of `attempt`, as stored.
    pub(super) fn plugin_of(attempt: &Attempt) -> (Option<&str>, Option<i64>) {
        match &attempt.plugin {
            Some(p) => (Some(p.name.as_str()), Some(i64::from(p.version))),
            None => (None, None),
        }
    }
}

/// A completion with its JSON already encoded.
pub(super) struct EncodedCompletion {
    /// Logged before `attempt`, in order (see [`Completion::earlier`]).
    pub(super) earlier: Vec<EncodedAttempt>,
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
                .map(|r| to_json(&*r.for_storage()))
                .transpose()?,
            response_headers: to_json(&completion.attempt.response_headers)?,
            earlier: completion
                .earlier
                .into_iter()
                .map(EncodedAttempt::new)
                .collect::<Result<_>>()?,
            attempt: completion.attempt,
            next: completion.next,
            disable_webhook: completion.disable_webhook,
            followups: encode_events(completion.followups)?,
        })
    }
}

/// The SQL spelling a [`LogQuery`] is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a [`LogQuery`] parameter.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Arg {
    Text(String),
    Int(i64),
}

/// How far a delivery id's embedded time (UUIDv7, `msg_<48-bit ms>...`) may be from its
/// `created_at`: both are taken from the same clock within the same call, so an hour is far
/// more than they ever differ. Time filters bound the id by the time plus this slack, so that
/// a time range is a range of the primary key (walked newest first, like every page), and
/// check `created_at` exactly.
pub(super) const ID_TIME_SLACK_MS: Millis = 3_600_000;

/// The smallest delivery id made at or after `ms` (ids are `msg_` and 32 hex digits, the first
/// twelve the UUIDv7 time).
fn id_at(ms: Millis) -> String {
    format!("msg_{:012x}", ms.clamp(0, 0xffff_ffff_ffff))
}

/// The words of a free-text search, per whitespace-separated term: runs of letters and
/// digits, lowercased. Both stores index an event's id and data split the same way (FTS5's
/// `unicode61` tokenizer; PostgreSQL's `simple` parser after punctuation is turned into spaces),
/// so a term with punctuation (`ann@example.com`) is searched as the phrase of its words.
/// Terms without any letter or digit are dropped.
pub(crate) fn search_terms(text: &str) -> Vec<Vec<String>> {
    text.split_whitespace()
        .map(|term| {
            term.split(|c: char| !c.is_alphanumeric())
                .filter(|w| !w.is_empty())
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
        })
        .filter(|words| !words.is_empty())
        .collect()
}

/// The full-text query of `terms` in the store's syntax: every term must match, each as a
/// phrase. Only letters and digits reach it, so nothing needs quoting beyond the phrase marks.
fn text_query(terms: &[Vec<String>], dialect: Dialect) -> String {
    match dialect {
        Dialect::Sqlite => terms
            .iter()
            .map(|words| format!("\"{}\"", words.join(" ")))
            .collect::<Vec<_>>()
            .join(" AND "),
        Dialect::Postgres => terms
            .iter()
            .map(|words| format!("({})", words.join(" <-> ")))
            .collect::<Vec<_>>()
            .join(" & "),
    }
}

/// An event type glob (`*` is any run of characters) as a SQLite `GLOB` pattern or a
/// PostgreSQL `LIKE` pattern, with the other pattern characters of each taken literally.
fn type_pattern(glob: &str, dialect: Dialect) -> String {
    let mut out = String::with_capacity(glob.len() + 4);
    for c in glob.chars() {
        match (dialect, c) {
            (_, '*') => out.push(if dialect == Dialect::Sqlite { '*' } else { '%' }),
            (Dialect::Sqlite, '?') => out.push_str("[?]"),
            (Dialect::Sqlite, '[') => out.push_str("[[]"),
            (Dialect::Postgres, '%' | '_' | '\\') => {
                out.push('\\');
                out.push(c);
            }
            (_, c) => out.push(c),
        }
    }
    out
}

/// A Webhook Log query: newest first, filtered, one row more than a page so that the page knows
/// whether another follows.
pub(super) struct LogQuery {
    /// The statement; its parameters are [`LogQuery::args`], then the row limit.
    pub(super) sql: String,
    /// The filter values, in parameter order.
    pub(super) args: Vec<Arg>,
    /// Rows to fetch (the page size plus one), the last parameter.
    pub(super) fetch: i64,
    page: usize,
}

impl LogQuery {
    /// The query for `filter` in `dialect`.
    ///
    /// Every filter is served by an index: the primary key (newest first, cursor, time range),
    /// `deliveries_log` and `deliveries_webhook` (webhook, status), `deliveries_source` (partial:
    /// sources other than `webhook`, which the query names literally so that the planner may use
    /// it), `deliveries_origin`, `deliveries_event`, and the full-text index of events.
    pub(super) fn new(filter: &DeliveryFilter, dialect: Dialect) -> LogQuery {
        let page = match filter.limit {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let mut q = Builder {
            sql: String::from(concat!(
                "SELECT ",
                delivery_cols!(),
                " FROM deliveries WHERE 1 = 1"
            )),
            args: Vec::new(),
            dialect,
        };
        if let Some(v) = &filter.webhook_id {
            q.cond("webhook_id = ?", Arg::Text(v.clone()));
        }
        if let Some(v) = filter.status {
            q.cond("status = ?", Arg::Text(v.as_str().to_owned()));
        }
        if !filter.event_types.is_empty() {
            let mut any = Vec::new();
            for pattern in &filter.event_types {
                if pattern.contains('*') {
                    let op = match dialect {
                        Dialect::Sqlite => "GLOB",
                        Dialect::Postgres => "LIKE",
                    };
                    any.push((
                        format!("event_type {op} ?"),
                        Arg::Text(type_pattern(pattern, dialect)),
                    ));
                } else {
                    any.push(("event_type = ?".to_owned(), Arg::Text(pattern.clone())));
                }
            }
            q.any(any);
        }
        if let Some(v) = &filter.event_id {
            q.cond("event_id = ?", Arg::Text(v.clone()));
        }
        match filter.source {
            None => {}
            Some(DeliverySource::Webhook) => q.raw("source = 'webhook'"),
            // Literal, so that the partial index `WHERE source <> 'webhook'` is seen to apply.
            Some(other) => q.raw(&format!(
                "source <> 'webhook' AND source = '{}'",
                other.as_str()
            )),
        }
        if let Some(v) = &filter.origin {
            q.cond("origin = ?", Arg::Text(v.clone()));
        }
        if let Some(since) = filter.since {
            q.cond("created_at >= ?", Arg::Int(since));
            q.cond(
                "id >= ?",
                Arg::Text(id_at(since.saturating_sub(ID_TIME_SLACK_MS))),
            );
        }
        if let Some(until) = filter.until {
            q.cond("created_at < ?", Arg::Int(until));
            q.cond(
                "id < ?",
                Arg::Text(id_at(until.saturating_add(ID_TIME_SLACK_MS))),
            );
        }
        if let Some(text) = &filter.text {
            let terms = search_terms(text);
            if !terms.is_empty() {
                let sub = match dialect {
                    Dialect::Sqlite => {
                        "event_id IN (SELECT e.id FROM events_fts f JOIN events e \
                         ON e.rowid = f.rowid WHERE events_fts MATCH ?)"
                    }
                    Dialect::Postgres => {
                        "event_id IN (SELECT id FROM events \
                         WHERE search @@ to_tsquery('simple', ?))"
                    }
                };
                q.cond(sub, Arg::Text(text_query(&terms, dialect)));
            }
        }
        if let Some(v) = &filter.cursor {
            q.cond("id < ?", Arg::Text(v.clone()));
        }
        let limit = q.placeholder(q.args.len() + 1);
        q.sql.push_str(&format!(" ORDER BY id DESC LIMIT {limit}"));
        LogQuery {
            sql: q.sql,
            args: q.args,
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

/// Builds the WHERE clause of a [`LogQuery`]: each `?` of a condition becomes the next
/// parameter in the dialect's spelling.
struct Builder {
    sql: String,
    args: Vec<Arg>,
    dialect: Dialect,
}

impl Builder {
    fn placeholder(&self, n: usize) -> String {
        match self.dialect {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }

    fn bind(&mut self, condition: &str, arg: Arg) -> String {
        self.args.push(arg);
        condition.replacen('?', &self.placeholder(self.args.len()), 1)
    }

    fn cond(&mut self, condition: &str, arg: Arg) {
        let bound = self.bind(condition, arg);
        self.sql.push_str(" AND ");
        self.sql.push_str(&bound);
    }

    fn any(&mut self, conditions: Vec<(String, Arg)>) {
        let bound: Vec<String> = conditions
            .into_iter()
            .map(|(c, a)| self.bind(&c, a))
            .collect();
        self.sql.push_str(&format!(" AND ({})", bound.join(" OR ")));
    }

    fn raw(&mut self, condition: &str) {
        self.sql.push_str(" AND ");
        self.sql.push_str(condition);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_terms_split_like_the_indexes() {
        assert_eq!(
            search_terms("  Ann@Example.com  42 -- "),
            vec![
                vec!["ann".to_owned(), "example".to_owned(), "com".to_owned()],
                vec!["42".to_owned()]
            ]
        );
        assert!(search_terms("\"'*").is_empty());
        let terms = search_terms("ann@example.com 42");
        assert_eq!(
            text_query(&terms, Dialect::Sqlite),
            "\"ann example com\" AND \"42\""
        );
        assert_eq!(
            text_query(&terms, Dialect::Postgres),
            "(ann <-> example <-> com) & (42)"
        );
    }

    #[test]
    fn type_globs_take_other_pattern_characters_literally() {
        assert_eq!(type_pattern("user.*", Dialect::Sqlite), "user.*");
        assert_eq!(type_pattern("a?[b*", Dialect::Sqlite), "a[?][[]b*");
        assert_eq!(type_pattern("user.*", Dialect::Postgres), "user.%");
        assert_eq!(type_pattern("a_%\\*", Dialect::Postgres), "a\\_\\%\\\\%");
    }

    #[test]
    fn time_bounds_are_id_ranges() {
        // The id of a delivery made at `ms` sorts between the bounds of a range around it.
        let ms = 1_765_000_000_000;
        let id = format!("msg_{ms:012x}7abc8def0123456789abcdef");
        assert!(id_at(ms) <= id && id < id_at(ms + 1));
        let filter = DeliveryFilter {
            since: Some(ms),
            until: Some(ms + 10),
            ..Default::default()
        };
        let q = LogQuery::new(&filter, Dialect::Postgres);
        assert!(q.sql.contains("created_at >= $1 AND id >= $2"), "{}", q.sql);
        assert!(q.sql.contains("created_at < $3 AND id < $4"), "{}", q.sql);
        assert!(q.sql.ends_with("LIMIT $5"), "{}", q.sql);
    }
}
