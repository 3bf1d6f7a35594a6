//! Shared connections (issue 20): CRUD with masked secrets and its 422s and 409s, one OAuth2
//! token for every webhook on a connection (counted at the token server), a rotated password
//! taking effect without touching the webhooks, secrets encrypted at rest, the test endpoint
//! (a token fetched, a refused grant) never showing a token, and connections declared in the
//! config (read-only through the API, used by a declared webhook and the sink).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::common::*;

const PASSWORD: &str = "conn-pw-s3cret-0001";
const ROTATED: &str = "conn-pw-r0tated-0002";
const CLIENT_SECRET: &str = "conn-cs-s3cret-0003";

/// A password-grant token endpoint that issues tokens only for the password it currently
/// accepts, and answers `invalid_grant` (echoing the password, as careless servers do) to
/// others.
#[derive(Clone)]
struct PasswordServer {
    url: String,
    accepted: Arc<Mutex<String>>,
    issued: Arc<AtomicUsize>,
    /// The password of every token request, in order.
    passwords: Arc<Mutex<Vec<String>>>,
}

impl PasswordServer {
    async fn start(password: &str) -> PasswordServer {
        let server = PasswordServer {
            url: String::new(),
            accepted: Arc::new(Mutex::new(password.to_owned())),
            issued: Arc::new(AtomicUsize::new(0)),
            passwords: Arc::new(Mutex::new(Vec::new())),
        };
        let state = server.clone();
        let app = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: Bytes| {
                let state = state.clone();
                async move { state.answer(&body) }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/token", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        PasswordServer { url, ..server }
    }

    fn answer(&self, body: &[u8]) -> axum::response::Response {
        let form: Vec<(String, String)> = form_urlencoded::parse(body).into_owned().collect();
        let password = form
            .iter()
            .find(|(k, _)| k == "password")
            .map(|(_, v)| v.clone())
            .unwrap_or_default();
        self.passwords.lock().unwrap().push(password.clone());
        if password != *self.accepted.lock().unwrap() {
            let error = json!({"error": "invalid_grant",
                "error_description": format!("wrong password {password}")});
            return (StatusCode::BAD_REQUEST, axum::Json(error)).into_response();
        }
        let n = self.issued.fetch_add(1, Ordering::SeqCst) + 1;
        axum::Json(
            json!({"access_token": format!("ctok-{n}"), "token_type": "Bearer",
            "expires_in": 3600}),
        )
        .into_response()
    }

    fn accept(&self, password: &str) {
        *self.accepted.lock().unwrap() = password.to_owned();
    }

    fn issued(&self) -> usize {
        self.issued.load(Ordering::SeqCst)
    }
}

fn oauth(token_url: &str, password: &str) -> Value {
    json!({"type": "oauth2_password", "token_url": token_url, "username": "hookyard",
           "password": password, "client_id": "app", "client_secret": CLIENT_SECRET})
}

async fn create_connection(gw: &TestGateway, name: &str, auth: Value) -> Value {
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/connections",
            Some(json!({"name": name, "auth": auth})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn assert_absent(value: &Value, secrets: &[&str]) {
    let text = value.to_string();
    for secret in secrets {
        assert!(!text.contains(secret), "{secret:?} leaked into {text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn crud_masks_secrets_and_refuses_what_is_wrong() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = PasswordServer::start(PASSWORD).await;
    let created = create_connection(&gw, "workplace", oauth(&tokens.url, PASSWORD)).await;
    assert_eq!(created["auth"]["password"], "********");
    assert_eq!(created["auth"]["client_secret"], "********");
    assert_eq!(created["auth"]["username"], "hookyard");
    assert_eq!(created["webhooks"], json!([]));
    assert_absent(&created, &[PASSWORD, CLIENT_SECRET]);

    // Taken name, bad name, a mask for a new connection, bad auth, unknown field.
    let post = |body: Value| gw.admin("POST", "/admin/v1/connections", Some(body));
    let (status, body) = post(json!({"name": "workplace", "auth": {"type": "none"}})).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let (status, body) = post(json!({"name": "a b", "auth": {"type": "none"}})).await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name")),
        "{body}"
    );
    let (status, body) = post(json!({"name": "m", "auth": {"type": "bearer",
        "token": "********"}}))
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("auth.token")),
        "{body}"
    );
    let (status, body) = post(json!({"name": "t", "auth": {"type": "oauth2_password",
        "token_url": "not a url", "username": "u", "password": "p"}}))
    .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("auth.token_url")),
        "{body}"
    );
    let (status, _) = post(json!({"name": "x", "auth": {"type": "none"}, "bogus": 1})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);

    // GET one and the list.
    let (status, one) = gw
        .admin("GET", "/admin/v1/connections/workplace", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one["auth"]["password"], "********");
    let (_, list) = gw.admin("GET", "/admin/v1/connections", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    assert_absent(&list, &[PASSWORD, CLIENT_SECRET]);
    let (status, _) = gw.admin("GET", "/admin/v1/connections/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // What a GET shows can be PUT back: the secrets are kept (the token server accepts them).
    let (status, body) = gw
        .admin("PUT", "/admin/v1/connections/workplace", Some(one.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (_, test) = gw
        .admin("POST", "/admin/v1/connections/workplace/test", None)
        .await;
    assert_eq!(test["ok"], true, "{test}");
    // A new token URL with the password still masked: refused, naming the field.
    let mut moved = one.clone();
    moved["auth"]["token_url"] = json!("http://127.0.0.1:9/elsewhere");
    let (status, body) = gw
        .admin("PUT", "/admin/v1/connections/workplace", Some(moved))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "auth.password", "{body}");
    // So is another auth type with a masked secret.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/connections/workplace",
            Some(
                json!({"auth": {"type": "bearer", "token": "********", "token_url": null,
                "username": null, "password": null, "client_id": null, "client_secret": null}}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "auth.token", "{body}");
    // The name is the key.
    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/v1/connections/workplace",
            Some(json!({"name": "renamed", "auth": {"type": "none"}})),
        )
        .await;
    assert_eq!(
        (status, body["error"]["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("name"))
    );
    // A merge patch of the description keeps everything else.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/connections/workplace",
            Some(json!({"description": "the platform's OAuth setup"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["description"], "the platform's OAuth setup");
    assert_eq!(body["auth"]["password"], "********");

    // Webhooks: both auth and connection, or an unknown connection, are 422s naming it.
    let rx = Receiver::start().await;
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"name": "both", "events": ["*"], "url": rx.url("/"),
                "connection": "workplace", "auth": {"type": "bearer", "token": "t"}})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "connection");
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"name": "typo", "events": ["*"], "url": rx.url("/"),
                "connection": "workplaec"})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["field"], "connection");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"workplaec\""),
        "{body}"
    );
    let hook = gw
        .create_webhook(
            json!({"name": "hr-users", "events": ["*"], "url": rx.url("/"),
            "connection": "workplace"}),
        )
        .await;
    assert_eq!(hook["connection"], "workplace");
    assert_eq!(hook["auth"], json!({"type": "none"}), "{hook}");

    // In use: 409 naming the webhook; listed as a user.
    let (_, one) = gw
        .admin("GET", "/admin/v1/connections/workplace", None)
        .await;
    assert_eq!(one["webhooks"], json!(["hr-users"]));
    let (status, body) = gw
        .admin("DELETE", "/admin/v1/connections/workplace", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"hr-users\""),
        "{body}"
    );
    // Once the webhook has its own auth, the connection can go.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/hr-users",
            Some(json!({"connection": null, "auth": {"type": "bearer", "token": "own"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = gw
        .admin("DELETE", "/admin/v1/connections/workplace", None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, _) = gw
        .admin("GET", "/admin/v1/connections/workplace", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = gw
        .admin("DELETE", "/admin/v1/connections/workplace", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhooks_on_one_connection_share_one_token() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = PasswordServer::start(PASSWORD).await;
    create_connection(&gw, "workplace", oauth(&tokens.url, PASSWORD)).await;
    let users = Receiver::start().await;
    let locations = Receiver::start().await;
    gw.create_webhook(
        json!({"name": "users", "events": ["user.*"], "url": users.url("/"),
        "connection": "workplace"}),
    )
    .await;
    gw.create_webhook(
        json!({"name": "locations", "events": ["user.*", "location.*"],
        "url": locations.url("/"), "connection": "workplace"}),
    )
    .await;
    for i in 0..5 {
        gw.post_event(json!({"type": "user.created", "data": {"i": i}}))
            .await;
    }
    gw.post_event(json!({"type": "location.created", "data": {}}))
        .await;
    let got = users.wait_for(5).await;
    let also = locations.wait_for(6).await;
    for request in got.iter().chain(also.iter()) {
        assert_eq!(
            request.header("authorization").as_deref(),
            Some("Bearer ctok-1")
        );
    }
    assert_eq!(tokens.issued(), 1, "one token for both webhooks");
    let fetched = gw
        .metric("hookyard_connection_token_fetches_total{connection=\"workplace\",outcome=\"ok\"}")
        .await;
    assert_eq!(fetched, Some(1.0));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_password_takes_effect_and_the_test_endpoint_reports_it() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = PasswordServer::start(PASSWORD).await;
    create_connection(&gw, "workplace", oauth(&tokens.url, PASSWORD)).await;
    let rx = Receiver::start().await;
    let hook = gw
        .create_webhook(json!({"name": "hr", "events": ["*"], "url": rx.url("/"),
            "connection": "workplace"}))
        .await;
    gw.post_event(json!({"type": "user.created", "data": {}}))
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer ctok-1")
    );

    // The platform's password changes: the test endpoint says the grant is refused, with the
    // server's (scrubbed) error and no token.
    tokens.accept(ROTATED);
    let (status, test) = gw
        .admin("POST", "/admin/v1/connections/workplace/test", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{test}");
    assert_eq!(test["ok"], false, "{test}");
    assert_eq!(test["error_kind"], "rejected", "{test}");
    assert_eq!(test["status"], 400, "{test}");
    let error = test["error"].as_str().unwrap();
    assert!(error.contains("invalid_grant"), "{error}");
    assert_absent(&test, &[PASSWORD, CLIENT_SECRET, "ctok-"]);

    // Rotating the connection's password, and nothing else, reaches the webhook's deliveries.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/connections/workplace",
            Some(json!({"auth": {"password": ROTATED}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_absent(&body, &[ROTATED]);
    gw.post_event(json!({"type": "user.updated", "data": {}}))
        .await;
    let got = rx.wait_for(2).await;
    assert_eq!(
        got[1].header("authorization").as_deref(),
        Some("Bearer ctok-2")
    );
    assert_eq!(
        tokens.passwords.lock().unwrap().last().map(String::as_str),
        Some(ROTATED)
    );
    let (_, unchanged) = gw.admin("GET", "/admin/v1/webhooks/hr", None).await;
    assert_eq!(unchanged["updated_at"], hook["updated_at"]);

    // The test endpoint now fetches a token: its type and expiry, never the token itself.
    let (status, test) = gw
        .admin("POST", "/admin/v1/connections/workplace/test", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{test}");
    assert_eq!(test["ok"], true, "{test}");
    assert_eq!(test["token_type"], "bearer", "{test}");
    assert_eq!(test["expires_in_secs"], 3600, "{test}");
    assert!(test["expires_at"].as_str().is_some(), "{test}");
    assert_absent(&test, &[ROTATED, CLIENT_SECRET, "ctok-"]);
    assert_eq!(tokens.issued(), 3);

    // Static types: checked as far as they can be, without a fetch.
    create_connection(&gw, "vpn", json!({"type": "bearer", "token": "vpn-s3cret"})).await;
    let (status, test) = gw
        .admin("POST", "/admin/v1/connections/vpn/test", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (test["ok"].as_bool(), test["auth_type"].as_str()),
        (Some(true), Some("bearer"))
    );
    assert_absent(&test, &["vpn-s3cret"]);
    let (status, _) = gw
        .admin("POST", "/admin/v1/connections/nope/test", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    gw.stop().await;
}

/// What the database holds for the connections, read directly.
fn stored_connections(dir: &std::path::Path) -> String {
    if on_postgres() {
        let schema = schema_name(dir);
        return postgres_query(&format!("SELECT spec FROM {schema}.connections"))
            .expect("read connections")
            .join("\n");
    }
    let conn = rusqlite::Connection::open(dir.join("hookyard.db")).unwrap();
    let mut stmt = conn.prepare("SELECT spec FROM connections").unwrap();
    let rows = stmt.query_map([], |r| r.get::<_, String>(0)).unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
}

#[tokio::test(flavor = "multi_thread")]
async fn connection_secrets_are_encrypted_at_rest() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let tokens = PasswordServer::start(PASSWORD).await;
    let url = tokens.url.replacen("http://", "http://tu:urlpw-s3cret@", 1);
    create_connection(&gw, "workplace", oauth(&url, PASSWORD)).await;
    let stored = stored_connections(dir.path());
    assert!(stored.contains("\"username\":\"hookyard\""), "{stored}");
    assert_absent(&json!(stored), &[PASSWORD, CLIENT_SECRET, "urlpw-s3cret"]);
    let (_, shown) = gw
        .admin("GET", "/admin/v1/connections/workplace", None)
        .await;
    assert_absent(&shown, &[PASSWORD, CLIENT_SECRET, "urlpw-s3cret"]);
    gw.stop().await;

    // Another start with the same key reads them back: the token server gets the password.
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (_, test) = gw
        .admin("POST", "/admin/v1/connections/workplace/test", None)
        .await;
    assert_eq!(test["ok"], true, "{test}");
    assert_eq!(
        tokens.passwords.lock().unwrap().last().map(String::as_str),
        Some(PASSWORD)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn declared_connections_serve_declared_webhooks_and_the_sink() {
    let dir = temp_dir();
    let tokens = PasswordServer::start(PASSWORD).await;
    let rx = Receiver::start().await;
    let sink = Receiver::start().await;
    let mut config = test_config(dir.path());
    config.connections = vec![serde_json::from_value(json!({
        "name": "platform", "auth": oauth(&tokens.url, PASSWORD)}))
    .unwrap()];
    config.webhooks = vec![serde_json::from_value(json!({
        "name": "declared", "events": ["user.*"], "url": rx.url("/"),
        "connection": "platform",
        "inbound": {"auth": {"type": "bearer", "token": "inbound-token"}}}))
    .unwrap()];
    config.sink.url = sink.url("/sink");
    config.sink.connection = "platform".to_owned();
    let gw = TestGateway::start(config.clone()).await;
    gw.post_event(json!({"type": "user.created", "data": {}}))
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer ctok-1")
    );
    // An inbound push goes to the sink with the same connection's token.
    let pushed = gw
        .client()
        .post(gw.url("/v1/inbound/declared"))
        .bearer_auth("inbound-token")
        .json(&json!({"id": "u-1", "email": "a@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(pushed.status(), StatusCode::ACCEPTED);
    let got = sink.wait_for(1).await;
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer ctok-1")
    );
    assert_eq!(tokens.issued(), 1, "the sink shares the webhook's token");

    // Read-only through the API; in use by the webhook and the sink.
    let (status, shown) = gw
        .admin("GET", "/admin/v1/connections/platform", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(shown["declared_in_config"], true);
    let users: Vec<&str> = shown["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        users.contains(&"declared") && users.contains(&"hookyard-sink"),
        "{shown}"
    );
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/connections/platform",
            Some(json!({"description": "x"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "managed_by_config");
    let (status, _) = gw
        .admin("DELETE", "/admin/v1/connections/platform", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    gw.stop().await;

    // A declared webhook naming an unknown connection stops the start with a clear error.
    let mut bad = config;
    bad.webhooks[0].connection = Some("nowhere".to_owned());
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let listeners = hookyard::Listeners {
        public,
        admin: Some(admin),
    };
    let err = hookyard::run(bad, listeners, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("webhooks[0] (declared)"), "{err}");
    assert!(err.contains("\"nowhere\""), "{err}");
}
