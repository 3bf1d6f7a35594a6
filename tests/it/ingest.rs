//! Event ingest: idempotency, batches, subscription globs, disabled webhooks.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn repeated_event_id_is_not_enqueued_again() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "idem", "events": ["user.*"], "url": rx.url("/")}))
        .await;
    let event = json!({"id": "evt-idem-1", "type": "user.created", "data": {"n": 1}});
    let (status, first) = gw.post_event(event.clone()).await;
    assert_eq!(status, 202, "{first}");
    assert_eq!(first["id"], "evt-idem-1");
    assert_eq!(first["deliveries"], 1);
    assert_eq!(first["duplicate"], false);

    let (status, second) = gw.post_event(event).await;
    assert_eq!(status, 202, "{second}");
    assert_eq!(second["id"], "evt-idem-1");
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["deliveries"], 1, "answered like the first time");

    // The same id with another body is still the same event.
    let (_, third) = gw
        .post_event(json!({"id": "evt-idem-1", "type": "user.deleted", "data": {"n": 2}}))
        .await;
    assert_eq!(third["duplicate"], true);

    rx.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 1, "a duplicate reached the receiver");
    assert_eq!(rx.received()[0].json()["data"], json!({"n": 1}));
    assert_eq!(gw.deliveries("webhook=idem").await.len(), 1);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_of_fifty_is_accepted_and_delivered() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "bulk", "events": ["*"], "url": rx.url("/")}))
        .await;
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"id": format!("bulk-{i}"), "type": "user.created", "data": {"i": i}}))
        .collect();
    let (status, body) = gw.post_batch(json!(batch)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 50);
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 50);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["id"], format!("bulk-{i}"));
        assert_eq!(e["deliveries"], 1);
        assert_eq!(e["duplicate"], false);
    }
    let got = rx.wait_for(50).await;
    let seen: HashSet<i64> = got
        .iter()
        .map(|r| r.json()["data"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(seen, (0..50).collect::<HashSet<_>>());
    gw.wait_for_status("bulk", "succeeded", 50).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 50);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_with_a_repeated_id_enqueues_it_once() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "rep", "events": ["*"], "url": rx.url("/")}))
        .await;
    let (status, body) = gw
        .post_batch(json!([
            {"id": "a", "type": "t", "data": 1},
            {"id": "b", "type": "t", "data": 2},
            {"id": "a", "type": "t", "data": 3},
        ]))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 2);
    let events = body["events"].as_array().unwrap();
    assert_eq!(events.len(), 3);
    assert_eq!(events[0]["duplicate"], false);
    assert_eq!(events[1]["duplicate"], false);
    assert_eq!(events[2]["id"], "a");
    assert_eq!(events[2]["duplicate"], true);
    rx.wait_for(2).await;
    gw.wait_for_status("rep", "succeeded", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(rx.count(), 2);
    let mut data: Vec<i64> = rx
        .received()
        .iter()
        .map(|r| r.json()["data"].as_i64().unwrap())
        .collect();
    data.sort();
    assert_eq!(data, vec![1, 2], "the first of the repeated ids wins");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn globs_select_the_subscribed_webhooks() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (users, all, exact) = (
        Receiver::start().await,
        Receiver::start().await,
        Receiver::start().await,
    );
    gw.create_webhook(json!({"name": "users", "events": ["user.*"], "url": users.url("/")}))
        .await;
    gw.create_webhook(json!({"name": "all", "events": ["*"], "url": all.url("/")}))
        .await;
    gw.create_webhook(json!({"name": "exact", "events": ["user.created"], "url": exact.url("/")}))
        .await;
    let mut fanout = Vec::new();
    for t in [
        "user.created",
        "user.deleted",
        "location.created",
        "user.created",
    ] {
        let (status, body) = gw.post_event(json!({"type": t, "data": {}})).await;
        assert_eq!(status, 202);
        fanout.push(body["deliveries"].as_u64().unwrap());
    }
    assert_eq!(fanout, vec![3, 2, 1, 3]);
    users.wait_for(3).await;
    all.wait_for(4).await;
    exact.wait_for(2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!((users.count(), all.count(), exact.count()), (3, 4, 2));
    let types = |rx: &Receiver| {
        let mut t: Vec<String> = rx
            .received()
            .iter()
            .map(|r| r.json()["type"].as_str().unwrap().to_owned())
            .collect();
        t.sort();
        t
    };
    assert_eq!(
        types(&users),
        ["user.created", "user.created", "user.deleted"]
    );
    assert_eq!(types(&exact), ["user.created", "user.created"]);
    assert_eq!(
        types(&all),
        [
            "location.created",
            "user.created",
            "user.created",
            "user.deleted"
        ]
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn disabled_webhook_gets_nothing() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (on, off) = (Receiver::start().await, Receiver::start().await);
    gw.create_webhook(json!({"name": "on", "events": ["*"], "url": on.url("/")}))
        .await;
    let hook = gw
        .create_webhook(
            json!({"name": "off", "events": ["*"], "url": off.url("/"), "enabled": false}),
        )
        .await;
    assert_eq!(hook["enabled"], false);
    let (_, body) = gw
        .post_event(json!({"type": "user.created", "data": {}}))
        .await;
    assert_eq!(body["deliveries"], 1);
    on.wait_for(1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(off.arrived(), 0);
    assert!(gw.deliveries("webhook=off").await.is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn data_and_context_are_delivered_as_sent_byte_for_byte() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "verbatim", "events": ["*"], "url": rx.url("/")}))
        .await;
    // Keys out of alphabetical order, a number no f64 holds, trailing zeros, escapes and spaces:
    // a tree would reorder, round and reformat them.
    let data = r#"{"zeta": 1, "alpha": 1.50, "big": 123456789012345678901234567890, "s": "\u00e9\n", "list": [3, 1, 2]}"#;
    let context = r#"{"z":true,"a":null}"#;
    let single =
        format!(r#"{{"id": "v-1", "type": "user.created", "data": {data}, "context": {context}}}"#);
    let batch = format!(r#"[{{"id": "v-2", "type": "user.created", "data": {data}}}]"#);
    for (path, body) in [("/v1/events", single), ("/v1/events/batch", batch)] {
        let (status, answer) = send_raw(
            &gw,
            "POST",
            gw.url(path),
            Some(INGEST_TOKEN),
            Some(body.into_bytes()),
        )
        .await;
        assert_eq!(status, 202, "{path}: {answer}");
    }
    let got = rx.wait_for(2).await;
    let bodies: Vec<String> = got
        .iter()
        .map(|r| String::from_utf8(r.body.to_vec()).unwrap())
        .collect();
    for body in &bodies {
        assert!(
            body.contains(&format!(r#""data":{data},"#)),
            "data not as sent: {body}"
        );
    }
    assert!(
        bodies
            .iter()
            .any(|b| b.ends_with(&format!(r#""context":{context}}}"#))),
        "context not as sent: {bodies:?}"
    );
    assert!(
        bodies.iter().any(|b| b.ends_with(r#""context":null}"#)),
        "an absent context is null: {bodies:?}"
    );
    // A replay reads the event back from the store: still the same text.
    let items = gw.wait_for_status("verbatim", "succeeded", 2).await;
    let id = items[0]["id"].as_str().unwrap();
    let (status, _) = gw
        .admin("POST", &format!("/admin/v1/deliveries/{id}/replay"), None)
        .await;
    assert_eq!(status, 202);
    let got = rx.wait_for(3).await;
    let replayed = String::from_utf8(got[2].body.to_vec()).unwrap();
    assert!(
        replayed.contains(&format!(r#""data":{data},"#)),
        "replayed data not as sent: {replayed}"
    );
    gw.stop().await;
}
