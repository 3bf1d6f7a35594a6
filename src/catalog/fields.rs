//! The check of a `field-map` webhook's mapping against the catalog's schemas.
//!
//! A `request` row of the first-party `field-map` plugin reads its value from the event's
//! `data` at `field` (a dotted path, or `@data.<path>`); a field that is not there is silently
//! left out of every body. So when the catalog has schemas for the types a webhook subscribes
//! to, each such field must be described by at least one of them (not all: `user.deleted` may
//! carry only an id while `user.created` carries the whole record). A schema that cannot tell
//! (an open object, a `$ref` to another document) lets the field pass. The `response` and
//! `input` rows are not checked: their `field` is a field of the internal record written to
//! the sink, which the event schemas need not list.

use serde_json::Value;

use super::schema::{self, Knows};
use super::EventType;
use crate::model::WebhookSpec;
use crate::webhooks::InvalidSpec;

/// The name of the first-party mapping plugin.
pub const FIELD_MAP: &str = "field-map";

/// Checks the `request` rows of a `field-map` webhook against the schemas of `types` (the
/// cataloged types it subscribes to). Names the first row at fault.
pub fn check_field_map(spec: &WebhookSpec, types: &[&EventType]) -> Result<(), InvalidSpec> {
    let Some(plugin) = spec.plugin.as_ref().filter(|p| p.name == FIELD_MAP) else {
        return Ok(());
    };
    let skipped: Vec<&str> = plugin
        .config
        .get("skip_events")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let schemas: Vec<(&str, &Value)> = types
        .iter()
        .filter(|t| !skipped.contains(&t.spec.name.as_str()))
        .filter_map(|t| Some((t.spec.name.as_str(), t.spec.schema.as_ref()?)))
        .collect();
    if schemas.is_empty() {
        return Ok(());
    }
    let Some(rows) = plugin.config.get("request").and_then(Value::as_array) else {
        return Ok(());
    };
    for (i, row) in rows.iter().enumerate() {
        let Some(field) = row.get("field").and_then(Value::as_str) else {
            continue;
        };
        let Some(path) = data_path(field) else {
            continue;
        };
        let segments: Vec<&str> = path.split('.').collect();
        if schemas
            .iter()
            .all(|(_, s)| schema::knows(s, &segments) == Knows::No)
        {
            let api_field = row.get("api_field").and_then(Value::as_str).unwrap_or("");
            let names: Vec<&str> = schemas.iter().map(|(n, _)| *n).collect();
            return Err(InvalidSpec {
                field: format!("plugin.config.request[{i}].field"),
                message: format!(
                    "request[{i}] (api_field {api_field:?}): the field {field:?} is in the data \
                     schema of none of this webhook's event types ({})",
                    names.join(", ")
                ),
            });
        }
    }
    Ok(())
}

/// The path in `data` a row's `field` reads: the field itself, or what follows `@data.`; none
/// for the other references (`@id`, `@type`, `@context...`, the whole `@data`).
fn data_path(field: &str) -> Option<&str> {
    match field.strip_prefix('@') {
        None => Some(field),
        Some(reference) => reference.strip_prefix("data."),
    }
}
