//! The admin API: webhooks, the Webhook Log, replay.
//!
//! Secrets are write-only: every read shows them masked (credentials in URLs too), and an
//! update that sends the mask back (or leaves the signing secret out) keeps the stored secret,
//! unless the update changes where the secret would be sent (`url`, `auth.token_url`, the auth
//! type): then the secret must be sent again (422 naming the field, see
//! [`webhooks::carry_secrets`]). A merge patch applies to what a read shows, so it follows the
//! same rules as a PUT of the masked definition.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::error::{body_error, from_value, parse_json, ApiError};
use super::Shared;
use crate::config::WebhooksFromConfig;
use crate::model::{new_id, now_ms, Delivery, DeliverySource, Page, Webhook, WebhookSpec};
use crate::webhooks::{self, InvalidSpec};

/// The admin routes (without the token layer, added by the caller).
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/admin/v1/webhooks",
            get(list_webhooks).post(create_webhook),
        )
        .route(
            "/admin/v1/webhooks/{id}",
            get(get_webhook)
                .put(put_webhook)
                .patch(patch_webhook)
                .delete(delete_webhook),
        )
        .route("/admin/v1/webhooks/{id}/replay", post(replay_webhook))
        .route("/admin/v1/webhooks/{id}/secret", get(signing_secret))
        .route("/admin/v1/deliveries", get(list_deliveries))
        .route("/admin/v1/deliveries/{id}", get(get_delivery))
        .route("/admin/v1/deliveries/{id}/replay", post(replay_delivery))
}

impl From<InvalidSpec> for ApiError {
    fn from(e: InvalidSpec) -> Self {
        ApiError::invalid_field(e.field, e.message)
    }
}

/// The config file that owns webhook `name`, when the config declares it and owns what it
/// declares (`webhooks_from_config = "managed"`).
fn declared_in(state: &Shared, name: &str) -> Option<String> {
    let config = &state.config;
    let managed = config.webhooks_from_config == WebhooksFromConfig::Managed;
    (managed && config.webhooks.iter().any(|w| w.name == name)).then(|| {
        config
            .file
            .clone()
            .unwrap_or_else(|| "the config file".to_owned())
    })
}

fn shown(state: &Shared, hook: &Webhook) -> Value {
    let mut value = serde_json::to_value(hook.redacted()).unwrap_or(Value::Null);
    if let Some(file) = declared_in(state, &hook.spec.name) {
        // Read-only through the API: a client (the console) can say so before an edit fails.
        value["managed_by_config"] = Value::String(file);
    }
    if hook.spec.inbound.is_some() {
        value["inbound_url"] = Value::String(format!(
            "{}/v1/inbound/{}",
            state.config.public_url(),
            hook.spec.name
        ));
    }
    value
}

/// Validates a spec against the gateway's limits and refuses leftover masks.
async fn check(state: &Shared, spec: &mut WebhookSpec) -> Result<(), ApiError> {
    webhooks::check_no_masks(spec)?;
    webhooks::validate(spec, state.config.max_timeout_ms())?;
    webhooks::check_name_free(&spec.name)?;
    crate::connections::check_webhook(state.store.as_ref(), spec).await??;
    if spec.inbound.as_ref().is_some_and(|i| i.enabled) && state.config.sink.url.is_empty() {
        return Err(ApiError::invalid_field(
            "inbound",
            "inbound webhooks need a sink: set [sink] url in the config",
        ));
    }
    if let Some(plugin) = &spec.plugin {
        match &state.plugins {
            Some(host) => host
                .validate_ref(plugin)
                .await
                .map_err(|m| ApiError::invalid_field("plugin", m))?,
            None => {
                return Err(ApiError::invalid_field(
                    "plugin",
                    "plugins are not available in this gateway",
                ))
            }
        }
    }
    state.catalog.check_webhook(spec)?;
    Ok(())
}

async fn find(state: &Shared, id: &str) -> Result<Webhook, ApiError> {
    state
        .store
        .webhook(id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))
}

/// A webhook an admin may change: not the sink, which the config manages, nor one the config
/// file declares and owns (its next start would undo the change).
async fn find_editable(state: &Shared, id: &str) -> Result<Webhook, ApiError> {
    let hook = find(state, id).await?;
    if crate::sink::is_sink(&hook) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "managed_by_config",
            "the sink's webhook is managed by the [sink] config",
        ));
    }
    if let Some(file) = declared_in(state, &hook.spec.name) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "managed_by_config",
            format!(
                "webhook {:?} is declared in {file}, which owns it (webhooks_from_config = \"managed\"): \
                 change it there and restart, or set webhooks_from_config = \"seed\" to make the \
                 file a one-time seed that the API may edit",
                hook.spec.name
            ),
        ));
    }
    Ok(hook)
}

async fn reload(state: &Shared) -> Result<(), ApiError> {
    state.webhooks.reload(state.store.as_ref()).await?;
    Ok(())
}

#[utoipa::path(
    post,
    path = "/admin/v1/webhooks",
    tag = "webhooks",
    summary = "Create a webhook",
    request_body = WebhookSpec,
    responses(
        (status = 201, description = "Created; the only answer that shows the signing secret unmasked", body = super::openapi::WebhookView),
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
async fn create_webhook(
    State(state): State<Shared>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body = body.map_err(body_error)?;
    let mut spec: WebhookSpec = parse_json(&body)?;
    check(&state, &mut spec).await?;
    let now = now_ms();
    let hook = Webhook {
        id: new_id("wh"),
        spec: webhooks::with_generated_secret(spec),
        created_at: now,
        updated_at: now,
    };
    state.store.insert_webhook(&hook).await?;
    reload(&state).await?;
    // The creator sees the signing secret once, so receivers can verify signatures; later reads
    // mask it (GET .../secret shows it to an admin on purpose).
    let mut body = shown(&state, &hook);
    if let Some(secret) = &hook.spec.signing.secret {
        body["signing"]["secret"] = Value::String(secret.clone());
    }
    Ok((StatusCode::CREATED, Json(body)))
}

/// `GET /admin/v1/webhooks/{id}/secret`: the signing secret receivers verify with.
#[utoipa::path(
    get,
    path = "/admin/v1/webhooks/{id}/secret",
    tag = "webhooks",
    summary = "The signing secret receivers verify signatures with",
    params(("id" = String, Path, description = "The webhook's id or name")),
    responses(
        (status = 200, description = "The secret (`whsec_...`)", body = super::openapi::SigningSecret),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn signing_secret(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let hook = find(&state, &id).await?;
    Ok(Json(json!({
        "enabled": hook.spec.signing.enabled,
        "secret": hook.spec.signing.secret,
    })))
}

#[utoipa::path(
    get,
    path = "/admin/v1/webhooks",
    tag = "webhooks",
    summary = "List webhooks (secrets masked)",
    responses(
        (status = 200, description = "Every webhook, the sink's included", body = super::openapi::WebhookList),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn list_webhooks(State(state): State<Shared>) -> Result<Json<Value>, ApiError> {
    let hooks = state.store.webhooks().await?;
    let items: Vec<Value> = hooks.iter().map(|h| shown(&state, h)).collect();
    Ok(Json(json!({ "items": items })))
}

#[utoipa::path(
    get,
    path = "/admin/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Get a webhook (secrets masked)",
    params(("id" = String, Path, description = "The webhook's id or name")),
    responses(
        (status = 200, description = "The webhook", body = super::openapi::WebhookView),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn get_webhook(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(shown(&state, &find(&state, &id).await?)))
}

async fn save(
    state: &Shared,
    old: Webhook,
    mut spec: WebhookSpec,
) -> Result<Json<Value>, ApiError> {
    webhooks::carry_secrets(&mut spec, &old.spec)?;
    check(state, &mut spec).await?;
    let hook = Webhook {
        spec: webhooks::with_generated_secret(spec),
        updated_at: now_ms(),
        ..old
    };
    if !state.store.update_webhook(&hook).await? {
        return Err(ApiError::not_found("webhook"));
    }
    reload(state).await?;
    Ok(Json(shown(state, &hook)))
}

#[utoipa::path(
    put,
    path = "/admin/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Replace a webhook",
    description = "What a GET shows can be PUT back (`id`, `created_at`, `updated_at` and `inbound_url` are ignored). A masked secret keeps the stored one, unless `url`, `auth.token_url` or the auth type changes: then every secret sent there must be sent again (422 naming the field). The sink's webhook is managed by the config (409).",
    params(("id" = String, Path, description = "The webhook's id or name")),
    request_body = WebhookSpec,
    responses(
        (status = 200, description = "Updated", body = super::openapi::WebhookView),
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
async fn put_webhook(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body.map_err(body_error)?;
    let old = find_editable(&state, &id).await?;
    // What a GET shows can be PUT back: the read-only fields are ignored.
    let mut value: Value = parse_json(&body)?;
    if let Some(fields) = value.as_object_mut() {
        for read_only in [
            "id",
            "created_at",
            "updated_at",
            "inbound_url",
            "managed_by_config",
        ] {
            fields.remove(read_only);
        }
    }
    let spec: WebhookSpec = from_value(value)?;
    save(&state, old, spec).await
}

/// JSON merge patch (RFC 7396) over the stored definition.
#[utoipa::path(
    patch,
    path = "/admin/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "JSON merge patch (RFC 7396) of a webhook",
    description = "Applied to the webhook as a read shows it (secrets masked), then saved by the rules of a PUT.",
    params(("id" = String, Path, description = "The webhook's id or name")),
    request_body = inline(Object),
    responses(
        (status = 200, description = "Updated", body = super::openapi::WebhookView),
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
async fn patch_webhook(
    State(state): State<Shared>,
    Path(id): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let patch = super::admin::merge_patch_body(body)?;
    let old = find_editable(&state, &id).await?;
    // Over what a read shows: secrets the patch leaves alone stay masked, and are kept or
    // refused by `save` exactly as in a PUT.
    let mut merged = serde_json::to_value(old.spec.redacted()).unwrap_or(Value::Null);
    merge_patch(&mut merged, patch);
    let spec: WebhookSpec = from_value(merged)?;
    save(&state, old, spec).await
}

/// The body of a PATCH: a JSON merge patch (RFC 7396), which must be a JSON object (a 400 for a
/// body that is not JSON, a 422 for one that is not an object). Shared by every PATCH route.
pub(super) fn merge_patch_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let body = body.map_err(body_error)?;
    let patch: Value = parse_json(&body)?;
    if !patch.is_object() {
        return Err(ApiError::invalid_field(
            "",
            "a merge patch must be a JSON object",
        ));
    }
    Ok(patch)
}

pub(super) fn merge_patch(target: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !target.is_object() {
                *target = Value::Object(Default::default());
            }
            if let Value::Object(t) = target {
                for (k, v) in fields {
                    if v.is_null() {
                        t.remove(&k);
                    } else {
                        merge_patch(t.entry(k).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other,
    }
}

#[utoipa::path(
    delete,
    path = "/admin/v1/webhooks/{id}",
    tag = "webhooks",
    summary = "Delete a webhook; its pending deliveries become dead",
    params(("id" = String, Path, description = "The webhook's id or name")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn delete_webhook(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    let hook = find_editable(&state, &id).await?;
    if !state.store.delete_webhook(&hook.id).await? {
        return Err(ApiError::not_found("webhook"));
    }
    reload(&state).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(
    post,
    path = "/admin/v1/webhooks/{id}/replay",
    tag = "webhooks",
    summary = "Send every dead delivery of a webhook again",
    params(("id" = String, Path, description = "The webhook's id or name")),
    responses(
        (status = 202, description = "Pending again", body = super::openapi::Replayed),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn replay_webhook(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let hook = find(&state, &id).await?;
    let n = state.store.replay_dead(&hook.id, now_ms()).await?;
    if n > 0 {
        state.wake.notify_one();
    }
    Ok((StatusCode::ACCEPTED, Json(json!({ "replayed": n }))))
}

/// `GET /admin/v1/deliveries`: the Webhook Log, newest first (filters: [`super::log_filter`]).
#[utoipa::path(
    get,
    path = "/admin/v1/deliveries",
    tag = "deliveries",
    summary = "The Webhook Log, newest first",
    params(super::log_filter::LogQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = Page<Delivery>),
        (status = 400, response = super::openapi::BadRequest),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 422, response = super::openapi::Unprocessable),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn list_deliveries(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let filter = super::log_filter::parse(&state, query.as_deref()).await?;
    let page = state.store.deliveries(&filter).await?;
    Ok(Json(
        json!({ "items": page.items, "next_cursor": page.next_cursor }),
    ))
}

#[utoipa::path(
    get,
    path = "/admin/v1/deliveries/{id}",
    tag = "deliveries",
    summary = "One delivery with every attempt",
    params(("id" = String, Path, description = "The delivery's id (`msg_...`)")),
    responses(
        (status = 200, description = "The delivery and its attempts, oldest first", body = super::openapi::DeliveryWithAttempts),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn get_delivery(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let (delivery, mut attempts) = state
        .store
        .delivery(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    // Bodies the log keeps no copy of are made again from the event.
    let kept_none = |a: &crate::model::Attempt| {
        a.request
            .as_ref()
            .is_some_and(|r| r.body_from.is_some() && r.body.is_empty())
    };
    if attempts.iter().any(kept_none) {
        if let Some(event) = state.store.event(&delivery.event_id).await? {
            let cap = state.config.delivery.log_body_bytes;
            for request in attempts.iter_mut().filter_map(|a| a.request.as_mut()) {
                request.fill_body(&event, cap);
            }
        }
    }
    let mut shown = serde_json::to_value(&delivery).unwrap_or(Value::Null);
    shown["attempts"] = serde_json::to_value(&attempts).unwrap_or(Value::Null);
    Ok(Json(shown))
}

#[utoipa::path(
    post,
    path = "/admin/v1/deliveries/{id}/replay",
    tag = "deliveries",
    summary = "Send a delivery again, with a fresh attempt budget",
    params(("id" = String, Path, description = "The delivery's id (`msg_...`)")),
    responses(
        (status = 202, description = "Pending again", body = Delivery),
        (status = 401, response = super::openapi::Unauthorized),
        (status = 404, response = super::openapi::NotFound),
        (status = 409, response = super::openapi::Conflict),
        (status = 503, response = super::openapi::Unavailable),
    ),
    security(("admin_token" = [])),
)]
async fn replay_delivery(
    State(state): State<Shared>,
    Path(id): Path<String>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (delivery, _) = state
        .store
        .delivery(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    if delivery.source == DeliverySource::Inbound {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_replayable",
            "a refused inbound push is only logged; it cannot be sent",
        ));
    }
    if state.store.webhook(&delivery.webhook_id).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "webhook_deleted",
            "the delivery's webhook was deleted; it cannot be sent again",
        ));
    }
    let delivery = state
        .store
        .replay_delivery(&id, now_ms())
        .await?
        .ok_or_else(|| ApiError::not_found("delivery"))?;
    state.wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::to_value(&delivery).unwrap_or(Value::Null)),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_patch_rfc7396() {
        let mut v = json!({"a": 1, "b": {"c": 2, "d": 3}});
        merge_patch(&mut v, json!({"a": null, "b": {"c": 5}, "e": [1]}));
        assert_eq!(v, json!({"b": {"c": 5, "d": 3}, "e": [1]}));
    }
}
