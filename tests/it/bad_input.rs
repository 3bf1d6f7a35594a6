//! Bad input: every refusal is a JSON error body, the gateway keeps running, and nothing accepted
//! is lost.

use std::time::Duration;

use serde_json::json;

use crate::common::*;

#[tokio::test(flavor = "multi_thread")]
async fn bad_input_gets_json_errors_and_loses_nothing() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    // The first attempt fails, so the early event is still pending while the abuse goes on.
    rx.script([Reply::status(503)]);
    gw.create_webhook(json!({"name": "safe", "events": ["*"], "url": rx.url("/")}))
        .await;
    let (status, early) = gw
        .post_event(json!({"id": "early", "type": "user.created", "data": {"n": "early"}}))
        .await;
    assert_eq!(status, 202, "{early}");

    let events = gw.url("/v1/events");
    let batch = gw.url("/v1/events/batch");
    let hooks = gw.admin_url("/admin/v1/webhooks");

    // Malformed JSON: 400 invalid_json, on ingest and admin.
    for (url, token) in [
        (events.clone(), INGEST_TOKEN),
        (batch.clone(), INGEST_TOKEN),
        (hooks.clone(), ADMIN_TOKEN),
    ] {
        for body in [
            &b"{\"type\": "[..],
            b"not json",
            b"",
            b"{\"type\":\"t\",\"data\":1}}",
        ] {
            let (status, answer) =
                send_raw(&gw, "POST", url.clone(), Some(token), Some(body.to_vec())).await;
            assert_error(status, &answer, 400, "invalid_json");
        }
    }

    // Missing and wrong tokens: 401, ingest and admin alike.
    let event = serde_json::to_vec(&json!({"type": "t", "data": {}})).unwrap();
    for (url, wrong) in [
        (events.clone(), ADMIN_TOKEN),
        (batch.clone(), "nope"),
        (hooks.clone(), INGEST_TOKEN),
    ] {
        for token in [None, Some(wrong), Some("")] {
            let (status, answer) =
                send_raw(&gw, "POST", url.clone(), token, Some(event.clone())).await;
            assert_error(status, &answer, 401, "unauthorized");
        }
    }

    // Oversized bodies: 413 (the test config allows 65536 bytes).
    let big = serde_json::to_vec(&json!({"type": "t", "data": "x".repeat(70_000)})).unwrap();
    for (url, token) in [
        (events.clone(), INGEST_TOKEN),
        (batch.clone(), INGEST_TOKEN),
        (hooks.clone(), ADMIN_TOKEN),
    ] {
        let (status, answer) = send_raw(&gw, "POST", url, Some(token), Some(big.clone())).await;
        assert_error(status, &answer, 413, "body_too_large");
    }

    // Well-formed JSON of the wrong shape: 422 naming the field.
    for (body, field) in [
        (json!({"data": {}}), "type"),
        (json!({"type": "", "data": {}}), "type"),
        (json!({"type": 5, "data": {}}), "type"),
        (json!({"type": "t"}), "data"),
        (json!({"type": "t", "data": {}, "extra": 1}), "extra"),
        (
            json!({"type": "t", "data": {}, "occurred_at": "yesterday"}),
            "occurred_at",
        ),
        (json!({"type": "t", "data": {}, "id": ""}), "id"),
    ] {
        let (status, answer) = gw.post_event(body.clone()).await;
        assert_error(status, &answer, 422, "invalid_field");
        assert_eq!(answer["error"]["field"], field, "{body} answered {answer}");
    }

    // Unknown webhook: 404 for GET, PATCH, PUT and DELETE.
    for method in ["GET", "PATCH", "PUT", "DELETE"] {
        let body = match method {
            "PATCH" => Some(json!({"enabled": false})),
            "PUT" => Some(json!({"name": "nope", "events": ["*"], "url": "https://a.example/"})),
            _ => None,
        };
        let (status, answer) = gw.admin(method, "/admin/v1/webhooks/nope", body).await;
        assert_error(status, &answer, 404, "not_found");
    }
    // Unknown route: 404 JSON too.
    let (status, answer) = send_raw(&gw, "GET", gw.url("/v2/nothing"), None, None).await;
    assert_error(status, &answer, 404, "not_found");

    // A batch with one bad item: 422 naming it, and nothing of the batch is enqueued.
    for (bad, field) in [
        (json!({"id": "b-1", "data": {}}), "[1].type"),
        (json!({"id": "b-1", "type": " ", "data": {}}), "[1].type"),
        (
            json!({"id": "b-1", "type": "t", "data": {}, "zzz": 0}),
            "[1].zzz",
        ),
        (json!("not an event"), "[1]"),
    ] {
        let (status, answer) = gw
            .post_batch(json!([
                {"id": "b-0", "type": "user.created", "data": {"n": "b-0"}},
                bad,
                {"id": "b-2", "type": "user.created", "data": {"n": "b-2"}},
            ]))
            .await;
        assert_error(status, &answer, 422, "invalid_field");
        assert_eq!(answer["error"]["field"], field, "{answer}");
    }
    let (status, answer) = gw.post_batch(json!([])).await;
    assert_eq!(status, 422, "an empty batch: {answer}");

    // The gateway is still up and healthy.
    let (status, _) = send_raw(&gw, "GET", gw.url("/healthz"), None, None).await;
    assert_eq!(status, 200);
    let (status, _) = send_raw(&gw, "GET", gw.url("/readyz"), None, None).await;
    assert_eq!(status, 200);

    // Nothing from the refused batches was stored: their ids are new.
    let (status, answer) = gw
        .post_event(json!({"id": "b-0", "type": "user.created", "data": {"n": "late"}}))
        .await;
    assert_eq!(status, 202, "{answer}");
    assert_eq!(
        answer["duplicate"], false,
        "a refused batch left b-0 behind"
    );
    assert_eq!(answer["deliveries"], 1);

    // The early event and the new one are delivered; nothing else is.
    let got = rx.wait_for(3).await;
    gw.wait_for_status("safe", "succeeded", 2).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut seen: Vec<String> = rx
        .received()
        .iter()
        .map(|r| r.json()["data"]["n"].as_str().unwrap().to_owned())
        .collect();
    seen.sort();
    assert_eq!(seen, ["early", "early", "late"], "{got:?}");
    let all = gw.deliveries("webhook=safe").await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|d| d["status"] == "succeeded"), "{all:?}");
    gw.stop().await;
}
