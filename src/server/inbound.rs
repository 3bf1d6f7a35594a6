//! `POST /v1/inbound/{webhook}`: a third party pushes changes to hookyard.
//!
//! The caller is verified by the webhook's inbound auth (secrets compared in constant time; a
//! Standard Webhooks signature within its tolerance, each `webhook-id` accepted once), as far
//! as the headers allow before the body is read. An unknown name, a disabled inbound and wrong
//! credentials get the one same 401. The body (JSON, or form-encoded) goes through the plugin's
//! inbound phase, or without a plugin becomes one record per object identified by
//! `inbound.identify_by`. Every record becomes a sink
//! message (`update`, or `upsert` under JIT provisioning), all committed together before the 202.

use axum::body::Bytes;
use axum::extract::{FromRequest as _, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::error::{body_error, ApiError};
use super::Shared;
use crate::model::{now_ms, InboundAuth, InboundConfig, SinkMessage};
use crate::plugin::bindings::types;
use crate::plugin::InboundRecord;

/// Whether header `name` carries the caller's credentials (kept from the plugin).
fn is_credential(auth: &InboundAuth, name: &header::HeaderName) -> bool {
    *name == header::AUTHORIZATION
        || matches!(auth, InboundAuth::ApiKey { header, .. } if name.as_str().eq_ignore_ascii_case(header))
}

fn equal(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// The one answer to a push that names no enabled inbound webhook or fails its auth: the same
/// status, code and message whichever it was, so names cannot be told from wrong credentials.
fn denied() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "unknown inbound webhook or missing or wrong credentials",
    )
}

/// Checks what the headers alone can tell, before any of the body is read: the credentials of
/// the header-based auth types; for a Standard Webhooks signature, that its headers are there
/// and its timestamp is within the tolerance. `Err` names the reason, for the debug log only.
fn check_headers(auth: &InboundAuth, headers: &HeaderMap) -> Result<(), &'static str> {
    match auth {
        InboundAuth::ApiKey { header, value } => {
            if !equal(header_str(headers, header), value) {
                return Err("missing or wrong API key");
            }
        }
        // Validation keeps the token non-empty, so `bearer_ok` never waves a caller through.
        InboundAuth::Bearer { token } => {
            if !super::bearer_ok(headers, token) {
                return Err("missing or wrong bearer token");
            }
        }
        InboundAuth::Basic { username, password } => {
            let decoded = header_str(headers, header::AUTHORIZATION.as_str())
                .strip_prefix("Basic ")
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .and_then(|b| String::from_utf8(b).ok())
                .unwrap_or_default();
            let (user, pass) = decoded.split_once(':').unwrap_or(("", ""));
            // Both compared, always, so the time taken does not tell which one was wrong.
            let ok = equal(user, username) & equal(pass, password);
            if !ok {
                return Err("missing or wrong basic credentials");
            }
        }
        InboundAuth::StandardWebhooks { tolerance_secs, .. } => {
            if ["webhook-id", "webhook-timestamp", "webhook-signature"]
                .iter()
                .any(|h| header_str(headers, h).is_empty())
            {
                return Err(
                    "a webhook-id, webhook-timestamp or webhook-signature header is missing",
                );
            }
            let timestamp = header_str(headers, "webhook-timestamp")
                .trim()
                .parse::<i64>();
            let now = now_ms() / 1000;
            match timestamp {
                Ok(t) if now.abs_diff(t) <= (*tolerance_secs).max(0).unsigned_abs() => {}
                _ => return Err("webhook-timestamp is invalid or outside the tolerance"),
            }
        }
    }
    Ok(())
}

/// For a Standard Webhooks signature, checks it over the body and returns the message id and
/// until when (unix ms) it must be remembered so that a captured request cannot be replayed
/// while its timestamp would still pass the tolerance. The other types were checked whole by
/// [`check_headers`].
fn verify_signature(
    auth: &InboundAuth,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<(String, i64)>, String> {
    let InboundAuth::StandardWebhooks {
        secret,
        tolerance_secs,
    } = auth
    else {
        return Ok(None);
    };
    let msg_id = header_str(headers, "webhook-id");
    let timestamp = header_str(headers, "webhook-timestamp");
    let signature = header_str(headers, "webhook-signature");
    let now = now_ms() / 1000;
    crate::delivery::signing::verify(
        secret,
        msg_id,
        timestamp,
        signature,
        body,
        now,
        *tolerance_secs,
    )
    .map_err(|e| format!("signature: {e}"))?;
    let forget_at = timestamp.trim().parse::<i64>().unwrap_or(now) + tolerance_secs + 1;
    Ok(Some((msg_id.to_owned(), forget_at * 1000)))
}

/// The whole caller check as the handler makes it, headers first, then the signature over the
/// body (the fuzz targets check the two together).
#[cfg(test)]
pub(crate) fn verify(
    auth: &InboundAuth,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Option<(String, i64)>, String> {
    check_headers(auth, headers).map_err(str::to_owned)?;
    verify_signature(auth, headers, body)
}

/// The body as JSON bytes: JSON as is, a form turned into an object of strings.
pub(crate) fn json_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let content_type = header_str(headers, header::CONTENT_TYPE.as_str());
    if content_type.starts_with("application/x-www-form-urlencoded") {
        let object: Map<String, Value> = form_urlencoded::parse(body)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        return Ok(serde_json::to_vec(&object).unwrap_or_default());
    }
    // JSON is UTF-8 (RFC 8259), and skipping a string does not check it: check it first.
    let text = std::str::from_utf8(body).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            "the body is not UTF-8",
        )
    })?;
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| ApiError::invalid_json(&e))?;
    Ok(body.to_vec())
}

/// Without a plugin: each object of the body is a record, identified by `identify_by`.
pub(crate) fn plain_records(
    inbound: &InboundConfig,
    body: &[u8],
) -> Result<Vec<InboundRecord>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))?;
    let objects = match value {
        Value::Array(items) => items,
        other => vec![other],
    };
    objects
        .into_iter()
        .enumerate()
        .map(|(i, object)| {
            if !object.is_object() {
                return Err(ApiError::invalid_field(
                    format!("[{i}]"),
                    "a record must be a JSON object",
                ));
            }
            let mut identifiers = Map::new();
            for field in &inbound.identify_by {
                match crate::sink::lookup(&object, field) {
                    Some(v) if !v.is_null() => {
                        identifiers.insert(field.clone(), v.clone());
                    }
                    _ => {
                        return Err(ApiError::invalid_field(
                            field.clone(),
                            format!("missing identifier field {field}"),
                        ))
                    }
                }
            }
            Ok(InboundRecord {
                entity: None,
                identifiers: Value::Object(identifiers),
                fields: object,
            })
        })
        .collect()
}

/// `POST /v1/inbound/{webhook}`. The webhook and the caller are checked on the headers first:
/// a push that fails is answered before its body is read (so unauthenticated callers cannot
/// make the gateway buffer bodies); then the body is read, up to `server.max_body_bytes`.
#[utoipa::path(
    post,
    path = "/v1/inbound/{webhook}",
    tag = "inbound",
    operation_id = "inbound_push",
    summary = "A third party's push, verified by the webhook's inbound auth; its records go to the sink",
    description = "The caller authenticates as the webhook's `inbound.auth` says (an API key \
        header, a bearer token, basic credentials or a Standard Webhooks signature); an unknown \
        webhook, a disabled inbound and wrong credentials all get the same 401. Without a plugin \
        each object of the body (an object or an array of objects) is one record identified by \
        `inbound.identify_by`; with one, the plugin's inbound phase makes the records (and may \
        refuse the push with its own 4xx/5xx status). Every record becomes one sink message \
        (`update`, or `upsert` under JIT provisioning), committed together before the 202.",
    params(("webhook" = String, Path, description = "The webhook's name")),
    request_body(
        description = "JSON, or a form (`application/x-www-form-urlencoded`) taken as an object of strings",
        content(
            (serde_json::Value = "application/json"),
            (std::collections::BTreeMap<String, String> = "application/x-www-form-urlencoded"),
        ),
    ),
    responses(
        (status = 202, description = "Stored for the sink", body = InboundAccepted),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 408, response = super::openapi::RequestTimeout),
        (status = 409, response = super::openapi::Conflict),
        (status = 413, response = super::openapi::PayloadTooLarge),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 429, response = super::openapi::TooManyRequests),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(()),
)]
pub async fn receive(
    State(state): State<Shared>,
    Path(name): Path<String>,
    method: Method,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    request: Request,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Some(hook) = state.webhooks.named(&name) else {
        tracing::debug!(webhook = %name, "inbound push refused: no such webhook");
        super::inbound_log::note_reason("no such webhook");
        return Err(denied());
    };
    let inbound = match &hook.spec.inbound {
        Some(inbound) if inbound.enabled && hook.spec.enabled => inbound,
        _ => {
            tracing::debug!(webhook = %name, "inbound push refused: inbound is disabled");
            super::inbound_log::note_reason("inbound is disabled for this webhook");
            return Err(denied());
        }
    };
    if let Err(reason) = check_headers(&inbound.auth, &headers) {
        tracing::debug!(webhook = %name, reason, "inbound push refused");
        super::inbound_log::note_reason(reason);
        return Err(denied());
    }
    let body = Bytes::from_request(request, &state)
        .await
        .map_err(body_error)?;
    let signed = verify_signature(&inbound.auth, &headers, &body).map_err(|reason| {
        tracing::debug!(webhook = %name, reason, "inbound push refused");
        super::inbound_log::note_reason(&reason);
        denied()
    })?;
    if let Some((msg_id, until)) = signed {
        // In the store, so a replay is refused by every process sharing the database.
        let first = state
            .store
            .remember_message(&hook.id, &msg_id, until, now_ms())
            .await?;
        if !first {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "replayed",
                "this webhook-id was already accepted",
            ));
        }
    }
    let body = json_body(&headers, &body)?;

    let records = match (&hook.spec.plugin, &state.plugins) {
        (Some(_), Some(plugins)) => {
            let request = types::InboundRequest {
                method: method.to_string(),
                path: format!("/v1/inbound/{name}"),
                query: query.unwrap_or_default(),
                headers: headers
                    .iter()
                    .filter(|(k, _)| !is_credential(&inbound.auth, k))
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8_lossy(v.as_bytes()).into_owned(),
                        )
                    })
                    .collect(),
                body,
                content_type: Some("application/json".to_owned()),
            };
            plugins
                .inbound(&hook, request)
                .await
                .map_err(|(status, message)| {
                    let status = StatusCode::from_u16(status)
                        .ok()
                        .filter(|s| s.is_client_error() || s.is_server_error())
                        .unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
                    ApiError::new(status, "rejected", message)
                })?
        }
        (Some(_), None) => {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugins_disabled",
                "plugins are not available in this gateway",
            ))
        }
        (None, _) => plain_records(inbound, &body)?,
    };

    let sink = state
        .webhooks
        .named(crate::sink::SINK_WEBHOOK)
        .filter(|s| s.spec.enabled)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "no_sink",
                "no [sink] is configured; nothing was stored",
            )
        })?;
    let operation = if inbound.jit_provisioning {
        "upsert"
    } else {
        "update"
    };
    let mut events = Vec::with_capacity(records.len());
    for (i, record) in records.into_iter().enumerate() {
        let has_identifier = record
            .identifiers
            .as_object()
            .is_some_and(|o| !o.is_empty());
        if !has_identifier {
            return Err(ApiError::invalid_field(
                format!("[{i}]"),
                "the record has no identifier fields",
            ));
        }
        let message = SinkMessage {
            webhook: hook.spec.name.clone(),
            webhook_id: hook.id.clone(),
            source: "inbound".into(),
            entity: record.entity.unwrap_or_else(|| inbound.entity.clone()),
            operation: operation.into(),
            identifiers: record.identifiers,
            fields: record.fields,
            event_id: None,
        };
        events.push(crate::sink::message(&sink.id, &message));
    }
    let count = events.len();
    if count > 0 {
        state.store.ingest(events).await?;
        state.wake.notify_one();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "accepted": count, "operation": operation })),
    ))
}

/// The answer to an accepted inbound push.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct InboundAccepted {
    /// How many records were stored for the sink.
    pub accepted: usize,
    /// What the sink is asked to do with them.
    #[schema(pattern = "^(update|upsert)$")]
    pub operation: String,
}
