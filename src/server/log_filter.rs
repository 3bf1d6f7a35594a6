//! The query string of the Webhook Log (`GET /admin/v1/deliveries`) and what it means.
//!
//! | parameter    | meaning                                                                  |
//! |--------------|--------------------------------------------------------------------------|
//! | `webhook`    | the webhook (id or name)                                                 |
//! | `status`     | `pending`, `succeeded`, `dead` or `skipped`                              |
//! | `event_type` | exact types or globs (`user.*`); repeatable or comma-separated: any      |
//! | `event_id`   | one event                                                                |
//! | `source`     | `webhook`, `sink`, `inbound` (refused inbound pushes) or `test`          |
//! | `origin`     | the webhook (id or name) a sink message or refused push came from, or    |
//! |              | `source:<name>`: the messages a bus source dead-lettered                 |
//! | `since`      | created at or after this RFC 3339 time                                   |
//! | `until`      | created before this RFC 3339 time                                        |
//! | `q`          | free text over the event's id and data: every word must occur            |
//! | `limit`      | page size, 1 to 1000 (default 50)                                        |
//! | `cursor`     | `next_cursor` of the previous page                                       |
//!
//! Unknown parameters are a 400, malformed values a 422 naming the parameter.

use axum::http::StatusCode;

use super::{ApiError, Shared};
use crate::model::{DeliveryFilter, DeliverySource, DeliveryStatus, Millis};

/// The query parameters, as the OpenAPI document shows them ([`parse`] reads the query string
/// itself, since `event_type` may repeat).
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)] // read by the OpenAPI document only
pub struct LogQuery {
    /// The webhook's id or name.
    webhook: Option<String>,
    /// The delivery status.
    #[param(inline, value_type = Option<DeliveryStatus>)]
    status: Option<String>,
    /// Exact event types or globs (`user.*`), repeatable or comma-separated: any matches.
    event_type: Option<String>,
    /// One event.
    event_id: Option<String>,
    /// `webhook`, `sink`, `inbound` (refused inbound pushes) or `test`.
    #[param(inline, value_type = Option<DeliverySource>)]
    source: Option<String>,
    /// The webhook (id or name) a sink message or refused push came from, or `source:<name>`
    /// for the messages a bus source dead-lettered.
    origin: Option<String>,
    /// Created at or after this time (RFC 3339).
    #[param(format = DateTime)]
    since: Option<String>,
    /// Created before this time (RFC 3339).
    #[param(format = DateTime)]
    until: Option<String>,
    /// Free text over the event's id and data: every word must occur.
    q: Option<String>,
    /// Page size, 1 to 1000 (default 50).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// Default page size of the API.
const DEFAULT_LIMIT: usize = 50;

/// The filter a query string asks for; webhook names are resolved to ids.
pub async fn parse(state: &Shared, query: Option<&str>) -> Result<DeliveryFilter, ApiError> {
    let mut filter = DeliveryFilter {
        limit: DEFAULT_LIMIT,
        ..Default::default()
    };
    let (mut webhook, mut origin) = (None, None);
    for (key, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        let value = value.into_owned();
        match key.as_ref() {
            "webhook" => webhook = Some(value),
            "status" => {
                filter.status = Some(DeliveryStatus::parse(&value).ok_or_else(|| {
                    ApiError::invalid_field("status", "one of pending, succeeded, dead, skipped")
                })?)
            }
            "event_type" => filter.event_types.extend(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(str::to_owned),
            ),
            "event_id" => filter.event_id = Some(value),
            "source" => {
                filter.source = Some(DeliverySource::parse(&value).ok_or_else(|| {
                    ApiError::invalid_field("source", "one of webhook, sink, inbound, test")
                })?)
            }
            "origin" => origin = Some(value),
            "since" => filter.since = Some(time(&value, "since")?),
            "until" => filter.until = Some(time(&value, "until")?),
            "q" => {
                if crate::store::search_terms(&value).is_empty() {
                    return Err(ApiError::invalid_field(
                        "q",
                        "the search text has no letters or digits",
                    ));
                }
                filter.text = Some(value);
            }
            "limit" => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| ApiError::invalid_field("limit", "must be 1 to 1000"))?
            }
            "cursor" => filter.cursor = Some(value),
            other => {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    format!("unknown query parameter {other:?}"),
                ))
            }
        }
    }
    if let Some(w) = webhook {
        filter.webhook_id = Some(webhook_id(state, &w).await?);
    }
    if let Some(o) = origin {
        filter.origin = Some(webhook_id(state, &o).await?);
    }
    Ok(filter)
}

/// A webhook's id by id or name; the id of a deleted webhook (`wh_...`) is taken as is, so
/// that its log can still be read.
async fn webhook_id(state: &Shared, id_or_name: &str) -> Result<String, ApiError> {
    match state.store.webhook(id_or_name).await? {
        Some(hook) => Ok(hook.id),
        None if id_or_name.starts_with("wh_") => Ok(id_or_name.to_owned()),
        // A bus source's dead-lettered messages (see `crate::source::dead_letters`).
        None if id_or_name.starts_with("source:") => Ok(id_or_name.to_owned()),
        None => Err(ApiError::not_found("webhook")),
    }
}

/// An RFC 3339 time as [`Millis`]; 422 naming `field` when malformed.
fn time(value: &str, field: &str) -> Result<Millis, ApiError> {
    let t = time::OffsetDateTime::parse(value, &time::format_description::well_known::Rfc3339)
        .map_err(|e| {
            ApiError::invalid_field(
                field,
                format!("not an RFC 3339 time (2026-12-07T10:00:00Z): {e}"),
            )
        })?;
    Ok((t.unix_timestamp_nanos() / 1_000_000) as Millis)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(
            time("2026-12-07T10:00:00Z", "since").ok(),
            Some(1_796_637_600_000)
        );
        assert_eq!(
            time("2026-12-07T11:00:00.5+01:00", "since").ok(),
            Some(1_796_637_600_500)
        );
        for bad in ["2026-12-07", "yesterday", "", "2026-12-07 10:00:00"] {
            let e = time(bad, "until").unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}");
            assert_eq!(e.field.as_deref(), Some("until"));
        }
    }
}
