//! The engine the local plugin commands share, and their inputs.
//!
//! Compiled code is cached on disk by the component's sha256 and the engine's compatibility hash
//! (the gateway's own cache format), in `HOOKYARD_CACHE_DIR`, else `$XDG_CACHE_HOME/hookyard`,
//! else `~/.cache/hookyard`: `plugin check` and `plugin test` on an unchanged component load it
//! instead of compiling again (a Python component: ~0.2 s instead of 15-30 s). The newest
//! [`CACHE_KEEP`] components are kept; older ones are removed.

use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::Context as _;
use hookyard::model::{now_ms, Event, Json, NewEvent};
use hookyard::plugin::{self, bindings::types, LoadedPlugin, Runtime};

/// Compiled components kept in the local cache.
const CACHE_KEEP: usize = 16;

/// A component loaded for a local command.
pub(super) struct Local {
    pub(super) runtime: Runtime,
    pub(super) plugin: LoadedPlugin,
    /// Whether this run had to compile (false: loaded from the cache).
    pub(super) compiled: bool,
    /// Time to compile or load.
    pub(super) load_ms: u128,
}

impl Local {
    /// `component: PATH (sha256 ...), compiled in N ms` or `..., loaded from the cache in N ms`.
    pub(super) fn describe(&self, file: &Path) -> String {
        format!(
            "component: {} (sha256 {}), {} in {} ms",
            file.display(),
            self.plugin.sha256,
            if self.compiled {
                "compiled"
            } else {
                "loaded from the cache"
            },
            self.load_ms
        )
    }
}

/// Runs a future to completion on a single-threaded runtime (the local commands make one call
/// at a time).
pub(super) fn block_on<F: std::future::Future>(future: F) -> anyhow::Result<F::Output> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(future))
}

/// The local compiled-code cache directory.
pub(super) fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOOKYARD_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("hookyard").join("plugins")
}

/// Loads `file` with the gateway's default limits: from the cache when these bytes were
/// compiled before. `Err` with the reason when it is not a valid plugin.
pub(super) fn load(file: &Path) -> anyhow::Result<Result<Local, String>> {
    let mut limits = hookyard::config::Config::default().plugins;
    // No live traffic to protect here: compile with every core at normal priority.
    limits.compile_nice = 0;
    limits.compile_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let dir = cache_dir();
    let runtime = Runtime::new(&limits, &dir).context("starting the WebAssembly engine")?;
    if !file.is_file() {
        anyhow::bail!("{}: no such component file", file.display());
    }
    let started = Instant::now();
    let plugin = match plugin::load_file(&runtime, file) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    let load_ms = started.elapsed().as_millis();
    let compiled = runtime.compilations() > 0;
    touch_and_prune(&runtime.cache_path(&plugin.sha256), &dir);
    Ok(Ok(Local {
        runtime,
        plugin,
        compiled,
        load_ms,
    }))
}

/// Marks `used` as the newest cache entry and removes all but the newest [`CACHE_KEEP`].
/// Best effort: a cache that cannot be tidied only costs disk space.
fn touch_and_prune(used: &Path, dir: &Path) {
    if let Ok(f) = std::fs::File::options().append(true).open(used) {
        let _ = f.set_modified(SystemTime::now());
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut files: Vec<(SystemTime, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    files.sort_by_key(|f| std::cmp::Reverse(f.0));
    for (_, path) in files.into_iter().skip(CACHE_KEEP) {
        let _ = std::fs::remove_file(path);
    }
}

/// Reads a JSON file.
pub(super) fn read_json(path: &Path) -> anyhow::Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
}

/// An event as posted to `/v1/events`, as the gateway hands it to a plugin.
pub(super) fn event(value: serde_json::Value, what: &str) -> anyhow::Result<Event> {
    let new: NewEvent = serde_json::from_value(value).with_context(|| {
        format!("{what} is not an event (type, data, context?, id?, occurred_at?)")
    })?;
    let now = now_ms();
    Ok(Event {
        id: new.id.unwrap_or_else(|| "evt_sample".into()),
        event_type: new.event_type,
        data: new.data,
        context: new.context.unwrap_or_else(Json::null),
        occurred_at: new
            .occurred_at
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(now),
        received_at: now,
    })
}

/// Headers given as an object (`{"name": "value"}`) or as pairs (`[["name", "value"]]`).
fn headers(value: Option<&serde_json::Value>, what: &str) -> anyhow::Result<types::Headers> {
    match value {
        None | Some(serde_json::Value::Null) => Ok(Vec::new()),
        Some(serde_json::Value::Object(map)) => map
            .iter()
            .map(|(k, v)| match v.as_str() {
                Some(s) => Ok((k.clone(), s.to_owned())),
                None => anyhow::bail!("{what}: header {k:?} is not a string"),
            })
            .collect(),
        Some(v) => serde_json::from_value(v.clone())
            .with_context(|| format!("{what}: headers are an object or [name, value] pairs")),
    }
}

/// A body given as a JSON string (sent as its text, exactly) or any other JSON value (sent as
/// compact JSON); none: empty.
fn body(value: Option<&serde_json::Value>) -> Vec<u8> {
    match value {
        None => Vec::new(),
        Some(serde_json::Value::String(s)) => s.as_bytes().to_vec(),
        Some(v) => v.to_string().into_bytes(),
    }
}

/// A third party's answer: `{"status", "headers"?, "body"?}`.
pub(super) fn response(value: &serde_json::Value, what: &str) -> anyhow::Result<types::Response> {
    let status = value
        .get("status")
        .and_then(serde_json::Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .with_context(|| format!("{what}: `status` (a number) is required"))?;
    Ok(types::Response {
        status,
        headers: headers(value.get("headers"), what)?,
        body: body(value.get("body")),
    })
}

/// A third party's push: `{"method"?, "path"?, "query"?, "headers"?, "body"?}`.
pub(super) fn inbound_request(
    value: &serde_json::Value,
    what: &str,
) -> anyhow::Result<types::InboundRequest> {
    let text = |key: &str, default: &str| {
        value
            .get(key)
            .and_then(serde_json::Value::as_str)
            .unwrap_or(default)
            .to_owned()
    };
    let headers = headers(value.get("headers"), what)?;
    let content_type = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.clone())
        .or_else(|| Some("application/json".into()));
    Ok(types::InboundRequest {
        method: text("method", "POST"),
        path: text("path", "/v1/inbound/sample"),
        query: text("query", ""),
        headers,
        body: body(value.get("body")),
        content_type,
    })
}
