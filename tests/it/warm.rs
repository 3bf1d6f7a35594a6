//! Warm plugin instances end to end, with the `counter` fixture (it counts its calls in a global
//! and names the webhook of its first call): reuse per webhook, fresh instances when a webhook
//! or the plugin asks, discard after a trap (with the guest's output kept to its own call), on a
//! version change, and a hot swap under load that loses nothing.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::plugins::{rust_plugin, upload_ok};

fn counter() -> Vec<u8> {
    rust_plugin("counter")
}

/// The same component with an extra custom section: other bytes, so another version, that
/// behaves the same.
fn counter_variant(tag: &str) -> Vec<u8> {
    let name = b"test-variant";
    let mut section = vec![name.len() as u8];
    section.extend_from_slice(name);
    section.extend_from_slice(tag.as_bytes());
    let mut wasm = counter();
    wasm.push(0);
    assert!(section.len() < 128);
    wasm.push(section.len() as u8);
    wasm.extend_from_slice(&section);
    wasm
}

/// The counter's bodies that reached `path`, in arrival order.
fn bodies(rx: &Receiver, path: &str) -> Vec<Value> {
    rx.received()
        .iter()
        .filter(|r| r.path == path)
        .map(|r| r.json())
        .collect()
}

/// Posts one event and waits until the receiver has `n` requests.
async fn post_and_wait(gw: &TestGateway, rx: &Receiver, data: Value, n: usize) {
    gw.post_event(json!({"type": "t", "data": data})).await;
    rx.wait_for(n).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn instances_are_reused_per_webhook_and_fresh_when_asked() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "counter", counter()).await;
    upload_ok(
        &gw,
        "counter-fresh",
        hookyard::plugin::warm::with_fresh_section(&counter()),
    )
    .await;
    for (name, plugin) in [
        ("w1", json!({"name": "counter"})),
        ("w2", json!({"name": "counter"})),
        ("w3", json!({"name": "counter", "instances": "fresh"})),
        ("w4", json!({"name": "counter-fresh"})),
    ] {
        gw.create_webhook(json!({"name": name, "events": ["t"], "url": rx.url(&format!("/{name}")), "plugin": plugin}))
            .await;
    }
    let (_, hook) = gw.admin("GET", "/admin/v1/webhooks/w3", None).await;
    assert_eq!(hook["plugin"]["instances"], "fresh", "{hook}");

    const EVENTS: usize = 12;
    for i in 0..EVENTS {
        post_and_wait(&gw, &rx, json!({"i": i}), 4 * (i + 1)).await;
    }
    for name in ["w1", "w2"] {
        let got = bodies(&rx, &format!("/{name}"));
        assert_eq!(got.len(), EVENTS);
        let most = got.iter().map(|b| b["calls"].as_u64().unwrap()).max();
        assert!(most > Some(1), "{name}: no instance was reused: {got:?}");
        for body in &got {
            assert_eq!(
                body["first_webhook"], name,
                "shared with another webhook: {body}"
            );
            assert_eq!(
                body["parses"], 1,
                "the config is parsed once per instance: {body}"
            );
        }
    }
    for name in ["w3", "w4"] {
        let got = bodies(&rx, &format!("/{name}"));
        assert_eq!(got.len(), EVENTS);
        assert!(
            got.iter().all(|b| b["calls"] == 1),
            "{name}: fresh instances only: {got:?}"
        );
    }
    // The pool in /metrics: w1 and w2 reused instances (fresh calls are not counted).
    let reused = gw
        .metric("hookyard_plugin_instances_reused_total")
        .await
        .expect("the pool's reuse counter");
    assert!(reused >= 2.0, "{reused} reuses counted");
    assert!(gw
        .metric("hookyard_plugin_instances_created_total")
        .await
        .is_some_and(|n| n >= 2.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_trap_discards_the_instance_and_keeps_its_output_to_itself() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "counter", counter()).await;
    gw.create_webhook(json!({"name": "w", "events": ["t"], "url": rx.url("/"),
        "plugin": {"name": "counter", "on_error": "dead_letter"}}))
        .await;
    post_and_wait(&gw, &rx, json!({"do": "print"}), 1).await;
    post_and_wait(&gw, &rx, json!({}), 2).await;
    assert_eq!(bodies(&rx, "/")[1]["calls"], 2);

    gw.post_event(json!({"type": "t", "data": {"do": "trap"}}))
        .await;
    let dead = gw.wait_for_status("w", "dead", 1).await;
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    let error = detail["attempts"][0]["error"].as_str().unwrap();
    assert!(error.contains("asked to trap on call 3"), "{error}");
    assert!(
        !error.contains("printed"),
        "an earlier call's output leaked: {error}"
    );

    post_and_wait(&gw, &rx, json!({}), 3).await;
    assert_eq!(
        bodies(&rx, "/")[2]["calls"],
        1,
        "a new instance after the trap"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_change_discards_the_instances() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "counter", counter()).await;
    gw.create_webhook(
        json!({"name": "w", "events": ["t"], "url": rx.url("/"), "plugin": {"name": "counter"}}),
    )
    .await;
    for n in 1..=3 {
        post_and_wait(&gw, &rx, json!({}), n).await;
    }
    let calls = |i: usize| bodies(&rx, "/")[i]["calls"].as_u64().unwrap();
    assert_eq!(calls(2), 3);

    assert_eq!(upload_ok(&gw, "counter", counter_variant("2")).await, 2);
    post_and_wait(&gw, &rx, json!({}), 4).await;
    post_and_wait(&gw, &rx, json!({}), 5).await;
    assert_eq!(
        (calls(3), calls(4)),
        (1, 2),
        "version 2 has its own instances"
    );

    // Back to version 1: its instance was dropped at the swap, so it starts over too.
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/plugins/counter/activate",
            Some(json!({"version": 1})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    post_and_wait(&gw, &rx, json!({}), 6).await;
    assert_eq!(calls(5), 1);

    // A changed config reaches the warm instance, which parses it again.
    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/v1/webhooks/w",
            Some(json!({"name": "w", "events": ["t"], "url": rx.url("/"), "plugin": {"name": "counter", "config": {"changed": true}}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    post_and_wait(&gw, &rx, json!({}), 7).await;
    let last = &bodies(&rx, "/")[6];
    assert_eq!(
        (&last["calls"], &last["parses"]),
        (&json!(2), &json!(2)),
        "{last}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hot_swap_under_load_loses_nothing() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "counter", counter()).await;
    gw.create_webhook(
        json!({"name": "w", "events": ["t"], "url": rx.url("/"), "plugin": {"name": "counter"}}),
    )
    .await;
    // The poster keeps going until it has posted 100 events after the last swap.
    let after = Arc::new(AtomicUsize::new(usize::MAX));
    let poster = {
        let url = gw.url("/v1/events");
        let after = after.clone();
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut i = 0;
            while i < after.load(Ordering::SeqCst).saturating_add(100) {
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
    rx.wait_for(30).await;
    for (n, tag) in ["2", "3"].into_iter().enumerate() {
        assert_eq!(
            upload_ok(&gw, "counter", counter_variant(tag)).await,
            n as u64 + 2
        );
        rx.wait_for(30 * (n + 2)).await;
    }
    after.store(gw.deliveries("webhook=w").await.len(), Ordering::SeqCst);
    let total = poster.await.unwrap();
    let got = rx.wait_for(total).await;
    gw.wait_for_status("w", "succeeded", total).await;
    let ids: HashSet<String> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), total, "every delivery arrived");
    assert_eq!(got.len(), total, "no duplicates");
    assert!(gw.deliveries("webhook=w&status=dead").await.is_empty());
    // Three versions served: each started its own instances (a count of 1 at least three times).
    let starts = got.iter().filter(|r| r.json()["calls"] == 1).count();
    assert!(starts >= 3, "{starts} instance starts");
    gw.stop().await;
}
