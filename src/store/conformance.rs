//! The [`Store`] contract as executable checks, shared by every backend.
//!
//! The invariants in the `store` module docs are the spec; each function here exercises some of
//! them through the trait alone, so the SQLite store and a future PostgreSQL store are held to
//! exactly the same behaviour. A backend's tests call each function with a fresh, empty store
//! (the checks count rows and claim without filters, so they must not share a database).
//!
//! Time is simulated: claims and stats take `now` from the caller, starting at [`T0`].
//! Change notices are real: a check waits (boundedly) for each one it expects.

/// Calls `$m!` with the name of every check below, so each backend runs all of them:
/// `for_each_check!(my_test_macro);`.
macro_rules! for_each_check {
    ($m:ident) => {
        $m!(
            webhook_crud,
            ingest_is_idempotent,
            failed_ingest_stores_nothing,
            claim_takes_due_deliveries_oldest_first,
            claim_is_exclusive,
            expired_lease_is_claimable_again,
            stale_owner_is_fenced,
            retry_waits_until_due,
            final_outcomes,
            gone_disables_webhook,
            disabled_and_unknown_webhooks_are_not_claimed,
            excluded_webhooks_are_skipped,
            release_returns_lease,
            delete_webhook_kills_pending,
            replay_delivery,
            replay_dead,
            log_paging_and_filters,
            delivery_with_attempts,
            queue_stats,
            remember_message_detects_replays,
            changes_are_announced,
            plugin_versions,
            followups_commit_with_the_lease,
            a_lease_at_ingest_is_a_claim,
            log_search_filters,
            earlier_attempts_and_plugins_are_logged,
            refused_pushes_are_not_replayed,
            retention_purges_the_right_rows,
            connection_crud,
            event_type_crud,
            uncataloged_counts_add_up,
        );
    };
}

mod log;

pub(crate) use log::{
    earlier_attempts_and_plugins_are_logged, log_search_filters, refused_pushes_are_not_replayed,
    retention_purges_the_right_rows,
};

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use tokio::sync::broadcast;

use super::{ClaimRequest, Error, Store, StoreChange};
use crate::model::{
    new_id, Attempt, AttemptOutcome, Completion, Delivery, DeliveryFilter, DeliveryStatus, Event,
    EventToIngest, Job, Lease, Millis, Next, RequestLog, Webhook, WebhookSpec,
};

/// The simulated start of time (November 2023), so `now_ms()` of the store is always later.
pub(crate) const T0: Millis = 1_700_000_000_000;
/// Lease length used by the checks.
pub(crate) const LEASE: i64 = 30_000;

/// A minimal enabled webhook subscribed to everything.
pub(crate) fn webhook(name: &str) -> Webhook {
    let spec: WebhookSpec = serde_json::from_value(json!({
        "name": name,
        "events": ["*"],
        "url": format!("https://{name}.example.test/hook"),
    }))
    .expect("a valid spec");
    Webhook {
        id: new_id("wh"),
        spec,
        created_at: T0,
        updated_at: T0,
    }
}

async fn add_webhook(store: &dyn Store, name: &str) -> Webhook {
    let hook = webhook(name);
    store.insert_webhook(&hook).await.expect("insert webhook");
    hook
}

/// An event received at `at`.
pub(crate) fn event(id: &str, event_type: &str, at: Millis) -> Event {
    Event {
        id: id.to_owned(),
        event_type: event_type.to_owned(),
        data: json!({ "user": id, "tags": ["a", "b"] }).into(),
        context: json!({ "actor": "admin" }).into(),
        occurred_at: at - 5,
        received_at: at,
    }
}

/// `event` fanned out to `hooks`, with fresh delivery ids.
fn to_ingest(event: Event, hooks: &[&Webhook]) -> EventToIngest {
    EventToIngest {
        event,
        deliveries: hooks
            .iter()
            .map(|h| (h.id.clone(), new_id("msg")))
            .collect(),
        lease: None,
    }
}

/// Ingests one `user.created` event received at `at`; returns its delivery ids in `hooks` order.
async fn ingest_one(store: &dyn Store, id: &str, at: Millis, hooks: &[&Webhook]) -> Vec<String> {
    let e = to_ingest(event(id, "user.created", at), hooks);
    let ids = e.deliveries.iter().map(|(_, d)| d.clone()).collect();
    let results = store.ingest(vec![e]).await.expect("ingest");
    assert_eq!(results.len(), 1);
    assert!(!results[0].duplicate, "{id} was new");
    ids
}

pub(crate) fn claim_req(owner: &str, now: Millis, limit: usize) -> ClaimRequest {
    ClaimRequest {
        owner: owner.to_owned(),
        now,
        lease_ms: LEASE,
        limit,
        exclude_webhooks: Vec::new(),
    }
}

async fn claim(store: &dyn Store, owner: &str, now: Millis, limit: usize) -> Vec<Job> {
    store
        .claim(claim_req(owner, now, limit))
        .await
        .expect("claim")
}

fn ids(jobs: &[Job]) -> Vec<String> {
    jobs.iter().map(|j| j.delivery.id.clone()).collect()
}

/// The attempt a worker would log for `job`, answered with `status` (none: a network error).
fn attempt(job: &Job, next: &Next, status: Option<u16>) -> Attempt {
    let outcome = match next {
        Next::Succeeded => AttemptOutcome::Succeeded,
        Next::RetryAt(_) => AttemptOutcome::Retry,
        Next::Dead => AttemptOutcome::Dead,
        Next::Skipped => AttemptOutcome::Skipped,
    };
    let failed = !matches!(status, Some(200..=299)) && *next != Next::Skipped;
    Attempt {
        delivery_id: job.delivery.id.clone(),
        attempt_no: job.attempt_no,
        started_at: T0 + 7,
        duration_ms: 42,
        request: Some(RequestLog {
            method: "POST".to_owned(),
            url: "https://example.test/hook".to_owned(),
            headers: vec![("webhook-id".to_owned(), job.delivery.id.clone())],
            body: job.event.data.get().to_owned(),
            body_from: None,
        }),
        response_status: status,
        response_headers: vec![("content-type".to_owned(), "text/plain".to_owned())],
        response_body: status.map(|s| format!("answer {s}")),
        error: failed.then(|| match status {
            Some(s) => format!("HTTP {s}"),
            None => "connection refused".to_owned(),
        }),
        outcome,
        plugin: None,
    }
}

pub(crate) fn completion(job: &Job, next: Next, status: Option<u16>) -> Completion {
    Completion {
        attempt: attempt(job, &next, status),
        next,
        disable_webhook: false,
        followups: Vec::new(),
        earlier: Vec::new(),
    }
}

async fn complete(
    store: &dyn Store,
    owner: &str,
    job: &Job,
    next: Next,
    status: Option<u16>,
) -> bool {
    store
        .complete(owner, completion(job, next, status))
        .await
        .expect("complete")
}

async fn get(store: &dyn Store, id: &str) -> Delivery {
    store
        .delivery(id)
        .await
        .expect("read delivery")
        .expect("delivery exists")
        .0
}

async fn attempts_of(store: &dyn Store, id: &str) -> Vec<Attempt> {
    store
        .delivery(id)
        .await
        .expect("read delivery")
        .expect("delivery exists")
        .1
}

async fn list(store: &dyn Store, filter: DeliveryFilter) -> Vec<Delivery> {
    let page = store.deliveries(&filter).await.expect("list deliveries");
    assert!(page.next_cursor.is_none(), "expected a single page");
    page.items
}

/// Webhooks: insert, look up by id and name, unique names, update, delete.
pub(crate) async fn webhook_crud(store: Arc<dyn Store>) {
    let store = &*store;
    let mut a = add_webhook(store, "alpha").await;
    let mut b = webhook("beta");
    b.created_at = T0 + 1;
    store.insert_webhook(&b).await.expect("insert beta");

    assert_eq!(store.webhook(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.webhook("beta").await.unwrap(), Some(b.clone()));
    assert_eq!(store.webhook("gamma").await.unwrap(), None);
    assert_eq!(store.webhooks().await.unwrap(), vec![a.clone(), b.clone()]);

    let taken = store.insert_webhook(&webhook("alpha")).await;
    assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");
    let mut same_id = webhook("delta");
    same_id.id = a.id.clone();
    let taken = store.insert_webhook(&same_id).await;
    assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");

    a.spec.name = "alpha-2".to_owned();
    a.spec.description = "renamed".to_owned();
    a.spec.retry.max_attempts = 3;
    a.spec.enabled = false;
    a.updated_at = T0 + 10;
    assert!(store.update_webhook(&a).await.unwrap());
    assert_eq!(store.webhook(&a.id).await.unwrap(), Some(a.clone()));
    assert_eq!(store.webhook("alpha-2").await.unwrap(), Some(a.clone()));
    assert_eq!(store.webhook("alpha").await.unwrap(), None);

    b.spec.name = "alpha-2".to_owned();
    let taken = store.update_webhook(&b).await;
    assert!(matches!(taken, Err(Error::Conflict(_))), "{taken:?}");
    assert!(!store.update_webhook(&webhook("nobody")).await.unwrap());

    assert!(store.delete_webhook(&a.id).await.unwrap());
    assert!(!store.delete_webhook(&a.id).await.unwrap());
    assert_eq!(store.webhook(&a.id).await.unwrap(), None);
    assert_eq!(store.webhooks().await.unwrap().len(), 1);
}

/// Ingest stores the event and its pending deliveries once; repeats, across calls and within
/// one call, are reported as duplicates and enqueue nothing.
pub(crate) async fn ingest_is_idempotent(store: Arc<dyn Store>) {
    let store = &*store;
    let h1 = add_webhook(store, "one").await;
    let h2 = add_webhook(store, "two").await;

    let first = to_ingest(event("evt-1", "user.created", T0), &[&h1, &h2]);
    let original_ids: HashSet<String> = first.deliveries.iter().map(|(_, d)| d.clone()).collect();
    let results = store.ingest(vec![first.clone()]).await.unwrap();
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].id, "evt-1");
    assert_eq!(results[0].deliveries, 2);
    assert!(!results[0].duplicate);
    assert_eq!(
        store.event("evt-1").await.unwrap(),
        Some(first.event.clone())
    );
    assert_eq!(store.event("evt-x").await.unwrap(), None);

    for id in &original_ids {
        let d = get(store, id).await;
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.event_id, "evt-1");
        assert_eq!(d.event_type, "user.created");
        assert_eq!(d.attempts_since_replay, 0);
        assert_eq!(d.next_attempt_at, Some(T0), "due when received");
        assert_eq!(d.created_at, T0);
        assert_eq!((d.last_status, d.last_error.as_deref()), (None, None));
    }

    // Again, with other delivery ids and even another payload: nothing new.
    let mut again = to_ingest(event("evt-1", "user.deleted", T0 + 50), &[&h1]);
    again.event.data = json!({ "other": true }).into();
    let results = store.ingest(vec![again]).await.unwrap();
    assert_eq!(results[0].deliveries, 2, "counts the existing deliveries");
    assert!(results[0].duplicate);
    assert_eq!(store.event("evt-1").await.unwrap(), Some(first.event));
    let stored: HashSet<String> = list(
        store,
        DeliveryFilter {
            event_id: Some("evt-1".to_owned()),
            limit: 10,
            ..Default::default()
        },
    )
    .await
    .into_iter()
    .map(|d| d.id)
    .collect();
    assert_eq!(stored, original_ids);

    // Within one call: the second evt-2 is a duplicate of the first.
    let results = store
        .ingest(vec![
            to_ingest(event("evt-2", "user.created", T0 + 1), &[&h1]),
            to_ingest(event("evt-2", "user.created", T0 + 1), &[&h1, &h2]),
            to_ingest(event("evt-3", "user.created", T0 + 2), &[]),
            to_ingest(event("evt-1", "user.created", T0 + 2), &[&h2]),
        ])
        .await
        .unwrap();
    let summary: Vec<(&str, usize, bool)> = results
        .iter()
        .map(|r| (r.id.as_str(), r.deliveries, r.duplicate))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("evt-2", 1, false),
            ("evt-2", 1, true),
            ("evt-3", 0, false),
            ("evt-1", 2, true)
        ]
    );
    assert!(store.event("evt-3").await.unwrap().is_some());
    let all = list(
        store,
        DeliveryFilter {
            limit: 100,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.len(), 3);
    assert!(store.ingest(Vec::new()).await.unwrap().is_empty());
}

/// A failing ingest call stores none of its events and deliveries, and does not disturb other
/// callers' ingests committed at the same time.
pub(crate) async fn failed_ingest_stores_nothing(store: Arc<dyn Store>) {
    let h = add_webhook(&*store, "hook").await;
    let taken = ingest_one(&*store, "evt-1", T0, &[&h]).await.remove(0);

    let doomed = vec![
        to_ingest(event("evt-2", "user.created", T0), &[&h]),
        EventToIngest {
            event: event("evt-3", "user.created", T0),
            // Reuses a delivery id: the whole call must fail.
            deliveries: vec![(h.id.clone(), taken.clone())],
            lease: None,
        },
    ];
    let fine = vec![to_ingest(event("evt-4", "user.created", T0), &[&h])];
    let (doomed, fine) = tokio::join!(store.ingest(doomed), store.ingest(fine));
    assert!(doomed.is_err(), "{doomed:?}");
    assert_eq!(fine.expect("the other ingest commits")[0].deliveries, 1);

    assert_eq!(store.event("evt-2").await.unwrap(), None);
    assert_eq!(store.event("evt-3").await.unwrap(), None);
    assert!(store.event("evt-4").await.unwrap().is_some());
    let all = list(
        &*store,
        DeliveryFilter {
            limit: 100,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(all.len(), 2);
    assert_eq!(get(&*store, &taken).await.event_id, "evt-1");
}

/// Claim hands out due deliveries only, oldest due first, up to the limit, with their events.
pub(crate) async fn claim_takes_due_deliveries_oldest_first(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let late = ingest_one(store, "evt-30", T0 + 30, &[&h]).await.remove(0);
    let early = ingest_one(store, "evt-10", T0 + 10, &[&h]).await.remove(0);
    let middle = ingest_one(store, "evt-20", T0 + 20, &[&h]).await.remove(0);

    assert!(
        claim(store, "w1", T0 + 5, 10).await.is_empty(),
        "nothing due yet"
    );
    assert!(claim(store, "w1", T0 + 25, 0).await.is_empty(), "limit 0");

    let jobs = claim(store, "w1", T0 + 25, 1).await;
    assert_eq!(ids(&jobs), vec![early.clone()]);
    let job = &jobs[0];
    assert_eq!(job.attempt_no, 1);
    assert_eq!(job.delivery.status, DeliveryStatus::Pending);
    assert_eq!(job.delivery.webhook_id, h.id);
    assert_eq!(job.event, store.event("evt-10").await.unwrap().unwrap());

    let jobs = claim(store, "w1", T0 + 25, 10).await;
    assert_eq!(
        ids(&jobs),
        vec![middle],
        "the next due one; evt-30 is not due"
    );

    let jobs = claim(store, "w2", T0 + 100, 10).await;
    assert_eq!(
        ids(&jobs),
        vec![late],
        "leased deliveries are not handed out again"
    );
    assert!(claim(store, "w3", T0 + 100, 10).await.is_empty());
}

/// Concurrent claimers never get the same delivery.
pub(crate) async fn claim_is_exclusive(store: Arc<dyn Store>) {
    let h1 = add_webhook(&*store, "one").await;
    let h2 = add_webhook(&*store, "two").await;
    let events: Vec<EventToIngest> = (0..100)
        .map(|i| {
            to_ingest(
                event(&format!("evt-{i}"), "user.created", T0 + i),
                &[&h1, &h2],
            )
        })
        .collect();
    store.ingest(events).await.unwrap();

    let mut workers = Vec::new();
    for w in 0..8 {
        let store = store.clone();
        workers.push(tokio::spawn(async move {
            let owner = format!("worker-{w}");
            let mut got = Vec::new();
            loop {
                let jobs = claim(&*store, &owner, T0 + 1_000, 7).await;
                if jobs.is_empty() {
                    return got;
                }
                got.extend(ids(&jobs));
                tokio::task::yield_now().await;
            }
        }));
    }
    let mut seen = HashSet::new();
    for worker in workers {
        for id in worker.await.expect("worker task") {
            assert!(seen.insert(id.clone()), "{id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 200);
}

/// A lease that expires makes the delivery claimable again (at least once delivery).
pub(crate) async fn expired_lease_is_claimable_again(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let id = ingest_one(store, "evt-1", T0, &[&h]).await.remove(0);

    let mut req = claim_req("w1", T0, 10);
    req.lease_ms = 1_000;
    assert_eq!(ids(&store.claim(req).await.unwrap()), vec![id.clone()]);
    assert!(claim(store, "w2", T0 + 999, 10).await.is_empty());
    let jobs = claim(store, "w2", T0 + 1_000, 10).await;
    assert_eq!(ids(&jobs), vec![id.clone()]);
    assert_eq!(jobs[0].attempt_no, 1, "no attempt was logged in between");
    assert_eq!(get(store, &id).await.status, DeliveryStatus::Pending);
}

/// A worker whose lease was taken over cannot complete or release the delivery, but its
/// attempt is still logged, under a number of its own.
pub(crate) async fn stale_owner_is_fenced(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let id = ingest_one(store, "evt-1", T0, &[&h]).await.remove(0);

    let old = claim(store, "old", T0, 1).await.remove(0);
    let new = claim(store, "new", T0 + LEASE, 1).await.remove(0);
    assert_eq!(new.delivery.id, id);

    assert!(!complete(store, "old", &old, Next::Succeeded, Some(200)).await);
    let d = get(store, &id).await;
    assert_eq!(
        d.status,
        DeliveryStatus::Pending,
        "the old owner changed nothing"
    );
    assert_eq!(d.attempts_since_replay, 0);
    assert_eq!(
        attempts_of(store, &id).await.len(),
        1,
        "but its attempt is logged"
    );

    store
        .release("old", std::slice::from_ref(&id))
        .await
        .unwrap();
    assert!(
        claim(store, "third", T0 + LEASE + 1, 1).await.is_empty(),
        "the stale release did not free the new owner's lease"
    );
    assert!(!complete(store, "nobody", &new, Next::Dead, Some(500)).await);

    assert!(complete(store, "new", &new, Next::Dead, Some(500)).await);
    let d = get(store, &id).await;
    assert_eq!(d.status, DeliveryStatus::Dead);
    assert_eq!(d.attempts_since_replay, 1);
    assert_eq!(d.last_status, Some(500));

    assert!(!complete(store, "old", &old, Next::Succeeded, Some(200)).await);
    assert_eq!(get(store, &id).await.status, DeliveryStatus::Dead);

    let numbers: Vec<u32> = attempts_of(store, &id)
        .await
        .iter()
        .map(|a| a.attempt_no)
        .collect();
    assert_eq!(numbers.len(), 4, "every attempt is logged");
    assert!(
        numbers.windows(2).all(|w| w[0] < w[1]),
        "attempt numbers are unique and increasing: {numbers:?}"
    );
}

/// A retry keeps the delivery pending but out of reach until its time.
pub(crate) async fn retry_waits_until_due(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let id = ingest_one(store, "evt-1", T0, &[&h]).await.remove(0);

    let job = claim(store, "w", T0, 1).await.remove(0);
    assert!(complete(store, "w", &job, Next::RetryAt(T0 + 10_000), Some(503)).await);
    let d = get(store, &id).await;
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts_since_replay, 1);
    assert_eq!(d.next_attempt_at, Some(T0 + 10_000));
    assert_eq!(d.last_status, Some(503));
    assert_eq!(d.last_error.as_deref(), Some("HTTP 503"));

    assert!(claim(store, "w", T0 + 9_999, 1).await.is_empty());
    let job = claim(store, "w", T0 + 10_000, 1).await.remove(0);
    assert_eq!(job.attempt_no, 2);
    assert_eq!(job.delivery.attempts_since_replay, 1);

    assert!(complete(store, "w", &job, Next::RetryAt(T0 + 20_000), None).await);
    let d = get(store, &id).await;
    assert_eq!(d.last_status, None, "a network error has no status");
    assert_eq!(d.last_error.as_deref(), Some("connection refused"));

    let job = claim(store, "w", T0 + 20_000, 1).await.remove(0);
    assert_eq!(job.attempt_no, 3);
    assert!(complete(store, "w", &job, Next::Succeeded, Some(200)).await);
    let d = get(store, &id).await;
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(d.attempts_since_replay, 3);
    assert_eq!(d.next_attempt_at, None);
    assert_eq!(d.last_status, Some(200));
    assert_eq!(d.last_error, None);
    assert!(claim(store, "w", T0 + 1_000_000, 1).await.is_empty());

    let outcomes: Vec<(u32, AttemptOutcome)> = attempts_of(store, &id)
        .await
        .iter()
        .map(|a| (a.attempt_no, a.outcome))
        .collect();
    assert_eq!(
        outcomes,
        vec![
            (1, AttemptOutcome::Retry),
            (2, AttemptOutcome::Retry),
            (3, AttemptOutcome::Succeeded)
        ]
    );
}

/// Succeeded, dead and skipped are final: never claimed again, not completed again.
pub(crate) async fn final_outcomes(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    for (i, at) in [T0, T0 + 1, T0 + 2].into_iter().enumerate() {
        ingest_one(store, &format!("evt-{i}"), at, &[&h]).await;
    }
    let jobs = claim(store, "w", T0 + 10, 10).await;
    assert_eq!(jobs.len(), 3);
    let cases = [
        (Next::Succeeded, Some(204), DeliveryStatus::Succeeded),
        (Next::Dead, Some(400), DeliveryStatus::Dead),
        (Next::Skipped, None, DeliveryStatus::Skipped),
    ];
    for (job, (next, code, status)) in jobs.iter().zip(cases) {
        assert!(complete(store, "w", job, next, code).await);
        let d = get(store, &job.delivery.id).await;
        assert_eq!(d.status, status);
        assert_eq!(d.next_attempt_at, None);
        assert_eq!(d.attempts_since_replay, 1);
        assert_eq!(d.last_status, code);
    }
    assert!(claim(store, "w", T0 + 10_000_000, 10).await.is_empty());
    for (job, status) in jobs.iter().zip([
        DeliveryStatus::Succeeded,
        DeliveryStatus::Dead,
        DeliveryStatus::Skipped,
    ]) {
        assert!(!complete(store, "w", job, Next::RetryAt(T0), Some(500)).await);
        assert_eq!(get(store, &job.delivery.id).await.status, status);
    }
    let stats = store.queue_stats(T0 + 100).await.unwrap();
    assert_eq!(stats.pending, 0);
}

/// A 410 answer disables the webhook: its deliveries are no longer claimed until an admin
/// enables it again; other webhooks are unaffected.
pub(crate) async fn gone_disables_webhook(store: Arc<dyn Store>) {
    let store = &*store;
    let h1 = add_webhook(store, "gone").await;
    let h2 = add_webhook(store, "fine").await;
    let first = ingest_one(store, "evt-1", T0, &[&h1, &h2]).await;
    let second = ingest_one(store, "evt-2", T0 + 1, &[&h1, &h2]).await;

    let mut req = claim_req("w", T0 + 10, 1);
    req.exclude_webhooks = vec![h2.id.clone()];
    let job = store.claim(req).await.unwrap().remove(0);
    assert_eq!(job.delivery.id, first[0]);
    let mut gone = completion(&job, Next::Dead, Some(410));
    gone.disable_webhook = true;
    assert!(store.complete("w", gone).await.unwrap());
    assert_eq!(get(store, &first[0]).await.status, DeliveryStatus::Dead);

    let hook = store.webhook(&h1.id).await.unwrap().unwrap();
    assert!(!hook.spec.enabled);
    assert!(hook.updated_at > h1.updated_at, "updated_at moves on");
    assert_eq!(hook.spec.url, h1.spec.url, "the rest of the spec is kept");
    assert!(store.webhook(&h2.id).await.unwrap().unwrap().spec.enabled);

    let jobs = claim(store, "w", T0 + 20, 10).await;
    let mut got = ids(&jobs);
    got.sort();
    let mut expected = vec![first[1].clone(), second[1].clone()];
    expected.sort();
    assert_eq!(got, expected, "only the enabled webhook's deliveries");

    let mut enabled = hook.clone();
    enabled.spec.enabled = true;
    assert!(store.update_webhook(&enabled).await.unwrap());
    assert_eq!(
        ids(&claim(store, "w", T0 + 30, 10).await),
        vec![second[0].clone()]
    );
}

/// Deliveries of a disabled or unknown webhook stay pending and unclaimed.
pub(crate) async fn disabled_and_unknown_webhooks_are_not_claimed(store: Arc<dyn Store>) {
    let store = &*store;
    let mut off = webhook("off");
    off.spec.enabled = false;
    store.insert_webhook(&off).await.unwrap();
    assert!(!store.webhook("off").await.unwrap().unwrap().spec.enabled);
    let ghost = webhook("ghost");
    let results = store
        .ingest(vec![to_ingest(
            event("evt-1", "user.created", T0),
            &[&off, &ghost],
        )])
        .await
        .unwrap();
    assert_eq!(results[0].deliveries, 2);
    assert!(claim(store, "w", T0 + 1_000, 10).await.is_empty());
    assert_eq!(store.queue_stats(T0 + 1_000).await.unwrap().pending, 2);
}

/// Claim skips webhooks the worker excludes (saturated here) and takes the others'.
pub(crate) async fn excluded_webhooks_are_skipped(store: Arc<dyn Store>) {
    let store = &*store;
    let h1 = add_webhook(store, "one").await;
    let h2 = add_webhook(store, "two").await;
    let h3 = add_webhook(store, "three").await;
    for i in 0..3 {
        ingest_one(store, &format!("evt-{i}"), T0 + i, &[&h1, &h2, &h3]).await;
    }
    let mut req = claim_req("w", T0 + 10, 10);
    req.exclude_webhooks = vec![h1.id.clone(), h3.id.clone()];
    let jobs = store.claim(req.clone()).await.unwrap();
    assert_eq!(jobs.len(), 3);
    assert!(jobs.iter().all(|j| j.delivery.webhook_id == h2.id));

    req.exclude_webhooks = vec![h2.id.clone()];
    let jobs = store.claim(req).await.unwrap();
    assert_eq!(jobs.len(), 6);
    assert!(jobs.iter().all(|j| j.delivery.webhook_id != h2.id));
    let due: Vec<Millis> = jobs
        .iter()
        .map(|j| j.delivery.next_attempt_at.unwrap_or_default())
        .collect();
    assert!(
        due.windows(2).all(|w| w[0] <= w[1]),
        "oldest first: {due:?}"
    );
}

/// Release gives the owner's leases back at once, without an attempt; others' leases stay.
pub(crate) async fn release_returns_lease(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let id = ingest_one(store, "evt-1", T0, &[&h]).await.remove(0);

    claim(store, "a", T0, 1).await.remove(0);
    store.release("b", std::slice::from_ref(&id)).await.unwrap();
    assert!(
        claim(store, "c", T0 + 1, 1).await.is_empty(),
        "b held no lease"
    );

    store
        .release("a", &[id.clone(), "msg_unknown".to_owned()])
        .await
        .unwrap();
    store.release("a", &[]).await.unwrap();
    let jobs = claim(store, "c", T0 + 1, 1).await;
    assert_eq!(ids(&jobs), vec![id.clone()]);
    assert_eq!(jobs[0].attempt_no, 1);
    let d = get(store, &id).await;
    assert_eq!(d.attempts_since_replay, 0);
    assert!(attempts_of(store, &id).await.is_empty());
}

/// Deleting a webhook kills its pending deliveries and keeps its log.
pub(crate) async fn delete_webhook_kills_pending(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "doomed").await;
    let other = add_webhook(store, "other").await;
    let done = ingest_one(store, "evt-1", T0, &[&h]).await.remove(0);
    let leased = ingest_one(store, "evt-2", T0 + 1, &[&h]).await.remove(0);
    let waiting = ingest_one(store, "evt-3", T0 + 2, &[&h, &other]).await;

    let job = claim(store, "w", T0 + 10, 1).await.remove(0);
    assert_eq!(job.delivery.id, done);
    assert!(complete(store, "w", &job, Next::Succeeded, Some(200)).await);
    let in_flight = claim(store, "w", T0 + 10, 1).await.remove(0);
    assert_eq!(in_flight.delivery.id, leased);

    assert!(store.delete_webhook(&h.id).await.unwrap());
    assert_eq!(get(store, &done).await.status, DeliveryStatus::Succeeded);
    assert_eq!(attempts_of(store, &done).await.len(), 1, "the log is kept");
    for id in [&leased, &waiting[0]] {
        let d = get(store, id).await;
        assert_eq!(d.status, DeliveryStatus::Dead);
        assert_eq!(d.last_error.as_deref(), Some("webhook deleted"));
        assert_eq!(d.next_attempt_at, None);
    }
    assert_eq!(
        get(store, &waiting[1]).await.status,
        DeliveryStatus::Pending
    );

    assert!(!complete(store, "w", &in_flight, Next::Succeeded, Some(200)).await);
    assert_eq!(get(store, &leased).await.status, DeliveryStatus::Dead);
    assert_eq!(attempts_of(store, &leased).await.len(), 1);
    assert_eq!(
        ids(&claim(store, "w2", T0 + 100, 10).await),
        vec![waiting[1].clone()]
    );
}

/// Replaying a delivery makes it pending and due with a fresh budget; numbering continues.
pub(crate) async fn replay_delivery(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let id = ingest_one(store, "evt-1", T0, &[&h]).await.remove(0);

    let job = claim(store, "w", T0, 1).await.remove(0);
    assert!(complete(store, "w", &job, Next::Dead, Some(500)).await);
    assert!(store
        .replay_delivery("msg_unknown", T0)
        .await
        .unwrap()
        .is_none());

    let d = store
        .replay_delivery(&id, T0 + 50_000)
        .await
        .unwrap()
        .expect("replayed");
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert_eq!(d.attempts_since_replay, 0);
    assert_eq!(
        d.attempts, 1,
        "the attempt before the replay still counts as one held"
    );
    assert_eq!(d.next_attempt_at, Some(T0 + 50_000));
    assert_eq!(
        d.last_error.as_deref(),
        Some("HTTP 500"),
        "kept for the log"
    );
    assert_eq!(get(store, &id).await, d);

    assert!(claim(store, "w", T0 + 49_999, 1).await.is_empty());
    let job = claim(store, "w", T0 + 50_000, 1).await.remove(0);
    assert_eq!(job.attempt_no, 2);
    assert_eq!(job.delivery.attempts_since_replay, 0);

    // Replaying a leased, pending delivery frees it now and fences the old owner.
    let d = store
        .replay_delivery(&id, T0 + 50_001)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.next_attempt_at, Some(T0 + 50_001));
    let again = claim(store, "w2", T0 + 50_001, 1).await.remove(0);
    assert!(!complete(store, "w", &job, Next::Succeeded, Some(200)).await);
    assert!(complete(store, "w2", &again, Next::Succeeded, Some(200)).await);

    let d = store
        .replay_delivery(&id, T0 + 60_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        d.status,
        DeliveryStatus::Pending,
        "succeeded ones replay too"
    );
    let d = get(store, &id).await;
    assert_eq!(
        (d.attempts, d.attempts_since_replay),
        (3, 0),
        "after a replay the delivery says how many attempts it holds"
    );
    let job = claim(store, "w", T0 + 60_000, 1).await.remove(0);
    assert!(complete(store, "w", &job, Next::Dead, Some(500)).await);
    let d = get(store, &id).await;
    assert_eq!((d.attempts, d.attempts_since_replay), (4, 1));
    let numbers: Vec<u32> = attempts_of(store, &id)
        .await
        .iter()
        .map(|a| a.attempt_no)
        .collect();
    assert_eq!(numbers.len(), 4);
    assert_eq!(d.attempts as usize, numbers.len());
    assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{numbers:?}");
    assert_eq!(job.attempt_no, numbers[3]);
}

/// Replaying a webhook's dead deliveries touches exactly those.
pub(crate) async fn replay_dead(store: Arc<dyn Store>) {
    let store = &*store;
    let h1 = add_webhook(store, "one").await;
    let h2 = add_webhook(store, "two").await;
    for i in 0..4 {
        ingest_one(store, &format!("evt-{i}"), T0 + i, &[&h1, &h2]).await;
    }
    // h1: dead, dead, succeeded, pending. h2: dead, pending x3.
    let mut req = claim_req("w", T0 + 10, 3);
    req.exclude_webhooks = vec![h2.id.clone()];
    let jobs = store.claim(req).await.unwrap();
    for (job, next) in jobs.iter().zip([Next::Dead, Next::Dead, Next::Succeeded]) {
        assert!(complete(store, "w", job, next, Some(500)).await);
    }
    let mut req = claim_req("w", T0 + 10, 1);
    req.exclude_webhooks = vec![h1.id.clone()];
    let job = store.claim(req).await.unwrap().remove(0);
    assert!(complete(store, "w", &job, Next::Dead, Some(500)).await);

    assert_eq!(store.replay_dead(&h1.id, T0 + 100).await.unwrap(), 2);
    for job in &jobs[..2] {
        let d = get(store, &job.delivery.id).await;
        assert_eq!(d.status, DeliveryStatus::Pending);
        assert_eq!(d.attempts_since_replay, 0);
        assert_eq!(d.next_attempt_at, Some(T0 + 100));
    }
    assert_eq!(
        get(store, &jobs[2].delivery.id).await.status,
        DeliveryStatus::Succeeded
    );
    assert_eq!(
        get(store, &job.delivery.id).await.status,
        DeliveryStatus::Dead
    );
    assert_eq!(store.replay_dead(&h1.id, T0 + 100).await.unwrap(), 0);
    assert_eq!(store.replay_dead("wh_unknown", T0 + 100).await.unwrap(), 0);
    assert_eq!(store.replay_dead(&h2.id, T0 + 100).await.unwrap(), 1);
}

/// The Webhook Log: newest first, cursor paging without gaps or repeats, every filter.
pub(crate) async fn log_paging_and_filters(store: Arc<dyn Store>) {
    let store = &*store;
    let h1 = add_webhook(store, "one").await;
    let h2 = add_webhook(store, "two").await;
    let mut batch = Vec::new();
    for i in 0..12 {
        let kind = if i % 2 == 0 {
            "user.created"
        } else {
            "user.deleted"
        };
        batch.push(to_ingest(
            event(&format!("evt-{i}"), kind, T0 + i),
            &[&h1, &h2],
        ));
    }
    store.ingest(batch).await.unwrap();
    let mut req = claim_req("w", T0 + 100, 4);
    req.exclude_webhooks = vec![h2.id.clone()];
    for job in store.claim(req).await.unwrap() {
        assert!(complete(store, "w", &job, Next::Dead, Some(500)).await);
    }

    // Every page, following cursors.
    let mut seen: Vec<String> = Vec::new();
    let mut cursor = None;
    let mut sizes = Vec::new();
    loop {
        let page = store
            .deliveries(&DeliveryFilter {
                limit: 5,
                cursor: cursor.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        sizes.push(page.items.len());
        seen.extend(page.items.iter().map(|d| d.id.clone()));
        if let Some(next) = page.next_cursor {
            assert_eq!(Some(&next), seen.last(), "the cursor is the page's last id");
            cursor = Some(next);
        } else {
            break;
        }
    }
    assert_eq!(sizes, vec![5, 5, 5, 5, 4]);
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest (highest id) first, no repeats"
    );

    // A last page that is exactly full has no cursor.
    let page = store
        .deliveries(&DeliveryFilter {
            limit: 24,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.items.len(), 24);
    assert!(page.next_cursor.is_none());
    let page = store
        .deliveries(&DeliveryFilter {
            limit: 12,
            ..Default::default()
        })
        .await
        .unwrap();
    let second = store
        .deliveries(&DeliveryFilter {
            limit: 12,
            cursor: page.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(second.items.len(), 12);
    assert!(second.next_cursor.is_none());

    let filtered =
        |f: DeliveryFilter| async move { list(store, DeliveryFilter { limit: 100, ..f }).await };
    let by_hook = filtered(DeliveryFilter {
        webhook_id: Some(h1.id.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_hook.len(), 12);
    assert!(by_hook.iter().all(|d| d.webhook_id == h1.id));
    assert!(by_hook.windows(2).all(|w| w[0].id > w[1].id));

    let dead = filtered(DeliveryFilter {
        status: Some(DeliveryStatus::Dead),
        ..Default::default()
    })
    .await;
    assert_eq!(dead.len(), 4);
    assert!(dead.iter().all(|d| d.webhook_id == h1.id));
    let none = filtered(DeliveryFilter {
        webhook_id: Some(h2.id.clone()),
        status: Some(DeliveryStatus::Dead),
        ..Default::default()
    })
    .await;
    assert!(none.is_empty());

    let deleted = filtered(DeliveryFilter {
        event_types: vec!["user.deleted".to_owned()],
        ..Default::default()
    })
    .await;
    assert_eq!(deleted.len(), 12);
    assert!(deleted.iter().all(|d| d.event_type == "user.deleted"));
    let deleted_h2 = filtered(DeliveryFilter {
        event_types: vec!["user.deleted".to_owned()],
        webhook_id: Some(h2.id.clone()),
        ..Default::default()
    })
    .await;
    assert_eq!(deleted_h2.len(), 6);

    let one_event = filtered(DeliveryFilter {
        event_id: Some("evt-5".to_owned()),
        ..Default::default()
    })
    .await;
    assert_eq!(one_event.len(), 2);
    assert!(one_event.iter().all(|d| d.event_id == "evt-5"));

    // Paging within a filter.
    let first = store
        .deliveries(&DeliveryFilter {
            webhook_id: Some(h2.id.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    let rest = store
        .deliveries(&DeliveryFilter {
            webhook_id: Some(h2.id.clone()),
            limit: 10,
            cursor: first.next_cursor.clone(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((first.items.len(), rest.items.len()), (10, 2));
    assert!(rest.next_cursor.is_none());
    assert!(first
        .items
        .iter()
        .chain(&rest.items)
        .all(|d| d.webhook_id == h2.id));
}

/// A delivery comes back with every attempt, oldest first, exactly as logged.
pub(crate) async fn delivery_with_attempts(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let id = ingest_one(store, "evt-1", T0, &[&h]).await.remove(0);
    assert!(store.delivery("msg_unknown").await.unwrap().is_none());

    let job = claim(store, "w", T0, 1).await.remove(0);
    let mut first = completion(&job, Next::RetryAt(T0 + 1_000), Some(502));
    first
        .attempt
        .response_headers
        .push(("x-empty".to_owned(), String::new()));
    first.attempt.response_body = Some("bad gateway \u{2603}".to_owned());
    store.complete("w", first.clone()).await.unwrap();

    let job = claim(store, "w", T0 + 1_000, 1).await.remove(0);
    let mut second = completion(&job, Next::Skipped, None);
    second.attempt.request = None;
    second.attempt.response_headers.clear();
    second.attempt.duration_ms = 0;
    store.complete("w", second.clone()).await.unwrap();

    let (d, attempts) = store.delivery(&id).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Skipped);
    assert_eq!(attempts, vec![first.attempt, second.attempt]);
}

/// Queue depth and age, for `/metrics`.
pub(crate) async fn queue_stats(store: Arc<dyn Store>) {
    let store = &*store;
    let empty = store.queue_stats(T0).await.unwrap();
    assert_eq!(
        (empty.pending, empty.due, empty.oldest_due_age_ms),
        (0, 0, 0)
    );

    let h = add_webhook(store, "hook").await;
    ingest_one(store, "evt-1", T0, &[&h]).await;
    ingest_one(store, "evt-2", T0 + 1_000, &[&h]).await;
    ingest_one(store, "evt-3", T0 + 5_000, &[&h]).await;

    let s = store.queue_stats(T0 + 2_000).await.unwrap();
    assert_eq!((s.pending, s.due, s.oldest_due_age_ms), (3, 2, 2_000));
    let s = store.queue_stats(T0 - 1).await.unwrap();
    assert_eq!((s.pending, s.due, s.oldest_due_age_ms), (3, 0, 0));
    // The back-pressure's count: the same due deliveries, counted no further than asked.
    assert_eq!(store.due_count(T0 + 2_000, 100).await.unwrap(), 2);
    assert_eq!(store.due_count(T0 + 2_000, 1).await.unwrap(), 1);
    assert_eq!(store.due_count(T0 + 9_000, 100).await.unwrap(), 3);
    assert_eq!(store.due_count(T0 - 1, 100).await.unwrap(), 0);

    let job = claim(store, "w", T0 + 2_000, 1).await.remove(0);
    let s = store.queue_stats(T0 + 2_000).await.unwrap();
    assert_eq!(s.pending, 3, "a leased delivery is still pending");
    assert!(complete(store, "w", &job, Next::Succeeded, Some(200)).await);
    let s = store.queue_stats(T0 + 2_000).await.unwrap();
    assert_eq!((s.pending, s.due, s.oldest_due_age_ms), (2, 1, 1_000));

    // A paused (disabled) webhook's backlog is pending but neither due nor overdue.
    let mut paused = add_webhook(store, "paused").await;
    ingest_one(store, "evt-4", T0 - 10_000, &[&paused]).await;
    paused.spec.enabled = false;
    assert!(store.update_webhook(&paused).await.unwrap());
    let s = store.queue_stats(T0 + 2_000).await.unwrap();
    assert_eq!((s.pending, s.due, s.oldest_due_age_ms), (3, 1, 1_000));
    assert_eq!(store.due_count(T0 + 2_000, 100).await.unwrap(), 1);
}

/// What was committed survives closing and reopening the store. `open` opens the same database
/// each time; the store it returned before is dropped before it is called again.
pub(crate) async fn persists_across_reopen<F, Fut>(open: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    let (hook, ids) = {
        let store = open().await;
        let hook = add_webhook(&*store, "kept").await;
        let ids = ingest_one(&*store, "evt-1", T0, &[&hook]).await;
        ingest_one(&*store, "evt-2", T0 + 1, &[&hook]).await;
        let job = claim(&*store, "w", T0, 1).await.remove(0);
        assert!(complete(&*store, "w", &job, Next::Succeeded, Some(200)).await);
        (hook, ids)
    };
    let store = open().await;
    assert_eq!(store.webhook(&hook.id).await.unwrap(), Some(hook));
    assert!(store.event("evt-1").await.unwrap().is_some());
    let (d, attempts) = store.delivery(&ids[0]).await.unwrap().unwrap();
    assert_eq!(d.status, DeliveryStatus::Succeeded);
    assert_eq!(attempts.len(), 1);
    let dup = store
        .ingest(vec![to_ingest(event("evt-1", "user.created", T0), &[])])
        .await
        .unwrap();
    assert!(dup[0].duplicate, "idempotency survives a restart");
    let jobs = claim(&*store, "w2", T0 + 10, 10).await;
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].event.id, "evt-2");
    assert_eq!(
        jobs[0].event.data,
        json!({ "user": "evt-2", "tags": ["a", "b"] })
    );
    assert_ne!(jobs[0].event.context, Value::Null);
    assert_eq!(
        jobs[0].event.data.get(),
        r#"{"tags":["a","b"],"user":"evt-2"}"#,
        "the stored text comes back as it went in"
    );
}

/// How long a check waits for a change notice (PostgreSQL delivers its own through LISTEN).
pub(crate) const NOTICE_WAIT: Duration = Duration::from_secs(2);

/// The next change notice, failing the check when none comes within [`NOTICE_WAIT`].
pub(crate) async fn next_change(rx: &mut broadcast::Receiver<StoreChange>) -> StoreChange {
    tokio::time::timeout(NOTICE_WAIT, rx.recv())
        .await
        .expect("a change notice in time")
        .expect("the change channel is open and not lagging")
}

/// Inbound message ids: accepted once per scope while remembered, again once expired, and by
/// exactly one of several concurrent callers.
pub(crate) async fn remember_message_detects_replays(store: Arc<dyn Store>) {
    let until = T0 + 1_000;
    let remember = |scope: &'static str, id: &'static str, until: Millis, now: Millis| {
        let store = store.clone();
        async move {
            store
                .remember_message(scope, id, until, now)
                .await
                .expect("remember message")
        }
    };
    assert!(remember("wh_a", "msg_1", until, T0).await, "new");
    assert!(!remember("wh_a", "msg_1", until, T0 + 1).await, "a replay");
    assert!(
        !remember("wh_a", "msg_1", T0 + 9_000, T0 + 999).await,
        "still a replay just before it expires"
    );
    assert!(
        remember("wh_b", "msg_1", until, T0 + 1).await,
        "scopes are apart"
    );
    assert!(remember("wh_a", "msg_2", until, T0 + 1).await, "another id");
    assert!(
        remember("wh_a", "msg_1", T0 + 2_000, until).await,
        "expired at `until` (a replay did not extend it)"
    );
    assert!(
        !remember("wh_a", "msg_1", T0 + 2_000, until + 1).await,
        "and remembered anew"
    );

    // Enough calls to go through an opportunistic purge, which keeps live records.
    for i in 0..300 {
        let id = format!("msg_bulk_{i}");
        assert!(store
            .remember_message("wh_bulk", &id, T0, T0 + 1)
            .await
            .expect("remember message"));
    }
    assert!(!remember("wh_a", "msg_2", until, T0 + 2).await, "kept");

    let tasks: Vec<_> = (0..8)
        .map(|_| tokio::spawn(remember("wh_c", "msg_race", until, T0)))
        .collect();
    let mut accepted = 0;
    for task in tasks {
        accepted += usize::from(task.await.expect("task"));
    }
    assert_eq!(accepted, 1, "exactly one concurrent caller sees it new");
}

/// Every committed webhook or plugin change is announced to subscribers, once per change and
/// in order; reads, ingests, claims and no-op writes announce nothing.
pub(crate) async fn changes_are_announced(store: Arc<dyn Store>) {
    let store = &*store;
    let mut rx = store.subscribe();

    let mut hook = add_webhook(store, "hook").await;
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "insert");
    hook.spec.description = "changed".to_owned();
    assert!(store.update_webhook(&hook).await.unwrap());
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "update");

    // Nothing for these: the next notice must be the 410's.
    assert!(!store.update_webhook(&webhook("nobody")).await.unwrap());
    assert!(!store.delete_webhook("wh_unknown").await.unwrap());
    assert!(store.insert_webhook(&webhook("hook")).await.is_err());
    store.webhooks().await.unwrap();
    ingest_one(store, "evt-1", T0, &[&hook]).await;
    let job = claim(store, "w", T0, 1).await.remove(0);
    let mut gone = completion(&job, Next::Dead, Some(410));
    gone.disable_webhook = true;
    assert!(store.complete("w", gone).await.unwrap());
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "410");

    let v1 = store
        .add_plugin_version("shape", "aa11", vec![0, 97, 115, 109], T0)
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut rx).await,
        StoreChange::Plugins,
        "new version"
    );
    let same = store
        .add_plugin_version("shape", "aa11", vec![0, 97, 115, 109], T0 + 1)
        .await
        .unwrap();
    assert_eq!(same, v1);
    assert!(!store.set_active_plugin("shape", 9).await.unwrap());
    assert!(store.set_active_plugin("shape", v1.version).await.unwrap());
    assert_eq!(next_change(&mut rx).await, StoreChange::Plugins, "activate");

    assert!(store.delete_webhook(&hook.id).await.unwrap());
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "delete");
}

/// Plugin versions: numbered per name, the same content is the same version, activation only
/// of an existing version, bytes kept exactly; concurrent uploads get distinct numbers.
pub(crate) async fn plugin_versions(store: Arc<dyn Store>) {
    let v1 = store
        .add_plugin_version("shape", "sha-1", vec![1, 2, 3], T0)
        .await
        .unwrap();
    assert_eq!((v1.name.as_str(), v1.version, v1.size), ("shape", 1, 3));
    assert_eq!(v1.created_at, T0);
    let v2 = store
        .add_plugin_version("shape", "sha-2", vec![4; 1000], T0 + 1)
        .await
        .unwrap();
    assert_eq!(v2.version, 2);
    let again = store
        .add_plugin_version("shape", "sha-1", vec![1, 2, 3], T0 + 2)
        .await
        .unwrap();
    assert_eq!(again, v1, "the same content is the existing version");
    let other = store
        .add_plugin_version("audit", "sha-1", vec![1, 2, 3], T0 + 3)
        .await
        .unwrap();
    assert_eq!(other.version, 1, "numbers are per name");

    assert_eq!(
        store.plugin_wasm("shape", 2).await.unwrap(),
        Some(vec![4; 1000])
    );
    assert_eq!(store.plugin_wasm("shape", 3).await.unwrap(), None);
    assert_eq!(store.plugin_wasm("nope", 1).await.unwrap(), None);

    assert!(!store.set_active_plugin("shape", 3).await.unwrap());
    assert!(!store.set_active_plugin("nope", 1).await.unwrap());
    assert!(store.set_active_plugin("shape", 2).await.unwrap());
    let plugins = store.plugins().await.unwrap();
    let names: Vec<&str> = plugins.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, vec!["audit", "shape"]);
    assert_eq!(plugins[0].active, None);
    assert_eq!(plugins[0].versions, vec![other]);
    assert_eq!(plugins[1].active, Some(2));
    assert_eq!(plugins[1].versions, vec![v1, v2]);

    let uploads: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .add_plugin_version("busy", &format!("sha-{i}"), vec![i], T0)
                    .await
                    .expect("upload")
                    .version
            })
        })
        .collect();
    let mut numbers = Vec::new();
    for upload in uploads {
        numbers.push(upload.await.expect("task"));
    }
    numbers.sort_unstable();
    assert_eq!(numbers, (1..=8).collect::<Vec<u32>>());
}

/// Follow-ups (write-backs) are committed with a completion that held the lease, idempotently,
/// and dropped with one that did not.
pub(crate) async fn followups_commit_with_the_lease(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let sink = add_webhook(store, "sink").await;
    let first = ingest_one(store, "evt-1", T0, &[&h]).await.remove(0);
    ingest_one(store, "evt-2", T0 + 1, &[&h]).await;

    let mut req = claim_req("w", T0 + 10, 1);
    req.exclude_webhooks = vec![sink.id.clone()];
    let job = store.claim(req).await.unwrap().remove(0);
    assert_eq!(job.delivery.id, first);
    let mut done = completion(&job, Next::Succeeded, Some(200));
    done.followups = vec![
        to_ingest(event("wb-1", "writeback", T0 + 20), &[&sink]),
        to_ingest(event("evt-1", "writeback", T0 + 20), &[&sink]),
    ];
    assert!(store.complete("w", done).await.unwrap());
    assert!(store.event("wb-1").await.unwrap().is_some());
    let to_sink = list(
        store,
        DeliveryFilter {
            webhook_id: Some(sink.id.clone()),
            limit: 10,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(to_sink.len(), 1, "a follow-up with a known id adds nothing");
    assert_eq!(to_sink[0].event_id, "wb-1");
    assert_eq!(to_sink[0].status, DeliveryStatus::Pending);

    // A fenced worker's follow-ups are dropped with its result.
    let mut req = claim_req("old", T0 + 10, 1);
    req.exclude_webhooks = vec![sink.id.clone()];
    let old = store.claim(req).await.unwrap().remove(0);
    let mut req = claim_req("new", T0 + 10 + LEASE, 1);
    req.exclude_webhooks = vec![sink.id.clone()];
    let new = store.claim(req).await.unwrap().remove(0);
    assert_eq!(old.delivery.id, new.delivery.id);
    let mut stale = completion(&old, Next::Succeeded, Some(200));
    stale.followups = vec![to_ingest(event("wb-2", "writeback", T0 + 30), &[&sink])];
    assert!(!store.complete("old", stale).await.unwrap());
    assert_eq!(store.event("wb-2").await.unwrap(), None);
    assert_eq!(
        get(store, &old.delivery.id).await.status,
        DeliveryStatus::Pending
    );
}

/// Deliveries ingested with a lease are as good as claimed by its owner: nobody else claims
/// them until it expires, the owner completes them like claimed ones, a lapsed one is claimed
/// again (the owner may have died), and a duplicate event leases nothing.
pub(crate) async fn a_lease_at_ingest_is_a_claim(store: Arc<dyn Store>) {
    let store = &*store;
    let h = add_webhook(store, "hook").await;
    let free = ingest_one(store, "evt-0", T0, &[&h]).await.remove(0);
    let leased = |id: &str, owner: &str, until: Millis| {
        let mut e = to_ingest(event(id, "user.created", T0), &[&h]);
        e.lease = Some(Lease {
            owner: owner.to_owned(),
            until,
        });
        e
    };
    let kept = leased("evt-1", "ingester", T0 + LEASE);
    let lapsed = leased("evt-2", "crashed", T0 + 1_000);
    let (kept_id, lapsed_id) = (kept.deliveries[0].1.clone(), lapsed.deliveries[0].1.clone());
    let results = store.ingest(vec![kept, lapsed]).await.expect("ingest");
    assert!(results.iter().all(|r| !r.duplicate && r.deliveries == 1));
    let pending = get(store, &kept_id).await;
    assert_eq!(pending.status, DeliveryStatus::Pending);
    assert_eq!(
        (pending.attempts_since_replay, pending.next_attempt_at),
        (0, Some(T0))
    );

    assert_eq!(
        ids(&claim(store, "other", T0 + 1, 10).await),
        vec![free],
        "only the delivery ingested without a lease is claimable"
    );
    assert!(claim(store, "other", T0 + 999, 10).await.is_empty());
    let jobs = claim(store, "other", T0 + 1_000, 10).await;
    assert_eq!(
        ids(&jobs),
        vec![lapsed_id],
        "a lapsed lease is claimed again"
    );
    assert_eq!(jobs[0].attempt_no, 1);

    // The same event again, under a longer lease of someone else's: a duplicate, nothing changes.
    let results = store
        .ingest(vec![leased("evt-1", "someone-else", T0 + 100 * LEASE)])
        .await
        .expect("ingest");
    assert!(results[0].duplicate);
    assert!(claim(store, "other", T0 + LEASE - 1, 10).await.is_empty());

    // The owner completes it without having claimed it.
    let job = Job {
        delivery: pending,
        event: event("evt-1", "user.created", T0),
        attempt_no: 1,
    };
    assert!(
        complete(
            store,
            "ingester",
            &job,
            Next::RetryAt(T0 + 2_000),
            Some(503)
        )
        .await
    );
    let d = get(store, &kept_id).await;
    assert_eq!(
        (d.status, d.attempts_since_replay),
        (DeliveryStatus::Pending, 1)
    );
    let jobs = claim(store, "other", T0 + 2_000, 10).await;
    assert_eq!(ids(&jobs), vec![kept_id], "its retry is claimable as usual");
    assert_eq!(jobs[0].attempt_no, 2);
}

/// Shared connections: insert (a taken name conflicts), read by name and all by name, update
/// (false for an unknown one), and a delete refused while a webhook names the connection,
/// listing it; every change is announced as a webhooks change (their credentials changed).
pub(crate) async fn connection_crud(store: Arc<dyn Store>) {
    use crate::connections::{Connection, Deletion};
    let store = &*store;
    let mut rx = store.subscribe();
    let connection = |name: &str, password: &str| Connection {
        spec: serde_json::from_value(json!({
            "name": name,
            "auth": {"type": "oauth2_password", "token_url": "https://idp.example.test/token",
                     "username": "hookyard", "password": password},
        }))
        .expect("a valid connection"),
        created_at: T0,
        updated_at: T0,
    };
    let workplace = connection("workplace", "pw-1");
    store.insert_connection(&workplace).await.unwrap();
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "insert");
    assert!(matches!(
        store.insert_connection(&workplace).await,
        Err(Error::Conflict(_))
    ));
    store
        .insert_connection(&connection("another", "pw-2"))
        .await
        .unwrap();
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "insert");
    assert_eq!(
        store.connection("workplace").await.unwrap(),
        Some(workplace)
    );
    assert_eq!(store.connection("nobody").await.unwrap(), None);
    let names: Vec<String> = store
        .connections()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.spec.name)
        .collect();
    assert_eq!(names, ["another", "workplace"]);

    let rotated = Connection {
        updated_at: T0 + 1,
        ..connection("workplace", "pw-rotated")
    };
    assert!(store.update_connection(&rotated).await.unwrap());
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "update");
    assert_eq!(
        store.connection("workplace").await.unwrap().as_ref(),
        Some(&rotated)
    );
    assert!(!store
        .update_connection(&connection("nobody", "x"))
        .await
        .unwrap());

    let mut user = webhook("uses-it");
    user.spec.connection = Some("workplace".to_owned());
    store.insert_webhook(&user).await.unwrap();
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "webhook");
    add_webhook(store, "other").await;
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "webhook");
    assert_eq!(
        store.delete_connection("workplace").await.unwrap(),
        Deletion::InUse(vec!["uses-it".to_owned()])
    );
    assert!(store.connection("workplace").await.unwrap().is_some());
    assert_eq!(
        store.delete_connection("nobody").await.unwrap(),
        Deletion::NotFound
    );
    assert!(store.delete_webhook(&user.id).await.unwrap());
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "webhook");
    assert_eq!(
        store.delete_connection("workplace").await.unwrap(),
        Deletion::Deleted
    );
    assert_eq!(next_change(&mut rx).await, StoreChange::Webhooks, "delete");
    assert_eq!(store.connection("workplace").await.unwrap(), None);
}

fn event_type(name: &str, spec: Value, at: Millis) -> super::StoredEventType {
    super::StoredEventType {
        name: name.to_owned(),
        spec: spec.to_string(),
        created_at: at,
        updated_at: at,
    }
}

/// Event types: listed by name, a taken name is a conflict, update and delete by name report
/// whether there was one, and every change (only a change) is announced.
pub(crate) async fn event_type_crud(store: Arc<dyn Store>) {
    let mut rx = store.subscribe();
    assert!(store.event_types().await.unwrap().is_empty());
    let created = event_type("user.created", json!({"description": "a user"}), T0);
    store.insert_event_type(&created).await.unwrap();
    assert_eq!(
        next_change(&mut rx).await,
        StoreChange::EventTypes,
        "insert"
    );
    let deleted = event_type("user.deleted", json!({}), T0 + 1);
    store.insert_event_type(&deleted).await.unwrap();
    assert_eq!(
        next_change(&mut rx).await,
        StoreChange::EventTypes,
        "insert"
    );
    let again = store
        .insert_event_type(&event_type("user.created", json!({}), T0 + 2))
        .await;
    assert!(matches!(again, Err(Error::Conflict(_))), "{again:?}");
    assert_eq!(
        store.event_types().await.unwrap(),
        vec![created.clone(), deleted.clone()],
        "by name, as stored"
    );

    let updated = super::StoredEventType {
        spec: json!({"description": "changed", "deprecated": true}).to_string(),
        updated_at: T0 + 5,
        ..created.clone()
    };
    assert!(store.update_event_type(&updated).await.unwrap());
    assert_eq!(
        next_change(&mut rx).await,
        StoreChange::EventTypes,
        "update"
    );
    let stored = store.event_types().await.unwrap();
    assert_eq!(
        stored[0], updated,
        "the spec and updated_at change, created_at stays"
    );
    assert!(!store
        .update_event_type(&event_type("nope", json!({}), T0))
        .await
        .unwrap());
    assert!(!store.delete_event_type("nope").await.unwrap());
    assert!(store.delete_event_type("user.deleted").await.unwrap());
    assert_eq!(
        next_change(&mut rx).await,
        StoreChange::EventTypes,
        "delete"
    );
    assert_eq!(store.event_types().await.unwrap(), vec![updated]);
    assert!(
        rx.try_recv().is_err(),
        "no notice for the refused insert or the no-op update and delete"
    );
}

/// Counts of uncataloged event types add up, across calls and concurrent callers, and keep
/// the latest sighting.
pub(crate) async fn uncataloged_counts_add_up(store: Arc<dyn Store>) {
    let seen = |t: &str, count: u64, last_seen: Millis| super::TypeSeen {
        event_type: t.to_owned(),
        count,
        last_seen,
    };
    assert!(store.uncataloged().await.unwrap().is_empty());
    store.count_uncataloged(&[]).await.unwrap();
    store
        .count_uncataloged(&[seen("user.modifed", 2, T0 + 10), seen("a.b", 1, T0)])
        .await
        .unwrap();
    store
        .count_uncataloged(&[seen("user.modifed", 3, T0 + 5)])
        .await
        .unwrap();
    assert_eq!(
        store.uncataloged().await.unwrap(),
        vec![seen("a.b", 1, T0), seen("user.modifed", 5, T0 + 10)],
        "by name; the later sighting is kept"
    );
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .count_uncataloged(&[seen("a.b", 10, T0 + i), seen("c.d", 1, T0 + i)])
                    .await
                    .unwrap()
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        store.uncataloged().await.unwrap(),
        vec![
            seen("a.b", 81, T0 + 7),
            seen("c.d", 8, T0 + 7),
            seen("user.modifed", 5, T0 + 10)
        ],
        "concurrent adds all count"
    );
}
