//! "Try it": one stored version of a plugin run on a given event and config, for the admin
//! API's `POST /admin/v1/plugins/{name}/versions/{version}/try` and the console's panel.
//!
//! It is what `hookyard plugin check` does with a file, done with a version the gateway holds:
//! `validate-config` on the config, then (when accepted) the outgoing phase, each on a fresh
//! instance under the configured limits (time, memory, output size, call slots), never on a
//! warm instance a webhook's deliveries use. Nothing is stored or sent, and the calls are not
//! counted in the plugin metrics, which describe deliveries.

use super::bindings::types;
use super::{call_outgoing, call_validate_config, CallError, PluginError, PluginHost, Usage};
use crate::model::Event;

/// One try of a version.
pub struct TryRun {
    /// The version's content hash.
    pub sha256: String,
    /// What `validate-config` said of the config; the outgoing phase is not run when it
    /// refused.
    pub validate: Result<(), String>,
    /// What the outgoing phase answered (`None` when the config was refused).
    pub output: Option<Result<Result<types::OutgoingAction, types::PluginError>, CallError>>,
    /// Time, memory, logs and guest output of the outgoing call.
    pub usage: Usage,
}

impl PluginHost {
    /// Runs version `version` of plugin `name` on `event` with `config`, the plugin told it is
    /// called for `hook`. `NotFound` when the version does not exist or is not loaded.
    pub async fn try_version(
        &self,
        name: &str,
        version: u32,
        config: &serde_json::Value,
        hook: types::Webhook,
        event: &Event,
    ) -> Result<TryRun, PluginError> {
        let plugin = self.loaded(name, version).ok_or_else(|| {
            PluginError::NotFound(format!("plugin {name:?} has no loaded version {version}"))
        })?;
        let validate = call_validate_config(&self.runtime, &plugin, config).await;
        if validate.is_err() {
            return Ok(TryRun {
                sha256: plugin.sha256.clone(),
                validate,
                output: None,
                usage: Usage::default(),
            });
        }
        let (output, usage) = call_outgoing(&self.runtime, &plugin, config, hook, event).await;
        Ok(TryRun {
            sha256: plugin.sha256.clone(),
            validate,
            output: Some(output),
            usage,
        })
    }
}
