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
use tokio_rustls::TlsConnector;

use crate::generator::one_shot;
use crate::procfs;
use crate::tls::Tls;

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
    /// A plugin component loaded at start-up, by name (`field-map`, `python`, `js`).
    pub plugin: Option<(String, PathBuf)>,
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
    /// A PostgreSQL database (tokio-postgres URL): each gateway gets a fresh schema in it
    /// instead of a SQLite file.
    pub postgres: Option<String>,
    /// Gateway processes sharing the store (more than 1 needs `postgres`).
    pub processes: usize,
    /// `--tls`: the certificate of both listeners (written into the temporary directory) and the
    /// client that trusts it; `None`: plain HTTP.
    pub tls: Option<Tls>,
}

/// One `hookyard serve` process of a gateway.
struct Proc {
    child: Child,
    pid: u32,
    public: SocketAddr,
    startup: Duration,
    /// Its config, log and plugin cache.
    dir: PathBuf,
}

/// A running gateway: one or more processes on one store. Killed when dropped (and its
/// PostgreSQL schema, if any, dropped after them).
pub struct Gateway {
    // Declared before `schema`: dropped (killed) first.
    procs: Vec<Proc>,
    /// Ingest, health, metrics of the first process.
    pub public: SocketAddr,
    /// Admin API of the first process (webhooks are created through it).
    pub admin: SocketAddr,
    /// The first process: from spawning it to the first `200` of `/readyz`.
    pub startup: Duration,
    options: Options,
    schema: Option<Schema>,
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
        let tls = options.tls.as_ref().map(|t| &t.connector);
        if let Ok((status, _)) =
            one_shot(public, tls, Method::GET, "/readyz", None, Bytes::new()).await
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

/// Writes a private key readable by its owner only.
fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes())?;
    Ok(())
}

fn toml_str(path: &Path) -> String {
    serde_json::to_string(&path.display().to_string()).expect("a string encodes")
}

/// One process's config; `tls`: the certificate and key files of its listeners.
fn config_text(
    options: &Options,
    public: SocketAddr,
    admin: SocketAddr,
    store: &str,
    cache: &Path,
    tls: Option<(&Path, &Path)>,
) -> anyhow::Result<String> {
    let plugins = match &options.plugin {
        Some((name, path)) => format!(
            "[[plugins.load]]\nname = \"{name}\"\npath = {}\n",
            toml_str(
                &std::fs::canonicalize(path)
                    .with_context(|| { format!("the {name} plugin {}", path.display()) })?
            )
        ),
        None => String::new(),
    };
    let store_comment = if options.postgres.is_some() {
        "# PostgreSQL: a schema of its own, created (and dropped) by the harness."
    } else {
        "# Embedded SQLite with its defaults: WAL, synchronous=FULL (an fsync per group commit)."
    };
    // PostgreSQL needs a key every process of a run shares; SQLite makes its own key file beside
    // the database on first start, as a deployment on the default does (and a gateway from
    // before secrets were encrypted, compared in an A/B run, knows no such key).
    let secret_key = if options.postgres.is_some() {
        "# A fixed key: every gateway process of a run shares the PostgreSQL database.\n\
         secret_key = \"aG9va3lhcmQtbG9hZHRlc3Qta2V5LTMyLWJ5dGVzISE=\"\n"
    } else {
        ""
    };
    let tls = match tls {
        Some((cert, key)) => format!(
            "# --tls: a self-signed certificate made by the harness.\ntls_cert = {}\ntls_key = {}\n",
            toml_str(cert),
            toml_str(key)
        ),
        None => String::new(),
    };
    // A gateway that builds plugins in (`plugins.builtin`) would compile them in the background
    // at start, in the middle of the first phase: the harness turns that off where the binary
    // knows the key (an older binary, compared in an A/B run, refuses unknown keys).
    let builtin = if knows_builtin_key(&options.bin) {
        "# No built-in plugin: its first compile would run during the first phase.
builtin = []
"
    } else {
        ""
    };
    Ok(format!(
        r#"# Written by hookyard-loadtest.
[server]
listen = "{public}"
admin_listen = "{admin}"
admin_token = "{ADMIN_TOKEN}"
ingest_token = "{INGEST_TOKEN}"
shutdown_grace_secs = 1
{tls}
[store]
{store_comment}
url = {store}
{secret_key}
[delivery]
allow_networks = ["127.0.0.1/32"]
retry_base_ms = {base}
retry_factor = {factor:?}
retry_max_ms = {max}

[plugins]
cache_dir = {cache}
{builtin}{plugins}
[log]
level = "{level}"
"#,
        store = serde_json::to_string(store).expect("a string encodes"),
        base = options.retry_base_ms,
        factor = options.retry_factor,
        max = options.retry_max_ms,
        cache = toml_str(cache),
        level = options.log_level,
    ))
}

/// Whether the binary accepts `plugins.builtin` (asked once per binary with `check-config`).
fn knows_builtin_key(bin: &Path) -> bool {
    static KNOWN: std::sync::Mutex<Option<HashMap<PathBuf, bool>>> = std::sync::Mutex::new(None);
    let mut known = KNOWN.lock().unwrap_or_else(|p| p.into_inner());
    *known
        .get_or_insert_with(HashMap::new)
        .entry(bin.to_path_buf())
        .or_insert_with(|| {
            let dir = std::env::temp_dir()
                .join(format!("hookyard-loadtest-probe-{}", std::process::id()));
            let file = dir.join("probe.toml");
            let ok = std::fs::create_dir_all(&dir).is_ok()
                && std::fs::write(&file, "[plugins]\nbuiltin = []\n").is_ok()
                && std::process::Command::new(bin)
                    .arg("check-config")
                    .arg("--config")
                    .arg(&file)
                    .current_dir(&dir)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            let _ = std::fs::remove_dir_all(&dir);
            ok
        })
}

impl Gateway {
    /// Makes the store (a SQLite file in a temporary directory, or a fresh PostgreSQL schema),
    /// writes a config per process, starts `hookyard serve --config` for each (the first alone,
    /// so that it migrates the store, then the others) and waits for their `/readyz`. On an
    /// error the processes started so far are killed and the schema dropped.
    pub async fn start(options: &Options) -> anyhow::Result<Gateway> {
        let dir = tempfile::Builder::new()
            .prefix("hookyard-loadtest-")
            .tempdir()
            .context("creating a temporary directory")?;
        let schema = match &options.postgres {
            Some(url) => Some(Schema::create(url).await?),
            None => None,
        };
        let store = match &schema {
            Some(schema) => schema.store_url()?,
            None => format!("sqlite://{}", dir.path().join("hookyard.db").display()),
        };
        let mut gateway = Gateway {
            procs: Vec::new(),
            public: free_port()?,
            admin: free_port()?,
            startup: Duration::ZERO,
            options: options.clone(),
            schema,
            dir,
        };
        // --tls: one certificate and key for every process, in the temporary directory.
        let tls_files = match &options.tls {
            Some(tls) => {
                let cert = gateway.dir.path().join("tls-cert.pem");
                let key = gateway.dir.path().join("tls-key.pem");
                std::fs::write(&cert, &tls.cert_pem)?;
                write_private(&key, &tls.key_pem)?;
                Some((cert, key))
            }
            None => None,
        };
        for i in 0..options.processes.max(1) {
            // The first process in the directory itself (as with one process), the others in
            // subdirectories.
            let pdir = if i == 0 {
                gateway.dir.path().to_path_buf()
            } else {
                gateway.dir.path().join(format!("process-{}", i + 1))
            };
            std::fs::create_dir_all(&pdir)?;
            let (public, admin) = if i == 0 {
                (gateway.public, gateway.admin)
            } else {
                (free_port()?, free_port()?)
            };
            let config = config_text(
                options,
                public,
                admin,
                &store,
                &pdir.join("plugin-cache"),
                tls_files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
            )?;
            std::fs::write(pdir.join("hookyard.toml"), config)?;
            let (child, pid, startup) = spawn_ready(options, &pdir, public)
                .await
                .with_context(|| format!("gateway process {} of {}", i + 1, options.processes))?;
            gateway.procs.push(Proc {
                child,
                pid,
                public,
                startup,
                dir: pdir,
            });
        }
        gateway.startup = gateway.procs[0].startup;
        Ok(gateway)
    }

    /// Stops the processes and starts them again on the same store and directories (compiled
    /// plugin cache): a warm start. `startup` becomes the new start's.
    pub async fn restart(mut self) -> anyhow::Result<Gateway> {
        for p in &mut self.procs {
            let _ = p.child.kill().await;
        }
        for p in &mut self.procs {
            let (child, pid, startup) = spawn_ready(&self.options, &p.dir, p.public).await?;
            p.child = child;
            p.pid = pid;
            p.startup = startup;
        }
        self.startup = self.procs[0].startup;
        Ok(self)
    }

    /// The SQLite database file, when the store is SQLite.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        match self.schema {
            Some(_) => None,
            None => Some(self.dir.path().join("hookyard.db")),
        }
    }

    /// The bytes the store's data takes: SQLite's used pages (the file without its free
    /// pages, the WAL's committed content included, read as any reader would), or the total
    /// size of the PostgreSQL schema's tables with their indexes and TOAST.
    pub async fn store_bytes(&self) -> anyhow::Result<u64> {
        if let Some(url) = self.postgres_store_url()? {
            let client = connect(&url).await?;
            let row = client
                .query_one(
                    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0)::bigint \
                     FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'm')",
                    &[],
                )
                .await
                .context("measuring the PostgreSQL schema")?;
            return Ok(row.get::<_, i64>(0).max(0) as u64);
        }
        let db = self.dir.path().join("hookyard.db");
        let out = Command::new("sqlite3")
            .arg(&db)
            .arg(
                "PRAGMA busy_timeout = 10000; SELECT (SELECT page_count FROM pragma_page_count()) \
                 - (SELECT freelist_count FROM pragma_freelist_count()), \
                 (SELECT page_size FROM pragma_page_size());",
            )
            .output()
            .await
            .context("running sqlite3 to measure the store (is the sqlite3 command installed?)")?;
        if !out.status.success() {
            bail!(
                "sqlite3 on {}: {}",
                db.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().last().unwrap_or_default();
        let (pages, size) = line
            .split_once('|')
            .with_context(|| format!("sqlite3 answered {text:?}"))?;
        Ok(pages.trim().parse::<u64>()? * size.trim().parse::<u64>()?)
    }

    /// The store's URL (with its schema as search path), when the store is PostgreSQL.
    pub fn postgres_store_url(&self) -> anyhow::Result<Option<String>> {
        self.schema.as_ref().map(Schema::store_url).transpose()
    }

    /// The client for the gateway's listeners: `Some` with `--tls`.
    pub fn tls(&self) -> Option<TlsConnector> {
        self.options.tls.as_ref().map(|t| t.connector.clone())
    }

    /// Every process's id.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(|p| p.pid).collect()
    }

    /// Every process's public address (ingest), the first first.
    pub fn publics(&self) -> Vec<SocketAddr> {
        self.procs.iter().map(|p| p.public).collect()
    }

    /// Start-up times of the processes after the first.
    pub fn other_startups(&self) -> Vec<Duration> {
        self.procs.iter().skip(1).map(|p| p.startup).collect()
    }

    /// Warnings and errors in the gateway logs (count, over every process).
    pub fn log_problems(&self) -> usize {
        self.procs
            .iter()
            .map(|p| {
                std::fs::read_to_string(p.dir.join("gateway.log"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .count()
            })
            .sum()
    }

    /// `POST /admin/v1/webhooks` (on the first process).
    pub async fn create_webhook(&self, spec: &serde_json::Value) -> anyhow::Result<()> {
        self.admin_post("/admin/v1/webhooks", spec).await
    }

    /// `POST` of `spec` to an admin route (on the first process); an error unless 2xx.
    pub async fn admin_post(&self, path: &str, spec: &serde_json::Value) -> anyhow::Result<()> {
        let (status, body) = one_shot(
            self.admin,
            self.tls().as_ref(),
            Method::POST,
            path,
            Some(ADMIN_TOKEN),
            Bytes::from(serde_json::to_vec(spec)?),
        )
        .await?;
        if !status.is_success() {
            bail!(
                "POST {path} ({}): {status} {}",
                spec["name"],
                String::from_utf8_lossy(&body)
            );
        }
        Ok(())
    }

    /// `GET /metrics` of the first process, as `name{labels}` → value.
    pub async fn metrics(&self) -> anyhow::Result<HashMap<String, f64>> {
        scrape(self.public, self.tls().as_ref()).await
    }

    /// `GET /metrics` of every process, summed (meaningful for counters; a shared gauge such as
    /// the queue depth comes out N times).
    pub async fn metrics_sum(&self) -> anyhow::Result<HashMap<String, f64>> {
        let mut sum = HashMap::new();
        for p in &self.procs {
            for (k, v) in scrape(p.public, self.tls().as_ref()).await? {
                *sum.entry(k).or_insert(0.0) += v;
            }
        }
        Ok(sum)
    }

    /// Pending deliveries (`hookyard_queue_depth`, of the first process: the queue is shared).
    pub async fn queue_depth(&self) -> anyhow::Result<u64> {
        let m = self.metrics().await?;
        Ok(m.get("hookyard_queue_depth").copied().unwrap_or(0.0) as u64)
    }

    /// Kills the processes, then drops the PostgreSQL schema.
    pub async fn stop(mut self) {
        for p in &mut self.procs {
            let _ = p.child.kill().await;
        }
        if let Some(schema) = &mut self.schema {
            schema.drop_now().await;
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        // An error path (or an interrupt): kill the processes before the schema goes.
        for p in &mut self.procs {
            let _ = p.child.start_kill();
        }
    }
}

async fn scrape(
    public: SocketAddr,
    tls: Option<&TlsConnector>,
) -> anyhow::Result<HashMap<String, f64>> {
    let (status, body) = one_shot(public, tls, Method::GET, "/metrics", None, Bytes::new())
        .await
        .context("scraping /metrics")?;
    if !status.is_success() {
        bail!("/metrics answered {status}");
    }
    Ok(parse_metrics(&String::from_utf8_lossy(&body)))
}

/// A PostgreSQL schema made for one gateway: created before it starts, dropped (`CASCADE`)
/// when it stops, or when this is dropped on an error path.
pub struct Schema {
    url: String,
    name: String,
    dropped: bool,
}

/// Schemas made by this process so far (for unique names).
static SCHEMAS: AtomicU64 = AtomicU64::new(0);

/// Connects to `url` (no TLS); the connection is driven by a task of its own.
async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to PostgreSQL at {}", redact(url)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Fails early when `url` is not a usable PostgreSQL URL: it must parse, take no `options`
/// of its own (the harness sets the search path there) and accept a connection.
pub async fn check_postgres(url: &str) -> anyhow::Result<()> {
    with_search_path(url, "probe")?;
    let client = connect(url).await?;
    client
        .simple_query("SELECT 1")
        .await
        .context("querying PostgreSQL")?;
    Ok(())
}

/// `url` with `options=-c search_path=<schema>` added to its query.
fn with_search_path(url: &str, schema: &str) -> anyhow::Result<String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        bail!(
            "--postgres wants a URL postgres://user@host:port/db, got {:?}",
            redact(url)
        );
    }
    let query = url.split_once('?').map_or("", |(_, q)| q);
    if query.split('&').any(|kv| kv.starts_with("options=")) {
        bail!("the --postgres URL has options= already; the harness sets it (search_path)");
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}options=-c%20search_path%3D{schema}"))
}

/// `url` without its password, for messages and reports.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.split_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

impl Schema {
    /// Creates a uniquely named schema in the database of `url`.
    pub async fn create(url: &str) -> anyhow::Result<Schema> {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let name = format!(
            "hookyard_loadtest_{secs}_{}_{}",
            std::process::id(),
            SCHEMAS.fetch_add(1, Ordering::Relaxed) + 1
        );
        with_search_path(url, &name)?;
        let client = connect(url).await?;
        client
            .batch_execute(&format!("CREATE SCHEMA \"{name}\""))
            .await
            .with_context(|| format!("creating schema {name}"))?;
        eprintln!("  PostgreSQL schema {name} created");
        Ok(Schema {
            url: url.to_owned(),
            name,
            dropped: false,
        })
    }

    /// The gateway's `store.url`: the database with this schema as its search path.
    pub fn store_url(&self) -> anyhow::Result<String> {
        with_search_path(&self.url, &self.name)
    }

    /// `DROP SCHEMA ... CASCADE` (once; a failure is reported, not returned).
    pub async fn drop_now(&mut self) {
        if self.dropped {
            return;
        }
        self.dropped = true;
        match drop_schema(&self.url, &self.name).await {
            Ok(()) => eprintln!("  PostgreSQL schema {} dropped", self.name),
            Err(e) => eprintln!(
                "  could not drop PostgreSQL schema {} (drop it by hand): {e:#}",
                self.name
            ),
        }
    }
}

async fn drop_schema(url: &str, name: &str) -> anyhow::Result<()> {
    let client = connect(url).await?;
    // The gateways were just killed: their sessions may hold locks for a moment longer.
    client
        .batch_execute(&format!(
            "SET lock_timeout = '15s'; DROP SCHEMA IF EXISTS \"{name}\" CASCADE"
        ))
        .await?;
    Ok(())
}

impl Drop for Schema {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Not stopped the ordinary way (an error, an interrupt): drop it on a runtime of its
        // own, on a thread of its own (this one may be a runtime's).
        self.dropped = true;
        let (url, name) = (self.url.clone(), self.name.clone());
        let done = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                tokio::time::timeout(Duration::from_secs(30), drop_schema(&url, &name))
                    .await
                    .map_err(|_| anyhow::anyhow!("timed out"))?
            })
        })
        .join();
        match done {
            Ok(Ok(())) => eprintln!("  PostgreSQL schema {} dropped", self.name),
            Ok(Err(e)) => eprintln!(
                "  could not drop PostgreSQL schema {} (drop it by hand): {e:#}",
                self.name
            ),
            Err(_) => eprintln!(
                "  could not drop PostgreSQL schema {} (drop it by hand)",
                self.name
            ),
        }
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
        let pids = gateway.pids();
        let rss_task = {
            let (stop, peak) = (stop.clone(), peak.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // With several processes: the peak of their sum.
                    if let Some(s) = procfs::sample_sum(&pids) {
                        peak.fetch_max(s.rss_kib, Ordering::Relaxed);
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            })
        };
        let publics = gateway.publics();
        let tls = gateway.tls();
        let gauge_task = {
            let (stop, gauges) = (stop.clone(), gauges.clone());
            tokio::spawn(async move {
                'sampling: while !stop.load(Ordering::Relaxed) {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    // In flight: the sum over the processes. Due and depth: the first's (the
                    // queue is shared).
                    let mut scraped = Vec::with_capacity(publics.len());
                    for &public in &publics {
                        let Ok(m) = scrape(public, tls.as_ref()).await else {
                            continue 'sampling;
                        };
                        scraped.push(m);
                    }
                    let get = |m: &HashMap<String, f64>, k: &str| m.get(k).copied().unwrap_or(0.0);
                    let mut g = crate::receiver::lock(&gauges);
                    g.samples += 1;
                    g.in_flight += scraped
                        .iter()
                        .map(|m| get(m, "hookyard_deliveries_in_flight"))
                        .sum::<f64>();
                    g.due += get(&scraped[0], "hookyard_queue_due");
                    g.max_depth = g.max_depth.max(get(&scraped[0], "hookyard_queue_depth"));
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

    #[test]
    fn the_search_path_goes_into_the_options() {
        assert_eq!(
            with_search_path("postgres://postgres@127.0.0.1:5432/test", "s1").unwrap(),
            "postgres://postgres@127.0.0.1:5432/test?options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            with_search_path("postgresql://u@h/db?connect_timeout=5", "s1").unwrap(),
            "postgresql://u@h/db?connect_timeout=5&options=-c%20search_path%3Ds1"
        );
        assert!(with_search_path("postgres://u@h/db?options=-c%20x%3Dy", "s1").is_err());
        assert!(with_search_path("sqlite://x.db", "s1").is_err());
        // tokio-postgres reads it back as the options of the session.
        let config: tokio_postgres::Config = with_search_path("postgres://u@h:5433/db", "s1")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(config.get_options(), Some("-c search_path=s1"));
        assert_eq!(config.get_dbname(), Some("db"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("postgres://u:secret@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("postgres://h/db"), "postgres://h/db");
    }
}
