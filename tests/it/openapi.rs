//! The OpenAPI document the gateway serves: valid OpenAPI 3.1 (checked against the official
//! schema, vendored in `tests/openapi-3.1/`), every `$ref` resolving, and the gateway's real
//! answers matching the schemas it documents for them.
//!
//! That every served route is in the document is checked where the routers are built
//! (`src/server/openapi/tests.rs`).

use jsonschema::{Registry, Validator};
use serde_json::{json, Value};

use crate::common::*;

const OAS_SCHEMA: &str = include_str!("../openapi-3.1/schema.json");
const OAS_DIALECT: &str = include_str!("../openapi-3.1/dialect-base.json");
const OAS_VOCABULARY: &str = include_str!("../openapi-3.1/meta-base.json");

/// Where the served document is registered, for answers' schemas to refer into.
const DOC_URI: &str = "urn:hookyard:openapi";

fn parse(text: &str) -> Value {
    serde_json::from_str(text).expect("vendored schema is JSON")
}

/// The official OpenAPI 3.1 schema checks a document's structure and leaves Schema Objects to a
/// dialect, through `$dynamicRef: "#meta"`; this entry point binds that anchor to the OAS base
/// dialect (JSON Schema 2020-12 plus the OAS vocabulary), so every schema in the document is
/// checked as well (the OAI publishes the same composition as `schema-base`).
fn oas_validator() -> Validator {
    let registry = Registry::new()
        .add(
            "https://spec.openapis.org/oas/3.1/schema/2022-10-07",
            parse(OAS_SCHEMA),
        )
        .and_then(|r| {
            r.add(
                "https://spec.openapis.org/oas/3.1/dialect/base",
                parse(OAS_DIALECT),
            )
        })
        .and_then(|r| {
            r.add(
                "https://spec.openapis.org/oas/3.1/meta/base",
                parse(OAS_VOCABULARY),
            )
        })
        .and_then(|r| r.prepare())
        .expect("the vendored schemas register");
    let entry = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:hookyard:test:oas-3.1-with-base-dialect",
        "$ref": "https://spec.openapis.org/oas/3.1/schema/2022-10-07",
        "$defs": {
            "schema": {
                "$dynamicAnchor": "meta",
                "$ref": "https://spec.openapis.org/oas/3.1/dialect/base"
            }
        }
    });
    jsonschema::options()
        .with_registry(&registry)
        .build(&entry)
        .expect("the OpenAPI 3.1 schema compiles")
}

fn violations(validator: &Validator, doc: &Value) -> Vec<String> {
    validator
        .iter_errors(doc)
        .map(|e| format!("at {}: {e}", e.instance_path()))
        .collect()
}

/// Every `$ref` in `value`, with where it is.
fn refs<'a>(value: &'a Value, at: String, out: &mut Vec<(String, &'a str)>) {
    match value {
        Value::Object(fields) => {
            for (k, v) in fields {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push((at.clone(), r));
                    }
                }
                refs(v, format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

async fn served_document(gw: &TestGateway) -> Value {
    let r = gw
        .client()
        .get(gw.admin_url("/admin/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    let (status, doc) = status_json(r).await;
    assert_eq!(status, 200, "{doc}");
    doc
}

#[tokio::test(flavor = "multi_thread")]
async fn the_served_document_is_valid_openapi_3_1() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let doc = served_document(&gw).await;
    gw.stop().await;

    let validator = oas_validator();
    let problems = violations(&validator, &doc);
    assert!(problems.is_empty(), "not valid OpenAPI 3.1: {problems:#?}");

    // Every reference is local and resolves.
    let mut found = Vec::new();
    refs(&doc, String::new(), &mut found);
    assert!(found.len() > 50, "only {} references", found.len());
    for (at, r) in found {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: {r} is not a local reference"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{at}: {r} resolves to nothing"
        );
    }

    // The validator can fail: a broken document, and a document whose only fault is inside a
    // Schema Object (which only the dialect bound above checks), are refused.
    let mut broken = doc.clone();
    broken.as_object_mut().unwrap().remove("info");
    assert!(!violations(&validator, &broken).is_empty());
    let mut bad_schema = doc.clone();
    bad_schema["components"]["schemas"]["Error"]["properties"]["error"] = json!({"type": 5});
    assert!(
        !violations(&validator, &bad_schema).is_empty(),
        "a Schema Object of the wrong shape passed: the dialect is not applied"
    );
    let mut bad_operation = doc.clone();
    bad_operation["paths"]["/v1/events"]["post"]["responses"]["202"] = json!({"content": 1});
    assert!(!violations(&validator, &bad_operation).is_empty());
}

/// Checks real answers against the schemas the document gives for them.
struct Answers {
    doc: Value,
    registry: Registry<'static>,
    checked: usize,
}

/// Rewrites the document's local references (`#/components/...`) to point into the registered
/// document, so a schema taken out of it still resolves them.
fn rebase(value: &mut Value) {
    match value {
        Value::Object(fields) => {
            for (k, v) in fields.iter_mut() {
                match (k.as_str(), v) {
                    ("$ref", Value::String(r)) if r.starts_with('#') => {
                        *r = format!("{DOC_URI}{r}");
                    }
                    (_, v) => rebase(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(rebase),
        _ => {}
    }
}

impl Answers {
    fn new(doc: Value) -> Answers {
        let registry = Registry::new()
            .add(DOC_URI, doc.clone())
            .and_then(|r| r.prepare())
            .expect("the document registers");
        Answers {
            doc,
            registry,
            checked: 0,
        }
    }

    /// Asserts that the answer `status` with `body` to `method path` is documented, and that
    /// `body` matches the documented schema (an answer documented without content has none).
    fn check(&mut self, method: &str, path: &str, status: u16, body: &Value) {
        let at = format!("{method} {path} answered {status}");
        let op = &self.doc["paths"][path][method.to_lowercase()];
        assert!(op.is_object(), "{at}: the operation is not documented");
        let mut response = &op["responses"][status.to_string()];
        assert!(
            response.is_object(),
            "{at}: this status is not documented: {body}"
        );
        if let Some(r) = response["$ref"].as_str() {
            response = self
                .doc
                .pointer(r.trim_start_matches('#'))
                .unwrap_or_else(|| panic!("{at}: {r} resolves to nothing"));
        }
        let Some(content) = response["content"].as_object() else {
            assert_eq!(body, &Value::Null, "{at}: documented without content");
            self.checked += 1;
            return;
        };
        let Some(schema) = content
            .get("application/json")
            .map(|media| media["schema"].clone())
        else {
            return;
        };
        let mut schema = schema;
        rebase(&mut schema);
        let validator = jsonschema::options()
            .with_registry(&self.registry)
            .build(&schema)
            .unwrap_or_else(|e| panic!("{at}: the documented schema does not compile: {e}"));
        let problems = violations(&validator, body);
        assert!(
            problems.is_empty(),
            "{at}: the answer does not match the document: {problems:#?}\nanswer: {body:#}\nschema: {schema:#}"
        );
        self.checked += 1;
    }
}

/// Sends `method url` with `token` and `body`, and returns the answer.
async fn call(
    http: &reqwest::Client,
    method: &str,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = http.request(method.parse().unwrap(), url);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    let (status, body) = status_json(req.send().await.unwrap()).await;
    (status.as_u16(), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn answers_match_the_documented_schemas() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let mut answers = Answers::new(served_document(&gw).await);
    let http = gw.client();
    let admin = |path: &str| gw.admin_url(path);
    let public = |path: &str| gw.url(path);
    let a = Some(ADMIN_TOKEN);
    let i = Some(INGEST_TOKEN);

    // (method, documented path, url, token, body); each answer is checked in order.
    let hook = json!({
        "name": "oa", "events": ["user.*"], "url": rx.url("/hook?token=abc"),
        "description": "checked against the document",
        "headers": {"X-Static": "s", "X-Secret": "t"}, "secret_headers": ["X-Secret"],
        "event_header": "X-Event", "auth": {"type": "bearer", "token": "b"},
        "retry": {"max_attempts": 3}, "timeout_ms": 2000, "max_concurrency": 4
    });
    // Never sent (no event matches): its token server does not exist.
    let oauth = json!({"name": "oauth", "events": ["never"], "url": rx.url("/o"),
        "auth": {"type": "oauth2_client_credentials", "token_url": "http://127.0.0.1:9/token",
                 "client_id": "c", "client_secret": "cs", "scope": "a b"}});
    let plain = json!({"name": "plain", "events": ["*"], "url": rx.url("/plain"),
        "auth": {"type": "basic", "username": "u", "password": "p"}});
    // (method, documented path, URL, token, body)
    type Step<'a> = (&'a str, &'a str, String, Option<&'a str>, Option<Value>);
    let steps: Vec<Step<'_>> = vec![
        ("GET", "/healthz", public("/healthz"), None, None),
        ("GET", "/readyz", public("/readyz"), None, None),
        ("GET", "/metrics", public("/metrics"), None, None),
        (
            "POST",
            "/admin/v1/webhooks",
            admin("/admin/v1/webhooks"),
            a,
            Some(hook),
        ),
        (
            "POST",
            "/admin/v1/webhooks",
            admin("/admin/v1/webhooks"),
            a,
            Some(plain.clone()),
        ),
        (
            "POST",
            "/admin/v1/webhooks",
            admin("/admin/v1/webhooks"),
            a,
            Some(oauth),
        ),
        // A taken name, then a body of the wrong shape, then malformed JSON, then no token.
        (
            "POST",
            "/admin/v1/webhooks",
            admin("/admin/v1/webhooks"),
            a,
            Some(plain),
        ),
        (
            "POST",
            "/admin/v1/webhooks",
            admin("/admin/v1/webhooks"),
            a,
            Some(json!({"name": 5})),
        ),
        (
            "POST",
            "/admin/v1/webhooks",
            admin("/admin/v1/webhooks"),
            None,
            None,
        ),
        (
            "GET",
            "/admin/v1/webhooks",
            admin("/admin/v1/webhooks"),
            a,
            None,
        ),
        (
            "GET",
            "/admin/v1/webhooks/{id}",
            admin("/admin/v1/webhooks/oa"),
            a,
            None,
        ),
        (
            "GET",
            "/admin/v1/webhooks/{id}",
            admin("/admin/v1/webhooks/nope"),
            a,
            None,
        ),
        (
            "PATCH",
            "/admin/v1/webhooks/{id}",
            admin("/admin/v1/webhooks/plain"),
            a,
            Some(json!({"description": "patched"})),
        ),
        (
            "PUT",
            "/admin/v1/webhooks/{id}",
            admin("/admin/v1/webhooks/plain"),
            a,
            Some(
                json!({"name": "plain", "events": ["*"], "url": rx.url("/plain"),
                "plugin": null, "signing": {"enabled": false}}),
            ),
        ),
        (
            "GET",
            "/admin/v1/webhooks/{id}/secret",
            admin("/admin/v1/webhooks/oa/secret"),
            a,
            None,
        ),
        (
            "POST",
            "/v1/events",
            public("/v1/events"),
            i,
            Some(
                json!({"id": "evt-oa-1", "type": "user.created", "data": {"id": 1},
                "context": {"actor": "a"}, "occurred_at": "2026-01-02T03:04:05Z"}),
            ),
        ),
        (
            "POST",
            "/v1/events",
            public("/v1/events"),
            i,
            Some(json!({"type": "t"})),
        ),
        (
            "POST",
            "/v1/events",
            public("/v1/events"),
            None,
            Some(json!({"type": "t", "data": 1})),
        ),
        (
            "POST",
            "/v1/events/batch",
            public("/v1/events/batch"),
            i,
            Some(
                json!([{"id": "evt-oa-1", "type": "user.created", "data": {}},
                        {"type": "other", "data": [1]}]),
            ),
        ),
        (
            "POST",
            "/v1/inbound/{webhook}",
            public("/v1/inbound/oa"),
            None,
            Some(json!({"id": 1})),
        ),
        (
            "POST",
            "/admin/v1/sources",
            admin("/admin/v1/sources"),
            a,
            Some(json!({"name": "oa-src", "type": "amqp",
                "url": format!("amqp://u:secret@127.0.0.1:{}/%2f", closed_port()), "queue": "q"})),
        ),
        (
            "POST",
            "/admin/v1/sources",
            admin("/admin/v1/sources"),
            a,
            Some(json!({"name": "bad", "type": "amqp", "url": "amqp://h/", "stream": "s"})),
        ),
        (
            "GET",
            "/admin/v1/sources",
            admin("/admin/v1/sources"),
            a,
            None,
        ),
        (
            "GET",
            "/admin/v1/sources/{name}",
            admin("/admin/v1/sources/oa-src"),
            a,
            None,
        ),
        (
            "POST",
            "/admin/v1/sources/{name}/pause",
            admin("/admin/v1/sources/oa-src/pause"),
            a,
            None,
        ),
        (
            "POST",
            "/admin/v1/sources/{name}/resume",
            admin("/admin/v1/sources/oa-src/resume"),
            a,
            None,
        ),
        (
            "DELETE",
            "/admin/v1/sources/{name}",
            admin("/admin/v1/sources/oa-src"),
            a,
            None,
        ),
        (
            "DELETE",
            "/admin/v1/sources/{name}",
            admin("/admin/v1/sources/oa-src"),
            a,
            None,
        ),
        (
            "GET",
            "/admin/v1/plugins",
            admin("/admin/v1/plugins"),
            a,
            None,
        ),
        (
            "GET",
            "/admin/v1/plugins/{name}",
            admin("/admin/v1/plugins/nope"),
            a,
            None,
        ),
        (
            "POST",
            "/admin/v1/plugins/{name}/activate",
            admin("/admin/v1/plugins/nope/activate"),
            a,
            Some(json!({"version": 1})),
        ),
        (
            "GET",
            "/admin/v1/deliveries",
            admin("/admin/v1/deliveries?status=bogus"),
            a,
            None,
        ),
    ];
    for (method, path, url, token, body) in steps {
        let (status, answer) = call(&http, method, url, token, body).await;
        answers.check(method, path, status, &answer);
    }

    // Deliveries, once sent: their attempts carry the request as sent and the response.
    let delivered = gw.wait_for_status("oa", "succeeded", 1).await;
    let id = delivered[0]["id"].as_str().unwrap().to_owned();
    let steps: Vec<(&str, &str, String)> = vec![
        (
            "GET",
            "/admin/v1/deliveries",
            admin("/admin/v1/deliveries?webhook=oa&limit=1"),
        ),
        (
            "GET",
            "/admin/v1/deliveries/{id}",
            admin(&format!("/admin/v1/deliveries/{id}")),
        ),
        (
            "POST",
            "/admin/v1/deliveries/{id}/replay",
            admin(&format!("/admin/v1/deliveries/{id}/replay")),
        ),
        (
            "GET",
            "/admin/v1/deliveries/{id}",
            admin("/admin/v1/deliveries/msg_nope"),
        ),
        (
            "POST",
            "/admin/v1/webhooks/{id}/replay",
            admin("/admin/v1/webhooks/oa/replay"),
        ),
        (
            "DELETE",
            "/admin/v1/webhooks/{id}",
            admin("/admin/v1/webhooks/plain"),
        ),
        (
            "GET",
            "/admin/v1/openapi.json",
            admin("/admin/v1/openapi.json"),
        ),
    ];
    for (method, path, url) in steps {
        let (status, answer) = call(&http, method, url, a, None).await;
        answers.check(method, path, status, &answer);
    }
    let (status, answer) = call(
        &http,
        "GET",
        admin(&format!("/admin/v1/deliveries/{id}")),
        a,
        None,
    )
    .await;
    assert!(
        answer["attempts"][0]["request"]["headers"].is_array(),
        "{answer}"
    );
    answers.check("GET", "/admin/v1/deliveries/{id}", status, &answer);
    assert!(
        answers.checked >= 35,
        "only {} answers checked",
        answers.checked
    );
    gw.stop().await;
}

/// The plugin "Try it" answers (a send, a trap, a refused config) against the document.
#[tokio::test(flavor = "multi_thread")]
async fn plugin_try_answers_match_the_documented_schemas() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let mut answers = Answers::new(served_document(&gw).await);
    crate::plugins::upload_ok(&gw, "trap", crate::plugins::rust_plugin("trap")).await;
    let path = "/admin/v1/plugins/{name}/versions/{version}/try";
    let url = gw.admin_url("/admin/v1/plugins/trap/versions/1/try");
    for (body, want) in [
        (json!({}), 200),
        (
            json!({"event": {"type": "user.created", "data": {"misbehave": true}}}),
            422,
        ),
        (json!({"event": {"data": {}}}), 422),
        (json!({}), 404),
    ] {
        let url = if want == 404 {
            gw.admin_url("/admin/v1/plugins/trap/versions/9/try")
        } else {
            url.clone()
        };
        let (status, answer) = call(&gw.client(), "POST", url, Some(ADMIN_TOKEN), Some(body)).await;
        assert_eq!(status, want, "{answer}");
        answers.check("POST", path, status, &answer);
    }
    assert_eq!(answers.checked, 4);
    gw.stop().await;
}
