//! `POST /admin/v1/webhooks/{id}/test`: one delivery of a test event to one webhook, answered
//! with the attempt.
//!
//! The event is the one given, or the catalog's example of the first type the webhook
//! subscribes to that has one. It is committed with one delivery, to this webhook only, and
//! sent at once by this process's workers through the same code as every delivery
//! ([`Deliverer::send_test`](crate::delivery::worker::Deliverer::send_test)): the webhook's
//! plugin, auth, signing and timeout, logged in the Webhook Log. A test is recognisable there
//! by its delivery id, which ends with `_test` (also the `webhook-id` the receiver sees). It is
//! one attempt: a failure leaves it `dead` (replayable), never retried by the workers, and a
//! write-back from its response is not made.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use super::error::{body_error, parse_json, ApiError};
use super::Shared;
use crate::model::{self, new_id, now_ms, Attempt, Delivery, Event};

/// The test-send route (without the token layer, added by the caller).
pub fn routes() -> Router<Shared> {
    Router::new().route("/admin/v1/webhooks/{id}/test", post(test_webhook))
}

/// The event to send; every field may be left out (an empty body too).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TestEvent {
    /// Event type; default: the type of the catalog example used, else the webhook's first
    /// subscribed type. Must be one the webhook subscribes to.
    #[serde(rename = "type", default)]
    pub event_type: Option<String>,
    /// The event's data; default: the catalog's example of the type.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub data: Option<model::Json>,
    /// The event's context; default `null`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub context: Option<model::Json>,
}

/// What the test did.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TestSendResult {
    /// The delivery as it ended (`succeeded`, `dead` or `skipped`), as the Webhook Log shows
    /// it; its id ends with `_test`.
    #[schema(value_type = Object)]
    pub delivery: Option<Delivery>,
    /// The event sent.
    #[schema(value_type = Object)]
    pub event: Event,
    /// The attempt: the request as sent (secrets redacted), the response's status, headers and
    /// body, the duration, the error.
    #[schema(value_type = Object)]
    pub attempt: Attempt,
}

/// Sends one test event to a webhook now and answers with the attempt.
#[utoipa::path(
    post,
    path = "/admin/v1/webhooks/{id}/test", security(("admin_token" = [])),
    tag = "webhooks",
    params(("id" = String, Path, description = "Webhook id or name")),
    request_body(content = TestEvent, description = "The event, or nothing: the catalog's example"),
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 200, description = "Sent (whatever the receiver answered): the attempt", body = TestSendResult),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 503, response = super::openapi::Unavailable),
    )
)]
pub async fn test_webhook(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<TestSendResult>, ApiError> {
    let body = body.map_err(body_error)?;
    let given: TestEvent = if body.iter().all(u8::is_ascii_whitespace) {
        TestEvent::default()
    } else {
        parse_json(&body)?
    };
    let hook = state
        .store
        .webhook(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))?;
    if crate::sink::is_sink(&hook) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "managed_by_config",
            "the sink's webhook takes the gateway's own messages; it cannot be sent a test",
        ));
    }
    let deliverer = state.deliverer.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "no_workers",
            "this gateway process runs no workers to send the test",
        )
    })?;
    let (event_type, data) = event_of(&state, &hook.spec, given.event_type, given.data)?;
    let now = now_ms();
    let event = Event {
        id: new_id("evt"),
        event_type,
        data,
        context: given.context.unwrap_or_else(model::Json::null),
        occurred_at: now,
        received_at: now,
    };
    let (delivery, attempt) = deliverer.send_test(&hook, event.clone()).await?;
    Ok(Json(TestSendResult {
        delivery,
        event,
        attempt,
    }))
}

/// The type and data to send: as given, the gaps filled from the catalog.
fn event_of(
    state: &Shared,
    spec: &model::WebhookSpec,
    event_type: Option<String>,
    data: Option<model::Json>,
) -> Result<(String, model::Json), ApiError> {
    let catalog = &state.catalog;
    let (event_type, data) = match (event_type, data) {
        (Some(t), Some(data)) => (t, data),
        (Some(t), None) => {
            let example = catalog
                .get(&t)
                .and_then(|c| c.spec.example)
                .ok_or_else(|| {
                    ApiError::invalid_field(
                        "data",
                        format!("the catalog has no example of {t:?}: give the event's data"),
                    )
                })?;
            (t, model::Json::from(example))
        }
        (None, Some(data)) => {
            let t = catalog.first_type_of(spec).ok_or_else(|| {
                ApiError::invalid_field(
                    "type",
                    "the webhook subscribes only to globs the catalog matches nothing with: give the event's type",
                )
            })?;
            (t, data)
        }
        (None, None) => {
            let (t, example) = catalog.example_for(spec).ok_or_else(|| {
                ApiError::invalid_field(
                    "",
                    "the catalog has no example for any type this webhook subscribes to: give the event (type and data) in the body",
                )
            })?;
            (t, model::Json::from(example))
        }
    };
    if event_type.is_empty() || event_type.len() > crate::catalog::MAX_NAME_LEN {
        return Err(ApiError::invalid_field(
            "type",
            format!(
                "type must be 1 to {} characters",
                crate::catalog::MAX_NAME_LEN
            ),
        ));
    }
    if !spec.matches(&event_type) {
        return Err(ApiError::invalid_field(
            "type",
            format!("the webhook does not subscribe to {event_type:?}"),
        ));
    }
    if event_type.starts_with(crate::sink::RESERVED_EVENT_PREFIX) {
        return Err(ApiError::invalid_field(
            "type",
            "event types starting with \"hookyard.\" are reserved",
        ));
    }
    Ok((event_type, data))
}
