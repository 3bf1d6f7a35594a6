//! Admin routes of the plugin registry: upload, list, activate (rollback or pin).

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::{body_error, parse_json, ApiError};
use super::Shared;
use crate::plugin::{PluginError, PluginHost};
use crate::store::{PluginRecord, PluginVersion};

/// The plugin routes. Uploads have their own body limit, `plugins.max_upload_bytes`.
pub fn routes(max_upload_bytes: usize) -> Router<Shared> {
    Router::new()
        .route("/admin/v1/plugins", get(list))
        .route(
            "/admin/v1/plugins/{name}",
            get(one)
                .put(upload)
                .layer(DefaultBodyLimit::max(max_upload_bytes)),
        )
        .route("/admin/v1/plugins/{name}/activate", post(activate))
}

impl From<PluginError> for ApiError {
    fn from(e: PluginError) -> Self {
        match e {
            PluginError::Invalid(m) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_plugin", m)
            }
            PluginError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            PluginError::Store(e) => ApiError::store(e),
        }
    }
}

fn host(state: &Shared) -> Result<&Arc<PluginHost>, ApiError> {
    state.plugins.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugins_disabled",
            "plugins are not available in this gateway",
        )
    })
}

#[utoipa::path(
    get,
    path = "/admin/v1/plugins",
    tag = "plugins",
    operation_id = "list_plugins",
    summary = "List plugins with their versions",
    responses(
        (status = 200, description = "Every plugin", body = super::openapi::PluginList),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn list(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let records = state.store.plugins().await?;
    Ok(Json(json!({ "items": records })))
}

#[utoipa::path(
    get,
    path = "/admin/v1/plugins/{name}",
    tag = "plugins",
    operation_id = "get_plugin",
    summary = "A plugin with its versions",
    params(("name" = String, Path, description = "The plugin's name")),
    responses(
        (status = 200, description = "The plugin", body = PluginRecord),
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
    let record = state
        .store
        .plugins()
        .await?
        .into_iter()
        .find(|r| r.name == name)
        .ok_or_else(|| ApiError::not_found("plugin"))?;
    Ok(Json(serde_json::to_value(record).unwrap_or(Value::Null)))
}

#[utoipa::path(
    put,
    path = "/admin/v1/plugins/{name}",
    tag = "plugins",
    operation_id = "upload_plugin",
    summary = "Upload a new version of a plugin (a WebAssembly component) and make it active",
    description = "The component is compiled and checked against the plugin contract first; a refused upload (422) leaves nothing behind. Uploading the same bytes again only makes that version active.",
    params(("name" = String, Path, description = "The plugin's name")),
    request_body(
        description = "The component's bytes (any content type), at most `plugins.max_upload_bytes`",
        content(("application/wasm"), ("application/octet-stream")),
    ),
    responses(
        (status = 201, description = "Stored and active", body = PluginVersion),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 408, response = super::openapi::RequestTimeout),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn upload(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(|e| {
        let mut error = body_error(e);
        if error.status == StatusCode::PAYLOAD_TOO_LARGE {
            error.message = "the component exceeds plugins.max_upload_bytes".into();
        }
        error
    })?;
    let version = host(&state)?.upload(&name, body).await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::to_value(version).unwrap_or(Value::Null)),
    ))
}

/// The body of `POST /admin/v1/plugins/{name}/activate`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct Activate {
    /// The version to make active.
    version: u32,
}

#[utoipa::path(
    post,
    path = "/admin/v1/plugins/{name}/activate",
    tag = "plugins",
    operation_id = "activate_plugin",
    summary = "Make a version active (rollback or pin)",
    params(("name" = String, Path, description = "The plugin's name")),
    request_body = Activate,
    responses(
        (status = 200, description = "Active", body = super::openapi::Activated),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 408, response = super::openapi::RequestTimeout),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn activate(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(body_error)?;
    let Activate { version } = parse_json(&body)?;
    host(&state)?.activate(&name, version).await?;
    Ok(Json(json!({ "name": name, "active": version })))
}
