//! Plugins end to end, with the real components built from `plugins/` and `examples/` (by
//! `scripts/test.sh`): field-map, broken plugins that trap, loop or hog memory, hot swap under
//! load, rollback, restart without recompiling, and the Python and JavaScript plugins.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

/// Bytes of a built component; panics with the build command when it is missing.
pub fn component(path: &str) -> Vec<u8> {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read(&full).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Build the plugins first: bash scripts/build-plugins.sh (scripts/test.sh does)",
            full.display()
        )
    })
}

/// A Rust plugin from `plugins/`.
pub fn rust_plugin(name: &str) -> Vec<u8> {
    component(&format!("plugins/target/wasm32-wasip2/release/{name}.wasm"))
}

/// Uploads a plugin; returns the status and body.
pub async fn upload(gw: &Api, name: &str, wasm: Vec<u8>) -> (u16, Value) {
    let r = reqwest::Client::new()
        .put(gw.admin_url(&format!("/admin/v1/plugins/{name}")))
        .bearer_auth(ADMIN_TOKEN)
        .body(wasm)
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    (status.as_u16(), body)
}

pub async fn upload_ok(gw: &Api, name: &str, wasm: Vec<u8>) -> u64 {
    let (status, body) = upload(gw, name, wasm).await;
    assert_eq!(status, 201, "{body}");
    body["version"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn field_map_shapes_the_body_and_its_config_is_validated() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    assert_eq!(
        upload_ok(&gw, "field-map", rust_plugin("field_map")).await,
        1
    );
    // The same bytes again are the same version.
    assert_eq!(
        upload_ok(&gw, "field-map", rust_plugin("field_map")).await,
        1
    );

    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"name": "bad", "events": ["*"], "url": rx.url("/"),
                "plugin": {"name": "field-map", "config": {"request": [{"api_field": "x", "field": "y", "convert": "uppper"}]}}})),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "plugin");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("request[0]") && message.contains("uppper"),
        "{message}"
    );

    gw.create_webhook(
        json!({"name": "hr", "events": ["user.*"], "url": rx.url("/users"),
        "plugin": {"name": "field-map", "config": {"request": [
            {"api_field": "emp_id", "field": "employee_id"},
            {"api_field": "contact.email", "field": "email", "convert": "lower"},
            {"api_field": "event", "field": "@type", "convert": "upper_snake"},
            {"api_field": "source", "value": "hookyard"}
        ]}}}),
    )
    .await;
    gw.post_event(json!({"type": "user.created", "data": {"employee_id": 7, "email": "Ada@X.org", "secret": "not mapped"}}))
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].json(),
        json!({"emp_id": 7, "contact": {"email": "ada@x.org"}, "event": "USER_CREATED", "source": "hookyard"})
    );
    assert!(
        got[0].header("webhook-signature").is_some(),
        "plugin output is still signed"
    );
    let (_, plugins) = gw.admin("GET", "/admin/v1/plugins/field-map", None).await;
    assert_eq!(plugins["active"], 1);
    assert_eq!(plugins["versions"][0]["sha256"].as_str().unwrap().len(), 64);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_validated() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (status, body) = upload(&gw, "junk", b"definitely not wasm".to_vec()).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not a WebAssembly component"));
    let (status, body) = upload(&gw, "always-trap", rust_plugin("always_trap")).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("smoke call"),
        "{body}"
    );
    let (_, list) = gw.admin("GET", "/admin/v1/plugins", None).await;
    assert_eq!(list["items"], json!([]), "rejected uploads are not stored");

    // A plugin whose validate-config refuses everything can be stored, but no webhook can use it.
    upload_ok(&gw, "bad-config", rust_plugin("bad_config")).await;
    let (status, body) = gw
        .admin("POST", "/admin/v1/webhooks", Some(json!({"name": "w", "events": ["*"], "url": "http://127.0.0.1:9/", "plugin": {"name": "bad-config"}})))
        .await;
    assert_eq!(status, 422);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("rejects every config"),
        "{body}"
    );
    let (status, _) = gw
        .admin("POST", "/admin/v1/webhooks", Some(json!({"name": "w", "events": ["*"], "url": "http://127.0.0.1:9/", "plugin": {"name": "nope"}})))
        .await;
    assert_eq!(status, 422);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn broken_plugins_fail_their_call_and_everything_else_flows() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let healthy = Receiver::start().await;
    for (name, file) in [
        ("trap", "trap"),
        ("loop", "endless_loop"),
        ("hog", "memory_hog"),
    ] {
        upload_ok(&gw, name, rust_plugin(file)).await;
        gw.create_webhook(json!({"name": format!("wh-{name}"), "events": ["t"], "url": rx.url(&format!("/{name}")),
            "plugin": {"name": name, "on_error": "dead_letter"}}))
            .await;
    }
    gw.create_webhook(json!({"name": "healthy", "events": ["t"], "url": healthy.url("/")}))
        .await;

    for i in 0..3 {
        gw.post_event(json!({"type": "t", "data": {"misbehave": true, "i": i}}))
            .await;
    }
    // The healthy webhook gets its three while the plugins fail.
    healthy.wait_for(3).await;
    for (name, reason) in [
        ("trap", "trapped"),
        ("loop", "time limit"),
        ("hog", "memory limit"),
    ] {
        let dead = gw.wait_for_status(&format!("wh-{name}"), "dead", 3).await;
        let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
        let error = detail["attempts"][0]["error"].as_str().unwrap();
        assert!(error.contains(reason), "{name}: {error}");
        if name == "trap" {
            // The guest's panic message (its stderr) is in the Webhook Log, not only "trapped".
            assert!(
                error.contains("trap fixture: outgoing traps on purpose"),
                "{error}"
            );
        }
        assert_eq!(
            detail["attempts"].as_array().unwrap().len(),
            1,
            "dead_letter does not retry"
        );
    }
    assert_eq!(rx.count(), 0, "nothing was sent for the failed calls");

    // The same plugins serve the events they can handle, and the gateway is healthy.
    gw.post_event(json!({"type": "t", "data": {"ok": true}}))
        .await;
    for name in ["trap", "loop", "hog"] {
        gw.wait_for_status(&format!("wh-{name}"), "succeeded", 1)
            .await;
    }
    healthy.wait_for(4).await;
    let health = reqwest::get(gw.url("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    let metrics = gw.metrics().await;
    for outcome in ["trap", "timeout", "memory"] {
        let line = format!(
            "hookyard_plugin_calls_total{{plugin=\"{name}\",version=\"1\",outcome=\"{outcome}\"}} 3",
            name = match outcome {
                "trap" => "trap",
                "timeout" => "loop",
                _ => "hog",
            }
        );
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn failure_policies_retry_and_skip() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "trap", rust_plugin("trap")).await;
    gw.create_webhook(json!({"name": "retrying", "events": ["t"], "url": rx.url("/"), "retry": {"max_attempts": 3},
        "plugin": {"name": "trap"}}))
        .await;
    gw.create_webhook(
        json!({"name": "skipping", "events": ["t"], "url": rx.url("/"),
        "plugin": {"name": "trap", "on_error": "skip"}}),
    )
    .await;
    gw.post_event(json!({"type": "t", "data": {"misbehave": true}}))
        .await;
    let dead = gw.wait_for_status("retrying", "dead", 1).await;
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    assert_eq!(
        detail["attempts"].as_array().unwrap().len(),
        3,
        "retry policy retries up to max_attempts"
    );
    gw.wait_for_status("skipping", "skipped", 1).await;
    assert_eq!(rx.count(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_swap_under_load_loses_nothing_and_rolls_back() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "stamp", rust_plugin("version_a")).await;
    gw.create_webhook(json!({"name": "stamped", "events": ["t"], "url": rx.url("/"), "plugin": {"name": "stamp"}})).await;

    // Events flow continuously, before, during and after the swap: the poster keeps going until
    // it has posted 150 events after the new version became active.
    let swapped = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let poster = {
        let url = gw.url("/v1/events");
        let swapped = swapped.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while i < swapped
                .load(std::sync::atomic::Ordering::SeqCst)
                .saturating_add(150)
            {
                let r = http
                    .post(&url)
                    .bearer_auth(INGEST_TOKEN)
                    .json(&json!({"id": format!("e{i}"), "type": "t", "data": {"i": i}}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
                i += 1;
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            i
        })
    };
    rx.wait_for(50).await;
    assert_eq!(upload_ok(&gw, "stamp", rust_plugin("version_b")).await, 2);
    // Events posted from now on are delivered after the swap.
    let first_after = {
        let posted = gw.deliveries("webhook=stamped").await.len();
        swapped.store(posted, std::sync::atomic::Ordering::SeqCst);
        posted
    };
    let total = poster.await.unwrap();
    let got = rx.wait_for(total).await;
    gw.wait_for_status("stamped", "succeeded", total).await;
    assert!(gw
        .deliveries("webhook=stamped&status=dead")
        .await
        .is_empty());
    let ids: HashSet<String> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), total, "every delivery arrived exactly once");
    assert_eq!(got.len(), total, "no duplicates");
    // By event: every event posted after the swap got version b; the first ones got a.
    let version_of = |i: usize| -> String {
        let r = got.iter().find(|r| r.json()["data"]["i"] == i).unwrap();
        r.json()["plugin_version"].as_str().unwrap().to_owned()
    };
    assert_eq!(version_of(0), "a");
    for i in first_after..total {
        assert_eq!(
            version_of(i),
            "b",
            "event {i} of {total} was posted after the swap"
        );
    }

    // Rollback is instant and affects the next delivery.
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/plugins/stamp/activate",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    gw.post_event(json!({"type": "t", "data": {}})).await;
    let got = rx.wait_for(total + 1).await;
    assert_eq!(got[total].json()["plugin_version"], "a");
    assert!(got[total].json()["data"]["i"].is_null());
    let (status, _) = gw
        .admin(
            "POST",
            "/admin/v1/plugins/stamp/activate",
            Some(json!({"version": 9})),
        )
        .await;
    assert_eq!(status, 404);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_active_versions_without_recompiling() {
    let dir = temp_dir();
    let config = test_config(dir.path());
    let gw = TestGateway::start(config.clone()).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "stamp", rust_plugin("version_a")).await;
    upload_ok(&gw, "stamp", rust_plugin("version_b")).await;
    let (status, _) = gw
        .admin(
            "POST",
            "/admin/v1/plugins/stamp/activate",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 200);
    // A webhook pinned to version 2 keeps it whatever is active.
    gw.create_webhook(json!({"name": "follows", "events": ["t"], "url": rx.url("/follows"), "plugin": {"name": "stamp"}})).await;
    gw.create_webhook(json!({"name": "pinned", "events": ["t"], "url": rx.url("/pinned"), "plugin": {"name": "stamp", "version": 2}})).await;
    assert!(gw
        .metrics()
        .await
        .contains("hookyard_plugin_compilations_total 2"));
    gw.stop().await;

    let gw = TestGateway::start(config).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("hookyard_plugin_compilations_total 0"),
        "a restart must not recompile:\n{metrics}"
    );
    gw.post_event(json!({"type": "t", "data": {}})).await;
    let got = rx.wait_for(2).await;
    for r in &got {
        let expected = if r.path == "/follows" { "a" } else { "b" };
        assert_eq!(r.json()["plugin_version"], expected, "{}", r.path);
    }
    let (_, record) = gw.admin("GET", "/admin/v1/plugins/stamp", None).await;
    assert_eq!(record["active"], 1);
    assert_eq!(record["versions"].as_array().unwrap().len(), 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_and_javascript_plugins_deliver() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    for (name, path) in [
        ("python", "examples/plugins-python/out/plugin.wasm"),
        ("javascript", "examples/plugins-js/out/plugin.wasm"),
    ] {
        upload_ok(&gw, name, component(path)).await;
        gw.create_webhook(json!({"name": format!("via-{name}"), "events": ["user.created"], "url": rx.url(&format!("/{name}")),
            "plugin": {"name": name}}))
            .await;
    }
    gw.post_event(json!({"type": "user.created", "data": {"username": "jdoe"}}))
        .await;
    let got = rx.wait_for(2).await;
    for r in &got {
        let language = r.path.trim_start_matches('/');
        assert_eq!(
            r.json(),
            json!({"event": "user.created", "user": "jdoe", "source": language}),
            "{language}"
        );
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_check_runs_a_component_locally() {
    let dir = temp_dir();
    let event = dir.path().join("event.json");
    let config = dir.path().join("config.json");
    std::fs::write(
        &event,
        r#"{"type": "user.created", "data": {"employee_id": 7}}"#,
    )
    .unwrap();
    std::fs::write(
        &config,
        r#"{"request": [{"api_field": "emp_id", "field": "employee_id"}]}"#,
    )
    .unwrap();
    let wasm =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins/target/wasm32-wasip2/release");
    let out = std::process::Command::new(binary())
        .env("HOOKYARD_CACHE_DIR", dir.path().join("cache"))
        .args(["plugin", "check"])
        .arg(wasm.join("field_map.wasm"))
        .arg("--event")
        .arg(&event)
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("validate-config: ok"), "{stdout}");
    // The exact bytes the gateway would send, not a re-formatted copy.
    assert!(stdout.contains("\n{\"emp_id\":7}\n"), "{stdout}");
    assert!(
        stdout.contains("time:") && stdout.contains("KiB peak"),
        "{stdout}"
    );

    let out = std::process::Command::new(binary())
        .env("HOOKYARD_CACHE_DIR", dir.path().join("cache"))
        .args(["plugin", "check"])
        .arg(wasm.join("always_trap.wasm"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success());
    assert!(stdout.contains("trapped"), "{stdout}");
    // The panic message the guest wrote to stderr is shown.
    assert!(stdout.contains("always-trap fixture"), "{stdout}");
}
