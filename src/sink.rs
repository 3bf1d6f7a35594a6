//! The sink: the internal system's endpoint for write-backs and inbound records.
//!
//! The sink is a webhook the gateway manages itself, named [`SINK_WEBHOOK`] and defined by the
//! `[sink]` config at start-up. A sink message is an event of type `hookyard.sink.<operation>`
//! with exactly one delivery, to the sink, so it is committed, retried, logged and replayed by
//! the same machinery as every other delivery: a sink outage loses nothing. The worker sends a
//! sink message's data as the body, without the default envelope.

use crate::config::{Config, SinkConfig};
use crate::model::{
    new_id, now_ms, Event, EventToIngest, Json, RetryPolicy, SigningConfig, SinkMessage, Webhook,
    WebhookSpec,
};
use crate::store::{self, Store};

/// The name of the sink's webhook; reserved.
pub const SINK_WEBHOOK: &str = "hookyard-sink";

/// Event types starting with this are the gateway's own; ingest refuses them.
pub const RESERVED_EVENT_PREFIX: &str = "hookyard.";

/// The sink webhook's definition from the config.
fn spec(sink: &SinkConfig, config: &Config) -> WebhookSpec {
    WebhookSpec {
        name: SINK_WEBHOOK.to_owned(),
        title: None,
        description: "The internal system's sink (managed by the [sink] config)".to_owned(),
        enabled: !sink.url.is_empty(),
        events: vec!["hookyard.sink.*".to_owned()],
        url: if sink.url.is_empty() {
            "http://sink.invalid/".to_owned()
        } else {
            sink.url.clone()
        },
        method: "POST".to_owned(),
        headers: Default::default(),
        secret_headers: Vec::new(),
        secret_query_params: Vec::new(),
        event_header: None,
        auth: sink.auth.clone(),
        connection: (!sink.connection.is_empty()).then(|| sink.connection.clone()),
        signing: SigningConfig {
            enabled: !sink.signing_secret.is_empty(),
            secret: (!sink.signing_secret.is_empty()).then(|| sink.signing_secret.clone()),
        },
        plugin: None,
        inbound: None,
        writeback: None,
        retry: RetryPolicy {
            max_attempts: sink.max_attempts,
        },
        timeout_ms: sink.timeout_ms.min(config.max_timeout_ms()),
        max_concurrency: None,
    }
}

/// Creates, updates or (without a URL) disables the sink's webhook. Messages already queued
/// for a disabled sink wait, pending, until it is configured again.
pub async fn apply(config: &Config, store: &dyn Store) -> store::Result<()> {
    let wanted = spec(&config.sink, config);
    let now = now_ms();
    match store.webhook(SINK_WEBHOOK).await? {
        Some(old) if old.spec == wanted => {}
        Some(old) => {
            let hook = Webhook {
                spec: wanted,
                updated_at: now,
                ..old
            };
            store.update_webhook(&hook).await?;
        }
        None if config.sink.url.is_empty() => {}
        None => {
            store
                .insert_webhook(&Webhook {
                    id: new_id("wh"),
                    spec: wanted,
                    created_at: now,
                    updated_at: now,
                })
                .await?;
        }
    }
    Ok(())
}

/// Whether this is the sink's webhook (the admin API leaves it alone).
pub fn is_sink(hook: &Webhook) -> bool {
    hook.spec.name == SINK_WEBHOOK
}

/// A sink message as an event with its one delivery, to the sink webhook `sink_id`.
pub fn message(sink_id: &str, message: &SinkMessage) -> EventToIngest {
    let now = now_ms();
    EventToIngest {
        event: Event {
            id: new_id("evt"),
            event_type: format!("hookyard.sink.{}", message.operation),
            data: serde_json::to_value(message).unwrap_or_default().into(),
            context: Json::null(),
            occurred_at: now,
            received_at: now,
        },
        deliveries: vec![(sink_id.to_owned(), new_id("msg"))],
        lease: None,
    }
}

/// Looks up a dotted path (`a.b.0`) in a JSON value.
pub fn lookup<'a>(value: &'a serde_json::Value, path: &str) -> Option<&'a serde_json::Value> {
    path.split('.').try_fold(value, |v, key| match v {
        serde_json::Value::Object(map) => map.get(key),
        serde_json::Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}
