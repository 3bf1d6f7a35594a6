//! Prometheus metrics: what an operator watches.
//!
//! One [`Metrics`] per gateway, shared by `Arc`. Queue depth and the age of the oldest due
//! delivery are read from the store when `/metrics` is scraped, not kept as counters, so they are
//! right across restarts and across processes sharing one database.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// A label set with one `outcome` or `result` value.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    /// The outcome (`succeeded`, `retry`, `dead`, `skipped`, `ok`, `error`...).
    pub outcome: String,
}

/// A label set naming a plugin.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    /// The plugin's name.
    pub plugin: String,
}

/// A label set naming a plugin version and what a call of it led to.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginCallLabel {
    /// The plugin's name.
    pub plugin: String,
    /// The version called.
    pub version: String,
    /// `ok`, `trap`, `timeout`, `memory`, `output_too_large` or `busy`.
    pub outcome: String,
}

/// A label set naming a plugin version.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginVersionLabel {
    /// The plugin's name.
    pub plugin: String,
    /// The version.
    pub version: String,
}

/// Buckets of `hookyard_plugin_call_duration_seconds`: 5 µs to ~2.6 s.
fn plugin_call_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_005, 2.0, 20))
}

/// A label set naming a message-bus source.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    /// The source's name.
    pub source: String,
}

/// A label set naming a source and what became of its messages.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceOutcomeLabel {
    /// The source's name.
    pub source: String,
    /// `committed`, `duplicate` (a redelivery, not enqueued again) or `dead_lettered`.
    pub outcome: String,
}

/// A label set naming a shared connection and a token fetch's result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionOutcomeLabel {
    /// The connection's name.
    pub connection: String,
    /// `ok` or `error`.
    pub outcome: String,
}

/// All metrics of one gateway.
pub struct Metrics {
    registry: Registry,
    /// Events accepted by ingest (duplicates not counted).
    pub events_accepted: Counter,
    /// Delivery attempts by what they led to.
    pub deliveries: Family<OutcomeLabel, Counter>,
    /// Duration of HTTP delivery attempts, in seconds.
    pub attempt_duration: Histogram,
    /// OAuth2 token fetches by result (`ok`, `error`).
    pub token_fetches: Family<OutcomeLabel, Counter>,
    /// OAuth2 token fetches for shared connections, by connection and result (also counted in
    /// `token_fetches`).
    pub connection_token_fetches: Family<ConnectionOutcomeLabel, Counter>,
    /// Pending deliveries (set at scrape time).
    pub queue_depth: Gauge,
    /// Due deliveries (set at scrape time).
    pub queue_due: Gauge,
    /// Age of the oldest due delivery in seconds (set at scrape time).
    pub oldest_due_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Deliveries being sent right now by this process.
    pub in_flight: Gauge,
    /// Claims this process made (round trips to the queue that lease due deliveries).
    pub claims: Counter,
    /// Deliveries this process claimed from the queue.
    pub claimed: Counter,
    /// Deliveries claimed ahead, waiting here for a slot of their webhook.
    pub queued: Gauge,
    /// Deliveries this process started at ingest, committed already leased to it (no claim).
    pub started_at_ingest: Counter,
    /// Plugin calls by plugin, version and outcome (`ok`, `trap`, `timeout`, `memory`,
    /// `output_too_large`, `busy`).
    pub plugin_calls: Family<PluginCallLabel, Counter>,
    /// Duration of plugin calls, instantiation included, in seconds, by plugin and version.
    pub plugin_call_duration: Family<PluginVersionLabel, Histogram, fn() -> Histogram>,
    /// Plugin components compiled (a cached artifact is not counted).
    pub plugin_compilations: Counter,
    /// Built-in plugins being installed in the background (`plugins.builtin`).
    pub plugin_installs_running: Gauge,
    /// The version of each plugin this process runs for webhooks that do not pin one (set at
    /// scrape time): with several processes, shows when a swap has reached every one.
    pub plugin_active_version: Family<PluginLabel, Gauge>,
    /// Enabled webhooks this process knows (set at scrape time).
    pub webhooks: Gauge,
    /// Messages consumed from message-bus sources by what became of them.
    pub source_messages: Family<SourceOutcomeLabel, Counter>,
    /// Messages waiting in each source's broker, as last read.
    pub source_lag: Family<SourceLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("hookyard");
        let events_accepted = Counter::default();
        registry.register(
            "events_accepted",
            "Events accepted by ingest",
            events_accepted.clone(),
        );
        let deliveries = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "delivery_attempts",
            "Delivery attempts by outcome",
            deliveries.clone(),
        );
        let attempt_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "delivery_attempt_duration_seconds",
            "Duration of delivery attempts",
            attempt_duration.clone(),
        );
        let token_fetches = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "oauth_token_fetches",
            "OAuth2 token fetches by result",
            token_fetches.clone(),
        );
        let connection_token_fetches = Family::<ConnectionOutcomeLabel, Counter>::default();
        registry.register(
            "connection_token_fetches",
            "OAuth2 token fetches of shared connections by connection and result",
            connection_token_fetches.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register("queue_depth", "Pending deliveries", queue_depth.clone());
        let queue_due = Gauge::default();
        registry.register(
            "queue_due",
            "Pending deliveries whose time has come",
            queue_due.clone(),
        );
        let oldest_due_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "queue_oldest_due_age_seconds",
            "How overdue the oldest due delivery is",
            oldest_due_age.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "deliveries_in_flight",
            "Deliveries being sent by this process",
            in_flight.clone(),
        );
        let claims = Counter::default();
        registry.register(
            "delivery_claims",
            "Claims this process made (round trips to the queue that lease due deliveries)",
            claims.clone(),
        );
        let claimed = Counter::default();
        registry.register(
            "deliveries_claimed",
            "Deliveries this process claimed from the queue",
            claimed.clone(),
        );
        let queued = Gauge::default();
        registry.register(
            "deliveries_claimed_ahead",
            "Deliveries claimed ahead, waiting in this process for a slot of their webhook",
            queued.clone(),
        );
        let started_at_ingest = Counter::default();
        registry.register(
            "deliveries_started_at_ingest",
            "Deliveries this process started when it accepted their event, without a claim",
            started_at_ingest.clone(),
        );
        let plugin_calls = Family::<PluginCallLabel, Counter>::default();
        registry.register(
            "plugin_calls",
            "Plugin calls by plugin, version and outcome",
            plugin_calls.clone(),
        );
        let plugin_call_duration =
            Family::<PluginVersionLabel, Histogram, fn() -> Histogram>::new_with_constructor(
                plugin_call_histogram,
            );
        registry.register(
            "plugin_call_duration_seconds",
            "Duration of plugin calls, instantiation included",
            plugin_call_duration.clone(),
        );
        let plugin_compilations = Counter::default();
        registry.register(
            "plugin_compilations",
            "Plugin components compiled (cache hits not counted)",
            plugin_compilations.clone(),
        );
        let plugin_installs_running = Gauge::default();
        registry.register(
            "plugin_installs_running",
            "Built-in plugins being installed (compiled in the background at the first start)",
            plugin_installs_running.clone(),
        );
        let plugin_active_version = Family::<PluginLabel, Gauge>::default();
        registry.register(
            "plugin_active_version",
            "Active version of each plugin in this process",
            plugin_active_version.clone(),
        );
        let webhooks = Gauge::default();
        registry.register(
            "webhooks",
            "Enabled webhooks known to this process",
            webhooks.clone(),
        );
        let source_messages = Family::<SourceOutcomeLabel, Counter>::default();
        registry.register(
            "source_messages",
            "Messages consumed from message-bus sources, by outcome",
            source_messages.clone(),
        );
        let source_lag = Family::<SourceLabel, Gauge>::default();
        registry.register(
            "source_lag",
            "Messages waiting in each source's broker, as last read",
            source_lag.clone(),
        );
        Metrics {
            registry,
            source_messages,
            source_lag,
            plugin_active_version,
            webhooks,
            plugin_calls,
            plugin_call_duration,
            plugin_compilations,
            plugin_installs_running,
            events_accepted,
            deliveries,
            attempt_duration,
            token_fetches,
            connection_token_fetches,
            queue_depth,
            queue_due,
            oldest_due_age,
            in_flight,
            claims,
            claimed,
            queued,
            started_at_ingest,
        }
    }

    /// Counts one item of a labelled family.
    pub fn count(family: &Family<OutcomeLabel, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The registry, for metrics registered by other modules (plugins).
    pub fn registry_mut(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
