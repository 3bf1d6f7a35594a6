//! The catalog's rules on a store in memory.

use serde_json::{json, Value};

use super::*;

fn spec(value: Value) -> EventTypeSpec {
    serde_json::from_value(value).unwrap()
}

fn webhook(value: Value) -> WebhookSpec {
    serde_json::from_value(value).unwrap()
}

async fn catalog_of(types: Vec<Value>) -> EventCatalog {
    let store = crate::store::open("sqlite::memory:").await.unwrap();
    for (i, t) in types.into_iter().enumerate() {
        let t = spec(t);
        t.validate().unwrap();
        store
            .insert_event_type(&t.to_stored(i as Millis, i as Millis))
            .await
            .unwrap();
    }
    let catalog = EventCatalog::default();
    catalog.reload(store.as_ref()).await.unwrap();
    catalog
}

fn user_schema() -> Value {
    json!({"type": "object", "properties": {
        "employee_id": {"type": "string"},
        "email": {"type": "string"},
        "address": {"type": "object", "properties": {"city": {"type": "string"}}}
    }})
}

#[test]
fn names_are_exact_types_not_globs_or_paths() {
    for bad in [
        "",
        "user.*",
        "a/b",
        "a b",
        ".x",
        "hookyard.sink.upsert",
        &"x".repeat(201),
    ] {
        let e = spec(json!({"name": bad})).validate().unwrap_err();
        assert_eq!(e.field, "name", "{bad:?}");
    }
    for good in [
        "user.created",
        "USER_LOGIN",
        "order:paid",
        "v2.user-created",
    ] {
        spec(json!({"name": good})).validate().unwrap();
    }
}

#[test]
fn the_schema_must_be_valid_and_the_example_match_it() {
    let e = spec(json!({"name": "a", "schema": {"type": "objekt"}}))
        .validate()
        .unwrap_err();
    assert_eq!(e.field, "schema");
    let e = spec(json!({"name": "a", "schema": user_schema(), "example": {"email": 5}}))
        .validate()
        .unwrap_err();
    assert_eq!(e.field, "example");
    assert!(e.message.contains("/email"), "{}", e.message);
    spec(json!({"name": "a", "schema": user_schema(), "example": {"email": "a@b.c"}}))
        .validate()
        .unwrap();
    // No schema: any example.
    spec(json!({"name": "a", "example": [1, 2]}))
        .validate()
        .unwrap();
    let unknown: Result<EventTypeSpec, _> =
        serde_json::from_value(json!({"name": "a", "exmaple": {}}));
    assert!(unknown.is_err(), "unknown keys are refused");
}

#[tokio::test]
async fn an_empty_catalog_checks_nothing() {
    let catalog = catalog_of(vec![]).await;
    assert!(catalog.is_empty());
    let hook = webhook(json!({"name": "h", "events": ["anything.at_all"], "url": "https://h/"}));
    catalog.check_webhook(&hook).unwrap();
    assert_eq!(catalog.example_for(&hook), None);
    assert_eq!(
        catalog.first_type_of(&hook).as_deref(),
        Some("anything.at_all")
    );
}

#[tokio::test]
async fn subscriptions_must_name_a_type_or_glob_one() {
    let catalog = catalog_of(vec![
        json!({"name": "user.created"}),
        json!({"name": "user.modified"}),
        json!({"name": "location.created"}),
    ])
    .await;
    for ok in [
        json!(["user.created"]),
        json!(["user.*"]),
        json!(["*"]),
        json!(["*.created", "user.modified"]),
    ] {
        let hook = webhook(json!({"name": "h", "events": ok, "url": "https://h/"}));
        catalog.check_webhook(&hook).unwrap();
    }
    let hook = webhook(
        json!({"name": "h", "events": ["user.created", "user.modifed"],
        "url": "https://h/"}),
    );
    let e = catalog.check_webhook(&hook).unwrap_err();
    assert_eq!(e.field, "events[1]");
    assert!(e.message.contains("\"user.modifed\""), "{}", e.message);
    assert!(
        e.message.contains("did you mean \"user.modified\""),
        "{}",
        e.message
    );
    let hook = webhook(json!({"name": "h", "events": ["order.*"], "url": "https://h/"}));
    let e = catalog.check_webhook(&hook).unwrap_err();
    assert_eq!(e.field, "events[0]");
    assert!(!e.message.contains("did you mean"), "{}", e.message);
}

#[tokio::test]
async fn field_map_rows_must_read_fields_a_schema_describes() {
    let catalog = catalog_of(vec![
        json!({"name": "user.created", "schema": user_schema()}),
        json!({"name": "user.deleted", "schema": {"type": "object",
            "properties": {"employee_id": {"type": "string"}}}}),
        json!({"name": "user.note"}),
    ])
    .await;
    let hook = |events: Value, request: Value| {
        webhook(json!({"name": "h", "events": events, "url": "https://h/",
            "plugin": {"name": "field-map", "config": {"request": request}}}))
    };
    // `email` is only in user.created's schema: enough.
    let good = json!([
        {"api_field": "emp_id", "field": "employee_id"},
        {"api_field": "mail", "field": "email"},
        {"api_field": "city", "field": "@data.address.city"},
        {"api_field": "type", "field": "@type"},
        {"api_field": "all", "field": "@data"},
        {"api_field": "fixed", "value": 1}
    ]);
    catalog
        .check_webhook(&hook(json!(["user.*"]), good))
        .unwrap();

    let bad = json!([
        {"api_field": "emp_id", "field": "employee_id"},
        {"api_field": "mail", "field": "emial"}
    ]);
    let e = catalog
        .check_webhook(&hook(json!(["user.*"]), bad.clone()))
        .unwrap_err();
    assert_eq!(e.field, "plugin.config.request[1].field");
    assert!(
        e.message.contains("request[1] (api_field \"mail\")") && e.message.contains("emial"),
        "{}",
        e.message
    );
    let e = catalog
        .check_webhook(&hook(
            json!(["user.created"]),
            json!([{"api_field": "c", "field": "@data.address.cty"}]),
        ))
        .unwrap_err();
    assert_eq!(e.field, "plugin.config.request[0].field");
    // Types without a schema cannot tell: nothing is checked for them.
    catalog
        .check_webhook(&hook(json!(["user.note"]), bad.clone()))
        .unwrap();
    // Another plugin's config is its own business.
    let mut other = hook(json!(["user.*"]), bad);
    other.plugin.as_mut().unwrap().name = "my-mapper".into();
    catalog.check_webhook(&other).unwrap();
}

#[tokio::test]
async fn the_test_event_is_the_first_subscribed_type_with_an_example() {
    let catalog = catalog_of(vec![
        json!({"name": "user.created", "example": {"id": "u1"}}),
        json!({"name": "user.deleted", "example": {"id": "u2"}}),
        json!({"name": "location.created"}),
    ])
    .await;
    let hook = |events: Value| webhook(json!({"name": "h", "events": events, "url": "https://h/"}));
    assert_eq!(
        catalog.example_for(&hook(json!(["user.deleted", "user.*"]))),
        Some(("user.deleted".into(), json!({"id": "u2"})))
    );
    assert_eq!(
        catalog.example_for(&hook(json!(["location.created", "user.*"]))),
        Some(("user.created".into(), json!({"id": "u1"}))),
        "the first type with an example"
    );
    assert_eq!(catalog.example_for(&hook(json!(["location.*"]))), None);
    assert_eq!(
        catalog
            .first_type_of(&hook(json!(["location.*"])))
            .as_deref(),
        Some("location.created")
    );
}

#[tokio::test]
async fn uncataloged_types_are_counted_and_flushed() {
    let store = crate::store::open("sqlite::memory:").await.unwrap();
    let catalog = EventCatalog::default();
    catalog.count_uncataloged("a.b", 10);
    catalog.count_uncataloged("a.b", 5);
    catalog.count_uncataloged("c.d", 7);
    catalog.flush(store.as_ref()).await.unwrap();
    catalog.count_uncataloged("a.b", 20);
    let seen = catalog.seen_uncataloged(store.as_ref()).await.unwrap();
    let counts: Vec<(&str, u64, Millis)> = seen
        .iter()
        .map(|s| (s.event_type.as_str(), s.count, s.last_seen))
        .collect();
    assert_eq!(counts, vec![("a.b", 3, 20), ("c.d", 1, 7)]);
    // Once cataloged, a type is no longer shown as uncataloged.
    store
        .insert_event_type(&spec(json!({"name": "a.b"})).to_stored(1, 1))
        .await
        .unwrap();
    catalog.reload(store.as_ref()).await.unwrap();
    let seen = catalog.seen_uncataloged(store.as_ref()).await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].event_type, "c.d");
}

#[tokio::test]
async fn declared_types_are_created_then_updated_by_name() {
    let store = crate::store::open("sqlite::memory:").await.unwrap();
    let declared = vec![
        spec(json!({"name": "user.created", "description": "v1"})),
        spec(json!({"name": "user.deleted"})),
    ];
    apply_declared(&declared, store.as_ref()).await.unwrap();
    let first = store.event_types().await.unwrap();
    assert_eq!(first.len(), 2);
    // Unchanged: not rewritten.
    apply_declared(&declared, store.as_ref()).await.unwrap();
    assert_eq!(store.event_types().await.unwrap(), first);
    let changed = vec![spec(json!({"name": "user.created", "description": "v2"}))];
    apply_declared(&changed, store.as_ref()).await.unwrap();
    let now = store.event_types().await.unwrap();
    assert_eq!(now.len(), 2, "a type left out of the file stays");
    assert!(now[0].spec.contains("v2"));
    assert_eq!(now[0].created_at, first[0].created_at);

    let bad = vec![spec(
        json!({"name": "x", "schema": {"type": "string"}, "example": 1}),
    )];
    let e = apply_declared(&bad, store.as_ref()).await.unwrap_err();
    assert!(
        e.to_string().starts_with("event_types[0] (x): example"),
        "{e}"
    );
}

#[test]
fn typos_are_near_and_other_names_are_not() {
    let names: Vec<String> = ["user.created", "user.modified", "location.deleted"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(
        closest("user.modifed", names.iter()).map(String::as_str),
        Some("user.modified")
    );
    assert_eq!(
        closest("usr.created", names.iter()).map(String::as_str),
        Some("user.created")
    );
    assert_eq!(closest("order.paid", names.iter()), None);
    assert_eq!(edit_distance("kitten", "sitting"), 3);
}
