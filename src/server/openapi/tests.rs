//! The document against the routers that serve the API.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::Value;
use utoipa::OpenApi;

use super::ApiDoc;
use crate::server::{admin_routes, public_routes, AppState, Shared};

/// A gateway's handler state, without workers or plugins: enough to build its routers.
async fn state() -> Shared {
    let store = crate::store::open("sqlite::memory:")
        .await
        .expect("sqlite in memory");
    let mut metrics = crate::metrics::Metrics::new();
    let edge = Arc::new(crate::server::edge_metrics::EdgeMetrics::register(
        metrics.registry_mut(),
    ));
    let config = crate::config::Config::default();
    let refusals = Arc::new(crate::server::inbound_log::RefusalLog::new(
        &config.refusals,
    ));
    Arc::new(AppState {
        store,
        webhooks: Arc::default(),
        metrics: Arc::new(metrics),
        edge,
        refusals,
        retention: Arc::default(),
        console: crate::console::Sessions::new(&config.console),
        catalog: Arc::default(),
        backlog: Arc::new(crate::server::backpressure::IngestBacklog::new(
            &config.delivery,
        )),
        config: Arc::new(config),
        wake: Arc::default(),
        ready: AtomicBool::new(true),
        plugins: None,
        deliverer: None,
        sources: Arc::default(),
    })
}

/// Every `(path, METHOD)` an axum router serves, read from the router itself.
///
/// axum offers no way to list a router's routes, but its `Debug` output names each route's path
/// (`node: Node { paths: {RouteId(1): "/v1/events", ...} }`) and, per route, the endpoint of
/// every method (`MethodRouter { get: None, ..., post: Route, ... }`). This reads those. Should
/// a new axum print them differently, nothing (or garbage) is read and the comparison with the
/// document fails loudly: it cannot pass by reading nothing.
fn served_routes(router: &axum::Router<Shared>) -> BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    // The router's own routes come first; the fallback router's (catch-alls) after.
    let own = text.split("fallback_router").next().unwrap_or_default();
    let (routes, paths) = own
        .split_once("node: Node { paths: {")
        .unwrap_or_else(|| panic!("no route paths in the router's Debug output: {own}"));
    let mut path_of = HashMap::new();
    for entry in paths.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): \"").expect("RouteId(n): \"path\"");
        let path = rest.split('"').next().unwrap_or_default();
        path_of.insert(id.to_owned(), path.to_owned());
    }
    let mut served = BTreeSet::new();
    for entry in routes.split("RouteId(").skip(1) {
        let (id, rest) = entry.split_once("): ").expect("RouteId(n): endpoint");
        let Some(fields) = rest.strip_prefix("MethodRouter(MethodRouter { ") else {
            panic!("route {id} is not a method router (a nested service?): {rest}");
        };
        let path = path_of
            .get(id)
            .unwrap_or_else(|| panic!("route {id} has no path"));
        for field in fields.split(", ") {
            let (method, endpoint) = field.split_once(": ").expect("method: endpoint");
            if method == "fallback" {
                break;
            }
            if endpoint != "None" {
                served.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    served
}

/// Every `(path, METHOD)` the document describes.
fn documented() -> BTreeSet<(String, String)> {
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in [
            "get", "head", "delete", "options", "patch", "post", "put", "trace",
        ] {
            if item.get(method).is_some() {
                documented.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    documented
}

#[tokio::test]
async fn every_served_route_is_documented() {
    let state = state().await;
    let mut served = served_routes(&public_routes(&state).merge(admin_routes(&state)));
    // The console (its files and its sign-in session) is the browser's, not the API's: it is
    // described in docs/console/README.md. Everything else the admin listener serves is API.
    let console = served
        .iter()
        .filter(|(p, _)| p.starts_with("/console"))
        .count();
    assert!(console > 0, "the console's routes are read too");
    served.retain(|(path, _)| !path.starts_with("/console"));
    let documented = documented();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not in the OpenAPI document (annotate the handler with #[utoipa::path] \
         and list it in ApiDoc's paths, see server/openapi.rs): {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "in the OpenAPI document but not served: {unserved:?}"
    );
    // Not vacuous: the routes known today are among them.
    for route in [
        ("/v1/events", "POST"),
        ("/v1/inbound/{webhook}", "POST"),
        ("/admin/v1/webhooks/{id}", "PATCH"),
        ("/admin/v1/plugins/{name}", "PUT"),
        ("/admin/v1/sources/{name}/resume", "POST"),
        ("/admin/v1/openapi.json", "GET"),
    ] {
        assert!(
            served.contains(&(route.0.to_owned(), route.1.to_owned())),
            "{route:?} not read from the router"
        );
    }
}

#[tokio::test]
async fn the_route_reader_sees_a_route_added_without_documentation() {
    // What the test above must catch: a route added to a router and nowhere else.
    let state = state().await;
    let router = admin_routes(&state).route(
        "/admin/v1/undocumented/{id}",
        axum::routing::get(|| async {}).delete(|| async {}),
    );
    let served = served_routes(&router);
    for method in ["GET", "DELETE"] {
        assert!(served.contains(&("/admin/v1/undocumented/{id}".to_owned(), method.to_owned())));
    }
    assert!(!served.contains(&("/admin/v1/undocumented/{id}".to_owned(), "POST".to_owned())));
    assert!(!documented().contains(&("/admin/v1/undocumented/{id}".to_owned(), "GET".to_owned())));
}

fn operations(doc: &Value) -> Vec<(String, String, &Value)> {
    let mut ops = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, op) in item.as_object().expect("path item") {
            if op.get("responses").is_some() {
                ops.push((path.clone(), method.clone(), op));
            }
        }
    }
    ops
}

#[test]
fn operations_are_complete_and_named_once() {
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    assert_eq!(doc["openapi"], "3.1.0");
    let mut ids = HashSet::new();
    for (path, method, op) in operations(&doc) {
        let at = format!("{method} {path}");
        let id = op["operationId"].as_str().unwrap_or_default();
        assert!(
            ids.insert(id.to_owned()),
            "{at}: operationId {id} is used twice"
        );
        assert!(
            op["tags"].as_array().is_some_and(|t| !t.is_empty()),
            "{at}: no tag"
        );
        assert!(op["summary"].is_string(), "{at}: no summary");
        let responses = op["responses"].as_object().expect("responses");
        assert!(
            responses.keys().any(|s| s.starts_with('2')),
            "{at}: no success answer"
        );
        // Security is stated per operation: the admin token on the admin API (except this
        // document), the ingest token on ingest, none elsewhere.
        let security = op["security"]
            .as_array()
            .unwrap_or_else(|| panic!("{at}: no security"));
        let schemes: Vec<&str> = security
            .iter()
            .flat_map(|s| s.as_object().into_iter().flat_map(|o| o.keys()))
            .map(String::as_str)
            .collect();
        let expected: &[&str] = if path == "/admin/v1/openapi.json" {
            &[]
        } else if path.starts_with("/admin/") {
            &["admin_token"]
        } else if path.starts_with("/v1/events") {
            &["ingest_token"]
        } else {
            &[]
        };
        assert_eq!(schemes, expected, "{at}: security");
        if !expected.is_empty() {
            assert!(
                responses.contains_key("401"),
                "{at}: a token route without 401"
            );
        }
        // Every path parameter is declared.
        for segment in path.split('/') {
            if let Some(name) = segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
                let declared = op["parameters"].as_array().is_some_and(|ps| {
                    ps.iter()
                        .any(|p| p["name"] == name && p["in"] == "path" && p["required"] == true)
                });
                assert!(declared, "{at}: path parameter {name} is not declared");
            }
        }
        // Every error answer carries the Error body.
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert_eq!(
                    response["$ref"]
                        .as_str()
                        .and_then(|r| r.strip_prefix("#/components/responses/"))
                        .map(|name| doc["components"]["responses"][name]["content"]
                            ["application/json"]["schema"]["$ref"]
                            .clone()),
                    Some(Value::from("#/components/schemas/Error")),
                    "{at}: {status} does not answer with the Error body"
                );
            }
        }
    }
}

#[test]
fn enums_are_listed() {
    let doc = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    let text = doc.to_string();
    let schemas = &doc["components"]["schemas"];
    // The tags of the tagged enums, and the plain enums, each with every value.
    for (schema, values) in [
        (
            "AuthConfig",
            &[
                "none",
                "api_key",
                "bearer",
                "basic",
                "oauth2_password",
                "oauth2_client_credentials",
            ][..],
        ),
        (
            "InboundAuth",
            &["api_key", "bearer", "basic", "standard_webhooks"],
        ),
        ("PluginFailure", &["retry", "dead_letter", "skip"]),
        (
            "DeliveryStatus",
            &["pending", "succeeded", "dead", "skipped"],
        ),
        ("AttemptOutcome", &["succeeded", "retry", "dead", "skipped"]),
        ("SourceKind", &["nats", "amqp"]),
        ("TypeFrom", &["body", "subject", "header"]),
        (
            "SourceState",
            &["connecting", "running", "throttled", "paused", "failing"],
        ),
    ] {
        let shown = schemas[schema].to_string();
        assert_ne!(schemas[schema], Value::Null, "no schema {schema} in {text}");
        for value in values {
            assert!(
                shown.contains(&format!("\"{value}\"")),
                "{schema} lacks {value}: {shown}"
            );
        }
    }
    // Fields of the auth types.
    let auth = schemas["AuthConfig"].to_string();
    for field in [
        "token_url",
        "client_id",
        "client_secret",
        "scope",
        "username",
        "password",
        "header",
        "value",
        "token",
    ] {
        assert!(
            auth.contains(&format!("\"{field}\"")),
            "AuthConfig lacks {field}"
        );
    }
    assert!(schemas["InboundAuth"]
        .to_string()
        .contains("tolerance_secs"));
    assert!(schemas["PluginRef"].to_string().contains("on_error"));
}
