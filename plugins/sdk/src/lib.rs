//! Guest-side helpers for hookyard plugins written in Rust.
//!
//! The crate generates the bindings of `wit/plugin.wit` (world `plugin`) once, and offers a
//! [`Plugin`] trait whose every phase has a pass-through default, so a plugin implements only the
//! phases it cares about:
//!
//! ```ignore
//! use hookyard_plugin_sdk::{Plugin, types::{Event, OutgoingAction, PluginError, Webhook}};
//!
//! struct Shout;
//!
//! impl Plugin for Shout {
//!     fn outgoing(config: Vec<u8>, hook: Webhook, ev: Event) -> Result<OutgoingAction, PluginError> {
//!         hookyard_plugin_sdk::log::info(&format!("shaping {}", ev.event_type));
//!         let body = format!("{{\"event\":\"{}\"}}", ev.event_type.to_uppercase());
//!         Ok(OutgoingAction::Send(vec![hookyard_plugin_sdk::json_request(body.into_bytes())]))
//!     }
//! }
//!
//! hookyard_plugin_sdk::export!(Shout);
//! ```
//!
//! The plugin crate is a `cdylib` built for `wasm32-wasip2`; the output is a component.

// The generated code names this crate by its path, as the plugin crates do.
extern crate self as hookyard_plugin_sdk;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "plugin",
        // Plugin crates call `hookyard_plugin_sdk::export!(T)` without depending on wit-bindgen.
        pub_export_macro: true,
        default_bindings_module: "hookyard_plugin_sdk::bindings",
        runtime_path: "hookyard_plugin_sdk::__wit_bindgen::rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen as __wit_bindgen;

/// Exports a type implementing [`Plugin`] as the component's `handler`.
///
/// Invoke it once, at the root of the plugin crate: `hookyard_plugin_sdk::export!(MyPlugin);`.
pub use bindings::export;

/// The records and variants of `hookyard:plugin/types`.
pub mod types {
    pub use crate::bindings::hookyard::plugin::types::*;
}

use bindings::exports::hookyard::plugin::handler::Guest;
use serde_json::value::RawValue;
use types::{
    Event, InboundRecord, InboundRequest, OutgoingAction, OutgoingRequest, PluginError, Rejection,
    Response, Webhook,
};

/// Writing to the gateway's log (`hookyard:plugin/log`). The host cuts long messages and caps
/// a call's total, so logging cannot flood it.
pub mod log {
    pub use crate::bindings::hookyard::plugin::log::{log, Level};

    /// Logs at trace level.
    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }
    /// Logs at debug level.
    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }
    /// Logs at info level.
    pub fn info(message: &str) {
        log(Level::Info, message)
    }
    /// Logs at warn level.
    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }
    /// Logs at error level.
    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// A hookyard plugin. Every phase has a default, so implement only the ones you need; every
/// function receives the webhook's plugin config as JSON bytes.
pub trait Plugin {
    /// Checks a config once, when a webhook or plugin version is activated.
    /// Default: any config is accepted.
    fn validate_config(config: Vec<u8>) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Outgoing phase: an event becomes the request(s) to send, or is skipped.
    /// Default: [`default_outgoing`], the gateway's own envelope.
    fn outgoing(config: Vec<u8>, hook: Webhook, ev: Event) -> Result<OutgoingAction, PluginError> {
        let _ = (config, hook);
        default_outgoing(&ev)
    }

    /// Response phase: the third party's answer becomes a JSON object of fields to write back.
    /// Default: nothing to write back.
    fn response(
        config: Vec<u8>,
        hook: Webhook,
        ev: Event,
        resp: Response,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        let _ = (config, hook, ev, resp);
        Ok(None)
    }

    /// Inbound phase: a third party's push becomes internal records, or is rejected.
    /// Default: [`default_inbound`], one record whose fields are the pushed JSON object.
    fn inbound(
        config: Vec<u8>,
        hook: Webhook,
        req: InboundRequest,
    ) -> Result<Vec<InboundRecord>, Rejection> {
        let _ = (config, hook);
        default_inbound(&req)
    }
}

impl<T: Plugin> Guest for T {
    fn validate_config(config: Vec<u8>) -> Result<(), String> {
        <T as Plugin>::validate_config(config)
    }

    fn outgoing(config: Vec<u8>, hook: Webhook, ev: Event) -> Result<OutgoingAction, PluginError> {
        <T as Plugin>::outgoing(config, hook, ev)
    }

    fn response(
        config: Vec<u8>,
        hook: Webhook,
        ev: Event,
        resp: Response,
    ) -> Result<Option<Vec<u8>>, PluginError> {
        <T as Plugin>::response(config, hook, ev, resp)
    }

    fn inbound(
        config: Vec<u8>,
        hook: Webhook,
        req: InboundRequest,
    ) -> Result<Vec<InboundRecord>, Rejection> {
        <T as Plugin>::inbound(config, hook, req)
    }
}

/// A request with this JSON body, sent to the webhook's URL with its method and
/// `application/json`.
pub fn json_request(body: Vec<u8>) -> OutgoingRequest {
    OutgoingRequest {
        method: None,
        path: None,
        query: None,
        headers: Vec::new(),
        body,
        content_type: None,
    }
}

/// Parses JSON bytes; empty bytes are `null`.
fn raw_json<'a>(bytes: &'a [u8], what: &str) -> Result<&'a RawValue, PluginError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"null"
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| PluginError::InvalidInput(format!("event {what} is not JSON: {e}")))
}

/// The gateway's default body for an event, `{"type", "timestamp", "data", "context"}`: the
/// event type, its `occurred-at` string, and its data and context as JSON.
pub fn default_body(ev: &Event) -> Result<Vec<u8>, PluginError> {
    #[derive(serde::Serialize)]
    struct Envelope<'a> {
        #[serde(rename = "type")]
        event_type: &'a str,
        timestamp: &'a str,
        data: &'a RawValue,
        context: &'a RawValue,
    }
    let envelope = Envelope {
        event_type: &ev.event_type,
        timestamp: &ev.occurred_at,
        data: raw_json(&ev.data, "data")?,
        context: raw_json(&ev.context, "context")?,
    };
    serde_json::to_vec(&envelope).map_err(|e| PluginError::Internal(e.to_string()))
}

/// The default body as a JSON object, for plugins that add to or change it.
pub fn default_envelope(
    ev: &Event,
) -> Result<serde_json::Map<String, serde_json::Value>, PluginError> {
    let parse = |bytes: &[u8], what: &str| -> Result<serde_json::Value, PluginError> {
        serde_json::from_str(raw_json(bytes, what)?.get())
            .map_err(|e| PluginError::InvalidInput(format!("event {what} is not JSON: {e}")))
    };
    let mut envelope = serde_json::Map::new();
    envelope.insert("type".into(), ev.event_type.clone().into());
    envelope.insert("timestamp".into(), ev.occurred_at.clone().into());
    envelope.insert("data".into(), parse(&ev.data, "data")?);
    envelope.insert("context".into(), parse(&ev.context, "context")?);
    Ok(envelope)
}

/// The default outgoing action: send [`default_body`] to the webhook as it is configured.
pub fn default_outgoing(ev: &Event) -> Result<OutgoingAction, PluginError> {
    Ok(OutgoingAction::Send(vec![json_request(default_body(ev)?)]))
}

/// Whether the event's data asks a test fixture to misbehave (`"misbehave": true`). Test
/// fixtures use it to fail only on chosen events, like a plugin with an input-dependent bug.
pub fn misbehave(ev: &Event) -> bool {
    serde_json::from_slice::<serde_json::Value>(&ev.data)
        .ok()
        .and_then(|v| v.get("misbehave").and_then(serde_json::Value::as_bool))
        .unwrap_or(false)
}

/// The default inbound mapping: the body must be a JSON object; it becomes one record of the
/// webhook's entity with identifiers `{}` and the object as its fields. Malformed JSON is
/// rejected with 400, any other JSON value with 422.
pub fn default_inbound(req: &InboundRequest) -> Result<Vec<InboundRecord>, Rejection> {
    let body: &RawValue = serde_json::from_slice(&req.body).map_err(|e| Rejection {
        status: 400,
        message: format!("body is not JSON: {e}"),
    })?;
    if !body.get().starts_with('{') {
        return Err(Rejection {
            status: 422,
            message: "body must be a JSON object".into(),
        });
    }
    Ok(vec![InboundRecord {
        entity: None,
        identifiers: b"{}".to_vec(),
        fields: body.get().as_bytes().to_vec(),
    }])
}
