//! The sample inputs of `hookyard plugin check` and of the upload's smoke call: one set, so a
//! plugin that passes `plugin check` with no arguments passes the upload's smoke call too
//! (documented in docs/PLUGINS.md, "What an upload checks").

use super::bindings::types;
use crate::model::{Event, Json};

/// The sample event's type.
pub const EVENT_TYPE: &str = "user.created";

/// The sample event's `data`.
pub const EVENT_DATA: &str = r#"{"id":"42","username":"jdoe","email":"jdoe@example.com","first_name":"Jane","last_name":"Doe"}"#;

/// When the sample event happened (fixed, so outputs are reproducible).
pub const OCCURRED_AT_MS: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

/// The sample event: a `user.created` with a small user record and no context.
pub fn event() -> Event {
    Event {
        id: "evt_sample".into(),
        event_type: EVENT_TYPE.into(),
        // A constant that parses (pinned by a test); null if it ever did not.
        data: serde_json::from_str(EVENT_DATA).unwrap_or_else(|_| Json::null()),
        context: Json::null(),
        occurred_at: OCCURRED_AT_MS,
        received_at: OCCURRED_AT_MS,
    }
}

/// The sample webhook a call is made for.
pub fn webhook() -> types::Webhook {
    types::Webhook {
        id: "wh_sample".into(),
        name: "sample".into(),
        url: "https://example.invalid/hook".into(),
        method: "POST".into(),
    }
}

/// The sample answer of a third party, for the `response` phase.
pub fn response() -> types::Response {
    types::Response {
        status: 201,
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"id":"hr-1001","status":"created"}"#.to_vec(),
    }
}

/// The sample push of a third party, for the `inbound` phase.
pub fn inbound_request() -> types::InboundRequest {
    types::InboundRequest {
        method: "POST".into(),
        path: "/v1/inbound/sample".into(),
        query: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body: br#"{"id":"42","email":"jdoe@example.com","first_name":"Jane"}"#.to_vec(),
        content_type: Some("application/json".into()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_sample_event_keeps_its_data_byte_for_byte() {
        assert_eq!(super::event().data.get(), super::EVENT_DATA);
    }
}
