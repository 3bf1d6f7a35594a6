//! The plugin kit end to end, through the real binary: `plugin new` for Rust, Python and
//! JavaScript, `plugin build`, `plugin test`, `plugin upload|list|versions|activate` against a
//! running gateway, and a delivery shaped by each scaffold; a Python exception's traceback in
//! `plugin check`, the upload's error and the Webhook Log; a rejected upload leaves no files.
//!
//! The scaffolds are built once per test run (in `target/plugin-kit-tests/`, recreated at the
//! first use in a run) and shared by the tests: a Python or JavaScript build installs its tool
//! and takes 15-30 s. The compiled-code cache there persists across runs, so the gateway and the
//! CLI load unchanged components instead of compiling them again.

use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tokio::sync::OnceCell;

use crate::common::*;

/// Where the scaffolds are made and built.
fn kit_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/plugin-kit-tests")
}

/// The compiled-code cache shared by the CLI and the test gateways (kept across runs).
fn cache_dir() -> PathBuf {
    kit_dir().join("cache")
}

/// The binary, with the shared compiled-code cache and a persistent cargo target directory for
/// Rust scaffolds (their dependencies then build once, not once per run).
fn hookyard(dir: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir)
        .env("HOOKYARD_CACHE_DIR", cache_dir())
        .env("CARGO_TARGET_DIR", kit_dir().join("rust-target"))
        .env_remove("HOOKYARD_ADMIN_URL")
        .env_remove("HOOKYARD_ADMIN_TOKEN");
    cmd
}

fn run(mut cmd: Command, what: &str) -> Output {
    cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(cmd: Command, what: &str) -> String {
    let out = run(cmd, what);
    assert!(out.status.success(), "{what} failed:\n{}", text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Makes the scaffold `lang` with all three hooks, builds it and runs its fixture tests; returns
/// the project directory. Once per language and test run.
async fn scaffold(lang: &'static str) -> PathBuf {
    static RUST: OnceCell<PathBuf> = OnceCell::const_new();
    static PYTHON: OnceCell<PathBuf> = OnceCell::const_new();
    static JS: OnceCell<PathBuf> = OnceCell::const_new();
    let cell = match lang {
        "rust" => &RUST,
        "python" => &PYTHON,
        _ => &JS,
    };
    cell.get_or_init(|| async move {
        tokio::task::spawn_blocking(move || {
            let name = format!("kit-{lang}");
            let dir = kit_dir().join(&name);
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(kit_dir()).unwrap();
            let mut new = hookyard(&kit_dir());
            new.args([
                "plugin",
                "new",
                &name,
                "--lang",
                lang,
                "--hook",
                "outgoing,response,inbound",
            ]);
            let made = ok(new, "plugin new");
            assert!(made.contains("created"), "{made}");

            let mut build = hookyard(&dir);
            build.args(["plugin", "build"]);
            let path = ok(build, &format!("plugin build ({lang})"));
            assert!(path.trim().ends_with("out/plugin.wasm"), "{path}");
            assert!(dir.join("out/plugin.wasm").is_file());

            // The fixtures the scaffold ships with pass out of the box.
            let mut test = hookyard(&dir);
            test.args(["plugin", "test"]);
            let report = ok(test, &format!("plugin test ({lang})"));
            assert!(report.contains("3 passed, 0 failed"), "{report}");
            dir
        })
        .await
        .unwrap()
    })
    .await
    .clone()
}

/// A test gateway whose compiles run at normal priority (the machine running the tests is busy
/// enough already) with the shared compiled-code cache.
async fn gateway(dir: &Path) -> TestGateway {
    let mut config = test_config(dir);
    config.plugins.compile_nice = 0;
    config.plugins.cache_dir = cache_dir();
    // Python and JavaScript instances take a few milliseconds to start on a busy machine.
    config.plugins.timeout_ms = 5000;
    TestGateway::start(config).await
}

fn admin(cmd: &mut Command, gw: &TestGateway) {
    cmd.env("HOOKYARD_ADMIN_URL", gw.admin_url(""))
        .env("HOOKYARD_ADMIN_TOKEN", ADMIN_TOKEN);
}

/// Uploads with `hookyard plugin upload`; returns the command's output.
async fn cli_upload(gw: &TestGateway, name: &str, file: &Path) -> Output {
    let mut cmd = hookyard(&kit_dir());
    admin(&mut cmd, gw);
    cmd.args(["plugin", "upload", name]).arg(file);
    tokio::task::spawn_blocking(move || run(cmd, "plugin upload"))
        .await
        .unwrap()
}

/// Each scaffold, built and tested, is uploaded with the CLI and shapes a real delivery.
async fn scaffold_shapes_a_delivery(lang: &'static str) {
    let project = scaffold(lang).await;
    let dir = temp_dir();
    let gw = gateway(dir.path()).await;
    let rx = Receiver::start().await;
    let name = format!("kit-{lang}");

    let out = cli_upload(&gw, &name, &project.join("out/plugin.wasm")).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("plugin {name} version 1 active")),
        "{}",
        text(&out)
    );

    gw.create_webhook(
        json!({"name": format!("wh-{lang}"), "events": ["user.*"], "url": rx.url("/users"),
        "plugin": {"name": name}}),
    )
    .await;
    gw.post_event(json!({"type": "user.created", "data": {"id": "7", "email": "ada@example.com", "name": "Ada"}}))
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(
        got[0].json(),
        json!({"type": "user.created", "user_id": "7", "email": "ada@example.com"}),
        "the {lang} scaffold shaped the body"
    );

    // list, versions and activate through the CLI.
    let mut list = hookyard(&kit_dir());
    admin(&mut list, &gw);
    list.args(["plugin", "list"]);
    let listed = tokio::task::spawn_blocking(move || ok(list, "plugin list"))
        .await
        .unwrap();
    assert!(
        listed.contains(&name) && listed.contains("active 1"),
        "{listed}"
    );
    let mut versions = hookyard(&kit_dir());
    admin(&mut versions, &gw);
    versions.args(["plugin", "versions", &name]);
    let listed = tokio::task::spawn_blocking(move || ok(versions, "plugin versions"))
        .await
        .unwrap();
    assert!(listed.starts_with("* 1\tsha256 "), "{listed}");
    let mut activate = hookyard(&kit_dir());
    admin(&mut activate, &gw);
    activate.args(["plugin", "activate", &name, "2"]);
    let out = tokio::task::spawn_blocking(move || run(activate, "plugin activate"))
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("version 2"), "{}", text(&out));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_scaffold_builds_tests_uploads_and_shapes_a_delivery() {
    scaffold_shapes_a_delivery("rust").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_scaffold_builds_tests_uploads_and_shapes_a_delivery() {
    scaffold_shapes_a_delivery("python").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn js_scaffold_builds_tests_uploads_and_shapes_a_delivery() {
    scaffold_shapes_a_delivery("js").await;
}

/// A fixture whose expectation is wrong fails `plugin test` with exit code 1 and a diff.
#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_fixture_fails_with_a_diff() {
    let project = scaffold("rust").await;
    let dir = temp_dir();
    let tests = dir.path().join("tests");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::write(
        tests.join("wrong.json"),
        r#"{"hook": "outgoing", "event": {"type": "user.created", "data": {"id": "1", "email": "a@b"}},
            "expect": {"send": [{"body": {"type": "user.created", "user_id": "2", "email": "a@b"}}]}}"#,
    )
    .unwrap();
    let mut cmd = hookyard(dir.path());
    cmd.args(["plugin", "test", "--component"])
        .arg(project.join("out/plugin.wasm"));
    let out = tokio::task::spawn_blocking(move || run(cmd, "plugin test"))
        .await
        .unwrap();
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report.contains("FAILED wrong.json"), "{report}");
    assert!(
        report.contains("-         \"user_id\": \"2\"")
            && report.contains("+         \"user_id\": \"1\""),
        "{report}"
    );
    assert!(report.contains("0 passed, 1 failed"), "{report}");
}

/// `plugin check --hook response|inbound` runs those hooks on the sample inputs.
#[tokio::test(flavor = "multi_thread")]
async fn check_runs_the_response_and_inbound_hooks() {
    let project = scaffold("rust").await;
    let component = project.join("out/plugin.wasm");
    let mut response = hookyard(&project);
    response
        .args(["plugin", "check", "--hook", "response"])
        .arg(&component);
    let mut inbound = hookyard(&project);
    inbound
        .args(["plugin", "check", "--hook", "inbound", "--pretty"])
        .arg(&component);
    let (response, inbound) = tokio::task::spawn_blocking(move || {
        (ok(response, "check response"), ok(inbound, "check inbound"))
    })
    .await
    .unwrap();
    assert!(
        response.contains("response: write back (23 bytes):\n{\"remote_id\":\"hr-1001\"}\n"),
        "{response}"
    );
    assert!(
        inbound.contains("inbound: 1 record(s)") && inbound.contains("{\n  \"id\": \"42\"\n}"),
        "{inbound}"
    );
}

/// A Python plugin with a bug: it reads the email from the event's context unless its config
/// says `{"from": "data"}`, and raises `KeyError('email')` where there is none.
const KEY_ERROR_APP: &str = r#"
from hookyard_plugin import Plugin, request, send


class Handler(Plugin):
    def on_outgoing(self, config, hook, event):
        source = event.data if (config or {}).get("from") == "data" else (event.context or {})
        return send(request({"mail": source["email"]}))
"#;

/// The Python KeyError component, built once per run from the Python scaffold.
async fn key_error_component() -> PathBuf {
    static CELL: OnceCell<PathBuf> = OnceCell::const_new();
    let scaffold = scaffold("python").await;
    CELL.get_or_init(|| async move {
        tokio::task::spawn_blocking(move || {
            let dir = kit_dir().join("kit-python-key-error");
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            // The scaffold's tool installation is reused: its .venv is where it was made.
            for file in ["hookyard-plugin.toml", "hookyard_plugin.py"] {
                std::fs::copy(scaffold.join(file), dir.join(file)).unwrap();
            }
            std::fs::create_dir_all(dir.join("wit")).unwrap();
            std::fs::copy(scaffold.join("wit/plugin.wit"), dir.join("wit/plugin.wit")).unwrap();
            std::fs::write(dir.join("app.py"), KEY_ERROR_APP).unwrap();
            std::os::unix::fs::symlink(scaffold.join(".venv"), dir.join(".venv")).unwrap();
            let mut build = hookyard(&dir);
            build.args(["plugin", "build"]);
            ok(build, "plugin build (KeyError plugin)");
            dir.join("out/plugin.wasm")
        })
        .await
        .unwrap()
    })
    .await
    .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_python_key_error_shows_in_check_the_upload_error_and_the_webhook_log() {
    let component = key_error_component().await;

    // plugin check: the traceback's last line.
    let mut check = hookyard(&kit_dir());
    check.args(["plugin", "check"]).arg(&component);
    let out = tokio::task::spawn_blocking(move || run(check, "plugin check"))
        .await
        .unwrap();
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("Traceback") && report.contains("KeyError: 'email'"),
        "{report}"
    );

    // The upload's smoke call (config null: the context is read) fails with the traceback,
    // and leaves no compiled code behind.
    let dir = temp_dir();
    let gw = gateway(dir.path()).await;
    let out = cli_upload(&gw, "py-key-error", &component).await;
    let report = text(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(
        report.contains("refused (422")
            && report.contains("KeyError")
            && report.contains("'email'"),
        "{report}"
    );
    assert!(
        !report.contains(&cache_dir().display().to_string()),
        "no server path: {report}"
    );
    let sha = sha256_hex(&std::fs::read(&component).unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(cache_dir())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with(&sha))
        .collect();
    assert!(leftovers.is_empty(), "a rejected upload left {leftovers:?}");
    let (_, plugins) = gw.admin("GET", "/admin/v1/plugins", None).await;
    assert_eq!(plugins["items"], json!([]), "nothing was stored");

    // In use (a webhook whose config makes the smoke call pass), an event without an email
    // fails its delivery with the traceback in the Webhook Log.
    let rx = Receiver::start().await;
    let scaffold = scaffold("python").await;
    let out = cli_upload(&gw, "py-key-error", &scaffold.join("out/plugin.wasm")).await;
    assert!(out.status.success(), "{}", text(&out));
    gw.create_webhook(
        json!({"name": "keyerr", "events": ["user.*"], "url": rx.url("/"),
        "plugin": {"name": "py-key-error", "config": {"from": "data"}, "on_error": "dead_letter"}}),
    )
    .await;
    let out = cli_upload(&gw, "py-key-error", &component).await;
    assert!(out.status.success(), "{}", text(&out));
    gw.post_event(json!({"type": "user.created", "data": {"id": "1"}}))
        .await;
    let dead = gw.wait_for_status("keyerr", "dead", 1).await;
    let detail = gw.delivery(dead[0]["id"].as_str().unwrap()).await;
    let error = detail["attempts"][0]["error"].as_str().unwrap();
    assert!(
        error.contains("KeyError") && error.contains("'email'"),
        "{error}"
    );
    // An event with an email is delivered by the same version.
    gw.post_event(json!({"type": "user.created", "data": {"id": "2", "email": "x@example.com"}}))
        .await;
    let got = rx.wait_for(1).await;
    assert_eq!(got[0].json(), json!({"mail": "x@example.com"}));
    gw.stop().await;
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An export whose type does not match is named, with what was expected and found; names `.`
/// and `..` are refused; and nothing of a rejected upload stays on disk.
#[tokio::test(flavor = "multi_thread")]
async fn upload_refusals_name_the_problem_and_leave_no_files() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let wasm = crate::plugins::rust_plugin("passthrough");
    for name in [".", "..", "-x", ".hidden"] {
        let (status, body) = crate::plugins::upload(&gw, name, wasm.clone()).await;
        // `.` and `..` do not even reach the handler as a path segment on some clients; either
        // way they are not stored.
        assert!(
            status == 422 || status == 404 || status == 405,
            "{name}: {status} {body}"
        );
    }
    let (_, plugins) = gw.admin("GET", "/admin/v1/plugins", None).await;
    assert_eq!(plugins["items"], json!([]));

    let (status, body) = crate::plugins::upload(
        &gw,
        "always-trap",
        crate::plugins::rust_plugin("always_trap"),
    )
    .await;
    assert_eq!(status, 422, "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("always-trap fixture"),
        "the guest's panic message: {message}"
    );
    let cache = dir.path().join("plugin-cache");
    let left: Vec<_> = std::fs::read_dir(&cache)
        .map(|d| d.filter_map(Result::ok).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "a rejected upload left {left:?}");
    assert!(!message.contains(&cache.display().to_string()));
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn plugin_metrics_are_labelled_by_plugin_and_version() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let rx = Receiver::start().await;
    crate::plugins::upload_ok(&gw, "pt", crate::plugins::rust_plugin("passthrough")).await;
    gw.create_webhook(
        json!({"name": "m", "events": ["t"], "url": rx.url("/"), "plugin": {"name": "pt"}}),
    )
    .await;
    gw.post_event(json!({"type": "t", "data": {}})).await;
    rx.wait_for(1).await;
    let metrics = gw.metrics().await;
    assert!(
        metrics.contains("hookyard_plugin_calls_total{plugin=\"pt\",version=\"1\",outcome=\"ok\"}"),
        "{metrics}"
    );
    assert!(
        metrics
            .contains("hookyard_plugin_call_duration_seconds_count{plugin=\"pt\",version=\"1\"}"),
        "{metrics}"
    );
    gw.stop().await;
}

/// `component` with a custom section appended: other bytes (another sha256, so another version
/// that must be compiled), the same behaviour.
fn variant_of(component: &[u8], n: u32) -> Vec<u8> {
    let name = b"hookyard-measure";
    let payload = n.to_le_bytes();
    let content_len = 1 + name.len() + payload.len();
    let mut out = component.to_vec();
    out.push(0); // custom section
    out.push(content_len as u8); // LEB128, < 128
    out.push(name.len() as u8);
    out.extend_from_slice(name);
    out.extend_from_slice(&payload);
    out
}

/// This process's resident set size, in MiB (Linux).
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// Measurement for docs/BENCHMARKS.md, run by hand on a quiet machine:
/// `cargo test --release --test it plugin_kit::measure_upload_p99_and_rss -- --ignored --nocapture`.
/// Prints (1) the p50/p99 of field-map plugin calls made while nothing compiles, then while a
/// Python component compiles with the default compile settings (1 thread, nice 10), then with
/// the settings of before the compile pool (all cores, normal priority); (2) the gateway
/// process's RSS after 1 and after 10 Python uploads (each a distinct version).
#[tokio::test(flavor = "multi_thread")]
#[ignore = "a measurement, minutes long; run by hand on a quiet machine"]
async fn measure_upload_p99_and_rss() {
    use hookyard::plugin::{self, call_outgoing, sample};
    let python = crate::plugins::component("examples/plugins-python/out/plugin.wasm");
    let field_map = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("plugins/target/wasm32-wasip2/release/field_map.wasm");
    let config = json!({"request": [{"api_field": "emp_id", "field": "id"}, {"api_field": "mail", "field": "email"}]});

    // RSS first, while this process has compiled nothing yet.
    {
        let dir = temp_dir();
        let gw = TestGateway::start(test_config(dir.path())).await;
        let before = rss_mib();
        for n in 1..=10u32 {
            crate::plugins::upload_ok(&gw, "measure", variant_of(&python, n)).await;
            if n == 1 || n == 10 {
                println!(
                    "RSS after {n} Python upload(s): {:.0} MiB (before any: {before:.0} MiB)",
                    rss_mib()
                );
            }
        }
        gw.stop().await;
    }

    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    for (label, threads, nice) in [
        ("idle", 0, 0),
        ("default pool (1 thread, nice 10)", 1, 10),
        ("before (all cores, nice 0)", cores, 0),
    ] {
        let dir = temp_dir();
        let mut limits = hookyard::config::Config::default().plugins;
        limits.compile_threads = threads.max(1);
        limits.compile_nice = nice;
        let runtime = std::sync::Arc::new(plugin::Runtime::new(&limits, dir.path()).unwrap());
        let loaded = plugin::load_file(&runtime, &field_map).unwrap();
        let compiling = if threads > 0 {
            let (rt, wasm) = (
                runtime.clone(),
                variant_of(&python, threads as u32 * 100 + nice as u32),
            );
            Some(tokio::task::spawn_blocking(move || {
                rt.load(&wasm, &format!("measure-{}", wasm.len()))
                    .map(|_| ())
            }))
        } else {
            None
        };
        let mut times = Vec::new();
        let started = std::time::Instant::now();
        // Idle: 20,000 calls; during a compile: calls until it ends (at most 120 s).
        loop {
            let done = match &compiling {
                None => times.len() >= 20_000,
                Some(c) => c.is_finished(),
            };
            if done || started.elapsed() > std::time::Duration::from_secs(120) {
                break;
            }
            let (result, usage) = call_outgoing(
                &runtime,
                &loaded,
                &config,
                sample::webhook(),
                &sample::event(),
            )
            .await;
            assert!(result.is_ok());
            times.push(usage.duration.as_secs_f64() * 1e6);
        }
        if let Some(c) = compiling {
            c.await.unwrap().unwrap();
        }
        times.sort_by(f64::total_cmp);
        println!(
            "field-map calls, {label}: n {}, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
            times.len(),
            percentile(&times, 0.5),
            percentile(&times, 0.99),
            times.last().copied().unwrap_or(0.0)
        );
    }
}
