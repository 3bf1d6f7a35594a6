//! Durability: nothing accepted is lost across a restart, shutdown drains in-flight deliveries,
//! and a hanging endpoint does not hold up the others.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn accepted_events_survive_a_restart_and_are_delivered_once() {
    let dir = temp_dir();
    let config = test_config(dir.path());
    let gw = TestGateway::start(config.clone()).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(503));
    gw.create_webhook(
        json!({"name": "durable", "events": ["*"], "url": rx.url("/"),
                             "retry": {"max_attempts": 100}}),
    )
    .await;
    for i in 0..20 {
        let (status, body) = gw.post_event(json!({"type": "t", "data": {"i": i}})).await;
        assert_eq!(status, 202, "{body}");
    }
    // Each has been tried at least once and failed.
    eventually(
        Duration::from_secs(10),
        "every delivery tried once",
        || async {
            let ids: HashSet<String> = rx
                .received()
                .iter()
                .map(|r| r.header("webhook-id").unwrap())
                .collect();
            (ids.len() == 20).then_some(())
        },
    )
    .await;
    gw.stop().await;

    let failed_before = rx.count();
    rx.set_default(Reply::status(200));
    let gw = TestGateway::start(config).await;
    let items = gw.wait_for_status("durable", "succeeded", 20).await;
    assert_eq!(items.len(), 20);
    // Let any duplicate show itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after: Vec<Received> = rx.received()[failed_before..].to_vec();
    let ids: HashSet<String> = after
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(ids.len(), 20, "distinct deliveries after the restart");
    assert_eq!(
        after.len(),
        20,
        "each delivered exactly once after the restart"
    );
    let logged: HashSet<String> = items
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(logged, ids);
    let data: HashSet<i64> = after
        .iter()
        .map(|r| r.json()["data"]["i"].as_i64().unwrap())
        .collect();
    assert_eq!(data, (0..20).collect::<HashSet<_>>());
    assert!(gw
        .deliveries("webhook=durable&status=pending")
        .await
        .is_empty());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn shutdown_drains_an_in_flight_delivery() {
    let dir = temp_dir();
    let config = test_config(dir.path());
    let gw = TestGateway::start(config.clone()).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(200).delay(Duration::from_secs(1)));
    gw.create_webhook(json!({"name": "drain", "events": ["*"], "url": rx.url("/")}))
        .await;
    gw.post_event(json!({"type": "t", "data": {}})).await;
    let got = rx.wait_for(1).await;
    let delivery_id = got[0].header("webhook-id").unwrap();
    let asked = Instant::now();
    gw.stop().await;
    let took = asked.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "stop returned after {took:?}, before the in-flight answer (1 s) arrived"
    );

    rx.set_default(Reply::status(200));
    let gw = TestGateway::start(config).await;
    let detail = gw.delivery(&delivery_id).await;
    assert_eq!(detail["status"], "succeeded", "{detail}");
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{detail}");
    assert_eq!(attempts[0]["outcome"], "succeeded");
    assert_eq!(attempts[0]["response_status"], 200);
    assert!(attempts[0]["duration_ms"].as_u64().unwrap() >= 900);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.count(), 1, "the drained delivery was sent again");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn hanging_endpoint_does_not_hold_up_another() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (hanging, healthy) = (Receiver::start().await, Receiver::start().await);
    hanging.set_hang(true);
    gw.create_webhook(
        json!({"name": "a-hangs", "events": ["user.*"], "url": hanging.url("/"),
                             "timeout_ms": 2000, "max_concurrency": 2}),
    )
    .await;
    gw.create_webhook(json!({"name": "b-healthy", "events": ["user.*"], "url": healthy.url("/")}))
        .await;
    let batch: Vec<Value> = (0..40)
        .map(|i| json!({"type": "user.updated", "data": {"i": i}}))
        .collect();
    let posted = Instant::now();
    let (status, body) = gw.post_batch(json!(batch)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["events"][0]["deliveries"], 2);
    eventually(
        Duration::from_millis(1500),
        "B gets all 40 while A hangs",
        || async { (healthy.count() >= 40).then_some(()) },
    )
    .await;
    let elapsed = posted.elapsed();
    assert!(elapsed < Duration::from_millis(1500), "B took {elapsed:?}");
    assert_eq!(healthy.count(), 40);
    // Meanwhile A hangs on exactly its two slots (its 2 s timeout has not fired yet).
    eventually(
        Duration::from_millis(300),
        "A's two requests hang",
        || async { (hanging.arrived() >= 2).then_some(()) },
    )
    .await;
    assert_eq!(hanging.arrived(), 2, "A exceeded its max_concurrency");
    assert_eq!(hanging.count(), 0);
    assert!(posted.elapsed() < Duration::from_millis(1900));
    eventually(
        Duration::from_secs(5),
        "B's 40 deliveries logged as succeeded",
        || async {
            let n = gw
                .deliveries("webhook=b-healthy&status=succeeded")
                .await
                .len();
            (n == 40).then_some(())
        },
    )
    .await;
    assert_eq!(
        gw.deliveries("webhook=a-hangs&status=succeeded")
            .await
            .len(),
        0
    );
    // Not stopped gracefully: A's requests hang until their 2 s timeout.
    drop(gw);
}

/// A graceful stop must not leave deliveries leased to the stopped process: after a restart,
/// every due delivery is sent at once, not after its lease (30 s in the test config) runs out.
/// Stopping in the middle of a retry storm, several times, catches a stop that lands while the
/// dispatcher is claiming.
#[tokio::test(flavor = "multi_thread")]
async fn graceful_stop_leaves_no_delivery_leased() {
    let dir = temp_dir();
    let config = test_config(dir.path());
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(503));
    let mut gw = TestGateway::start(config.clone()).await;
    gw.create_webhook(json!({"name": "storm", "events": ["*"], "url": rx.url("/"),
                             "retry": {"max_attempts": 100}}))
        .await;
    let batch: Vec<Value> = (0..200)
        .map(|i| json!({"type": "t", "data": {"i": i}}))
        .collect();
    let (status, _) = gw.post_batch(json!(batch)).await;
    assert_eq!(status, 202);
    for _ in 0..8 {
        // Let a round of retries get going, then stop in the middle of it.
        let seen = rx.count();
        eventually(Duration::from_secs(10), "a round of retries", || async {
            (rx.count() >= seen + 100).then_some(())
        })
        .await;
        gw.stop().await;
        gw = TestGateway::start(config.clone()).await;
    }
    rx.set_default(Reply::status(200));
    let started = Instant::now();
    eventually(
        Duration::from_secs(5),
        "all 200 delivered soon after the last restart",
        || async {
            let n = gw.deliveries("webhook=storm&status=succeeded").await.len();
            (n == 200).then_some(())
        },
    )
    .await;
    assert!(started.elapsed() < Duration::from_secs(5));
    gw.stop().await;
}
