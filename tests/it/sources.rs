//! Message-bus sources against the real brokers of this machine: NATS JetStream on
//! 127.0.0.1:4222 and RabbitMQ on 127.0.0.1:5672 (guest/guest). The test script starts neither;
//! a test fails at once with a clear message when one is not running. Every test uses streams,
//! subjects, exchanges and queues of its own and deletes them at the end.
//!
//! What is checked, per broker: 10,000 messages become 10,000 events each delivered (once per
//! event id); a `kill -9` of the gateway binary mid-stream loses nothing and enqueues nothing
//! twice; poison messages go to the dead-letter route while the rest flow, and are in the
//! Webhook Log; pause and resume; PUT and PATCH; two processes on PostgreSQL sharing a source.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;
use lapin::options::{
    BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, ExchangeKind};
use serde_json::{json, Value};

use crate::cluster::{Node, NodeOptions};
use crate::common::*;

const NATS: &str = "127.0.0.1:4222";
const AMQP: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A name no other test (or earlier run) uses.
fn unique(prefix: &str) -> String {
    format!("{prefix}{}", uuid::Uuid::now_v7().simple())
}

/// Fails with a clear message when the broker at `addr` is not running.
async fn require(addr: &str, what: &str) {
    if tokio::net::TcpStream::connect(addr).await.is_err() {
        panic!(
            "{what} must be running on {addr} for the source tests; the test script starts \
             nothing (see scripts/test.sh)"
        );
    }
}

async fn nats() -> (async_nats::Client, jetstream::Context) {
    require(NATS, "NATS with JetStream").await;
    let client = async_nats::connect(NATS).await.expect("connect to NATS");
    let js = jetstream::new(client.clone());
    (client, js)
}

async fn amqp() -> (lapin::Connection, lapin::Channel) {
    require("127.0.0.1:5672", "RabbitMQ").await;
    let conn = lapin::Connection::connect(AMQP, lapin::ConnectionProperties::default())
        .await
        .expect("connect to RabbitMQ");
    let channel = conn.create_channel().await.expect("channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("publisher confirms");
    (conn, channel)
}

/// A stream of the test's own, on the subjects `<subject>.>`: (stream, subject).
async fn new_stream(js: &jetstream::Context) -> (String, String) {
    let (stream, subject) = (unique("HYT"), unique("hyt."));
    js.create_stream(jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![format!("{subject}.>")],
        ..Default::default()
    })
    .await
    .expect("create stream");
    (stream, subject)
}

/// A gateway on `config` and a receiver behind its webhook `bus` (events `events`).
async fn gateway(config: hookyard::config::Config, events: &str) -> (TestGateway, Receiver) {
    let gw = TestGateway::start(config).await;
    let rx = Receiver::start().await;
    gw.create_webhook(json!({"name": "bus", "events": [events], "url": rx.url("/")}))
        .await;
    (gw, rx)
}

/// Publishes to JetStream and waits for every publish acknowledgement.
async fn publish_nats(js: &jetstream::Context, messages: Vec<(String, Option<String>, Vec<u8>)>) {
    for chunk in messages.chunks(1000) {
        let mut acks = Vec::with_capacity(chunk.len());
        for (subject, id, body) in chunk {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(id) = id {
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            }
            acks.push(
                js.publish_with_headers(subject.clone(), headers, body.clone().into())
                    .await
                    .expect("publish"),
            );
        }
        for ack in acks {
            ack.await.expect("publish acknowledged");
        }
    }
}

/// Publishes to an exchange (`""`: the default one, by queue name) with confirms.
async fn publish_amqp(
    channel: &lapin::Channel,
    exchange: &str,
    messages: Vec<(String, Option<String>, Vec<u8>)>,
) {
    for chunk in messages.chunks(1000) {
        let mut confirms = Vec::with_capacity(chunk.len());
        for (routing_key, id, body) in chunk {
            let mut props = BasicProperties::default().with_delivery_mode(2);
            if let Some(id) = id {
                props = props.with_message_id(id.as_str().into());
            }
            confirms.push(
                channel
                    .basic_publish(
                        exchange.into(),
                        routing_key.as_str().into(),
                        BasicPublishOptions::default(),
                        body,
                        props,
                    )
                    .await
                    .expect("publish"),
            );
        }
        for confirm in confirms {
            confirm.await.expect("publish confirmed");
        }
    }
}

async fn declare_queue(channel: &lapin::Channel, queue: &str, arguments: FieldTable) {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            arguments,
        )
        .await
        .expect("declare queue");
}

async fn delete_queue(channel: &lapin::Channel, queue: &str) {
    let _ = channel
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
}

/// Messages ready in a queue.
async fn queue_depth(channel: &lapin::Channel, queue: &str) -> u32 {
    channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("passive declare")
        .message_count()
}

/// Every delivery of `webhook` in the log, all pages.
async fn logged(api: &Api, webhook: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = api
            .admin(
                "GET",
                &format!("/admin/v1/deliveries?webhook={webhook}&limit=1000{cursor}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{page}");
        all.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => return all,
        }
    }
}

/// Checks the log holds exactly one delivery per event id, for `n` events; returns the ids.
async fn assert_enqueued_once(api: &Api, webhook: &str, n: usize) -> HashSet<String> {
    let items = logged(api, webhook).await;
    let mut per_event: HashMap<String, usize> = HashMap::new();
    for d in &items {
        *per_event
            .entry(d["event_id"].as_str().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    let twice: Vec<_> = per_event.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "events enqueued twice: {twice:?}");
    assert_eq!(per_event.len(), n, "distinct events in the log");
    per_event.into_keys().collect()
}

/// The `data.n` of every request the receiver got, distinct.
fn received_numbers(rx: &Receiver) -> HashSet<u64> {
    rx.received()
        .iter()
        .filter_map(|r| r.json()["data"]["n"].as_u64())
        .collect()
}

async fn wait_for_numbers(rx: &Receiver, n: usize, within: Duration) {
    eventually(
        within,
        &format!("{n} distinct events delivered"),
        || async { (received_numbers(rx).len() >= n).then_some(()) },
    )
    .await;
}

async fn source_status(api: &Api, name: &str) -> Value {
    let (status, body) = api
        .admin("GET", &format!("/admin/v1/sources/{name}"), None)
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn wait_for_state(api: &Api, name: &str, state: &str) -> Value {
    eventually(
        Duration::from_secs(10),
        &format!("source {name} {state}"),
        || async {
            let body = source_status(api, name).await;
            (body["status"]["state"] == state).then_some(body)
        },
    )
    .await
}

/// The source's dead-lettered messages are in the Webhook Log (source `inbound`, origin
/// `source:<name>`), oldest first with these reasons, dead, and cannot be replayed.
async fn assert_dead_letters_logged(api: &Api, source: &str, reasons: &[&str]) {
    let items = eventually(
        Duration::from_secs(5),
        "dead-lettered messages in the Webhook Log",
        || async {
            let (status, page) = api
                .admin(
                    "GET",
                    &format!("/admin/v1/deliveries?source=inbound&origin=source:{source}"),
                    None,
                )
                .await;
            assert_eq!(status, 200, "{page}");
            let items = page["items"].as_array().cloned().unwrap_or_default();
            (items.len() >= reasons.len()).then_some(items)
        },
    )
    .await;
    assert_eq!(items.len(), reasons.len(), "{items:?}");
    // The log lists newest first.
    for (item, reason) in items.iter().rev().zip(reasons) {
        assert_eq!(item["status"], "dead", "{item}");
        assert_eq!(
            item["event_type"], "hookyard.source.dead_lettered",
            "{item}"
        );
        let id = item["id"].as_str().unwrap();
        let (status, detail) = api
            .admin("GET", &format!("/admin/v1/deliveries/{id}"), None)
            .await;
        assert_eq!(status, 200, "{detail}");
        let error = detail["attempts"][0]["error"].as_str().unwrap_or_default();
        assert!(error.contains(reason), "{reason:?} in {detail}");
        let (status, body) = api
            .admin("POST", &format!("/admin/v1/deliveries/{id}/replay"), None)
            .await;
        assert_eq!(status, 409, "{body}");
    }
    // The free-text search finds them by the source's name.
    let (_, found) = api
        .admin(
            "GET",
            &format!("/admin/v1/deliveries?source=inbound&q={source}"),
            None,
        )
        .await;
    assert!(
        found["items"]
            .as_array()
            .is_some_and(|i| i.len() >= reasons.len()),
        "{found}"
    );
}

const N: usize = 10_000;

#[tokio::test(flavor = "multi_thread")]
async fn nats_ten_thousand_events_each_delivered_once() {
    let (_client, js) = nats().await;
    let (stream, subject) = new_stream(&js).await;
    let dir = temp_dir();
    let (gw, rx) = gateway(test_config(dir.path()), "user.*").await;
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/sources",
            Some(
                json!({"name": "hr-bus", "type": "nats", "url": format!("nats://{NATS}"),
                        "stream": stream, "subject": format!("{subject}.>")}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let started = Instant::now();
    let messages = (0..N)
        .map(|n| {
            let body = json!({"type": "user.created", "data": {"n": n}});
            (
                format!("{subject}.user"),
                Some(format!("{stream}-{n}")),
                body.to_string().into_bytes(),
            )
        })
        .collect();
    publish_nats(&js, messages).await;
    wait_for_numbers(&rx, N, Duration::from_secs(60)).await;
    let took = started.elapsed();
    eprintln!("nats: {N} events published, consumed and delivered in {took:?}");
    let ids = assert_enqueued_once(&gw, "bus", N).await;
    // The event id is the publisher's Nats-Msg-Id.
    assert!(ids.contains(&format!("{stream}-0")));
    let status = wait_for_state(&gw, "hr-bus", "running").await;
    assert_eq!(status["status"]["committed"], N as u64, "{status}");
    assert_eq!(status["status"]["dead_lettered"], 0, "{status}");
    eventually(Duration::from_secs(5), "lag 0", || async {
        (source_status(&gw, "hr-bus").await["status"]["lag"] == 0).then_some(())
    })
    .await;
    gw.stop().await;
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_ten_thousand_events_each_delivered_once() {
    let (conn, channel) = amqp().await;
    let (queue, exchange) = (unique("hyt-q-"), unique("hyt-x-"));
    channel
        .exchange_declare(
            exchange.as_str().into(),
            ExchangeKind::Topic,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("exchange");
    declare_queue(&channel, &queue, FieldTable::default()).await;
    channel
        .queue_bind(
            queue.as_str().into(),
            exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind");
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    // The type from the routing key, the body as data; no message_id: the id is derived.
    config.sources = vec![serde_json::from_value(json!({
        "name": "crm", "type": "amqp", "url": AMQP, "queue": queue, "type_from": "subject"
    }))
    .unwrap()];
    let (gw, rx) = gateway(config, "user.*").await;

    let started = Instant::now();
    let messages = (0..N)
        .map(|n| {
            let body = json!({"n": n});
            (
                "user.created".to_owned(),
                None,
                body.to_string().into_bytes(),
            )
        })
        .collect();
    publish_amqp(&channel, &exchange, messages).await;
    wait_for_numbers(&rx, N, Duration::from_secs(60)).await;
    eprintln!(
        "amqp: {N} events published, consumed and delivered in {:?}",
        started.elapsed()
    );
    let ids = assert_enqueued_once(&gw, "bus", N).await;
    assert!(ids
        .iter()
        .all(|id| id.starts_with(&format!("amqp:{queue}:"))));
    assert_eq!(rx.received()[0].json()["type"], "user.created");
    let status = source_status(&gw, "crm").await;
    assert_eq!(status["status"]["committed"], N as u64, "{status}");
    assert!(
        status["spec"]["url"].as_str().unwrap().contains("guest:")
            && !status["spec"]["url"]
                .as_str()
                .unwrap()
                .contains("guest:guest"),
        "the password is masked: {status}"
    );
    eventually(Duration::from_secs(5), "queue drained", || async {
        (queue_depth(&channel, &queue).await == 0).then_some(())
    })
    .await;
    gw.stop().await;
    delete_queue(&channel, &queue).await;
    let _ = channel
        .exchange_delete(exchange.as_str().into(), Default::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
}

/// The webhook and source of a gateway process, as config.
fn node_config(receiver: &Receiver, source: &str) -> NodeOptions {
    NodeOptions {
        lease_secs: 8,
        extra: format!(
            r#"
[[webhooks]]
name = "bus"
events = ["*"]
url = "{}"
timeout_ms = 2000

{source}
"#,
            receiver.url("/")
        ),
        ..NodeOptions::default()
    }
}

/// Starts a node, waits until it delivered some of `total`, kills it (SIGKILL), starts it again
/// on the same store, and checks that every event arrives and none is enqueued twice.
async fn kill_mid_stream(
    dir: &TestDir,
    rx: &Receiver,
    options: impl Fn() -> NodeOptions,
    publish: impl std::future::Future<Output = ()>,
    total: usize,
) {
    let url = store_url(dir.path());
    let mut node = Node::start(dir.path(), "a", &url, options()).await;
    publish.await;
    eventually(
        Duration::from_secs(30),
        "some events delivered before the kill",
        || async { (received_numbers(rx).len() >= total / 10).then_some(()) },
    )
    .await;
    node.kill();
    let at_kill = received_numbers(rx).len();
    eprintln!("killed after {at_kill} of {total} events were delivered");
    assert!(
        at_kill < total,
        "everything was delivered before the kill: the test proves nothing"
    );
    let node = Node::start(dir.path(), "a", &url, options()).await;
    wait_for_numbers(rx, total, Duration::from_secs(60)).await;
    assert_enqueued_once(&node, "bus", total).await;
    assert_eq!(received_numbers(rx), (0..total as u64).collect());
    drop(node);
}

const KILL_N: usize = 5_000;

#[tokio::test(flavor = "multi_thread")]
async fn nats_kill_mid_stream_loses_nothing_and_enqueues_nothing_twice() {
    let (_client, js) = nats().await;
    let (stream, subject) = new_stream(&js).await;
    let dir = temp_dir();
    let rx = Receiver::start().await;
    // No message ids: the event id is derived from the stream sequence; the type from the
    // subject. Small batches, so the kill lands between commits.
    let source = format!(
        r#"
[[sources]]
name = "hr-bus"
type = "nats"
url = "nats://{NATS}"
stream = "{stream}"
subject = "{subject}.>"
type_from = "subject"
skip_segments = 2
ack_wait_secs = 3
batch_size = 50
"#
    );
    let messages = (0..KILL_N)
        .map(|n| {
            let body = json!({"n": n}).to_string().into_bytes();
            (format!("{subject}.order.paid"), None, body)
        })
        .collect();
    kill_mid_stream(
        &dir,
        &rx,
        || node_config(&rx, &source),
        publish_nats(&js, messages),
        KILL_N,
    )
    .await;
    assert_eq!(rx.received()[0].json()["type"], "order.paid");
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_kill_mid_stream_loses_nothing_and_enqueues_nothing_twice() {
    let (conn, channel) = amqp().await;
    let queue = unique("hyt-q-");
    declare_queue(&channel, &queue, FieldTable::default()).await;
    let dir = temp_dir();
    let rx = Receiver::start().await;
    let source = format!(
        r#"
[[sources]]
name = "crm"
type = "amqp"
url = "{AMQP}"
queue = "{queue}"
batch_size = 50
"#
    );
    // Envelope bodies with the id in message_id.
    let messages = (0..KILL_N)
        .map(|n| {
            let body = json!({"type": "user.updated", "data": {"n": n}})
                .to_string()
                .into_bytes();
            (queue.clone(), Some(format!("m-{n}")), body)
        })
        .collect();
    kill_mid_stream(
        &dir,
        &rx,
        || node_config(&rx, &source),
        publish_amqp(&channel, "", messages),
        KILL_N,
    )
    .await;
    delete_queue(&channel, &queue).await;
    let _ = conn.close(200, "done".into()).await;
}

/// Poison messages among good ones: dead-lettered with a reason, the rest delivered. Then
/// pause (messages wait in the broker), resume (they flow), and delete.
#[tokio::test(flavor = "multi_thread")]
async fn nats_poison_is_terminated_and_pause_resume_work() {
    let (client, js) = nats().await;
    let (stream, subject) = new_stream(&js).await;
    let dir = temp_dir();
    let (gw, rx) = gateway(test_config(dir.path()), "*").await;
    let consumer = "hyt-poison";
    let mut advisories = client
        .subscribe(format!(
            "$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.{stream}.{consumer}"
        ))
        .await
        .unwrap();
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/sources",
            Some(
                json!({"name": "p", "type": "nats", "url": format!("nats://{NATS}"),
                        "stream": stream, "subject": format!("{subject}.>"), "consumer": consumer}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let good = |n: u64| {
        json!({"type": "t", "data": {"n": n}})
            .to_string()
            .into_bytes()
    };
    let s = format!("{subject}.x");
    publish_nats(
        &js,
        vec![
            (s.clone(), None, good(0)),
            (s.clone(), None, b"not json".to_vec()),
            (s.clone(), None, br#"{"data": {"n": 99}}"#.to_vec()),
            (s.clone(), None, good(1)),
        ],
    )
    .await;
    wait_for_numbers(&rx, 2, Duration::from_secs(10)).await;
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(10), advisories.next())
            .await
            .expect("a MSG_TERMINATED advisory")
            .expect("advisory");
    }
    let status = eventually(Duration::from_secs(5), "2 dead-lettered", || async {
        let s = source_status(&gw, "p").await;
        (s["status"]["dead_lettered"] == 2).then_some(s)
    })
    .await;
    let failures = status["status"]["recent_failures"].as_array().unwrap();
    assert!(failures[0]["reason"]
        .as_str()
        .unwrap()
        .contains("not an event"));
    assert!(failures[1]["reason"]
        .as_str()
        .unwrap()
        .contains("missing field `type`"));
    assert_eq!(status["status"]["committed"], 2);
    let metric = gw
        .metric("hookyard_source_messages_total{source=\"p\",outcome=\"dead_lettered\"}")
        .await;
    assert_eq!(metric, Some(2.0));
    assert_dead_letters_logged(&gw, "p", &["not an event", "missing field `type`"]).await;

    // Paused: published messages stay pending in the broker.
    let (status, body) = gw.admin("POST", "/admin/v1/sources/p/pause", None).await;
    assert_eq!((status.as_u16(), &body["paused"]), (200, &json!(true)));
    wait_for_state(&gw, "p", "paused").await;
    publish_nats(&js, (2..12).map(|n| (s.clone(), None, good(n))).collect()).await;
    let stream_handle = js.get_stream(&stream).await.unwrap();
    let consumer_handle: jetstream::consumer::PullConsumer =
        stream_handle.get_consumer(consumer).await.unwrap();
    eventually(
        Duration::from_secs(5),
        "10 pending in the consumer",
        || async {
            let info = consumer_handle.get_info().await.ok()?;
            (info.num_pending == 10).then_some(())
        },
    )
    .await;
    assert_eq!(received_numbers(&rx).len(), 2, "consumed while paused");
    let (status, _) = gw.admin("POST", "/admin/v1/sources/p/resume", None).await;
    assert_eq!(status, 200);
    wait_for_numbers(&rx, 12, Duration::from_secs(10)).await;

    let (status, _) = gw.admin("DELETE", "/admin/v1/sources/p", None).await;
    assert_eq!(status, 204);
    let (status, body) = gw.admin("GET", "/admin/v1/sources/p", None).await;
    assert_error(status, &body, 404, "not_found");
    gw.stop().await;
    let _ = js.delete_stream(&stream).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn amqp_poison_is_dead_lettered_and_pause_resume_work() {
    let (conn, channel) = amqp().await;
    let (queue, dlx, dlq) = (unique("hyt-q-"), unique("hyt-dlx-"), unique("hyt-dlq-"));
    channel
        .exchange_declare(
            dlx.as_str().into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    declare_queue(&channel, &dlq, FieldTable::default()).await;
    channel
        .queue_bind(
            dlq.as_str().into(),
            dlx.as_str().into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let dir = temp_dir();
    let (gw, rx) = gateway(test_config(dir.path()), "*").await;
    // hookyard declares the queue, with the dead-letter exchange.
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/sources",
            Some(
                json!({"name": "p", "type": "amqp", "url": AMQP, "queue": queue,
                        "dead_letter_exchange": dlx, "type_from": "header",
                        "type_header": "event-type"}),
            ),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert!(!body["spec"]["url"]
        .as_str()
        .unwrap()
        .contains("guest:guest"));
    wait_for_state(&gw, "p", "running").await;

    let publish = |n: u64, typed: bool, body: &[u8]| {
        let mut headers = FieldTable::default();
        if typed {
            headers.insert(
                "event-type".into(),
                lapin::types::AMQPValue::LongString("order.paid".into()),
            );
        }
        let props = BasicProperties::default()
            .with_headers(headers)
            .with_message_id(format!("{queue}-{n}").into());
        let (channel, queue, body) = (channel.clone(), queue.clone(), body.to_vec());
        async move {
            channel
                .basic_publish(
                    "".into(),
                    queue.as_str().into(),
                    BasicPublishOptions::default(),
                    &body,
                    props,
                )
                .await
                .unwrap()
                .await
                .unwrap();
        }
    };
    publish(0, true, br#"{"n": 0}"#).await;
    publish(1, true, b"{not json").await;
    publish(2, false, br#"{"n": 2}"#).await;
    publish(3, true, br#"{"n": 3}"#).await;
    wait_for_numbers(&rx, 2, Duration::from_secs(10)).await;
    let dead = eventually(
        Duration::from_secs(10),
        "2 in the dead-letter queue",
        || async {
            let depth = queue_depth(&channel, &dlq).await;
            (depth == 2).then_some(depth)
        },
    )
    .await;
    assert_eq!(dead, 2);
    let first = channel
        .basic_get(dlq.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .unwrap()
        .expect("a dead-lettered message");
    assert_eq!(first.delivery.data, b"{not json");
    let status = source_status(&gw, "p").await;
    assert_eq!(status["status"]["dead_lettered"], 2, "{status}");
    let reasons: Vec<&str> = status["status"]["recent_failures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["reason"].as_str().unwrap())
        .collect();
    assert!(reasons[0].contains("not JSON"), "{reasons:?}");
    assert!(reasons[1].contains("event-type"), "{reasons:?}");
    assert_dead_letters_logged(&gw, "p", &["not JSON", "event-type"]).await;

    let (status, _) = gw.admin("POST", "/admin/v1/sources/p/pause", None).await;
    assert_eq!(status, 200);
    wait_for_state(&gw, "p", "paused").await;
    for n in 4..14 {
        publish(n, true, json!({"n": n}).to_string().as_bytes()).await;
    }
    eventually(
        Duration::from_secs(5),
        "10 waiting in the queue",
        || async { (queue_depth(&channel, &queue).await == 10).then_some(()) },
    )
    .await;
    assert_eq!(received_numbers(&rx).len(), 2, "consumed while paused");
    let (status, _) = gw.admin("POST", "/admin/v1/sources/p/resume", None).await;
    assert_eq!(status, 200);
    wait_for_numbers(&rx, 12, Duration::from_secs(10)).await;
    assert_eq!(rx.received()[0].json()["type"], "order.paid");

    let (status, _) = gw.admin("DELETE", "/admin/v1/sources/p", None).await;
    assert_eq!(status, 204);
    gw.stop().await;
    for q in [&queue, &dlq] {
        delete_queue(&channel, q).await;
    }
    let _ = channel
        .exchange_delete(dlx.as_str().into(), Default::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_sources_are_refused_with_the_field() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    for (spec, field) in [
        (
            json!({"name": "x", "type": "nats", "url": "nats://h:4222", "stream": "S"}),
            "subject",
        ),
        (
            json!({"name": "x", "type": "amqp", "url": "nats://h", "queue": "q"}),
            "url",
        ),
        (
            json!({"name": "x", "type": "kafka", "url": "k://h"}),
            "type",
        ),
        (
            json!({"name": "x y", "type": "amqp", "url": "amqp://h", "queue": "q"}),
            "name",
        ),
    ] {
        let (status, body) = gw.admin("POST", "/admin/v1/sources", Some(spec)).await;
        assert_error(status, &body, 422, "invalid_field");
        assert_eq!(body["error"]["field"], field, "{body}");
    }
    let ok =
        json!({"name": "x", "type": "amqp", "url": "amqp://u:pw@127.0.0.1:1/%2f", "queue": "q"});
    let (status, _) = gw
        .admin("POST", "/admin/v1/sources", Some(ok.clone()))
        .await;
    assert_eq!(status, 201);
    let (status, body) = gw.admin("POST", "/admin/v1/sources", Some(ok)).await;
    assert_error(status, &body, 409, "conflict");
    // Nothing listens on port 1: the source fails, says why, and keeps retrying.
    let failing = wait_for_state(&gw, "x", "failing").await;
    assert!(failing["status"]["last_error"].is_string(), "{failing}");
    assert!(!failing.to_string().contains("pw@"), "{failing}");
    let (_, list) = gw.admin("GET", "/admin/v1/sources", None).await;
    assert_eq!(list["items"].as_array().unwrap().len(), 1);
    gw.stop().await;
}

/// PUT and PATCH of a source: the masked URL sent back keeps the stored password (the edited
/// source still consumes), the changed spec restarts the consumer, the pause state is kept;
/// renaming, a masked password for another URL and a source declared in the config are refused.
#[tokio::test(flavor = "multi_thread")]
async fn amqp_source_put_and_patch_keep_the_password_and_restart_the_consumer() {
    let (conn, channel) = amqp().await;
    let queue = unique("hyt-q-");
    declare_queue(&channel, &queue, FieldTable::default()).await;
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.sources = vec![serde_json::from_value(json!({
        // Nothing listens on port 1: it never declares a queue.
        "name": "declared", "type": "amqp", "url": "amqp://guest:guest@127.0.0.1:1/%2f",
        "queue": "never-declared"
    }))
    .unwrap()];
    let (gw, rx) = gateway(config, "*").await;
    let (status, body) = gw
        .admin(
            "POST",
            "/admin/v1/sources",
            Some(json!({"name": "e", "type": "amqp", "url": AMQP, "queue": queue})),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    wait_for_state(&gw, "e", "running").await;

    // PATCH over what a read shows: one field changes, the masked URL keeps the password.
    let (status, body) = gw
        .admin(
            "PATCH",
            "/admin/v1/sources/e",
            Some(json!({"batch_size": 7, "type_from": "subject"})),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["spec"]["batch_size"], 7, "{body}");
    assert!(!body["spec"]["url"]
        .as_str()
        .unwrap()
        .contains("guest:guest"));
    // The consumer restarted with the new spec: the routing key is the type now.
    eventually(Duration::from_secs(10), "restarted", || async {
        let s = source_status(&gw, "e").await;
        (s["status"]["state"] == "running" && s["spec"]["type_from"] == "subject").then_some(())
    })
    .await;
    publish_amqp(
        &channel,
        "",
        vec![(queue.clone(), None, br#"{"n": 1}"#.to_vec())],
    )
    .await;
    wait_for_numbers(&rx, 1, Duration::from_secs(10)).await;
    assert_eq!(rx.received()[0].json()["type"], queue.as_str());

    // Paused, then PUT what a read shows (the spec), without the name: still paused.
    let (status, _) = gw.admin("POST", "/admin/v1/sources/e/pause", None).await;
    assert_eq!(status, 200);
    let mut spec = source_status(&gw, "e").await["spec"].clone();
    spec.as_object_mut().unwrap().remove("name");
    spec["type_from"] = json!("body");
    let (status, body) = gw
        .admin("PUT", "/admin/v1/sources/e", Some(spec.clone()))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (&body["paused"], &body["spec"]["type_from"]),
        (&json!(true), &json!("body"))
    );
    publish_amqp(
        &channel,
        "",
        vec![(
            queue.clone(),
            None,
            json!({"type": "t.put", "data": {"n": 2}})
                .to_string()
                .into_bytes(),
        )],
    )
    .await;
    let (status, _) = gw.admin("POST", "/admin/v1/sources/e/resume", None).await;
    assert_eq!(status, 200);
    // Consuming after the PUT proves the stored password was kept.
    wait_for_numbers(&rx, 2, Duration::from_secs(10)).await;

    // A masked password for another host, a rename, bad fields, a declared source, a missing one.
    let mut moved = spec.clone();
    moved["url"] = json!(moved["url"]
        .as_str()
        .unwrap()
        .replace("127.0.0.1", "localhost"));
    // The answer expected: status, code and (for a 422) the field.
    let refused = [
        ("PUT", "e", moved, "422 invalid_field url"),
        ("PATCH", "e", json!({"name": "f"}), "422 invalid_field name"),
        (
            "PATCH",
            "e",
            json!({"stream": "S"}),
            "422 invalid_field stream",
        ),
        ("PATCH", "e", json!([1]), "422 invalid_field"),
        (
            "PATCH",
            "declared",
            json!({"batch_size": 9}),
            "409 declared_in_config",
        ),
        ("PATCH", "nope", json!({"batch_size": 9}), "404 not_found"),
    ];
    for (method, name, request, expected) in refused {
        let (status, body) = gw
            .admin(method, &format!("/admin/v1/sources/{name}"), Some(request))
            .await;
        let mut expected = expected.split(' ');
        let want: u16 = expected.next().unwrap().parse().unwrap();
        assert_error(status, &body, want, expected.next().unwrap());
        if let Some(field) = expected.next() {
            assert_eq!(body["error"]["field"], field, "{body}");
        }
    }
    // Nothing refused changed the stored spec.
    assert_eq!(source_status(&gw, "e").await["spec"]["batch_size"], 7);

    gw.stop().await;
    delete_queue(&channel, &queue).await;
    let _ = conn.close(200, "done".into()).await;
}

/// Two gateway processes on one PostgreSQL database run the same NATS source (one durable
/// consumer) and the same AMQP source (one queue): the brokers spread the messages between
/// them, every message is delivered, and none is enqueued twice.
#[tokio::test(flavor = "multi_thread")]
async fn two_processes_share_a_nats_and_an_amqp_source_on_postgres() {
    const EACH: usize = 5_000;
    let (_client, js) = nats().await;
    let (stream, subject) = new_stream(&js).await;
    let (conn, channel) = amqp().await;
    let queue = unique("hyt-q-");
    declare_queue(&channel, &queue, FieldTable::default()).await;
    let dir = temp_dir();
    let url = postgres_url(dir.path());
    let rx = Receiver::start().await;
    // Small batches, so that both processes get a share of each broker's messages.
    let sources = format!(
        r#"
[[sources]]
name = "hr-bus"
type = "nats"
url = "nats://{NATS}"
stream = "{stream}"
subject = "{subject}.>"
batch_size = 50

[[sources]]
name = "crm"
type = "amqp"
url = "{AMQP}"
queue = "{queue}"
batch_size = 50
"#
    );
    let a = Node::start(dir.path(), "a", &url, node_config(&rx, &sources)).await;
    let b = Node::start(dir.path(), "b", &url, node_config(&rx, &sources)).await;
    for node in [&a, &b] {
        for source in ["hr-bus", "crm"] {
            wait_for_state(node, source, "running").await;
        }
    }
    // No message ids on NATS (the id is derived from the stream sequence), message_id on AMQP.
    let nats_messages = (0..EACH)
        .map(|n| {
            let body = json!({"type": "t", "data": {"n": n}})
                .to_string()
                .into_bytes();
            (format!("{subject}.x"), None, body)
        })
        .collect();
    let amqp_messages = (EACH..2 * EACH)
        .map(|n| {
            let body = json!({"type": "t", "data": {"n": n}})
                .to_string()
                .into_bytes();
            (queue.clone(), Some(format!("m-{n}")), body)
        })
        .collect();
    tokio::join!(
        publish_nats(&js, nats_messages),
        publish_amqp(&channel, "", amqp_messages)
    );
    wait_for_numbers(&rx, 2 * EACH, Duration::from_secs(120)).await;
    assert_enqueued_once(&a, "bus", 2 * EACH).await;
    assert_eq!(received_numbers(&rx), (0..2 * EACH as u64).collect());
    // Each process committed a share of each source, and together exactly every message.
    for source in ["hr-bus", "crm"] {
        let (sa, sb) = (
            source_status(&a, source).await["status"].clone(),
            source_status(&b, source).await["status"].clone(),
        );
        eprintln!(
            "{source}: a committed {}, b committed {}",
            sa["committed"], sb["committed"]
        );
        let (ca, cb) = (
            sa["committed"].as_u64().unwrap(),
            sb["committed"].as_u64().unwrap(),
        );
        assert!(ca > 0 && cb > 0, "{source} not shared: {sa} / {sb}");
        assert_eq!(ca + cb, EACH as u64, "{source}: {sa} / {sb}");
    }
    drop((a, b));
    let _ = js.delete_stream(&stream).await;
    delete_queue(&channel, &queue).await;
    let _ = conn.close(200, "done".into()).await;
}

/// Not a check but a measurement, ignored by default: how fast a source drains a backlog of
/// events no webhook takes (events committed per second from the source's creation), for
/// comparing builds and settings. `HOOKYARD_DRAIN_N` events (100,000 by default), both
/// brokers, batches of `HOOKYARD_DRAIN_BATCH` (the default when unset):
/// `cargo test --test it -- --ignored --nocapture backlog_drain_rate`.
#[tokio::test(flavor = "multi_thread")]
#[ignore]
async fn backlog_drain_rate() {
    let n: usize = std::env::var("HOOKYARD_DRAIN_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let body = |i: usize| {
        json!({"type": "drain.t", "data": {"n": i, "pad": "x".repeat(100)}})
            .to_string()
            .into_bytes()
    };
    let (_client, js) = nats().await;
    let (stream, subject) = new_stream(&js).await;
    let (conn, channel) = amqp().await;
    let queue = unique("hyt-q-");
    declare_queue(&channel, &queue, FieldTable::default()).await;
    let published = Instant::now();
    publish_nats(
        &js,
        (0..n)
            .map(|i| (format!("{subject}.x"), None, body(i)))
            .collect(),
    )
    .await;
    let nats_publish = published.elapsed();
    let published = Instant::now();
    publish_amqp(
        &channel,
        "",
        (0..n).map(|i| (queue.clone(), None, body(i))).collect(),
    )
    .await;
    let amqp_publish = published.elapsed();
    eprintln!(
        "published {n}: NATS {:.0}/s, AMQP {:.0}/s",
        n as f64 / nats_publish.as_secs_f64(),
        n as f64 / amqp_publish.as_secs_f64()
    );
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    for spec in [
        json!({"name": "nats", "type": "nats", "url": format!("nats://{NATS}"),
               "stream": stream, "subject": format!("{subject}.>")}),
        json!({"name": "amqp", "type": "amqp", "url": AMQP, "queue": queue}),
    ] {
        let mut spec = spec;
        if let Some(size) = std::env::var("HOOKYARD_DRAIN_BATCH")
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
        {
            spec["batch_size"] = json!(size);
        }
        let name = spec["name"].as_str().unwrap().to_owned();
        let started = Instant::now();
        let (status, body) = gw.admin("POST", "/admin/v1/sources", Some(spec)).await;
        assert_eq!(status, 201, "{body}");
        eventually(Duration::from_secs(300), "backlog drained", || async {
            let s = source_status(&gw, &name).await;
            (s["status"]["committed"].as_u64() >= Some(n as u64)).then_some(())
        })
        .await;
        let took = started.elapsed();
        eprintln!(
            "{name}: {n} committed in {took:?}: {:.0} events/s",
            n as f64 / took.as_secs_f64()
        );
        let (status, _) = gw
            .admin("POST", &format!("/admin/v1/sources/{name}/pause"), None)
            .await;
        assert_eq!(status, 200);
    }
    gw.stop().await;
    let _ = js.delete_stream(&stream).await;
    delete_queue(&channel, &queue).await;
    let _ = conn.close(200, "done".into()).await;
}
