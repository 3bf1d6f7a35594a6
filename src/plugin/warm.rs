//! Warm instances: plugin instances kept after a call and reused by the next call of the same
//! plugin version for the same webhook.
//!
//! Instantiating a component is most of a small plugin's call (field-map) and all of a
//! Python or JavaScript plugin's start-up cost (its interpreter's heap is rebuilt from the
//! memory image), so the [`Runtime`](super::Runtime) parks an instance here after a call that
//! ended well and takes it back for the next call with the same [`WarmKey`]. This is what
//! wasmtime's `serve` and Spin do for WASIp3 handlers (reuse count, idle timeout), with the
//! rules a webhook gateway needs written down and enforced:
//!
//! - **One key, one owner.** A key is one loaded plugin version (its [`LoadedPlugin`] id, new
//!   for every load) and one webhook id. An instance never serves another webhook, nor another
//!   version: a version change makes a new key, and the host retires the old version's idle
//!   instances when the active pointer moves ([`WarmPool::retire`]).
//! - **Discarded, never parked**, after a trap, a timeout, a memory-cap hit, an output over
//!   the cap (of the result or of stdout/stderr), or a cancelled call; after
//!   `max_calls` calls or `max_age_secs`; and when the pool is full.
//! - **Limits per call.** Every call gets a new deadline (epoch), a new log budget and an
//!   empty output buffer; the memory cap applies to the instance's total linear memory, which
//!   persists between calls (so a plugin may cache its parsed config there).
//! - **Bounded.** At most `idle_per_webhook` idle instances per key, `idle_total` in all and
//!   `idle_memory_mb` of linear memory among them; an idle instance unused for `idle_secs` is
//!   dropped by a sweeper thread. Busy instances are bounded by the call slots. The pooling
//!   allocator is sized for both ([`super::runtime`]).
//!
//! [`LoadedPlugin`]: super::LoadedPlugin

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::Plugin;
use super::runtime::CallState;
use crate::config::InstancesConfig;

/// Which instances may serve a call: one loaded plugin version for one webhook.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WarmKey {
    /// The [`LoadedPlugin::id`](super::LoadedPlugin::id) of the version.
    pub plugin: u64,
    /// The webhook's id.
    pub webhook: Arc<str>,
}

/// An instantiated plugin and its store, between calls.
pub(crate) struct Instance {
    pub(crate) store: Store<CallState>,
    pub(crate) plugin: Plugin,
    /// Calls it served.
    pub(crate) calls: u32,
    pub(crate) born: Instant,
}

/// Why an instance was not kept after a call (the label of the discard counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// The call trapped, timed out, hit the memory cap or an output cap, or was cancelled.
    Failed,
    /// It served `max_calls` calls.
    Calls,
    /// It is older than `max_age_secs`.
    Age,
    /// The pool was full (per key, in all, or by memory).
    Full,
    /// Idle longer than `idle_secs`.
    Idle,
    /// Its plugin version is no longer the one its webhook uses.
    Retired,
}

const DISCARDS: [Discard; 6] = [
    Discard::Failed,
    Discard::Calls,
    Discard::Age,
    Discard::Full,
    Discard::Idle,
    Discard::Retired,
];

/// Counters of the pool, for tests, benches and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Instances parked now.
    pub idle: usize,
    /// Their linear memory, in bytes.
    pub idle_bytes: usize,
    /// Calls that made a new instance (warm calls only; fresh calls are not counted).
    pub created: u64,
    /// Calls served by a parked instance.
    pub reused: u64,
    /// Instances discarded, by reason (in the order of [`Discard`]'s variants).
    pub discarded: [u64; 6],
}

impl PoolStats {
    /// Instances discarded for `why`.
    pub fn discarded(&self, why: Discard) -> u64 {
        DISCARDS
            .iter()
            .position(|d| *d == why)
            .map_or(0, |i| self.discarded[i])
    }
}

struct Parked {
    instance: Instance,
    since: Instant,
    bytes: usize,
}

#[derive(Default)]
struct Idle {
    by_key: HashMap<WarmKey, Vec<Parked>>,
    count: usize,
    bytes: usize,
}

impl Idle {
    /// Removes the parked instances `drop_it` selects; returns them (to be dropped outside the
    /// lock: dropping a store resets its pool slot).
    fn remove_where(&mut self, mut drop_it: impl FnMut(&WarmKey, &Parked) -> bool) -> Vec<Parked> {
        let mut removed = Vec::new();
        self.by_key.retain(|key, parked| {
            let mut i = 0;
            while i < parked.len() {
                if drop_it(key, &parked[i]) {
                    removed.push(parked.swap_remove(i));
                } else {
                    i += 1;
                }
            }
            !parked.is_empty()
        });
        for p in &removed {
            self.count -= 1;
            self.bytes -= p.bytes;
        }
        removed
    }
}

/// The idle instances, by key.
pub(crate) struct WarmPool {
    limits: InstancesConfig,
    idle: Mutex<Idle>,
    created: AtomicU64,
    reused: AtomicU64,
    discarded: [AtomicU64; 6],
}

impl WarmPool {
    pub(crate) fn new(limits: &InstancesConfig) -> Arc<WarmPool> {
        let pool = Arc::new(WarmPool {
            limits: limits.clone(),
            idle: Mutex::new(Idle::default()),
            created: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            discarded: Default::default(),
        });
        spawn_sweeper(Arc::downgrade(&pool), limits.idle_secs);
        pool
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        self.idle.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count(&self, why: Discard, n: usize) {
        if let Some(i) = DISCARDS.iter().position(|d| *d == why) {
            self.discarded[i].fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    /// A parked instance of `key` (the most recently parked: its pages are the likeliest to be
    /// resident), if there is one still young enough.
    pub(crate) fn take(&self, key: &WarmKey) -> Option<Instance> {
        let now = Instant::now();
        let max_age = Duration::from_secs(self.limits.max_age_secs);
        let mut too_old = Vec::new();
        let found = {
            let mut idle = self.lock();
            let mut found = None;
            if let Some(parked) = idle.by_key.get_mut(key) {
                while let Some(p) = parked.pop() {
                    if now.duration_since(p.instance.born) >= max_age {
                        too_old.push(p);
                        continue;
                    }
                    found = Some(p);
                    break;
                }
                if parked.is_empty() {
                    idle.by_key.remove(key);
                }
            }
            for p in too_old.iter().chain(found.iter()) {
                idle.count -= 1;
                idle.bytes -= p.bytes;
            }
            found
        };
        self.count(Discard::Age, too_old.len());
        drop(too_old);
        match found {
            Some(p) => {
                self.reused.fetch_add(1, Ordering::Relaxed);
                Some(p.instance)
            }
            None => {
                self.created.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Parks an instance after a call that ended well, unless it is spent or the pool is full.
    pub(crate) fn put(&self, key: WarmKey, instance: Instance, bytes: usize) {
        let why = if instance.calls >= self.limits.max_calls {
            Some(Discard::Calls)
        } else if instance.born.elapsed() >= Duration::from_secs(self.limits.max_age_secs) {
            Some(Discard::Age)
        } else {
            None
        };
        if let Some(why) = why {
            self.count(why, 1);
            return;
        }
        let budget = self.limits.idle_memory_mb * 1024 * 1024;
        let mut idle = self.lock();
        let here = idle.by_key.get(&key).map_or(0, Vec::len);
        if here >= self.limits.idle_per_webhook
            || idle.count >= self.limits.idle_total
            || idle.bytes + bytes > budget
        {
            drop(idle);
            self.count(Discard::Full, 1);
            return;
        }
        idle.count += 1;
        idle.bytes += bytes;
        idle.by_key.entry(key).or_default().push(Parked {
            instance,
            since: Instant::now(),
            bytes,
        });
    }

    /// Counts an instance thrown away after a failed or cancelled call.
    pub(crate) fn failed(&self) {
        self.count(Discard::Failed, 1);
    }

    /// Drops the idle instances of the plugin versions `retired` names.
    pub(crate) fn retire(&self, retired: impl Fn(u64) -> bool) {
        let removed = self.lock().remove_where(|key, _| retired(key.plugin));
        self.count(Discard::Retired, removed.len());
    }

    /// Drops instances idle for `idle_secs` or older than `max_age_secs`.
    pub(crate) fn sweep(&self) {
        let now = Instant::now();
        let idle_for = Duration::from_secs(self.limits.idle_secs);
        let max_age = Duration::from_secs(self.limits.max_age_secs);
        let mut aged = 0;
        let removed = self.lock().remove_where(|_, p| {
            let old = now.duration_since(p.instance.born) >= max_age;
            aged += usize::from(old);
            old || now.duration_since(p.since) >= idle_for
        });
        self.count(Discard::Age, aged);
        self.count(Discard::Idle, removed.len() - aged);
    }

    pub(crate) fn stats(&self) -> PoolStats {
        let (idle, idle_bytes) = {
            let idle = self.lock();
            (idle.count, idle.bytes)
        };
        PoolStats {
            idle,
            idle_bytes,
            created: self.created.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            discarded: std::array::from_fn(|i| self.discarded[i].load(Ordering::Relaxed)),
        }
    }
}

impl Discard {
    /// The `reason` label of `hookyard_plugin_instances_discarded_total`.
    pub fn label(self) -> &'static str {
        match self {
            Discard::Failed => "failed",
            Discard::Calls => "max_calls",
            Discard::Age => "max_age",
            Discard::Full => "full",
            Discard::Idle => "idle",
            Discard::Retired => "retired",
        }
    }
}

/// Where [`PoolMetrics`] reads the pool's counters (none: no pool, or it is gone).
type StatsSource = Box<dyn Fn() -> Option<PoolStats> + Send + Sync>;

/// The warm pool's counters in `/metrics`, read from the pool at scrape time:
/// `hookyard_plugin_instances_idle` and `_idle_bytes` (instances parked for reuse now and their
/// linear memory), `hookyard_plugin_instances_created_total`, `_reused_total` and
/// `_discarded_total{reason}`. Registered in the metrics registry before the plugin host
/// exists, then [connected](PoolMetrics::connect) to it; nothing is written before that.
#[derive(Clone, Default)]
pub struct PoolMetrics {
    source: Arc<std::sync::OnceLock<StatsSource>>,
}

impl std::fmt::Debug for PoolMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PoolMetrics")
            .field("connected", &self.source.get().is_some())
            .finish()
    }
}

impl PoolMetrics {
    /// Reads the counters through `stats` from now on (the first call wins). `stats` should
    /// hold the pool weakly: the registry that holds this outlives nothing it points to.
    pub fn connect(&self, stats: impl Fn() -> Option<PoolStats> + Send + Sync + 'static) {
        let _ = self.source.set(Box::new(stats));
    }
}

/// A `reason` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl prometheus_client::collector::Collector for PoolMetrics {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeMetric;
        use prometheus_client::metrics::counter::ConstCounter;
        use prometheus_client::metrics::gauge::ConstGauge;

        let Some(stats) = self.source.get().and_then(|stats| stats()) else {
            return Ok(());
        };
        let gauges = [
            (
                "plugin_instances_idle",
                "Warm plugin instances parked for reuse",
                stats.idle,
            ),
            (
                "plugin_instances_idle_bytes",
                "Linear memory of the parked warm plugin instances",
                stats.idle_bytes,
            ),
        ];
        for (name, help, value) in gauges {
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        let counters = [
            (
                "plugin_instances_created",
                "Warm plugin instances created (a warm call found none parked)",
                stats.created,
            ),
            (
                "plugin_instances_reused",
                "Plugin calls served by a parked warm instance",
                stats.reused,
            ),
        ];
        for (name, help, value) in counters {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        let mut family = encoder.encode_descriptor(
            "plugin_instances_discarded",
            "Warm plugin instances discarded, by reason",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for why in DISCARDS {
            let counter = ConstCounter::new(stats.discarded(why));
            let label = ReasonLabel {
                reason: why.label(),
            };
            counter.encode(family.encode_family(&label)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod metrics_tests {
    use super::*;

    fn scrape(metrics: &PoolMetrics) -> String {
        let mut registry = prometheus_client::registry::Registry::with_prefix("hookyard");
        registry.register_collector(Box::new(metrics.clone()));
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).expect("encode");
        out
    }

    #[test]
    fn the_pool_counters_are_scraped_once_connected() {
        let metrics = PoolMetrics::default();
        assert!(
            !scrape(&metrics).contains("plugin_instances"),
            "nothing before the pool exists"
        );
        let mut discarded = [0; 6];
        discarded[0] = 3; // Failed
        discarded[3] = 5; // Full
        metrics.connect(move || {
            Some(PoolStats {
                idle: 2,
                idle_bytes: 131_072,
                created: 7,
                reused: 40,
                discarded,
            })
        });
        let text = scrape(&metrics);
        for line in [
            "hookyard_plugin_instances_idle 2",
            "hookyard_plugin_instances_idle_bytes 131072",
            "hookyard_plugin_instances_created_total 7",
            "hookyard_plugin_instances_reused_total 40",
            "hookyard_plugin_instances_discarded_total{reason=\"failed\"} 3",
            "hookyard_plugin_instances_discarded_total{reason=\"full\"} 5",
            "hookyard_plugin_instances_discarded_total{reason=\"retired\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}

/// A thread that sweeps the pool a few times per `idle_secs` until the pool is dropped.
fn spawn_sweeper(pool: Weak<WarmPool>, idle_secs: u64) {
    let every = Duration::from_millis((idle_secs * 1000 / 4).clamp(50, 1000));
    let spawned = std::thread::Builder::new()
        .name("hookyard-warm-sweep".into())
        .spawn(move || loop {
            std::thread::sleep(every);
            match pool.upgrade() {
                Some(pool) => pool.sweep(),
                None => break,
            }
        });
    if let Err(e) = spawned {
        // Idle instances then live until reused, retired or displaced; still bounded.
        tracing::warn!(error = %e, "cannot start the warm instance sweeper");
    }
}

/// The custom section by which a component asks for a fresh instance on every call: its
/// content is `fresh` (a Rust plugin: `#[unsafe(link_section = "hookyard-instances")] #[used]
/// static FRESH: [u8; 5] = *b"fresh";`; any component: `hookyard plugin build` with
/// `instances = "fresh"` in `hookyard-plugin.toml`, or appending the section to the file).
pub const INSTANCES_SECTION: &str = "hookyard-instances";

/// What a component's [`INSTANCES_SECTION`] asks for, in the component itself or any module or
/// component nested in it; `warm` when there is none.
pub fn declared_instances(wasm: &[u8]) -> crate::model::Instances {
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        match payload {
            Ok(wasmparser::Payload::CustomSection(section))
                if section.name() == INSTANCES_SECTION =>
            {
                if section.data().trim_ascii() == b"fresh" {
                    return crate::model::Instances::Fresh;
                }
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    crate::model::Instances::Warm
}

/// `wasm` with a top-level [`INSTANCES_SECTION`] asking for fresh instances appended (a custom
/// section may come anywhere in a component).
pub fn with_fresh_section(wasm: &[u8]) -> Vec<u8> {
    let mut section = Vec::new();
    leb128(&mut section, INSTANCES_SECTION.len());
    section.extend_from_slice(INSTANCES_SECTION.as_bytes());
    section.extend_from_slice(b"fresh");
    let mut out = wasm.to_vec();
    out.push(0);
    leb128(&mut out, section.len());
    out.extend_from_slice(&section);
    out
}

fn leb128(out: &mut Vec<u8>, mut n: usize) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

#[cfg(test)]
#[path = "warm_tests.rs"]
mod tests;
