//! The gateway under test: a `hookyard serve` child process on a temporary directory.

use std::collections::HashMap;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use hyper::Method;
use tokio::process::{Child, Command};

use crate::generator::one_shot;
use crate::procfs;

/// Admin token of the gateways the harness starts.
pub const ADMIN_TOKEN: &str = "loadtest-admin-token";
/// Ingest token of the gateways the harness starts.
pub const INGEST_TOKEN: &str = "loadtest-ingest-token";
/// How long the gateway may take to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// How to start a gateway.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `hookyard` binary.
    pub bin: PathBuf,
    /// `field_map.wasm`, loaded as plugin `field-map` when set.
    pub field_map: Option<PathBuf>,
    /// `delivery.retry_base_ms`.
    pub retry_base_ms: u64,
    /// `delivery.retry_factor`.
    pub retry_factor: f64,
    /// `delivery.retry_max_ms`.
    pub retry_max_ms: u64,
    /// `log.level`.
    pub log_level: String,
    /// Extra environment (`HOOKYARD_*` overrides).
    pub env: Vec<(String, String)>,
}

/// A running gateway. Killed when dropped.
pub struct Gateway {
    child: Child,
    pid: u32,
    /// Ingest, health, metrics.
    pub public: SocketAddr,
    /// Admin API.
    pub admin: SocketAddr,
    /// From spawning the process to the first `200` of `/readyz`.
    pub startup: Duration,
    options: Options,
    dir: tempfile::TempDir,
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Starts `hookyard serve` on the config in `dir` (appending to its log) and waits until
/// `/readyz` answers 200: the child, its pid and how long that took.
async fn spawn_ready(
    options: &Options,
    dir: &Path,
    public: SocketAddr,
) -> anyhow::Result<(Child, u32, Duration)> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("gateway.log"))?;
    let spawned = Instant::now();
    let mut child = Command::new(&options.bin)
        .arg("serve")
        .arg("--config")
        .arg(dir.join("hookyard.toml"))
        .current_dir(dir)
        .envs(options.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", options.bin.display()))?;
    let pid = child.id().context("the gateway exited at once")?;
    loop {
        if let Ok((status, _)) = one_shot(public, Method::GET, "/readyz", None, Bytes::new()).await
        {
            if status.is_success() {
                return Ok((child, pid, spawned.elapsed()));
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "the gateway exited ({status}) before it was ready:\n{}",
                log_tail(dir)
            );
        }
        if spawned.elapsed() > READY_TIMEOUT {
            bail!(
                "the gateway was not ready after {READY_TIMEOUT:?}:\n{}",
                log_tail(dir)
            );
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The last lines of the gateway's log in `dir`.
fn log_tail(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("gateway.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

fn toml_str(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("a string encodes")
}

impl Gateway {
    /// Writes a config, starts `hookyard serve --config` and waits for `/readyz`.
    pub async fn start(options: &Options) -> anyhow::Result<Gateway> {
        let dir = tempfile::Builder::new()
            .prefix("hookyard-loadtest-")
            .tempdir()
            .context("creating a temporary directory")?;
        let public = free_port()?;
        let admin = free_port()?;
        let plugins = match &options.field_map {
            Some(path) => format!(
                "[[plugins.load]]\nname = \"field-map\"\npath = {}\n",
                toml_str(
                    &std::fs::canonicalize(path)
                        .with_context(|| { format!("the field-map plugin {}", path.display()) })?
                )
            ),
            None => String::new(),
        };
        let config = format!(
            r#"# Written by hookyard-loadtest.
[server]
listen = "{public}"
admin_listen = "{admin}"
admin_token = "{ADMIN_TOKEN}"
ingest_token = "{INGEST_TOKEN}"
shutdown_grace_secs = 1

[store]
# Embedded SQLite with its defaults: WAL, synchronous=FULL (an fsync per group commit).
url = "sqlite://{db}"

[delivery]
allow_networks = ["127.0.0.1/32"]
retry_base_ms = {base}
retry_factor = {factor:?}
retry_max_ms = {max}

[plugins]
cache_dir = {cache}
{plugins}
[log]
level = "{level}"
"#,
            db = dir.path().join("hookyard.db").display(),
            base = options.retry_base_ms,
            factor = options.retry_factor,
            max = options.retry_max_ms,
            cache = toml_str(&dir.path().join("plugin-cache")),
            level = options.log_level,
        );
        std::fs::write(dir.path().join("hookyard.toml"), config)?;
        let (child, pid, startup) = spawn_ready(options, dir.path(), public).await?;
        Ok(Gateway {
            child,
            pid,
            public,
            admin,
            startup,
            options: options.clone(),
            dir,
        })
    }

    /// Stops the process and starts it again on the same directory (database, compiled plugin
    /// cache): a warm start. `startup` becomes the new start's.
    pub async fn restart(mut self) -> anyhow::Result<Gateway> {
        let _ = self.child.kill().await;
        let (child, pid, startup) =
            spawn_ready(&self.options, self.dir.path(), self.public).await?;
        self.child = child;
        self.pid = pid;
        self.startup = startup;
        Ok(self)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Warnings and errors in the gateway's log (count).
    pub fn log_problems(&self) -> usize {
        let text = std::fs::read_to_string(self.dir.path().join("gateway.log")).unwrap_or_default();
        text.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .count()
    }

    /// `POST /admin/v1/webhooks`.
    pub async fn create_webhook(&self, spec: &serde_json::Value) -> anyhow::Result<()> {
        let (status, body) = one_shot(
            self.admin,
            Method::POST,
            "/admin/v1/webhooks",
            Some(ADMIN_TOKEN),
            Bytes::from(serde_json::to_vec(spec)?),
        )
        .await?;
        if !status.is_success() {
            bail!(
                "creating webhook {}: {status} {}",
                spec["name"],
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// `GET /metrics`, as `name{labels}` → value.
    pub async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        let (status, body) = one_shot(self.public, Method::GET, "/metrics", None, Bytes::new())
            .await
            .context("scraping /metrics")?;
        if !status.is_success() {
            bail!("/metrics answered {status}");
        }
        Ok(parse_metrics(&String::from_utf8_lossy(&body)))
    }

    /// Pending deliveries (`hookyard_queue_depth`).
    pub async fn queue_depth(&self) -> anyhow::Result<u64> {
        let m = self.metrics().await?;
        Ok(m.get("hookyard_queue_depth").copied().unwrap_or(0.0) as u64)
    }

    /// Kills the process.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// Parses the Prometheus text format: `name{labels} value` lines, comments skipped.
pub fn parse_metrics(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            Some((name.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// Watches a gateway during a phase: its peak RSS (every 100 ms) and the gauges of `/metrics`
/// (every 500 ms).
pub struct Monitor {
    stop: Arc<AtomicBool>,
    peak_rss_kib: Arc<AtomicU64>,
    gauges: Arc<std::sync::Mutex<Gauges>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Sums of the sampled gauges.
#[derive(Default, Debug, Clone)]
pub struct Gauges {
    /// Samples taken.
    pub samples: u64,
    /// Sum of `hookyard_deliveries_in_flight`.
    pub in_flight: f64,
    /// Sum of `hookyard_queue_due`.
    pub due: f64,
    /// Largest `hookyard_queue_depth` seen.
    pub max_depth: f64,
}

impl Gauges {
    /// Mean in-flight deliveries.
    pub fn mean_in_flight(&self) -> f64 {
        self.in_flight / self.samples.max(1) as f64
    }

    /// Mean due deliveries.
    pub fn mean_due(&self) -> f64 {
        self.due / self.samples.max(1) as f64
    }
}

impl Monitor {
    /// Starts watching `gateway`.
    pub fn start(gateway: &Gateway) -> Monitor {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let gauges = Arc::new(std::sync::Mutex::new(Gauges::default()));
        let pid = gateway.pid();
        let rss_task = {
            let (stop, peak) = (stop.clone(), peak.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    if let Some(s) = procfs::sample(Some(pid)) {
                        peak.fetch_max(s.rss_kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let public = gateway.public;
        let gauge_task = {
            let (stop, gauges) = (stop.clone(), gauges.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let Ok((_, body)) =
                        one_shot(public, Method::GET, "/metrics", None, Bytes::new()).await
                    else {
                        continue;
                    };
                    let m = parse_metrics(&String::from_utf8_lossy(&body));
                    let get = |k: &str| m.get(k).copied().unwrap_or(0.0);
                    let mut g = crate::receiver::lock(&gauges);
                    g.samples += 1;
                    g.in_flight += get("hookyard_deliveries_in_flight");
                    g.due += get("hookyard_queue_due");
                    g.max_depth = g.max_depth.max(get("hookyard_queue_depth"));
                }
            })
        };
        Monitor {
            stop,
            peak_rss_kib: peak,
            gauges,
            tasks: vec![rss_task, gauge_task],
        }
    }

    /// Stops watching: the peak RSS (KiB) and the gauges.
    pub async fn finish(self) -> (u64, Gauges) {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            let _ = task.await;
        }
        let gauges = crate::receiver::lock(&self.gauges).clone();
        (self.peak_rss_kib.load(Ordering::Relaxed), gauges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_prometheus_text_format() {
        let text = "# HELP hookyard_queue_depth Pending deliveries\n\
                    # TYPE hookyard_queue_depth gauge\n\
                    hookyard_queue_depth 42\n\
                    hookyard_delivery_attempts_total{outcome=\"succeeded\"} 7\n\
                    hookyard_plugin_call_duration_seconds_sum 0.5\n\
                    # EOF\n";
        let m = parse_metrics(text);
        assert_eq!(m["hookyard_queue_depth"], 42.0);
        assert_eq!(
            m["hookyard_delivery_attempts_total{outcome=\"succeeded\"}"],
            7.0
        );
        assert_eq!(m["hookyard_plugin_call_duration_seconds_sum"], 0.5);
        assert_eq!(m.len(), 3);
    }
}
