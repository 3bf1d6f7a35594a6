//! `/admin/v1/sources`: message-bus sources (see [`crate::source`]).
//!
//! Changes are written to the store; every gateway process on the same database follows them
//! within [`RECONCILE_EVERY`](crate::source::RECONCILE_EVERY), this one at once. A source's
//! status is this process's view of its consumer. The URL's password is write-only: reads
//! show it masked, and a PUT or PATCH that sends the masked URL back keeps the stored one.
//!
//! `PUT /admin/v1/sources/{name}` replaces a source's spec (the body of a create) and `PATCH`
//! applies a JSON merge patch (RFC 7396) to the spec as a read shows it, like webhooks and
//! connections. A changed spec restarts the source's consumers in every process (within
//! [`RECONCILE_EVERY`](crate::source::RECONCILE_EVERY)); the pause state is kept. Sources
//! declared in the config file are written there at every start-up, so they are edited there
//! (409 here). A source cannot be renamed.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::{body_error, from_value, parse_json, ApiError};
use super::Shared;
use crate::model::now_ms;
use crate::source::spec::mask_url;
use crate::source::{InvalidSource, SourceSpec};
use crate::store::StoredSource;

/// The source routes (without the token layer, added by the caller).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/admin/v1/sources", get(list).post(create))
        .route(
            "/admin/v1/sources/{name}",
            get(one).put(put).patch(patch).delete(delete),
        )
        .route("/admin/v1/sources/{name}/pause", post(pause))
        .route("/admin/v1/sources/{name}/resume", post(resume))
}

impl From<InvalidSource> for ApiError {
    fn from(e: InvalidSource) -> Self {
        ApiError::invalid_field(e.field, e.message)
    }
}

/// A stored source as shown: its spec (password masked), pause state and this process's status.
fn shown(state: &Shared, source: &StoredSource) -> Value {
    let spec = match serde_json::from_str::<SourceSpec>(&source.spec) {
        Ok(spec) => serde_json::to_value(spec.redacted()).unwrap_or(Value::Null),
        Err(e) => {
            json!({"name": source.name, "error": format!("the stored spec cannot be read: {e}")})
        }
    };
    json!({
        "name": source.name,
        "spec": spec,
        "paused": source.paused,
        "created_at": source.created_at,
        "updated_at": source.updated_at,
        "status": state.sources.get(&source.name),
    })
}

/// A spec as the store keeps it (JSON text).
fn encode(spec: &SourceSpec) -> Result<String, ApiError> {
    serde_json::to_string(spec).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding the source: {e}"),
        )
    })
}

async fn find(state: &Shared, name: &str) -> Result<StoredSource, ApiError> {
    state
        .store
        .sources()
        .await?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApiError::not_found("source"))
}

#[utoipa::path(
    get,
    path = "/admin/v1/sources",
    tag = "sources",
    operation_id = "list_sources",
    summary = "List message-bus sources with this process's status (passwords masked)",
    responses(
        (status = 200, description = "Every source", body = super::openapi::SourceList),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn list(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let sources = state.store.sources().await?;
    let items: Vec<Value> = sources.iter().map(|s| shown(&state, s)).collect();
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(
    get,
    path = "/admin/v1/sources/{name}",
    tag = "sources",
    operation_id = "get_source",
    summary = "A source with this process's status",
    params(("name" = String, Path, description = "The source's name")),
    responses(
        (status = 200, description = "The source", body = super::openapi::SourceView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn one(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(shown(&state, &find(&state, &name).await?)))
}

#[utoipa::path(
    post,
    path = "/admin/v1/sources",
    tag = "sources",
    operation_id = "create_source",
    summary = "Create a source; every gateway process on the database starts consuming it",
    description = "NATS sources need `stream` and `subject`, AMQP ones `queue`; fields of the other broker are refused (422).",
    request_body = SourceSpec,
    responses(
        (status = 201, description = "Created", body = super::openapi::SourceView),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 408, response = super::openapi::RequestTimeout),
        (status = 409, response = super::openapi::Conflict),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn create(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(body_error)?;
    let spec: SourceSpec = parse_json(&body)?;
    spec.validate()?;
    let text = encode(&spec)?;
    let now = now_ms();
    let source = StoredSource {
        name: spec.name.clone(),
        spec: text,
        paused: false,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_source(&source).await?;
    state.sources.ring();
    Ok((StatusCode::CREATED, Json(shown(&state, &source))))
}

/// The source `name`, unless the config file declares it (it would be overwritten there at the
/// next start-up: 409).
async fn find_editable(state: &Shared, name: &str) -> Result<StoredSource, ApiError> {
    let source = find(state, name).await?;
    if state.config.sources.iter().any(|s| s.name == name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "declared_in_config",
            format!("source {name:?} is declared in the config file: change it there"),
        ));
    }
    Ok(source)
}

/// Checks and stores a new spec for `old` (same name, pause state kept). A URL sent back as a
/// read shows it (password masked) keeps the stored URL.
async fn replace(
    state: &Shared,
    old: StoredSource,
    mut spec: SourceSpec,
) -> Result<Json<Value>, ApiError> {
    if spec.name != old.name {
        return Err(ApiError::invalid_field(
            "name",
            "a source cannot be renamed: create one with the new name and delete this one",
        ));
    }
    if let Ok(stored) = serde_json::from_str::<SourceSpec>(&old.spec) {
        if spec.url == mask_url(&stored.url) {
            spec.url = stored.url;
        }
    }
    spec.validate()?;
    let text = encode(&spec)?;
    let source = StoredSource {
        spec: text,
        updated_at: now_ms(),
        ..old
    };
    if !state.store.update_source(&source).await? {
        return Err(ApiError::not_found("source"));
    }
    state.sources.ring();
    Ok(Json(shown(state, &source)))
}

#[utoipa::path(
    put,
    path = "/admin/v1/sources/{name}",
    tag = "sources",
    operation_id = "put_source",
    summary = "Replace a source's spec; its consumers restart with it (every process)",
    description = "The body of a create; `name` may be left out (it is the path's, and cannot change). The URL as a read shows it (password masked) keeps the stored one; any other URL must carry its real password. The pause state is kept. A source declared in the config file is changed there (409).",
    params(("name" = String, Path, description = "The source's name")),
    request_body = SourceSpec,
    responses(
        (status = 200, description = "Replaced", body = super::openapi::SourceView),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 408, response = super::openapi::RequestTimeout),
        (status = 409, response = super::openapi::Conflict),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn put(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(body_error)?;
    let mut value: Value = parse_json(&body)?;
    if let Some(fields) = value.as_object_mut() {
        fields
            .entry("name")
            .or_insert_with(|| Value::String(name.clone()));
    }
    let spec: SourceSpec = from_value(value)?;
    let old = find_editable(&state, &name).await?;
    replace(&state, old, spec).await
}

#[utoipa::path(
    patch,
    path = "/admin/v1/sources/{name}",
    tag = "sources",
    operation_id = "patch_source",
    summary = "JSON merge patch (RFC 7396) of a source's spec",
    description = "Applied to the spec as a read shows it (`spec` of the view, password masked), then saved by the rules of a PUT: `{\"batch_size\": 1000}` changes one field, `{\"prefetch\": null}` returns one to its default.",
    params(("name" = String, Path, description = "The source's name")),
    request_body = inline(Object),
    responses(
        (status = 200, description = "Updated", body = super::openapi::SourceView),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 408, response = super::openapi::RequestTimeout),
        (status = 409, response = super::openapi::Conflict),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn patch(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let patch = super::admin::merge_patch_body(body)?;
    let old = find_editable(&state, &name).await?;
    let stored: SourceSpec = serde_json::from_str(&old.spec).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the stored spec cannot be read: {e}"),
        )
    })?;
    let mut merged = serde_json::to_value(stored.redacted()).unwrap_or(Value::Null);
    super::admin::merge_patch(&mut merged, patch);
    let spec: SourceSpec = from_value(merged)?;
    replace(&state, old, spec).await
}

async fn set_paused(state: &Shared, name: &str, paused: bool) -> Result<Json<Value>, ApiError> {
    let old = find(state, name).await?;
    let source = StoredSource {
        paused,
        updated_at: now_ms(),
        ..old
    };
    if !state.store.update_source(&source).await? {
        return Err(ApiError::not_found("source"));
    }
    state.sources.ring();
    Ok(Json(shown(state, &source)))
}

#[utoipa::path(
    post,
    path = "/admin/v1/sources/{name}/pause",
    tag = "sources",
    operation_id = "pause_source",
    summary = "Stop consuming (every process); unacknowledged messages go back to the broker",
    params(("name" = String, Path, description = "The source's name")),
    responses(
        (status = 200, description = "Paused", body = super::openapi::SourceView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn pause(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &name, true).await
}

#[utoipa::path(
    post,
    path = "/admin/v1/sources/{name}/resume",
    tag = "sources",
    operation_id = "resume_source",
    summary = "Consume again",
    params(("name" = String, Path, description = "The source's name")),
    responses(
        (status = 200, description = "Resumed", body = super::openapi::SourceView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn resume(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&state, &name, false).await
}

#[utoipa::path(
    delete,
    path = "/admin/v1/sources/{name}",
    tag = "sources",
    operation_id = "delete_source",
    summary = "Delete a source; its consumers stop (messages stay in the broker)",
    params(("name" = String, Path, description = "The source's name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn delete(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !state.store.delete_source(&name).await? {
        return Err(ApiError::not_found("source"));
    }
    state.sources.ring();
    Ok(StatusCode::NO_CONTENT)
}
