//! `POST /admin/v1/plugins/{name}/versions/{version}/try`: runs one stored version of a plugin
//! on an event and a config and answers what `hookyard plugin check` prints: the request(s) the
//! plugin shaped (or its skip), its log lines and guest output, the call time and the peak
//! memory.
//!
//! The call is [`PluginHost::try_version`](crate::plugin::PluginHost::try_version): a fresh
//! instance under the configured limits, nothing stored or sent. A plugin that fails (refuses
//! the config, returns an error, traps, runs past its time or memory limit, or, tried for a
//! webhook, returns a request the gateway would refuse to send) answers 422 with the usual
//! `error` object (`code` says which) and, beside it, everything the call produced, so the
//! caller sees the logs and the traceback of a failed call too.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use super::error::{body_error, parse_json, ApiError, ErrorDetail};
use super::Shared;
use crate::delivery::plugin_output;
use crate::delivery::shape::OutgoingRequest;
use crate::model::{Event, NewEvent, Webhook};
use crate::plugin::bindings::types;
use crate::plugin::try_call::TryRun;
use crate::plugin::{sample, wit_webhook, CallError};

/// The try route (without the token layer, added by the caller).
pub fn routes() -> Router<Shared> {
    Router::new().route(
        "/admin/v1/plugins/{name}/versions/{version}/try",
        post(try_version),
    )
}

/// What to run the version on; every field may be left out (an empty body too).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TryInput {
    /// The event, as posted to `/v1/events`; default: the sample `user.created` event of
    /// `hookyard plugin check`.
    #[serde(default)]
    pub event: Option<NewEvent>,
    /// The plugin's config; default: the config of `webhook` when it uses this plugin, else
    /// `null`.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub config: Option<serde_json::Value>,
    /// A webhook id or name: the plugin is told it is called for this webhook, and the
    /// requests it returns are checked as the gateway checks them before sending. Default: the
    /// sample webhook of `hookyard plugin check`, and no such check.
    #[serde(default)]
    pub webhook: Option<String>,
}

/// The webhook the plugin was told it is called for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TryWebhook {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
    /// Its method.
    pub method: String,
}

/// One request the plugin shaped.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TryRequest {
    /// The method; `null`: the webhook's.
    pub method: Option<String>,
    /// Appended to the webhook URL's path; `null`: none.
    pub path: Option<String>,
    /// Query string (without `?`); `null`: none.
    pub query: Option<String>,
    /// The content type; `null`: `application/json`.
    pub content_type: Option<String>,
    /// Extra headers, as `[name, value]` pairs in the plugin's order.
    #[schema(value_type = Vec<Vec<String>>)]
    pub headers: Vec<(String, String)>,
    /// The body as text, when it is UTF-8 (byte for byte what would be sent).
    pub body: Option<String>,
    /// The body in base64, when it is not UTF-8.
    pub body_base64: Option<String>,
    /// The body's size in bytes.
    pub body_bytes: usize,
    /// Why the gateway would refuse to send this request (only checked when tried for a
    /// webhook).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// A line the plugin logged.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TryLog {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: String,
    /// The message.
    pub message: String,
}

/// What a try did. A failed try (422) carries `error` besides.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TryResult {
    /// Set when the plugin failed: `code` is `invalid_config` (refused by `validate-config`,
    /// `field` is `config`), `plugin_invalid_input`, `plugin_invalid_config`, `plugin_error`
    /// (errors the plugin returned), `plugin_trap`, `plugin_timeout`, `plugin_memory`,
    /// `plugin_output_too_large` or `plugin_output_refused`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorDetail>,
    /// The plugin.
    pub plugin: String,
    /// The version run.
    pub version: u32,
    /// Its content hash.
    pub sha256: String,
    /// The webhook the plugin was told it is called for.
    pub webhook: TryWebhook,
    /// The event it was given.
    #[schema(value_type = Object)]
    pub event: Event,
    /// The config it was given.
    #[schema(value_type = serde_json::Value)]
    pub config: serde_json::Value,
    /// `send`, `skip`, or `null` when the plugin failed before answering.
    pub outcome: Option<String>,
    /// The requests it shaped (`send`).
    pub requests: Vec<TryRequest>,
    /// Why it skipped the event (`skip`).
    pub skip_reason: Option<String>,
    /// What it logged.
    pub logs: Vec<TryLog>,
    /// What it wrote to stdout and stderr (capped).
    pub guest_output: String,
    /// Wall time of the outgoing call, instantiation included, in milliseconds.
    pub time_ms: f64,
    /// Peak linear memory of the outgoing call, in bytes.
    pub memory_bytes: usize,
}

#[utoipa::path(
    post,
    path = "/admin/v1/plugins/{name}/versions/{version}/try",
    tag = "plugins",
    operation_id = "try_plugin_version",
    summary = "Run a version on an event and a config (what `hookyard plugin check` prints)",
    description = "Runs `validate-config`, then the outgoing phase, on a fresh instance under the configured limits; nothing is stored or sent. A plugin that fails answers 422: `error.code` says how (`invalid_config`, `plugin_invalid_input`, `plugin_invalid_config`, `plugin_error`, `plugin_trap`, `plugin_timeout`, `plugin_memory`, `plugin_output_too_large`, `plugin_output_refused`), and the fields of a `TryResult` come beside `error` (logs, guest output, time, memory). A body of the wrong shape is a 422 `invalid_field` naming the field.",
    params(
        ("name" = String, Path, description = "The plugin's name"),
        ("version" = u32, Path, description = "The version to run"),
    ),
    request_body(content = TryInput, description = "The event, config and webhook; all optional"),
    responses(
        (status = 200, description = "The plugin answered (send or skip)", body = TryResult),
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
async fn try_version(
    State(state): State<Shared>,
    Path((name, version)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    // A version that is not a number names no version: 404, as an unknown one does.
    let version: u32 = version
        .parse()
        .map_err(|_| ApiError::not_found("plugin version"))?;
    let body = body.map_err(body_error)?;
    let input: TryInput = if body.iter().all(u8::is_ascii_whitespace) {
        TryInput::default()
    } else {
        parse_json(&body)?
    };
    let host = state.plugins.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "plugins_disabled",
            "plugins are not available in this gateway",
        )
    })?;
    let event = match input.event {
        Some(new) => super::ingest::prepare(&state, new, "event.")?.event,
        None => sample::event(),
    };
    let hook: Option<Webhook> = match &input.webhook {
        Some(id) => Some(
            state
                .store
                .webhook(id)
                .await?
                .ok_or_else(|| ApiError::not_found("webhook"))?,
        ),
        None => None,
    };
    let config = input.config.unwrap_or_else(|| {
        hook.as_ref()
            .and_then(|h| h.spec.plugin.as_ref())
            .filter(|p| p.name == name)
            .map(|p| p.config.clone())
            .unwrap_or(serde_json::Value::Null)
    });
    let told = hook
        .as_ref()
        .map(wit_webhook)
        .unwrap_or_else(sample::webhook);
    let webhook = TryWebhook {
        id: told.id.clone(),
        name: told.name.clone(),
        url: told.url.clone(),
        method: told.method.clone(),
    };
    let run = host
        .try_version(&name, version, &config, told, &event)
        .await?;
    let TryRun {
        sha256,
        validate,
        output,
        usage,
    } = run;
    let mut result = TryResult {
        error: None,
        plugin: name,
        version,
        sha256,
        webhook,
        event,
        config,
        outcome: None,
        requests: Vec::new(),
        skip_reason: None,
        logs: usage
            .logs
            .iter()
            .map(|l| TryLog {
                level: l.level.to_owned(),
                message: l.message.clone(),
            })
            .collect(),
        guest_output: usage.guest_output.clone(),
        time_ms: usage.duration.as_secs_f64() * 1000.0,
        memory_bytes: usage.peak_memory,
    };
    let failure = match (validate, output) {
        (Err(message), _) => Some(("invalid_config", message)),
        (Ok(()), None) => None,
        (Ok(()), Some(Err(CallError::Busy))) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugin_busy",
                "every plugin call slot is busy; try again",
            ))
        }
        (Ok(()), Some(Err(e))) => Some((call_error_code(&e), e.to_string())),
        (Ok(()), Some(Ok(Err(e)))) => Some(plugin_error(&e)),
        (Ok(()), Some(Ok(Ok(types::OutgoingAction::Skip(reason))))) => {
            result.outcome = Some("skip".into());
            result.skip_reason = Some(reason);
            None
        }
        (Ok(()), Some(Ok(Ok(types::OutgoingAction::Send(requests))))) => {
            result.outcome = Some("send".into());
            result.requests = requests
                .into_iter()
                .map(|r| shown(hook.as_ref(), r))
                .collect();
            let count = result.requests.len();
            result.requests.iter().enumerate().find_map(|(i, r)| {
                let which = if count > 1 {
                    format!("request {i}: ")
                } else {
                    String::new()
                };
                r.refused.as_ref().map(|e| {
                    (
                        "plugin_output_refused",
                        format!("{which}{e} (the gateway would not send it)"),
                    )
                })
            })
        }
    };
    match failure {
        None => Ok(Json(result).into_response()),
        Some((code, message)) => {
            result.error = Some(ErrorDetail {
                code,
                message,
                field: (code == "invalid_config").then(|| "config".to_owned()),
            });
            Ok((StatusCode::UNPROCESSABLE_ENTITY, Json(result)).into_response())
        }
    }
}

/// A request as the answer shows it, checked against `hook` when there is one.
fn shown(hook: Option<&Webhook>, r: types::OutgoingRequest) -> TryRequest {
    let refused = hook.and_then(|hook| {
        let request = OutgoingRequest {
            method: r.method.clone(),
            path: r.path.clone(),
            query: r.query.clone(),
            headers: r.headers.clone(),
            body: Bytes::copy_from_slice(&r.body),
            content_type: r.content_type.clone(),
        };
        plugin_output::check(hook, request)
            .err()
            .map(|e| e.to_string())
    });
    let body_bytes = r.body.len();
    let (body, body_base64) = match String::from_utf8(r.body) {
        Ok(text) => (Some(text), None),
        Err(e) => (
            None,
            Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
        ),
    };
    TryRequest {
        method: r.method,
        path: r.path,
        query: r.query,
        content_type: r.content_type,
        headers: r.headers,
        body,
        body_base64,
        body_bytes,
        refused,
    }
}

fn call_error_code(e: &CallError) -> &'static str {
    match e {
        CallError::Trap(_) => "plugin_trap",
        CallError::Timeout(_) => "plugin_timeout",
        CallError::Memory(_) => "plugin_memory",
        CallError::OutputTooLarge(..) => "plugin_output_too_large",
        CallError::Busy => "plugin_busy",
    }
}

/// The code and text of an error the plugin returned (the WIT's `plugin-error` variants, named
/// as `hookyard plugin check` names them).
fn plugin_error(e: &types::PluginError) -> (&'static str, String) {
    match e {
        types::PluginError::InvalidConfig(m) => {
            ("plugin_invalid_config", format!("invalid-config: {m}"))
        }
        types::PluginError::InvalidInput(m) => {
            ("plugin_invalid_input", format!("invalid-input: {m}"))
        }
        types::PluginError::Internal(m) => ("plugin_error", format!("internal: {m}")),
    }
}
