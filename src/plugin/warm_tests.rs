//! Warm instances on the `counter` fixture, which counts its calls in a global: reuse, and
//! every rule that discards an instance.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::*;
use crate::config::{Config, PluginsConfig};
use crate::model::{Event, Instances};
use crate::plugin::bindings::types;
use crate::plugin::{
    call_outgoing_with, hex, next_load_id, sample, CallError, LoadedPlugin, Reuse, Runtime, Usage,
};

fn counter_wasm() -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/target/wasm32-wasip2/release/counter.wasm");
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Build the plugins first: bash scripts/build-plugins.sh",
            path.display()
        )
    })
}

fn runtime_with(tune: impl FnOnce(&mut PluginsConfig)) -> (tempfile::TempDir, Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let mut limits = Config::default().plugins;
    tune(&mut limits);
    let runtime = Runtime::new(&limits, dir.path()).unwrap();
    (dir, runtime)
}

fn load(runtime: &Runtime, wasm: &[u8]) -> LoadedPlugin {
    let sha = hex(&Sha256::digest(wasm));
    let compiled = runtime.load(wasm, &sha).unwrap();
    LoadedPlugin {
        name: "counter".into(),
        version: 1,
        sha256: sha,
        id: next_load_id(),
        instances: compiled.instances,
        pre: compiled.pre,
    }
}

fn event(action: &str) -> Event {
    let mut ev = sample::event();
    ev.data = json!({"do": action}).into();
    ev
}

fn hook(id: &str) -> types::Webhook {
    let mut hook = sample::webhook();
    hook.id = id.into();
    hook.name = format!("hook-{id}");
    hook
}

/// One outgoing call: the counter's JSON body, or the call's error.
async fn call(
    runtime: &Runtime,
    plugin: &LoadedPlugin,
    reuse: Reuse<'_>,
    action: &str,
) -> (Result<Value, CallError>, Usage) {
    let webhook = match reuse {
        Reuse::Warm(id) => id,
        Reuse::Fresh => "fresh",
    };
    let config = json!({"any": "config"});
    let (result, usage) = call_outgoing_with(
        runtime,
        plugin,
        reuse,
        &config,
        hook(webhook),
        &event(action),
    )
    .await;
    let result = result.map(|r| match r {
        Ok(types::OutgoingAction::Send(requests)) => {
            serde_json::from_slice(&requests[0].body).unwrap()
        }
        other => panic!("unexpected answer {other:?}"),
    });
    (result, usage)
}

async fn calls(runtime: &Runtime, plugin: &LoadedPlugin, reuse: Reuse<'_>) -> u64 {
    let (result, _) = call(runtime, plugin, reuse, "").await;
    result.unwrap()["calls"].as_u64().unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_warm_instance_is_reused_and_a_fresh_one_is_not() {
    let (_dir, runtime) = runtime_with(|_| {});
    let plugin = load(&runtime, &counter_wasm());
    for n in 1..=5 {
        let (result, usage) = call(&runtime, &plugin, Reuse::Warm("a"), "").await;
        let body = result.unwrap();
        assert_eq!(body["calls"], n, "{body}");
        assert_eq!(body["parses"], 1, "the config is parsed once: {body}");
        assert_eq!(usage.reused, n > 1);
    }
    for _ in 0..3 {
        assert_eq!(calls(&runtime, &plugin, Reuse::Fresh).await, 1);
    }
    let stats = runtime.pool_stats();
    assert_eq!((stats.created, stats.reused, stats.idle), (1, 4, 1));
    assert!(stats.idle_bytes > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_global_fresh_mode_turns_reuse_off() {
    let (_dir, runtime) = runtime_with(|l| l.instances.mode = Instances::Fresh);
    let plugin = load(&runtime, &counter_wasm());
    for _ in 0..3 {
        assert_eq!(calls(&runtime, &plugin, Reuse::Warm("a")).await, 1);
    }
    assert_eq!(runtime.pool_stats().idle, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_never_serves_two_webhooks() {
    let (_dir, runtime) = runtime_with(|_| {});
    let plugin = load(&runtime, &counter_wasm());
    for round in 1..=3 {
        for id in ["a", "b"] {
            let (result, _) = call(&runtime, &plugin, Reuse::Warm(id), "").await;
            let body = result.unwrap();
            assert_eq!(body["calls"], round, "{body}");
            assert_eq!(body["first_webhook"], body["webhook"], "{body}");
        }
    }
    // Another load of the same bytes is another version: its own instances.
    let again = load(&runtime, &counter_wasm());
    assert_eq!(calls(&runtime, &again, Reuse::Warm("a")).await, 1);
}

/// After each failure the next call starts on a new instance (its count is 1 again).
#[tokio::test(flavor = "multi_thread")]
async fn a_trap_a_timeout_and_a_memory_cap_hit_discard_the_instance() {
    let (_dir, runtime) = runtime_with(|l| {
        l.timeout_ms = 300;
        l.memory_limit_mb = 32;
    });
    let plugin = load(&runtime, &counter_wasm());
    let warm = Reuse::Warm("a");
    for (action, label) in [("trap", "trap"), ("loop", "timeout"), ("hog", "memory")] {
        assert_eq!(calls(&runtime, &plugin, warm).await, 1);
        assert_eq!(calls(&runtime, &plugin, warm).await, 2);
        let (result, _) = call(&runtime, &plugin, warm, action).await;
        assert_eq!(result.unwrap_err().label(), label);
        assert_eq!(calls(&runtime, &plugin, warm).await, 1, "after a {label}");
        runtime.retire_instances(|_| true);
    }
    // A guest that hit the cap but carried on (its allocation failed, it answered) is not kept
    // either.
    assert_eq!(calls(&runtime, &plugin, warm).await, 1);
    let (result, _) = call(&runtime, &plugin, warm, "hog_and_recover").await;
    assert_eq!(result.unwrap()["calls"], 2);
    assert_eq!(calls(&runtime, &plugin, warm).await, 1);
    assert_eq!(runtime.pool_stats().discarded(Discard::Failed), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_is_discarded_after_max_calls() {
    let (_dir, runtime) = runtime_with(|l| l.instances.max_calls = 3);
    let plugin = load(&runtime, &counter_wasm());
    let seen: Vec<u64> = {
        let mut seen = Vec::new();
        for _ in 0..7 {
            seen.push(calls(&runtime, &plugin, Reuse::Warm("a")).await);
        }
        seen
    };
    assert_eq!(seen, [1, 2, 3, 1, 2, 3, 1]);
    assert_eq!(runtime.pool_stats().discarded(Discard::Calls), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_instance_is_discarded_when_too_old_or_idle_too_long() {
    let (_dir, runtime) = runtime_with(|l| {
        l.instances.max_age_secs = 1;
        l.instances.idle_secs = 1;
    });
    let plugin = load(&runtime, &counter_wasm());
    assert_eq!(calls(&runtime, &plugin, Reuse::Warm("a")).await, 1);
    assert_eq!(calls(&runtime, &plugin, Reuse::Warm("a")).await, 2);
    // Past both limits (the sweeper thread may get there first: either way it is gone).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    runtime.sweep_instances();
    assert_eq!(runtime.pool_stats().idle, 0);
    assert_eq!(calls(&runtime, &plugin, Reuse::Warm("a")).await, 1);
    let stats = runtime.pool_stats();
    assert_eq!(
        stats.discarded(Discard::Age) + stats.discarded(Discard::Idle),
        1,
        "{stats:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn retiring_a_version_drops_its_idle_instances() {
    let (_dir, runtime) = runtime_with(|_| {});
    let old = load(&runtime, &counter_wasm());
    let new = load(&runtime, &counter_wasm());
    calls(&runtime, &old, Reuse::Warm("a")).await;
    calls(&runtime, &new, Reuse::Warm("a")).await;
    assert_eq!(runtime.pool_stats().idle, 2);
    runtime.retire_instances(|id| id == old.id);
    assert_eq!(runtime.pool_stats().idle, 1);
    assert_eq!(runtime.pool_stats().discarded(Discard::Retired), 1);
    assert_eq!(calls(&runtime, &old, Reuse::Warm("a")).await, 1);
    assert_eq!(calls(&runtime, &new, Reuse::Warm("a")).await, 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pool_is_bounded_in_count() {
    let (_dir, runtime) = runtime_with(|l| l.instances.idle_total = 2);
    let plugin = load(&runtime, &counter_wasm());
    for id in ["a", "b", "c"] {
        calls(&runtime, &plugin, Reuse::Warm(id)).await;
    }
    let stats = runtime.pool_stats();
    assert_eq!(stats.idle, 2);
    assert_eq!(stats.discarded(Discard::Full), 1);
    assert_eq!(calls(&runtime, &plugin, Reuse::Warm("c")).await, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_pool_is_bounded_in_memory() {
    let (_dir, runtime) = runtime_with(|l| l.instances.idle_memory_mb = 0);
    let plugin = load(&runtime, &counter_wasm());
    assert_eq!(calls(&runtime, &plugin, Reuse::Warm("a")).await, 1);
    assert_eq!(calls(&runtime, &plugin, Reuse::Warm("a")).await, 1);
    assert_eq!(runtime.pool_stats().discarded(Discard::Full), 2);
}

/// What the guest writes to stderr belongs to the call that wrote it.
#[tokio::test(flavor = "multi_thread")]
async fn guest_output_does_not_leak_into_the_next_call() {
    let (_dir, runtime) = runtime_with(|_| {});
    let plugin = load(&runtime, &counter_wasm());
    let warm = Reuse::Warm("a");
    let (result, usage) = call(&runtime, &plugin, warm, "print").await;
    assert_eq!(result.unwrap()["calls"], 1);
    assert_eq!(usage.guest_output.trim(), "printed on call 1");
    let (result, usage) = call(&runtime, &plugin, warm, "").await;
    assert_eq!(result.unwrap()["calls"], 2);
    assert_eq!(usage.guest_output, "");
    let (result, usage) = call(&runtime, &plugin, warm, "trap").await;
    let error = result.unwrap_err().to_string();
    assert!(error.contains("asked to trap on call 3"), "{error}");
    assert!(!error.contains("printed"), "{error}");
    assert!(
        !usage.guest_output.contains("printed"),
        "{}",
        usage.guest_output
    );
}

#[test]
fn a_component_can_ask_for_fresh_instances() {
    let wasm = counter_wasm();
    assert_eq!(declared_instances(&wasm), Instances::Warm);
    let fresh = with_fresh_section(&wasm);
    assert_eq!(declared_instances(&fresh), Instances::Fresh);
    assert_eq!(
        declared_instances(&with_fresh_section(&fresh)),
        Instances::Fresh
    );
}

/// The section appended is still a valid component, and a loaded plugin reports it.
#[tokio::test(flavor = "multi_thread")]
async fn a_fresh_component_loads_and_says_so() {
    let (_dir, runtime) = runtime_with(|_| {});
    let plugin = load(&runtime, &with_fresh_section(&counter_wasm()));
    assert_eq!(plugin.instances, Instances::Fresh);
    assert_eq!(calls(&runtime, &plugin, Reuse::Fresh).await, 1);
}
