//! The configuration: one typed [`Config`], loaded in layers.
//!
//! Built-in defaults (`defaults.toml`, shipped as the documented example) < the file given with
//! `--config` < `HOOKYARD_<SECTION>_<KEY>` environment variables. The layers are merged as TOML
//! tables and deserialised once, with unknown keys rejected, then [`Config::validate`] checks
//! what types cannot. The loader never mutates the process environment.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use ipnet::IpNet;
use serde::Deserialize;

use crate::model::WebhookSpec;

mod retention;
pub use retention::{RefusalsConfig, RetentionConfig};

/// The built-in defaults, also the documented example config.
pub const DEFAULTS: &str = include_str!("defaults.toml");

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "HOOKYARD_";

/// Environment variables with the prefix that are not config keys.
const ENV_NOT_KEYS: &[&str] = &["HOOKYARD_CONFIG", "HOOKYARD_LOG", SECRET_KEY_ENV];

/// The environment variable of the secret keys (the contract's name for `store.secret_key`).
pub const SECRET_KEY_ENV: &str = "HOOKYARD_SECRET_KEY";

/// Why a configuration was refused. Printed as one line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// TOML syntax or types.
    #[error("invalid config{origin}: {message}")]
    Parse {
        /// Where (" in FILE" or " in HOOKYARD_X").
        origin: String,
        /// The parser's message, on one line.
        message: String,
    },
    /// A value that parses but is not acceptable.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners and tokens.
    pub server: ServerConfig,
    /// Where state lives.
    pub store: StoreConfig,
    /// The internal system's endpoint for write-backs and inbound records.
    pub sink: SinkConfig,
    /// How deliveries are sent.
    pub delivery: DeliveryConfig,
    /// WebAssembly plugins.
    pub plugins: PluginsConfig,
    /// Logging.
    pub log: LogConfig,
    /// How long the Webhook Log keeps finished deliveries and events.
    pub retention: RetentionConfig,
    /// How refused inbound pushes are logged.
    pub refusals: RefusalsConfig,
    /// The admin console at `/console/` on the admin listener.
    pub console: ConsoleConfig,
    /// Who owns the webhooks declared in the file: `managed` (the file: they are applied at
    /// every start and read-only through the API) or `seed` (the store: each is created once,
    /// when the store has no webhook of its name, and the API edits it from then on).
    #[serde(default)]
    pub webhooks_from_config: WebhooksFromConfig,
    /// Webhooks declared in the file, applied by name at start-up.
    #[serde(default)]
    pub webhooks: Vec<WebhookSpec>,
    /// The event catalog's types declared in the file, created or updated by name at start-up
    /// (before the webhooks, which are checked against the catalog).
    #[serde(default)]
    pub event_types: Vec<crate::catalog::EventTypeSpec>,
    /// Message-bus sources declared in the file, applied by name at start-up (a paused one
    /// stays paused).
    #[serde(default)]
    pub sources: Vec<crate::source::SourceSpec>,
    /// Shared connections declared in the file, applied by name at start-up; the admin API may
    /// read them but not change them.
    #[serde(default)]
    pub connections: Vec<crate::connections::ConnectionSpec>,
    /// The config file this was loaded from (none: defaults and environment only), for
    /// messages that send an admin to it.
    #[serde(skip)]
    pub file: Option<String>,
}

/// `webhooks_from_config`: who owns the webhooks declared in the config file.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum WebhooksFromConfig {
    /// The file: each declared webhook is created or updated to match it at every start, and
    /// the API refuses to change or delete it (409), so that no edit is silently undone by the
    /// next restart. Replay and test sends are allowed.
    #[default]
    Managed,
    /// A one-time seed: a declared webhook is created only when the store has none of its name;
    /// from then on the store owns it and API edits persist across restarts.
    Seed,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Public listener: ingest, inbound, health, metrics.
    pub listen: SocketAddr,
    /// Admin listener; may equal `listen`.
    pub admin_listen: SocketAddr,
    /// Bearer token of the admin API; empty: none (loopback only).
    pub admin_token: String,
    /// Bearer token of event ingest; empty: none (loopback only).
    pub ingest_token: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Public base URL for inbound URLs; empty: `http://<listen>`.
    pub public_url: String,
    /// Most events in one batch.
    pub max_batch_events: usize,
    /// Drain time for in-flight deliveries at shutdown, in seconds.
    pub shutdown_grace_secs: u64,
    /// Time from a connection's start, or the end of its previous response, to a complete
    /// request head (and for the TLS handshake), in milliseconds.
    pub header_read_timeout_ms: u64,
    /// Time from a request head to the end of its body, in milliseconds.
    pub body_timeout_ms: u64,
    /// A connection with no byte read or written for this long, while no handler is working
    /// on one of its requests, is closed; in milliseconds.
    pub idle_timeout_ms: u64,
    /// Connections open at once on the public listener; 0: half of RLIMIT_NOFILE.
    pub max_connections: usize,
    /// Connections open at once on the admin listener; 0: a sixteenth of RLIMIT_NOFILE.
    pub admin_max_connections: usize,
    /// `/v1/inbound` requests per second per client address; 0: no limit.
    pub inbound_rate_per_sec: u32,
    /// Requests a client address may send at once above the rate (the bucket's size).
    pub inbound_rate_burst: u32,
    /// Client addresses the rate limiter remembers at most.
    pub inbound_rate_max_clients: usize,
    /// PEM certificate chain; with `tls_key`, both listeners speak TLS only.
    pub tls_cert: String,
    /// PEM private key of `tls_cert`.
    pub tls_key: String,
    /// PEM CA certificates; when set, the public listener requires a client certificate they
    /// signed (mTLS).
    pub tls_client_ca: String,
    /// How often the certificate and key files are checked for a change, in milliseconds.
    pub tls_reload_interval_ms: u64,
}

impl ServerConfig {
    /// Whether the listeners speak TLS.
    pub fn tls(&self) -> bool {
        !self.tls_cert.is_empty()
    }
}

/// `[console]`: the admin console's sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Serve the console at `/console/` on the admin listener.
    pub enabled: bool,
    /// A session unused for this long ends, in seconds.
    pub session_idle_secs: u64,
    /// A session ends this long after sign-in at the latest (the cookie's Max-Age), in seconds.
    pub session_max_secs: u64,
    /// Sessions held at once; past it the least recently used one is dropped.
    pub max_sessions: usize,
    /// Origins (`https://admin.example.com`) besides the listener's own from which the console
    /// may sign in and make changes: set it when a reverse proxy in front rewrites `Host`.
    pub allowed_origins: Vec<String>,
}

/// `[sink]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// Endpoint; empty: no sink.
    pub url: String,
    /// Credentials.
    pub auth: crate::model::AuthConfig,
    /// A shared connection whose credentials the sink sends, in place of `auth`; empty: none.
    pub connection: String,
    /// Signing secret; empty: unsigned.
    pub signing_secret: String,
    /// Request timeout, in milliseconds.
    pub timeout_ms: u64,
    /// Attempts before a message is dead.
    pub max_attempts: u32,
}

/// `[store]`.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// `sqlite://PATH` or `postgres://...`.
    pub url: String,
    /// Keys encrypting secrets at rest: comma-separated base64 of 32 bytes, the first
    /// encrypting (also `HOOKYARD_SECRET_KEY`). Empty: `secret_key_file`.
    pub secret_key: String,
    /// A file of keys, one base64 key a line, the first encrypting. Empty: (SQLite)
    /// `secret.key` beside the database, generated on first start.
    pub secret_key_file: String,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a database password and the keys are keys: neither is printed.
        f.debug_struct("StoreConfig")
            .field(
                "secret_key",
                &(!self.secret_key.is_empty()).then_some(crate::model::MASK),
            )
            .field("secret_key_file", &self.secret_key_file)
            .finish_non_exhaustive()
    }
}

/// `[delivery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Networks exempt from SSRF protection.
    pub allow_networks: Vec<IpNet>,
    /// Deliveries in flight at once in this process.
    pub concurrency: usize,
    /// Deliveries in flight at once per webhook, unless the webhook says otherwise.
    pub per_webhook_concurrency: u32,
    /// Lease of a claimed delivery, in seconds.
    pub lease_secs: u64,
    /// Poll interval when idle, in milliseconds.
    pub poll_interval_ms: u64,
    /// Start new deliveries in the accepting process, committed already leased (no claim).
    pub start_at_ingest: bool,
    /// First retry delay, in milliseconds.
    pub retry_base_ms: u64,
    /// Growth of the retry delay per attempt.
    pub retry_factor: f64,
    /// Longest retry delay, in milliseconds.
    pub retry_max_ms: u64,
    /// Random jitter of retry delays, as a fraction.
    pub retry_jitter: f64,
    /// Statuses retried besides 5xx.
    pub retryable_statuses: Vec<u16>,
    /// Longest Retry-After honoured, in seconds.
    pub max_retry_after_secs: u64,
    /// How much of a response body the log keeps, in bytes.
    pub log_body_bytes: usize,
    /// User-Agent of deliveries.
    pub user_agent: String,
    /// OAuth2 tokens are refreshed this long before they expire, in seconds.
    pub token_refresh_margin_secs: u64,
    /// Ingest answers 503 while more deliveries than this are due and not done; 0: no limit.
    pub ingest_backlog_limit: u64,
    /// Retry-After of an ingest refused for the backlog, in seconds.
    pub ingest_retry_after_secs: u64,
}

/// `[plugins]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginsConfig {
    /// Cache of compiled plugin code.
    pub cache_dir: std::path::PathBuf,
    /// Memory cap of one call, in MiB.
    pub memory_limit_mb: usize,
    /// Time cap of one call, in milliseconds.
    pub timeout_ms: u64,
    /// Output cap of one call, in bytes.
    pub max_output_bytes: usize,
    /// Upload cap, in bytes.
    pub max_upload_bytes: usize,
    /// Calls at once.
    pub max_concurrent_calls: usize,
    /// Threads that compile uploaded components (compiles beyond them wait their turn).
    pub compile_threads: usize,
    /// Nice value added to the compile threads (0 to 19), so live calls win the CPU.
    pub compile_nice: i32,
    /// Plugins loaded from files at start-up.
    #[serde(default)]
    pub load: Vec<PluginFile>,
    /// First-party plugins embedded in the binary, installed at start-up by name
    /// ([`crate::plugin::builtin`]).
    pub builtin: Vec<String>,
    /// Warm instances: reuse of instantiated plugins across calls (`[plugins.instances]`).
    pub instances: InstancesConfig,
}

/// `[plugins.instances]`: when a plugin instance is reused and when it is thrown away. An
/// instance serves one (plugin version, webhook) pair only; a trap, a timeout or a memory-cap
/// hit always discards it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesConfig {
    /// `warm`: reuse instances; `fresh`: a new instance for every call, whatever the webhook
    /// or the plugin asks.
    pub mode: crate::model::Instances,
    /// Calls one instance serves before it is discarded.
    pub max_calls: u32,
    /// Age at which an instance is discarded (after its current call), in seconds.
    pub max_age_secs: u64,
    /// An idle instance unused for this long is dropped, in seconds.
    pub idle_secs: u64,
    /// Idle instances kept per (plugin version, webhook).
    pub idle_per_webhook: usize,
    /// Idle instances kept in all.
    pub idle_total: usize,
    /// Linear memory of all idle instances together, in MiB (the size of their memories,
    /// an upper bound of what they keep resident).
    pub idle_memory_mb: usize,
}

/// A plugin loaded from a file at start-up.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginFile {
    /// Plugin name.
    pub name: String,
    /// Path of the component.
    pub path: std::path::PathBuf,
}

/// `[log]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// tracing filter directive.
    pub level: String,
    /// `text` or `json`.
    pub format: LogFormat,
}

/// Log output format.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl Default for Config {
    fn default() -> Self {
        // The defaults file is part of the binary and covered by tests.
        Config::from_layers(None, std::iter::empty()).expect("built-in defaults are valid")
    }
}

impl Config {
    /// Loads defaults < `file` < environment (`HOOKYARD_*` variables of `env`).
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let file_layer = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Some((path.display().to_string(), text))
            }
            None => None,
        };
        Config::from_layers(file_layer, env)
    }

    /// Loads defaults < `file` (origin, text) < environment.
    pub fn from_layers(
        file: Option<(String, String)>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, Error> {
        let mut merged = parse_table(DEFAULTS, "defaults")?;
        let mut origin_file = None;
        if let Some((origin, text)) = file {
            merge(&mut merged, parse_table(&text, &origin)?);
            origin_file = Some(origin);
        }
        merge(&mut merged, env_layer(env)?);
        let mut config: Config =
            toml::Value::Table(merged)
                .try_into()
                .map_err(|e: toml::de::Error| Error::Parse {
                    origin: String::new(),
                    message: one_line(&e.to_string()),
                })?;
        config.file = origin_file;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), Error> {
        let s = &self.server;
        for (addr, token, what) in [
            (s.listen, &s.ingest_token, "server.ingest_token"),
            (s.admin_listen, &s.admin_token, "server.admin_token"),
        ] {
            if token.is_empty() && !addr.ip().is_loopback() {
                return Err(Error::Invalid(format!(
                    "{what} must be set when listening on the non-loopback address {addr}"
                )));
            }
        }
        if self.retention.batch_size == 0 || self.retention.interval_secs == 0 {
            return Err(Error::Invalid(
                "retention.batch_size and retention.interval_secs must be positive".into(),
            ));
        }
        if s.max_body_bytes == 0 || s.max_batch_events == 0 {
            return Err(Error::Invalid(
                "server.max_body_bytes and server.max_batch_events must be positive".into(),
            ));
        }
        if s.header_read_timeout_ms == 0
            || s.body_timeout_ms == 0
            || s.idle_timeout_ms == 0
            || s.tls_reload_interval_ms == 0
        {
            return Err(Error::Invalid(
                "server.header_read_timeout_ms, server.body_timeout_ms, server.idle_timeout_ms and server.tls_reload_interval_ms must be positive".into(),
            ));
        }
        if s.inbound_rate_per_sec > 0
            && (s.inbound_rate_burst == 0 || s.inbound_rate_max_clients == 0)
        {
            return Err(Error::Invalid(
                "server.inbound_rate_burst and server.inbound_rate_max_clients must be positive when server.inbound_rate_per_sec is set".into(),
            ));
        }
        if s.tls_cert.is_empty() != s.tls_key.is_empty() {
            return Err(Error::Invalid(
                "server.tls_cert and server.tls_key must be set together".into(),
            ));
        }
        if !s.tls_client_ca.is_empty() && s.tls_cert.is_empty() {
            return Err(Error::Invalid(
                "server.tls_client_ca needs server.tls_cert and server.tls_key".into(),
            ));
        }
        let c = &self.console;
        if c.session_idle_secs == 0 || c.session_max_secs == 0 || c.max_sessions == 0 {
            return Err(Error::Invalid(
                "console.session_idle_secs, console.session_max_secs and console.max_sessions must be positive".into(),
            ));
        }
        let is_origin = |o: &str| {
            reqwest::Url::parse(o).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && u.path() == "/"
                    && u.query().is_none()
                    && u.username().is_empty()
            })
        };
        if let Some(o) = c.allowed_origins.iter().find(|o| !is_origin(o)) {
            return Err(Error::Invalid(format!(
                "console.allowed_origins: {o:?} is not an origin like https://admin.example.com"
            )));
        }
        let d = &self.delivery;
        if d.concurrency == 0 || d.per_webhook_concurrency == 0 {
            return Err(Error::Invalid(
                "delivery.concurrency and delivery.per_webhook_concurrency must be positive".into(),
            ));
        }
        if d.lease_secs < 5 {
            return Err(Error::Invalid(
                "delivery.lease_secs must be at least 5".into(),
            ));
        }
        if !(d.retry_factor >= 1.0 && d.retry_factor.is_finite()) {
            return Err(Error::Invalid("delivery.retry_factor must be >= 1".into()));
        }
        if !(0.0..1.0).contains(&d.retry_jitter) {
            return Err(Error::Invalid(
                "delivery.retry_jitter must be in [0, 1)".into(),
            ));
        }
        if d.retry_base_ms == 0 || d.retry_max_ms < d.retry_base_ms {
            return Err(Error::Invalid(
                "delivery.retry_base_ms must be positive and at most delivery.retry_max_ms".into(),
            ));
        }
        if d.poll_interval_ms == 0 {
            return Err(Error::Invalid(
                "delivery.poll_interval_ms must be positive".into(),
            ));
        }
        if d.ingest_backlog_limit > 0 && d.ingest_retry_after_secs == 0 {
            return Err(Error::Invalid(
                "delivery.ingest_retry_after_secs must be at least 1 while delivery.ingest_backlog_limit is set".into(),
            ));
        }
        if !self.sink.url.is_empty() {
            let ok = reqwest::Url::parse(&self.sink.url)
                .is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
            if !ok {
                return Err(Error::Invalid(format!(
                    "sink.url {:?} is not an http or https URL",
                    self.sink.url
                )));
            }
        }
        let p = &self.plugins;
        if p.memory_limit_mb == 0 || p.timeout_ms == 0 || p.max_concurrent_calls == 0 {
            return Err(Error::Invalid(
                "plugins.memory_limit_mb, plugins.timeout_ms and plugins.max_concurrent_calls must be positive".into(),
            ));
        }
        let i = &p.instances;
        if i.max_calls == 0 || i.max_age_secs == 0 || i.idle_secs == 0 {
            return Err(Error::Invalid(
                "plugins.instances.max_calls, max_age_secs and idle_secs must be positive".into(),
            ));
        }
        if let Some(unknown) = p
            .builtin
            .iter()
            .find(|name| crate::plugin::builtin::find(name).is_none())
        {
            return Err(Error::Invalid(format!(
                "plugins.builtin: no plugin named {unknown:?} is built in (there is {})",
                crate::plugin::builtin::names().join(", ")
            )));
        }
        if p.compile_threads == 0 || !(0..=19).contains(&p.compile_nice) {
            return Err(Error::Invalid(
                "plugins.compile_threads must be positive and plugins.compile_nice within 0..=19"
                    .into(),
            ));
        }
        if !(self.store.url.starts_with("sqlite:") || self.store.url.starts_with("postgres")) {
            // The scheme only: the rest of a mistyped URL may hold the database password.
            let scheme = self.store.url.split(':').next().unwrap_or_default();
            return Err(Error::Invalid(format!(
                "store.url must start with sqlite:// or postgres://, got {scheme:?}:..."
            )));
        }
        if self.store.url.starts_with("postgres")
            && self.store.secret_key.trim().is_empty()
            && self.store.secret_key_file.is_empty()
        {
            return Err(Error::Invalid(format!(
                "a PostgreSQL store needs the secret key every process shares: set \
                 {SECRET_KEY_ENV} (or store.secret_key / store.secret_key_file); see docs/SECURITY.md"
            )));
        }
        if self
            .log
            .level
            .parse::<tracing_subscriber::EnvFilter>()
            .is_err()
        {
            return Err(Error::Invalid(format!(
                "log.level {:?} is not a valid filter",
                self.log.level
            )));
        }
        let mut names = std::collections::HashSet::new();
        for (i, hook) in self.webhooks.iter().enumerate() {
            if !names.insert(hook.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "webhooks[{i}]: the name {:?} is declared twice",
                    hook.name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, connection) in self.connections.iter().enumerate() {
            crate::connections::validate(connection).map_err(|e| {
                Error::Invalid(format!("connections[{i}] ({}): {e}", connection.name))
            })?;
            if !names.insert(connection.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "connections[{i}]: the name {:?} is declared twice",
                    connection.name
                )));
            }
        }
        if !self.sink.connection.is_empty() && self.sink.auth != crate::model::AuthConfig::None {
            return Err(Error::Invalid(
                "sink: set either sink.auth or sink.connection, not both".into(),
            ));
        }
        for (i, t) in self.event_types.iter().enumerate() {
            t.validate()
                .map_err(|e| Error::Invalid(format!("event_types[{i}] ({}): {e}", t.name)))?;
            if !names.insert(t.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "event_types[{i}]: the name {:?} is declared twice",
                    t.name
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for (i, source) in self.sources.iter().enumerate() {
            source
                .validate()
                .map_err(|e| Error::Invalid(format!("sources[{i}] ({}): {e}", source.name)))?;
            if !names.insert(source.name.as_str()) {
                return Err(Error::Invalid(format!(
                    "sources[{i}]: the name {:?} is declared twice",
                    source.name
                )));
            }
        }
        Ok(())
    }

    /// The base of inbound URLs.
    pub fn public_url(&self) -> String {
        if self.server.public_url.is_empty() {
            let scheme = if self.server.tls() { "https" } else { "http" };
            format!("{scheme}://{}", self.server.listen)
        } else {
            self.server.public_url.trim_end_matches('/').to_owned()
        }
    }

    /// Whether a webhook timeout fits in the lease (a lease must outlive the attempt).
    pub fn max_timeout_ms(&self) -> u64 {
        (self.delivery.lease_secs.saturating_sub(5)) * 1000
    }
}

fn parse_table(text: &str, origin: &str) -> Result<toml::Table, Error> {
    text.parse::<toml::Table>().map_err(|e| Error::Parse {
        origin: format!(" in {origin}"),
        message: one_line(&e.to_string()),
    })
}

/// Merges `over` into `base`: tables recursively, everything else replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (key, value) in over {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// `HOOKYARD_SECTION_KEY=value` becomes `[section] key = value`. The value is read as a TOML
/// value when it parses as one (numbers, booleans, arrays), else as a string.
fn env_layer(env: impl IntoIterator<Item = (String, String)>) -> Result<toml::Table, Error> {
    let mut layer = toml::Table::new();
    let vars: BTreeMap<String, String> = env
        .into_iter()
        .filter(|(k, _)| k.starts_with(ENV_PREFIX) && !ENV_NOT_KEYS.contains(&k.as_str()))
        .collect();
    for (name, raw) in vars {
        let rest = name[ENV_PREFIX.len()..].to_ascii_lowercase();
        if name == SECRET_KEY_ENV {
            let store = layer
                .entry("store")
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            if let toml::Value::Table(t) = store {
                t.insert("secret_key".to_owned(), toml::Value::String(raw));
            }
            continue;
        }
        let Some((section, key)) = rest.split_once('_') else {
            return Err(Error::Invalid(format!(
                "{name} does not name a config key (HOOKYARD_<SECTION>_<KEY>)"
            )));
        };
        let value = format!("v = {raw}")
            .parse::<toml::Table>()
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let entry = layer
            .entry(section.to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(t) = entry {
            t.insert(key.to_owned(), value);
        }
    }
    Ok(layer)
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_load() {
        let c = Config::default();
        assert_eq!(c.server.listen.port(), 8080);
        assert_eq!(c.store.url, "sqlite://hookyard-data/hookyard.db");
        assert!(c.delivery.allow_networks.is_empty());
    }

    #[test]
    fn file_then_env_override() {
        let file = "[server]\nadmin_token = \"from-file\"\n[delivery]\nconcurrency = 7\n";
        let c = Config::from_layers(
            Some(("f.toml".into(), file.into())),
            env(&[
                ("HOOKYARD_SERVER_ADMIN_TOKEN", "from-env"),
                ("HOOKYARD_DELIVERY_ALLOW_NETWORKS", "[\"127.0.0.1/32\"]"),
                ("PATH", "/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.admin_token, "from-env");
        assert_eq!(c.delivery.concurrency, 7);
        assert_eq!(c.delivery.allow_networks.len(), 1);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let e = Config::from_layers(Some(("f".into(), "[server]\nlisten_x = 1\n".into())), [])
            .unwrap_err();
        assert!(e.to_string().contains("listen_x"), "{e}");
        let e = Config::from_layers(None, env(&[("HOOKYARD_SERVER_NOPE", "1")])).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        assert!(!e.to_string().contains('\n'));
    }

    #[test]
    fn tokens_required_off_loopback() {
        let e = Config::from_layers(None, env(&[("HOOKYARD_SERVER_LISTEN", "0.0.0.0:8080")]))
            .unwrap_err();
        assert!(e.to_string().contains("ingest_token"), "{e}");
    }

    #[test]
    fn tls_keys_go_together_and_make_urls_https() {
        let e =
            Config::from_layers(None, env(&[("HOOKYARD_SERVER_TLS_CERT", "c.pem")])).unwrap_err();
        assert!(e.to_string().contains("tls_key"), "{e}");
        let e = Config::from_layers(None, env(&[("HOOKYARD_SERVER_TLS_CLIENT_CA", "ca.pem")]))
            .unwrap_err();
        assert!(e.to_string().contains("tls_client_ca"), "{e}");
        let c = Config::from_layers(
            None,
            env(&[
                ("HOOKYARD_SERVER_TLS_CERT", "c.pem"),
                ("HOOKYARD_SERVER_TLS_KEY", "k.pem"),
            ]),
        )
        .unwrap();
        assert_eq!(c.public_url(), "https://127.0.0.1:8080");
        assert_eq!(Config::default().public_url(), "http://127.0.0.1:8080");
    }

    #[test]
    fn listener_timeouts_must_be_positive() {
        let e = Config::from_layers(None, env(&[("HOOKYARD_SERVER_BODY_TIMEOUT_MS", "0")]))
            .unwrap_err();
        assert!(e.to_string().contains("body_timeout_ms"), "{e}");
    }

    #[test]
    fn a_bad_store_url_is_refused_without_its_password() {
        let url = "mysql://hookyard:s3cret-pw@db/hookyard";
        let e = Config::from_layers(None, env(&[("HOOKYARD_STORE_URL", url)])).unwrap_err();
        let message = e.to_string();
        assert!(message.contains("\"mysql\":..."), "{message}");
        assert!(!message.contains("s3cret-pw"), "{message}");
    }

    #[test]
    fn declared_webhooks_parse() {
        let file = r#"
[[webhooks]]
name = "defguard"
events = ["user.*"]
url = "https://example.com/hook"
auth = { type = "bearer", token = "t" }
"#;
        let c = Config::from_layers(Some(("f".into(), file.into())), []).unwrap();
        assert_eq!(c.webhooks[0].name, "defguard");
    }

    #[test]
    fn declared_event_types_parse_and_are_validated() {
        let file = r#"
[[event_types]]
name = "user.created"
description = "A user account was created"
schema = { type = "object", properties = { email = { type = "string" } }, required = ["email"] }
example = { email = "jane@example.com" }

[[event_types]]
name = "user.deleted"
deprecated = true
"#;
        let c = Config::from_layers(Some(("f".into(), file.into())), []).unwrap();
        assert_eq!(c.event_types.len(), 2);
        assert_eq!(
            c.event_types[0].example,
            Some(serde_json::json!({"email": "jane@example.com"}))
        );
        assert!(c.event_types[1].deprecated);
        let bad = file
            .replace(
                "\"jane@example.com\" }",
                "\"jane@example.com\", extra = 1 }",
            )
            .replace(
                "required = [\"email\"]",
                "required = [\"email\"], additionalProperties = false",
            );
        let e = Config::from_layers(Some(("f".into(), bad)), []).unwrap_err();
        assert!(
            e.to_string()
                .contains("event_types[0] (user.created): example"),
            "{e}"
        );
        let twice = file.replace("\"user.deleted\"", "\"user.created\"");
        let e = Config::from_layers(Some(("f".into(), twice)), []).unwrap_err();
        assert!(e.to_string().contains("declared twice"), "{e}");
    }

    #[test]
    fn declared_sources_parse_and_are_validated() {
        let file = r#"
[[sources]]
name = "hr-bus"
type = "nats"
url = "nats://127.0.0.1:4222"
stream = "EVENTS"
subject = "events.>"

[[sources]]
name = "crm"
type = "amqp"
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
queue = "hookyard-events"
"#;
        let c = Config::from_layers(Some(("f".into(), file.into())), []).unwrap();
        assert_eq!(c.sources.len(), 2);
        assert_eq!(c.sources[1].queue.as_deref(), Some("hookyard-events"));
        let bad = file.replace("queue = \"hookyard-events\"", "");
        let e = Config::from_layers(Some(("f".into(), bad)), []).unwrap_err();
        assert!(e.to_string().contains("sources[1] (crm): queue"), "{e}");
        assert!(!e.to_string().contains("guest:guest"), "{e}");
        let twice = file.replace("\"crm\"", "\"hr-bus\"");
        let e = Config::from_layers(Some(("f".into(), twice)), []).unwrap_err();
        assert!(e.to_string().contains("declared twice"), "{e}");
    }
}
