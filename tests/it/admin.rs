//! The admin API: webhook CRUD, write-only secrets, validation, the Webhook Log, the OpenAPI
//! document, token protection and metrics.

use std::collections::HashSet;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const MASKED: &str = "********";

/// A read of a webhook without the fields the server adds, fit to PUT back.
fn as_spec(mut hook: Value) -> Value {
    let obj = hook.as_object_mut().unwrap();
    for k in ["id", "created_at", "updated_at"] {
        obj.remove(k);
    }
    hook
}

fn verify_signature(req: &Received, secret: &str) {
    let id = req.header("webhook-id").unwrap();
    let ts = req.header("webhook-timestamp").unwrap();
    let sig = req.header("webhook-signature").expect("signed");
    let now = ts.parse::<i64>().unwrap();
    hookyard::delivery::signing::verify(secret, &id, &ts, &sig, &req.body, now, 300)
        .expect("signature verifies with the original secret");
}

#[tokio::test(flavor = "multi_thread")]
async fn crud_by_id_and_by_name() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let created = gw
        .create_webhook(
            json!({"name": "crm", "description": "first", "events": ["user.*"],
                               "url": "https://crm.example.com/hook"}),
        )
        .await;
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(id.starts_with("wh_"), "{id}");
    assert_eq!(created["name"], "crm");
    assert_eq!(created["enabled"], true);
    assert_eq!(created["method"], "POST");
    assert_eq!(created["timeout_ms"], 10000);
    assert_eq!(created["retry"]["max_attempts"], 8);

    let (status, by_id) = gw
        .admin("GET", &format!("/admin/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let (status, by_name) = gw.admin("GET", "/admin/v1/webhooks/crm", None).await;
    assert_eq!(status, 200);
    assert_eq!(by_id, by_name);
    // Reads equal the create response, except that only the latter shows the signing secret.
    let mut created_masked = created.clone();
    created_masked["signing"]["secret"] = json!(MASKED);
    assert_eq!(by_id, created_masked);

    let (status, list) = gw.admin("GET", "/admin/v1/webhooks", None).await;
    assert_eq!(status, 200);
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["id"], id.as_str());

    // PUT by name replaces the definition (fields left out take their defaults).
    let (status, put) = gw
        .admin(
            "PUT",
            "/admin/v1/webhooks/crm",
            Some(
                json!({"name": "crm", "events": ["location.*"], "url": "https://crm.example.com/v2",
                        "timeout_ms": 3000}),
            ),
        )
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["id"], id.as_str());
    assert_eq!(put["events"], json!(["location.*"]));
    assert_eq!(put["url"], "https://crm.example.com/v2");
    assert_eq!(put["description"], "");
    assert_eq!(put["timeout_ms"], 3000);
    assert_eq!(put["created_at"], created["created_at"]);

    // PATCH by id merges; renaming keeps the id.
    let (status, patched) = gw
        .admin(
            "PATCH",
            &format!("/admin/v1/webhooks/{id}"),
            Some(json!({"name": "crm2", "description": "renamed", "headers": {"X-A": "1"}})),
        )
        .await;
    assert_eq!(status, 200, "{patched}");
    assert_eq!(patched["id"], id.as_str());
    assert_eq!(patched["name"], "crm2");
    assert_eq!(patched["description"], "renamed");
    assert_eq!(patched["events"], json!(["location.*"]));
    assert_eq!(patched["headers"], json!({"X-A": "1"}));
    let (status, _) = gw.admin("GET", "/admin/v1/webhooks/crm", None).await;
    assert_eq!(status, 404, "the old name is gone");
    let (_, fetched) = gw.admin("GET", "/admin/v1/webhooks/crm2", None).await;
    assert_eq!(fetched, patched);

    // DELETE by name: 204 with no body, then 404 by name and by id.
    let (status, body) = gw.admin("DELETE", "/admin/v1/webhooks/crm2", None).await;
    assert_eq!(status, 204);
    assert_eq!(body, Value::Null);
    let (status, body) = gw
        .admin("GET", &format!("/admin/v1/webhooks/{id}"), None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, _) = gw
        .admin("DELETE", &format!("/admin/v1/webhooks/{id}"), None)
        .await;
    assert_eq!(status, 404);
    let (_, list) = gw.admin("GET", "/admin/v1/webhooks", None).await;
    assert_eq!(list["items"], json!([]));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_masked_on_every_read() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let secrets = [
        "apikey-s3cret",
        "basic-pw-s3cret",
        "bearer-s3cret",
        "owner-pw-s3cret",
        "client-s3cret-1",
        "client-s3cret-2",
        SECRET,
    ];
    let specs = [
        json!({"name": "k", "events": ["*"], "url": "https://a.example/",
               "auth": {"type": "api_key", "header": "X-Key", "value": "apikey-s3cret"},
               "signing": {"secret": SECRET}}),
        json!({"name": "b", "events": ["*"], "url": "https://a.example/",
               "auth": {"type": "basic", "username": "svc", "password": "basic-pw-s3cret"}}),
        json!({"name": "t", "events": ["*"], "url": "https://a.example/",
               "auth": {"type": "bearer", "token": "bearer-s3cret"}}),
        json!({"name": "p", "events": ["*"], "url": "https://a.example/",
               "auth": {"type": "oauth2_password", "token_url": "https://id.example/token",
                        "username": "owner", "password": "owner-pw-s3cret",
                        "client_id": "cid", "client_secret": "client-s3cret-1", "scope": "s"}}),
        json!({"name": "c", "events": ["*"], "url": "https://a.example/",
               "auth": {"type": "oauth2_client_credentials", "token_url": "https://id.example/token",
                        "client_id": "cid2", "client_secret": "client-s3cret-2"}}),
    ];
    let check = |hook: &Value| {
        let text = hook.to_string();
        for s in secrets {
            assert!(!text.contains(s), "secret {s} shown: {text}");
        }
        assert_eq!(hook["signing"]["secret"], MASKED, "{hook}");
        let auth = &hook["auth"];
        match auth["type"].as_str().unwrap() {
            "api_key" => {
                assert_eq!(auth["value"], MASKED);
                assert_eq!(auth["header"], "X-Key");
            }
            "basic" => {
                assert_eq!(auth["password"], MASKED);
                assert_eq!(auth["username"], "svc");
            }
            "bearer" => assert_eq!(auth["token"], MASKED),
            "oauth2_password" => {
                assert_eq!(auth["password"], MASKED);
                assert_eq!(auth["client_secret"], MASKED);
                assert_eq!(auth["username"], "owner");
                assert_eq!(auth["client_id"], "cid");
            }
            "oauth2_client_credentials" => {
                assert_eq!(auth["client_secret"], MASKED);
                assert_eq!(auth["client_id"], "cid2");
            }
            other => panic!("unexpected auth type {other}"),
        }
    };
    let mut ids = Vec::new();
    for spec in specs {
        let created = gw.create_webhook(spec).await;
        // The create response shows the signing secret once (receivers need it); the
        // credentials stay masked there too.
        let signing = created["signing"]["secret"].as_str().unwrap().to_owned();
        assert!(signing.starts_with("whsec_"), "{created}");
        let (status, secret) = gw
            .admin(
                "GET",
                &format!(
                    "/admin/v1/webhooks/{}/secret",
                    created["id"].as_str().unwrap()
                ),
                None,
            )
            .await;
        assert_eq!(status, 200);
        assert_eq!(secret["secret"], signing.as_str());
        let mut masked = created.clone();
        masked["signing"]["secret"] = json!(MASKED);
        check(&masked);
        ids.push((
            created["id"].as_str().unwrap().to_owned(),
            created["name"].as_str().unwrap().to_owned(),
        ));
    }
    for (id, name) in &ids {
        for key in [id, name] {
            let (status, hook) = gw
                .admin("GET", &format!("/admin/v1/webhooks/{key}"), None)
                .await;
            assert_eq!(status, 200);
            check(&hook);
        }
        // A harmless PATCH answers the webhook masked too.
        let (status, hook) = gw
            .admin(
                "PATCH",
                &format!("/admin/v1/webhooks/{id}"),
                Some(json!({"description": "x"})),
            )
            .await;
        assert_eq!(status, 200, "{hook}");
        check(&hook);
    }
    let (_, list) = gw.admin("GET", "/admin/v1/webhooks", None).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 5);
    items.iter().for_each(check);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn patch_enabled_keeps_secrets() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({
        "name": "toggle", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "basic", "username": "svc", "password": "keep-me-pw"},
        "signing": {"secret": SECRET}
    }))
    .await;
    let (status, off) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/toggle",
            Some(json!({"enabled": false})),
        )
        .await;
    assert_eq!(status, 200, "{off}");
    assert_eq!(off["enabled"], false);
    assert_eq!(off["auth"]["password"], MASKED);
    let (_, body) = gw.post_event(json!({"type": "t", "data": 1})).await;
    assert_eq!(body["deliveries"], 0);

    let (status, on) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/toggle",
            Some(json!({"enabled": true})),
        )
        .await;
    assert_eq!(status, 200, "{on}");
    assert_eq!(on["enabled"], true);
    let (_, body) = gw.post_event(json!({"type": "t", "data": 2})).await;
    assert_eq!(body["deliveries"], 1);
    let got = rx.wait_for(1).await;
    let basic = got[0].header("authorization").unwrap();
    let decoded = STANDARD
        .decode(basic.strip_prefix("Basic ").unwrap())
        .unwrap();
    assert_eq!(String::from_utf8(decoded).unwrap(), "svc:keep-me-pw");
    verify_signature(&got[0], SECRET);
    assert_eq!(got[0].json()["data"], 2);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn put_with_masked_secrets_keeps_them() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (old_rx, new_rx) = (Receiver::start().await, Receiver::start().await);
    gw.create_webhook(json!({
        "name": "keep", "events": ["*"], "url": old_rx.url("/"),
        "auth": {"type": "api_key", "header": "X-Key", "value": "original-key"},
        "signing": {"secret": SECRET}
    }))
    .await;
    let (_, read) = gw.admin("GET", "/admin/v1/webhooks/keep", None).await;
    let mut spec = as_spec(read);
    assert_eq!(spec["auth"]["value"], MASKED);
    assert_eq!(spec["signing"]["secret"], MASKED);
    spec["url"] = json!(new_rx.url("/v2"));
    spec["description"] = json!("moved");
    // A masked key does not follow the new url (issue 19): it must be sent again. The signing
    // secret, sent nowhere, is kept.
    let (status, refused) = gw
        .admin("PUT", "/admin/v1/webhooks/keep", Some(spec.clone()))
        .await;
    assert_error(status, &refused, 422, "invalid_field");
    assert_eq!(refused["error"]["field"], "auth.value", "{refused}");
    spec["auth"]["value"] = json!("original-key");
    let (status, put) = gw.admin("PUT", "/admin/v1/webhooks/keep", Some(spec)).await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["description"], "moved");
    assert_eq!(put["auth"]["value"], MASKED);

    gw.post_event(json!({"type": "t", "data": {}})).await;
    let got = new_rx.wait_for(1).await;
    assert_eq!(got[0].path, "/v2");
    assert_eq!(got[0].header("x-key").as_deref(), Some("original-key"));
    verify_signature(&got[0], SECRET);
    assert_eq!(old_rx.count(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn put_changing_auth_type_with_masked_secret_is_refused() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({
        "name": "switch", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "api_key", "header": "X-Key", "value": "api-key-value"}
    }))
    .await;
    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/v1/webhooks/switch",
            Some(
                json!({"name": "switch", "events": ["*"], "url": rx.url("/"),
                        "auth": {"type": "bearer", "token": MASKED}}),
            ),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "auth.token", "{body}");
    // Nothing changed: still the api key, which still works.
    let (_, hook) = gw.admin("GET", "/admin/v1/webhooks/switch", None).await;
    assert_eq!(hook["auth"]["type"], "api_key");
    gw.post_event(json!({"type": "t", "data": {}})).await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].header("x-key").as_deref(), Some("api-key-value"));
    assert_eq!(got[0].header("authorization"), None);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn duplicate_name_is_a_conflict() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    gw.create_webhook(json!({"name": "one", "events": ["*"], "url": "https://a.example/"}))
        .await;
    gw.create_webhook(json!({"name": "two", "events": ["*"], "url": "https://b.example/"}))
        .await;
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"name": "one", "events": ["x"], "url": "https://c.example/"})),
        )
        .await;
    assert_error(status, &body, 409, "conflict");
    // Renaming onto a taken name is a conflict too.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/two",
            Some(json!({"name": "one"})),
        )
        .await;
    assert_error(status, &body, 409, "conflict");
    let (_, list) = gw.admin("GET", "/admin/v1/webhooks", None).await;
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["one", "two"]);
    let (_, one) = gw.admin("GET", "/admin/v1/webhooks/one", None).await;
    assert_eq!(one["url"], "https://a.example/");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_definitions_name_the_field() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let base = json!({"name": "v", "events": ["*"], "url": "https://a.example/"});
    let with = |k: &str, v: Value| {
        let mut s = base.clone();
        s[k] = v;
        s
    };
    let cases = [
        (with("url", json!("not a url")), "url"),
        (with("url", json!("ftp://a.example/")), "url"),
        (with("events", json!([])), "events"),
        (with("bogus", json!(1)), "bogus"),
        (with("timeout_ms", json!(0)), "timeout_ms"),
        (
            with("headers", json!({"bad header": "x"})),
            "headers.bad header",
        ),
        (
            with("headers", json!({"webhook-id": "x"})),
            "headers.webhook-id",
        ),
        (with("name", json!("has space")), "name"),
        (
            with("retry", json!({"max_attempts": 0})),
            "retry.max_attempts",
        ),
        (with("max_concurrency", json!(0)), "max_concurrency"),
        (
            with("signing", json!({"secret": "not-whsec"})),
            "signing.secret",
        ),
        (json!({"name": "v", "events": ["*"]}), "url"),
    ];
    for (spec, field) in cases {
        let (status, body) = gw
            .admin("POST", "/admin/v1/webhooks", Some(spec.clone()))
            .await;
        assert_error(status, &body, 422, "invalid_field");
        assert_eq!(body["error"]["field"], field, "spec {spec} answered {body}");
    }
    // Updates are validated the same way.
    gw.create_webhook(base.clone()).await;
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/v",
            Some(json!({"timeout_ms": 0})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "timeout_ms");
    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/v1/webhooks/v",
            Some(with("events", json!([]))),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "events");
    let (_, list) = gw.admin("GET", "/admin/v1/webhooks", None).await;
    assert_eq!(
        list["items"].as_array().unwrap().len(),
        1,
        "no invalid webhook was stored"
    );
    let (_, v) = gw.admin("GET", "/admin/v1/webhooks/v", None).await;
    assert_eq!(v["timeout_ms"], 10000);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_makes_pending_deliveries_dead() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    rx.set_default(Reply::status(503));
    gw.create_webhook(json!({"name": "gone", "events": ["*"], "url": rx.url("/"), "retry": {"max_attempts": 100}}))
        .await;
    let mut events = Vec::new();
    for i in 0..3 {
        let (_, body) = gw.post_event(json!({"type": "t", "data": i})).await;
        events.push(body["id"].as_str().unwrap().to_owned());
    }
    rx.wait_for(3).await;
    let ids: Vec<String> = gw
        .deliveries("webhook=gone&status=pending")
        .await
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 3);

    let (status, _) = gw.admin("DELETE", "/admin/v1/webhooks/gone", None).await;
    assert_eq!(status, 204);
    let (status, _) = gw.admin("GET", "/admin/v1/webhooks/gone", None).await;
    assert_eq!(status, 404);
    for id in &ids {
        eventually(
            Duration::from_secs(5),
            "deleted webhook's delivery is dead",
            || async {
                let d = gw.delivery(id).await;
                (d["status"] == "dead").then_some(())
            },
        )
        .await;
    }
    // Dead for good: no more attempts reach the receiver.
    let seen = rx.count();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.count(),
        seen,
        "a deleted webhook's deliveries are still being sent"
    );
    for id in &ids {
        assert_eq!(gw.delivery(id).await["status"], "dead");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_log_pages_cover_everything_once() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "pages", "events": ["*"], "url": rx.url("/")}))
        .await;
    let batch: Vec<Value> = (0..25).map(|i| json!({"type": "t", "data": i})).collect();
    let (status, _) = gw.post_batch(json!(batch)).await;
    assert_eq!(status, 202);
    gw.wait_for_status("pages", "succeeded", 25).await;

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/admin/v1/deliveries?webhook=pages&limit=10&cursor={c}"),
            None => "/admin/v1/deliveries?webhook=pages&limit=10".to_owned(),
        };
        let (status, page) = gw.admin("GET", &path, None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["items"].as_array().unwrap();
        sizes.push(items.len());
        seen.extend(items.iter().map(|d| d["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
        assert!(sizes.len() < 10, "paging does not end");
    }
    assert_eq!(sizes, [10, 10, 5]);
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), 25, "a delivery was listed twice");
    let delivered: HashSet<String> = rx
        .received()
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    assert_eq!(unique, delivered.iter().collect::<HashSet<_>>());
    // Newest first.
    let mut sorted = seen.clone();
    sorted.sort_by(|a, b| b.cmp(a));
    assert_eq!(seen, sorted);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_log_filters() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (good_rx, bad_rx) = (Receiver::start().await, Receiver::start().await);
    bad_rx.set_default(Reply::status(400));
    let good = gw
        .create_webhook(json!({"name": "good", "events": ["order.*"], "url": good_rx.url("/")}))
        .await;
    let bad = gw
        .create_webhook(json!({"name": "bad", "events": ["order.*"], "url": bad_rx.url("/")}))
        .await;
    for t in [
        "order.placed",
        "order.placed",
        "order.cancelled",
        "order.placed",
        "order.cancelled",
    ] {
        gw.post_event(json!({"type": t, "data": {}})).await;
    }
    gw.wait_for_status("good", "succeeded", 5).await;
    gw.wait_for_status("bad", "dead", 5).await;

    let count = |items: &[Value]| items.len();
    let dead = gw.deliveries("status=dead").await;
    assert_eq!(count(&dead), 5);
    assert!(dead
        .iter()
        .all(|d| d["webhook_id"] == bad["id"] && d["status"] == "dead"));
    let ok = gw.deliveries("status=succeeded").await;
    assert_eq!(count(&ok), 5);
    assert!(ok.iter().all(|d| d["webhook_id"] == good["id"]));
    let placed = gw.deliveries("event_type=order.placed").await;
    assert_eq!(count(&placed), 6);
    assert!(placed.iter().all(|d| d["event_type"] == "order.placed"));
    assert_eq!(
        count(
            &gw.deliveries("event_type=order.cancelled&webhook=bad&status=dead")
                .await
        ),
        2
    );
    assert_eq!(
        count(
            &gw.deliveries("event_type=order.cancelled&webhook=bad&status=succeeded")
                .await
        ),
        0
    );
    let by_id = gw
        .deliveries(&format!("webhook={}", good["id"].as_str().unwrap()))
        .await;
    assert_eq!(count(&by_id), 5);
    assert_eq!(count(&gw.deliveries("webhook=good").await), 5);
    assert_eq!(count(&gw.deliveries("event_type=order.shipped").await), 0);
    let dead_one = &dead[0];
    assert_eq!(dead_one["last_status"], 400);
    assert_eq!(dead_one["attempts"], 1);

    let (status, body) = gw
        .admin("GET", "/admin/v1/deliveries?status=bogus", None)
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "status");
    let (status, body) = gw
        .admin("GET", "/admin/v1/deliveries?webhook=nope", None)
        .await;
    assert_error(status, &body, 404, "not_found");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_delivery_is_404() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (status, body) = gw
        .admin("GET", "/admin/v1/deliveries/msg_doesnotexist", None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = gw
        .admin("POST", "/admin/v1/deliveries/msg_doesnotexist/replay", None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = gw
        .admin("POST", "/admin/v1/webhooks/nope/replay", None)
        .await;
    assert_error(status, &body, 404, "not_found");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn openapi_document_lists_only_served_routes() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "oa", "events": ["*"], "url": rx.url("/")}))
        .await;
    gw.post_event(json!({"type": "t", "data": {}})).await;
    let delivered = gw.wait_for_status("oa", "succeeded", 1).await;
    let delivery_id = delivered[0]["id"].as_str().unwrap().to_owned();

    let http = gw.client();
    let r = http
        .get(gw.admin_url("/admin/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    let (status, doc) = status_json(r).await;
    assert_eq!(status, 200, "{doc}");
    assert!(
        doc["openapi"]
            .as_str()
            .unwrap_or_default()
            .starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    assert!(doc["info"]["title"].is_string());
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 12, "only {} paths documented", paths.len());
    for p in [
        "/v1/events",
        "/admin/v1/webhooks/{id}",
        "/admin/v1/deliveries",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "{p} missing");
    }

    let fallback = json!({"error": {"code": "not_found", "message": "no such route"}});
    let mut ops = Vec::new();
    for (path, item) in paths {
        for method in ["get", "put", "post", "patch", "delete"] {
            if item.get(method).is_some() {
                ops.push((path.clone(), method));
            }
        }
    }
    // Deleting last, so every other operation sees the webhook.
    ops.sort_by_key(|(_, m)| *m == "delete");
    assert!(ops.len() >= 15, "only {} operations documented", ops.len());
    for (path, method) in ops {
        let concrete = if path.contains("/deliveries/") {
            path.replace("{id}", &delivery_id)
        } else {
            path.replace("{id}", "oa")
        };
        // Any other parameter gets a placeholder: the route must still exist.
        let concrete = concrete
            .split('/')
            .map(|seg| {
                if seg.starts_with('{') {
                    "placeholder"
                } else {
                    seg
                }
            })
            .collect::<Vec<_>>()
            .join("/");
        let (url, token) = if concrete.starts_with("/admin/") {
            (gw.admin_url(&concrete), ADMIN_TOKEN)
        } else {
            (gw.url(&concrete), INGEST_TOKEN)
        };
        let body = match (method, path.as_str()) {
            ("post", "/v1/events") => Some(json!({"type": "t", "data": {}})),
            ("post", "/v1/events/batch") => Some(json!([{"type": "t", "data": {}}])),
            ("post", "/admin/v1/webhooks") => {
                Some(json!({"name": "oa-new", "events": ["x"], "url": "https://a.example/"}))
            }
            ("put", "/admin/v1/webhooks/{id}") => {
                Some(json!({"name": "oa", "events": ["*"], "url": rx.url("/")}))
            }
            ("patch", "/admin/v1/webhooks/{id}") => Some(json!({"description": "patched"})),
            ("post", "/admin/v1/sources") => Some(json!({"name": "oa-src", "type": "amqp",
                "url": format!("amqp://127.0.0.1:{}/%2f", closed_port()), "queue": "q"})),
            ("post", "/admin/v1/connections") => {
                Some(json!({"name": "oa-conn", "auth": {"type": "bearer", "token": "t"}}))
            }
            ("post", "/admin/v1/event-types") => Some(json!({"name": "x"})),
            ("post", "/admin/v1/webhooks/{id}/test") => Some(json!({"type": "t", "data": {}})),
            _ => None,
        };
        let mut req = http
            .request(method.to_uppercase().parse().unwrap(), &url)
            .bearer_auth(token);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let (status, answer) = status_json(req.send().await.unwrap()).await;
        assert_ne!(
            answer, fallback,
            "{method} {concrete} is documented but not routed"
        );
        assert_ne!(
            status, 405,
            "{method} {concrete} is documented but the method is not served"
        );
        // Routes with only the known parameters get real ids and valid bodies: they succeed.
        if !concrete.contains("placeholder") {
            assert!(
                status.is_success(),
                "{method} {concrete} answered {status}: {answer}"
            );
        }
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn admin_routes_need_the_admin_token() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let http = gw.client();
    for (method, path) in [
        ("GET", "/admin/v1/webhooks"),
        ("POST", "/admin/v1/webhooks"),
        ("GET", "/admin/v1/webhooks/x"),
        ("DELETE", "/admin/v1/webhooks/x"),
        ("GET", "/admin/v1/deliveries"),
        ("POST", "/admin/v1/deliveries/x/replay"),
    ] {
        for token in [None, Some("wrong"), Some(INGEST_TOKEN)] {
            let mut req = http.request(method.parse().unwrap(), gw.admin_url(path));
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if method == "POST" {
                req = req
                    .json(&json!({"name": "sneaky", "events": ["*"], "url": "https://a.example/"}));
            }
            let (status, body) = status_json(req.send().await.unwrap()).await;
            assert_error(status, &body, 401, "unauthorized");
        }
    }
    // Not basic auth, not a token in another scheme.
    let r = http
        .get(gw.admin_url("/admin/v1/webhooks"))
        .header("authorization", format!("Token {ADMIN_TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let (_, list) = gw.admin("GET", "/admin/v1/webhooks", None).await;
    assert_eq!(
        list["items"],
        json!([]),
        "an unauthorised POST created a webhook"
    );
    gw.stop().await;
}

/// The value of the sample `name` (with labels, exactly as exposed) in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name)?
            .strip_prefix(' ')?
            .split(' ')
            .next()?
            .parse()
            .ok()
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_after_traffic() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (ok_rx, stuck_rx) = (Receiver::start().await, Receiver::start().await);
    stuck_rx.set_default(Reply::status(503));
    let tokens = TokenServer::start().await;
    let oauth_rx = Receiver::protected_by(&tokens).await;
    gw.create_webhook(json!({"name": "m-ok", "events": ["a"], "url": ok_rx.url("/")}))
        .await;
    gw.create_webhook(
        json!({"name": "m-stuck", "events": ["a"], "url": stuck_rx.url("/"),
                             "retry": {"max_attempts": 100}}),
    )
    .await;
    gw.create_webhook(json!({"name": "m-oauth", "events": ["o"], "url": oauth_rx.url("/"),
                             "auth": {"type": "oauth2_client_credentials", "token_url": tokens.url(),
                                      "client_id": "c", "client_secret": "s"}}))
        .await;
    let before = gw.metrics().await;
    assert_eq!(
        sample(&before, "hookyard_events_accepted_total"),
        Some(0.0),
        "{before}"
    );

    for _ in 0..3 {
        gw.post_event(json!({"type": "a", "data": {}})).await;
    }
    // A duplicate is not counted.
    gw.post_event(json!({"id": "m-dup", "type": "none", "data": {}}))
        .await;
    gw.post_event(json!({"id": "m-dup", "type": "none", "data": {}}))
        .await;
    gw.wait_for_status("m-ok", "succeeded", 3).await;
    eventually(Duration::from_secs(10), "retries of m-stuck", || async {
        (stuck_rx.count() >= 6).then_some(())
    })
    .await;

    let text = gw.metrics().await;
    assert_eq!(
        sample(&text, "hookyard_events_accepted_total"),
        Some(4.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"hookyard_delivery_attempts_total{outcome="succeeded"}"#
        ),
        Some(3.0),
        "{text}"
    );
    let retries = sample(
        &text,
        r#"hookyard_delivery_attempts_total{outcome="retry"}"#,
    )
    .unwrap_or(0.0);
    assert!(retries >= 5.0, "retries {retries}: {text}");
    assert_eq!(sample(&text, "hookyard_queue_depth"), Some(3.0), "{text}");
    let age =
        sample(&text, "hookyard_queue_oldest_due_age_seconds").expect("oldest due age exposed");
    assert!(
        (0.0..5.0).contains(&age),
        "implausible oldest due age {age}"
    );
    let count =
        sample(&text, "hookyard_delivery_attempt_duration_seconds_count").expect("histogram count");
    let sum =
        sample(&text, "hookyard_delivery_attempt_duration_seconds_sum").expect("histogram sum");
    assert!(
        count >= 3.0 + retries - 1.0,
        "{count} attempts timed, {retries} retries: {text}"
    );
    assert!(
        sum > 0.0 && sum < count * 1.0,
        "implausible duration sum {sum} for {count} attempts"
    );
    assert!(
        text.contains("hookyard_delivery_attempt_duration_seconds_bucket{le="),
        "{text}"
    );
    assert!(text.contains("# TYPE hookyard_queue_depth gauge"), "{text}");

    // OAuth2: one token fetched for two deliveries.
    gw.post_event(json!({"type": "o", "data": {}})).await;
    gw.post_event(json!({"type": "o", "data": {}})).await;
    gw.wait_for_status("m-oauth", "succeeded", 2).await;
    let text = gw.metrics().await;
    assert_eq!(
        sample(&text, r#"hookyard_oauth_token_fetches_total{outcome="ok"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"hookyard_oauth_token_fetches_total{outcome="error"}"#
        ),
        None,
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"hookyard_delivery_attempts_total{outcome="succeeded"}"#
        ),
        Some(5.0)
    );
    assert_eq!(sample(&text, "hookyard_events_accepted_total"), Some(6.0));
    gw.stop().await;
}
