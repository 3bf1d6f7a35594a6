//! {{name}}: a hookyard plugin. Build: `hookyard plugin build`; test: `hookyard plugin test`.
//!
//! Hooks not implemented here pass data through (the SDK's defaults: the gateway's envelope,
//! nothing written back, the pushed JSON object as one record).

use hookyard_plugin_sdk::types::*;
use hookyard_plugin_sdk::{json_request, log, Plugin};
use serde_json::{json, Value};

struct {{type_name}};

/// Parses JSON bytes; malformed input is the plugin's `invalid-input` error.
fn parse(bytes: &[u8], what: &str) -> Result<Value, PluginError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(bytes).map_err(|e| PluginError::InvalidInput(format!("{what} is not JSON: {e}")))
}

impl Plugin for {{type_name}} {
    // >> outgoing
    /// The event becomes one JSON request: its type, the user's id and email.
    fn outgoing(_config: Vec<u8>, hook: Webhook, ev: Event) -> Result<OutgoingAction, PluginError> {
        let data = parse(&ev.data, "event data")?;
        log::debug(&format!("{}: {} for {}", "{{name}}", ev.event_type, hook.name));
        let body = json!({
            "type": ev.event_type,
            "user_id": data.get("id"),
            "email": data.get("email"),
        });
        Ok(OutgoingAction::Send(vec![json_request(body.to_string().into_bytes())]))
    }
    // << outgoing
    // >> response

    /// A 2xx answer's `id` is written back as `remote_id`; other answers write nothing.
    fn response(
        _config: Vec<u8>,
        _hook: Webhook,
        _ev: Event,
        resp: Response,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        if !(200..300).contains(&resp.status) {
            return Ok(None);
        }
        let body = parse(&resp.body, "the response body")?;
        Ok(body
            .get("id")
            .map(|id| json!({ "remote_id": id }).to_string().into_bytes()))
    }
    // << response
    // >> inbound

    /// A pushed JSON object becomes one record, identified by its `id`.
    fn inbound(_config: Vec<u8>, _hook: Webhook, req: InboundRequest) -> Result<Vec<InboundRecord>, Rejection> {
        let reject = |status: u16, message: String| Rejection { status, message };
        let body: Value = serde_json::from_slice(&req.body)
            .map_err(|e| reject(400, format!("body is not JSON: {e}")))?;
        let Some(object) = body.as_object() else {
            return Err(reject(422, "body must be a JSON object".into()));
        };
        let id = object.get("id").ok_or_else(|| reject(422, "body has no id".into()))?;
        Ok(vec![InboundRecord {
            entity: None,
            identifiers: json!({ "id": id }).to_string().into_bytes(),
            fields: body.to_string().into_bytes(),
        }])
    }
    // << inbound
}

hookyard_plugin_sdk::export!({{type_name}});
