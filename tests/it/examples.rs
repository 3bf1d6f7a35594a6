//! The `examples/` end to end: each test loads an example's real `hookyard.toml`, changes only
//! what a test must (its own store and plugin cache, the harness's tokens, loopback allowed, the
//! third party's URLs pointed at local stand-ins), posts the seed document's events and checks
//! what the stand-in third party and the internal system's sink receive.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hookyard::config::Config;
use hookyard::model::{AuthConfig, InboundAuth, WebhookSpec};
use serde_json::{json, Value};

use crate::common::*;

/// The folder of an example.
fn example_dir(example: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(example)
}

/// An example's `hookyard.toml`, loaded as `hookyard serve --config` loads it, then adapted to
/// the test: store and plugin cache in `dir`, the harness's tokens, 127.0.0.1/32 allow-listed,
/// and plugin files resolved against the example folder (the README runs from there).
fn example_config(example: &str, dir: &Path) -> Config {
    let folder = example_dir(example);
    let path = folder.join("hookyard.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut config = Config::from_layers(Some((path.display().to_string(), text)), [])
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    config.server.admin_token = ADMIN_TOKEN.into();
    config.server.ingest_token = INGEST_TOKEN.into();
    config.store.url = store_url(dir);
    config.store.secret_key = TEST_SECRET_KEY.into();
    config.plugins.cache_dir = dir.join("plugin-cache");
    for file in &mut config.plugins.load {
        file.path = folder.join(&file.path);
        assert!(
            file.path.exists(),
            "{}: missing. Build the plugins first: bash scripts/build-plugins.sh",
            file.path.display()
        );
    }
    config.delivery.allow_networks = vec!["127.0.0.1/32".parse().unwrap()];
    config
}

/// The declared webhook `name`.
fn webhook<'c>(config: &'c mut Config, name: &str) -> &'c mut WebhookSpec {
    config
        .webhooks
        .iter_mut()
        .find(|w| w.name == name)
        .unwrap_or_else(|| panic!("the example declares no webhook {name}"))
}

/// `url` with its scheme, host and port replaced by the stand-in's (path and query kept).
fn retarget(url: &str, to: &Receiver) -> String {
    let url = reqwest::Url::parse(url).unwrap();
    let path = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    };
    to.url(&path)
}

/// Points the `oauth2_password` credentials of webhook `name` (its own, or those of the
/// connection it uses) at the test's token server; returns (username, password).
fn use_token_server(config: &mut Config, name: &str, tokens: &TokenServer) -> (String, String) {
    let auth = match webhook(config, name).connection.clone() {
        Some(connection) => {
            &mut config
                .connections
                .iter_mut()
                .find(|c| c.name == connection)
                .unwrap_or_else(|| panic!("{name}: connection {connection:?} is not declared"))
                .auth
        }
        None => &mut webhook(config, name).auth,
    };
    match auth {
        AuthConfig::Oauth2Password {
            token_url,
            username,
            password,
            ..
        } => {
            *token_url = tokens.url();
            (username.clone(), password.clone())
        }
        other => panic!("{name}: expected oauth2_password, got {}", other.kind()),
    }
}

/// The sink's bearer token from the config.
fn sink_token(config: &Config) -> String {
    match &config.sink.auth {
        AuthConfig::Bearer { token } => token.clone(),
        other => panic!("expected a bearer sink, got {}", other.kind()),
    }
}

/// The header (name, value) an inbound caller must send, from the webhook's inbound auth.
fn inbound_credentials(hook: &WebhookSpec) -> (String, String) {
    match &hook.inbound.as_ref().expect("inbound is configured").auth {
        InboundAuth::ApiKey { header, value } => (header.clone(), value.clone()),
        InboundAuth::Bearer { token } => ("authorization".into(), format!("Bearer {token}")),
        other => panic!("unexpected inbound auth {}", other.kind()),
    }
}

/// A third party's push to `POST /v1/inbound/{name}`.
async fn push(
    gw: &TestGateway,
    name: &str,
    header: Option<(&str, &str)>,
    body: &str,
) -> (u16, Value) {
    let mut req = gw
        .client()
        .post(gw.url(&format!("/v1/inbound/{name}")))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some((k, v)) = header {
        req = req.header(k, v);
    }
    let (status, body) = status_json(req.send().await.unwrap()).await;
    (status.as_u16(), body)
}

/// A sink message without its webhook id (generated, so not comparable).
fn without_webhook_id(received: &Received) -> Value {
    let mut message = received.json();
    assert!(
        message["webhook_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("wh_")),
        "{message}"
    );
    message.as_object_mut().unwrap().remove("webhook_id");
    message
}

/// How many sink messages the gateway has stored (delivered or not).
async fn sink_messages(gw: &TestGateway) -> usize {
    gw.deliveries("webhook=hookyard-sink").await.len()
}

/// Waits for the first delivery of `webhook` to succeed and asserts its attempt logged no error
/// (a write-back that could not be made is logged there), so a missing write-back fails fast.
async fn first_delivery_clean(gw: &TestGateway, webhook: &str) {
    let done = gw.wait_for_status(webhook, "succeeded", 1).await;
    let detail = gw.delivery(done[0]["id"].as_str().unwrap()).await;
    assert_eq!(detail["attempts"][0]["error"], Value::Null, "{detail}");
}

#[tokio::test(flavor = "multi_thread")]
async fn workplace_users_syncs_out_writes_back_and_takes_pushes() {
    let dir = temp_dir();
    let tokens = TokenServer::start().await;
    let hr = Receiver::protected_by(&tokens).await;
    hr.set_default(Reply::status(201).body(r#"{"id": 4711, "status": "created"}"#));
    let sink = Receiver::start().await;

    let mut config = example_config("workplace-users", dir.path());
    config.sink.url = retarget(&config.sink.url, &sink);
    let (username, password) = use_token_server(&mut config, "workplace-users", &tokens);
    let hook = webhook(&mut config, "workplace-users");
    hook.url = retarget(&hook.url, &hr);
    let (key_header, key) = inbound_credentials(hook);
    let sink_token = sink_token(&config);
    let gw = TestGateway::start(config).await;

    // The "MangoApps URL" of the Notifying side, from server.public_url; secrets stay masked.
    let (_, shown) = gw
        .admin("GET", "/admin/v1/webhooks/workplace-users", None)
        .await;
    assert_eq!(
        shown["inbound_url"],
        "http://127.0.0.1:8080/v1/inbound/workplace-users"
    );
    assert!(!shown.to_string().contains(&password), "{shown}");

    // Create User: the request parameters shape the body; OAuth2 password grant in front.
    let (status, body) = gw
        .post_event(json!({"id": "evt-user-1", "type": "user.created", "data": {
            "employee_id": "E-1001", "first_name": "Ada", "last_name": "Lovelace",
            "email": "Ada.Lovelace@Example.com", "job_title": "Engineer", "department": "R&D",
            "active": true, "manager_id": "E-0001"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 1, "{body}");
    let got = hr.wait_for(1).await;
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/api/users");
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer tok-1")
    );
    assert_eq!(
        got[0].json(),
        json!({"emp_id": "E-1001", "first_name": "Ada", "last_name": "Lovelace",
               "work_email": "ada.lovelace@example.com", "title": "Engineer",
               "department": "R&D", "active": true, "event": "user.created"}),
        "unmapped fields (manager_id) are not sent"
    );
    let grants = tokens.grants();
    assert_eq!(grants.len(), 1);
    assert_eq!(grants[0].param("grant_type"), Some("password"));
    assert_eq!(grants[0].param("username"), Some(username.as_str()));
    assert_eq!(grants[0].param("password"), Some(password.as_str()));

    // Response parameters: the HR system's id is written back, keyed as the event named the user.
    first_delivery_clean(&gw, "workplace-users").await;
    let written = sink.wait_for(1).await;
    assert_eq!(
        without_webhook_id(&written[0]),
        json!({"webhook": "workplace-users", "source": "response", "entity": "user",
               "operation": "update", "identifiers": {"employee_id": "E-1001"},
               "fields": {"hr_id": "4711"}, "event_id": "evt-user-1"})
    );
    assert_eq!(
        written[0].header("authorization"),
        Some(format!("Bearer {sink_token}"))
    );

    // Activate/Deactivate User: same token (cached), same mapping.
    gw.post_event(
        json!({"type": "user.deactivated", "data": {"employee_id": "E-1001", "active": false}}),
    )
    .await;
    let got = hr.wait_for(2).await;
    assert_eq!(
        got[1].json(),
        json!({"emp_id": "E-1001", "active": false, "event": "user.deactivated"})
    );
    assert_eq!(tokens.issued(), 1, "the OAuth2 token is reused");
    sink.wait_for(2).await;

    // Notifying side: a push with the user identifier is an upsert (JIT provisioning).
    let (status, body) = push(
        &gw,
        "workplace-users",
        Some((&key_header, &key)),
        r#"{"emp_id": "E-2002", "work_email": "Grace.Hopper@Example.com", "first_name": "Grace",
            "last_name": "Hopper", "title": "Rear Admiral", "active": "yes", "salary": 1}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"accepted": 1, "operation": "upsert"}));
    let written = sink.wait_for(3).await;
    assert_eq!(
        without_webhook_id(&written[2]),
        json!({"webhook": "workplace-users", "source": "inbound", "entity": "user",
               "operation": "upsert", "identifiers": {"employee_id": "E-2002"},
               "fields": {"employee_id": "E-2002", "email": "grace.hopper@example.com",
                          "first_name": "Grace", "last_name": "Hopper",
                          "job_title": "Rear Admiral", "active": true}})
    );

    // A push without the identifier is refused and stores nothing; so is a wrong key.
    let (status, body) = push(
        &gw,
        "workplace-users",
        Some((&key_header, &key)),
        r#"{"work_email": "nobody@example.com"}"#,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("missing identifier field emp_id"),
        "{body}"
    );
    let (status, _) = push(
        &gw,
        "workplace-users",
        Some((&key_header, "wrong-key")),
        r#"{"emp_id": "E-3003"}"#,
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = push(&gw, "workplace-users", None, r#"{"emp_id": "E-3003"}"#).await;
    assert_eq!(status, 401);
    assert_eq!(sink_messages(&gw).await, 3, "refused pushes reach no sink");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn workplace_locations_syncs_out_writes_back_and_takes_updates() {
    let dir = temp_dir();
    let tokens = TokenServer::start().await;
    let facilities = Receiver::protected_by(&tokens).await;
    facilities.script([
        Reply::status(201).body(r#"{"id": 501}"#),
        Reply::status(204),
    ]);
    let sink = Receiver::start().await;

    let mut config = example_config("workplace-locations", dir.path());
    config.sink.url = retarget(&config.sink.url, &sink);
    use_token_server(&mut config, "workplace-locations", &tokens);
    let hook = webhook(&mut config, "workplace-locations");
    hook.url = retarget(&hook.url, &facilities);
    let (auth_header, auth_value) = inbound_credentials(hook);
    let gw = TestGateway::start(config).await;

    // Create Location.
    gw.post_event(
        json!({"id": "evt-loc-1", "type": "location.created", "data": {
        "code": "NYC-HQ", "name": "New York HQ", "timezone": "America/New_York",
        "address": {"street": "1 Main St", "city": "New York", "postal_code": "10001",
                    "country_code": "us"},
        "floor_count": 12}}),
    )
    .await;
    let got = facilities.wait_for(1).await;
    assert_eq!(got[0].method, "POST");
    assert_eq!(got[0].path, "/api/locations");
    assert_eq!(
        got[0].header("authorization").as_deref(),
        Some("Bearer tok-1")
    );
    assert_eq!(
        got[0].json(),
        json!({"location_code": "NYC-HQ", "location_name": "New York HQ",
               "address": {"line1": "1 Main St", "city": "New York", "zip": "10001",
                           "country": "US"},
               "time_zone": "America/New_York", "event": "location.created"})
    );
    first_delivery_clean(&gw, "workplace-locations").await;
    let written = sink.wait_for(1).await;
    assert_eq!(
        without_webhook_id(&written[0]),
        json!({"webhook": "workplace-locations", "source": "response", "entity": "location",
               "operation": "update", "identifiers": {"code": "NYC-HQ"},
               "fields": {"facilities_id": "501"}, "event_id": "evt-loc-1"})
    );

    // Delete Location: answered 204 without a body, so nothing is written back.
    gw.post_event(json!({"type": "location.deleted", "data": {"code": "NYC-HQ"}}))
        .await;
    let got = facilities.wait_for(2).await;
    assert_eq!(
        got[1].json(),
        json!({"location_code": "NYC-HQ", "event": "location.deleted"})
    );
    gw.wait_for_status("workplace-locations", "succeeded", 2)
        .await;
    assert_eq!(
        sink_messages(&gw).await,
        1,
        "an empty answer writes nothing back"
    );

    // Input parameters: a push of two locations is two updates (no JIT for locations).
    let (status, body) = push(
        &gw,
        "workplace-locations",
        Some((&auth_header, &auth_value)),
        r#"[{"location_code": "NYC-HQ", "location_name": "New York Headquarters", "capacity": "250"},
            {"location_code": "SFO-1", "address": {"city": "San Francisco", "country": "us"}}]"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body, json!({"accepted": 2, "operation": "update"}));
    let written = sink.wait_for(3).await;
    let mut pushed: Vec<Value> = written[1..].iter().map(without_webhook_id).collect();
    pushed.sort_by_key(|m| m["identifiers"]["code"].to_string());
    assert_eq!(
        pushed,
        vec![
            json!({"webhook": "workplace-locations", "source": "inbound", "entity": "location",
                   "operation": "update", "identifiers": {"code": "NYC-HQ"},
                   "fields": {"code": "NYC-HQ", "name": "New York Headquarters", "capacity": 250}}),
            json!({"webhook": "workplace-locations", "source": "inbound", "entity": "location",
                   "operation": "update", "identifiers": {"code": "SFO-1"},
                   "fields": {"code": "SFO-1", "address": {"city": "San Francisco",
                                                           "country_code": "US"}}}),
        ]
    );

    // One record without its identifier refuses the whole push; a wrong token is refused.
    let (status, body) = push(
        &gw,
        "workplace-locations",
        Some((&auth_header, &auth_value)),
        r#"[{"location_code": "LON-1"}, {"location_name": "Nowhere"}]"#,
    )
    .await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("missing identifier field location_code")),
        "{body}"
    );
    let (status, _) = push(
        &gw,
        "workplace-locations",
        Some(("authorization", "Bearer not-the-token")),
        r#"{"location_code": "LON-1"}"#,
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(sink_messages(&gw).await, 3, "refused pushes reach no sink");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn identity_platform_sends_its_rest_body_with_the_api_key() {
    let dir = temp_dir();
    let audit = Receiver::start().await;
    let mut config = example_config("identity-platform", dir.path());
    let hook = webhook(&mut config, "identity-events");
    hook.url = retarget(&hook.url, &audit);
    let (key_header, key) = match &hook.auth {
        AuthConfig::ApiKey { header, value } => (header.clone(), value.clone()),
        other => panic!("expected api_key, got {}", other.kind()),
    };
    let gw = TestGateway::start(config).await;

    let context = json!({"tenant": "acme", "actor": {"id": "admin-1", "ip": "203.0.113.7"}});
    gw.post_event(
        json!({"type": "user.created", "occurred_at": "2024-05-01T12:00:00Z",
        "context": context, "data": {"id": "u-42", "email": "ada@example.com", "name": "Ada"}}),
    )
    .await;
    let got = audit.wait_for(1).await;
    assert_eq!(got[0].method, "POST", "notification type REST");
    assert_eq!(got[0].path, "/webhooks/identity");
    assert_eq!(got[0].header(&key_header), Some(key.clone()));
    assert_eq!(
        got[0].header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(
        got[0].json(),
        json!({"event_time": "2024-05-01T12:00:00Z", "event_type": "USER_CREATED",
               "current_context": context,
               "data": {"id": "u-42", "email": "ada@example.com", "name": "Ada"}})
    );
    // The seed's field order, on the raw text (serde_json maps here may sort keys).
    let text = String::from_utf8(got[0].body.to_vec()).unwrap();
    let at = |key: &str| text.find(&format!("\"{key}\"")).unwrap();
    assert!(
        at("event_time") < at("event_type")
            && at("event_type") < at("current_context")
            && at("current_context") < at("data"),
        "{text}"
    );

    // A catalog name with more words; no context given is `null`.
    gw.post_event(
        json!({"type": "user.login_failure", "occurred_at": "2024-05-01T12:05:30Z",
        "data": {"username": "ada", "reason": "bad password"}}),
    )
    .await;
    let got = audit.wait_for(2).await;
    assert_eq!(
        got[1].json(),
        json!({"event_time": "2024-05-01T12:05:30Z", "event_type": "USER_LOGIN_FAILURE",
               "current_context": null,
               "data": {"username": "ada", "reason": "bad password"}})
    );

    // Events outside the chosen subset of the catalog are not sent.
    let (status, body) = gw
        .post_event(json!({"type": "user.email_verified", "data": {"id": "u-42"}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 0, "{body}");
    gw.stop().await;
}

/// The request bodies of seed 004, byte for byte (its JSON without the line breaks).
const USER_CREATED: &str = r#"{"email":"janedoe@email.pl","first_name":"jane","last_name":"doe","groups":[],"is_admin":false,"pgp_cert_id":"","pgp_key":"","phone":"123456789","ssh_key":"","username":"jdoe"}"#;
const USER_MODIFIED: &str = r#"{"email":"janedoe@email.pl","first_name":"jane","last_name":"doe","groups":["admin"],"is_admin":false,"pgp_cert_id":"","pgp_key":"","phone":"123456789","ssh_key":"","username":"jdoe"}"#;
const USER_DELETED: &str = r#"{"username":"jdoe"}"#;
const USER_KEYS: &str = USER_MODIFIED;

#[tokio::test(flavor = "multi_thread")]
async fn vpn_sso_sends_the_seed_bodies_with_event_header_and_bearer_token() {
    let dir = temp_dir();
    let mailer = Receiver::start().await;
    let get_receiver = Receiver::start().await;
    let mut config = example_config("vpn-sso", dir.path());
    let hook = webhook(&mut config, "vpn-sso-users");
    hook.url = retarget(&hook.url, &mailer);
    let token = match &hook.auth {
        AuthConfig::Bearer { token } => token.clone(),
        other => panic!("expected bearer, got {}", other.kind()),
    };
    // The README's note: a receiver that insists on the document's GET gets GET with the body.
    let mut get_hook = hook.clone();
    get_hook.name = "vpn-sso-users-get".into();
    get_hook.method = "GET".into();
    get_hook.events = vec!["user.deleted".into()];
    // The catalog checks its mapping against user.deleted's schema, which has only `username`:
    // the other rows would be refused as naming fields that event does not have.
    if let Some(plugin) = get_hook.plugin.as_mut() {
        if let Some(rows) = plugin.config["request"].as_array_mut() {
            rows.retain(|row| row["field"] == "username");
        }
    }
    get_hook.url = retarget(&get_hook.url, &get_receiver);
    config.webhooks.push(get_hook);
    let gw = TestGateway::start(config).await;

    let cases = [
        ("user.created", "user_created", USER_CREATED),
        ("user.modified", "user_modified", USER_MODIFIED),
        ("user.deleted", "user_deleted", USER_DELETED),
        ("user.keys", "user_keys", USER_KEYS),
    ];
    for (event_type, _, body) in cases {
        let data: Value = serde_json::from_str(body).unwrap();
        let (status, answer) = gw
            .post_event(json!({"type": event_type, "data": data}))
            .await;
        assert_eq!(status, 202, "{answer}");
    }
    let got = mailer.wait_for(4).await;
    assert_eq!(got.len(), 4);
    for (event_type, header, body) in cases {
        let request = got
            .iter()
            .find(|r| r.header("x-defguard-event").as_deref() == Some(header))
            .unwrap_or_else(|| panic!("no request with X-Defguard-Event: {header}"));
        assert_eq!(request.method, "POST", "{event_type}");
        assert_eq!(request.path, "/defguard", "{event_type}");
        assert_eq!(
            request.header("authorization"),
            Some(format!("Bearer {token}")),
            "{event_type}"
        );
        assert_eq!(
            String::from_utf8_lossy(&request.body),
            body,
            "{event_type}: the body is the seed's JSON"
        );
    }

    let got = get_receiver.wait_for(1).await;
    assert_eq!(got[0].method, "GET");
    assert_eq!(
        got[0].header("x-defguard-event").as_deref(),
        Some("user_deleted")
    );
    assert_eq!(String::from_utf8_lossy(&got[0].body), USER_DELETED);
    // Nothing else arrives there: it subscribes to user.deleted only.
    gw.wait_for_status("vpn-sso-users", "succeeded", 4).await;
    eventually(
        Duration::from_secs(5),
        "the GET webhook's delivery is logged",
        || async {
            let items = gw.deliveries("webhook=vpn-sso-users-get").await;
            (items.len() == 1 && items[0]["status"] == "succeeded").then_some(())
        },
    )
    .await;
    assert_eq!(get_receiver.count(), 1);
    gw.stop().await;
}
