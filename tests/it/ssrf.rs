//! SSRF protection end to end: refused addresses are dead after one attempt, never retried, and
//! nothing reaches them.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;

/// Posts one event for webhook `name` and returns its delivery once dead, with attempts.
async fn dead_delivery(gw: &TestGateway, name: &str) -> Value {
    let (status, body) = gw
        .post_event(json!({"type": format!("{name}.t"), "data": {}}))
        .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["deliveries"], 1);
    let dead = gw.wait_for_status(name, "dead", 1).await;
    gw.delivery(dead[0]["id"].as_str().unwrap()).await
}

fn assert_refused_once(detail: &Value) {
    let attempts = detail["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "an SSRF refusal was retried: {detail}");
    assert_eq!(attempts[0]["outcome"], "dead");
    assert_eq!(attempts[0]["response_status"], Value::Null);
    let error = detail["last_error"].as_str().unwrap_or_default();
    assert!(
        error.contains("SSRF"),
        "error does not mention SSRF: {error}"
    );
    assert_eq!(attempts[0]["error"], detail["last_error"]);
}

#[tokio::test(flavor = "multi_thread")]
async fn loopback_outside_the_allow_list_is_refused() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    // A real listener on 127.0.0.2, so a connection would be seen.
    let other = Receiver::start_on("127.0.0.2").await;
    let port = other
        .as_ref()
        .map(|r| r.addr.port())
        .unwrap_or_else(closed_port);
    gw.create_webhook(
        json!({"name": "lo2", "events": ["lo2.*"], "url": format!("http://127.0.0.2:{port}/"),
                             "retry": {"max_attempts": 5}}),
    )
    .await;
    let detail = dead_delivery(&gw, "lo2").await;
    assert_refused_once(&detail);
    assert!(detail["last_error"].as_str().unwrap().contains("127.0.0.2"));
    if let Some(other) = other {
        assert_eq!(other.arrived(), 0, "a request reached 127.0.0.2");
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ipv6_loopback_is_refused() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let v6 = Receiver::start_on("::1").await;
    let port = v6
        .as_ref()
        .map(|r| r.addr.port())
        .unwrap_or_else(closed_port);
    gw.create_webhook(
        json!({"name": "v6", "events": ["v6.*"], "url": format!("http://[::1]:{port}/"),
                             "retry": {"max_attempts": 5}}),
    )
    .await;
    let detail = dead_delivery(&gw, "v6").await;
    assert_refused_once(&detail);
    if let Some(v6) = v6 {
        assert_eq!(v6.arrived(), 0, "a request reached [::1]");
    }
    // The IPv4-mapped spelling of a refused IPv4 address is refused too.
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "mapped", "events": ["mapped.*"],
                             "url": format!("http://[::ffff:127.0.0.2]:{}/", rx.addr.port()),
                             "retry": {"max_attempts": 5}}))
        .await;
    let detail = dead_delivery(&gw, "mapped").await;
    assert_refused_once(&detail);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn host_names_are_judged_by_what_they_resolve_to() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.delivery.allow_networks = vec![];
    let gw = TestGateway::start(config).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "lh", "events": ["lh.*"],
                             "url": format!("http://localhost:{}/", rx.addr.port()),
                             "retry": {"max_attempts": 5}}))
        .await;
    let detail = dead_delivery(&gw, "lh").await;
    assert_refused_once(&detail);
    assert!(
        detail["last_error"].as_str().unwrap().contains("localhost"),
        "{detail}"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(rx.arrived(), 0, "the receiver behind localhost was reached");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn private_address_is_refused_without_connecting() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    gw.create_webhook(
        json!({"name": "ten", "events": ["ten.*"], "url": "http://10.0.0.1/",
                             "timeout_ms": 5000, "retry": {"max_attempts": 5}}),
    )
    .await;
    let posted = Instant::now();
    let (status, _) = gw.post_event(json!({"type": "ten.t", "data": {}})).await;
    assert_eq!(status, 202);
    // A connection attempt to an unroutable 10/8 address would take up to the 5 s timeout.
    let dead = eventually(Duration::from_secs(2), "10.0.0.1 delivery dead", || async {
        let items = gw.deliveries("webhook=ten&status=dead").await;
        (!items.is_empty()).then_some(items)
    })
    .await;
    assert!(posted.elapsed() < Duration::from_secs(2));
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    assert_refused_once(&detail);
    assert_eq!(
        detail["last_error"],
        "address 10.0.0.1 of host 10.0.0.1 is not allowed (SSRF protection)"
    );
    let took = detail["attempts"][0]["duration_ms"].as_u64().unwrap();
    assert!(
        took < 100,
        "the refusal took {took} ms: was a connection tried?"
    );
    gw.stop().await;
}
