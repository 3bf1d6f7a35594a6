//! The real binary: config errors exit 64 with one line, `check-config`, and SIGTERM.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// The binary, run in `dir`, with no `HOOKYARD_*` variables inherited.
pub(crate) fn hookyard(dir: &Path) -> Command {
    let mut cmd = Command::new(binary());
    cmd.current_dir(dir);
    for (k, _) in std::env::vars() {
        if k.starts_with("HOOKYARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Waits for `child` up to `limit`; kills it (and fails) if it is still running.
fn wait_at_most(mut child: Child, limit: Duration, what: &str) -> Output {
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "{what}: still running after {limit:?}; stderr: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run(mut cmd: Command, what: &str) -> Output {
    wait_at_most(cmd.spawn().unwrap(), Duration::from_secs(10), what)
}

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

fn free_port() -> u16 {
    closed_port()
}

/// A config that works from `dir` (relative data directory), on two free ports.
fn good_config(public: u16, admin: u16) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{public}"
admin_listen = "127.0.0.1:{admin}"
admin_token = "a"
ingest_token = "i"
shutdown_grace_secs = 5

[store]
url = "sqlite://data/hookyard.db"

[delivery]
allow_networks = ["127.0.0.1/32"]
"#
    )
}

#[test]
fn unknown_config_key_exits_64_with_one_line() {
    let dir = temp_dir();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = \"127.0.0.1:0\"\nlisten_typo = 1\n",
    )
    .unwrap();
    let mut cmd = hookyard(dir.path());
    cmd.args(["serve", "--config"]).arg(&file);
    let out = run(cmd, "serve with a bad config");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "stderr is not one line: {lines:?}");
    assert!(lines[0].contains("listen_typo"), "{lines:?}");
    assert!(
        !dir.path().join("hookyard-data").exists(),
        "a refused config still created data"
    );
}

#[test]
fn unknown_environment_key_exits_64() {
    let dir = temp_dir();
    let mut cmd = hookyard(dir.path());
    cmd.arg("check-config").env("HOOKYARD_SERVER_NOPE", "1");
    let out = run(cmd, "check-config with HOOKYARD_SERVER_NOPE");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].to_lowercase().contains("nope"), "{lines:?}");
}

#[test]
fn check_config_accepts_a_valid_file() {
    let dir = temp_dir();
    let file = dir.path().join("good.toml");
    std::fs::write(&file, good_config(free_port(), free_port())).unwrap();
    let mut cmd = hookyard(dir.path());
    cmd.args(["check-config", "--config"]).arg(&file);
    let out = run(cmd, "check-config");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(stderr_lines(&out).is_empty(), "{out:?}");
    // Environment overrides are checked too: a valid one is fine, a bad value is not.
    let mut cmd = hookyard(dir.path());
    cmd.args(["check-config", "--config"])
        .arg(&file)
        .env("HOOKYARD_DELIVERY_CONCURRENCY", "8");
    assert_eq!(run(cmd, "check-config with env").status.code(), Some(0));
    let mut cmd = hookyard(dir.path());
    cmd.args(["check-config", "--config"])
        .arg(&file)
        .env("HOOKYARD_DELIVERY_CONCURRENCY", "0");
    assert_eq!(
        run(cmd, "check-config with concurrency 0").status.code(),
        Some(64)
    );
}

#[test]
fn non_loopback_listen_without_tokens_exits_64() {
    let dir = temp_dir();
    let file = dir.path().join("open.toml");
    std::fs::write(
        &file,
        format!("[server]\nlisten = \"0.0.0.0:{}\"\n", free_port()),
    )
    .unwrap();
    let mut cmd = hookyard(dir.path());
    cmd.args(["serve", "--config"]).arg(&file);
    let out = run(cmd, "serve on 0.0.0.0 without tokens");
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("token"), "{lines:?}");
    // With the tokens from the environment, the same file passes the check.
    let mut cmd = hookyard(dir.path());
    cmd.args(["check-config", "--config"])
        .arg(&file)
        .env("HOOKYARD_SERVER_INGEST_TOKEN", "i")
        .env("HOOKYARD_SERVER_ADMIN_TOKEN", "a");
    let out = run(cmd, "check-config with tokens");
    // admin_listen stays on loopback by default; only the public listener needed its token.
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_the_server_cleanly() {
    let dir = temp_dir();
    let (public, admin) = (free_port(), free_port());
    let file = dir.path().join("good.toml");
    std::fs::write(&file, good_config(public, admin)).unwrap();
    let mut cmd = hookyard(dir.path());
    cmd.args(["serve", "--config"]).arg(&file);
    let child = cmd.spawn().unwrap();
    let pid = child.id();
    // Make sure the child is killed if anything below panics.
    struct Guard(Option<Child>);
    impl Drop for Guard {
        fn drop(&mut self) {
            if let Some(c) = self.0.as_mut() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
    let mut guard = Guard(Some(child));

    let http = reqwest::Client::new();
    eventually(
        Duration::from_secs(10),
        "hookyard serve answers /healthz",
        || async {
            let r = http
                .get(format!("http://127.0.0.1:{public}/healthz"))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
    let r = http
        .get(format!("http://127.0.0.1:{admin}/admin/v1/webhooks"))
        .bearer_auth("a")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the admin listener is up");
    assert!(
        dir.path().join("data/hookyard.db").exists(),
        "the store is under the working directory"
    );

    let kill = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let child = guard.0.take().unwrap();
    let out = tokio::task::spawn_blocking(move || {
        wait_at_most(child, Duration::from_secs(7), "after SIGTERM")
    })
    .await
    .unwrap();
    let status: ExitStatus = out.status;
    assert_eq!(
        status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The listeners are closed.
    assert!(http
        .get(format!("http://127.0.0.1:{public}/healthz"))
        .send()
        .await
        .is_err());
}
