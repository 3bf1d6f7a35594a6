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

async fn list(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let records = state.store.plugins().await?;
    Ok(Json(json!({ "items": records })))
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Activate {
    version: u32,
}

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
