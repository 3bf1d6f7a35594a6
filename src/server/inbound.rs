//! `POST /v1/inbound/{webhook}`: a third party pushes changes to hookyard.
//!
//! The caller is verified by the webhook's inbound auth (secrets compared in constant time; a
//! Standard Webhooks signature within its tolerance, each `webhook-id` accepted once), as far
//! as the headers allow before the body is read. An unknown name, a disabled inbound and wrong
//! credentials get the one same 401. The body (JSON, or form-encoded) goes through the plugin's
//! inbound phase, or without a plugin becomes one record per object identified by
//! `inbound.identify_by` (an identifier that is `null` or an empty string is missing: 422). Every
//! record becomes a sink message (`update`, or `upsert` under JIT provisioning), all committed
//! together before any answer.
//!
//! `inbound.mode` says when the caller is answered. `async` (the default): 202 as soon as the
//! records are committed, *before the sink is asked*, so the caller never hears that the
//! internal system refused a record (an unknown record without JIT provisioning becomes a dead
//! sink delivery in the Webhook Log). `sync`: the answer waits for the sink's (woken by this
//! process's workers, re-reading the store meanwhile for attempts made by another process) and
//! passes its verdict on, see [`InboundMode::Sync`]; after `inbound.sync_timeout_ms` it is 504,
//! and the sink delivery stays queued and is still delivered.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{FromRequest as _, Path, RawQuery, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::Json;
use base64::Engine as _;
use serde_json::{json, Map, Value};
use subtle::ConstantTimeEq;

use super::error::{body_error, ApiError};
use super::Shared;
use crate::delivery::worker::AttemptWatch;
use crate::model::{
    now_ms, Attempt, Delivery, DeliveryStatus, InboundAuth, InboundConfig, InboundMode, SinkMessage,
};
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

/// Whether an identifier's value identifies nothing: `null`, or an empty or blank string (JIT
/// provisioning would create a record with an empty id).
fn blank(value: &Value) -> bool {
    value.is_null() || value.as_str().is_some_and(|s| s.trim().is_empty())
}

/// Without a plugin: each object of the body is a record, identified by `identify_by`.
pub(crate) fn plain_records(
    inbound: &InboundConfig,
    body: &[u8],
) -> Result<Vec<InboundRecord>, ApiError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ApiError::invalid_json(&e))?;
    let (objects, is_array) = match value {
        Value::Array(items) => (items, true),
        other => (vec![other], false),
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
                    Some(v) if !blank(v) => {
                        identifiers.insert(field.clone(), v.clone());
                    }
                    _ => {
                        let item = if is_array {
                            format!(" (item {i} of the body)")
                        } else {
                            String::new()
                        };
                        return Err(ApiError::invalid_field(
                            field.clone(),
                            format!("missing identifier field {field}{item}"),
                        ));
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
        let Some(identifiers) = record.identifiers.as_object().filter(|o| !o.is_empty()) else {
            return Err(ApiError::invalid_field(
                format!("[{i}]"),
                "the record has no identifier fields",
            ));
        };
        // Whatever the plugin made of the push: an identifier must identify something.
        if let Some((field, _)) = identifiers.iter().find(|(_, v)| blank(v)) {
            return Err(ApiError::invalid_field(
                field.clone(),
                format!("record {i}: identifier field {field} is null or empty"),
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
    if count == 0 {
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "accepted": 0, "operation": operation })),
        ));
    }
    let ids: Vec<String> = events
        .iter()
        .flat_map(|e| e.deliveries.iter().map(|(_, id)| id.clone()))
        .collect();
    let sync = inbound.mode == InboundMode::Sync;
    // Watched before the commit, so an answer of the sink that comes at once is not missed.
    let watch = match (&state.deliverer, sync) {
        (Some(deliverer), true) => Some(deliverer.watch(&ids)),
        _ => None,
    };
    // Committed (and started here at once when this process has the slots) before any answer.
    super::ingest::commit(&state, events).await?;
    if !sync {
        // The caller is told 202 before the sink is asked; what the sink says is in the
        // Webhook Log (see `inbound.mode = "sync"` to wait for it).
        return Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "accepted": count, "operation": operation })),
        ));
    }
    let timeout = Duration::from_millis(inbound.sync_timeout_ms);
    Ok(sync_answer(&state, &ids, watch, timeout, operation).await)
}

/// How often a `sync` push re-reads its sink deliveries besides being woken by this process's
/// workers (an attempt made by another process sharing the store wakes nobody here).
const SYNC_POLL: Duration = Duration::from_millis(200);

/// The sink's final word on one record: the delivery and its last attempt.
type Settled = (Delivery, Option<Attempt>);

/// Waits until every sink delivery of a `sync` push has succeeded or failed for good, at most
/// `timeout`, and answers with the sink's verdict: see [`InboundMode::Sync`].
async fn sync_answer(
    state: &Shared,
    ids: &[String],
    watch: Option<AttemptWatch>,
    timeout: Duration,
    operation: &str,
) -> (StatusCode, Json<Value>) {
    let deadline = Instant::now() + timeout;
    let mut settled: Vec<Option<Settled>> = vec![None; ids.len()];
    loop {
        for (id, slot) in ids.iter().zip(settled.iter_mut()) {
            if slot.is_some() {
                continue;
            }
            match state.store.delivery(id).await {
                Ok(Some((d, mut attempts))) if d.status != DeliveryStatus::Pending => {
                    *slot = Some((d, attempts.pop()));
                }
                Ok(_) => {}
                Err(e) => {
                    // The records are committed; only the wait for the verdict failed.
                    tracing::warn!(delivery = %id, error = %e, "reading a sink delivery for a sync inbound push failed");
                }
            }
        }
        if settled.iter().all(Option::is_some) {
            let settled: Vec<Settled> = settled.into_iter().flatten().collect();
            return verdict(&settled, operation);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let pending: Vec<&String> = ids
                .iter()
                .zip(&settled)
                .filter(|(_, s)| s.is_none())
                .map(|(id, _)| id)
                .collect();
            return (
                StatusCode::GATEWAY_TIMEOUT,
                Json(json!({
                    "error": {
                        "code": "sink_timeout",
                        "message": format!(
                            "the internal system did not answer within {} ms; the record is stored \
                             and its delivery stays queued (it will still be delivered)",
                            timeout.as_millis()
                        ),
                    },
                    "pending_deliveries": pending,
                })),
            );
        }
        let nap = left.min(SYNC_POLL);
        match &watch {
            Some(watch) => {
                let _ = tokio::time::timeout(nap, watch.attempted()).await;
            }
            None => tokio::time::sleep(nap).await,
        }
    }
}

/// What the caller of a `sync` push is told, from the sink's final answers (one per record).
fn verdict(settled: &[Settled], operation: &str) -> (StatusCode, Json<Value>) {
    let answers: Vec<(StatusCode, Value)> = settled.iter().map(record_answer).collect();
    if let [(status, body)] = answers.as_slice() {
        return (*status, Json(body.clone()));
    }
    let results: Vec<Value> = answers
        .iter()
        .map(|(status, body)| json!({"status": status.as_u16(), "body": body}))
        .collect();
    match answers.iter().position(|(s, _)| !s.is_success()) {
        None => (
            StatusCode::OK,
            Json(json!({"accepted": answers.len(), "operation": operation, "results": results})),
        ),
        Some(i) => {
            let status = answers[i].0;
            let message = format!(
                "item {i} of the push: the internal system did not accept it ({})",
                status.as_u16()
            );
            (
                status,
                Json(json!({
                    "error": {"code": "sink_refused", "message": message},
                    "results": results,
                })),
            )
        }
    }
}

/// One record's answer: the sink's 2xx as 200 (201 when it said 201) with its JSON body; its
/// refusal of the record (a 4xx other than an auth failure) with the same status and body; any
/// other failure (the sink unreachable, refusing the gateway's credentials, failing after its
/// retries) is 502: the caller's record was not the problem.
fn record_answer((delivery, attempt): &Settled) -> (StatusCode, Value) {
    let sink_status = attempt.as_ref().and_then(|a| a.response_status);
    // The body as the Webhook Log kept it (cut to `delivery.log_body_bytes`): passed on only
    // when it is whole JSON.
    let sink_body = attempt
        .as_ref()
        .and_then(|a| a.response_body.as_deref())
        .filter(|b| !b.trim().is_empty());
    let sink_json = sink_body.and_then(|b| serde_json::from_str::<Value>(b).ok());
    match (delivery.status, sink_status) {
        (DeliveryStatus::Succeeded, Some(status)) => {
            let status = if status == 201 {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            let body = sink_json.unwrap_or_else(|| json!({"accepted": 1}));
            (status, body)
        }
        (DeliveryStatus::Dead, Some(status))
            if (400..500).contains(&status) && ![401, 403, 407].contains(&status) =>
        {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
            let body = sink_json.unwrap_or_else(|| {
                json!({"error": {
                    "code": "sink_refused",
                    "message": format!("the internal system answered {}", status.as_u16()),
                    "sink_body": sink_body,
                }})
            });
            (status, body)
        }
        _ => {
            let why = attempt
                .as_ref()
                .and_then(|a| a.error.clone())
                .or_else(|| delivery.last_error.clone())
                .unwrap_or_else(|| format!("the sink delivery ended {}", delivery.status.as_str()));
            (
                StatusCode::BAD_GATEWAY,
                json!({"error": {
                    "code": "sink_failed",
                    "message": format!("the internal system could not take the record: {why}"),
                    "delivery": delivery.id,
                }}),
            )
        }
    }
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
