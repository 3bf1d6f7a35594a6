//! `POST /admin/v1/plugins/{name}/versions/{version}/try`: a stored version run on an event and
//! a config, answered with what `hookyard plugin check` prints; failures as 422 with the call's
//! logs and usage. Run on whichever store `HOOKYARD_TEST_STORE` names.

use serde_json::{json, Value};

use crate::common::*;
use crate::plugins::{rust_plugin, upload_ok};

async fn try_version(gw: &Api, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, body) = gw.admin("POST", path, body).await;
    (status.as_u16(), body)
}

/// A version's content hash, from the registry.
async fn sha256_of(gw: &Api, name: &str, version: u64) -> String {
    let (_, plugin) = gw
        .admin("GET", &format!("/admin/v1/plugins/{name}"), None)
        .await;
    plugin["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["version"] == version)
        .unwrap()["sha256"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_good_call_answers_the_shaped_request_with_time_and_memory() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    assert_eq!(
        upload_ok(&gw, "field-map", rust_plugin("field_map")).await,
        1
    );
    let config = json!({"request": [
        {"api_field": "emp_id", "field": "employee_id"},
        {"api_field": "contact.email", "field": "email", "convert": "lower"},
        {"api_field": "event", "field": "@type", "convert": "upper_snake"}
    ]});
    let (status, body) = try_version(
        &gw,
        "/admin/v1/plugins/field-map/versions/1/try",
        Some(json!({
            "event": {"type": "user.created", "data": {"employee_id": 7, "email": "Ada@X.org"}},
            "config": config,
        })),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("error").is_none(), "{body}");
    assert_eq!(body["plugin"], "field-map");
    assert_eq!(body["version"], 1);
    assert_eq!(body["sha256"], sha256_of(&gw, "field-map", 1).await);
    assert_eq!(body["outcome"], "send");
    assert_eq!(body["config"], config);
    assert_eq!(body["event"]["type"], "user.created");
    assert_eq!(
        body["webhook"]["name"], "sample",
        "no webhook: the sample one"
    );
    let requests = body["requests"].as_array().unwrap();
    assert_eq!(requests.len(), 1, "{body}");
    let sent: Value = serde_json::from_str(requests[0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        sent,
        json!({"emp_id": 7, "contact": {"email": "ada@x.org"}, "event": "USER_CREATED"})
    );
    assert_eq!(
        requests[0]["body_bytes"].as_u64().unwrap() as usize,
        requests[0]["body"].as_str().unwrap().len()
    );
    assert!(body["time_ms"].as_f64().unwrap() > 0.0, "{body}");
    assert!(body["memory_bytes"].as_u64().unwrap() > 0, "{body}");

    // No event: the sample event `plugin check` uses. For a webhook using the plugin: its
    // config and its identity, and the request is checked as a delivery's would be.
    gw.create_webhook(
        json!({"name": "hr", "events": ["user.*"], "url": rx.url("/users"),
        "plugin": {"name": "field-map", "config": {"request": [
            {"api_field": "login", "field": "username"}]}}}),
    )
    .await;
    let (status, body) = try_version(
        &gw,
        "/admin/v1/plugins/field-map/versions/1/try",
        Some(json!({"webhook": "hr"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event"]["type"], "user.created");
    assert_eq!(body["webhook"]["name"], "hr");
    assert_eq!(body["webhook"]["url"], rx.url("/users"));
    assert_eq!(
        body["requests"][0]["body"].as_str().unwrap(),
        r#"{"login":"jdoe"}"#,
        "{body}"
    );
    assert!(body["requests"][0].get("refused").is_none(), "{body}");
    // Nothing was sent or stored.
    assert_eq!(rx.count(), 0);
    assert!(gw.deliveries("").await.is_empty());

    // An empty body: the sample event and a null config, which field-map takes as no mapping
    // (the gateway's default body).
    let (status, body) = try_version(&gw, "/admin/v1/plugins/field-map/versions/1/try", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["config"], Value::Null);
    assert_eq!(body["event"]["id"], "evt_sample");
    let sent: Value = serde_json::from_str(body["requests"][0]["body"].as_str().unwrap()).unwrap();
    assert_eq!(sent["data"]["username"], "jdoe", "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_is_a_422_with_the_guest_output_and_usage() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    assert_eq!(upload_ok(&gw, "trap", rust_plugin("trap")).await, 1);
    let path = "/admin/v1/plugins/trap/versions/1/try";
    // The fixture traps only on `data.misbehave`.
    let (status, body) = try_version(
        &gw,
        path,
        Some(json!({"event": {"type": "user.created", "data": {"misbehave": true}}})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "plugin_trap", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.contains("plugin trapped"), "{message}");
    assert!(message.contains("traps on purpose"), "{message}");
    assert_eq!(body["outcome"], Value::Null);
    assert_eq!(body["requests"], json!([]));
    assert!(body["time_ms"].as_f64().unwrap() > 0.0, "{body}");

    // The same version on a harmless event answers, so the trap was the event's doing.
    let (status, body) = try_version(
        &gw,
        path,
        Some(json!({"event": {"type": "user.created", "data": {"id": 1}}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["outcome"], "send");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_errors_and_refused_configs_are_422_naming_the_cause() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    upload_ok(&gw, "field-map", rust_plugin("field_map")).await;
    let path = "/admin/v1/plugins/field-map/versions/1/try";
    // A config validate-config refuses: the outgoing phase is not run.
    let (status, body) = try_version(
        &gw,
        path,
        Some(
            json!({"config": {"request": [{"api_field": "x", "field": "y", "convert": "uppper"}]}}),
        ),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_config", "{body}");
    assert_eq!(body["error"]["field"], "config");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("uppper"),
        "{body}"
    );
    // A required value the event lacks: the plugin's invalid-input.
    let (status, body) = try_version(
        &gw,
        path,
        Some(json!({
            "event": {"type": "user.created", "data": {"email": "a@b.c"}},
            "config": {"request": [{"api_field": "emp_id", "field": "employee_id", "required": true}]},
        })),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "plugin_invalid_input", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("required value is missing"),
        "{body}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_past_its_time_limit_is_a_422_timeout() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    upload_ok(&gw, "endless-loop", rust_plugin("endless_loop")).await;
    let (status, body) = try_version(
        &gw,
        "/admin/v1/plugins/endless-loop/versions/1/try",
        Some(json!({"event": {"type": "user.created", "data": {"misbehave": true}}})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "plugin_timeout", "{body}");
    // test_config sets plugins.timeout_ms = 500.
    assert!(body["time_ms"].as_f64().unwrap() >= 500.0, "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_versions_plugins_and_webhooks_are_404() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    upload_ok(&gw, "trap", rust_plugin("trap")).await;
    for path in [
        "/admin/v1/plugins/trap/versions/2/try",
        "/admin/v1/plugins/trap/versions/0/try",
        "/admin/v1/plugins/trap/versions/latest/try",
        "/admin/v1/plugins/nope/versions/1/try",
    ] {
        let (status, body) = try_version(&gw, path, Some(json!({}))).await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["error"]["code"], "not_found", "{path}: {body}");
    }
    let (status, body) = try_version(
        &gw,
        "/admin/v1/plugins/trap/versions/1/try",
        Some(json!({"webhook": "no-such-webhook"})),
    )
    .await;
    assert_eq!(status, 404, "{body}");
    // Without the admin token: 401, and the plugin is not run.
    let r = reqwest::Client::new()
        .post(gw.admin_url("/admin/v1/plugins/trap/versions/1/try"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bad_event_or_body_is_refused_before_the_plugin_runs() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    upload_ok(&gw, "trap", rust_plugin("trap")).await;
    let url = gw.admin_url("/admin/v1/plugins/trap/versions/1/try");
    // Not JSON: 400.
    for raw in [r#"{"event": {"type": "#, "not json"] {
        let r = reqwest::Client::new()
            .post(&url)
            .bearer_auth(ADMIN_TOKEN)
            .header("content-type", "application/json")
            .body(raw)
            .send()
            .await
            .unwrap();
        let (status, body) = status_json(r).await;
        assert_error(status, &body, 400, "invalid_json");
    }
    // JSON, but not an event (or not this body): 422 naming the field, as ingest does.
    for (body, field) in [
        (json!({"event": {"data": {}}}), "event.type"),
        (json!({"event": {"type": "user.created"}}), "event.data"),
        (json!({"event": {"type": "", "data": {}}}), "event.type"),
        (
            json!({"event": {"type": "hookyard.internal", "data": {}}}),
            "event.type",
        ),
        (json!({"event": "user.created"}), "event"),
        (json!({"evnt": {}}), "evnt"),
    ] {
        let (status, got) = try_version(
            &gw,
            "/admin/v1/plugins/trap/versions/1/try",
            Some(body.clone()),
        )
        .await;
        assert_eq!(status, 422, "{body}: {got}");
        assert_eq!(got["error"]["code"], "invalid_field", "{body}: {got}");
        assert_eq!(got["error"]["field"], field, "{body}: {got}");
    }
    gw.stop().await;
}
