//! Secrets (issue 19): encrypted at rest on both stores (what the database holds is read
//! directly), a plaintext store migrated at start-up, key rotation, a wrong key refused with a
//! clear error, private file modes, a stored secret never following a new destination (422),
//! redaction of URL credentials and secret headers in the API and the Webhook Log, token
//! server errors scrubbed of every encoding of the secrets, refused token URLs dead at once,
//! path-like names refused.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::common::*;

const TOKEN: &str = "bearer-s3cret-0001";
const HEADER_SECRET: &str = "hdr-s3cret-0002";
const URL_PASSWORD: &str = "urlpass0003";
const QUERY_TOKEN: &str = "qtok0004";
const INBOUND_SECRET: &str = "inb-s3cret-0005";
const SIGNING: &str = "whsec_c2lnbmluZy1zZWNyZXQtMDAwNg==";
const ALL: &[&str] = &[
    TOKEN,
    HEADER_SECRET,
    URL_PASSWORD,
    QUERY_TOKEN,
    INBOUND_SECRET,
    SIGNING,
];

fn key(seed: u8) -> String {
    STANDARD.encode([seed; 32])
}

/// A webhook holding one secret of every kind, delivering to `rx`.
fn secret_spec(rx: &Receiver) -> Value {
    let url = rx.url(&format!("/in?token={QUERY_TOKEN}&page=1")).replacen(
        "http://",
        &format!("http://user:{URL_PASSWORD}@"),
        1,
    );
    json!({
        "name": "vault", "events": ["*"], "url": url,
        "headers": {"X-Static-Token": HEADER_SECRET, "X-Plain": "plain-value"},
        "secret_headers": ["x-static-token"],
        "auth": {"type": "bearer", "token": TOKEN},
        "signing": {"secret": SIGNING},
    })
}

/// What the database holds for the webhooks, read directly (SQLite: every byte of the database
/// and its WAL; PostgreSQL: the rows of the test's schema).
fn stored_bytes(dir: &Path) -> String {
    if on_postgres() {
        let schema = schema_name(dir);
        postgres_query(&format!("SELECT spec FROM {schema}.webhooks"))
            .expect("read webhooks")
            .join("\n")
    } else {
        let mut text = String::new();
        for file in ["hookyard.db", "hookyard.db-wal"] {
            if let Ok(bytes) = std::fs::read(dir.join(file)) {
                text.push_str(&String::from_utf8_lossy(&bytes));
            }
        }
        text
    }
}

/// Replaces the stored spec of webhook `name` with `spec` (as an older version wrote it).
fn write_stored_spec(dir: &Path, name: &str, spec: &Value) {
    let text = spec.to_string();
    if on_postgres() {
        let schema = schema_name(dir);
        let escaped = text.replace('\'', "''");
        postgres_execute(&format!(
            "UPDATE {schema}.webhooks SET spec = '{escaped}' WHERE name = '{name}'"
        ))
        .expect("update spec");
    } else {
        let conn = rusqlite::Connection::open(dir.join("hookyard.db")).expect("open db");
        let n = conn
            .execute(
                "UPDATE webhooks SET spec = ?1 WHERE name = ?2",
                rusqlite::params![text, name],
            )
            .expect("update spec");
        assert_eq!(n, 1);
    }
}

fn assert_absent(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "{secret:?} found in: {text}");
    }
}

/// Sends one event and returns the request `rx` got (the `n`-th).
async fn deliver_one(gw: &TestGateway, rx: &Receiver, n: usize) -> Received {
    let (status, body) = gw.post_event(json!({"type": "t", "data": {}})).await;
    assert_eq!(status, 202, "{body}");
    rx.wait_for(n).await.remove(n - 1)
}

fn config_with_keys(dir: &Path, keys: &str) -> hookyard::config::Config {
    let mut config = test_config(dir);
    config.store.secret_key = keys.to_owned();
    config
}

#[tokio::test(flavor = "multi_thread")]
async fn secrets_are_ciphertext_in_the_database_and_clear_on_the_wire() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let mut spec = secret_spec(&rx);
    spec["inbound"] =
        json!({"enabled": false, "auth": {"type": "bearer", "token": INBOUND_SECRET}});
    gw.create_webhook(spec).await;

    let got = deliver_one(&gw, &rx, 1).await;
    assert_eq!(got.header("authorization"), Some(format!("Bearer {TOKEN}")));
    assert_eq!(got.header("x-static-token").as_deref(), Some(HEADER_SECRET));
    gw.stop().await;

    let stored = stored_bytes(dir.path());
    assert!(stored.contains("enc:v1:"), "no ciphertext stored: {stored}");
    assert!(
        stored.contains("plain-value"),
        "what is not secret stays readable"
    );
    assert_absent(&stored, ALL);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plaintext_store_is_migrated_at_start_up() {
    let dir = temp_dir();
    let config = test_config(dir.path());
    let gw = TestGateway::start(config.clone()).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({
        "name": "old", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "bearer", "token": "placeholder"},
    }))
    .await;
    gw.stop().await;
    // What a version without encryption stored: the secrets in clear.
    write_stored_spec(
        dir.path(),
        "old",
        &json!({
            "name": "old", "events": ["*"], "url": rx.url("/"), "enabled": true,
            "auth": {"type": "bearer", "token": TOKEN},
            "signing": {"enabled": true, "secret": SIGNING},
        }),
    );
    assert!(stored_bytes(dir.path()).contains(TOKEN) || !on_postgres());

    // On PostgreSQL two gateways start at once on the store: both migrate, neither fails.
    let a = if on_postgres() {
        let (a, b) = tokio::join!(
            TestGateway::start(config.clone()),
            TestGateway::start(config.clone())
        );
        b.stop().await;
        a
    } else {
        TestGateway::start(config.clone()).await
    };
    let got = deliver_one(&a, &rx, 1).await;
    assert_eq!(got.header("authorization"), Some(format!("Bearer {TOKEN}")));
    a.stop().await;
    // The database's current rows (the SQLite WAL may still hold the page written before).
    let specs = current_specs(dir.path());
    assert!(specs.contains("enc:v1:"), "{specs}");
    assert_absent(&specs, &[TOKEN, SIGNING]);
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_rotate_and_a_wrong_key_is_a_clear_error() {
    let dir = temp_dir();
    let rx = Receiver::start().await;
    let (old, new) = (key(1), key(2));
    let gw = TestGateway::start(config_with_keys(dir.path(), &old)).await;
    gw.create_webhook(json!({
        "name": "rotating", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "bearer", "token": TOKEN},
    }))
    .await;
    gw.stop().await;
    let old_id = hookyard::secrets::key_id(&[1; 32]);
    let new_id = hookyard::secrets::key_id(&[2; 32]);
    assert!(stored_bytes(dir.path()).contains(&format!("enc:v1:{old_id}:")));

    // Step 2 of the rotation: the new key first, the old one still there to decrypt.
    let gw = TestGateway::start(config_with_keys(dir.path(), &format!("{new},{old}"))).await;
    gw.stop().await;
    let specs = current_specs(dir.path());
    assert!(specs.contains(&format!("enc:v1:{new_id}:")), "{specs}");
    assert!(
        !specs.contains(&old_id),
        "re-encrypted under the new key: {specs}"
    );

    // Step 3: the old key removed; everything still reads.
    let gw = TestGateway::start(config_with_keys(dir.path(), &new)).await;
    let got = deliver_one(&gw, &rx, 1).await;
    assert_eq!(got.header("authorization"), Some(format!("Bearer {TOKEN}")));
    gw.stop().await;

    // The old key alone cannot read them: start-up fails, naming the webhook and the key.
    let listeners = hookyard::Listeners {
        public: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: Some(TcpListener::bind("127.0.0.1:0").await.unwrap()),
    };
    let failed = tokio::time::timeout(
        Duration::from_secs(20),
        hookyard::run(
            config_with_keys(dir.path(), &old),
            listeners,
            std::future::pending(),
        ),
    )
    .await
    .expect("start-up gives up rather than hanging");
    let error = failed.expect_err("a wrong key must not start").to_string();
    assert!(error.contains("\"rotating\""), "{error}");
    assert!(error.contains(&new_id), "{error}");
    assert!(error.contains("not configured"), "{error}");
    assert_absent(&error, &[TOKEN]);
}

/// The specs the store holds now (SQLite: the committed rows, not old WAL pages).
fn current_specs(dir: &Path) -> String {
    if on_postgres() {
        return stored_bytes(dir);
    }
    let conn = rusqlite::Connection::open(dir.join("hookyard.db")).unwrap();
    let mut stmt = conn.prepare("SELECT spec FROM webhooks").unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread")]
async fn data_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    if on_postgres() {
        return; // Files are SQLite's.
    }
    let dir = temp_dir();
    let data = dir.path().join("data");
    let mut config = test_config(dir.path());
    config.store.url = format!("sqlite://{}", data.join("hookyard.db").display());
    let gw = TestGateway::start(config).await;
    gw.create_webhook(json!({"name": "m", "events": ["*"], "url": "http://127.0.0.1:9/"}))
        .await;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    for file in [
        "hookyard.db",
        "hookyard.db-wal",
        "hookyard.db-shm",
        "secret.key",
    ] {
        assert_eq!(mode(&data.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&data), 0o700);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_never_follows_a_new_destination() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let tokens = TokenServer::start().await;
    gw.create_webhook(json!({
        "name": "oauth", "events": ["*"], "url": rx.url("/"),
        "auth": {"type": "oauth2_client_credentials", "token_url": tokens.url(),
                 "client_id": "cid", "client_secret": "cs-s3cret"},
    }))
    .await;
    gw.create_webhook(json!({
        "name": "bearer", "events": ["*"], "url": rx.url("/b"),
        "headers": {"X-Static-Token": HEADER_SECRET}, "secret_headers": ["X-Static-Token"],
        "auth": {"type": "bearer", "token": TOKEN},
    }))
    .await;
    let evil = "http://127.0.0.1:9/evil";

    // The first case: only a new token_url, the client secret left masked.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/oauth",
            Some(json!({"auth": {"token_url": evil}})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "auth.client_secret", "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("auth.token_url"));

    // The second: a bearer webhook with a new url (PATCH, and PUT of what a GET shows).
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/bearer",
            Some(json!({"url": evil})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "auth.token", "{body}");
    let (_, mut shown) = gw.admin("GET", "/admin/v1/webhooks/bearer", None).await;
    shown["url"] = json!(evil);
    let (status, body) = gw
        .admin("PUT", "/admin/v1/webhooks/bearer", Some(shown.clone()))
        .await;
    assert_error(status, &body, 422, "invalid_field");
    // The secret header follows the same rule once the token is sent again.
    shown["auth"]["token"] = json!("a-new-token");
    let (status, body) = gw
        .admin("PUT", "/admin/v1/webhooks/bearer", Some(shown))
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "headers.X-Static-Token", "{body}");

    // Another auth type with a masked secret.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/bearer",
            Some(json!({"auth": {"type": "api_key", "value": "********", "token": null}})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "auth.value", "{body}");

    // Nothing was sent anywhere, nothing changed; the same destination keeps its secrets.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/bearer",
            Some(json!({"description": "same place"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    deliver_one(&gw, &rx, 2).await;
    let bearer = rx
        .received()
        .into_iter()
        .find(|r| r.header("authorization").as_deref() == Some(&format!("Bearer {TOKEN}")))
        .expect("the bearer webhook still sends its token");
    assert_eq!(
        bearer.header("x-static-token").as_deref(),
        Some(HEADER_SECRET)
    );
    let grants = tokens.grants();
    assert!(!grants.is_empty());

    // Sending the secrets again with the new destination is fine.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/oauth",
            Some(json!({"auth": {"token_url": tokens.url(), "client_secret": "cs-new"}})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn url_credentials_and_secret_headers_are_masked_in_the_api_and_the_log() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let created = gw.create_webhook(secret_spec(&rx)).await;
    let check_shown = |shown: &Value| {
        let text = shown.to_string();
        assert_absent(&text, &[TOKEN, HEADER_SECRET, URL_PASSWORD, QUERY_TOKEN]);
        assert_eq!(shown["headers"]["X-Static-Token"], "********", "{shown}");
        assert_eq!(shown["headers"]["X-Plain"], "plain-value", "{shown}");
        let url = shown["url"].as_str().unwrap();
        assert!(url.contains("********:********@"), "{url}");
        assert!(url.contains("token=********&page=1"), "{url}");
    };
    check_shown(&created);
    let (_, shown) = gw.admin("GET", "/admin/v1/webhooks/vault", None).await;
    check_shown(&shown);

    // What a GET shows can be PUT back: the stored URL and secrets are kept.
    let (status, body) = gw
        .admin("PUT", "/admin/v1/webhooks/vault", Some(shown))
        .await;
    assert_eq!(status, 200, "{body}");
    let got = deliver_one(&gw, &rx, 1).await;
    assert_eq!(got.header("x-static-token").as_deref(), Some(HEADER_SECRET));
    assert_eq!(got.header("authorization"), Some(format!("Bearer {TOKEN}")));
    assert!(
        got.path.contains(&format!("token={QUERY_TOKEN}")),
        "{}",
        got.path
    );

    let items = gw.wait_for_status("vault", "succeeded", 1).await;
    let detail = gw.delivery(items[0]["id"].as_str().unwrap()).await;
    let attempt = &detail["attempts"][0];
    assert_absent(&detail.to_string(), ALL);
    let logged_url = attempt["request"]["url"].as_str().unwrap();
    assert!(logged_url.contains("token=********"), "{logged_url}");
    let static_header = attempt["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h[0] == "x-static-token")
        .cloned()
        .expect("the header is logged");
    assert_eq!(static_header[1], "[redacted]");
    gw.stop().await;
}

/// A token endpoint that refuses every request, echoing it back: its Authorization header and
/// its body, raw, in the OAuth2 error description.
async fn echoing_token_server() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen_by_server = seen.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen_by_server.clone();
            async move {
                let authorization = headers
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned();
                let echo = format!(
                    "you sent Authorization: {authorization} with body {}",
                    String::from_utf8_lossy(&body)
                );
                seen.lock().unwrap().push(echo.clone());
                (
                    StatusCode::UNAUTHORIZED,
                    axum::Json(json!({"error": "invalid_client", "error_description": echo})),
                )
                    .into_response()
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread")]
async fn token_server_echoes_are_scrubbed_and_a_refusal_is_dead_at_once() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let (token_url, seen) = echoing_token_server().await;
    let (password, client_secret) = ("p@ss word&7", "c/s+cret=8");
    gw.create_webhook(json!({
        "name": "echo", "events": ["*"], "url": rx.url("/"), "retry": {"max_attempts": 5},
        "auth": {"type": "oauth2_password", "token_url": token_url, "username": "alice",
                 "password": password, "client_id": "my client", "client_secret": client_secret},
    }))
    .await;
    gw.post_event(json!({"type": "t", "data": {}})).await;
    // 401 from the token endpoint: dead at once, not retried.
    let dead = gw.wait_for_status("echo", "dead", 1).await;
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 1, "{detail}");
    let error = detail["last_error"].as_str().unwrap();
    assert!(error.contains("invalid_client"), "{error}");

    let echo = seen.lock().unwrap()[0].clone();
    let form = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let basic = STANDARD.encode(format!("{}:{}", form("my client"), form(client_secret)));
    let encodings = [
        password.to_owned(),
        form(password),
        client_secret.to_owned(),
        form(client_secret),
        basic.clone(),
        STANDARD.encode(format!("my client:{client_secret}")),
    ];
    // The echo really holds the secrets: the test would see a leak.
    assert!(echo.contains(&basic), "{echo}");
    assert!(echo.contains(&form(password)), "{echo}");
    let refs: Vec<&str> = encodings.iter().map(String::as_str).collect();
    assert_absent(&detail.to_string(), &refs);
    assert_eq!(rx.count(), 0);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_url_is_dead_at_once_and_a_failing_one_retried() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    let tokens = TokenServer::start().await;
    tokens.set_fail(true);
    gw.create_webhook(json!({
        "name": "refused", "events": ["t.refused"], "url": rx.url("/"),
        "auth": {"type": "oauth2_client_credentials", "token_url": "http://10.1.2.3/token",
                 "client_id": "c", "client_secret": "s"},
    }))
    .await;
    gw.create_webhook(json!({
        "name": "flaky", "events": ["t.flaky"], "url": rx.url("/"), "retry": {"max_attempts": 100},
        "auth": {"type": "oauth2_client_credentials", "token_url": tokens.url(),
                 "client_id": "c", "client_secret": "s"},
    }))
    .await;
    gw.post_event(json!({"type": "t.refused", "data": {}}))
        .await;
    gw.post_event(json!({"type": "t.flaky", "data": {}})).await;
    let dead = gw.wait_for_status("refused", "dead", 1).await;
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    assert_eq!(detail["attempts"].as_array().unwrap().len(), 1, "{detail}");
    assert!(
        detail["last_error"].as_str().unwrap().contains("SSRF"),
        "{detail}"
    );
    // A token endpoint answering 500 is retried.
    eventually(Duration::from_secs(10), "token fetch retried", || async {
        (tokens.grants().len() >= 3).then_some(())
    })
    .await;
    let flaky = gw.deliveries("webhook=flaky").await;
    assert_eq!(flaky[0]["status"], "pending", "{flaky:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn path_like_names_are_refused() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    for name in [".", "..", ".hidden", "-flag", "_x"] {
        let (status, body) = gw
            .admin(
                "POST",
                "/admin/v1/webhooks",
                Some(json!({"name": name, "events": ["*"], "url": "http://127.0.0.1:9/"})),
            )
            .await;
        assert_error(status, &body, 422, "invalid_field");
        assert_eq!(body["error"]["field"], "name", "{name}: {body}");
    }
    gw.create_webhook(json!({"name": "a.b-c_1", "events": ["*"], "url": "http://127.0.0.1:9/"}))
        .await;
    gw.stop().await;
}
