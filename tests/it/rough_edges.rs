//! The rough edges of issue #20, each reproduced on the gateway before its fix: empty inbound
//! identifiers, plugin `invalid-input` retried for hours, inbound pushes answered before the
//! sink was asked, API edits of config-declared webhooks undone at restart, array pushes that
//! did not name the failing item, replayed deliveries miscounting their attempts, `check-config`
//! missing files, webhook titles, and inbound-only webhooks.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::cli::hookyard;
use crate::common::*;
use crate::plugins::{rust_plugin, upload_ok};

/// A gateway whose sink is `sink`.
async fn gateway_with_sink(dir: &Path, sink: &Receiver) -> TestGateway {
    let mut config = test_config(dir);
    config.sink.url = sink.url("/hookyard");
    TestGateway::start(config).await
}

/// Pushes `body` to `/v1/inbound/{name}` with `Authorization: Bearer t`.
async fn push(gw: &TestGateway, name: &str, body: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(gw.url(&format!("/v1/inbound/{name}")))
        .bearer_auth("t")
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    (status.as_u16(), body)
}

fn message(body: &Value) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// An inbound-only webhook (no events, no url) with field-map's input table and `inbound`.
fn inbound_hook(name: &str, inbound: Value) -> Value {
    let mut inbound = inbound;
    inbound["auth"] = json!({"type": "bearer", "token": "t"});
    json!({"name": name, "inbound": inbound, "plugin": {"name": "field-map", "config": {"input": [
        {"api_field": "emp_id", "field": "employee_id", "identifier": true},
        {"api_field": "age", "field": "age", "convert": "integer"}]}}})
}

#[tokio::test(flavor = "multi_thread")]
async fn empty_identifiers_are_refused_like_null_and_array_errors_name_the_item() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    upload_ok(&gw, "field-map", rust_plugin("field_map")).await;
    gw.create_webhook(inbound_hook(
        "hr",
        json!({"entity": "user", "jit_provisioning": true}),
    ))
    .await;
    gw.create_webhook(
        json!({"name": "plain", "inbound": {"auth": {"type": "bearer", "token": "t"},
        "identify_by": ["emp_id"], "jit_provisioning": true}}),
    )
    .await;

    for name in ["hr", "plain"] {
        for body in [
            r#"{"emp_id": ""}"#,
            r#"{"emp_id": "  "}"#,
            r#"{"emp_id": null}"#,
        ] {
            let (status, answer) = push(&gw, name, body).await;
            assert_eq!(status, 422, "{name} {body}: {answer}");
            assert!(message(&answer).contains("emp_id"), "{name}: {answer}");
        }
    }
    // Arrays: the failing item is named besides the field (item 1, not only row 0).
    let (status, answer) = push(&gw, "hr", r#"[{"emp_id": "E1"}, {"emp_id": ""}]"#).await;
    assert_eq!(status, 422, "{answer}");
    let text = message(&answer);
    assert!(
        text.contains("item 1") && text.contains("row 0"),
        "{answer}"
    );
    let (status, answer) = push(
        &gw,
        "hr",
        r#"[{"emp_id": "E1"}, {"emp_id": "E2"}, {"emp_id": "E3", "age": "old"}]"#,
    )
    .await;
    assert_eq!(status, 422, "{answer}");
    assert!(message(&answer).contains("item 2"), "{answer}");
    let (status, answer) = push(&gw, "plain", r#"[{"emp_id": "E1"}, {"emp_id": ""}]"#).await;
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["error"]["field"], "emp_id");
    assert!(message(&answer).contains("item 1"), "{answer}");

    // Nothing refused reached the sink; a good push still does.
    let (status, answer) = push(&gw, "hr", r#"{"emp_id": "E9"}"#).await;
    assert_eq!(status, 202, "{answer}");
    let got = sink.wait_for(1).await;
    assert_eq!(got[0].json()["identifiers"], json!({"employee_id": "E9"}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(sink.count(), 1, "the refused pushes stored nothing");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_input_goes_dead_at_once_and_traps_keep_following_on_error() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "field-map", rust_plugin("field_map")).await;
    upload_ok(&gw, "trap", rust_plugin("trap")).await;
    gw.create_webhook(
        json!({"name": "mapped", "events": ["user.created"], "url": rx.url("/m"),
        "plugin": {"name": "field-map", "config": {"request": [
            {"api_field": "emp_id", "field": "employee_id", "required": true}]}}}),
    )
    .await;
    gw.create_webhook(
        json!({"name": "trapping", "events": ["user.created"], "url": rx.url("/t"),
        "retry": {"max_attempts": 3}, "plugin": {"name": "trap"}}),
    )
    .await;

    // A required field missing: the plugin reports invalid input. On the default on_error
    // (retry) it used to be retried for ~1.5 hours; now it is dead after one attempt.
    gw.post_event(json!({"type": "user.created", "data": {"misbehave": true, "name": "Ada"}}))
        .await;
    let dead = gw.wait_for_status("mapped", "dead", 1).await;
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{detail}");
    let error = attempts[0]["error"].as_str().unwrap();
    assert!(
        error.contains("invalid input") && error.contains("emp_id"),
        "{error}"
    );

    // A trap may be transient: it follows on_error (retry) until max_attempts.
    let dead = gw.wait_for_status("trapping", "dead", 1).await;
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    let outcomes: Vec<&str> = detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["retry", "retry", "dead"], "{detail}");

    // Dead, not lost: once the data is fixed upstream... or here, the mapping, a replay sends it.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/mapped",
            Some(json!({"plugin": {"config": {"request": [
            {"api_field": "emp_id", "field": "employee_id"}]}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw
        .admin("POST", "/admin/v1/webhooks/mapped/replay", None)
        .await;
    assert_eq!((status.as_u16(), body["replayed"].clone()), (202, json!(1)));
    gw.wait_for_status("mapped", "succeeded", 1).await;
    assert_eq!(rx.received().iter().filter(|r| r.path == "/m").count(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sync_inbound_answers_with_the_sinks_verdict() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    upload_ok(&gw, "field-map", rust_plugin("field_map")).await;
    gw.create_webhook(inbound_hook(
        "sync",
        json!({"entity": "user", "mode": "sync", "sync_timeout_ms": 5000}),
    ))
    .await;
    gw.create_webhook(inbound_hook("async", json!({"entity": "user"})))
        .await;

    // Without JIT an unknown record is the sink's 404: the third party hears it.
    sink.script([
        Reply::status(404).body(r#"{"error": "no such user E1"}"#),
        Reply::status(201).body(r#"{"id": "U-2"}"#),
        Reply::status(200).body("plain text"),
    ]);
    let (status, answer) = push(&gw, "sync", r#"{"emp_id": "E1"}"#).await;
    assert_eq!(
        (status, answer.clone()),
        (404, json!({"error": "no such user E1"}))
    );
    let (status, answer) = push(&gw, "sync", r#"{"emp_id": "E2"}"#).await;
    assert_eq!((status, answer.clone()), (201, json!({"id": "U-2"})));
    let (status, answer) = push(&gw, "sync", r#"{"emp_id": "E3"}"#).await;
    assert_eq!(status, 200, "{answer}");

    // The default mode answers 202 before the sink is asked, whatever it then says.
    sink.script([Reply::status(404)]);
    let (status, answer) = push(&gw, "async", r#"{"emp_id": "E4"}"#).await;
    assert_eq!(status, 202, "{answer}");
    gw.wait_for_status("hookyard-sink", "dead", 2).await;

    // A sink slower than the timeout: 504, and the record is still delivered.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/sync",
            Some(json!({"inbound": {"sync_timeout_ms": 200}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    sink.script([Reply::status(200).delay(Duration::from_millis(1500))]);
    let before = sink.count();
    let (status, answer) = push(&gw, "sync", r#"{"emp_id": "E5"}"#).await;
    assert_eq!(status, 504, "{answer}");
    assert_eq!(answer["error"]["code"], "sink_timeout");
    let got = sink.wait_for(before + 1).await;
    assert_eq!(
        got[before].json()["identifiers"],
        json!({"employee_id": "E5"})
    );
    gw.wait_for_status("hookyard-sink", "succeeded", 3).await;

    // A push of several records: each record's answer is reported, and the status is the
    // first refusal's.
    let (status, _) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/sync",
            Some(json!({"inbound": {"sync_timeout_ms": 5000}})),
        )
        .await;
    assert_eq!(status, 200);
    sink.script([
        Reply::status(200).body(r#"{"ok": 1}"#),
        Reply::status(409).body(r#"{"error": "conflict"}"#),
    ]);
    let (status, answer) = push(&gw, "sync", r#"[{"emp_id": "E6"}, {"emp_id": "E7"}]"#).await;
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["results"].as_array().unwrap().len(), 2, "{answer}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn config_declared_webhooks_are_read_only_unless_the_file_is_a_seed() {
    let dir = temp_dir();
    let rx = Receiver::start().await;
    let declared = |description: &str| -> hookyard::model::WebhookSpec {
        serde_json::from_value(json!({"name": "declared", "title": "Declared Webhook",
            "description": description, "events": ["t"], "url": rx.url("/")}))
        .unwrap()
    };
    let mut config = test_config(dir.path());
    config.webhooks = vec![declared("from the file")];
    config.file = Some("/etc/hookyard/hookyard.toml".into());
    let gw = TestGateway::start(config.clone()).await;

    let (status, shown) = gw.admin("GET", "/admin/v1/webhooks/declared", None).await;
    assert_eq!(status, 200);
    assert_eq!(shown["managed_by_config"], "/etc/hookyard/hookyard.toml");
    assert_eq!(shown["title"], "Declared Webhook");
    let edits = [
        ("PATCH", Some(json!({"description": "edited"}))),
        ("PUT", Some(shown.clone())),
        ("DELETE", None),
    ];
    for (method, body) in edits {
        let (status, answer) = gw.admin(method, "/admin/v1/webhooks/declared", body).await;
        assert_error(status, &answer, 409, "managed_by_config");
        assert!(
            message(&answer).contains("/etc/hookyard/hookyard.toml"),
            "{method}: {answer}"
        );
    }
    // Replaying its deliveries is not an edit.
    rx.set_default(Reply::status(400));
    gw.post_event(json!({"type": "t", "data": {}})).await;
    gw.wait_for_status("declared", "dead", 1).await;
    rx.set_default(Reply::status(200));
    let (status, body) = gw
        .admin("POST", "/admin/v1/webhooks/declared/replay", None)
        .await;
    assert_eq!((status.as_u16(), body["replayed"].clone()), (202, json!(1)));
    gw.wait_for_status("declared", "succeeded", 1).await;
    // A webhook created through the API stays editable.
    gw.create_webhook(json!({"name": "api-made", "events": ["t"], "url": rx.url("/")}))
        .await;
    let (status, _) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/api-made",
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(status, 200);
    gw.stop().await;

    // As a seed: the webhook exists, so the file does not touch it; API edits persist.
    config.webhooks_from_config = hookyard::config::WebhooksFromConfig::Seed;
    config.webhooks = vec![declared("the seed, changed in the file")];
    let gw = TestGateway::start(config.clone()).await;
    let (_, shown) = gw.admin("GET", "/admin/v1/webhooks/declared", None).await;
    assert_eq!(shown["description"], "from the file");
    assert!(shown.get("managed_by_config").is_none(), "{shown}");
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/declared",
            Some(json!({"description": "edited through the API", "title": "Renamed"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
    let gw = TestGateway::start(config).await;
    let (_, shown) = gw.admin("GET", "/admin/v1/webhooks/declared", None).await;
    assert_eq!(shown["description"], "edited through the API");
    assert_eq!(shown["title"], "Renamed");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replayed_delivery_counts_every_attempt_it_holds() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(400));
    gw.create_webhook(json!({"name": "h", "events": ["t"], "url": rx.url("/")}))
        .await;
    gw.post_event(json!({"type": "t", "data": {}})).await;
    let dead = gw.wait_for_status("h", "dead", 1).await;
    let id = dead[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(dead[0]["attempts"], 1);
    rx.set_default(Reply::status(200));
    let (status, replayed) = gw
        .admin("POST", &format!("/admin/v1/deliveries/{id}/replay"), None)
        .await;
    assert_eq!(status, 202, "{replayed}");
    assert_eq!(
        (
            replayed["attempts"].clone(),
            replayed["attempts_since_replay"].clone()
        ),
        (json!(1), json!(0))
    );
    let done = gw.wait_for_status("h", "succeeded", 1).await;
    assert_eq!(
        (
            done[0]["attempts"].clone(),
            done[0]["attempts_since_replay"].clone()
        ),
        (json!(2), json!(1)),
        "{}",
        done[0]
    );
    let detail = gw.delivery(&id).await;
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 2, "{detail}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn titles_and_inbound_only_webhooks() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = gateway_with_sink(dir.path(), &sink).await;
    // The seed's "Audit Service Webhook": the name stays a slug, the title is free.
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"name": "Audit Service Webhook", "events": ["*"], "url": "http://127.0.0.1:9/"})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert!(message(&body).contains("title"), "{body}");
    let hook = gw
        .create_webhook(
            json!({"name": "audit-service", "title": "Audit Service Webhook",
            "events": ["*"], "url": "http://127.0.0.1:9/"}),
        )
        .await;
    assert_eq!(hook["title"], "Audit Service Webhook");
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/audit-service",
            Some(json!({"title": "Audit (EU)"})),
        )
        .await;
    assert_eq!(
        (status.as_u16(), body["title"].clone()),
        (200, json!("Audit (EU)"))
    );

    // Inbound only: no invented event or URL.
    let hook = gw
        .create_webhook(
            json!({"name": "pushes", "inbound": {"auth": {"type": "bearer", "token": "t"}}}),
        )
        .await;
    assert!(hook.get("url").is_none(), "{hook}");
    assert_eq!(hook["events"], json!([]));
    let (status, answer) = push(&gw, "pushes", r#"{"id": 7}"#).await;
    assert_eq!(status, 202, "{answer}");
    sink.wait_for(1).await;
    // What a GET shows can be PUT back.
    let (_, shown) = gw.admin("GET", "/admin/v1/webhooks/pushes", None).await;
    let (status, body) = gw
        .admin("PUT", "/admin/v1/webhooks/pushes", Some(shown))
        .await;
    assert_eq!(status, 200, "{body}");
    // Neither inbound nor somewhere to deliver: nothing to do, refused.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/pushes",
            Some(json!({"inbound": {"enabled": false}})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "events");
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"name": "nothing"})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"name": "half", "url": "http://127.0.0.1:9/",
                "inbound": {"auth": {"type": "bearer", "token": "t"}}})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "events");
    gw.stop().await;
}

#[test]
fn check_config_checks_every_file_it_names() {
    let dir = temp_dir();
    let component = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/target/wasm32-wasip2/release/field_map.wasm");
    let base = format!(
        r#"
[store]
url = "sqlite://data/hookyard.db"

[[plugins.load]]
name = "field-map"
path = "{}"
"#,
        component.display()
    );
    let file = dir.path().join("good.toml");
    std::fs::write(&file, &base).unwrap();
    let out = hookyard(dir.path())
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("config ok"));
    assert!(
        !dir.path().join("data").exists(),
        "checking opened nothing (no database, no key file)"
    );

    // A missing plugin, a core module that is no component, missing TLS files and key file:
    // every one reported, and the check fails.
    let module = dir.path().join("module.wasm");
    std::fs::write(&module, [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]).unwrap();
    let bad = format!(
        r#"
[server]
tls_cert = "missing-cert.pem"
tls_key = "missing-key.pem"

[store]
url = "sqlite://data/hookyard.db"
secret_key_file = "missing.key"

[[plugins.load]]
name = "gone"
path = "no-such-plugin.wasm"

[[plugins.load]]
name = "core"
path = "{}"

[[webhooks]]
name = "pushes"
inbound = {{ auth = {{ type = "bearer", token = "t" }} }}
"#,
        module.display()
    );
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, bad).unwrap();
    let out = hookyard(dir.path())
        .args(["check-config", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "plugins.load[0] (gone) path no-such-plugin.wasm",
        "plugins.load[1] (core)",
        "not a component",
        "server.tls_cert missing-cert.pem",
        "server.tls_key missing-key.pem",
        "store.secret_key_file missing.key",
        "webhooks[0] (pushes): inbound webhooks need a sink",
    ] {
        assert!(stderr.contains(expected), "{expected:?} in:\n{stderr}");
    }
    assert!(!stdout_ok(&out.stdout), "{stderr}");
}

fn stdout_ok(stdout: &[u8]) -> bool {
    String::from_utf8_lossy(stdout).contains("config ok")
}
