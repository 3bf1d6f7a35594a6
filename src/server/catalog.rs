//! `/admin/v1/event-types`: the event catalog (see [`crate::catalog`]).
//!
//! The list also shows the types seen in events but not cataloged, with how many were accepted
//! (across every process on the database) and when the last one was. Changes are written to
//! the store and applied to this process's snapshot at once; other processes follow within a
//! second.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use serde_json::Value;

use super::error::{body_error, from_value, parse_json, ApiError};
use super::Shared;
use crate::catalog::{EventType, EventTypeSpec};
use crate::model::{now_ms, Millis};

/// The catalog routes (without the token layer, added by the caller).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/admin/v1/event-types", get(list).post(create))
        .route(
            "/admin/v1/event-types/{name}",
            get(one).put(replace).delete(delete),
        )
}

/// `GET /admin/v1/event-types`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct EventTypeList {
    /// The catalog, by name.
    pub items: Vec<EventType>,
    /// Types of accepted events that the catalog does not list (counted while it lists any),
    /// by name.
    pub uncataloged: Vec<UncatalogedType>,
}

/// Events accepted with a type the catalog does not list.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UncatalogedType {
    /// The event type.
    pub name: String,
    /// How many such events were accepted.
    pub count: u64,
    /// When the last one was accepted (ms since the epoch).
    #[schema(value_type = i64)]
    pub last_seen: Millis,
}

async fn reload(state: &Shared) -> Result<(), ApiError> {
    state.catalog.reload(state.store.as_ref()).await?;
    Ok(())
}

fn find(state: &Shared, name: &str) -> Result<EventType, ApiError> {
    state
        .catalog
        .get(name)
        .ok_or_else(|| ApiError::not_found("event type"))
}

/// The catalog and the uncataloged types seen.
#[utoipa::path(operation_id = "list_event_types", 
    get,
    path = "/admin/v1/event-types", security(("admin_token" = [])),
    tag = "event-types",
    responses(
        (status = 200, description = "The catalog and the types seen but not cataloged", body = EventTypeList),
        (status = 401, response = super::openapi::Unauthorized),
    )
)]
pub async fn list(State(state): State<Shared>) -> Result<Json<EventTypeList>, ApiError> {
    // The store's view, not a snapshot up to a second old: an admin who just created a type
    // elsewhere sees it.
    reload(&state).await?;
    let uncataloged = state
        .catalog
        .seen_uncataloged(state.store.as_ref())
        .await?
        .into_iter()
        .map(|s| UncatalogedType {
            name: s.event_type,
            count: s.count,
            last_seen: s.last_seen,
        })
        .collect();
    Ok(Json(EventTypeList {
        items: state.catalog.all(),
        uncataloged,
    }))
}

/// Adds an event type to the catalog.
#[utoipa::path(operation_id = "create_event_type", 
    post,
    path = "/admin/v1/event-types", security(("admin_token" = [])),
    tag = "event-types",
    request_body = EventTypeSpec,
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 201, description = "Created", body = EventType),
        (status = 400, response = super::openapi::BadRequest),
        (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable),
    )
)]
pub async fn create(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<EventType>), ApiError> {
    let body = body.map_err(body_error)?;
    let spec: EventTypeSpec = parse_json(&body)?;
    spec.validate()?;
    let now = now_ms();
    state
        .store
        .insert_event_type(&spec.to_stored(now, now))
        .await?;
    reload(&state).await?;
    Ok((
        StatusCode::CREATED,
        Json(EventType {
            spec,
            created_at: now,
            updated_at: now,
        }),
    ))
}

/// One event type.
#[utoipa::path(operation_id = "get_event_type", 
    get,
    path = "/admin/v1/event-types/{name}", security(("admin_token" = [])),
    tag = "event-types",
    params(("name" = String, Path, description = "The event type")),
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 200, description = "The event type", body = EventType),
        (status = 404, response = super::openapi::NotFound),
    )
)]
pub async fn one(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<EventType>, ApiError> {
    reload(&state).await?;
    Ok(Json(find(&state, &name)?))
}

/// Replaces an event type's definition. What a GET shows may be sent back: `created_at` and
/// `updated_at` are ignored, and `name` may be left out; it cannot change.
#[utoipa::path(operation_id = "replace_event_type", 
    put,
    path = "/admin/v1/event-types/{name}", security(("admin_token" = [])),
    tag = "event-types",
    params(("name" = String, Path, description = "The event type")),
    request_body = EventTypeSpec,
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 200, description = "Replaced", body = EventType),
        (status = 400, response = super::openapi::BadRequest),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
    )
)]
pub async fn replace(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<EventType>, ApiError> {
    let body = body.map_err(body_error)?;
    let mut value: Value = parse_json(&body)?;
    match value.as_object_mut() {
        Some(fields) => {
            for read_only in ["created_at", "updated_at"] {
                fields.remove(read_only);
            }
            match fields.get("name") {
                None => {
                    fields.insert("name".to_owned(), Value::String(name.clone()));
                }
                Some(Value::String(given)) if *given == name => {}
                Some(_) => {
                    return Err(ApiError::invalid_field(
                        "name",
                        format!("must be {name:?}: an event type cannot be renamed (create the new name, then delete this one)"),
                    ))
                }
            }
        }
        None => return Err(ApiError::invalid_field("", "must be a JSON object")),
    }
    let spec: EventTypeSpec = from_value(value)?;
    spec.validate()?;
    reload(&state).await?;
    let old = find(&state, &name)?;
    let now = now_ms();
    if !state
        .store
        .update_event_type(&spec.to_stored(old.created_at, now))
        .await?
    {
        return Err(ApiError::not_found("event type"));
    }
    reload(&state).await?;
    Ok(Json(EventType {
        spec,
        created_at: old.created_at,
        updated_at: now,
    }))
}

/// Removes an event type from the catalog. Refused while a webhook subscribes to it and to
/// nothing else of the catalog through that entry (its next edit would be refused): change the
/// webhook first, or mark the type `deprecated`.
#[utoipa::path(operation_id = "delete_event_type", 
    delete,
    path = "/admin/v1/event-types/{name}", security(("admin_token" = [])),
    tag = "event-types",
    params(("name" = String, Path, description = "The event type")),
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 204, description = "Deleted"),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
    )
)]
pub async fn delete(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    reload(&state).await?;
    find(&state, &name)?;
    let hooks = state.store.webhooks().await?;
    if let Some((webhook, entry)) = state.catalog.left_without_types(&name, &hooks) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "in_use",
            format!(
                "webhook {webhook:?} subscribes to {name:?} through {entry:?}, which would match \
                 no cataloged type: change its events first, or mark the type deprecated"
            ),
        ));
    }
    if !state.store.delete_event_type(&name).await? {
        return Err(ApiError::not_found("event type"));
    }
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}
