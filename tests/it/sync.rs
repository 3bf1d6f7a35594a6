//! Two-way sync: response write-back and inbound webhooks reaching the sink through the durable
//! delivery path.

use std::time::Duration;

use base64::Engine as _;
use serde_json::{json, Value};

use crate::common::*;
use crate::plugins::{rust_plugin, upload};

/// A gateway whose sink is `sink`.
async fn gateway_with_sink(dir: &std::path::Path, sink: &Receiver) -> TestGateway {
    let mut config = test_config(dir);
    config.sink.url = sink.url("/hookyard");
    config.sink.auth =
        serde_json::from_value(json!({"type": "bearer", "token": "sink-token"})).unwrap();
    TestGateway::start(config).await
}

async fn push(
    gw: &TestGateway,
    name: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(gw.url(&format!("/v1/inbound/{name}")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    let (status, body) = status_json(req.send().await.unwrap()).await;
    (status.as_u16(), body)
}

/// Without a `writeback` section the response phase is not called: one plugin call per
/// delivery, and nothing reaches the sink even though the mapping has response rows.
#[tokio::test(flavor = "multi_thread")]
async fn response_phase_needs_writeback() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    let hr = Receiver::start().await;
    hr.set_default(Reply::status(201).body(r#"{"id": "HR-9"}"#));
    let (status, body) = upload(&gw, "field-map", rust_plugin("field_map")).await;
    assert_eq!(status, 201, "{body}");
    gw.create_webhook(
        json!({"name": "hr-users", "events": ["user.created"], "url": hr.url("/users"),
        "plugin": {"name": "field-map", "config": {
            "request": [{"api_field": "emp_id", "field": "employee_id"}],
            "response": [{"api_field": "id", "field": "hr_id"}]}}}),
    )
    .await;
    for i in 0..3 {
        gw.post_event(json!({"type": "user.created", "data": {"employee_id": format!("E-{i}")}}))
            .await;
    }
    hr.wait_for(3).await;
    gw.wait_for_status("hr-users", "succeeded", 3).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("hookyard_plugin_calls_total{plugin=\"field-map\",version=\"1\",outcome=\"ok\"} 3\n"),
        "three outgoing calls of version 1 (the upload's smoke call counts as version=\"candidate\"), no response call:\n{metrics}"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(), 0, "nothing is written back");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn response_write_back_reaches_the_sink() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    let hr = Receiver::start().await;
    hr.set_default(Reply::status(201).body(r#"{"id": "HR-9", "status": "active"}"#));
    let (status, body) = upload(&gw, "field-map", rust_plugin("field_map")).await;
    assert_eq!(status, 201, "{body}");
    gw.create_webhook(json!({"name": "hr-users", "events": ["user.created"], "url": hr.url("/users"),
        "plugin": {"name": "field-map", "config": {
            "request": [{"api_field": "emp_id", "field": "employee_id"}],
            "response": [{"api_field": "id", "field": "hr_id"}, {"api_field": "status", "field": "hr.status"}]}},
        "writeback": {"identify_by": ["employee_id"]}}))
        .await;
    gw.post_event(json!({"type": "user.created", "data": {"employee_id": "E-1", "name": "Ada"}}))
        .await;
    let got = sink.wait_for(1).await;
    let message = got[0].json();
    assert_eq!(message["webhook"], "hr-users");
    assert_eq!(message["source"], "response");
    assert_eq!(message["entity"], "user");
    assert_eq!(message["operation"], "update");
    assert_eq!(message["identifiers"], json!({"employee_id": "E-1"}));
    assert_eq!(
        message["fields"],
        json!({"hr_id": "HR-9", "hr": {"status": "active"}})
    );
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer sink-token")
    );
    // The sink delivery is in the Webhook Log like any other.
    gw.wait_for_status("hookyard-sink", "succeeded", 1).await;
    // The sink's webhook is managed by the config, not the admin API.
    let (status, _) = gw
        .admin("DELETE", "/admin/v1/webhooks/hookyard-sink", None)
        .await;
    assert_eq!(status, 409);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sink_outage_loses_nothing() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    sink.set_default(Reply::status(503));
    let gw = gateway_with_sink(dir.path(), &sink).await;
    gw.create_webhook(json!({"name": "src",
        "inbound": {"auth": {"type": "bearer", "token": "in-token"}, "entity": "user", "identify_by": ["email"]}}))
        .await;
    let auth = [("authorization", "Bearer in-token".to_owned())];
    for i in 0..10 {
        let (status, body) = push(
            &gw,
            "src",
            &auth,
            &format!(r#"{{"email": "u{i}@x.org", "n": {i}}}"#),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    eventually(
        Duration::from_secs(10),
        "the sink refused everything at least once",
        || async { (sink.count() >= 10).then_some(()) },
    )
    .await;
    let refused = sink.count();
    sink.set_default(Reply::status(200));
    gw.wait_for_status("hookyard-sink", "succeeded", 10).await;
    let delivered: Vec<Value> = sink.received()[refused..]
        .iter()
        .map(|r| r.json())
        .collect();
    let mut emails: Vec<String> = delivered
        .iter()
        .map(|m| m["identifiers"]["email"].as_str().unwrap().to_owned())
        .collect();
    emails.sort();
    emails.dedup();
    assert_eq!(
        emails.len(),
        10,
        "every record reached the sink after the outage"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_auth_types_accept_the_right_secret_only() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    let basic = |u: &str, p: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
        )
    };
    type Headers = Vec<(&'static str, String)>;
    let cases: Vec<(&str, Value, Headers, Headers)> = vec![
        (
            "key",
            json!({"type": "api_key", "header": "X-API-Key", "value": "k-1"}),
            vec![("x-api-key", "k-1".into())],
            vec![("x-api-key", "k-2".into())],
        ),
        (
            "bear",
            json!({"type": "bearer", "token": "t-1"}),
            vec![("authorization", "Bearer t-1".into())],
            vec![("authorization", "Bearer t-12".into())],
        ),
        (
            "bas",
            json!({"type": "basic", "username": "u", "password": "p"}),
            vec![("authorization", basic("u", "p"))],
            vec![("authorization", basic("u", "q"))],
        ),
    ];
    for (name, auth, good, bad) in cases {
        let hook = gw
            .create_webhook(json!({"name": name,
                "inbound": {"auth": auth, "entity": "user"}}))
            .await;
        assert_eq!(
            hook["inbound_url"],
            gw.url(&format!("/v1/inbound/{name}")).as_str()
        );
        assert!(
            !hook.to_string().contains("k-1") && !hook.to_string().contains("t-1"),
            "{hook}"
        );
        let (status, body) = push(&gw, name, &good, r#"{"id": 1}"#).await;
        assert_eq!(status, 202, "{name}: {body}");
        let (status, _) = push(&gw, name, &bad, r#"{"id": 1}"#).await;
        assert_eq!(status, 401, "{name} with a wrong secret");
        let (status, _) = push(&gw, name, &[], r#"{"id": 1}"#).await;
        assert_eq!(status, 401, "{name} without a secret");
    }
    // An unknown name gets the answer of a wrong credential (names cannot be enumerated).
    let (status, _) = push(&gw, "nope", &[], "{}").await;
    assert_eq!(status, 401);
    sink.wait_for(3).await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn signed_inbound_pushes_are_verified_and_not_replayable() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    gw.create_webhook(json!({"name": "signed",
        "inbound": {"auth": {"type": "standard_webhooks", "secret": secret, "tolerance_secs": 60}, "entity": "user"}}))
        .await;
    let body = r#"{"id": "u-1", "name": "Ada"}"#;
    let signed = |id: &str, ts: i64, body: &str| {
        let sig = hookyard::delivery::signing::sign(secret, id, ts, body.as_bytes()).unwrap();
        vec![
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sig),
        ]
    };
    let now = hookyard::model::now_ms() / 1000;
    let (status, answer) = push(&gw, "signed", &signed("msg_1", now, body), body).await;
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = push(&gw, "signed", &signed("msg_1", now, body), body).await;
    assert_eq!(status, 409, "a replay is refused: {answer}");
    let (status, _) = push(&gw, "signed", &signed("msg_2", now - 3600, body), body).await;
    assert_eq!(status, 401, "outside the tolerance");
    let (status, _) = push(
        &gw,
        "signed",
        &signed("msg_3", now, body),
        r#"{"id": "u-2"}"#,
    )
    .await;
    assert_eq!(status, 401, "the body does not match the signature");
    let got = sink.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(), 1);
    assert_eq!(got[0].json()["identifiers"], json!({"id": "u-1"}));
    gw.stop().await;
}

/// The caller's credentials (an API key header here) never reach the plugin; other headers do.
#[tokio::test(flavor = "multi_thread")]
async fn inbound_plugin_does_not_see_the_api_key() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    let (status, body) = upload(&gw, "field-map", rust_plugin("field_map")).await;
    assert_eq!(status, 201, "{body}");
    let config = json!({"input": [
        {"api_field": "id", "field": "id", "identifier": true},
        {"api_field": "@header.X-API-Key", "field": "key"},
        {"api_field": "@header.X-Tenant", "field": "tenant"}]});
    gw.create_webhook(json!({"name": "keyed",
        "plugin": {"name": "field-map", "config": config},
        "inbound": {"auth": {"type": "api_key", "header": "X-API-Key", "value": "k-1"}, "entity": "user"}}))
        .await;
    let headers = [
        ("x-api-key", "k-1".to_owned()),
        ("x-tenant", "acme".to_owned()),
    ];
    let (status, body) = push(&gw, "keyed", &headers, r#"{"id": 7}"#).await;
    assert_eq!(status, 202, "{body}");
    let got = sink.wait_for(1).await;
    let fields = &got[0].json()["fields"];
    assert_eq!(fields["tenant"], "acme", "{fields}");
    assert!(
        fields.get("key").is_none(),
        "the API key reached the plugin: {fields}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn field_map_input_with_identifier_update_versus_jit_upsert() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    let (status, body) = upload(&gw, "field-map", rust_plugin("field_map")).await;
    assert_eq!(status, 201, "{body}");
    let config = json!({"input": [
        {"api_field": "work_email", "field": "email", "identifier": true, "convert": "lower"},
        {"api_field": "given_name", "field": "first_name"}]});
    for (name, jit) in [("plain", false), ("jit", true)] {
        gw.create_webhook(json!({"name": name,
            "plugin": {"name": "field-map", "config": config},
            "inbound": {"auth": {"type": "bearer", "token": "t"}, "entity": "user", "jit_provisioning": jit}}))
            .await;
    }
    let auth = [("authorization", "Bearer t".to_owned())];
    let (status, answer) = push(
        &gw,
        "plain",
        &auth,
        r#"{"work_email": "Ada@X.org", "given_name": "Ada"}"#,
    )
    .await;
    assert_eq!(
        (status, answer["operation"].clone()),
        (202, json!("update"))
    );
    let (status, answer) = push(
        &gw,
        "jit",
        &auth,
        r#"{"work_email": "bo@x.org", "given_name": "Bo"}"#,
    )
    .await;
    assert_eq!(
        (status, answer["operation"].clone()),
        (202, json!("upsert"))
    );
    // Missing identifier: 422 naming the field; malformed body: 400. Nothing reaches the sink.
    let (status, answer) = push(&gw, "jit", &auth, r#"{"given_name": "Cy"}"#).await;
    assert_eq!(status, 422, "{answer}");
    assert!(
        answer["error"]["message"]
            .as_str()
            .unwrap()
            .contains("work_email"),
        "{answer}"
    );
    let (status, answer) = push(&gw, "jit", &auth, r#"{"work_email": "#).await;
    assert_eq!(status, 400, "{answer}");
    // Form-encoded bodies are accepted too.
    let (status, answer) = status_json(
        reqwest::Client::new()
            .post(gw.url("/v1/inbound/jit"))
            .bearer_auth("t")
            .header("content-type", "application/x-www-form-urlencoded")
            .body("work_email=Cy%40X.org&given_name=Cy")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 202, "{answer}");

    let got = sink.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(), 3);
    let mut messages: Vec<Value> = got.iter().map(|r| r.json()).collect();
    messages.sort_by_key(|m| m["identifiers"]["email"].as_str().unwrap().to_owned());
    assert_eq!(
        messages
            .iter()
            .map(|m| (
                m["identifiers"]["email"].clone(),
                m["operation"].clone(),
                m["fields"]["first_name"].clone()
            ))
            .collect::<Vec<_>>(),
        vec![
            (json!("ada@x.org"), json!("update"), json!("Ada")),
            (json!("bo@x.org"), json!("upsert"), json!("Bo")),
            (json!("cy@x.org"), json!("upsert"), json!("Cy")),
        ]
    );
    assert!(messages
        .iter()
        .all(|m| m["entity"] == "user" && m["source"] == "inbound"));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn inbound_without_a_plugin_needs_its_identifier_and_a_sink() {
    let dir = temp_dir();
    // No sink: inbound webhooks cannot be enabled.
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"name": "in",
            "inbound": {"auth": {"type": "bearer", "token": "t"}}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "inbound");
    gw.stop().await;

    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    gw.create_webhook(json!({"name": "in",
        "inbound": {"auth": {"type": "bearer", "token": "t"}, "identify_by": ["user.id"]}}))
        .await;
    let auth = [("authorization", "Bearer t".to_owned())];
    let (status, answer) = push(&gw, "in", &auth, r#"[{"user": {"id": 1}}, {"user": {}}]"#).await;
    assert_eq!(status, 422);
    assert_eq!(answer["error"]["field"], "user.id");
    let (status, _) = push(
        &gw,
        "in",
        &auth,
        r#"[{"user": {"id": 1}}, {"user": {"id": 2}}]"#,
    )
    .await;
    assert_eq!(status, 202);
    let got = sink.wait_for(2).await;
    assert_eq!(got[0].json()["entity"], "record");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(), 2, "the rejected batch stored nothing");
    gw.stop().await;
}
