//! The event catalog: `/admin/v1/event-types` CRUD, webhooks checked against it (subscriptions
//! and field-map rows), events of uncataloged types counted, the catalog declared in the config,
//! and the catalogs of the four examples.

use std::path::PathBuf;

use hookyard::config::Config;
use serde_json::{json, Value};

use crate::common::*;
use crate::plugins::{rust_plugin, upload_ok};

fn user_schema() -> Value {
    json!({"type": "object", "properties": {
        "employee_id": {"type": "string"},
        "email": {"type": "string"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}}
    }, "required": ["employee_id"]})
}

async fn add_type(gw: &Api, spec: Value) -> Value {
    let (status, body) = gw.admin("POST", "/admin/v1/event-types", Some(spec)).await;
    assert_eq!(status, 201, "{body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn event_types_crud() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (status, body) = gw.admin("GET", "/admin/v1/event-types", None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({"items": [], "uncataloged": []}));

    let created = add_type(
        &gw,
        json!({"name": "user.created", "description": "A user account was created",
            "schema": user_schema(), "example": {"employee_id": "E-1", "email": "a@b.c"}}),
    )
    .await;
    assert_eq!(created["name"], "user.created");
    assert_eq!(created["deprecated"], false);
    assert!(created["created_at"].as_i64().unwrap() > 0);
    add_type(&gw, json!({"name": "user.deleted"})).await;

    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/event-types",
            Some(json!({"name": "user.created"})),
        )
        .await;
    assert_error(status, &body, 409, "conflict");
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/event-types",
            Some(json!({"name": "x", "schema": {"type": "objekt"}})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "schema");
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/event-types",
            Some(json!({"name": "x", "schema": user_schema(), "example": {"email": "a@b.c"}})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "example");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("employee_id"),
        "{body}"
    );
    for bad in [json!({"name": "user.*"}), json!({"name": "a b"})] {
        let (status, body) = gw.admin("POST", "/admin/v1/event-types", Some(bad)).await;
        assert_error(status, &body, 422, "invalid_field");
        assert_eq!(body["error"]["field"], "name");
    }
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/event-types",
            Some(json!({"name": "x", "bogus": 1})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "bogus");
    let (status, body) = send_raw(
        &gw,
        "POST",
        gw.admin_url("/admin/v1/event-types"),
        Some(ADMIN_TOKEN),
        Some(b"{\"name\": ".to_vec()),
    )
    .await;
    assert_error(status, &body, 400, "invalid_json");

    let (status, list) = gw.admin("GET", "/admin/v1/event-types", None).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["user.created", "user.deleted"], "by name");

    // What a GET shows can be PUT back, changed.
    let (status, mut shown) = gw
        .admin("GET", "/admin/v1/event-types/user.created", None)
        .await;
    assert_eq!(status, 200, "{shown}");
    assert_eq!(shown["schema"], user_schema());
    shown["deprecated"] = json!(true);
    shown["description"] = json!("Deprecated: use user.added");
    let (status, put) = gw
        .admin(
            "PUT",
            "/admin/v1/event-types/user.created",
            Some(shown.clone()),
        )
        .await;
    assert_eq!(status, 200, "{put}");
    assert_eq!(put["deprecated"], true);
    assert_eq!(put["created_at"], created["created_at"]);
    let (_, again) = gw
        .admin("GET", "/admin/v1/event-types/user.created", None)
        .await;
    assert_eq!(again["description"], "Deprecated: use user.added");
    // The name may be left out, not changed; the example still has to match.
    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/v1/event-types/user.deleted",
            Some(json!({"description": "gone"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/v1/event-types/user.deleted",
            Some(json!({"name": "user.removed"})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "name");
    shown["example"] = json!({"employee_id": 5});
    let (status, body) = gw
        .admin("PUT", "/admin/v1/event-types/user.created", Some(shown))
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "example");
    let (status, body) = gw
        .admin(
            "PUT",
            "/admin/v1/event-types/nope",
            Some(json!({"name": "nope"})),
        )
        .await;
    assert_error(status, &body, 404, "not_found");

    let (status, body) = gw
        .admin("DELETE", "/admin/v1/event-types/user.deleted", None)
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = gw
        .admin("GET", "/admin/v1/event-types/user.deleted", None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, body) = gw
        .admin("DELETE", "/admin/v1/event-types/user.deleted", None)
        .await;
    assert_error(status, &body, 404, "not_found");
    let (status, _) = send_raw(
        &gw,
        "GET",
        gw.admin_url("/admin/v1/event-types"),
        None,
        None,
    )
    .await;
    assert_eq!(status, 401);

    // Kept across a restart.
    gw.stop().await;
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (_, list) = gw.admin("GET", "/admin/v1/event-types", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list["items"][0]["deprecated"], true);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn webhook_subscriptions_are_checked_against_the_catalog() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    // An empty catalog checks nothing: the typo of today is accepted.
    gw.create_webhook(json!({"name": "early", "events": ["user.modifed"], "url": rx.url("/")}))
        .await;

    add_type(&gw, json!({"name": "user.created"})).await;
    add_type(&gw, json!({"name": "user.modified"})).await;
    add_type(&gw, json!({"name": "location.created"})).await;

    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(
                json!({"name": "hr", "events": ["user.created", "user.modifed"],
                "url": rx.url("/")}),
            ),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "events[1]");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("\"user.modifed\"") && message.contains("did you mean \"user.modified\""),
        "{message}"
    );
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(json!({"name": "orders", "events": ["order.*"], "url": rx.url("/")})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "events[0]");

    gw.create_webhook(json!({"name": "hr", "events": ["user.*"], "url": rx.url("/")}))
        .await;
    gw.create_webhook(
        json!({"name": "created", "events": ["*.created", "user.modified"], "url": rx.url("/")}),
    )
    .await;
    // Updates are checked too, PUT and PATCH; the webhook is left as it was.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/hr",
            Some(json!({"events": ["user.creatd"]})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "events[0]");
    let (_, mut shown) = gw.admin("GET", "/admin/v1/webhooks/hr", None).await;
    assert_eq!(shown["events"], json!(["user.*"]));
    shown["events"] = json!(["users.*"]);
    let (status, body) = gw.admin("PUT", "/admin/v1/webhooks/hr", Some(shown)).await;
    assert_error(status, &body, 422, "invalid_field");
    // The webhook made before the catalog is refused at its next edit, naming the entry.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/early",
            Some(json!({"description": "x"})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "events[0]");
    gw.admin("DELETE", "/admin/v1/webhooks/early", None).await;

    // A type that a webhook needs cannot leave the catalog; one matched by other types can.
    let (status, body) = gw
        .admin("DELETE", "/admin/v1/event-types/user.modified", None)
        .await;
    assert_error(status, &body, 409, "in_use");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"created\""),
        "{body}"
    );
    let (status, body) = gw
        .admin("DELETE", "/admin/v1/event-types/location.created", None)
        .await;
    assert_eq!(status, 204, "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn field_map_rows_are_checked_against_the_schemas() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    upload_ok(&gw, "field-map", rust_plugin("field_map")).await;
    add_type(
        &gw,
        json!({"name": "user.created", "schema": user_schema()}),
    )
    .await;
    add_type(
        &gw,
        json!({"name": "user.deleted", "schema": {"type": "object",
            "properties": {"employee_id": {"type": "string"}}}}),
    )
    .await;
    let hook = |request: Value| {
        json!({"name": "hr", "events": ["user.*"], "url": rx.url("/"),
            "plugin": {"name": "field-map", "config": {"request": request}}})
    };
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(hook(json!([
                {"api_field": "emp_id", "field": "employee_id"},
                {"api_field": "work_email", "field": "emial"}
            ]))),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "plugin.config.request[1].field");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("request[1] (api_field \"work_email\")") && message.contains("\"emial\""),
        "{message}"
    );
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/webhooks",
            Some(hook(
                json!([{"api_field": "city", "field": "@data.address.cty"}]),
            )),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "plugin.config.request[0].field");

    // `email` is in user.created's schema only: enough, since user.deleted just leaves it out.
    gw.create_webhook(hook(json!([
        {"api_field": "emp_id", "field": "employee_id"},
        {"api_field": "work_email", "field": "email"},
        {"api_field": "city", "field": "@data.address.city"},
        {"api_field": "event", "field": "@type"}
    ])))
    .await;
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/webhooks/hr",
            Some(json!({"plugin": {"config": {"request": [
                {"api_field": "emp_id", "field": "employe_id"}
            ]}}})),
        )
        .await;
    assert_error(status, &body, 422, "invalid_field");
    assert_eq!(body["error"]["field"], "plugin.config.request[0].field");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn uncataloged_event_types_are_accepted_and_counted() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "all", "events": ["*"], "url": rx.url("/")}))
        .await;
    // Before the catalog lists anything, nothing is counted.
    let (status, _) = gw
        .post_event(json!({"type": "before.catalog", "data": {}}))
        .await;
    assert_eq!(status, 202);
    add_type(&gw, json!({"name": "user.created"})).await;

    for (id, event_type) in [
        ("e1", "user.created"),
        ("e2", "user.modifed"),
        ("e3", "user.modifed"),
        // A repeated id is not accepted again, nor counted again.
        ("e3", "user.modifed"),
    ] {
        let (status, body) = gw
            .post_event(json!({"id": id, "type": event_type, "data": {"n": 1}}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    let (status, body) = gw
        .post_batch(json!([
            {"type": "order.paid", "data": {}},
            {"type": "user.created", "data": {}},
            {"type": "user.modifed", "data": {}}
        ]))
        .await;
    assert_eq!(status, 202, "{body}");
    // Accepted and delivered like any other event.
    rx.wait_for(7).await;

    let (status, list) = gw.admin("GET", "/admin/v1/event-types", None).await;
    assert_eq!(status, 200, "{list}");
    let seen = list["uncataloged"].as_array().unwrap();
    let counts: Vec<(&str, u64)> = seen
        .iter()
        .map(|s| (s["name"].as_str().unwrap(), s["count"].as_u64().unwrap()))
        .collect();
    assert_eq!(counts, [("order.paid", 1), ("user.modifed", 3)], "{list}");
    assert!(seen.iter().all(|s| s["last_seen"].as_i64().unwrap() > 0));
    assert_eq!(
        gw.metric("hookyard_events_uncataloged_total").await,
        Some(4.0)
    );

    // Cataloged later: no longer listed as uncataloged. The totals survive a restart.
    add_type(&gw, json!({"name": "order.paid"})).await;
    gw.stop().await;
    let gw = TestGateway::start(test_config(dir.path())).await;
    let (_, list) = gw.admin("GET", "/admin/v1/event-types", None).await;
    assert_eq!(
        list["uncataloged"],
        json!([{"name": "user.modifed", "count": 3,
            "last_seen": list["uncataloged"][0]["last_seen"]}]),
        "{list}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_catalog_can_be_declared_in_the_config() {
    let dir = temp_dir();
    let rx = Receiver::start().await;
    let declared = format!(
        r#"
[[event_types]]
name = "user.created"
description = "A user account was created"
schema = {{ type = "object", properties = {{ email = {{ type = "string" }} }} }}
example = {{ email = "jane@example.com" }}

[[event_types]]
name = "user.deleted"
deprecated = true

[[webhooks]]
name = "hr"
events = ["{{EVENT}}"]
url = "{}"
"#,
        rx.url("/")
    );
    let config = |event: &str| {
        let base = test_config(dir.path());
        let mut config = Config::from_layers(
            Some((
                "test".into(),
                format!(
                    "[store]\nurl = \"{}\"\n{}\n[delivery]\nallow_networks = [\"127.0.0.1/32\"]\n{}",
                    base.store.url,
                    store_key_line(),
                    declared.replace("{EVENT}", event)
                ),
            )),
            [],
        )
        .unwrap();
        config.server = base.server;
        config.plugins = base.plugins;
        config
    };

    // A declared webhook with a typo stops the start, naming it.
    let listeners = hookyard::Listeners {
        public: tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: None,
    };
    let refused = hookyard::run(config("user.creatd"), listeners, async {}).await;
    let message = refused.unwrap_err().to_string();
    assert!(
        message.contains("webhooks[0] (hr)") && message.contains("user.creatd"),
        "{message}"
    );

    let gw = TestGateway::start(config("user.*")).await;
    let (_, list) = gw.admin("GET", "/admin/v1/event-types", None).await;
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{list}");
    assert_eq!(items[0]["example"], json!({"email": "jane@example.com"}));
    assert_eq!(items[1]["deprecated"], true);
    gw.stop().await;
}

/// Each example's catalog: loads (examples valid against their schemas) and covers every
/// declared webhook's events and field-map rows.
#[tokio::test(flavor = "multi_thread")]
async fn the_examples_declare_their_catalogs() {
    for example in [
        "identity-platform",
        "vpn-sso",
        "workplace-users",
        "workplace-locations",
    ] {
        let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(example)
            .join("hookyard.toml");
        let config = Config::load(Some(&path), []).unwrap_or_else(|e| panic!("{example}: {e}"));
        assert!(
            !config.event_types.is_empty(),
            "{example} declares no catalog"
        );
        let store = hookyard::store::open("sqlite::memory:").await.unwrap();
        hookyard::catalog::apply_declared(&config.event_types, store.as_ref())
            .await
            .unwrap();
        let catalog = hookyard::catalog::EventCatalog::default();
        catalog.reload(store.as_ref()).await.unwrap();
        for hook in &config.webhooks {
            catalog
                .check_webhook(hook)
                .unwrap_or_else(|e| panic!("{example}: webhook {}: {e}", hook.name));
            for event in &hook.events {
                assert!(
                    config
                        .event_types
                        .iter()
                        .any(|t| t.name == *event && t.example.is_some()),
                    "{example}: {event} has an example for test sends"
                );
            }
        }
    }
}
