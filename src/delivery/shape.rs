//! The transform step between an event and the request(s) sent for it.
//!
//! A [`Shaper`] turns (webhook, event) into the requests to send, or a decision to skip. Without a
//! plugin the body is the default envelope `{"type", "timestamp", "data", "context"}`; the plugin
//! host implements the same trait, so the worker does not know which it is talking to.

use async_trait::async_trait;
use bytes::Bytes;

use crate::model::{Event, Json, Millis, PluginFailure, PluginUsed, Webhook};

/// A request the worker should send, before auth, signing and the gateway's own headers.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingRequest {
    /// Overrides the webhook's method.
    pub method: Option<String>,
    /// Appended to the webhook URL's path.
    pub path: Option<String>,
    /// Query string (without `?`) appended to the webhook URL.
    pub query: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Bytes,
    /// Content type; `application/json` when none.
    pub content_type: Option<String>,
}

impl OutgoingRequest {
    /// A JSON body sent to the webhook's URL with its method.
    pub fn json(body: Vec<u8>) -> OutgoingRequest {
        OutgoingRequest {
            method: None,
            path: None,
            query: None,
            headers: Vec::new(),
            body: Bytes::from(body),
            content_type: None,
        }
    }
}

/// What to do with one event for one webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum Shaped {
    /// Send these, in order.
    Send(Vec<OutgoingRequest>),
    /// Send nothing, for this reason.
    Skip(String),
}

/// Why shaping failed, and what the webhook's plugin failure policy says to do about it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ShapeError {
    /// What went wrong, for the Webhook Log.
    pub message: String,
    /// What happens to the delivery.
    pub action: PluginFailure,
}

/// Turns an event into requests for a webhook, and a webhook's answer into fields to write back.
#[async_trait]
pub trait Shaper: Send + Sync + 'static {
    /// Shapes `event` for `hook`.
    async fn outgoing(&self, hook: &Webhook, event: &Event) -> Result<Shaped, ShapeError>;

    /// [`Shaper::outgoing`], also naming the plugin version that shaped it (none without a
    /// plugin), for the Webhook Log. The default names none.
    async fn outgoing_traced(
        &self,
        hook: &Webhook,
        event: &Event,
    ) -> (Result<Shaped, ShapeError>, Option<PluginUsed>) {
        (self.outgoing(hook, event).await, None)
    }

    /// The fields to write back from a successful answer to `event`'s delivery (a JSON
    /// object), or none. Without a plugin there is nothing to write back.
    async fn response(
        &self,
        _hook: &Webhook,
        _event: &Event,
        _answer: Answer<'_>,
    ) -> Result<Option<serde_json::Value>, String> {
        Ok(None)
    }
}

/// A receiver's answer, as the response phase sees it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: &'a [(String, String)],
    /// Body (up to the write-back cap).
    pub body: &'a [u8],
}

/// The body without a plugin: a sink message's data as is, else the default envelope.
pub fn plain_body(hook: &Webhook, event: &Event) -> Vec<u8> {
    if crate::sink::is_sink(hook) {
        event.data.get().as_bytes().to_vec()
    } else {
        default_body(event)
    }
}

/// The default envelope: `{"type", "timestamp", "data", "context"}`.
pub fn default_body(event: &Event) -> Vec<u8> {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        #[serde(rename = "type")]
        event_type: &'a str,
        timestamp: String,
        data: &'a Json,
        context: &'a Json,
    }
    let envelope = Envelope {
        event_type: &event.event_type,
        timestamp: rfc3339(event.occurred_at),
        data: &event.data,
        context: &event.context,
    };
    // Serialising raw JSON and strings into a Vec cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_default()
}

/// Formats milliseconds since the epoch as RFC 3339 (UTC, millisecond precision).
pub fn rfc3339(ms: Millis) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_envelope() {
        let event = Event {
            id: "e1".into(),
            event_type: "user.created".into(),
            data: serde_json::json!({"a": 1}).into(),
            context: Json::null(),
            occurred_at: 1_614_265_330_000,
            received_at: 0,
        };
        let v: serde_json::Value = serde_json::from_slice(&default_body(&event)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"type": "user.created", "timestamp": "2021-02-25T15:02:10Z",
                               "data": {"a": 1}, "context": null})
        );
    }
}
