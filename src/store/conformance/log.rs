//! Checks of the searchable Webhook Log and of retention (see the parent module).

use std::sync::Arc;

use serde_json::{json, Value};

use super::{add_webhook, attempt, claim, completion, list, to_ingest, LEASE, T0};
use crate::model::{
    new_id, now_ms, AttemptOutcome, DeliveryFilter, DeliverySource, DeliveryStatus, Event,
    EventToIngest, LoggedDelivery, Millis, Next, PluginUsed, REFUSED_INBOUND_EVENT,
};
use crate::store::{PurgePolicy, Store};

const DAY: Millis = 86_400_000;

fn event_with(id: &str, event_type: &str, at: Millis, data: Value, context: Value) -> Event {
    Event {
        id: id.to_owned(),
        event_type: event_type.to_owned(),
        data: data.into(),
        context: context.into(),
        occurred_at: at,
        received_at: at,
    }
}

/// A finished delivery of `event` to `webhook_id`, logged whole; returns its id.
async fn log_finished(
    store: &dyn Store,
    event: Event,
    webhook_id: &str,
    status: DeliveryStatus,
) -> String {
    let id = new_id("msg");
    let job = crate::model::Job {
        delivery: crate::model::Delivery {
            id: id.clone(),
            event_id: event.id.clone(),
            event_type: event.event_type.clone(),
            webhook_id: webhook_id.to_owned(),
            status,
            attempts: 0,
            attempts_since_replay: 0,
            next_attempt_at: None,
            last_status: None,
            last_error: None,
            created_at: event.received_at,
            updated_at: event.received_at,
            source: DeliverySource::Webhook,
            origin: None,
        },
        event: event.clone(),
        attempt_no: 1,
    };
    let (next, code) = match status {
        DeliveryStatus::Succeeded => (Next::Succeeded, Some(200)),
        DeliveryStatus::Skipped => (Next::Skipped, None),
        _ => (Next::Dead, Some(401)),
    };
    let entry = LoggedDelivery {
        event,
        delivery_id: id.clone(),
        webhook_id: webhook_id.to_owned(),
        status,
        attempts: vec![attempt(&job, &next, code)],
    };
    store
        .log_delivery(entry)
        .await
        .expect("log a finished delivery");
    id
}

async fn found(store: &dyn Store, f: DeliveryFilter) -> Vec<String> {
    let mut ids: Vec<String> = list(store, DeliveryFilter { limit: 100, ..f })
        .await
        .into_iter()
        .map(|d| d.event_id)
        .collect();
    ids.sort();
    ids
}

fn evts(ids: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ids.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

/// Every filter of the log: sources (webhook, sink, inbound, test) and origins, event type
/// globs, time ranges, and free text over the event's id and data, alone and together.
pub(crate) async fn log_search_filters(store: Arc<dyn Store>) {
    let store = &*store;
    let h1 = add_webhook(store, "one").await;
    let h2 = add_webhook(store, "two").await;
    let sink = add_webhook(store, "sink").await;
    // Real times: a time filter bounds delivery ids (UUIDv7, made now) by its time too.
    let base = now_ms() - 120_000;
    let none = Value::Null;
    let batch = vec![
        to_ingest(
            event_with(
                "log-evt-1",
                "user.created",
                base,
                json!({"email": "ann@example.com", "name": "Ann Smith"}),
                none.clone(),
            ),
            &[&h1, &h2],
        ),
        to_ingest(
            event_with(
                "log-evt-2",
                "user.deleted",
                base + 10_000,
                json!({"email": "bob@example.org"}),
                json!({"actor": "admin"}),
            ),
            &[&h1],
        ),
        to_ingest(
            event_with(
                "log-evt-3",
                "location.created",
                base + 20_000,
                json!({"code": "ZRH-42", "tags": ["a", "b"]}),
                none.clone(),
            ),
            &[&h1],
        ),
        to_ingest(
            event_with(
                "log-sink-1",
                "hookyard.sink.update",
                base + 30_000,
                json!({"webhook": "one", "webhook_id": h1.id, "source": "response",
                       "entity": "user", "operation": "update",
                       "identifiers": {"id": 7}, "fields": {"hr_id": "H-77"}}),
                none.clone(),
            ),
            &[&sink],
        ),
        // A test send is told by its delivery id, not by anything an ingest caller can set.
        EventToIngest {
            deliveries: vec![(
                h2.id.clone(),
                format!("{}{}", new_id("msg"), crate::model::TEST_DELIVERY_SUFFIX),
            )],
            ..to_ingest(
                event_with(
                    "log-test-1",
                    "user.created",
                    base + 40_000,
                    json!({"email": "carl@example.net"}),
                    none.clone(),
                ),
                &[],
            )
        },
    ];
    store.ingest(batch).await.expect("ingest");
    let refused = event_with(
        "log-refused-1",
        REFUSED_INBOUND_EVENT,
        base + 50_000,
        json!({"webhook": "two", "webhook_id": h2.id, "status": 401,
               "reason": "missing or wrong API key"}),
        none,
    );
    let refused_id = log_finished(store, refused, &h2.id, DeliveryStatus::Dead).await;

    let by = |f: DeliveryFilter| found(store, f);
    let source = |s| DeliveryFilter {
        source: Some(s),
        ..Default::default()
    };
    assert_eq!(
        by(source(DeliverySource::Webhook)).await,
        evts(&["log-evt-1", "log-evt-1", "log-evt-2", "log-evt-3"])
    );
    assert_eq!(
        by(source(DeliverySource::Sink)).await,
        evts(&["log-sink-1"])
    );
    assert_eq!(
        by(source(DeliverySource::Test)).await,
        evts(&["log-test-1"])
    );
    let inbound = list(
        store,
        DeliveryFilter {
            source: Some(DeliverySource::Inbound),
            limit: 10,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(inbound.len(), 1);
    assert_eq!(inbound[0].id, refused_id);
    assert_eq!(inbound[0].status, DeliveryStatus::Dead);
    assert_eq!(inbound[0].origin.as_deref(), Some(h2.id.as_str()));
    assert_eq!(inbound[0].last_status, Some(401));
    let (_, attempts) = store.delivery(&refused_id).await.unwrap().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].response_status, Some(401));

    let origin = |o: &str| DeliveryFilter {
        origin: Some(o.to_owned()),
        ..Default::default()
    };
    assert_eq!(by(origin(&h1.id)).await, evts(&["log-sink-1"]));
    assert_eq!(by(origin(&h2.id)).await, evts(&["log-refused-1"]));
    assert!(by(origin("wh_nobody")).await.is_empty());

    let types = |t: &[&str]| DeliveryFilter {
        event_types: t.iter().map(|s| (*s).to_owned()).collect(),
        ..Default::default()
    };
    assert_eq!(
        by(types(&["user.*"])).await,
        evts(&["log-evt-1", "log-evt-1", "log-evt-2", "log-test-1"])
    );
    assert_eq!(
        by(types(&["user.*", "location.created"])).await,
        evts(&[
            "log-evt-1",
            "log-evt-1",
            "log-evt-2",
            "log-evt-3",
            "log-test-1"
        ])
    );
    assert_eq!(
        by(types(&["*.created"])).await,
        evts(&["log-evt-1", "log-evt-1", "log-evt-3", "log-test-1"])
    );
    assert_eq!(
        by(types(&["user.created"])).await,
        evts(&["log-evt-1", "log-evt-1", "log-test-1"])
    );
    assert!(by(types(&["USER.*"])).await.is_empty(), "case-sensitive");
    assert!(
        by(types(&["user._reated"])).await.is_empty(),
        "_ is literal"
    );
    assert!(
        by(types(&["user.?reated"])).await.is_empty(),
        "? is literal"
    );

    let text = |q: &str| DeliveryFilter {
        text: Some(q.to_owned()),
        ..Default::default()
    };
    assert_eq!(
        by(text("ann@example.com")).await,
        evts(&["log-evt-1", "log-evt-1"])
    );
    assert_eq!(
        by(text("SMITH")).await,
        evts(&["log-evt-1", "log-evt-1"]),
        "case-insensitive"
    );
    assert_eq!(
        by(text("example")).await,
        evts(&["log-evt-1", "log-evt-1", "log-evt-2", "log-test-1"])
    );
    assert_eq!(by(text("zrh-42")).await, evts(&["log-evt-3"]));
    assert_eq!(by(text("H-77")).await, evts(&["log-sink-1"]));
    assert_eq!(by(text("log-evt-2")).await, evts(&["log-evt-2"]), "the id");
    assert_eq!(
        by(text("ann example")).await,
        by(text("ann@example.com")).await
    );
    assert!(by(text("ann example org")).await.is_empty(), "every word");
    assert!(by(text("nobody")).await.is_empty());
    assert!(by(text("smith ann")).await.len() == 2, "terms in any order");
    assert!(by(text("example.com ann")).await.len() == 2);
    assert!(
        by(text("com.example")).await.is_empty(),
        "a term is a phrase"
    );
    assert!(
        by(text("admin")).await.is_empty(),
        "the context is not searched"
    );
    assert_eq!(
        by(DeliveryFilter {
            text: Some("ann".to_owned()),
            webhook_id: Some(h2.id.clone()),
            ..Default::default()
        })
        .await,
        evts(&["log-evt-1"])
    );

    let range = |since: Option<Millis>, until: Option<Millis>| DeliveryFilter {
        since,
        until,
        ..Default::default()
    };
    assert_eq!(
        by(range(Some(base + 5_000), None)).await,
        evts(&[
            "log-evt-2",
            "log-evt-3",
            "log-sink-1",
            "log-test-1",
            "log-refused-1"
        ])
    );
    assert_eq!(
        by(range(None, Some(base + 15_000))).await,
        evts(&["log-evt-1", "log-evt-1", "log-evt-2"])
    );
    assert_eq!(
        by(range(Some(base + 5_000), Some(base + 25_000))).await,
        evts(&["log-evt-2", "log-evt-3"])
    );
    assert_eq!(
        by(range(Some(base + 10_000), Some(base + 10_001))).await,
        evts(&["log-evt-2"]),
        "since is inclusive, until exclusive"
    );
    assert!(by(range(None, Some(base))).await.is_empty());
    assert!(by(range(Some(base + 60_000), None)).await.is_empty());

    // Paging within a search.
    let first = store
        .deliveries(&DeliveryFilter {
            text: Some("example".to_owned()),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    let rest = store
        .deliveries(&DeliveryFilter {
            text: Some("example".to_owned()),
            limit: 3,
            cursor: first.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((first.items.len(), rest.items.len()), (3, 1));
    assert!(rest.next_cursor.is_none());
}

/// Attempts made before the final one of a try (a 401 answered by a token refresh) are logged
/// first, each numbered, with the plugin version that shaped them; they count as attempts.
pub(crate) async fn earlier_attempts_and_plugins_are_logged(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    store
        .ingest(vec![to_ingest(
            super::event("evt-1", "user.created", T0),
            &[&h],
        )])
        .await
        .unwrap();
    let job = claim(store, "w", T0, 1).await.remove(0);
    let plugin = Some(PluginUsed {
        name: "field-map".to_owned(),
        version: 3,
    });
    let mut refused = attempt(&job, &Next::RetryAt(T0), Some(401));
    refused.plugin = plugin.clone();
    let mut done = completion(&job, Next::Succeeded, Some(200));
    done.attempt.attempt_no = job.attempt_no + 1;
    done.attempt.plugin = plugin.clone();
    done.earlier = vec![refused.clone()];
    assert!(store.complete("w", done.clone()).await.unwrap());
    let (d, attempts) = store.delivery(&job.delivery.id).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.attempts, 2, "both attempts count");
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        (attempts[0].attempt_no, attempts[0].response_status),
        (1, Some(401))
    );
    assert_eq!(attempts[0].outcome, AttemptOutcome::Retry);
    assert_eq!(
        (attempts[1].attempt_no, attempts[1].response_status),
        (2, Some(200))
    );
    assert!(attempts.iter().all(|a| a.plugin == plugin));
    assert_eq!(attempts, vec![refused, done.attempt]);

    // The next attempt after a replay carries on from the last number.
    store
        .replay_delivery(&job.delivery.id, T0 + 10)
        .await
        .unwrap();
    let again = claim(store, "w", T0 + 10 + LEASE, 1).await.remove(0);
    assert_eq!(again.attempt_no, 3);
}

/// A refused inbound push in the log is never sent: replay leaves it alone.
pub(crate) async fn refused_pushes_are_not_replayed(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let refused = event_with(
        "refused-1",
        REFUSED_INBOUND_EVENT,
        T0,
        json!({"webhook": "hook", "webhook_id": h.id, "status": 422}),
        Value::Null,
    );
    let id = log_finished(store, refused, &h.id, DeliveryStatus::Dead).await;
    assert!(store.replay_delivery(&id, T0 + 1).await.unwrap().is_none());
    assert_eq!(store.replay_dead(&h.id, T0 + 1).await.unwrap(), 0);
    let (d, _) = store.delivery(&id).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Dead);
    assert_eq!(d.source, DeliverySource::Inbound);
    assert!(claim(store, "w", now_ms() + LEASE, 10).await.is_empty());
}

/// Retention deletes finished deliveries past their time with their attempts, and events past
/// theirs once none of their deliveries remain; pending deliveries, their events, and whatever
/// is younger stay. Batches are bounded and say when more is left.
pub(crate) async fn retention_purges_the_right_rows(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let now = now_ms();
    let ev = |id: &str, age: Millis| {
        event_with(
            id,
            "user.created",
            now - age,
            json!({"id": id}),
            Value::Null,
        )
    };
    let ok = DeliveryStatus::Succeeded;
    // In order of receipt, as a gateway receives them.
    let d_old = log_finished(store, ev("d-old", 40 * DAY), &h.id, DeliveryStatus::Dead).await;
    let k_old = log_finished(store, ev("k-old", 40 * DAY), &h.id, DeliveryStatus::Skipped).await;
    let pending = to_ingest(ev("p-old", 40 * DAY), &[&h]);
    let p_old = pending.deliveries[0].1.clone();
    store
        .ingest(vec![pending, to_ingest(ev("lonely-old", 40 * DAY), &[])])
        .await
        .unwrap();
    let s_old = log_finished(store, ev("s-old", 10 * DAY), &h.id, ok).await;
    let s_old2 = log_finished(store, ev("s-old2", 10 * DAY), &h.id, ok).await;
    let d_mid = log_finished(store, ev("d-mid", 10 * DAY), &h.id, DeliveryStatus::Dead).await;
    let s_old3 = log_finished(store, ev("s-old3", 9 * DAY), &h.id, ok).await;
    let s_new = log_finished(store, ev("s-new", DAY), &h.id, ok).await;
    store
        .ingest(vec![to_ingest(ev("lonely-new", DAY), &[])])
        .await
        .unwrap();

    let policy = PurgePolicy {
        succeeded_before: Some(now - 7 * DAY),
        failed_before: Some(now - 30 * DAY),
        events_before: Some(now - 30 * DAY),
        limit: 2,
    };
    let first = store.purge(&policy).await.expect("purge");
    assert!(first.more, "a full batch says more may be left: {first:?}");
    assert!(first.deliveries <= 2, "{first:?}");
    let mut total = first;
    for _ in 0..10 {
        if !total.more {
            break;
        }
        let batch = store.purge(&policy).await.expect("purge");
        assert!(batch.deliveries <= 2 && batch.events <= 2, "{batch:?}");
        total.deliveries += batch.deliveries;
        total.attempts += batch.attempts;
        total.events += batch.events;
        total.more = batch.more;
    }
    assert!(!total.more, "{total:?}");
    assert_eq!(
        (total.deliveries, total.attempts, total.events),
        (5, 5, 3),
        "{total:?}"
    );
    for gone in [&s_old, &s_old2, &s_old3, &d_old, &k_old] {
        assert!(store.delivery(gone).await.unwrap().is_none(), "{gone}");
    }
    for kept in [&s_new, &d_mid, &p_old] {
        assert!(store.delivery(kept).await.unwrap().is_some(), "{kept}");
    }
    for gone in ["d-old", "k-old", "lonely-old"] {
        assert!(store.event(gone).await.unwrap().is_none(), "{gone}");
    }
    // Younger than the events' cutoff, or with a delivery left (pending), events stay.
    for kept in ["s-old", "s-new", "d-mid", "p-old", "lonely-new"] {
        assert!(store.event(kept).await.unwrap().is_some(), "{kept}");
    }
    let again = store.purge(&policy).await.expect("purge");
    assert_eq!((again.deliveries, again.events, again.more), (0, 0, false));

    // Kept forever (none): only the dead delivery goes, its event stays.
    let keep_events = PurgePolicy {
        succeeded_before: None,
        failed_before: Some(now),
        events_before: None,
        limit: 100,
    };
    let last = store.purge(&keep_events).await.expect("purge");
    assert_eq!((last.deliveries, last.events), (1, 0), "{last:?}");
    assert!(store.delivery(&d_mid).await.unwrap().is_none());
    assert!(store.delivery(&s_new).await.unwrap().is_some());
    assert!(store.event("d-mid").await.unwrap().is_some());
    assert!(store.delivery(&p_old).await.unwrap().is_some());
}
