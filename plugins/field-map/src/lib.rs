//! `field-map`: a hookyard plugin driven by mapping tables, as on a webhook admin screen.
//!
//! The config has a `request` table (event → the body sent), a `response` table (the third
//! party's answer → fields written back) and an `input` table (a push → internal records); see
//! `plugins/README.md` for the schema. The engine is [`mapping`], pure Rust and tested on the
//! host; the component glue below exists only in the wasm build.

pub mod mapping;

#[cfg(test)]
mod tests;

#[cfg(target_arch = "wasm32")]
mod component {
    use hookyard_plugin_sdk::types::{
        Event, InboundRecord, InboundRequest, OutgoingAction, PluginError, Rejection, Response,
        Webhook,
    };
    use hookyard_plugin_sdk::{default_body, default_inbound, json_request, Plugin};
    use serde_json::Value;

    use crate::mapping::{EventView, Mapping, WebhookView};

    struct FieldMap;

    fn config(bytes: &[u8]) -> Result<Mapping, PluginError> {
        Mapping::from_json(bytes).map_err(PluginError::InvalidConfig)
    }

    fn json(bytes: &[u8], what: &str) -> Result<Value, PluginError> {
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(bytes)
            .map_err(|e| PluginError::InvalidInput(format!("event {what} is not JSON: {e}")))
    }

    impl Plugin for FieldMap {
        fn validate_config(config: Vec<u8>) -> Result<(), String> {
            Mapping::from_json(&config).map(drop)
        }

        fn outgoing(
            config: Vec<u8>,
            hook: Webhook,
            ev: Event,
        ) -> Result<OutgoingAction, PluginError> {
            let mapping = self::config(&config)?;
            if mapping.skip_events.contains(&ev.event_type) {
                return Ok(OutgoingAction::Skip(format!(
                    "event type {} is in skip_events",
                    ev.event_type
                )));
            }
            let body = if mapping.request.is_empty() {
                default_body(&ev)?
            } else {
                let data = json(&ev.data, "data")?;
                let context = if mapping.request_reads_context() {
                    json(&ev.context, "context")?
                } else {
                    Value::Null
                };
                let view = EventView {
                    id: &ev.id,
                    event_type: &ev.event_type,
                    timestamp: &ev.occurred_at,
                    data: &data,
                    context: &context,
                    webhook: WebhookView {
                        id: &hook.id,
                        name: &hook.name,
                        url: &hook.url,
                        method: &hook.method,
                    },
                };
                let body = mapping
                    .request_body(&view)
                    .map_err(|e| PluginError::InvalidInput(e.to_string()))?
                    .unwrap_or_default();
                serde_json::to_vec(&body).map_err(|e| PluginError::Internal(e.to_string()))?
            };
            let mut request = json_request(body);
            request.method = mapping.method;
            Ok(OutgoingAction::Send(vec![request]))
        }

        fn response(
            config: Vec<u8>,
            _hook: Webhook,
            _ev: Event,
            resp: Response,
        ) -> Result<Option<Vec<u8>>, PluginError> {
            let mapping = self::config(&config)?;
            let fields = mapping
                .response_fields(resp.status, &resp.headers, &resp.body)
                .map_err(|e| PluginError::InvalidInput(e.to_string()))?;
            fields
                .map(|f| serde_json::to_vec(&f).map_err(|e| PluginError::Internal(e.to_string())))
                .transpose()
        }

        fn inbound(
            config: Vec<u8>,
            _hook: Webhook,
            req: InboundRequest,
        ) -> Result<Vec<InboundRecord>, Rejection> {
            // The config was validated at activation, so this cannot happen; a rejection must be 4xx.
            let mapping = Mapping::from_json(&config).map_err(|e| Rejection {
                status: 422,
                message: format!("invalid plugin config: {e}"),
            })?;
            let records = mapping
                .input_records(&req.headers, &req.query, &req.body)
                .map_err(|e| Rejection {
                    status: e.status(),
                    message: e.message().to_owned(),
                })?;
            let Some(records) = records else {
                return default_inbound(&req);
            };
            Ok(records
                .into_iter()
                .map(|r| InboundRecord {
                    entity: None,
                    identifiers: serde_json::to_vec(&r.identifiers)
                        .unwrap_or_else(|_| b"{}".to_vec()),
                    fields: serde_json::to_vec(&r.fields).unwrap_or_else(|_| b"{}".to_vec()),
                })
                .collect())
        }
    }

    hookyard_plugin_sdk::export!(FieldMap);
}
