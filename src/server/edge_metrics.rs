//! Metrics of the listeners: open connections, failed accepts, rate-limited inbound pushes.
//!
//! Registered into the gateway's [`crate::metrics::Metrics`] registry at start. Each listener
//! takes its gauge and counter once, so a connection costs an atomic add, not a label lookup.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// A label set naming a listener (`public`, `admin`, `public+admin`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    /// The listener.
    pub listener: String,
}

/// The listeners' metrics.
#[derive(Default)]
pub struct EdgeMetrics {
    connections_open: Family<ListenerLabel, Gauge>,
    accept_errors: Family<ListenerLabel, Counter>,
    /// `/v1/inbound` requests refused with 429.
    pub inbound_rate_limited: Counter,
}

impl EdgeMetrics {
    /// Creates the metrics and registers them in `registry`.
    pub fn register(registry: &mut Registry) -> EdgeMetrics {
        let metrics = EdgeMetrics::default();
        registry.register(
            "connections_open",
            "Connections open on each listener",
            metrics.connections_open.clone(),
        );
        registry.register(
            "accept_errors",
            "Failed accepts on each listener (EMFILE and the like), each followed by a pause",
            metrics.accept_errors.clone(),
        );
        registry.register(
            "inbound_rate_limited",
            "Inbound pushes refused with 429 by the per-address rate limit",
            metrics.inbound_rate_limited.clone(),
        );
        metrics
    }

    /// The gauge of open connections and the counter of failed accepts of `listener`.
    pub fn listener(&self, listener: &str) -> (Gauge, Counter) {
        let label = ListenerLabel {
            listener: listener.to_owned(),
        };
        (
            self.connections_open.get_or_create(&label).clone(),
            self.accept_errors.get_or_create(&label).clone(),
        )
    }
}
