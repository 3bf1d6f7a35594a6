//! `GET /admin/v1/openapi.json`: the OpenAPI 3.1 document of both listeners' routes.
//!
//! Written by hand next to the handlers; the integration tests fetch it and request every path
//! it lists, so a route that is documented but not served fails a test.

use axum::Json;
use serde_json::{json, Value};

/// Serves the document.
pub async fn document() -> Json<Value> {
    Json(spec())
}

fn op(summary: &str, tag: &str, responses: Value) -> Value {
    json!({"summary": summary, "tags": [tag], "responses": responses})
}

fn with_body(mut operation: Value, schema: Value) -> Value {
    operation["requestBody"] =
        json!({"required": true, "content": {"application/json": {"schema": schema}}});
    operation
}

fn reference(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

fn ok(description: &str, schema: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": schema}}})
}

fn errors(codes: &[u16]) -> serde_json::Map<String, Value> {
    codes
        .iter()
        .map(|c| (c.to_string(), ok("Error", reference("Error"))))
        .collect()
}

fn responses(success: (&str, Value), error_codes: &[u16]) -> Value {
    let mut map = errors(error_codes);
    map.insert(success.0.to_owned(), success.1);
    Value::Object(map)
}

/// The document.
pub fn spec() -> Value {
    let id_param = json!([{"name": "id", "in": "path", "required": true, "description": "Id or name", "schema": {"type": "string"}}]);
    let webhook = reference("Webhook");
    let mut paths = serde_json::Map::new();
    paths.insert("/v1/events".into(), json!({"post": with_body(op("Ingest one event", "ingest",
        responses(("202", ok("Committed", reference("IngestResult"))), &[400, 401, 413, 422, 503])), reference("NewEvent"))}));
    paths.insert("/v1/events/batch".into(), json!({"post": with_body(op("Ingest events, committed together", "ingest",
        responses(("202", ok("Committed", json!({"type": "object", "properties": {"accepted": {"type": "integer"}, "events": {"type": "array", "items": reference("IngestResult")}}}))), &[400, 401, 413, 422, 503])),
        json!({"type": "array", "items": reference("NewEvent")}))}));
    paths.insert(
        "/v1/inbound/{webhook}".into(),
        json!({
            "parameters": [{"name": "webhook", "in": "path", "required": true, "schema": {"type": "string"}}],
            "post": {
                "summary": "A third party's push (JSON or form-encoded), verified by the webhook's inbound auth; its records go to the sink",
                "tags": ["inbound"],
                "security": [],
                "responses": responses(
                    ("202", ok("Stored (inbound.mode async: before the sink is asked)", json!({"type": "object", "properties": {"accepted": {"type": "integer"}, "operation": {"enum": ["update", "upsert"]}}}))),
                    &[400, 401, 404, 409, 413, 422, 502, 503, 504],
                ),
            },
        }),
    );
    paths.insert(
        "/healthz".into(),
        json!({"get": op("Liveness", "operations", json!({"200": {"description": "Alive"}}))}),
    );
    paths.insert("/readyz".into(), json!({"get": op("Readiness: the store answers and shutdown has not begun", "operations", json!({"200": {"description": "Ready"}, "503": {"description": "Not ready"}}))}));
    paths.insert("/metrics".into(), json!({"get": op("Prometheus metrics (OpenMetrics text)", "operations", json!({"200": {"description": "Metrics"}}))}));
    paths.insert("/admin/v1/webhooks".into(), json!({
        "get": op("List webhooks (secrets masked)", "webhooks", responses(("200", ok("Webhooks", json!({"type": "object", "properties": {"items": {"type": "array", "items": webhook}}}))), &[401])),
        "post": with_body(op("Create a webhook", "webhooks", responses(("201", ok("Created", webhook.clone())), &[400, 401, 409, 413, 422])), reference("WebhookSpec")),
    }));
    let mut one = json!({
        "get": op("Get a webhook", "webhooks", responses(("200", ok("Webhook", webhook.clone())), &[401, 404])),
        "put": with_body(op("Replace a webhook; a masked secret keeps the stored one, unless url, auth.token_url or the auth type changes: then every secret sent there must be sent again (422 naming the field)", "webhooks", responses(("200", ok("Updated", webhook.clone())), &[400, 401, 404, 409, 422])), reference("WebhookSpec")),
        "patch": with_body(op("JSON merge patch (RFC 7396) of a webhook as a read shows it (secrets masked): the same rules as a PUT", "webhooks", responses(("200", ok("Updated", webhook.clone())), &[400, 401, 404, 409, 422])), json!({"type": "object"})),
        "delete": op("Delete a webhook; its pending deliveries become dead. 409 for the sink and for a webhook the config file owns", "webhooks", responses(("204", json!({"description": "Deleted"})), &[401, 404, 409])),
    });
    one["parameters"] = id_param.clone();
    paths.insert("/admin/v1/webhooks/{id}".into(), one);
    paths.insert("/admin/v1/webhooks/{id}/replay".into(), json!({"parameters": id_param, "post":
        op("Re-send every dead delivery of a webhook", "webhooks", responses(("202", ok("Replayed", json!({"type": "object", "properties": {"replayed": {"type": "integer"}}}))), &[401, 404]))}));
    paths.insert("/admin/v1/webhooks/{id}/secret".into(), json!({"parameters": [{"name": "id", "in": "path", "required": true, "description": "Id or name", "schema": {"type": "string"}}], "get":
        op("The webhook's signing secret (whsec_...), for receivers to verify signatures; the create response shows it once too", "webhooks",
            responses(("200", ok("Secret", json!({"type": "object", "properties": {"enabled": {"type": "boolean"}, "secret": {"type": ["string", "null"]}}}))), &[401, 404]))}));
    let q = |name: &str, description: &str| json!({"name": name, "in": "query", "required": false, "description": description, "schema": {"type": "string"}});
    paths.insert("/admin/v1/deliveries".into(), json!({"get": {
        "summary": "The Webhook Log, newest first", "tags": ["deliveries"],
        "parameters": [q("webhook", "Webhook id or name"), q("status", "pending, succeeded, dead or skipped"), q("event_type", "Exact event type"), q("event_id", "Event id"), q("limit", "1 to 1000, default 50"), q("cursor", "next_cursor of the previous page")],
        "responses": responses(("200", ok("A page", json!({"type": "object", "properties": {"items": {"type": "array", "items": reference("Delivery")}, "next_cursor": {"type": ["string", "null"]}}}))), &[400, 401, 404, 422])}}));
    let did = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
    paths.insert("/admin/v1/deliveries/{id}".into(), json!({"parameters": did.clone(), "get":
        op("One delivery with every attempt", "deliveries", responses(("200", ok("Delivery", json!({"allOf": [reference("Delivery"), {"type": "object", "properties": {"attempts": {"type": "array", "items": reference("Attempt")}}}]}))), &[401, 404]))}));
    paths.insert("/admin/v1/deliveries/{id}/replay".into(), json!({"parameters": did, "post":
        op("Send a delivery again, with a fresh attempt budget", "deliveries", responses(("202", ok("Pending again", reference("Delivery"))), &[401, 404]))}));
    source_paths(&mut paths);
    paths.insert("/admin/v1/openapi.json".into(), json!({"get": op("This document", "operations", json!({"200": {"description": "OpenAPI 3.1"}}))}));

    json!({
        "openapi": "3.1.0",
        "info": {"title": "hookyard", "version": env!("CARGO_PKG_VERSION"),
                 "description": "Webhook gateway. Public listener: /v1/*, /healthz, /readyz, /metrics. Admin listener: /admin/v1/*. Both take `Authorization: Bearer <token>` when a token is configured."},
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": schemas(),
        },
        "security": [{"bearer": []}],
        "paths": paths,
    })
}

/// `/admin/v1/sources` (see [`crate::server::sources`]).
fn source_paths(paths: &mut serde_json::Map<String, Value>) {
    let source = reference("Source");
    let name =
        json!([{"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}]);
    paths.insert("/admin/v1/sources".into(), json!({
        "get": op("List message-bus sources with this process's status (passwords masked)", "sources",
            responses(("200", ok("Sources", json!({"type": "object", "properties": {"items": {"type": "array", "items": source}}}))), &[401])),
        "post": with_body(op("Create a source; every gateway process on the database starts consuming it", "sources",
            responses(("201", ok("Created", source.clone())), &[400, 401, 409, 413, 422])), reference("SourceSpec")),
    }));
    paths.insert("/admin/v1/sources/{name}".into(), json!({"parameters": name.clone(),
        "get": op("A source with this process's status", "sources", responses(("200", ok("Source", source.clone())), &[401, 404])),
        "delete": op("Delete a source; its consumers stop (messages stay in the broker)", "sources", responses(("204", json!({"description": "Deleted"})), &[401, 404])),
    }));
    paths.insert("/admin/v1/sources/{name}/pause".into(), json!({"parameters": name.clone(), "post":
        op("Stop consuming (every process); unacknowledged messages go back to the broker", "sources", responses(("200", ok("Paused", source.clone())), &[401, 404]))}));
    paths.insert(
        "/admin/v1/sources/{name}/resume".into(),
        json!({"parameters": name, "post":
        op("Consume again", "sources", responses(("200", ok("Resumed", source)), &[401, 404]))}),
    );
}

fn source_schemas() -> Value {
    let string = json!({"type": "string"});
    let int = json!({"type": "integer"});
    json!({
        "SourceSpec": {"type": "object", "required": ["name", "type", "url"], "additionalProperties": false,
            "description": "NATS: stream and subject required; AMQP: queue required. Fields of the other broker are refused.",
            "properties": {
                "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,100}$"}, "type": {"enum": ["nats", "amqp"]},
                "url": {"type": "string", "description": "nats:// or tls://; amqp:// or amqps://. The password is shown masked."},
                "stream": string, "subject": string, "consumer": {"type": "string", "description": "Durable consumer; default hookyard-<name>"}, "ack_wait_secs": {"type": "integer", "default": 30},
                "credentials_file": string, "queue": string, "prefetch": {"type": "integer", "description": "Default 2 * batch_size"},
                "dead_letter_exchange": string, "tls_ca_file": string, "tls_cert_file": string, "tls_key_file": string,
                "type_from": {"enum": ["body", "subject", "header"], "default": "body"}, "skip_segments": {"type": "integer", "default": 0},
                "type_header": string, "id_header": string,
                "batch_size": {"type": "integer", "default": 500}, "batch_wait_ms": {"type": "integer", "default": 20},
                "max_queue_depth": {"type": "integer", "default": 100000}}},
        "Source": {"type": "object", "properties": {"name": string, "spec": {"$ref": "#/components/schemas/SourceSpec"},
            "paused": {"type": "boolean"}, "created_at": int, "updated_at": int,
            "status": {"type": ["object", "null"], "description": "This process's consumer; null before it started", "properties": {
                "state": {"enum": ["connecting", "running", "throttled", "paused", "failing"]},
                "consumed": int, "committed": int, "duplicates": int, "dead_lettered": int,
                "lag": {"type": ["integer", "null"], "description": "Messages waiting in the broker"},
                "last_error": {"type": ["string", "null"]}, "since": int,
                "recent_failures": {"type": "array", "items": {"type": "object", "properties": {"at": int, "subject": string, "id": string, "reason": string}}}}}}},
    })
}

fn schemas() -> Value {
    let string = json!({"type": "string"});
    let int = json!({"type": "integer"});
    let mut all = json!({
        "Error": {"type": "object", "required": ["error"], "properties": {"error": {"type": "object", "required": ["code", "message"], "properties": {
            "code": string, "message": string, "field": {"type": "string", "description": "Dotted path of the offending field"}}}}},
        "NewEvent": {"type": "object", "required": ["type", "data"], "additionalProperties": false, "properties": {
            "id": {"type": "string", "description": "Idempotency key"}, "type": string, "data": {},
            "context": {}, "occurred_at": {"type": "string", "format": "date-time"}}},
        "IngestResult": {"type": "object", "properties": {"id": string, "deliveries": int, "duplicate": {"type": "boolean"}}},
        "Auth": {"type": "object", "required": ["type"], "description": "Secrets are write-only: reads show ********, and sending ******** back keeps the stored value, as long as url, token_url and type are unchanged. Encrypted at rest.",
            "properties": {"type": {"enum": ["none", "api_key", "bearer", "basic", "oauth2_password", "oauth2_client_credentials"]},
                "header": string, "value": string, "token": string, "username": string, "password": string,
                "token_url": string, "client_id": string, "client_secret": string, "scope": string}},
        "WebhookSpec": {"type": "object", "required": ["name"], "additionalProperties": false,
            "description": "events and url are required unless the webhook is inbound only (inbound enabled, neither events nor url)", "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"},
            "title": {"type": "string", "maxLength": 200, "description": "Free display name (spaces allowed)"}, "description": string, "enabled": {"type": "boolean", "default": true},
            "events": {"type": "array", "items": string, "description": "Exact types or globs (user.*, *)"},
            "url": {"type": "string", "format": "uri", "description": "Reads mask its userinfo and the values of secret query parameters (see secret_query_params) with ********; sending the masked URL back keeps the stored one"},
            "method": {"type": "string", "default": "POST"},
            "headers": {"type": "object", "additionalProperties": string, "description": "Static headers; those listed in secret_headers are write-only (masked on reads and in the Webhook Log, encrypted at rest)"},
            "secret_headers": {"type": "array", "items": string, "description": "Names of `headers` whose values are secret (case-insensitive), e.g. [\"X-Static-Token\"]"},
            "secret_query_params": {"type": "array", "items": string, "description": "Query parameters of url whose values are secret, besides those secret by name (token, key, secret, signature, password, auth, credential, sig, pwd, pass, code)"},
            "event_header": string,
            "auth": {"$ref": "#/components/schemas/Auth"},
            "signing": {"type": "object", "properties": {"enabled": {"type": "boolean", "default": true}, "secret": {"type": "string", "description": "whsec_<base64>; generated when absent"}}},
            "plugin": {"type": "object", "required": ["name"], "properties": {"name": string, "version": {"type": ["integer", "null"]}, "config": {}}},
            "inbound": {"type": "object", "required": ["auth"], "properties": {"enabled": {"type": "boolean"},
                "auth": {"type": "object", "required": ["type"], "properties": {"type": {"enum": ["api_key", "bearer", "basic", "standard_webhooks"]}}},
                "entity": string, "jit_provisioning": {"type": "boolean"}, "identify_by": {"type": "array", "items": string},
                "mode": {"enum": ["async", "sync"], "default": "async", "description": "async: 202 once stored, before the sink is asked; sync: waits for the sink and answers with its verdict (504 after sync_timeout_ms)"},
                "sync_timeout_ms": {"type": "integer", "default": 10000, "minimum": 1, "maximum": 120000}}},
            "writeback": {"type": "object", "properties": {"entity": string, "identify_by": {"type": "array", "items": string}}},
            "retry": {"type": "object", "properties": {"max_attempts": {"type": "integer", "default": 8}}},
            "timeout_ms": {"type": "integer", "default": 10000}, "max_concurrency": {"type": "integer"}}},
        "Webhook": {"allOf": [{"$ref": "#/components/schemas/WebhookSpec"}, {"type": "object", "properties": {"id": string, "created_at": int, "updated_at": int,
            "inbound_url": {"type": "string", "description": "Where the third party pushes, when inbound is configured"},
            "managed_by_config": {"type": "string", "description": "The config file that owns this webhook (webhooks_from_config = \"managed\"): PUT, PATCH and DELETE answer 409"}}}]},
        "Delivery": {"type": "object", "properties": {"id": {"type": "string", "description": "Sent as webhook-id"}, "event_id": string, "event_type": string, "webhook_id": string,
            "status": {"enum": ["pending", "succeeded", "dead", "skipped"]}, "attempts": {"type": "integer", "description": "Attempts held, across replays"},
            "attempts_since_replay": {"type": "integer", "description": "Attempts since creation or the last replay: what retry.max_attempts limits"}, "next_attempt_at": {"type": ["integer", "null"]},
            "last_status": {"type": ["integer", "null"]}, "last_error": {"type": ["string", "null"]}, "created_at": int, "updated_at": int}},
        "Attempt": {"type": "object", "properties": {"attempt_no": int, "started_at": int, "duration_ms": int,
            "request": {"type": ["object", "null"], "description": "Method, URL, headers (credentials and signature redacted), body (truncated)"},
            "response_status": {"type": ["integer", "null"]}, "response_headers": {"type": "array"}, "response_body": {"type": ["string", "null"]},
            "error": {"type": ["string", "null"]}, "outcome": {"enum": ["succeeded", "retry", "dead", "skipped"]}}},
    });
    if let (Some(all), Value::Object(sources)) = (all.as_object_mut(), source_schemas()) {
        all.extend(sources);
    }
    all
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_route_is_documented() {
        let doc = super::spec();
        let paths = doc["paths"].as_object().unwrap();
        for route in [
            "/v1/events",
            "/v1/events/batch",
            "/v1/inbound/{webhook}",
            "/healthz",
            "/readyz",
            "/metrics",
            "/admin/v1/webhooks",
            "/admin/v1/webhooks/{id}",
            "/admin/v1/webhooks/{id}/replay",
            "/admin/v1/webhooks/{id}/secret",
            "/admin/v1/deliveries",
            "/admin/v1/deliveries/{id}",
            "/admin/v1/deliveries/{id}/replay",
            "/admin/v1/openapi.json",
            "/admin/v1/sources",
            "/admin/v1/sources/{name}",
            "/admin/v1/sources/{name}/pause",
            "/admin/v1/sources/{name}/resume",
        ] {
            assert!(paths.contains_key(route), "{route} is not documented");
        }
    }
}
