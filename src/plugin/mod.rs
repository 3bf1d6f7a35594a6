//! WebAssembly plugins: the registry of versions, hot swap, and the calls the gateway makes.
//!
//! - [`bindings`]: the one `bindgen!` of `wit/plugin.wit`.
//! - [`runtime`]: the engine, compilation with an on-disk cache, and sandboxed calls (with the
//!   guest's stdout/stderr captured into a trap's error).
//! - `compile`: the compile pool (bounded threads, lowered priority), off the request path.
//! - [`exports`]: the `handler` exports checked against the WIT, naming a mismatched function.
//! - `observe`: metrics by plugin and version, and the rate-limited failure log line.
//! - [`sample`]: the sample inputs of the upload's smoke call and of `hookyard plugin check`.
//! - [`warm`]: warm instances, reused across calls of one plugin version for one webhook, and
//!   the rules that keep them isolated; `output`: the guest's stdout/stderr, emptied per call.
//! - [`PluginHost`]: versions and active pointers (kept in the store, so a restart keeps them),
//!   upload with validation, activation, and the three phases; it is also the delivery
//!   pipeline's [`Shaper`].
//!
//! # Hot swap
//!
//! Every loaded version stays in memory as an `Arc<LoadedPlugin>`. A call resolves its version
//! once (the webhook's pinned version, or the plugin's active one) and holds that `Arc` until it
//! returns, so activating another version is a pointer change under a short lock: calls already
//! running finish on the version they started with, new calls see the new one, and rolling back
//! is the same pointer change in the other direction. Nothing is recompiled. Warm instances
//! belong to one loaded version: when a plugin's active pointer moves, the idle instances of its
//! other versions are dropped, and the new version's calls make their own.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::PluginsConfig;
use crate::delivery::plugin_output;
use crate::delivery::shape::{
    plain_body, rfc3339, Answer, OutgoingRequest, ShapeError, Shaped, Shaper,
};
use crate::metrics::Metrics;
use crate::model::{now_ms, Event, Instances, PluginFailure, PluginRef, Webhook};
use crate::store::{self, PluginVersion, Store};

pub mod bindings;
pub mod builtin;
mod compile;
pub mod exports;
mod observe;
mod output;
pub mod runtime;
pub mod sample;
pub mod try_call;
pub mod warm;

use bindings::types;
use observe::CallObserver;
pub use runtime::{CallError, LoadError, LogLine, Runtime, Usage};

/// Errors of the plugin registry.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The upload is not acceptable (not a component, wrong world, bad config, smoke call failed).
    #[error("{0}")]
    Invalid(String),
    /// The plugin or version does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// One version, compiled and ready.
pub struct LoadedPlugin {
    /// Plugin name.
    pub name: String,
    /// Version number.
    pub version: u32,
    /// Hex sha256 of the component.
    pub sha256: String,
    /// Unique to this load (a reload or a re-upload gets a new one): warm instances are keyed
    /// by it, so they never outlive the version they were made from.
    pub id: u64,
    /// What the component asks for (its `hookyard-instances` custom section).
    pub instances: Instances,
    pre: bindings::PluginPre<runtime::CallState>,
}

/// A new [`LoadedPlugin::id`].
fn next_load_id() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// How a call gets its plugin instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse<'a> {
    /// A new instance, dropped after the call (uploads' checks, `plugin check`, config
    /// validation, and webhooks or plugins that ask for it).
    Fresh,
    /// A warm instance of this plugin version for the webhook with this id.
    Warm(&'a str),
}

impl Reuse<'_> {
    fn key(self, plugin: &LoadedPlugin) -> Option<warm::WarmKey> {
        match self {
            Reuse::Fresh => None,
            Reuse::Warm(webhook) => Some(warm::WarmKey {
                plugin: plugin.id,
                webhook: Arc::from(webhook),
            }),
        }
    }
}

#[derive(Default)]
struct Entry {
    versions: BTreeMap<u32, Arc<LoadedPlugin>>,
    active: Option<u32>,
}

/// What a plugin made of an inbound push.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundRecord {
    /// Entity, when the plugin names one.
    pub entity: Option<String>,
    /// Identifier fields (JSON object).
    pub identifiers: serde_json::Value,
    /// Mapped fields (JSON object).
    pub fields: serde_json::Value,
}

/// The registry of plugin versions and the calls into them.
pub struct PluginHost {
    runtime: Arc<Runtime>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    observer: CallObserver,
    config: PluginsConfig,
    entries: RwLock<HashMap<String, Entry>>,
    /// Held from reading the active pointers in the store to applying them here, by
    /// [`PluginHost::reload`] and [`PluginHost::activate`]. Without it a reload that read the
    /// store before an activation could set the previous version back after it (until the next
    /// reload), and calls made meanwhile would run the version just replaced.
    turns: tokio::sync::Mutex<()>,
    /// Built-in plugins being installed in the background ([`builtin`]).
    installing: builtin::Installing,
}

impl PluginHost {
    /// Creates the host and loads every stored version (from the compiled cache when present),
    /// then the plugins the config names as files.
    pub async fn start(
        config: &PluginsConfig,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Result<PluginHost, PluginError> {
        let runtime = Runtime::new(config, &config.cache_dir)
            .map_err(|e| PluginError::Invalid(e.to_string()))?;
        let installing = builtin::Installing::new(metrics.plugin_installs_running.clone());
        let host = PluginHost {
            runtime: Arc::new(runtime),
            store,
            metrics,
            observer: CallObserver::default(),
            config: config.clone(),
            entries: RwLock::new(HashMap::new()),
            turns: tokio::sync::Mutex::new(()),
            installing,
        };
        host.reload().await?;
        for file in &config.load {
            let wasm = std::fs::read(&file.path).map_err(|e| {
                PluginError::Invalid(format!(
                    "plugins.load {}: {}: {e}",
                    file.name,
                    file.path.display()
                ))
            })?;
            host.upload(&file.name, Bytes::from(wasm))
                .await
                .map_err(|e| PluginError::Invalid(format!("plugins.load {}: {e}", file.name)))?;
        }
        Ok(host)
    }

    /// The runtime (for `plugin check` and tests).
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Brings the in-memory registry in line with the store: loads versions not loaded yet and
    /// takes over the active pointers.
    ///
    /// Compiling a new version can take seconds, so it happens without holding the turn (an
    /// activation need not wait for it); the active pointers are read and applied in one turn.
    pub async fn reload(&self) -> Result<(), PluginError> {
        let turn = self.turns.lock().await;
        let records = self.store.plugins().await?;
        let missing: Vec<&PluginVersion> = records
            .iter()
            .flat_map(|r| &r.versions)
            .filter(|v| self.loaded(&v.name, v.version).is_none())
            .collect();
        if missing.is_empty() {
            self.take_active(&records);
            return Ok(());
        }
        drop(turn);
        for v in missing {
            let wasm = self
                .store
                .plugin_wasm(&v.name, v.version)
                .await?
                .ok_or_else(|| PluginError::NotFound(format!("{} v{}", v.name, v.version)))?;
            match self.compile(Bytes::from(wasm), &v.sha256).await {
                Ok(compiled) => self.insert(v, compiled.pre, compiled.instances),
                Err(e) => {
                    tracing::error!(plugin = %v.name, version = v.version, error = %e, "stored plugin version cannot be loaded")
                }
            }
        }
        // Read the pointers again in a turn: an activation may have happened while compiling.
        // A version added meanwhile is loaded by the next reload.
        let _turn = self.turns.lock().await;
        let records = self.store.plugins().await?;
        self.take_active(&records);
        Ok(())
    }

    /// Sets each plugin's active version to the store's, where that version is loaded.
    fn take_active(&self, records: &[store::PluginRecord]) {
        let mut entries = self.write();
        for record in records {
            let entry = entries.entry(record.name.clone()).or_default();
            if let Some(active) = record.active {
                if entry.versions.contains_key(&active) && entry.active != Some(active) {
                    entry.active = Some(active);
                    self.retire_others(entry, active);
                    tracing::info!(plugin = %record.name, version = active, "plugin version active (changed in the store)");
                }
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.entries.write().unwrap_or_else(|p| p.into_inner())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.entries.read().unwrap_or_else(|p| p.into_inner())
    }

    fn loaded(&self, name: &str, version: u32) -> Option<Arc<LoadedPlugin>> {
        self.read().get(name)?.versions.get(&version).cloned()
    }

    fn insert(
        &self,
        v: &PluginVersion,
        pre: bindings::PluginPre<runtime::CallState>,
        instances: Instances,
    ) {
        let loaded = Arc::new(LoadedPlugin {
            name: v.name.clone(),
            version: v.version,
            sha256: v.sha256.clone(),
            id: next_load_id(),
            instances,
            pre,
        });
        self.write()
            .entry(v.name.clone())
            .or_default()
            .versions
            .insert(v.version, loaded);
    }

    async fn compile(&self, wasm: Bytes, sha256: &str) -> Result<runtime::Compiled, LoadError> {
        let runtime = self.runtime.clone();
        let sha = sha256.to_owned();
        let compiled = tokio::task::spawn_blocking(move || runtime.load(&wasm, &sha))
            .await
            .map_err(|e| LoadError::Compile(e.to_string()))??;
        if compiled.compiled_now {
            self.metrics.plugin_compilations.inc();
        }
        Ok(compiled)
    }

    /// Each plugin's active version here.
    pub fn active_versions(&self) -> Vec<(String, u32)> {
        self.read()
            .iter()
            .filter_map(|(name, entry)| Some((name.clone(), entry.active?)))
            .collect()
    }

    /// The version a webhook's calls use: its pinned version, else the plugin's active one.
    pub fn resolve(&self, plugin: &PluginRef) -> Option<Arc<LoadedPlugin>> {
        let entries = self.read();
        let entry = entries.get(&plugin.name)?;
        let version = plugin.version.or(entry.active)?;
        entry.versions.get(&version).cloned()
    }

    /// [`PluginHost::resolve`], waiting for the built-in plugins' installs first when the
    /// plugin is not loaded and one is running (the first start compiles them in the background).
    async fn resolve_ready(&self, plugin: &PluginRef) -> Option<Arc<LoadedPlugin>> {
        if let Some(loaded) = self.resolve(plugin) {
            return Some(loaded);
        }
        if !self.installing.any() {
            return None;
        }
        self.installing
            .wait(std::time::Duration::from_secs(60))
            .await;
        self.resolve(plugin)
    }

    /// Uploads a version: size cap, sha256, compiled and checked against the world, config of
    /// every webhook that follows the plugin validated, a smoke call on the sample event
    /// ([`sample`]); then it is stored and made active. Uploading the same bytes again changes
    /// nothing but the active pointer. A rejected upload leaves nothing behind: no version, and
    /// no compiled code in the cache.
    pub async fn upload(&self, name: &str, wasm: Bytes) -> Result<PluginVersion, PluginError> {
        if !valid_name(name) {
            return Err(PluginError::Invalid(
                "a plugin name is 1 to 100 of [A-Za-z0-9._-] and starts with a letter or digit"
                    .into(),
            ));
        }
        if wasm.len() > self.config.max_upload_bytes {
            return Err(PluginError::Invalid(format!(
                "the component is {} bytes; plugins.max_upload_bytes is {}",
                wasm.len(),
                self.config.max_upload_bytes
            )));
        }
        let sha256 = hex(&Sha256::digest(&wasm));
        let stored_before = self.stored_with(&sha256).await?;
        let checked = self.check_candidate(name, wasm.clone(), &sha256).await;
        let candidate = match checked {
            Ok(candidate) => candidate,
            Err(e) => {
                if !stored_before {
                    self.runtime.forget(&sha256);
                }
                tracing::info!(plugin = name, sha256 = %sha256, error = %e, "plugin upload rejected");
                return Err(e);
            }
        };
        let stored = self
            .store
            .add_plugin_version(name, &sha256, wasm.to_vec(), now_ms())
            .await?;
        if self.loaded(name, stored.version).is_none() {
            let (pre, instances) = Arc::try_unwrap(candidate)
                .map(|c| (c.pre, c.instances))
                .map_err(|_| PluginError::Invalid("candidate still in use".into()))?;
            self.insert(&stored, pre, instances);
        }
        self.activate(name, stored.version).await?;
        tracing::info!(plugin = name, version = stored.version, sha256 = %stored.sha256, "plugin version active");
        Ok(stored)
    }

    /// Whether any stored version (of any plugin) has these bytes: its compiled code is in use.
    async fn stored_with(&self, sha256: &str) -> Result<bool, PluginError> {
        Ok(self
            .store
            .plugins()
            .await?
            .iter()
            .flat_map(|r| &r.versions)
            .any(|v| v.sha256 == sha256))
    }

    /// Compiles a candidate version and runs the upload's checks on it.
    async fn check_candidate(
        &self,
        name: &str,
        wasm: Bytes,
        sha256: &str,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let compiled = self
            .compile(wasm, sha256)
            .await
            .map_err(|e| PluginError::Invalid(e.to_string()))?;
        let candidate = Arc::new(LoadedPlugin {
            name: name.to_owned(),
            version: 0,
            sha256: sha256.to_owned(),
            id: next_load_id(),
            instances: compiled.instances,
            pre: compiled.pre,
        });
        // Every webhook that will run this version must accept it.
        let hooks = self.store.webhooks().await?;
        let followers: Vec<&Webhook> = hooks
            .iter()
            .filter(|h| {
                h.spec
                    .plugin
                    .as_ref()
                    .is_some_and(|p| p.name == name && p.version.is_none())
            })
            .collect();
        for hook in &followers {
            let config = hook
                .spec
                .plugin
                .as_ref()
                .map(|p| p.config.clone())
                .unwrap_or_default();
            self.validate_config_with(&candidate, &config)
                .await
                .map_err(|e| PluginError::Invalid(format!("webhook {}: {e}", hook.spec.name)))?;
        }
        let sample_config = followers
            .first()
            .and_then(|h| h.spec.plugin.as_ref().map(|p| p.config.clone()))
            .unwrap_or(serde_json::Value::Null);
        self.smoke_test(&candidate, &sample_config).await?;
        Ok(candidate)
    }

    /// Makes `version` active for every webhook that follows the plugin (rollback or pin).
    pub async fn activate(&self, name: &str, version: u32) -> Result<(), PluginError> {
        let _turn = self.turns.lock().await;
        if self.loaded(name, version).is_none() {
            return Err(PluginError::NotFound(format!(
                "plugin {name} has no loaded version {version}"
            )));
        }
        if !self.store.set_active_plugin(name, version).await? {
            return Err(PluginError::NotFound(format!(
                "plugin {name} has no version {version}"
            )));
        }
        if let Some(entry) = self.write().get_mut(name) {
            if entry.active != Some(version) {
                entry.active = Some(version);
                self.retire_others(entry, version);
            }
        }
        Ok(())
    }

    /// Drops the idle warm instances of every version of a plugin but `active`: a version
    /// change discards instances (webhooks pinned to another version make new ones).
    fn retire_others(&self, entry: &Entry, active: u32) {
        let retired: Vec<u64> = entry
            .versions
            .iter()
            .filter(|(v, _)| **v != active)
            .map(|(_, p)| p.id)
            .collect();
        if !retired.is_empty() {
            self.runtime.retire_instances(|id| retired.contains(&id));
        }
    }

    /// How calls of `plugin` for `hook` get their instance: warm unless the webhook, the plugin
    /// or the config asks for fresh ones.
    fn reuse<'a>(
        &self,
        hook: &'a Webhook,
        plugin_ref: &PluginRef,
        plugin: &LoadedPlugin,
    ) -> Reuse<'a> {
        if plugin_ref.instances == Instances::Fresh || plugin.instances == Instances::Fresh {
            Reuse::Fresh
        } else {
            Reuse::Warm(&hook.id)
        }
    }

    /// Checks a webhook's plugin reference: the plugin and version exist and accept the config.
    pub async fn validate_ref(&self, plugin: &PluginRef) -> Result<(), String> {
        let loaded = self
            .resolve_ready(plugin)
            .await
            .ok_or_else(|| match plugin.version {
                Some(v) => format!("plugin {:?} has no version {v}", plugin.name),
                None => format!("no plugin named {:?} is uploaded", plugin.name),
            })?;
        self.validate_config_with(&loaded, &plugin.config).await
    }

    async fn validate_config_with(
        &self,
        plugin: &LoadedPlugin,
        config: &serde_json::Value,
    ) -> Result<(), String> {
        call_validate_config(&self.runtime, plugin, config).await
    }

    /// The upload's smoke call: the outgoing phase on [`sample::event`], the same event
    /// `hookyard plugin check` uses. Any answer of the plugin passes, an error it returns too
    /// (a plugin may refuse an event it does not handle, or a `null` config); a trap, a timeout,
    /// the memory or output cap fail the upload.
    async fn smoke_test(
        &self,
        plugin: &LoadedPlugin,
        config: &serde_json::Value,
    ) -> Result<(), PluginError> {
        let event = sample::event();
        match self
            .call_outgoing_raw(plugin, Reuse::Fresh, config, sample::webhook(), &event)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(PluginError::Invalid(format!(
                "smoke call (outgoing on the sample {} event) failed: {e}",
                sample::EVENT_TYPE
            ))),
        }
    }

    async fn call_outgoing_raw(
        &self,
        plugin: &LoadedPlugin,
        reuse: Reuse<'_>,
        config: &serde_json::Value,
        hook: types::Webhook,
        event: &Event,
    ) -> Result<Result<types::OutgoingAction, types::PluginError>, CallError> {
        let (result, usage) =
            call_outgoing_with(&self.runtime, plugin, reuse, config, hook, event).await;
        self.observe(plugin, "outgoing", &result, &usage);
        result
    }

    fn observe<T>(
        &self,
        plugin: &LoadedPlugin,
        phase: &'static str,
        result: &Result<T, CallError>,
        usage: &Usage,
    ) {
        self.observer.observe(
            &self.metrics,
            (&plugin.name, plugin.version),
            phase,
            result,
            usage,
        );
    }

    /// Response phase: fields to write back from a third party's answer (none: nothing).
    pub async fn response_fields(
        &self,
        hook: &Webhook,
        event: &Event,
        answer: Answer<'_>,
    ) -> Result<Option<serde_json::Value>, String> {
        let Some(plugin_ref) = &hook.spec.plugin else {
            return Ok(None);
        };
        let (status, headers, body) =
            (answer.status, answer.headers.to_vec(), answer.body.to_vec());
        let plugin = self
            .resolve_ready(plugin_ref)
            .await
            .ok_or_else(|| format!("plugin {:?} is not loaded", plugin_ref.name))?;
        let resp = types::Response {
            status,
            headers,
            body,
        };
        let (result, usage) = call_response_with(
            &self.runtime,
            &plugin,
            self.reuse(hook, plugin_ref, &plugin),
            &plugin_ref.config,
            wit_webhook(hook),
            wit_event(event),
            resp,
        )
        .await;
        self.observe(&plugin, "response", &result, &usage);
        match result.map_err(|e| e.to_string())? {
            Ok(None) => Ok(None),
            Ok(Some(fields)) => serde_json::from_slice(&fields)
                .map(Some)
                .map_err(|e| format!("plugin returned invalid JSON fields: {e}")),
            Err(e) => Err(plugin_error_text(&e)),
        }
    }

    /// Inbound phase: records from a third party's push, or a rejection (status, message).
    pub async fn inbound(
        &self,
        hook: &Webhook,
        request: types::InboundRequest,
    ) -> Result<Vec<InboundRecord>, (u16, String)> {
        let Some(plugin_ref) = &hook.spec.plugin else {
            return Err((500, "the webhook has no plugin".into()));
        };
        let plugin = self
            .resolve_ready(plugin_ref)
            .await
            .ok_or_else(|| (503, format!("plugin {:?} is not loaded", plugin_ref.name)))?;
        let (result, usage) = call_inbound_with(
            &self.runtime,
            &plugin,
            self.reuse(hook, plugin_ref, &plugin),
            &plugin_ref.config,
            wit_webhook(hook),
            request,
        )
        .await;
        self.observe(&plugin, "inbound", &result, &usage);
        match result.map_err(|e| (500, e.to_string()))? {
            Ok(records) => records
                .into_iter()
                .map(|r| {
                    let parse = |b: &[u8]| serde_json::from_slice::<serde_json::Value>(b);
                    match (parse(&r.identifiers), parse(&r.fields)) {
                        (Ok(identifiers), Ok(fields)) => Ok(InboundRecord {
                            entity: r.entity,
                            identifiers,
                            fields,
                        }),
                        _ => Err((500, "plugin returned invalid JSON in a record".to_owned())),
                    }
                })
                .collect(),
            Err(rejection) => Err((rejection.status, rejection.message)),
        }
    }
}

#[async_trait]
impl Shaper for PluginHost {
    async fn response(
        &self,
        hook: &Webhook,
        event: &Event,
        answer: Answer<'_>,
    ) -> Result<Option<serde_json::Value>, String> {
        self.response_fields(hook, event, answer).await
    }

    async fn outgoing(&self, hook: &Webhook, event: &Event) -> Result<Shaped, ShapeError> {
        self.outgoing_traced(hook, event).await.0
    }

    async fn outgoing_traced(
        &self,
        hook: &Webhook,
        event: &Event,
    ) -> (Result<Shaped, ShapeError>, Option<crate::model::PluginUsed>) {
        let Some(plugin_ref) = &hook.spec.plugin else {
            let body = plain_body(hook, event);
            return (Ok(Shaped::Send(vec![OutgoingRequest::json(body)])), None);
        };
        let Some(plugin) = self.resolve_ready(plugin_ref).await else {
            // Not loaded (yet): retrying later is the only sensible thing whatever the policy.
            let error = ShapeError {
                message: format!("plugin {:?} is not loaded", plugin_ref.name),
                action: PluginFailure::Retry,
            };
            return (Err(error), None);
        };
        // The version resolved here is the one called: a swap meanwhile does not change it.
        let used = crate::model::PluginUsed {
            name: plugin.name.clone(),
            version: plugin.version,
        };
        (self.shape_with(&plugin, hook, event).await, Some(used))
    }
}

impl PluginHost {
    /// The outgoing phase with one resolved plugin version.
    async fn shape_with(
        &self,
        plugin: &LoadedPlugin,
        hook: &Webhook,
        event: &Event,
    ) -> Result<Shaped, ShapeError> {
        let Some(plugin_ref) = &hook.spec.plugin else {
            return Ok(Shaped::Send(vec![OutgoingRequest::json(plain_body(
                hook, event,
            ))]));
        };
        let fail = |message: String, action: PluginFailure| ShapeError { message, action };
        let label = format!("{} v{}", plugin.name, plugin.version);
        let reuse = self.reuse(hook, plugin_ref, plugin);
        match self
            .call_outgoing_raw(plugin, reuse, &plugin_ref.config, wit_webhook(hook), event)
            .await
        {
            Ok(Ok(types::OutgoingAction::Send(requests))) => {
                let count = requests.len();
                let checked = requests.into_iter().enumerate().map(|(i, r)| {
                    let request = OutgoingRequest {
                        method: r.method,
                        path: r.path,
                        query: r.query,
                        headers: r.headers,
                        body: Bytes::from(r.body),
                        content_type: r.content_type,
                    };
                    // Output the gateway would not send fails the call, like a trap does.
                    plugin_output::check(hook, request).map_err(|e| {
                        let which = if count > 1 {
                            format!(" request {i}:")
                        } else {
                            String::new()
                        };
                        fail(format!("{label}:{which} {e}"), plugin_ref.on_error)
                    })
                });
                Ok(Shaped::Send(checked.collect::<Result<_, _>>()?))
            }
            Ok(Ok(types::OutgoingAction::Skip(reason))) => Ok(Shaped::Skip(reason)),
            // The plugin says this event cannot be mapped (a required field missing, a value
            // that does not convert): the same event fails the same way on every retry, so it
            // goes dead at once (replayable once the data or the mapping is fixed), unless
            // `on_error` already says not to retry. Traps and limits may be transient, and follow
            // `on_error`.
            Ok(Err(types::PluginError::InvalidInput(m))) => {
                let action = match plugin_ref.on_error {
                    PluginFailure::Retry => PluginFailure::DeadLetter,
                    other => other,
                };
                Err(fail(
                    format!("{label}: invalid input: {m} (not retried: the same event would fail again)"),
                    action,
                ))
            }
            Ok(Err(e)) => Err(fail(
                format!("{label}: {}", plugin_error_text(&e)),
                plugin_ref.on_error,
            )),
            Err(e) => Err(fail(format!("{label}: {e}"), plugin_ref.on_error)),
        }
    }
}

impl runtime::OutputSize for () {
    fn output_size(&self) -> usize {
        0
    }
}

impl<T: runtime::OutputSize, E> runtime::OutputSize for Result<T, E> {
    fn output_size(&self) -> usize {
        self.as_ref().map(|v| v.output_size()).unwrap_or(0)
    }
}

impl runtime::OutputSize for types::OutgoingAction {
    fn output_size(&self) -> usize {
        match self {
            types::OutgoingAction::Send(rs) => rs
                .iter()
                .map(|r| {
                    r.body.len()
                        + r.headers
                            .iter()
                            .map(|(k, v)| k.len() + v.len())
                            .sum::<usize>()
                })
                .sum(),
            types::OutgoingAction::Skip(reason) => reason.len(),
        }
    }
}

impl runtime::OutputSize for Option<Vec<u8>> {
    fn output_size(&self) -> usize {
        self.as_ref().map_or(0, Vec::len)
    }
}

impl runtime::OutputSize for Vec<types::InboundRecord> {
    fn output_size(&self) -> usize {
        self.iter()
            .map(|r| r.identifiers.len() + r.fields.len())
            .sum()
    }
}

fn plugin_error_text(e: &types::PluginError) -> String {
    match e {
        types::PluginError::InvalidConfig(m) => format!("invalid config: {m}"),
        types::PluginError::InvalidInput(m) => format!("invalid input: {m}"),
        types::PluginError::Internal(m) => format!("plugin error: {m}"),
    }
}

fn config_bytes(config: &serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(config).unwrap_or_else(|_| b"null".to_vec())
}

/// The WIT view of an event.
pub fn wit_event(event: &Event) -> types::Event {
    types::Event {
        id: event.id.clone(),
        event_type: event.event_type.clone(),
        occurred_at: rfc3339(event.occurred_at),
        data: event.data.get().as_bytes().to_vec(),
        context: event.context.get().as_bytes().to_vec(),
    }
}

/// The WIT view of a webhook.
pub fn wit_webhook(hook: &Webhook) -> types::Webhook {
    types::Webhook {
        id: hook.id.clone(),
        name: hook.spec.name.clone(),
        url: hook.spec.url.clone(),
        method: hook.spec.method.clone(),
    }
}

/// A plugin name: 1 to 100 of `[A-Za-z0-9._-]`, starting with a letter or digit, so that `.`,
/// `..` and names that look like options or hidden files are refused (names end up in URLs and
/// on command lines).
pub fn valid_name(name: &str) -> bool {
    name.len() <= 100
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Calls the outgoing phase of `plugin` once, on a fresh instance.
pub async fn call_outgoing(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    config: &serde_json::Value,
    hook: types::Webhook,
    event: &Event,
) -> (
    Result<Result<types::OutgoingAction, types::PluginError>, CallError>,
    Usage,
) {
    call_outgoing_with(runtime, plugin, Reuse::Fresh, config, hook, event).await
}

/// Calls the outgoing phase of `plugin` once, on an instance got as `reuse` says.
pub async fn call_outgoing_with(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    reuse: Reuse<'_>,
    config: &serde_json::Value,
    hook: types::Webhook,
    event: &Event,
) -> (
    Result<Result<types::OutgoingAction, types::PluginError>, CallError>,
    Usage,
) {
    let config = config_bytes(config);
    let ev = wit_event(event);
    runtime
        .call_in(&plugin.name, &plugin.pre, reuse.key(plugin), move |p, s| {
            Box::pin(async move {
                p.hookyard_plugin_handler()
                    .call_outgoing(s, &config, &hook, &ev)
                    .await
            })
        })
        .await
}

/// Calls the response phase of `plugin` once, on a fresh instance.
pub async fn call_response(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    config: &serde_json::Value,
    hook: types::Webhook,
    event: types::Event,
    response: types::Response,
) -> (
    Result<Result<Option<Vec<u8>>, types::PluginError>, CallError>,
    Usage,
) {
    call_response_with(runtime, plugin, Reuse::Fresh, config, hook, event, response).await
}

/// Calls the response phase of `plugin` once, on an instance got as `reuse` says.
pub async fn call_response_with(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    reuse: Reuse<'_>,
    config: &serde_json::Value,
    hook: types::Webhook,
    event: types::Event,
    response: types::Response,
) -> (
    Result<Result<Option<Vec<u8>>, types::PluginError>, CallError>,
    Usage,
) {
    let config = config_bytes(config);
    runtime
        .call_in(&plugin.name, &plugin.pre, reuse.key(plugin), move |p, s| {
            Box::pin(async move {
                p.hookyard_plugin_handler()
                    .call_response(s, &config, &hook, &event, &response)
                    .await
            })
        })
        .await
}

/// Calls the inbound phase of `plugin` once, on a fresh instance.
pub async fn call_inbound(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    config: &serde_json::Value,
    hook: types::Webhook,
    request: types::InboundRequest,
) -> (
    Result<Result<Vec<types::InboundRecord>, types::Rejection>, CallError>,
    Usage,
) {
    call_inbound_with(runtime, plugin, Reuse::Fresh, config, hook, request).await
}

/// Calls the inbound phase of `plugin` once, on an instance got as `reuse` says.
pub async fn call_inbound_with(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    reuse: Reuse<'_>,
    config: &serde_json::Value,
    hook: types::Webhook,
    request: types::InboundRequest,
) -> (
    Result<Result<Vec<types::InboundRecord>, types::Rejection>, CallError>,
    Usage,
) {
    let config = config_bytes(config);
    runtime
        .call_in(&plugin.name, &plugin.pre, reuse.key(plugin), move |p, s| {
            Box::pin(async move {
                p.hookyard_plugin_handler()
                    .call_inbound(s, &config, &hook, &request)
                    .await
            })
        })
        .await
}

/// Calls `validate-config` of `plugin` once.
pub async fn call_validate_config(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    config: &serde_json::Value,
) -> Result<(), String> {
    let config = config_bytes(config);
    let (result, _) = runtime
        .call(&plugin.name, &plugin.pre, move |p, s| {
            Box::pin(async move {
                p.hookyard_plugin_handler()
                    .call_validate_config(s, &config)
                    .await
            })
        })
        .await;
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(message)) => Err(message),
        Err(e) => Err(e.to_string()),
    }
}

/// Loads a component file outside any gateway, for `hookyard plugin check` and `plugin test`:
/// from the runtime's cache when these bytes were compiled before (the cache is keyed by
/// content hash), so an unchanged component is not compiled again
/// ([`Runtime::compilations`] tells whether it was).
pub fn load_file(runtime: &Runtime, path: &Path) -> Result<LoadedPlugin, String> {
    let wasm = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let sha256 = hex(&Sha256::digest(&wasm));
    let compiled = runtime.load(&wasm, &sha256).map_err(|e| e.to_string())?;
    Ok(LoadedPlugin {
        name: path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default(),
        version: 0,
        sha256,
        id: next_load_id(),
        instances: compiled.instances,
        pre: compiled.pre,
    })
}

#[cfg(test)]
mod tests;
