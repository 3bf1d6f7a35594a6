//! `field-map`: a hookyard plugin driven by mapping tables, as on a webhook admin screen.
//!
//! The config has a `request` table (event → the body sent), a `response` table (the third
//! party's answer → fields written back) and an `input` table (a push → internal records); see
//! `plugins/README.md` for the schema. The engine is [`mapping`] (the request table is evaluated
//! on raw JSON by [`request`]), pure Rust and tested on the host; the component glue below exists
//! only in the wasm build. The parsed config is cached in the instance ([`cache`]): the gateway
//! reuses instances, so a webhook's mapping tables are parsed once, not on every call.

pub mod cache;
pub mod mapping;
pub mod request;

#[cfg(all(test, not(target_arch = "wasm32")))]
mod fuzz;
#[cfg(test)]
mod tests;

#[cfg(target_arch = "wasm32")]
mod component {
    use hookyard_plugin_sdk::types::{
        Event, InboundRecord, InboundRequest, OutgoingAction, PluginError, Rejection, Response,
        Webhook,
    };
    use hookyard_plugin_sdk::{default_body, default_inbound, json_request, Plugin};

    use std::cell::RefCell;
    use std::rc::Rc;

    use crate::cache::ConfigCache;
    use crate::mapping::{Mapping, WebhookView};
    use crate::request::{EventInput, RequestError};

    struct FieldMap;

    thread_local! {
        static CONFIG: RefCell<ConfigCache<Mapping>> = RefCell::new(ConfigCache::default());
    }

    /// The webhook's mapping, parsed on the first call with these config bytes.
    fn mapping(bytes: Vec<u8>) -> Result<Rc<Mapping>, String> {
        CONFIG.with(|cache| cache.borrow_mut().get_or_parse(bytes, Mapping::from_json))
    }

    fn config(bytes: Vec<u8>) -> Result<Rc<Mapping>, PluginError> {
        mapping(bytes).map_err(PluginError::InvalidConfig)
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
            let mapping = self::config(config)?;
            if mapping.skip_events.contains(&ev.event_type) {
                return Ok(OutgoingAction::Skip(format!(
                    "event type {} is in skip_events",
                    ev.event_type
                )));
            }
            let event = EventInput {
                id: &ev.id,
                event_type: &ev.event_type,
                timestamp: &ev.occurred_at,
                data: &ev.data,
                context: &ev.context,
                webhook: WebhookView {
                    id: &hook.id,
                    name: &hook.name,
                    url: &hook.url,
                    method: &hook.method,
                },
            };
            let body = match mapping.request_body_json(&event) {
                Ok(Some(body)) => body,
                Ok(None) => default_body(&ev)?,
                Err(RequestError::NotJson(message)) => {
                    return Err(PluginError::InvalidInput(message))
                }
                Err(RequestError::Map(e)) => return Err(PluginError::InvalidInput(e.to_string())),
            };
            let mut request = json_request(body);
            request.method = mapping.method.clone();
            Ok(OutgoingAction::Send(vec![request]))
        }

        fn response(
            config: Vec<u8>,
            _hook: Webhook,
            _ev: Event,
            resp: Response,
        ) -> Result<Option<Vec<u8>>, PluginError> {
            let mapping = self::config(config)?;
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
            let mapping = self::mapping(config).map_err(|e| Rejection {
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
