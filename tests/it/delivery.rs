//! Delivery end to end: body, headers, signature, auth, retries, dead-lettering and replay.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

/// The published Standard Webhooks secret, reused so the signature check is against a known key.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[tokio::test(flavor = "multi_thread")]
async fn delivers_signed_default_envelope_with_headers() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let hook = gw
        .create_webhook(json!({
            "name": "defguard", "events": ["user.*"], "url": rx.url("/hook"), "method": "PUT",
            "headers": {"X-Source": "hookyard"}, "event_header": "X-Defguard-Event",
            "signing": {"secret": SECRET}
        }))
        .await;
    // Shown once on create; masked on every read after.
    assert_eq!(hook["signing"]["secret"], SECRET);
    let (_, read) = gw.admin("GET", "/admin/v1/webhooks/defguard", None).await;
    assert_eq!(read["signing"]["secret"], "********");
    let (status, body) = gw
        .post_event(
            json!({"type": "user.created", "data": {"username": "jdoe"}, "context": {"by": "admin"},
                           "occurred_at": "2026-11-26T10:00:00Z"}),
        )
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 1);

    let got = rx.wait_for(1).await;
    let req = &got[0];
    assert_eq!(req.method, "PUT");
    assert_eq!(req.path, "/hook");
    assert_eq!(
        req.json(),
        json!({"type": "user.created", "timestamp": "2026-11-26T10:00:00Z",
               "data": {"username": "jdoe"}, "context": {"by": "admin"}})
    );
    assert_eq!(req.header("x-source").as_deref(), Some("hookyard"));
    assert_eq!(
        req.header("x-defguard-event").as_deref(),
        Some("user_created")
    );
    assert_eq!(
        req.header("content-type").as_deref(),
        Some("application/json")
    );
    let id = req.header("webhook-id").unwrap();
    let ts = req.header("webhook-timestamp").unwrap();
    let sig = req.header("webhook-signature").unwrap();
    let now = ts.parse::<i64>().unwrap();
    hookyard::delivery::signing::verify(SECRET, &id, &ts, &sig, &req.body, now, 300)
        .expect("signature verifies");
    // A different body must not verify with that signature.
    assert!(hookyard::delivery::signing::verify(SECRET, &id, &ts, &sig, b"{}", now, 300).is_err());

    let items = gw.wait_for_status("defguard", "succeeded", 1).await;
    assert_eq!(items[0]["id"], id.as_str());
    // Events of other types do not match.
    let (_, body) = gw
        .post_event(json!({"type": "location.created", "data": {}}))
        .await;
    assert_eq!(body["deliveries"], 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn retries_honour_retry_after_then_succeed_with_stable_id() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    rx.script([
        Reply::status(503).header("Retry-After", "1"),
        Reply::status(500),
    ]);
    gw.create_webhook(json!({"name": "r", "events": ["*"], "url": rx.url("/")}))
        .await;
    gw.post_event(json!({"type": "user.updated", "data": {}}))
        .await;
    let got = rx.wait_for(3).await;
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "Retry-After: 1 not honoured, gap {gap:?}"
    );
    let ids: Vec<_> = got
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "webhook-id changed across retries: {ids:?}"
    );
    let items = gw.wait_for_status("r", "succeeded", 1).await;
    let detail = gw.delivery(items[0]["id"].as_str().unwrap()).await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[0]["response_status"], 503);
    assert_eq!(attempts[0]["outcome"], "retry");
    assert_eq!(attempts[2]["outcome"], "succeeded");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_after_max_attempts_then_replayed() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(500).body("boom"));
    gw.create_webhook(
        json!({"name": "d", "events": ["*"], "url": rx.url("/"), "retry": {"max_attempts": 3}}),
    )
    .await;
    for i in 0..2 {
        gw.post_event(json!({"type": "t", "data": {"i": i}})).await;
    }
    let dead = gw.wait_for_status("d", "dead", 2).await;
    assert_eq!(rx.count(), 6, "3 attempts each");
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 3);
    assert_eq!(detail["attempts"][2]["outcome"], "dead");
    assert_eq!(detail["attempts"][2]["response_body"], "boom");

    rx.set_default(Reply::status(200));
    let (status, body) = gw.admin("POST", "/admin/v1/webhooks/d/replay", None).await;
    assert_eq!(status, 202);
    assert_eq!(body["replayed"], 2);
    gw.wait_for_status("d", "succeeded", 2).await;
    assert_eq!(rx.count(), 8);

    // A single delivery can be replayed too, even after success.
    let id = dead[0]["id"].as_str().unwrap();
    let (status, _) = gw
        .admin("POST", &format!("/admin/v1/deliveries/{id}/replay"), None)
        .await;
    assert_eq!(status, 202);
    rx.wait_for(9).await;
    let detail = gw.delivery(id).await;
    eventually(
        Duration::from_secs(10),
        "replayed delivery succeeded",
        || async {
            let d = gw.delivery(id).await;
            (d["status"] == "succeeded" && d["attempts"].as_array().unwrap().len() == 5)
                .then_some(())
        },
    )
    .await;
    assert_eq!(detail["webhook_id"], dead[0]["webhook_id"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn non_retryable_4xx_fails_at_once_and_410_disables() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    rx.script([Reply::status(400), Reply::status(410)]);
    gw.create_webhook(
        json!({"name": "g", "events": ["*"], "url": rx.url("/"), "max_concurrency": 1}),
    )
    .await;
    gw.post_event(json!({"type": "t", "data": 1})).await;
    gw.wait_for_status("g", "dead", 1).await;
    assert_eq!(rx.count(), 1, "a 400 is not retried");
    gw.post_event(json!({"type": "t", "data": 2})).await;
    gw.wait_for_status("g", "dead", 2).await;
    let (_, hook) = gw.admin("GET", "/admin/v1/webhooks/g", None).await;
    assert_eq!(hook["enabled"], false, "410 disables the webhook");
    let (_, body) = gw.post_event(json!({"type": "t", "data": 3})).await;
    assert_eq!(
        body["deliveries"], 0,
        "a disabled webhook gets no deliveries"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn redirects_are_not_followed() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let target = Receiver::start().await;
    rx.script([Reply::status(302).header("Location", &target.url("/elsewhere"))]);
    gw.create_webhook(json!({"name": "redir", "events": ["*"], "url": rx.url("/")}))
        .await;
    gw.post_event(json!({"type": "t", "data": {}})).await;
    gw.wait_for_status("redir", "dead", 1).await;
    assert_eq!(target.count(), 0);
    gw.stop().await;
}

/// A new event's delivery starts in the process that accepted it, without a claim, when that
/// process has a free slot for it; a webhook at its limit leaves the next one queued, and the
/// workers claim it once the slot frees. With `start_at_ingest` off every delivery is claimed.
#[tokio::test(flavor = "multi_thread")]
async fn deliveries_start_at_ingest_when_a_slot_is_free() {
    for start_at_ingest in [true, false] {
        let dir = temp_dir();
        let mut config = test_config(dir.path());
        config.delivery.start_at_ingest = start_at_ingest;
        let gw = TestGateway::start(config).await;
        let rx = Receiver::start().await;
        gw.create_webhook(
            json!({"name": "single", "events": ["*"], "url": rx.url("/"),
                                 "max_concurrency": 1}),
        )
        .await;
        wait_for_the_first_claim(&gw).await;
        // The first answer takes a while: its delivery holds the webhook's only slot meanwhile.
        post_two_behind_a_slow_first(&gw, &rx, Duration::from_millis(500)).await;
        let got = rx.wait_for(2).await;
        let order: Vec<i64> = got
            .iter()
            .map(|r| r.json()["data"]["n"].as_i64().unwrap())
            .collect();
        assert_eq!(order, vec![1, 2]);
        gw.wait_for_status("single", "succeeded", 2).await;

        let started = gw
            .metric("hookyard_deliveries_started_at_ingest_total")
            .await;
        let claimed = gw.metric("hookyard_deliveries_claimed_total").await;
        if start_at_ingest {
            assert_eq!(
                (started, claimed),
                (Some(1.0), Some(1.0)),
                "the first started at ingest; the second, queued behind the busy slot, was claimed"
            );
        } else {
            assert_eq!((started, claimed), (Some(0.0), Some(2.0)));
        }
        gw.stop().await;
    }
}

/// Deliveries claimed while their webhook's slots are all busy wait in the process for those
/// slots instead of being handed back: each delivery that finishes starts the next one at once.
#[tokio::test(flavor = "multi_thread")]
async fn deliveries_claimed_ahead_wait_for_their_webhooks_slot() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(200).delay(Duration::from_millis(150)));
    gw.create_webhook(
        json!({"name": "single", "events": ["*"], "url": rx.url("/"),
                             "max_concurrency": 1}),
    )
    .await;
    let batch: Vec<_> = (0..8)
        .map(|n| json!({"type": "t", "data": {"n": n}}))
        .collect();
    let (status, body) = gw.post_batch(json!(batch)).await;
    assert_eq!(status, 202, "{body}");
    eventually(
        Duration::from_secs(10),
        "a delivery claimed ahead, waiting for the webhook's one slot",
        || async {
            let waiting = gw.metric("hookyard_deliveries_claimed_ahead").await;
            (waiting == Some(1.0)).then_some(())
        },
    )
    .await;
    let got = rx.wait_for(8).await;
    let mut sent: Vec<i64> = got
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    sent.sort_unstable();
    assert_eq!(sent, (0..8).collect::<Vec<_>>(), "each sent once");
    gw.wait_for_status("single", "succeeded", 8).await;
    assert_eq!(
        gw.metric("hookyard_deliveries_claimed_ahead").await,
        Some(0.0)
    );
    gw.stop().await;
}

/// A delivery that waited here for a slot until its lease could no longer cover an attempt is
/// handed back and claimed again, not sent on a lease about to run out (another worker could
/// claim it meanwhile); it is still sent exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn a_claimed_ahead_delivery_whose_lease_ran_short_is_claimed_again() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    // A webhook timeout of 2.5 s plus the 5 s margin leaves 1.5 s of waiting on a 9 s lease.
    config.delivery.lease_secs = 9;
    let gw = TestGateway::start(config).await;
    let rx = Receiver::start().await;
    gw.create_webhook(
        json!({"name": "single", "events": ["*"], "url": rx.url("/"),
                             "max_concurrency": 1, "timeout_ms": 2500}),
    )
    .await;
    wait_for_the_first_claim(&gw).await;
    // The first attempt runs into the timeout, holding the one slot for 2.5 s: the second
    // event's delivery, claimed meanwhile, waits longer than its lease allows.
    post_two_behind_a_slow_first(&gw, &rx, Duration::from_millis(3000)).await;
    eventually(
        Duration::from_secs(5),
        "the second claimed ahead",
        || async {
            let waiting = gw.metric("hookyard_deliveries_claimed_ahead").await;
            (waiting == Some(1.0)).then_some(())
        },
    )
    .await;
    gw.wait_for_status("single", "succeeded", 2).await;
    let second: Vec<_> = rx
        .received()
        .into_iter()
        .filter(|r| r.json()["data"]["n"] == 2)
        .collect();
    assert_eq!(second.len(), 1, "the second event was sent once");
    let claimed = gw.metric("hookyard_deliveries_claimed_total").await;
    assert!(
        claimed >= Some(3.0),
        "the second was claimed twice (ahead, then again after it was handed back) and the \
         first once for its retry: {claimed:?}"
    );
    gw.stop().await;
}

/// Waits until the workers' first claim has come back. It finds nothing in a new gateway, and
/// until it has come back the process does not know whether a backlog is waiting, so nothing
/// starts at ingest.
async fn wait_for_the_first_claim(gw: &TestGateway) {
    eventually(Duration::from_secs(10), "the first claim", || async {
        let claims = gw.metric("hookyard_delivery_claims_total").await;
        claims.is_some_and(|n| n >= 1.0).then_some(())
    })
    .await;
}

/// Posts an event answered after `answer_after`, waits until its request arrives (it holds
/// its webhook's slot until then), and posts a second one.
async fn post_two_behind_a_slow_first(gw: &TestGateway, rx: &Receiver, answer_after: Duration) {
    rx.script([Reply::status(200).delay(answer_after)]);
    let (status, body) = gw.post_event(json!({"type": "t", "data": {"n": 1}})).await;
    assert_eq!(status, 202, "{body}");
    eventually(
        Duration::from_secs(5),
        "the first request arrives",
        || async { (rx.arrived() == 1).then_some(()) },
    )
    .await;
    let (status, body) = gw.post_event(json!({"type": "t", "data": {"n": 2}})).await;
    assert_eq!(status, 202, "{body}");
}

/// A delivery without a plugin sends the event's default body: the log keeps no copy of it (the
/// request is marked `body_from`) and shows it made again from the event, byte for byte.
#[tokio::test(flavor = "multi_thread")]
async fn the_log_shows_a_default_body_it_does_not_store_twice() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "plain", "events": ["user.*"], "url": rx.url("/plain")}))
        .await;
    gw.post_event(json!({"type": "user.created", "data": {"name": "Ada", "n": 1.50}}))
        .await;
    let sent = rx.wait_for(1).await;
    let deliveries = gw.wait_for_status("plain", "succeeded", 1).await;
    let id = deliveries[0]["id"].as_str().unwrap();
    let shown = gw.delivery(id).await;
    let request = &shown["attempts"][0]["request"];
    assert_eq!(request["body_from"], "event_envelope", "{shown}");
    assert_eq!(
        request["body"].as_str().unwrap().as_bytes(),
        &sent[0].body[..],
        "the body shown is the one sent"
    );
    gw.stop().await;
    if !on_postgres() {
        // What the store holds: the request without its body.
        let db = rusqlite::Connection::open(dir.path().join("hookyard.db")).unwrap();
        let stored: String = db
            .query_row(
                "SELECT request FROM attempts WHERE delivery_id = ?1",
                [id],
                |row| row.get(0),
            )
            .unwrap();
        let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
        assert_eq!(stored["body"], "", "{stored}");
        assert_eq!(stored["body_from"], "event_envelope", "{stored}");
    }
}
