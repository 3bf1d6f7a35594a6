//! `POST /v1/events` and `POST /v1/events/batch`.
//!
//! An event is answered 202 only after it and one delivery per matching enabled webhook are
//! committed together. A repeated event id enqueues nothing and is answered like the first time,
//! with `"duplicate": true`. While the due backlog is over `delivery.ingest_backlog_limit`, both
//! routes answer 503 with `Retry-After` before reading the event ([`super::backpressure`]).

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use serde_json::value::RawValue;

use super::error::{body_error, parse_json, ApiError};
use super::Shared;
use crate::delivery::worker::Reservation;
use crate::model::{new_id, now_ms, Event, EventToIngest, IngestResult, NewEvent};

/// Longest event id and type accepted.
const MAX_ID_LEN: usize = 200;

/// `POST /v1/events`.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "ingest",
    operation_id = "ingest_event",
    summary = "Ingest one event",
    description = "Answered 202 once the event and one delivery per matching enabled webhook are \
        committed together. A repeated event id enqueues nothing and is answered like the first \
        time, with `duplicate: true`. While more deliveries are due than \
        `delivery.ingest_backlog_limit`, answered 503 `backlogged` with a `Retry-After` header \
        (seconds) and nothing accepted.",
    request_body = NewEvent,
    responses(
        (status = 202, description = "Committed", body = IngestResult),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 408, response = super::openapi::RequestTimeout),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("ingest_token" = [])),
)]
pub async fn one(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<IngestResult>), ApiError> {
    let body = body.map_err(body_error)?;
    let event: NewEvent = parse_json(&body)?;
    let prepared = prepare(&state, event, "")?;
    let mut results = commit(&state, vec![prepared]).await?;
    let result = results
        .pop()
        .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "no result"))?;
    Ok((StatusCode::ACCEPTED, Json(result)))
}

/// `POST /v1/events/batch`: a JSON array of events, committed together.
#[utoipa::path(
    post,
    path = "/v1/events/batch",
    tag = "ingest",
    operation_id = "ingest_batch",
    summary = "Ingest events, committed together",
    description = "All or nothing: one invalid event refuses the whole batch (422 naming it as \
        `[i].field`). At most `server.max_batch_events` events. While more deliveries are due \
        than `delivery.ingest_backlog_limit`, answered 503 `backlogged` with a `Retry-After` \
        header (seconds) and nothing accepted.",
    request_body = Vec<NewEvent>,
    responses(
        (status = 202, description = "Committed", body = BatchAccepted),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 408, response = super::openapi::RequestTimeout),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("ingest_token" = [])),
)]
pub async fn batch(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<BatchAccepted>), ApiError> {
    let body = body.map_err(body_error)?;
    // Each item is split off as text and parsed on its own (its `data` kept as sent).
    let items: Vec<Box<RawValue>> = parse_json(&body)?;
    if items.is_empty() {
        return Err(ApiError::invalid_field("", "the batch is empty"));
    }
    let max = state.config.server.max_batch_events;
    if items.len() > max {
        return Err(ApiError::invalid_field(
            "",
            format!(
                "the batch holds {} events; at most {max} are allowed",
                items.len()
            ),
        ));
    }
    let mut prepared = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let event: NewEvent = parse_json(item.get().as_bytes()).map_err(|mut e| {
            let inner = e.field.take().filter(|f| !f.is_empty());
            e.field = Some(format!(
                "[{i}]{}",
                inner.map(|f| format!(".{f}")).unwrap_or_default()
            ));
            e
        })?;
        prepared.push(prepare(&state, event, &format!("[{i}]."))?);
    }
    let results = commit(&state, prepared).await?;
    let accepted = results.iter().filter(|r| !r.duplicate).count();
    Ok((
        StatusCode::ACCEPTED,
        Json(BatchAccepted {
            accepted,
            events: results,
        }),
    ))
}

/// The answer to `POST /v1/events/batch`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct BatchAccepted {
    /// How many events were new (not duplicates).
    pub accepted: usize,
    /// One result per event, in the order sent.
    pub events: Vec<IngestResult>,
}

/// Validates an event and pairs it with a new delivery for each matching webhook. Also used
/// by the message-bus sources ([`crate::source`]).
pub(crate) fn prepare(
    state: &Shared,
    event: NewEvent,
    at: &str,
) -> Result<EventToIngest, ApiError> {
    let event_type = event.event_type.trim();
    if event_type.is_empty() || event_type.len() > MAX_ID_LEN {
        return Err(ApiError::invalid_field(
            format!("{at}type"),
            format!("type must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    if event_type.starts_with(crate::sink::RESERVED_EVENT_PREFIX) {
        return Err(ApiError::invalid_field(
            format!("{at}type"),
            "event types starting with \"hookyard.\" are reserved",
        ));
    }
    if let Some(id) = &event.id {
        if id.is_empty() || id.len() > MAX_ID_LEN {
            return Err(ApiError::invalid_field(
                format!("{at}id"),
                format!("id must be 1 to {MAX_ID_LEN} characters"),
            ));
        }
    }
    let received_at = now_ms();
    let occurred_at = event
        .occurred_at
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .unwrap_or(received_at);
    let deliveries = state
        .webhooks
        .matching(event_type)
        .iter()
        .map(|hook| (hook.id.clone(), new_id("msg")))
        .collect();
    Ok(EventToIngest {
        event: Event {
            id: event.id.unwrap_or_else(|| new_id("evt")),
            event_type: event_type.to_owned(),
            data: event.data,
            context: event.context.unwrap_or_else(crate::model::Json::null),
            occurred_at,
            received_at,
        },
        deliveries,
        lease: None,
    })
}

/// An event whose deliveries this process reserved slots for, kept to start them once
/// committed.
struct Reserved {
    reservation: Reservation,
    event: Event,
    deliveries: Vec<(String, String)>,
}

/// Commits `events` and starts their deliveries: at once in this process where it has the
/// slots (committed leased to it, see
/// [`Deliverer::reserve`](crate::delivery::worker::Deliverer::reserve)), else by waking the
/// workers to claim them. Also used by the message-bus sources ([`crate::source`]).
pub(crate) async fn commit(
    state: &Shared,
    mut events: Vec<EventToIngest>,
) -> Result<Vec<IngestResult>, ApiError> {
    let mut reserved: Vec<Option<Reserved>> = Vec::with_capacity(events.len());
    for e in &mut events {
        let reservation = state
            .deliverer
            .as_ref()
            .and_then(|d| d.reserve(&e.deliveries));
        reserved.push(reservation.map(|reservation| {
            e.lease = Some(reservation.lease().clone());
            Reserved {
                reservation,
                event: e.event.clone(),
                deliveries: e.deliveries.clone(),
            }
        }));
    }
    // Events of types the catalog does not list (none while it is empty), counted once
    // committed.
    let uncataloged: Vec<(usize, String, crate::model::Millis)> = state
        .catalog
        .uncataloged_of(&events)
        .into_iter()
        .map(|i| {
            (
                i,
                events[i].event.event_type.clone(),
                events[i].event.received_at,
            )
        })
        .collect();
    // A task of its own, so that a caller who hangs up cannot stop it between the commit and
    // the start: deliveries committed leased to this process would otherwise wait for their
    // lease to run out. On an error the reservations are dropped, which frees their slots.
    let state = state.clone();
    let task = tokio::spawn(async move {
        let results = state.store.ingest(events).await?;
        let fresh = results.iter().filter(|r| !r.duplicate).count();
        state.metrics.events_accepted.inc_by(fresh as u64);
        for (i, event_type, at) in uncataloged {
            if results.get(i).is_some_and(|r| !r.duplicate) {
                state.catalog.count_uncataloged(&event_type, at);
            }
        }
        let mut waiting = false;
        for (result, reserved) in results.iter().zip(reserved) {
            if result.duplicate || result.deliveries == 0 {
                // A duplicate committed nothing: its reservation is dropped, its slots freed.
                continue;
            }
            match (reserved, &state.deliverer) {
                (Some(r), Some(deliverer)) => {
                    deliverer.start_reserved(r.reservation, r.event, r.deliveries)
                }
                _ => waiting = true,
            }
        }
        if waiting {
            state.wake.notify_one();
        }
        Ok::<_, crate::store::Error>(results)
    });
    match task.await {
        Ok(results) => Ok(results?),
        Err(e) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("ingest failed: {e}"),
        )),
    }
}
