//! The Webhook Log of dead-lettered bus messages.
//!
//! A message a source cannot turn into an event is dead-lettered (see [`crate::source`]) and,
//! when the source's token bucket admits it, written to the Webhook Log the way a refused
//! inbound push is (see [`crate::server::inbound_log`]): a delivery of source `inbound` (refused
//! on the way in), origin `source:<name>`, status `dead`, never sent anywhere (replay refuses
//! it). Its one attempt holds the message: the broker as the method (`NATS`, `AMQP`), the
//! broker's URL (password masked) with the stream and subject or the queue and routing key as
//! the URL, the headers with anything named like a secret redacted, the body up to
//! `refusals.body_bytes`; the reason is its error. Its event (type
//! `hookyard.source.dead_lettered`) holds the source's name, the subject, the id the event would
//! have had and the reason, so the log's free-text search finds it by any of them.
//!
//! Flood control: one token bucket per source, of `refusals.per_webhook_per_minute` (the
//! buckets of refused pushes, keyed apart from every webhook). Every dead-lettered message is
//! counted in `hookyard_source_messages_total{outcome="dead_lettered"}` and kept in the
//! source's `recent_failures`, logged or not.

use serde_json::json;
use tracing::warn;

use super::message::Message;
use super::spec::{mask_url, SourceKind, SourceSpec};
use crate::model::{
    new_id, now_ms, Attempt, AttemptOutcome, DeliveryStatus, Event, Json, LoggedDelivery, Millis,
    RequestLog, DEAD_LETTERED_EVENT,
};
use crate::server::inbound_log::{is_secret_header, REDACTED};
use crate::server::Shared;

/// Writes a dead-lettered message to the Webhook Log (in the background), if the source's
/// bucket admits it.
pub(crate) fn record<A>(
    state: &Shared,
    spec: &SourceSpec,
    msg: &Message<A>,
    id: &str,
    reason: &str,
) {
    if !state.refusals.admit_dead_letter(&spec.name) {
        return;
    }
    let entry = entry(
        spec,
        msg,
        id,
        reason,
        state.config.refusals.body_bytes,
        now_ms(),
    );
    let store = state.store.clone();
    let name = spec.name.clone();
    tokio::spawn(async move {
        if let Err(e) = store.log_delivery(entry).await {
            warn!(source = %name, error = %e, "logging a dead-lettered message failed");
        }
    });
}

/// The log entry of a dead-lettered message.
fn entry<A>(
    spec: &SourceSpec,
    msg: &Message<A>,
    id: &str,
    reason: &str,
    body_bytes: usize,
    at: Millis,
) -> LoggedDelivery {
    let event = Event {
        id: new_id("evt"),
        event_type: DEAD_LETTERED_EVENT.to_owned(),
        data: Json::from(json!({
            "source": spec.name,
            "type": spec.kind.as_str(),
            "subject": msg.subject,
            "id": id,
            "reason": reason,
            "body_bytes": msg.body.len(),
        })),
        context: Json::null(),
        occurred_at: at,
        received_at: at,
    };
    let (method, place) = match spec.kind {
        SourceKind::Nats => (
            "NATS",
            format!(
                "stream={} subject={}",
                spec.stream.as_deref().unwrap_or_default(),
                msg.subject
            ),
        ),
        SourceKind::Amqp => (
            "AMQP",
            format!(
                "queue={} routing_key={}",
                spec.queue.as_deref().unwrap_or_default(),
                msg.subject
            ),
        ),
    };
    let headers = msg
        .headers
        .iter()
        .map(|(name, value)| {
            let shown = if is_secret_header(name) {
                REDACTED.to_owned()
            } else {
                value.clone()
            };
            (name.clone(), shown)
        })
        .collect();
    let delivery_id = new_id("msg");
    let attempt = Attempt {
        delivery_id: delivery_id.clone(),
        attempt_no: 1,
        started_at: at,
        duration_ms: 0,
        request: Some(RequestLog {
            method: method.to_owned(),
            url: format!("{} {place}", mask_url(&spec.url)),
            headers,
            body: String::from_utf8_lossy(&msg.body[..msg.body.len().min(body_bytes)]).into_owned(),
            body_from: None,
        }),
        response_status: None,
        response_headers: Vec::new(),
        response_body: None,
        error: Some(format!("dead-lettered: {reason}")),
        outcome: AttemptOutcome::Dead,
        plugin: None,
    };
    LoggedDelivery {
        event,
        delivery_id,
        webhook_id: String::new(),
        status: DeliveryStatus::Dead,
        attempts: vec![attempt],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::DeliverySource;

    #[test]
    fn the_entry_is_an_inbound_refusal_of_the_source_with_secrets_hidden_and_the_body_capped() {
        let spec: SourceSpec = serde_json::from_value(json!({
            "name": "crm", "type": "amqp", "url": "amqp://guest:s3cret@127.0.0.1:5672/%2f",
            "queue": "q"
        }))
        .unwrap();
        let msg = Message {
            subject: "user.created".to_owned(),
            headers: vec![
                ("X-Api-Key".to_owned(), "k3y".to_owned()),
                ("trace".to_owned(), "t-1".to_owned()),
            ],
            body: "é".repeat(100).into_bytes(),
            broker_id: None,
            derived_id: "amqp:q:ab".to_owned(),
            ack: (),
        };
        let e = entry(&spec, &msg, "amqp:q:ab", "the body is not an event", 51, 7);
        assert_eq!(
            DeliverySource::of(&e.event),
            (DeliverySource::Inbound, Some("source:crm".to_owned()))
        );
        assert_eq!(e.status, DeliveryStatus::Dead);
        assert_eq!(e.webhook_id, "");
        let data = e.event.data.to_value();
        assert_eq!(data["reason"], "the body is not an event");
        assert_eq!(data["id"], "amqp:q:ab");
        assert_eq!(data["body_bytes"], 200);
        let attempt = &e.attempts[0];
        assert_eq!(attempt.outcome, AttemptOutcome::Dead);
        assert!(attempt.error.as_deref().unwrap().contains("not an event"));
        let request = attempt.request.as_ref().unwrap();
        assert_eq!(request.method, "AMQP");
        assert!(!request.url.contains("s3cret"), "{}", request.url);
        assert!(
            request.url.ends_with("queue=q routing_key=user.created"),
            "{}",
            request.url
        );
        assert_eq!(
            request.headers,
            vec![
                ("X-Api-Key".to_owned(), REDACTED.to_owned()),
                ("trace".to_owned(), "t-1".to_owned())
            ]
        );
        // 51 bytes: 25 whole characters and a cut one, shown as a replacement character.
        assert_eq!(request.body.chars().count(), 26);
        assert!(request.body.starts_with(&"é".repeat(25)));
    }
}
