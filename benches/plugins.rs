//! Plugin call micro-benchmarks: one outgoing call per iteration, on a fresh instance made from
//! the component's `InstancePre`, and (the `_warm` benches) on a warm instance reused across
//! calls of one webhook, which is what the gateway does for deliveries since issue 23. The
//! Rust field-map, Python and JavaScript plugins are measured both ways in the same run.
//!
//! `cargo bench --bench plugins` (see docs/BENCHMARKS.md). Needs the components built by
//! `bash scripts/build-plugins.sh`. Compiled code is cached under cargo's target tmp dir, so only
//! the first run compiles the Python and JavaScript components (tens of seconds).
//!
//! Besides criterion's means, a bench run prints p50/p99 of single calls timed one by one with
//! `Instant` (the targets of issues 3 and 5 are percentiles).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use hookyard::config::Config;
use hookyard::model::Event;
use hookyard::plugin::bindings::types;
use hookyard::plugin::{
    call_outgoing, call_outgoing_with, call_validate_config, load_file, wit_event, LoadedPlugin,
    Reuse,
};
use serde_json::{json, Value};

/// Calls timed one by one for the percentiles of the Rust plugins.
const PERCENTILE_CALLS: usize = 10_000;
/// ... and of the Python and JavaScript ones (about 1 ms each).
const PERCENTILE_CALLS_SLOW: usize = 300;

struct Slow {
    python: LoadedPlugin,
    javascript: LoadedPlugin,
}

struct Fixture {
    runtime: hookyard::plugin::Runtime,
    field_map: LoadedPlugin,
    passthrough: LoadedPlugin,
    /// The Python and JavaScript plugins; only in a real bench run (compiling them the first
    /// time takes most of a minute, too long for `cargo test --benches`, and the integration
    /// tests already call them).
    slow: Option<Slow>,
    event: Event,
    mapping: Value,
    hook: types::Webhook,
}

fn component(relative: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    if !path.is_file() {
        panic!(
            "plugin component {} is missing: build the plugins first with \
             `bash scripts/build-plugins.sh` (from the repository root)",
            path.display()
        );
    }
    path
}

fn load(runtime: &hookyard::plugin::Runtime, relative: &str) -> LoadedPlugin {
    let path = component(relative);
    let started = Instant::now();
    let plugin =
        load_file(runtime, &path).unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()));
    let took = started.elapsed();
    if took > Duration::from_secs(2) {
        eprintln!(
            "compiled {} in {:.1} s (cached for later runs)",
            path.display(),
            took.as_secs_f64()
        );
    }
    plugin
}

/// A user record as an identity provider sends it: about 20 fields, a nested location, a list
/// of groups, and an actor in the context. About 1 KB of JSON (data plus context).
fn user_event() -> Event {
    let data = json!({
        "id": 48213,
        "username": "jdoe",
        "first_name": "John",
        "last_name": "Doe",
        "email": "John.Doe@Example.COM",
        "phone": "+48 600 100 200",
        "employee_id": "E-0048213",
        "title": "Senior Software Engineer",
        "department": "Platform Engineering",
        "manager_id": 1021,
        "is_active": "yes",
        "is_admin": false,
        "mfa_enabled": true,
        "mfa_method": "totp",
        "locale": "pl_PL",
        "devices": 3,
        "location": {
            "office": "Warsaw HQ",
            "city": "Warsaw",
            "country": "PL",
            "timezone": "Europe/Warsaw"
        },
        "groups": ["admin", "developers", "vpn-users", "on-call"],
        "created_at": "2023-02-14T09:30:00Z",
        "last_login": "2024-05-01T07:45:12+02:00",
        "ssh_key_fingerprint": "SHA256:nThbg6kXUpJWGl7E1IGOCspRomTxdCARLviKw6E5SY8",
        "cost_center": "CC-4410-PLATFORM",
        "display_name": "John Doe (Platform)"
    });
    let context = json!({
        "actor": {"id": 1, "username": "admin", "ip": "192.0.2.10"},
        "tenant": "acme-corp",
        "request_id": "req_01HZX3K9QW8E7R5T4Y2U1I0OPA",
        "source": "defguard-core",
        "user_agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko)",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736"
    });
    Event {
        id: "evt_01hzx3k9qw8e7r5t4y2u1i0opa".into(),
        event_type: "user.modified".into(),
        data: data.into(),
        context: context.into(),
        occurred_at: 1_714_549_512_000,
        received_at: 1_714_549_512_031,
    }
}

/// Ten rows, as a webhook admin screen would hold them: nested targets, two conversions on data
/// fields, envelope references (`@type`, `@timestamp`, `@context...`) and a constant.
fn mapping() -> Value {
    json!({
        "request": [
            {"api_field": "external_id", "field": "employee_id", "required": true},
            {"api_field": "user.login", "field": "username"},
            {"api_field": "user.email", "field": "email", "convert": "lower"},
            {"api_field": "user.name", "field": "last_name"},
            {"api_field": "user.active", "field": "is_active", "convert": "boolean"},
            {"api_field": "org.department", "field": "department", "default": ""},
            {"api_field": "org.office", "field": "location.office"},
            {"api_field": "event", "field": "@type", "convert": "upper_snake"},
            {"api_field": "sent_at", "field": "@timestamp", "convert": "date:unix"},
            {"api_field": "source", "value": "hookyard"}
        ],
        "method": "PUT"
    })
}

fn setup(with_slow: bool) -> Fixture {
    let cache_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("hookyard-bench-plugin-cache");
    let limits = Config::default().plugins;
    let runtime = hookyard::plugin::Runtime::new(&limits, &cache_dir)
        .unwrap_or_else(|e| panic!("cannot build the plugin runtime: {e}"));
    let release = "plugins/target/wasm32-wasip2/release";
    Fixture {
        field_map: load(&runtime, &format!("{release}/field_map.wasm")),
        passthrough: load(&runtime, &format!("{release}/passthrough.wasm")),
        slow: with_slow.then(|| Slow {
            python: load(&runtime, "examples/plugins-python/out/plugin.wasm"),
            javascript: load(&runtime, "examples/plugins-js/out/plugin.wasm"),
        }),
        runtime,
        event: user_event(),
        mapping: mapping(),
        hook: types::Webhook {
            id: "wh_01hzx3k9qw8e7r5t4y2u1i0opb".into(),
            name: "hr-users".into(),
            url: "https://hr.example.com/api/users".into(),
            method: "POST".into(),
        },
    }
}

/// One outgoing call on a fresh instance; panics unless the plugin sent something (a bench of an
/// error path would measure the wrong thing).
async fn outgoing(f: &Fixture, plugin: &LoadedPlugin, config: &Value) -> usize {
    outgoing_as(f, plugin, config, false).await
}

/// One outgoing call, on a warm instance of the fixture's webhook when `warm`.
async fn outgoing_as(f: &Fixture, plugin: &LoadedPlugin, config: &Value, warm: bool) -> usize {
    let reuse = if warm {
        Reuse::Warm(&f.hook.id)
    } else {
        Reuse::Fresh
    };
    let (result, _usage) =
        call_outgoing_with(&f.runtime, plugin, reuse, config, f.hook.clone(), &f.event).await;
    match result {
        Ok(Ok(types::OutgoingAction::Send(requests))) => {
            requests.iter().map(|r| r.body.len()).sum()
        }
        other => panic!("{}: unexpected outcome {other:?}", plugin.name),
    }
}

/// Checks each plugin once, before measuring, and shows what it produced.
fn check(rt: &tokio::runtime::Runtime, f: &Fixture) {
    let wit = wit_event(&f.event);
    eprintln!(
        "event: data {} B + context {} B of JSON; mapping config {} B",
        wit.data.len(),
        wit.context.len(),
        serde_json::to_vec(&f.mapping).map_or(0, |v| v.len())
    );
    rt.block_on(async {
        let (result, _) = call_outgoing(
            &f.runtime,
            &f.field_map,
            &f.mapping,
            f.hook.clone(),
            &f.event,
        )
        .await;
        match result {
            Ok(Ok(types::OutgoingAction::Send(requests))) => {
                let body = String::from_utf8_lossy(&requests[0].body);
                assert!(
                    body.contains(r#""email":"john.doe@example.com""#)
                        && body.contains(r#""active":true"#)
                        && body.contains(r#""event":"USER_MODIFIED""#),
                    "field-map did not map as expected: {body}"
                );
                eprintln!("field-map body: {body}");
            }
            other => panic!("field-map: unexpected outcome {other:?}"),
        }
        let bytes = outgoing(f, &f.passthrough, &Value::Null).await;
        eprintln!("passthrough: {bytes} B body");
        if let Some(slow) = &f.slow {
            for (name, plugin) in [("python", &slow.python), ("javascript", &slow.javascript)] {
                let bytes = outgoing(f, plugin, &Value::Null).await;
                eprintln!("{name}: {bytes} B body");
            }
        } else {
            eprintln!("python_call and javascript_call run only under `cargo bench`");
        }
    });
}

fn benches(c: &mut Criterion, rt: &tokio::runtime::Runtime, f: &Fixture) {
    let mut group = c.benchmark_group("plugins");
    group.throughput(Throughput::Elements(1));
    group.bench_function("field_map_call_1kb", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(outgoing(f, &f.field_map, &f.mapping).await) })
    });
    group.bench_function("field_map_call_1kb_warm", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(outgoing_as(f, &f.field_map, &f.mapping, true).await) })
    });
    group.bench_function("passthrough_call_1kb", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(outgoing(f, &f.passthrough, &Value::Null).await) })
    });
    // Instantiation plus the smallest call there is: what every call pays before doing work.
    group.bench_function("passthrough_validate_config", |b| {
        b.to_async(rt).iter(|| async {
            call_validate_config(&f.runtime, &f.passthrough, &Value::Null)
                .await
                .expect("passthrough accepts a null config")
        })
    });
    // The host's per-call conversions alone: the event's JSON values to bytes, config to bytes.
    group.bench_function("host_event_and_config_to_wit_1kb", |b| {
        b.iter(|| {
            let ev = wit_event(black_box(&f.event));
            let config = serde_json::to_vec(black_box(&f.mapping)).expect("JSON");
            black_box((ev, config))
        })
    });
    group.finish();

    let Some(slow_plugins) = &f.slow else {
        return;
    };
    let mut slow = c.benchmark_group("plugins_slow");
    slow.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(1));
    slow.bench_function("python_call", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(outgoing(f, &slow_plugins.python, &Value::Null).await) })
    });
    slow.bench_function("javascript_call", |b| {
        b.to_async(rt)
            .iter(|| async { black_box(outgoing(f, &slow_plugins.javascript, &Value::Null).await) })
    });
    slow.bench_function("python_call_warm", |b| {
        b.to_async(rt).iter(|| async {
            black_box(outgoing_as(f, &slow_plugins.python, &Value::Null, true).await)
        })
    });
    slow.bench_function("javascript_call_warm", |b| {
        b.to_async(rt).iter(|| async {
            black_box(outgoing_as(f, &slow_plugins.javascript, &Value::Null, true).await)
        })
    });
    slow.finish();
}

/// Times `calls` single calls (after a warm-up of a tenth as many) and prints percentiles.
fn percentiles(
    rt: &tokio::runtime::Runtime,
    f: &Fixture,
    name: &str,
    plugin: &LoadedPlugin,
    config: &Value,
    calls: usize,
    warm: bool,
) {
    let mut samples: Vec<Duration> = Vec::with_capacity(calls);
    rt.block_on(async {
        for _ in 0..calls / 10 {
            black_box(outgoing_as(f, plugin, config, warm).await);
        }
        for _ in 0..calls {
            let started = Instant::now();
            black_box(outgoing_as(f, plugin, config, warm).await);
            samples.push(started.elapsed());
        }
    });
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<30} n={calls:<6} p50 {:>9.1} µs  p90 {:>9.1} µs  p99 {:>9.1} µs  p99.9 {:>9.1} µs  max {:>9.1} µs  mean {:>9.1} µs",
        us(at(0.50)),
        us(at(0.90)),
        us(at(0.99)),
        us(at(0.999)),
        us(*samples.last().expect("samples")),
        us(mean),
    );
}

/// Times single calls of two plugins alternately (blocks of 100 calls each, so both see the same
/// machine) and prints both percentiles and the ratio of their medians.
fn compare(
    rt: &tokio::runtime::Runtime,
    f: &Fixture,
    (name_a, a): (&str, &LoadedPlugin),
    (name_b, b): (&str, &LoadedPlugin),
    config: &Value,
) {
    const BLOCK: usize = 100;
    let mut samples: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    rt.block_on(async {
        for round in 0..PERCENTILE_CALLS / BLOCK + 10 {
            for (i, plugin) in [a, b].into_iter().enumerate() {
                for _ in 0..BLOCK {
                    let started = Instant::now();
                    black_box(outgoing(f, plugin, config).await);
                    // The first ten rounds warm up.
                    if round >= 10 {
                        samples[i].push(started.elapsed());
                    }
                }
            }
        }
    });
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    let mut p50 = [0.0; 2];
    for (i, name) in [name_a, name_b].into_iter().enumerate() {
        let s = &mut samples[i];
        s.sort_unstable();
        let at = |q: f64| us(s[((s.len() as f64 * q) as usize).min(s.len() - 1)]);
        p50[i] = at(0.5);
        println!(
            "{name:<30} n={:<6} p50 {:>9.1} µs  p90 {:>9.1} µs  p99 {:>9.1} µs",
            s.len(),
            at(0.5),
            at(0.9),
            at(0.99)
        );
    }
    println!("p50 ratio {name_b} / {name_a}: {:.2}", p50[1] / p50[0]);
}

/// Whether this is a real bench run (`cargo bench`), not `cargo test --benches` (which runs each
/// bench once) nor `--list`.
fn measuring() -> bool {
    let args: Vec<String> = std::env::args().collect();
    let has = |flag: &str| args.iter().any(|a| a == flag);
    has("--bench") && !has("--test") && !has("--list")
}

/// Whether the command line's name filter (if any) selects the bench `id`. Criterion's own
/// filter is a regex; a substring check is enough to decide whether to print the percentiles.
fn selected(id: &str) -> bool {
    let filters: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    filters.is_empty() || filters.iter().any(|f| id.contains(f.as_str()))
}

fn main() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let with_slow = measuring()
        && [
            "plugins_slow/python_call",
            "plugins_slow/javascript_call",
            "plugins_slow/python_call_warm",
            "plugins_slow/javascript_call_warm",
        ]
        .into_iter()
        .any(selected);
    let fixture = setup(with_slow);
    check(&rt, &fixture);

    let mut c = Criterion::default().configure_from_args();
    benches(&mut c, &rt, &fixture);
    c.final_summary();

    if !measuring() {
        return;
    }
    let f = &fixture;
    println!(
        "\nSingle calls timed with Instant (fresh: a new instance each, instantiation included; \
         _warm: one webhook's warm instance):"
    );
    let mut runs: Vec<(&str, &LoadedPlugin, &Value, usize, bool)> = vec![
        (
            "plugins/field_map_call_1kb",
            &f.field_map,
            &f.mapping,
            PERCENTILE_CALLS,
            false,
        ),
        (
            "plugins/field_map_call_1kb_warm",
            &f.field_map,
            &f.mapping,
            PERCENTILE_CALLS,
            true,
        ),
        (
            "plugins/passthrough_call_1kb",
            &f.passthrough,
            &Value::Null,
            PERCENTILE_CALLS,
            false,
        ),
    ];
    if let Some(slow) = &f.slow {
        for warm in [false, true] {
            runs.push((
                if warm {
                    "plugins_slow/python_call_warm"
                } else {
                    "plugins_slow/python_call"
                },
                &slow.python,
                &Value::Null,
                PERCENTILE_CALLS_SLOW * if warm { 10 } else { 1 },
                warm,
            ));
            runs.push((
                if warm {
                    "plugins_slow/javascript_call_warm"
                } else {
                    "plugins_slow/javascript_call"
                },
                &slow.javascript,
                &Value::Null,
                PERCENTILE_CALLS_SLOW * if warm { 10 } else { 1 },
                warm,
            ));
        }
    }
    for (name, plugin, config, calls, warm) in runs {
        if selected(name) {
            percentiles(&rt, f, name, plugin, config, calls, warm);
        }
    }
    let stats = f.runtime.pool_stats();
    println!(
        "warm pool: {} instances made, {} calls reused one, {} idle ({} KiB of linear memory)",
        stats.created,
        stats.reused,
        stats.idle,
        stats.idle_bytes / 1024
    );

    // An A/B of two builds of field-map in one run: HOOKYARD_BENCH_FIELD_MAP_BASELINE names
    // another build's component (for example one built from an earlier commit).
    if let Ok(path) = std::env::var("HOOKYARD_BENCH_FIELD_MAP_BASELINE") {
        let baseline = load_file(&f.runtime, Path::new(&path))
            .unwrap_or_else(|e| panic!("cannot load {path}: {e}"));
        println!("\nA/B, alternating blocks of calls:");
        compare(
            &rt,
            f,
            ("field_map (baseline)", &baseline),
            ("field_map (this tree)", &f.field_map),
            &f.mapping,
        );
    }
}
