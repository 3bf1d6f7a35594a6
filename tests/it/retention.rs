//! Retention in a running gateway: old finished deliveries and their events are purged in the
//! background, in batches, while recent ones, pending ones and their events stay; the purge and
//! the row counts show in `/metrics`.

use std::time::Duration;

use hookyard::model::{
    new_id, now_ms, Attempt, AttemptOutcome, DeliveryStatus, Event, EventToIngest, Json,
    LoggedDelivery, Millis,
};
use serde_json::json;

use crate::common::*;

const DAY: Millis = 86_400_000;

fn event(id: &str, at: Millis) -> Event {
    Event {
        id: id.to_owned(),
        event_type: "user.updated".to_owned(),
        data: Json::from(json!({"id": id})),
        context: Json::null(),
        occurred_at: at,
        received_at: at,
    }
}

/// A delivery finished `age` ago, written straight into the store.
fn finished(id: &str, age: Millis, status: DeliveryStatus) -> LoggedDelivery {
    let at = now_ms() - age;
    let delivery_id = new_id("msg");
    LoggedDelivery {
        event: event(id, at),
        delivery_id: delivery_id.clone(),
        webhook_id: "wh_gone".to_owned(),
        status,
        attempts: vec![Attempt {
            delivery_id,
            attempt_no: 1,
            started_at: at,
            duration_ms: 3,
            request: None,
            response_status: Some(200),
            response_headers: Vec::new(),
            response_body: None,
            error: None,
            outcome: AttemptOutcome::Succeeded,
            plugin: None,
        }],
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn old_finished_deliveries_and_their_events_are_purged_in_the_background() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.retention.interval_secs = 1;
    config.retention.batch_size = 3;
    config.retention.pause_ms = 1;

    // Seeded before the gateway starts, in order of receipt: an old event with nothing left, a
    // pending delivery of an old event (never purged), one dead of 10 days (kept 30), 8 old
    // succeeded deliveries (past 7 days) and a recent one.
    let mut old = Vec::new();
    let mut kept = Vec::new();
    {
        let store = hookyard::store::open(&config.store.url)
            .await
            .expect("open the store");
        let pending_id = new_id("msg");
        store
            .ingest(vec![
                EventToIngest {
                    event: event("lonely", now_ms() - 40 * DAY),
                    deliveries: Vec::new(),
                    lease: None,
                },
                EventToIngest {
                    event: event("pending", now_ms() - 40 * DAY),
                    deliveries: vec![("wh_gone".to_owned(), pending_id.clone())],
                    lease: None,
                },
            ])
            .await
            .expect("seed");
        kept.push(pending_id);
        let dead = finished("dead-10d", 10 * DAY, DeliveryStatus::Dead);
        kept.push(dead.delivery_id.clone());
        store.log_delivery(dead).await.expect("seed");
        for i in 0..8 {
            let entry = finished(&format!("old-{i}"), 8 * DAY, DeliveryStatus::Succeeded);
            old.push(entry.delivery_id.clone());
            store.log_delivery(entry).await.expect("seed");
        }
        let recent = finished("recent", DAY, DeliveryStatus::Succeeded);
        kept.push(recent.delivery_id.clone());
        store.log_delivery(recent).await.expect("seed");
    }

    let gw = TestGateway::start(config.clone()).await;
    eventually(
        Duration::from_secs(20),
        "the old deliveries purged",
        || async {
            let left = gw.deliveries("").await;
            (left.len() == kept.len()).then_some(())
        },
    )
    .await;
    for id in &old {
        let (status, _) = gw
            .admin("GET", &format!("/admin/v1/deliveries/{id}"), None)
            .await;
        assert_eq!(status, 404, "{id} was not purged");
    }
    for id in &kept {
        gw.delivery(id).await;
    }
    let purged = eventually(Duration::from_secs(10), "the purge counted", || async {
        gw.metric("hookyard_retention_purged_total{table=\"deliveries\"}")
            .await
            .filter(|n| *n >= 8.0)
    })
    .await;
    assert_eq!(purged, 8.0);
    assert_eq!(
        gw.metric("hookyard_retention_purged_total{table=\"attempts\"}")
            .await,
        Some(8.0)
    );
    let rows = gw
        .metric("hookyard_store_rows{table=\"deliveries\"}")
        .await
        .expect("the gauge is there");
    if !on_postgres() {
        // Exact on SQLite; on PostgreSQL the statistics' estimate, which lags.
        assert_eq!(rows, kept.len() as f64);
    }
    gw.stop().await;

    let store = hookyard::store::open(&config.store.url)
        .await
        .expect("reopen the store");
    assert!(
        store.event("lonely").await.unwrap().is_none(),
        "an old event without deliveries goes"
    );
    assert!(
        store.event("old-0").await.unwrap().is_some(),
        "8 days: kept 30"
    );
    assert!(
        store.event("pending").await.unwrap().is_some(),
        "it has a pending delivery"
    );
    assert!(store.event("dead-10d").await.unwrap().is_some());
}
