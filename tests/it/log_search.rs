//! The searchable Webhook Log over HTTP: its query parameters (text, globs, sources, origins,
//! time ranges, bad values), refused inbound pushes in the log (each status, body capped,
//! credentials redacted, sampled), the two attempts of a token refresh, and the plugin version
//! each attempt names.

use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::plugins::{rust_plugin, upload_ok};

/// The event ids of the deliveries a query finds, sorted.
async fn event_ids(gw: &TestGateway, query: &str) -> Vec<String> {
    let mut ids: Vec<String> = gw
        .deliveries(query)
        .await
        .iter()
        .map(|d| d["event_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    ids.sort();
    ids
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn the_log_is_searched_by_text_type_source_and_time() {
    let dir = temp_dir();
    let rx = Receiver::start().await;
    let sink = Receiver::start().await;
    let mut config = test_config(dir.path());
    config.sink.url = sink.url("/hookyard");
    let gw = TestGateway::start(config).await;
    gw.create_webhook(json!({"name": "hr", "events": ["*"], "url": rx.url("/")}))
        .await;
    let before = time::OffsetDateTime::now_utc() - Duration::from_secs(1);
    for (id, kind, data) in [
        (
            "s-1",
            "user.created",
            json!({"email": "ann@example.com", "name": "Ann"}),
        ),
        ("s-2", "user.deleted", json!({"email": "bob@example.org"})),
        ("s-3", "location.created", json!({"code": "ZRH-42"})),
    ] {
        let (status, body) = gw
            .post_event(json!({"id": id, "type": kind, "data": data}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    gw.wait_for_status("hr", "succeeded", 3).await;
    let after = time::OffsetDateTime::now_utc() + Duration::from_secs(1);
    let rfc = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };

    assert_eq!(
        event_ids(&gw, "q=ann%40example.com").await,
        sorted(&["s-1"])
    );
    assert_eq!(event_ids(&gw, "q=EXAMPLE").await, sorted(&["s-1", "s-2"]));
    assert_eq!(event_ids(&gw, "q=zrh-42").await, sorted(&["s-3"]));
    assert_eq!(event_ids(&gw, "q=s-2").await, sorted(&["s-2"]), "the id");
    assert!(event_ids(&gw, "q=carol").await.is_empty());
    assert_eq!(
        event_ids(&gw, "event_type=user.*").await,
        sorted(&["s-1", "s-2"])
    );
    assert_eq!(
        event_ids(&gw, "event_type=user.deleted,location.*").await,
        sorted(&["s-2", "s-3"])
    );
    assert_eq!(
        event_ids(&gw, "event_type=user.created&event_type=*.created").await,
        sorted(&["s-1", "s-3"])
    );
    assert_eq!(
        event_ids(&gw, "source=webhook&webhook=hr").await,
        sorted(&["s-1", "s-2", "s-3"])
    );
    assert!(event_ids(&gw, "source=sink").await.is_empty());
    assert!(event_ids(&gw, "source=test").await.is_empty());
    let since = rfc(before).replace('+', "%2B");
    let until = rfc(after).replace('+', "%2B");
    assert_eq!(event_ids(&gw, &format!("since={since}")).await.len(), 3);
    assert_eq!(
        event_ids(&gw, &format!("since={since}&until={until}&q=bob"))
            .await
            .len(),
        1
    );
    assert!(event_ids(&gw, &format!("until={since}")).await.is_empty());
    assert!(event_ids(&gw, &format!("since={until}")).await.is_empty());

    // Bad values: 422 naming the parameter; unknown parameters 400; unknown webhooks 404.
    for (query, field) in [
        ("since=yesterday", "since"),
        ("until=2026-12-07", "until"),
        ("source=elsewhere", "source"),
        ("q=%21%21%21", "q"),
        ("limit=0", "limit"),
        ("status=lost", "status"),
    ] {
        let (status, body) = gw
            .admin("GET", &format!("/admin/v1/deliveries?{query}"), None)
            .await;
        assert_error(status, &body, 422, "invalid_field");
        assert_eq!(body["error"]["field"], field, "{query}: {body}");
    }
    let (status, body) = gw
        .admin("GET", "/admin/v1/deliveries?colour=red", None)
        .await;
    assert_error(status, &body, 400, "invalid_query");
    let (status, body) = gw
        .admin("GET", "/admin/v1/deliveries?origin=nobody", None)
        .await;
    assert_error(status, &body, 404, "not_found");
    gw.stop().await;
}

/// A gateway with a sink and an inbound webhook `src` taking `X-API-Key: in-key` and
/// identified by `email`.
async fn inbound_gateway(dir: &TestDir, sink: &Receiver, per_minute: u32) -> TestGateway {
    let mut config = test_config(dir.path());
    config.sink.url = sink.url("/hookyard");
    config.refusals.per_webhook_per_minute = per_minute;
    config.refusals.body_bytes = 64;
    let gw = TestGateway::start(config).await;
    gw.create_webhook(json!({
        "name": "src", "events": ["none"], "url": "http://127.0.0.1:9/",
        "inbound": {"auth": {"type": "api_key", "header": "X-API-Key", "value": "in-key"},
                    "entity": "user", "identify_by": ["email"]}
    }))
    .await;
    gw.create_webhook(json!({
        "name": "signed", "events": ["none"], "url": "http://127.0.0.1:9/",
        "inbound": {"auth": {"type": "standard_webhooks",
                             "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
                    "entity": "user", "identify_by": ["email"]}
    }))
    .await;
    gw
}

async fn push(gw: &TestGateway, name: &str, headers: &[(&str, &str)], body: &str) -> u16 {
    let mut req = gw
        .client()
        .post(gw.url(&format!("/v1/inbound/{name}")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap().status().as_u16()
}

/// The refused pushes in the log, oldest first, with their attempts.
async fn refusals(gw: &TestGateway, n: usize) -> Vec<Value> {
    let items = eventually(
        Duration::from_secs(20),
        &format!("{n} refused pushes in the log"),
        || async {
            let items = gw.deliveries("source=inbound").await;
            (items.len() >= n).then_some(items)
        },
    )
    .await;
    let mut detailed = Vec::new();
    for item in items.iter().rev() {
        detailed.push(gw.delivery(item["id"].as_str().unwrap()).await);
    }
    detailed
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_inbound_pushes_are_logged_with_reason_capped_body_and_no_credentials() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = inbound_gateway(&dir, &sink, 100).await;
    let key = [("x-api-key", "in-key")];
    let long = format!("{{\"email\": \"{}\"}}", "x".repeat(200));
    // (what the case is, request headers, body, expected status)
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String, u16);
    let cases: Vec<Case<'_>> = vec![
        (
            "src",
            vec![
                ("x-api-key", "wrong-key"),
                ("authorization", "Bearer leaked"),
            ],
            r#"{"email": "a@x.org"}"#.into(),
            401,
        ),
        ("nope", key.to_vec(), r#"{"email": "b@x.org"}"#.into(), 401),
        ("src", key.to_vec(), "{not json".into(), 400),
        ("src", key.to_vec(), r#"{"name": "no email"}"#.into(), 422),
        ("src", key.to_vec(), long.clone(), 0),
    ];
    for (name, headers, body, want) in &cases {
        let got = push(&gw, name, headers, body).await;
        if *want != 0 {
            assert_eq!(got, *want, "{name} {body}");
        }
    }
    // A replayed signed message: 409.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let body = r#"{"email": "c@x.org"}"#;
    let ts = (time::OffsetDateTime::now_utc().unix_timestamp()).to_string();
    let signature = sign(secret, "msg-1", &ts, body);
    let signed = [
        ("webhook-id", "msg-1"),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", signature.as_str()),
    ];
    assert_eq!(push(&gw, "signed", &signed, body).await, 202);
    assert_eq!(push(&gw, "signed", &signed, body).await, 409);

    let logged = refusals(&gw, 5).await;
    let statuses: Vec<u64> = logged
        .iter()
        .map(|d| d["last_status"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, vec![401, 401, 400, 422, 409], "{logged:?}");
    for d in &logged {
        assert_eq!(d["status"], "dead", "{d}");
        assert_eq!(d["source"], "inbound", "{d}");
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{d}");
        let a = &attempts[0];
        assert_eq!(a["request"]["method"], "POST");
        assert!(a["error"].as_str().is_some_and(|e| !e.is_empty()), "{d}");
        assert!(a["response_body"].as_str().unwrap().contains("\"error\""));
        let text = d.to_string();
        for secret in ["in-key", "wrong-key", "leaked", signature.as_str()] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    // The real reason of a 401 is in the log (the caller only heard "unauthorized"), with the
    // body read for the log all the same.
    let wrong = &logged[0]["attempts"][0];
    assert_eq!(wrong["error"], "missing or wrong API key");
    assert_eq!(wrong["request"]["body"], r#"{"email": "a@x.org"}"#);
    let unknown = &logged[1];
    assert_eq!(unknown["attempts"][0]["error"], "no such webhook");
    assert_eq!(unknown["webhook_id"], "");
    assert_eq!(logged[2]["attempts"][0]["request"]["body"], "{not json");
    let webhook_src = gw.admin("GET", "/admin/v1/webhooks/src", None).await.1;
    let src_id = webhook_src["id"].as_str().unwrap();
    assert_eq!(logged[0]["origin"], src_id);
    assert_eq!(
        gw.deliveries("source=inbound&origin=src").await.len(),
        3,
        "401 (wrong key), 400, 422"
    );
    // The long body was accepted (identified by email): not a refusal, not logged.
    assert_eq!(logged.len(), 5);

    // Not replayable.
    let id = logged[0]["id"].as_str().unwrap();
    let (status, body) = gw
        .admin("POST", &format!("/admin/v1/deliveries/{id}/replay"), None)
        .await;
    assert_error(status, &body, 409, "not_replayable");
    assert_eq!(
        gw.metric("hookyard_inbound_refused_total{status=\"401\"}")
            .await,
        Some(2.0)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_bodies_are_capped_and_floods_are_sampled() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let gw = inbound_gateway(&dir, &sink, 3).await;
    let long = format!("{{\"name\": \"{}\"}}", "y".repeat(500));
    for _ in 0..10 {
        assert_eq!(
            push(&gw, "src", &[("x-api-key", "in-key")], &long).await,
            422
        );
    }
    let logged = refusals(&gw, 3).await;
    let body = logged[0]["attempts"][0]["request"]["body"]
        .as_str()
        .unwrap();
    assert_eq!(body.len(), 64, "capped at refusals.body_bytes");
    assert!(long.starts_with(body));
    // Three logged (the bucket), seven counted.
    let unlogged = eventually(Duration::from_secs(10), "unlogged count", || async {
        gw.metric("hookyard_inbound_refused_unlogged_total")
            .await
            .filter(|n| *n >= 7.0)
    })
    .await;
    assert_eq!(unlogged, 7.0);
    assert_eq!(gw.deliveries("source=inbound").await.len(), 3);
    gw.stop().await;
}

/// Standard Webhooks signature of `body`.
fn sign(secret: &str, id: &str, ts: &str, body: &str) -> String {
    use base64::Engine as _;
    use hmac::Mac as _;
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// A 401 answered by a token refresh and the request sent again are two attempts in the log:
/// the refused one (401, retry) and the one that went through.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_refresh_is_two_attempts() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = TokenServer::start().await;
    let rx = Receiver::protected_by(&tokens).await;
    gw.create_webhook(json!({
        "name": "oauth", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "oauth2_client_credentials", "token_url": tokens.url(),
                 "client_id": "c", "client_secret": "s-secret"}
    }))
    .await;
    gw.post_event(json!({"type": "user.created", "data": {"n": 1}}))
        .await;
    gw.wait_for_status("oauth", "succeeded", 1).await;
    tokens.revoke_all();
    gw.post_event(json!({"id": "second", "type": "user.created", "data": {"n": 2}}))
        .await;
    let done = eventually(Duration::from_secs(20), "the second delivery", || async {
        gw.deliveries("webhook=oauth&status=succeeded&event_id=second")
            .await
            .pop()
    })
    .await;
    let detail = gw.delivery(done["id"].as_str().unwrap()).await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{detail}");
    assert_eq!(attempts[0]["attempt_no"], 1);
    assert_eq!(attempts[0]["response_status"], 401);
    assert_eq!(attempts[0]["outcome"], "retry");
    assert_eq!(attempts[1]["attempt_no"], 2);
    assert_eq!(attempts[1]["response_status"], 200);
    assert_eq!(attempts[1]["outcome"], "succeeded");
    assert_eq!(done["attempts"], 2, "both count: {done}");
    assert_eq!(tokens.issued(), 2);
    let text = detail.to_string();
    for secret in ["tok-1", "tok-2", "s-secret"] {
        assert!(!text.contains(secret), "{secret} in {text}");
    }
    gw.stop().await;
}

/// Each attempt names the plugin version that shaped it; without a plugin, none.
#[tokio::test(flavor = "multi_thread")]
async fn attempts_name_the_plugin_version_that_shaped_them() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "field-map", rust_plugin("field_map")).await;
    gw.create_webhook(json!({
        "name": "mapped", "events": ["*"], "url": rx.url("/"),
        "plugin": {"name": "field-map", "config": {
            "request": [{"api_field": "emp_id", "field": "id"}]}}
    }))
    .await;
    gw.create_webhook(json!({"name": "plain", "events": ["*"], "url": rx.url("/")}))
        .await;
    gw.post_event(json!({"type": "user.created", "data": {"id": 7}}))
        .await;
    for (name, plugin) in [
        ("mapped", json!({"name": "field-map", "version": 1})),
        ("plain", Value::Null),
    ] {
        let items = gw.wait_for_status(name, "succeeded", 1).await;
        let detail = gw.delivery(items[0]["id"].as_str().unwrap()).await;
        assert_eq!(detail["attempts"][0]["plugin"], plugin, "{detail}");
    }
    gw.stop().await;
}
