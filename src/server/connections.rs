//! `/admin/v1/connections`: shared connections (see [`crate::connections`]).
//!
//! Secrets are write-only, as a webhook's: reads mask them (and the token URL's credentials),
//! a PUT or PATCH that sends a mask back keeps the stored secret unless the auth type or the
//! token URL changes (then 422 naming the field). Every change reloads this process's webhook
//! directory, so the webhooks on the connection send the new credentials from their next
//! attempt; other processes follow their change notice. Connections declared in the config are
//! read-only here (409), and one in use cannot be deleted (409 naming the webhooks).
//! `POST .../{name}/test` fetches a token through the connection's shared cache slot and says
//! how that went, never showing the token.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::error::{body_error, from_value, parse_json, ApiError};
use super::Shared;
use crate::auth::{uses_oauth, AuthError};
use crate::connections::{self, Connection, ConnectionSpec, Deletion};
use crate::model::{now_ms, AuthConfig, Millis};

/// The connection routes (without the token layer, added by the caller).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route("/admin/v1/connections", get(list).post(create))
        .route(
            "/admin/v1/connections/{name}",
            get(one).put(put).patch(patch).delete(delete),
        )
        .route("/admin/v1/connections/{name}/test", post(test))
}

/// A connection as the API shows it: secrets masked.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectionView {
    /// Unique name; webhooks use the connection with `"connection": "<name>"`.
    pub name: String,
    /// Free text for admins.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The credentials (any webhook auth type), secrets masked.
    #[schema(value_type = Object)]
    pub auth: AuthConfig,
    /// Names of the webhooks (and `hookyard-sink`) that use it.
    pub webhooks: Vec<String>,
    /// Declared in the config file: read-only through the API.
    pub declared_in_config: bool,
    /// Creation time, ms since the epoch.
    pub created_at: Millis,
    /// Last change, ms since the epoch.
    pub updated_at: Millis,
}

/// The list of connections.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectionList {
    /// Every connection, by name.
    pub items: Vec<ConnectionView>,
}

/// A connection as an admin writes it (`POST`; `PUT` takes the same, `name` optional).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectionBody {
    /// Unique name: 1 to 100 of `[A-Za-z0-9._-]`, starting with a letter or digit.
    pub name: String,
    /// Free text for admins.
    #[serde(default)]
    pub description: String,
    /// The credentials: `{"type": "none" | "api_key" | "bearer" | "basic" | "oauth2_password"
    /// | "oauth2_client_credentials", ...}` as a webhook's `auth`.
    #[schema(value_type = Object)]
    pub auth: AuthConfig,
}

/// What `POST /admin/v1/connections/{name}/test` found. Never contains a token or secret.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ConnectionTest {
    /// The connection.
    pub connection: String,
    /// Its auth type.
    pub auth_type: String,
    /// Whether the credentials work as far as the gateway can tell.
    pub ok: bool,
    /// What was checked.
    pub checked: String,
    /// OAuth2: the token's type (`bearer`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// OAuth2: the token's `expires_in`, in seconds (none when the server did not say; the
    /// token is then used for 300 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_secs: Option<u64>,
    /// OAuth2: when the token expires (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// OAuth2: how long the token request took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why it failed: the token server's OAuth2 error (secrets it echoed scrubbed), or why it
    /// could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The kind of failure: `rejected` (the token server refused the grant), `bad_response`,
    /// `unreachable`, `token_url` (malformed or refused by the SSRF policy), `invalid`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<String>,
    /// The token server's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
}

/// Names of the webhooks that use each connection.
async fn users(state: &Shared) -> Result<Vec<(String, String)>, ApiError> {
    Ok(state
        .store
        .webhooks()
        .await?
        .into_iter()
        .filter_map(|h| h.spec.connection.map(|c| (c, h.spec.name)))
        .collect())
}

fn view(state: &Shared, connection: &Connection, users: &[(String, String)]) -> ConnectionView {
    let shown = connection.redacted();
    ConnectionView {
        webhooks: users
            .iter()
            .filter(|(c, _)| *c == shown.spec.name)
            .map(|(_, hook)| hook.clone())
            .collect(),
        declared_in_config: connections::is_declared(&state.config, &shown.spec.name),
        name: shown.spec.name,
        description: shown.spec.description,
        auth: shown.spec.auth,
        created_at: shown.created_at,
        updated_at: shown.updated_at,
    }
}

async fn shown(state: &Shared, connection: &Connection) -> Result<ConnectionView, ApiError> {
    Ok(view(state, connection, &users(state).await?))
}

async fn find(state: &Shared, name: &str) -> Result<Connection, ApiError> {
    state
        .store
        .connection(name)
        .await?
        .ok_or_else(|| ApiError::not_found("connection"))
}

/// A connection an admin may change: not one the config declares (the next start would undo
/// the change).
async fn find_editable(state: &Shared, name: &str) -> Result<Connection, ApiError> {
    let connection = find(state, name).await?;
    if connections::is_declared(&state.config, name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "managed_by_config",
            format!(
                "connection {name:?} is declared in the config file ([[connections]]): change it there"
            ),
        ));
    }
    Ok(connection)
}

/// Makes this process's webhooks follow a connection change at once.
async fn reload(state: &Shared) -> Result<(), ApiError> {
    state.webhooks.reload(state.store.as_ref()).await?;
    Ok(())
}

/// `GET /admin/v1/connections`.
#[utoipa::path(operation_id = "list_connections", get, path = "/admin/v1/connections", security(("admin_token" = [])), tag = "connections",
    responses((status = 401, response = super::openapi::Unauthorized), (status = 200, description = "Every connection, secrets masked", body = ConnectionList)))]
pub async fn list(State(state): State<Shared>) -> Result<Json<ConnectionList>, ApiError> {
    let users = users(&state).await?;
    let items = state
        .store
        .connections()
        .await?
        .iter()
        .map(|c| view(&state, c, &users))
        .collect();
    Ok(Json(ConnectionList { items }))
}

/// `GET /admin/v1/connections/{name}`.
#[utoipa::path(operation_id = "get_connection", get, path = "/admin/v1/connections/{name}", security(("admin_token" = [])), tag = "connections",
    params(("name" = String, Path, description = "The connection's name")),
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 200, description = "The connection, secrets masked", body = ConnectionView),
        (status = 404, response = super::openapi::NotFound),
    ))]
pub async fn one(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<ConnectionView>, ApiError> {
    let connection = find(&state, &name).await?;
    Ok(Json(shown(&state, &connection).await?))
}

fn spec_of(body: ConnectionBody) -> ConnectionSpec {
    ConnectionSpec {
        name: body.name,
        description: body.description,
        auth: body.auth,
    }
}

/// `POST /admin/v1/connections`.
#[utoipa::path(operation_id = "create_connection", post, path = "/admin/v1/connections", security(("admin_token" = [])), tag = "connections",
    request_body = ConnectionBody,
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 201, description = "Created; secrets masked in the answer", body = ConnectionView),
        (status = 400, response = super::openapi::BadRequest),
        (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable),
    ))]
pub async fn create(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ConnectionView>), ApiError> {
    let body = body.map_err(body_error)?;
    let mut spec = spec_of(parse_json::<ConnectionBody>(&body)?);
    connections::check_no_masks(&mut spec)?;
    connections::validate(&spec)?;
    let now = now_ms();
    let connection = Connection {
        spec,
        created_at: now,
        updated_at: now,
    };
    state.store.insert_connection(&connection).await?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(shown(&state, &connection).await?)))
}

/// Saves `spec` over `old`: masked secrets carried over or refused, validated, stored, and the
/// shared token dropped so the next delivery fetches with the new credentials.
async fn save(
    state: &Shared,
    old: Connection,
    mut spec: ConnectionSpec,
) -> Result<Json<ConnectionView>, ApiError> {
    if spec.name != old.spec.name {
        return Err(ApiError::invalid_field(
            "name",
            "cannot be changed (it is how webhooks name the connection)",
        ));
    }
    connections::carry_secrets(&mut spec, &old.spec)?;
    connections::check_no_masks(&mut spec)?;
    connections::validate(&spec)?;
    if spec == old.spec {
        return Ok(Json(shown(state, &old).await?));
    }
    let connection = Connection {
        spec,
        updated_at: now_ms(),
        ..old
    };
    if !state.store.update_connection(&connection).await? {
        return Err(ApiError::not_found("connection"));
    }
    reload(state).await?;
    // The credentials' fingerprint already keeps the old token from being handed out; dropping
    // it also frees it at once.
    if let Some(deliverer) = &state.deliverer {
        deliverer
            .tokens()
            .forget(&connections::cache_key(&connection.spec.name));
    }
    Ok(Json(shown(state, &connection).await?))
}

/// The read-only fields of a view, ignored when a read is written back.
const READ_ONLY: [&str; 4] = ["webhooks", "declared_in_config", "created_at", "updated_at"];

/// `PUT /admin/v1/connections/{name}`: replaces the definition (what a GET shows can be PUT
/// back; masked secrets keep their stored values).
#[utoipa::path(operation_id = "put_connection", put, path = "/admin/v1/connections/{name}", security(("admin_token" = [])), tag = "connections",
    params(("name" = String, Path, description = "The connection's name")),
    request_body = ConnectionBody,
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 200, description = "Replaced; secrets masked", body = ConnectionView),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable),
    ))]
pub async fn put(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ConnectionView>, ApiError> {
    let body = body.map_err(body_error)?;
    let old = find_editable(&state, &name).await?;
    let mut value: Value = parse_json(&body)?;
    if let Some(fields) = value.as_object_mut() {
        for field in READ_ONLY {
            fields.remove(field);
        }
        fields
            .entry("name")
            .or_insert_with(|| Value::String(name.clone()));
    }
    let spec = spec_of(from_value(value)?);
    save(&state, old, spec).await
}

/// `PATCH /admin/v1/connections/{name}`: a JSON merge patch over what a GET shows.
#[utoipa::path(operation_id = "patch_connection", patch, path = "/admin/v1/connections/{name}", security(("admin_token" = [])), tag = "connections",
    params(("name" = String, Path, description = "The connection's name")),
    request_body(content = Object, description = "JSON merge patch (RFC 7396)"),
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 200, description = "Patched; secrets masked", body = ConnectionView),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 422, response = super::openapi::Unprocessable),
    ))]
pub async fn patch(
    State(state): State<Shared>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<ConnectionView>, ApiError> {
    let patch = super::admin::merge_patch_body(body)?;
    let old = find_editable(&state, &name).await?;
    let mut merged = serde_json::to_value(old.spec.redacted()).unwrap_or(Value::Null);
    super::admin::merge_patch(&mut merged, patch);
    let spec: ConnectionSpec = from_value(merged)?;
    save(&state, old, spec).await
}

/// `DELETE /admin/v1/connections/{name}`.
#[utoipa::path(operation_id = "delete_connection", delete, path = "/admin/v1/connections/{name}", security(("admin_token" = [])), tag = "connections",
    params(("name" = String, Path, description = "The connection's name")),
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 204, description = "Deleted"),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
    ))]
pub async fn delete(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    find_editable(&state, &name).await?;
    match state.store.delete_connection(&name).await? {
        Deletion::Deleted => {}
        Deletion::NotFound => return Err(ApiError::not_found("connection")),
        Deletion::InUse(webhooks) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "connection_in_use",
                format!(
                    "connection {name:?} is used by webhooks {}: give them their own auth or \
                     another connection first",
                    webhooks
                        .iter()
                        .map(|w| format!("{w:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ))
        }
    }
    reload(&state).await?;
    if let Some(deliverer) = &state.deliverer {
        deliverer.tokens().forget(&connections::cache_key(&name));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /admin/v1/connections/{name}/test`: OAuth2 types fetch a token now (through the
/// connection's cache slot, so the webhooks then use it) and report its type and expiry, or
/// the token server's error; other types check that the credentials make a valid header (the
/// receiver alone can judge them). 200 either way; `ok` says how it went.
#[utoipa::path(operation_id = "test_connection", post, path = "/admin/v1/connections/{name}/test", security(("admin_token" = [])), tag = "connections",
    params(("name" = String, Path, description = "The connection's name")),
    responses(
        (status = 401, response = super::openapi::Unauthorized), (status = 200, description = "The test ran; `ok` tells its outcome. Never shows a token", body = ConnectionTest),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    ))]
pub async fn test(
    State(state): State<Shared>,
    Path(name): Path<String>,
) -> Result<Json<ConnectionTest>, ApiError> {
    let connection = find(&state, &name).await?;
    let auth = &connection.spec.auth;
    let mut report = ConnectionTest {
        connection: name.clone(),
        auth_type: auth.kind().to_owned(),
        ok: true,
        checked: String::new(),
        token_type: None,
        expires_in_secs: None,
        expires_at: None,
        duration_ms: None,
        error: None,
        error_kind: None,
        status: None,
    };
    if !uses_oauth(auth) {
        report.checked = match auth {
            AuthConfig::None => "nothing: the connection sends no credentials".to_owned(),
            _ => "the credentials make a valid header; only a receiver can tell whether it \
                  accepts them"
                .to_owned(),
        };
        if let Err(e) = crate::webhooks::validate_auth(auth) {
            report.ok = false;
            report.error = Some(e.to_string());
            report.error_kind = Some("invalid".to_owned());
        }
        return Ok(Json(report));
    }
    let Some(deliverer) = &state.deliverer else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "this process runs no delivery workers, so no token cache",
        ));
    };
    report.checked = "fetched a token from the token URL".to_owned();
    let started = Instant::now();
    let result = deliverer
        .tokens()
        .probe(&connections::cache_key(&name), auth)
        .await;
    report.duration_ms = Some(started.elapsed().as_millis() as u64);
    match result {
        Ok(info) => {
            report.token_type = Some(info.token_type);
            report.expires_in_secs = info.expires_in.map(|d| d.as_secs());
            let expires = time::OffsetDateTime::now_utc() + info.lifetime;
            report.expires_at = expires
                .format(&time::format_description::well_known::Rfc3339)
                .ok();
        }
        Err(e) => {
            report.ok = false;
            let (kind, status) = match &e {
                AuthError::Rejected { status, .. } => ("rejected", Some(*status)),
                AuthError::BadResponse { status, .. } => ("bad_response", Some(*status)),
                AuthError::Unreachable { .. } => ("unreachable", None),
                AuthError::TokenUrl { .. } => ("token_url", None),
                _ => ("invalid", None),
            };
            report.error = Some(e.to_string());
            report.error_kind = Some(kind.to_owned());
            report.status = status;
        }
    }
    Ok(Json(report))
}
