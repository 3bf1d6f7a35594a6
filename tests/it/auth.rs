//! Outgoing authentication: static credentials, both OAuth2 grants, the token cache (one token for
//! concurrent deliveries, one refresh on a 401), a token server that is down, and redaction of
//! credentials in the Webhook Log.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use crate::common::*;

/// Asserts that none of `secrets` occurs anywhere in `value` (serialised).
fn assert_no_secrets(value: &Value, secrets: &[&str]) {
    let text = value.to_string();
    for secret in secrets {
        assert!(
            !text.contains(secret),
            "secret {secret:?} leaked into: {text}"
        );
    }
}

/// The value of header `name` in an attempt's logged request.
fn logged_header(attempt: &Value, name: &str) -> Option<String> {
    attempt["request"]["headers"]
        .as_array()?
        .iter()
        .find(|h| h[0].as_str().is_some_and(|n| n.eq_ignore_ascii_case(name)))
        .map(|h| h[1].as_str().unwrap_or_default().to_owned())
}

/// The single succeeded delivery of `hook`, with its attempts.
async fn only_delivery(gw: &TestGateway, hook: &str) -> Value {
    let items = gw.wait_for_status(hook, "succeeded", 1).await;
    assert_eq!(items.len(), 1);
    gw.delivery(items[0]["id"].as_str().unwrap()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn api_key_custom_header_arrives_and_is_redacted_in_log() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({
        "name": "ak", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "api_key", "header": "X-Partner-Key", "value": "pk-live-4711"}
    }))
    .await;
    gw.post_event(json!({"type": "user.created", "data": {}}))
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].header("x-partner-key").as_deref(),
        Some("pk-live-4711")
    );
    assert_eq!(got[0].header("authorization"), None);

    let detail = only_delivery(&gw, "ak").await;
    let attempt = &detail["attempts"][0];
    assert_eq!(
        logged_header(attempt, "x-partner-key").as_deref(),
        Some("[redacted]")
    );
    assert_no_secrets(&detail, &["pk-live-4711"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bearer_token_arrives_and_is_redacted_in_log() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({
        "name": "br", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "bearer", "token": "vpn-secret-token-99"}
    }))
    .await;
    gw.post_event(json!({"type": "user.created", "data": {}}))
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer vpn-secret-token-99")
    );

    let detail = only_delivery(&gw, "br").await;
    let attempt = &detail["attempts"][0];
    assert_eq!(
        logged_header(attempt, "authorization").as_deref(),
        Some("[redacted]")
    );
    assert_eq!(
        logged_header(attempt, "webhook-signature").as_deref(),
        Some("[redacted]")
    );
    assert_no_secrets(&detail, &["vpn-secret-token-99"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn basic_credentials_arrive_decoded() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({
        "name": "ba", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "basic", "username": "svc-hr", "password": "p@ss w:rd"}
    }))
    .await;
    gw.post_event(json!({"type": "user.created", "data": {}}))
        .await;
    let got = rx.wait_for(1).await;
    let header = got[0].header("authorization").unwrap();
    let encoded = header.strip_prefix("Basic ").expect("Basic scheme");
    let decoded = String::from_utf8(STANDARD.decode(encoded).unwrap()).unwrap();
    assert_eq!(decoded, "svc-hr:p@ss w:rd");

    let detail = only_delivery(&gw, "ba").await;
    assert_eq!(
        logged_header(&detail["attempts"][0], "authorization").as_deref(),
        Some("[redacted]")
    );
    assert_no_secrets(&detail, &["p@ss w:rd", encoded]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth2_password_grant_with_client_credentials() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = TokenServer::start().await;
    let rx = Receiver::protected_by(&tokens).await;
    gw.create_webhook(json!({
        "name": "op", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "oauth2_password", "token_url": tokens.url(), "username": "jdoe",
                 "password": "owner-pw-123", "client_id": "hy-client", "client_secret": "client-sec-456",
                 "scope": "users.write users.read"}
    }))
    .await;
    gw.post_event(json!({"type": "user.created", "data": {}}))
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer tok-1")
    );

    let grants = tokens.grants();
    assert_eq!(grants.len(), 1, "{grants:?}");
    let g = &grants[0];
    assert_eq!(g.param("grant_type"), Some("password"));
    assert_eq!(g.param("username"), Some("jdoe"));
    assert_eq!(g.param("password"), Some("owner-pw-123"));
    assert_eq!(g.param("scope"), Some("users.write users.read"));
    // Client authentication: HTTP Basic (RFC 6749 §2.3.1) or in the body.
    let basic = g
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .map(|b| String::from_utf8(STANDARD.decode(b).unwrap()).unwrap());
    let in_body = (g.param("client_id"), g.param("client_secret"));
    assert!(
        basic.as_deref() == Some("hy-client:client-sec-456")
            || in_body == (Some("hy-client"), Some("client-sec-456")),
        "client credentials not sent: {g:?}"
    );

    let detail = only_delivery(&gw, "op").await;
    assert_eq!(
        logged_header(&detail["attempts"][0], "authorization").as_deref(),
        Some("[redacted]")
    );
    assert_no_secrets(&detail, &["tok-1", "owner-pw-123", "client-sec-456"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth2_password_grant_without_client_sends_no_client_auth() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = TokenServer::start().await;
    let rx = Receiver::protected_by(&tokens).await;
    gw.create_webhook(json!({
        "name": "op2", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "oauth2_password", "token_url": tokens.url(), "username": "jdoe", "password": "pw"}
    }))
    .await;
    gw.post_event(json!({"type": "user.created", "data": {}}))
        .await;
    rx.wait_for(1).await;
    let g = &tokens.grants()[0];
    assert_eq!(g.param("grant_type"), Some("password"));
    assert_eq!(g.authorization, None, "{g:?}");
    assert_eq!(g.param("client_id"), None, "{g:?}");
    assert_eq!(g.param("scope"), None, "{g:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth2_client_credentials_grant() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = TokenServer::start().await;
    let rx = Receiver::protected_by(&tokens).await;
    gw.create_webhook(json!({
        "name": "cc", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "oauth2_client_credentials", "token_url": tokens.url(),
                 "client_id": "machine-1", "client_secret": "cc-secret-789", "scope": "events"}
    }))
    .await;
    gw.post_event(json!({"type": "user.created", "data": {}}))
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer tok-1")
    );
    let grants = tokens.grants();
    assert_eq!(grants.len(), 1);
    let g = &grants[0];
    assert_eq!(g.param("grant_type"), Some("client_credentials"));
    assert_eq!(g.param("scope"), Some("events"));
    assert_eq!(g.param("username"), None);
    let basic = g
        .authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Basic "))
        .map(|b| String::from_utf8(STANDARD.decode(b).unwrap()).unwrap());
    let in_body = (g.param("client_id"), g.param("client_secret"));
    assert!(
        basic.as_deref() == Some("machine-1:cc-secret-789")
            || in_body == (Some("machine-1"), Some("cc-secret-789")),
        "client authentication missing: {g:?}"
    );
    let detail = only_delivery(&gw, "cc").await;
    assert_no_secrets(&detail, &["tok-1", "cc-secret-789"]);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn oauth2_token_is_fetched_once_for_concurrent_deliveries_and_refreshed_once_on_401() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = TokenServer::start().await;
    let rx = Receiver::protected_by(&tokens).await;
    // Every delivery answers slowly, so all 30 are in flight together.
    rx.set_default(Reply::status(200).delay(Duration::from_millis(100)));
    gw.create_webhook(json!({
        "name": "cache", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "oauth2_password", "token_url": tokens.url(), "username": "u", "password": "pw-cache"}
    }))
    .await;
    let batch: Vec<Value> = (0..30)
        .map(|i| json!({"type": "user.updated", "data": {"i": i}}))
        .collect();
    let (status, body) = gw.post_batch(json!(batch)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["accepted"], 30);
    let got = rx.wait_for(30).await;
    assert!(got
        .iter()
        .all(|r| r.header("authorization").as_deref() == Some("Bearer tok-1")));
    assert_eq!(
        tokens.issued(),
        1,
        "30 concurrent deliveries must share one token fetch"
    );
    gw.wait_for_status("cache", "succeeded", 30).await;

    // The token is revoked early: the next deliveries get a 401, refresh once and resend.
    tokens.revoke_all();
    let batch: Vec<Value> = (0..10)
        .map(|i| json!({"type": "user.updated", "data": {"j": i}}))
        .collect();
    let (status, _) = gw.post_batch(json!(batch)).await;
    assert_eq!(status, 202);
    let got = rx.wait_for(40).await;
    assert!(got[30..]
        .iter()
        .all(|r| r.header("authorization").as_deref() == Some("Bearer tok-2")));
    assert_eq!(
        tokens.issued(),
        2,
        "one refresh for all the 401s, not one per delivery"
    );
    assert!(tokens.rejected() >= 1, "the stale token was never refused");
    let items = gw.wait_for_status("cache", "succeeded", 40).await;
    assert_eq!(items.len(), 40);
    assert!(gw.deliveries("webhook=cache&status=dead").await.is_empty());
    // A delivery refused with the stale token shows two attempts: the 401, then the one sent
    // with the refreshed token; one sent after the refresh shows one.
    for item in &items[..10] {
        let detail = gw.delivery(item["id"].as_str().unwrap()).await;
        let attempts = detail["attempts"].as_array().unwrap();
        assert!((1..=2).contains(&attempts.len()), "{detail}");
        if attempts.len() == 2 {
            assert_eq!(attempts[0]["response_status"], 401, "{detail}");
            assert_eq!(attempts[0]["outcome"], "retry", "{detail}");
        }
        let last = attempts.last().unwrap();
        assert_eq!(last["outcome"], "succeeded");
        assert_eq!(last["response_status"], 200);
        assert_no_secrets(&detail, &["tok-1", "tok-2", "pw-cache"]);
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn token_server_down_retries_then_dead_without_leaking_password() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let token_url = format!("http://127.0.0.1:{}/token", closed_port());
    gw.create_webhook(json!({
        "name": "down", "events": ["*"], "url": rx.url("/"), "retry": {"max_attempts": 3},
        "auth": {"type": "oauth2_password", "token_url": token_url, "username": "u",
                 "password": "never-show-this-pw", "client_id": "c", "client_secret": "never-show-this-cs"}
    }))
    .await;
    gw.post_event(json!({"type": "user.created", "data": {}}))
        .await;
    let dead = gw.wait_for_status("down", "dead", 1).await;
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(
        attempts.len(),
        3,
        "a down token server is retried: {detail}"
    );
    assert_eq!(attempts[0]["outcome"], "retry");
    assert_eq!(attempts[2]["outcome"], "dead");
    let error = detail["last_error"]
        .as_str()
        .unwrap_or_default()
        .to_lowercase();
    assert!(
        error.contains("token"),
        "error does not mention the token: {error}"
    );
    // The token server is on an allow-listed address: the failure is that it is down, not SSRF.
    assert!(
        !error.contains("ssrf"),
        "a down token server is reported as SSRF: {error}"
    );
    assert_eq!(rx.count(), 0, "nothing is sent without a token");
    assert_no_secrets(&detail, &["never-show-this-pw", "never-show-this-cs"]);
    let (_, log) = gw
        .admin("GET", "/admin/v1/deliveries?webhook=down", None)
        .await;
    assert_no_secrets(&log, &["never-show-this-pw", "never-show-this-cs"]);
    gw.stop().await;
}
