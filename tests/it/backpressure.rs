//! Ingest back-pressure (`delivery.ingest_backlog_limit`): past the bound of due deliveries,
//! ingest answers 503 with `Retry-After` and accepts nothing; once the backlog drains it accepts
//! again, and every event accepted before is delivered.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// The `i` of each delivered event's data.
fn delivered(rx: &Receiver) -> HashSet<i64> {
    rx.received()
        .iter()
        .filter_map(|r| r.json()["data"]["i"].as_i64())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn ingest_is_refused_past_the_backlog_limit_and_accepted_once_it_drains() {
    const LIMIT: u64 = 5;
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.delivery.ingest_backlog_limit = LIMIT;
    config.delivery.ingest_retry_after_secs = 2;
    let gw = TestGateway::start(config).await;
    // A slow endpoint taking one delivery at a time: the due backlog grows with every event.
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(200).delay(Duration::from_millis(500)));
    gw.create_webhook(json!({"name": "slow", "events": ["*"], "url": rx.url("/"),
                             "max_concurrency": 1, "timeout_ms": 10000}))
        .await;

    // Events one at a time (20 ms apart: the backlog is read every 200 ms) until the gateway
    // says it is backlogged.
    let mut accepted: HashSet<i64> = HashSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (status, refusal, retry_after) = loop {
        assert!(Instant::now() < deadline, "ingest never refused");
        let i = accepted.len() as i64;
        let r = gw
            .client()
            .post(gw.url("/v1/events"))
            .bearer_auth(INGEST_TOKEN)
            .json(&json!({"type": "t", "data": {"i": i}}))
            .send()
            .await
            .unwrap();
        let retry_after = r
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().unwrap().to_owned());
        let (status, body) = status_json(r).await;
        if status != 202 {
            break (status, body, retry_after);
        }
        accepted.insert(i);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(status, 503, "{refusal}");
    assert_eq!(retry_after.as_deref(), Some("2"));
    assert_eq!(refusal["error"]["code"], "backlogged", "{refusal}");
    assert!(
        accepted.len() as u64 > LIMIT,
        "{} accepted before the refusal, the limit is {LIMIT}",
        accepted.len()
    );

    // A batch is refused the same way, and nothing of it is stored.
    let batch: Vec<Value> = (0..3)
        .map(|k| json!({"id": format!("refused-{k}"), "type": "t", "data": {"i": -1 - k}}))
        .collect();
    let (status, body) = gw.post_batch(json!(batch)).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "backlogged", "{body}");

    let refused = gw
        .metric("hookyard_ingest_refused_total")
        .await
        .expect("the refusal counter");
    assert!(refused >= 2.0, "{refused} refusals counted");
    let backlog = gw
        .metric("hookyard_ingest_backlog")
        .await
        .expect("the backlog gauge");
    assert!(backlog > LIMIT as f64, "backlog gauge {backlog}");

    // The endpoint recovers: the backlog drains and ingest accepts again.
    rx.set_default(Reply::status(200));
    let after = eventually(Duration::from_secs(30), "ingest accepted again", || {
        let gw = &gw;
        async move {
            let (status, body) = gw
                .post_event(json!({"type": "t", "data": {"i": 100_000}}))
                .await;
            match status.as_u16() {
                202 => Some(body),
                503 => None,
                other => panic!("ingest answered {other}: {body}"),
            }
        }
    })
    .await;
    assert_eq!(after["deliveries"], 1, "{after}");
    accepted.insert(100_000);

    // Every accepted event is delivered; nothing refused is.
    eventually(
        Duration::from_secs(30),
        "every accepted event delivered",
        || async { accepted.is_subset(&delivered(&rx)).then_some(()) },
    )
    .await;
    let got = delivered(&rx);
    assert!(
        got.iter().all(|i| accepted.contains(i)),
        "delivered events never accepted: {:?}",
        got.difference(&accepted).collect::<Vec<_>>()
    );
    for k in 0..3 {
        let stored = gw.deliveries(&format!("event_id=refused-{k}")).await;
        assert!(stored.is_empty(), "refused-{k} was stored: {stored:?}");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn no_limit_never_refuses() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.delivery.ingest_backlog_limit = 0;
    let gw = TestGateway::start(config).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(200).delay(Duration::from_millis(500)));
    gw.create_webhook(json!({"name": "slow", "events": ["*"], "url": rx.url("/"),
                             "max_concurrency": 1}))
        .await;
    let batch: Vec<Value> = (0..50)
        .map(|i| json!({"type": "t", "data": {"i": i}}))
        .collect();
    let (status, body) = gw.post_batch(json!(batch)).await;
    assert_eq!(status, 202, "{body}");
    // Several reads of the backlog later (the watcher would have read 50 due by now).
    eventually(Duration::from_secs(5), "a few deliveries", || async {
        (rx.count() >= 2).then_some(())
    })
    .await;
    let (status, body) = gw.post_event(json!({"type": "t", "data": {"i": 50}})).await;
    assert_eq!(status, 202, "{body}");
    rx.set_default(Reply::status(200));
    gw.stop().await;
}
