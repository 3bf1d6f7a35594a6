//! `[retention]` and `[refusals]`: how long the Webhook Log keeps what is finished, and how
//! refused inbound pushes are logged.

use serde::Deserialize;

/// `[retention]`: how long finished deliveries and events are kept (0 = forever); see
/// [`crate::store::retention`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Days succeeded deliveries (with their attempts) are kept after their last change.
    pub succeeded_days: u32,
    /// Days dead and skipped deliveries (with their attempts) are kept after their last change.
    pub failed_days: u32,
    /// Days events are kept after receipt, and then only once none of their deliveries remain.
    pub events_days: u32,
    /// Seconds between the starts of two purges.
    pub interval_secs: u64,
    /// Deliveries (and events) deleted per transaction.
    pub batch_size: usize,
    /// Milliseconds between two batches of one purge.
    pub pause_ms: u64,
}

/// `[refusals]`: the Webhook Log of refused inbound pushes (see
/// [`crate::server::inbound_log`]).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefusalsConfig {
    /// Refused pushes logged per webhook per minute, at most (0: none are logged).
    pub per_webhook_per_minute: u32,
    /// Refused pushes to unknown webhook names logged per minute, all names together.
    pub unknown_per_minute: u32,
    /// Bytes of a refused push's body kept in the log.
    pub body_bytes: usize,
}
