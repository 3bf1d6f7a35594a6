//! The WebAssembly runtime: one engine, compiled components, and sandboxed calls.
//!
//! One process-wide [`Engine`] with the component model, the pooling allocator, copy-on-write
//! memory images and epoch interruption (a ticker thread bumps the epoch every
//! [`EPOCH_TICK`]). A component is compiled once and its native code cached on disk under its
//! sha256 and the engine's compatibility hash, so a restart deserialises instead of compiling.
//!
//! A call runs on a fresh [`Store`] from the component's `InstancePre`, or on a warm instance
//! of the same plugin version and webhook ([`super::warm`]: the isolation rules are there).
//! Either way every call gets a memory cap enforced by [`CallLimiter`] (over the instance's
//! whole linear memory), its own wall-clock deadline checked at every epoch tick, a cap on the
//! output size, a bounded log budget and an empty stdout/stderr buffer. A trap, a timeout or
//! memory exhaustion fails that one call with a [`CallError`] and the instance is dropped.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config as WasmConfig, Engine, InstanceAllocationStrategy, PoolingAllocationConfig,
    ResourceLimiter, Store, Trap, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, log::Level, Plugin, PluginPre};
use super::compile::CompilePool;
use super::output::GuestOutput;
use super::warm::{Instance, PoolStats, WarmKey, WarmPool};
use crate::config::PluginsConfig;
use crate::model::Instances;

/// How often the epoch advances; deadlines are checked this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Longest log message kept; longer ones are cut.
const LOG_MESSAGE_MAX: usize = 1024;
/// Log bytes one call may write; the rest is dropped and counted.
const LOG_BUDGET: usize = 16 * 1024;
/// Guest stdout and stderr kept per call (both go to one buffer, in the order written). Past it
/// the streams report closed to the guest: a chatty guest cannot grow the host's memory.
const GUEST_OUTPUT_MAX: usize = 64 * 1024;
/// The end of the guest's output carried into a failed call's error: a Python traceback or a
/// JavaScript stack ends with the exception, which is what an author needs to see.
pub const GUEST_OUTPUT_IN_ERROR: usize = 4 * 1024;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Not a WebAssembly component (or a precompiled artifact, which is never accepted).
    #[error("not a WebAssembly component: {0}")]
    NotAComponent(String),
    /// The component does not implement the `hookyard:plugin` world.
    #[error("the component does not implement hookyard:plugin/plugin@0.1.0: {0}")]
    WrongWorld(String),
    /// Compiling or caching failed.
    #[error("compiling the component failed: {0}")]
    Compile(String),
}

/// Why one call failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// The guest trapped (panic, unreachable, out-of-bounds access, an uncaught Python or
    /// JavaScript exception...). The text ends with the tail of what the guest wrote to stderr
    /// and stdout (the traceback), when it wrote anything.
    #[error("plugin trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline.
    #[error("plugin exceeded its time limit of {0} ms")]
    Timeout(u64),
    /// The guest tried to grow its memory past the cap.
    #[error("plugin exceeded its memory limit of {0} bytes")]
    Memory(usize),
    /// The guest returned more than the output cap.
    #[error("plugin output of {0} bytes exceeds the limit of {1} bytes")]
    OutputTooLarge(usize, usize),
    /// Every call slot is busy and none freed up in time.
    #[error("no plugin call slot free")]
    Busy,
}

impl CallError {
    /// The label of `hookyard_plugin_calls_total`.
    pub fn label(&self) -> &'static str {
        match self {
            CallError::Trap(_) => "trap",
            CallError::Timeout(_) => "timeout",
            CallError::Memory(_) => "memory",
            CallError::OutputTooLarge(..) => "output_too_large",
            CallError::Busy => "busy",
        }
    }
}

/// Per-store memory accounting: refuses growth past the cap and remembers the peak.
pub struct CallLimiter {
    max_memory: usize,
    /// Sum of all linear memories' current sizes.
    total: usize,
    /// Highest `total` seen.
    pub peak: usize,
    /// Set when a growth was refused.
    pub hit_cap: bool,
}

impl CallLimiter {
    /// Sum of the instance's linear memories' current sizes.
    pub fn total(&self) -> usize {
        self.total
    }
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let next = self.total - current.min(self.total) + desired;
        if next > self.max_memory {
            self.hit_cap = true;
            return Ok(false);
        }
        self.total = next;
        self.peak = self.peak.max(next);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }

    fn instances(&self) -> usize {
        1000
    }
    fn tables(&self) -> usize {
        1000
    }
    fn memories(&self) -> usize {
        100
    }
}

/// What a store holds for one call.
pub struct CallState {
    /// Memory accounting.
    pub limiter: CallLimiter,
    /// Built on the guest's first WASI call: a call that makes none (field-map's outgoing phase,
    /// any plugin built without WASI imports) does not pay for it.
    wasi: Option<WasiCtx>,
    table: ResourceTable,
    /// Which plugin, for log lines.
    plugin: Arc<str>,
    log_left: usize,
    /// Log messages dropped once the budget was spent.
    pub logs_dropped: u64,
    /// The guest's stdout and stderr, capped at [`GUEST_OUTPUT_MAX`] per call.
    output: GuestOutput,
    /// The `log` lines of this call, in order (within the log budget).
    logs: Vec<LogLine>,
}

impl CallState {
    fn new(plugin: &str, max_memory: usize) -> CallState {
        CallState {
            limiter: CallLimiter {
                max_memory,
                total: 0,
                peak: 0,
                hit_cap: false,
            },
            wasi: None,
            table: ResourceTable::new(),
            plugin: Arc::from(plugin),
            log_left: LOG_BUDGET,
            logs_dropped: 0,
            output: GuestOutput::new(GUEST_OUTPUT_MAX),
            logs: Vec::new(),
        }
    }

    /// Resets what is per call: the log budget and lines, the peak and cap flag of the memory
    /// accounting (the memories themselves, and their total, persist in a warm instance), and
    /// the guest's output.
    fn begin_call(&mut self) {
        self.log_left = LOG_BUDGET;
        self.logs_dropped = 0;
        self.logs.clear();
        self.limiter.peak = self.limiter.total;
        self.limiter.hit_cap = false;
        self.output.take();
    }
}

/// One line a plugin wrote with the `log` import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// `trace`, `debug`, `info`, `warn` or `error`.
    pub level: &'static str,
    /// The message (cut at 1 KiB).
    pub message: String,
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        let output = &self.output;
        WasiCtxView {
            ctx: self.wasi.get_or_insert_with(|| {
                WasiCtx::builder()
                    .stdout(output.clone())
                    .stderr(output.clone())
                    .build()
            }),
            table: &mut self.table,
        }
    }
}

impl bindings::log::Host for CallState {
    fn log(&mut self, level: Level, message: String) {
        let mut message = message;
        if message.len() > LOG_MESSAGE_MAX {
            let mut cut = LOG_MESSAGE_MAX;
            while !message.is_char_boundary(cut) {
                cut -= 1;
            }
            message.truncate(cut);
        }
        if message.len() > self.log_left {
            self.logs_dropped += 1;
            return;
        }
        self.log_left -= message.len();
        let plugin = &*self.plugin;
        let level = match level {
            Level::Trace => {
                tracing::trace!(plugin, "{message}");
                "trace"
            }
            Level::Debug => {
                tracing::debug!(plugin, "{message}");
                "debug"
            }
            Level::Info => {
                tracing::info!(plugin, "{message}");
                "info"
            }
            Level::Warn => {
                tracing::warn!(plugin, "{message}");
                "warn"
            }
            Level::Error => {
                tracing::error!(plugin, "{message}");
                "error"
            }
        };
        self.logs.push(LogLine { level, message });
    }
}

impl bindings::types::Host for CallState {}

/// A compiled component, ready to instantiate.
pub struct Compiled {
    /// Instantiation with imports resolved and exports type-checked.
    pub pre: PluginPre<CallState>,
    /// Whether this load had to compile (false: the cached artifact was used).
    pub compiled_now: bool,
    /// What the component asks for (its `hookyard-instances` custom section).
    pub instances: Instances,
}

/// Resource use and output of one call, for `plugin check` and metrics.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Wall time, instantiation included.
    pub duration: Duration,
    /// Peak linear memory.
    pub peak_memory: usize,
    /// What the plugin logged with the `log` import.
    pub logs: Vec<LogLine>,
    /// What the guest wrote to stdout and stderr (capped; lossy UTF-8).
    pub guest_output: String,
    /// Whether the call ran on a warm instance that served an earlier call.
    pub reused: bool,
}

/// The engine and what every call shares.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    limits: PluginsConfig,
    cache_dir: PathBuf,
    compat: String,
    slots: Arc<Semaphore>,
    compilations: AtomicU64,
    compiler: CompilePool,
    warm: Arc<WarmPool>,
}

impl Runtime {
    /// Builds the engine (pooling allocator when the address space allows it), the linker with
    /// WASI (no files, no environment, no network) and the `log` import, and the epoch ticker.
    pub fn new(limits: &PluginsConfig, cache_dir: &Path) -> Result<Runtime, LoadError> {
        let engine = match Engine::new(&engine_config(limits, true)) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "pooling allocator unavailable; instantiating on demand");
                Engine::new(&engine_config(limits, false))
                    .map_err(|e| LoadError::Compile(e.to_string()))?
            }
        };
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)
            .map_err(|e| LoadError::Compile(e.to_string()))?;
        Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Compile(e.to_string()))?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("hookyard-epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => break,
                }
            })
            .map_err(|e| LoadError::Compile(e.to_string()))?;
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let compat = format!("{:016x}", hasher.finish());
        Ok(Runtime {
            engine,
            linker,
            limits: limits.clone(),
            cache_dir: cache_dir.to_owned(),
            compat,
            slots: Arc::new(Semaphore::new(limits.max_concurrent_calls)),
            compilations: AtomicU64::new(0),
            compiler: CompilePool::new(limits.compile_threads, limits.compile_nice)
                .map_err(LoadError::Compile)?,
            warm: WarmPool::new(&limits.instances),
        })
    }

    /// Whether warm instances are allowed at all (`plugins.instances.mode`).
    pub fn warm_enabled(&self) -> bool {
        self.limits.instances.mode == Instances::Warm
    }

    /// Counters of the warm instance pool.
    pub fn pool_stats(&self) -> PoolStats {
        self.warm.stats()
    }

    /// Drops the idle warm instances of the loaded plugin versions `retired` selects (by
    /// [`LoadedPlugin::id`](super::LoadedPlugin::id)).
    pub fn retire_instances(&self, retired: impl Fn(u64) -> bool) {
        self.warm.retire(retired);
    }

    /// Drops idle warm instances past `idle_secs` or `max_age_secs` now (a thread does it
    /// every so often anyway).
    pub fn sweep_instances(&self) {
        self.warm.sweep();
    }

    /// How many components this runtime compiled (cache hits excluded).
    pub fn compilations(&self) -> u64 {
        self.compilations.load(Ordering::Relaxed)
    }

    /// Compiles `wasm` (or loads its cached artifact) and checks it against the world.
    /// Blocking: call from `spawn_blocking`. The compile itself runs on the compile pool
    /// ([`CompilePool`]); errors never name server paths (they reach uploaders), the log does.
    pub fn load(&self, wasm: &[u8], sha256: &str) -> Result<Compiled, LoadError> {
        if !wasmparser_is_component(wasm) {
            return Err(LoadError::NotAComponent(
                "expected a component binary (a core module, a precompiled artifact or other bytes were given)".into(),
            ));
        }
        let path = self.cache_path(sha256);
        let mut compiled_now = false;
        if !path.exists() {
            let artifact = self
                .compiler
                .install(|| self.engine.precompile_component(wasm))
                .map_err(|e| LoadError::NotAComponent(format!("{e:#}")))?;
            std::fs::create_dir_all(&self.cache_dir)
                .map_err(|e| cache_failure("creating", &self.cache_dir, &e))?;
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            std::fs::write(&tmp, &artifact)
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    cache_failure("writing", &path, &e)
                })?;
            self.compilations.fetch_add(1, Ordering::Relaxed);
            compiled_now = true;
        }
        let checked = self.instantiate_pre(&path);
        if checked.is_err() && compiled_now {
            // Nothing will ever load a component that does not fit the world: keep no file.
            self.forget(sha256);
        }
        let instances = super::warm::declared_instances(wasm);
        checked.map(|pre| Compiled {
            pre,
            compiled_now,
            instances,
        })
    }

    fn instantiate_pre(&self, path: &Path) -> Result<PluginPre<CallState>, LoadError> {
        let component = deserialize(&self.engine, path)?;
        component
            .initialize_copy_on_write_image()
            .map_err(|e| LoadError::Compile(format!("{e:#}")))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        super::exports::check(&self.engine, &component).map_err(LoadError::WrongWorld)?;
        PluginPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))
    }

    /// Where the compiled code of the component with this sha256 is cached.
    pub fn cache_path(&self, sha256: &str) -> PathBuf {
        self.cache_dir
            .join(format!("{sha256}-{}.cwasm", self.compat))
    }

    /// Removes the cached compiled code of a component (one that was rejected: nothing loads it).
    pub fn forget(&self, sha256: &str) {
        let path = self.cache_path(sha256);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove a rejected plugin's compiled code")
            }
        }
    }

    /// Runs `f` on a fresh instance of `pre` under the call limits.
    pub async fn call<R, F>(
        &self,
        plugin: &str,
        pre: &PluginPre<CallState>,
        f: F,
    ) -> (Result<R, CallError>, Usage)
    where
        R: OutputSize,
        F: for<'a> FnOnce(
            &'a Plugin,
            &'a mut Store<CallState>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
    {
        self.call_in(plugin, pre, None, f).await
    }

    /// Runs `f` under the call limits on a warm instance of `key` when one is parked (else a
    /// fresh one, parked afterwards if the call ended well), or on a fresh instance dropped
    /// after the call when `key` is `None` or warm instances are off.
    pub async fn call_in<R, F>(
        &self,
        plugin: &str,
        pre: &PluginPre<CallState>,
        key: Option<WarmKey>,
        f: F,
    ) -> (Result<R, CallError>, Usage)
    where
        R: OutputSize,
        F: for<'a> FnOnce(
            &'a Plugin,
            &'a mut Store<CallState>,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = wasmtime::Result<R>> + Send + 'a>,
        >,
    {
        let started = Instant::now();
        let timeout_ms = self.limits.timeout_ms;
        let _slot = match tokio::time::timeout(
            Duration::from_millis(timeout_ms),
            self.slots.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(slot)) => slot,
            _ => return (Err(CallError::Busy), Usage::default()),
        };
        let mut key = key.filter(|_| self.warm_enabled());
        let max_memory = self.limits.memory_limit_mb * 1024 * 1024;
        let parked = key.as_ref().and_then(|k| self.warm.take(k));
        let reused = parked.is_some();
        let (mut store, instance, calls, born) = match parked {
            Some(i) => (i.store, Some(i.plugin), i.calls, i.born),
            None => {
                let mut store = Store::new(&self.engine, CallState::new(plugin, max_memory));
                store.limiter(|s| &mut s.limiter);
                (store, None, 0, started)
            }
        };
        store.data_mut().begin_call();
        let deadline = started + Duration::from_millis(timeout_ms);
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let result = async {
            let instance = match instance {
                Some(instance) => instance,
                None => pre.instantiate_async(&mut store).await?,
            };
            let value = f(&instance, &mut store).await?;
            Ok::<_, wasmtime::Error>((instance, value))
        };
        // Epochs cannot interrupt time spent in host calls; the outer timeout covers that.
        // Should this future be dropped mid-call, the instance goes with it, never back to
        // the pool.
        let result =
            tokio::time::timeout(Duration::from_millis(timeout_ms) + EPOCH_TICK * 4, result).await;
        let duration = started.elapsed();
        let data = store.data_mut();
        let (output, output_full) = data.output.take();
        let usage = Usage {
            duration,
            peak_memory: data.limiter.peak,
            logs: std::mem::take(&mut data.logs),
            guest_output: String::from_utf8_lossy(&output).into_owned(),
            reused,
        };
        let hit_cap = data.limiter.hit_cap;
        let memory = data.limiter.total;
        let result = match result {
            Err(_) => Err(CallError::Timeout(timeout_ms)),
            Ok(Ok((instance, value))) => {
                let size = value.output_size();
                if size > self.limits.max_output_bytes {
                    Err(CallError::OutputTooLarge(
                        size,
                        self.limits.max_output_bytes,
                    ))
                } else {
                    // A guest that hit the memory cap but carried on, or whose output was cut,
                    // may be in a state it did not plan for: not worth keeping.
                    let key = if hit_cap || output_full {
                        None
                    } else {
                        key.take()
                    };
                    if let Some(key) = key {
                        let instance = Instance {
                            store,
                            plugin: instance,
                            calls: calls + 1,
                            born,
                        };
                        self.warm.put(key, instance, memory);
                        return (Ok(value), usage);
                    }
                    Ok(value)
                }
            }
            Ok(Err(e)) => Err(classify(
                e,
                hit_cap,
                timeout_ms,
                max_memory,
                &usage.guest_output,
            )),
        };
        if key.is_some() {
            self.warm.failed();
        }
        (result, usage)
    }
}

/// Maps a wasmtime error of a call to why it failed. A trap's text is the trap itself (not the
/// wasm backtrace, which names offsets only wasmtime can read) followed by the end of what the
/// guest wrote: where Python's traceback and JavaScript's error and stack go.
fn classify(
    e: wasmtime::Error,
    hit_cap: bool,
    timeout_ms: u64,
    max_memory: usize,
    guest_output: &str,
) -> CallError {
    let trap = e.downcast_ref::<Trap>();
    if let Some(Trap::Interrupt) = trap {
        return CallError::Timeout(timeout_ms);
    }
    if hit_cap {
        return CallError::Memory(max_memory);
    }
    let mut text = match trap {
        Some(trap) => trap.to_string(),
        None => format!("{e:#}")
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("unknown")
            .trim_end_matches(':')
            .to_owned(),
    };
    let output = tail(guest_output.trim(), GUEST_OUTPUT_IN_ERROR);
    if !output.is_empty() {
        text.push_str("; guest output:\n");
        text.push_str(output);
    }
    CallError::Trap(text)
}

/// The last `max` bytes of `text`, cut at a character boundary.
fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Sizes of what a plugin returns, checked against `max_output_bytes`.
pub trait OutputSize {
    /// Bytes of payload returned.
    fn output_size(&self) -> usize;
}

fn engine_config(limits: &PluginsConfig, pooling: bool) -> WasmConfig {
    let mut config = WasmConfig::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.memory_init_cow(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        // Busy instances are bounded by the call slots, parked ones by the pool.
        let warm = match limits.instances.mode {
            Instances::Warm => limits.instances.idle_total,
            Instances::Fresh => 0,
        };
        let n = (limits.max_concurrent_calls + warm) as u32;
        let memory = limits.memory_limit_mb * 1024 * 1024;
        let mut pool = PoolingAllocationConfig::new();
        pool.total_component_instances(n)
            .total_core_instances(n * 16)
            .total_memories(n * 4)
            .total_tables(n * 8)
            .total_stacks(n)
            .max_core_instances_per_component(64)
            .max_memories_per_component(8)
            .max_tables_per_component(16)
            .max_component_instance_size(4 << 20)
            .max_core_instance_size(4 << 20)
            .table_elements(100_000)
            .max_memory_size(memory)
            // Resetting a slot's memory is most of a small call's cost: keep the first pages
            // resident (reset with memset) and let the kernel report dirty pages (Linux 6.7+).
            .linear_memory_keep_resident(2 << 20)
            .table_keep_resident(256 << 10)
            .async_stack_keep_resident(256 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto)
            // Warm slots keep those pages: bound how many, so idle memory stays small.
            .max_unused_warm_slots(n.min(16));
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        // Each slot keeps wasmtime's default 4 GiB reservation (address space only; the cap above
        // still bounds what a call can use): with the whole 32-bit range reserved plus a guard,
        // compiled code needs no bounds check on memory accesses. Reserving only the cap made every
        // load and store check its bounds: field-map calls were ~11 % slower (docs/BENCHMARKS.md).
        // With the default 64 call slots (4 memories each) that is ~1 TiB of the 128 TiB of
        // address space; should the reservation fail, `Runtime::new` falls back to on-demand.
    }
    config
}

/// Whether `bytes` start with the component-model binary header (and are not a precompiled
/// artifact, which is native code and never accepted from users).
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    // Magic `\0asm`, then version 0x0d and layer 0x01 for components.
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// Loads an artifact this runtime wrote.
#[allow(unsafe_code)]
fn deserialize(engine: &Engine, path: &Path) -> Result<Component, LoadError> {
    // SAFETY: the file is one this process (or an earlier run with the same engine
    // compatibility hash) produced with `Engine::precompile_component` from a validated
    // component, in a directory only hookyard writes, and it is never modified in place.
    unsafe { Component::deserialize_file(engine, path) }.map_err(|e| {
        tracing::error!(path = %path.display(), error = format!("{e:#}"), "cannot load compiled plugin code");
        LoadError::Compile("the compiled code could not be loaded (the gateway log says why)".into())
    })
}

/// A cache file could not be written: the path and the OS error go to the log, the caller (an
/// uploader, who has no business knowing server paths) gets a generic message.
fn cache_failure(doing: &str, path: &Path, e: &std::io::Error) -> LoadError {
    tracing::error!(path = %path.display(), error = %e, "{doing} the plugin code cache failed");
    LoadError::Compile(
        "the compiled code could not be cached on the server (the gateway log says why)".into(),
    )
}
