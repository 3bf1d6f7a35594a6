//! `POST /admin/v1/webhooks/{id}/test`: one delivery through the webhook's plugin, auth and
//! signing, answered with the attempt, logged as a test, never retried.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::plugins::{rust_plugin, upload_ok};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn verify_signature(req: &Received) {
    let id = req.header("webhook-id").unwrap();
    let ts = req.header("webhook-timestamp").unwrap();
    let sig = req.header("webhook-signature").expect("signed");
    let now = ts.parse::<i64>().unwrap();
    hookyard::delivery::signing::verify(SECRET, &id, &ts, &sig, &req.body, now, 300)
        .expect("the signature verifies with the webhook's secret");
}

async fn test_send(gw: &Api, webhook: &str, body: Option<Value>) -> (u16, Value) {
    let (status, body) = gw
        .admin("POST", &format!("/admin/v1/webhooks/{webhook}/test"), body)
        .await;
    (status.as_u16(), body)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_test_goes_through_plugin_auth_and_signing_and_is_logged() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = TokenServer::start().await;
    let rx = Receiver::protected_by(&tokens).await;
    upload_ok(&gw, "field-map", rust_plugin("field_map")).await;
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/event-types",
            Some(json!({"name": "user.created",
                "schema": {"type": "object", "properties": {
                    "employee_id": {"type": "string"}, "email": {"type": "string"}}},
                "example": {"employee_id": "E-1001", "email": "Jane.Doe@Example.com"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    gw.create_webhook(json!({
        "name": "hr", "events": ["user.*"], "url": rx.url("/users"),
        "auth": {"type": "oauth2_client_credentials", "token_url": tokens.url(),
                 "client_id": "hookyard", "client_secret": "s3cret"},
        "signing": {"secret": SECRET},
        "plugin": {"name": "field-map", "config": {"request": [
            {"api_field": "emp_id", "field": "employee_id"},
            {"api_field": "work_email", "field": "email", "convert": "lower"},
            {"api_field": "event", "field": "@type"}
        ]}}
    }))
    .await;

    // No body: the catalog's example.
    let (status, result) = test_send(&gw, "hr", None).await;
    assert_eq!(status, 200, "{result}");
    let got = rx.received();
    assert_eq!(got.len(), 1, "one request, to this webhook only");
    assert_eq!(
        got[0].json(),
        json!({"emp_id": "E-1001", "work_email": "jane.doe@example.com", "event": "user.created"}),
        "shaped by the plugin"
    );
    assert_eq!(got[0].path, "/users");
    verify_signature(&got[0]);
    assert_eq!(tokens.issued(), 1, "authenticated with an OAuth2 token");

    let delivery_id = result["delivery"]["id"].as_str().unwrap();
    assert!(delivery_id.ends_with("_test"), "{result}");
    assert_eq!(got[0].header("webhook-id").as_deref(), Some(delivery_id));
    assert_eq!(result["delivery"]["status"], "succeeded");
    assert_eq!(result["event"]["type"], "user.created");
    let attempt = &result["attempt"];
    assert_eq!(attempt["response_status"], 200);
    assert_eq!(attempt["outcome"], "succeeded");
    assert!(attempt["duration_ms"].is_u64());
    assert!(attempt["error"].is_null());
    let request = &attempt["request"];
    assert_eq!(request["method"], "POST");
    assert_eq!(
        serde_json::from_str::<Value>(request["body"].as_str().unwrap()).unwrap(),
        got[0].json(),
        "the request as sent"
    );
    let headers: Vec<(String, String)> =
        serde_json::from_value(request["headers"].clone()).unwrap();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(header("authorization"), Some("[redacted]"));
    assert_eq!(header("webhook-signature"), Some("[redacted]"));

    // In the Webhook Log, with its one attempt.
    let logged = gw.delivery(delivery_id).await;
    assert_eq!(logged["status"], "succeeded");
    assert_eq!(logged["attempts"].as_array().unwrap().len(), 1);
    let listed = gw.deliveries("webhook=hr").await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["id"], delivery_id);

    // A given event is sent as given (the plugin still shapes it).
    let (status, result) = test_send(
        &gw,
        "hr",
        Some(
            json!({"type": "user.created", "data": {"employee_id": "E-7", "email": "X@Y.Z"},
            "context": {"actor": "admin"}}),
        ),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    let got = rx.wait_for(2).await;
    assert_eq!(
        got[1].json(),
        json!({"emp_id": "E-7", "work_email": "x@y.z", "event": "user.created"})
    );
    assert_eq!(result["event"]["context"], json!({"actor": "admin"}));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_test_is_dead_at_once_and_not_retried() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(503).body("down for maintenance"));
    gw.create_webhook(
        json!({"name": "flaky", "events": ["order.paid"], "url": rx.url("/"),
        "signing": {"secret": SECRET}, "retry": {"max_attempts": 4}}),
    )
    .await;

    let (status, result) = test_send(
        &gw,
        "flaky",
        Some(json!({"type": "order.paid", "data": {"total": 12.5}})),
    )
    .await;
    assert_eq!(status, 200, "{result}");
    assert_eq!(result["attempt"]["response_status"], 503);
    assert_eq!(result["attempt"]["response_body"], "down for maintenance");
    assert_eq!(result["attempt"]["outcome"], "dead");
    assert_eq!(result["delivery"]["status"], "dead");
    assert_eq!(result["delivery"]["attempts"], 1);
    assert_eq!(
        rx.received()[0].json()["data"],
        json!({"total": 12.5}),
        "the default body"
    );
    verify_signature(&rx.received()[0]);

    // A real event to the same webhook is retried (50 ms apart in the tests) until its attempts
    // run out; by then a retry of the test would have come too.
    let (status, _) = gw
        .post_event(json!({"type": "order.paid", "data": {"total": 1}}))
        .await;
    assert_eq!(status, 202);
    gw.wait_for_status("flaky", "dead", 2).await;
    let sent = rx.received();
    let tests = sent
        .iter()
        .filter(|r| r.header("webhook-id").unwrap().ends_with("_test"))
        .count();
    assert_eq!(tests, 1, "the test was sent once");
    assert_eq!(sent.len(), 5, "1 test + 4 attempts of the real event");
    let test_id = result["delivery"]["id"].as_str().unwrap();
    let logged = gw.delivery(test_id).await;
    assert_eq!(logged["attempts"].as_array().unwrap().len(), 1);

    // Replayed by an admin, it is sent once more, and again not retried.
    let (status, _) = gw
        .admin(
            "POST",
            &format!("/admin/v1/deliveries/{test_id}/replay"),
            None,
        )
        .await;
    assert_eq!(status, 202);
    let replayed = eventually(Duration::from_secs(10), "the replayed test", || async {
        let d = gw.delivery(test_id).await;
        (d["status"] == "dead" && d["attempts"].as_array().unwrap().len() == 2).then_some(d)
    })
    .await;
    assert_eq!(replayed["attempts"][1]["outcome"], "dead");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn what_a_test_cannot_send_is_refused() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "orders", "events": ["order.*"], "url": rx.url("/")}))
        .await;

    // Nothing in the catalog and no event: nothing to send.
    let (status, body) = test_send(&gw, "orders", None).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "invalid_field");
    let (status, body) = test_send(&gw, "orders", Some(json!({}))).await;
    assert_eq!(status, 422, "{body}");
    // A type without data, and no example of it.
    let (status, body) = test_send(&gw, "orders", Some(json!({"type": "order.paid"}))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "data");
    // Data without a type: the webhook subscribes to a glob only.
    let (status, body) = test_send(&gw, "orders", Some(json!({"data": {}}))).await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "type");
    // A type the webhook does not subscribe to.
    let (status, body) = test_send(
        &gw,
        "orders",
        Some(json!({"type": "user.created", "data": {}})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "type");
    let (status, body) = test_send(
        &gw,
        "orders",
        Some(json!({"type": "order.paid", "data": {}, "id": "x"})),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["field"], "id");
    let (status, body) = send_raw(
        &gw,
        "POST",
        gw.admin_url("/admin/v1/webhooks/orders/test"),
        Some(ADMIN_TOKEN),
        Some(b"{\"type\": ".to_vec()),
    )
    .await;
    assert_error(status, &body, 400, "invalid_json");
    let (status, body) = test_send(&gw, "nope", None).await;
    assert_eq!(status, 404, "{body}");
    assert_eq!(rx.count(), 0, "nothing was sent");

    // Once the catalog has an example of a type it subscribes to, no body is needed; data
    // alone takes the catalog's first matching type.
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/event-types",
            Some(json!({"name": "order.paid", "example": {"order": "A-1"}})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = test_send(&gw, "orders", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(rx.received()[0].json()["data"], json!({"order": "A-1"}));
    let (status, body) = test_send(&gw, "orders", Some(json!({"data": {"order": "B-2"}}))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["event"]["type"], "order.paid");
    gw.stop().await;
}
