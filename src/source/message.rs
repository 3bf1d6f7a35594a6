//! A message taken from a broker, and how it becomes an event.
//!
//! # The event id
//!
//! The id is what makes a redelivered message a duplicate (the store enqueues an id once), so
//! it must be the same every time the broker hands the same message out. In order:
//! 1. the `id` of the event JSON, with `type_from = "body"` (the publisher's idempotency key);
//! 2. the header named by `id_header`, when the source sets one and the message has it;
//! 3. the broker's message id: NATS `Nats-Msg-Id` (the id JetStream itself de-duplicates
//!    publishes by), AMQP `message_id`;
//! 4. derived from the message's identity in the broker:
//!    - NATS: `nats:<stream>:<stream created, ns>:<stream sequence>`. The stream sequence is
//!      fixed when the message is stored and is the same on every redelivery, to any consumer;
//!      the stream's creation time tells a re-created stream (whose sequences restart) apart.
//!    - AMQP 0.9.1 gives a message no stable identity (delivery tags are per channel and
//!      change on redelivery), so the id is `amqp:<queue>:<sha256 of exchange, routing key,
//!      timestamp property and body>`. Two messages identical in all of these are one event:
//!      publishers that may send the same bytes twice on purpose must set `message_id`.

use sha2::{Digest, Sha256};

use super::spec::{SourceSpec, TypeFrom};
use crate::model::{Json, NewEvent};

/// One message, as the source runner sees it whatever the broker.
#[derive(Debug)]
pub struct Message<A> {
    /// NATS subject or AMQP routing key.
    pub subject: String,
    /// Headers (NATS headers, AMQP header table entries with a string value).
    pub headers: Vec<(String, String)>,
    /// The payload.
    pub body: Vec<u8>,
    /// The broker's message id (NATS `Nats-Msg-Id`, AMQP `message_id`).
    pub broker_id: Option<String>,
    /// The id derived from the message's identity in the broker (see the module doc).
    pub derived_id: String,
    /// What the broker needs to acknowledge it.
    pub ack: A,
}

impl<A> Message<A> {
    /// The value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The AMQP derived id (see the module doc).
pub fn content_id(queue: &str, parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        // Length-prefixed, so that moving bytes from one part to the next changes the hash.
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    let digest = hash.finalize();
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("amqp:{queue}:{hex}")
}

/// Longest message body quoted in a failure's reason.
const QUOTE_BYTES: usize = 200;

/// The event a message stands for, or why it cannot be one (a poison message).
pub fn to_event<A>(spec: &SourceSpec, msg: &Message<A>) -> Result<NewEvent, String> {
    let mut event = match spec.type_from {
        TypeFrom::Body => serde_json::from_slice::<NewEvent>(&msg.body)
            .map_err(|e| format!("the body is not an event ({e}): {}", quote(&msg.body)))?,
        TypeFrom::Subject => {
            let event_type = msg
                .subject
                .split('.')
                .skip(spec.skip_segments)
                .collect::<Vec<_>>()
                .join(".");
            if event_type.is_empty() {
                return Err(format!(
                    "the subject {:?} has no segment after the first {}",
                    msg.subject, spec.skip_segments
                ));
            }
            data_event(event_type, &msg.body)?
        }
        TypeFrom::Header => {
            let name = spec.type_header.as_deref().unwrap_or_default();
            let event_type = msg
                .header(name)
                .filter(|t| !t.trim().is_empty())
                .ok_or_else(|| format!("no {name} header to take the event type from"))?;
            data_event(event_type.to_owned(), &msg.body)?
        }
    };
    if event.id.is_none() {
        let id = spec
            .id_header
            .as_deref()
            .and_then(|h| msg.header(h))
            .map(str::to_owned)
            .or_else(|| msg.broker_id.clone())
            .filter(|id| !id.is_empty())
            .unwrap_or_else(|| msg.derived_id.clone());
        event.id = Some(id);
    }
    Ok(event)
}

fn data_event(event_type: String, body: &[u8]) -> Result<NewEvent, String> {
    let data = serde_json::from_slice::<Json>(body)
        .map_err(|e| format!("the body is not JSON ({e}): {}", quote(body)))?;
    Ok(NewEvent {
        id: None,
        event_type,
        data,
        context: None,
        occurred_at: None,
    })
}

/// The start of a body, for a failure's reason (lossy UTF-8, cut on a character boundary).
fn quote(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(QUOTE_BYTES)]);
    let cut = if body.len() > QUOTE_BYTES { "..." } else { "" };
    format!("{text:?}{cut}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: serde_json::Value) -> SourceSpec {
        let mut base = serde_json::json!({
            "name": "s", "type": "nats", "url": "nats://h", "stream": "S", "subject": "events.>"
        });
        if let (Some(base), Some(extra)) = (base.as_object_mut(), json.as_object()) {
            base.extend(extra.clone());
        }
        serde_json::from_value(base).unwrap()
    }

    fn msg(subject: &str, headers: &[(&str, &str)], body: &str) -> Message<()> {
        Message {
            subject: subject.into(),
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
            broker_id: None,
            derived_id: "nats:S:1:7".into(),
            ack: (),
        }
    }

    #[test]
    fn the_body_is_the_event_and_its_id_wins() {
        let s = spec(serde_json::json!({}));
        let e = to_event(
            &s,
            &msg(
                "events.x",
                &[],
                r#"{"type":"user.created","data":{"a":1},"id":"k1"}"#,
            ),
        )
        .unwrap();
        assert_eq!(
            (e.event_type.as_str(), e.id.as_deref()),
            ("user.created", Some("k1"))
        );
        assert_eq!(e.data.get(), r#"{"a":1}"#);
        let mut m = msg("events.x", &[], r#"{"type":"t","data":null}"#);
        m.broker_id = Some("pub-1".into());
        assert_eq!(to_event(&s, &m).unwrap().id.as_deref(), Some("pub-1"));
        m.broker_id = None;
        assert_eq!(to_event(&s, &m).unwrap().id.as_deref(), Some("nats:S:1:7"));
    }

    #[test]
    fn type_from_subject_and_header_take_the_body_as_data() {
        let s = spec(
            serde_json::json!({"type_from": "subject", "skip_segments": 1, "id_header": "X-Id"}),
        );
        let e = to_event(
            &s,
            &msg("events.user.created", &[("x-id", "h-1")], r#"{"n":1}"#),
        )
        .unwrap();
        assert_eq!(e.event_type, "user.created");
        assert_eq!(e.id.as_deref(), Some("h-1"));
        assert_eq!(e.data.get(), r#"{"n":1}"#);
        assert!(to_event(&s, &msg("events", &[], "{}")).is_err());

        let s = spec(serde_json::json!({"type_from": "header", "type_header": "Event-Type"}));
        let e = to_event(&s, &msg("a.b", &[("Event-Type", "order.paid")], "[1]")).unwrap();
        assert_eq!(e.event_type, "order.paid");
        let no_type = to_event(&s, &msg("a.b", &[], "[1]")).unwrap_err();
        assert!(no_type.contains("Event-Type"), "{no_type}");
    }

    #[test]
    fn poison_is_told_with_a_reason_and_never_panics() {
        let s = spec(serde_json::json!({}));
        for body in ["", "not json", "{\"data\":1}", "[]", "\u{0}\u{ff}"] {
            let reason = to_event(&s, &msg("e", &[], body)).unwrap_err();
            assert!(reason.contains("not an event"), "{reason}");
        }
        let long = "x".repeat(10_000);
        assert!(to_event(&s, &msg("e", &[], &long)).unwrap_err().len() < 500);
        let s = spec(serde_json::json!({"type_from": "subject"}));
        assert!(to_event(&s, &msg("e", &[], "{"))
            .unwrap_err()
            .contains("not JSON"));
    }

    #[test]
    fn content_ids_separate_parts() {
        let a = content_id("q", &[b"ab", b"c"]);
        let b = content_id("q", &[b"a", b"bc"]);
        assert_ne!(a, b);
        assert_eq!(a, content_id("q", &[b"ab", b"c"]));
        assert!(a.starts_with("amqp:q:"));
    }
}
