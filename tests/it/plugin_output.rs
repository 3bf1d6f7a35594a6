//! A plugin's output is checked like static headers (issue 19, point 5): a plugin cannot forge
//! transport, signature or auth headers, nor climb out of the webhook's path. Each case of the
//! issue is reproduced with the `scripted` fixture, whose config is the request it returns.

use serde_json::{json, Value};

use crate::common::*;
use crate::plugins::{rust_plugin, upload_ok};

/// The attempt errors of `webhook`'s one delivery, once it reached `status`.
async fn errors(gw: &TestGateway, webhook: &str, status: &str) -> Vec<String> {
    let done = gw.wait_for_status(webhook, status, 1).await;
    let detail = gw.delivery(done[0]["id"].as_str().unwrap()).await;
    detail["attempts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["error"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn forged_headers_and_escaping_paths_are_refused() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "scripted", rust_plugin("scripted")).await;

    let refused: Vec<(&str, Value, &str)> = vec![
        (
            "forged-host",
            json!({"headers": [["host", "127.0.0.2:9001"]]}),
            "header \"host\" is set by the gateway",
        ),
        (
            "forged-signature",
            json!({"headers": [["webhook-signature", "v1,forged"]]}),
            "header \"webhook-signature\" is set by the gateway",
        ),
        (
            "short-body",
            json!({"headers": [["Content-Length", "3"]]}),
            "header \"content-length\" is set by the gateway",
        ),
        (
            "chunked",
            json!({"headers": [["transfer-encoding", "chunked"]]}),
            "header \"transfer-encoding\" is set by the gateway",
        ),
        (
            "proxy",
            json!({"headers": [["proxy-authorization", "Basic eDp5"]]}),
            "header \"proxy-authorization\" is set by the gateway",
        ),
        (
            "escape",
            json!({"path": "/../../../admin/v1/webhooks"}),
            "leaves the webhook's path",
        ),
        (
            "escape-encoded",
            json!({"path": "/%2e%2e/%2E%2E/admin"}),
            "leaves the webhook's path",
        ),
        (
            "escape-backslash",
            json!({"path": "\\..\\..\\admin"}),
            "leaves the webhook's path",
        ),
        (
            "bad-query",
            json!({"query": "a=%zz"}),
            "has a malformed percent escape",
        ),
    ];
    for (name, config, _) in &refused {
        gw.create_webhook(
            json!({"name": name, "events": ["t"], "url": rx.url("/p-evil"),
            "plugin": {"name": "scripted", "config": config, "on_error": "dead_letter"}}),
        )
        .await;
    }
    // The webhook's own bearer token cannot be replaced by the plugin's.
    gw.create_webhook(
        json!({"name": "forged-auth", "events": ["t"], "url": rx.url("/p-evil"),
        "auth": {"type": "bearer", "token": "real-token"},
        "plugin": {"name": "scripted", "on_error": "skip",
                   "config": {"headers": [["Authorization", "Bearer forged"]]}}}),
    )
    .await;
    // What a plugin may do goes through: its own headers, a path under the webhook's (after
    // normalisation), a query added to the URL's own.
    gw.create_webhook(
        json!({"name": "fine", "events": ["t"], "url": rx.url("/p-evil?k=1"),
        "plugin": {"name": "scripted", "config": {
            "method": "PUT", "path": "/a/./b//c/../d", "query": "x=1&y=%20",
            "content_type": "text/plain", "headers": [["x-trace", "t-1"]]}}}),
    )
    .await;

    gw.post_event(json!({"type": "t", "data": {"n": 1}})).await;

    for (name, _, message) in &refused {
        let errors = errors(&gw, name, "dead").await;
        assert_eq!(errors.len(), 1, "{name}: dead_letter does not retry");
        assert!(
            errors[0].starts_with("plugin: scripted v1: ") && errors[0].contains(message),
            "{name}: {}",
            errors[0]
        );
    }
    let skipped = errors(&gw, "forged-auth", "skipped").await;
    assert!(
        skipped[0].contains("header \"authorization\" is set by the webhook's auth"),
        "{}",
        skipped[0]
    );

    let sent = rx.wait_for(1).await;
    let done = gw.wait_for_status("fine", "succeeded", 1).await;
    assert_eq!(
        sent.len(),
        1,
        "only the acceptable request was sent: {sent:?}"
    );
    let request = &sent[0];
    assert_eq!(request.method, "PUT");
    assert_eq!(request.path, "/p-evil/a/b/d?k=1&x=1&y=%20");
    assert_eq!(request.header("x-trace").as_deref(), Some("t-1"));
    assert_eq!(
        request.header("content-type").as_deref(),
        Some("text/plain")
    );
    assert_eq!(
        request.headers.get_all("webhook-signature").iter().count(),
        1
    );
    // The body is whole and is what the log shows as sent.
    let body = request.json();
    assert_eq!(body["data"], json!({"n": 1}));
    let detail = gw.delivery(done[0]["id"].as_str().unwrap()).await;
    let logged = &detail["attempts"][0]["request"];
    assert_eq!(
        logged["body"].as_str().unwrap().as_bytes(),
        &request.body[..]
    );
    assert!(
        logged["url"]
            .as_str()
            .unwrap()
            .ends_with("/p-evil/a/b/d?k=1&x=1&y=%20"),
        "{logged}"
    );
    assert_eq!(rx.count(), 1, "nothing else reached the receiver");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn static_headers_share_the_reserved_list() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    for (headers, auth, field) in [
        (
            json!({"Proxy-Authorization": "x"}),
            json!({"type": "none"}),
            "headers.Proxy-Authorization",
        ),
        (
            json!({"webhook-anything": "x"}),
            json!({"type": "none"}),
            "headers.webhook-anything",
        ),
        (
            json!({"Keep-Alive": "x"}),
            json!({"type": "none"}),
            "headers.Keep-Alive",
        ),
        (
            json!({"Authorization": "x"}),
            json!({"type": "bearer", "token": "t"}),
            "headers.Authorization",
        ),
        (
            json!({"X-Key": "x"}),
            json!({"type": "api_key", "header": "x-key", "value": "v"}),
            "headers.X-Key",
        ),
    ] {
        let (status, body) = gw
            .admin(
                "POST",
                "/admin/v1/webhooks",
                Some(
                    json!({"name": "h", "events": ["t"], "url": "http://127.0.0.1:1/",
                    "headers": headers, "auth": auth}),
                ),
            )
            .await;
        assert_eq!(status, 422, "{body}");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    // Without auth, a static authorization header is the admin's own business.
    gw.create_webhook(
        json!({"name": "ok", "events": ["t"], "url": "http://127.0.0.1:1/",
        "headers": {"Authorization": "Token x"}}),
    )
    .await;
    gw.stop().await;
}
