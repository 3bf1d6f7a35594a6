//! What every plugin call leaves behind for an operator: metrics labelled by plugin and version,
//! and one log line per failed call (trap, timeout, memory, output cap, no free slot), rate
//! limited per plugin version.
//!
//! The rate limit exists because a broken plugin fails on every event: at a few thousand events
//! per second an unlimited line per failure would drown the log and cost more than the calls.
//! Per plugin version, at most one line per [`FAILURE_LOG_INTERVAL`] is written; the next line
//! says how many failures were not logged since, so nothing is silently lost.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::runtime::{CallError, Usage};
use crate::metrics::{Metrics, PluginCallLabel, PluginVersionLabel};

/// At most one failure line per plugin version this often.
pub(super) const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

#[derive(Default)]
struct Window {
    last: Option<Instant>,
    suppressed: u64,
}

/// Counts calls and logs failures of every plugin version.
#[derive(Default)]
pub(super) struct CallObserver {
    windows: DashMap<(String, u32), Mutex<Window>>,
}

impl CallObserver {
    /// Records one call of `plugin` version `version` (0: an upload's candidate) in `phase`.
    pub(super) fn observe<T>(
        &self,
        metrics: &Metrics,
        (plugin, version): (&str, u32),
        phase: &'static str,
        result: &Result<T, CallError>,
        usage: &Usage,
    ) {
        // Version 0 is a candidate being checked at upload (its smoke call), not yet stored.
        let version_label = if version == 0 {
            "candidate".to_owned()
        } else {
            version.to_string()
        };
        metrics
            .plugin_call_duration
            .get_or_create(&PluginVersionLabel {
                plugin: plugin.to_owned(),
                version: version_label.clone(),
            })
            .observe(usage.duration.as_secs_f64());
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.label(),
        };
        metrics
            .plugin_calls
            .get_or_create(&PluginCallLabel {
                plugin: plugin.to_owned(),
                version: version_label,
                outcome: outcome.to_owned(),
            })
            .inc();
        if let Err(error) = result {
            if let Some(suppressed) = self.admit(plugin, version, Instant::now()) {
                tracing::warn!(
                    plugin,
                    version,
                    phase,
                    outcome,
                    suppressed,
                    error = %error,
                    "plugin call failed"
                );
            }
        }
    }

    /// Whether a failure line may be written now; if so, how many were suppressed before it.
    fn admit(&self, plugin: &str, version: u32, now: Instant) -> Option<u64> {
        let key = (plugin.to_owned(), version);
        let entry = self.windows.entry(key).or_default();
        let mut window = entry.lock().unwrap_or_else(|p| p.into_inner());
        match window.last {
            Some(last) if now.duration_since(last) < FAILURE_LOG_INTERVAL => {
                window.suppressed += 1;
                None
            }
            _ => {
                window.last = Some(now);
                Some(std::mem::take(&mut window.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_then_the_count_of_the_suppressed() {
        let observer = CallObserver::default();
        let t0 = Instant::now();
        assert_eq!(observer.admit("p", 1, t0), Some(0));
        assert_eq!(observer.admit("p", 1, t0 + Duration::from_secs(1)), None);
        assert_eq!(observer.admit("p", 1, t0 + Duration::from_secs(2)), None);
        // Another version or plugin has its own window.
        assert_eq!(observer.admit("p", 2, t0), Some(0));
        assert_eq!(observer.admit("q", 1, t0), Some(0));
        assert_eq!(observer.admit("p", 1, t0 + FAILURE_LOG_INTERVAL), Some(2));
        assert_eq!(
            observer.admit("p", 1, t0 + FAILURE_LOG_INTERVAL * 2),
            Some(0)
        );
    }

    #[test]
    fn calls_are_counted_by_plugin_version_and_outcome() {
        let metrics = Metrics::new();
        let observer = CallObserver::default();
        let usage = Usage::default();
        observer.observe(&metrics, ("p", 3), "outgoing", &Ok::<(), _>(()), &usage);
        observer.observe(
            &metrics,
            ("p", 3),
            "outgoing",
            &Err::<(), _>(CallError::Timeout(5)),
            &usage,
        );
        let text = metrics.encode();
        assert!(
            text.contains(
                r#"hookyard_plugin_calls_total{plugin="p",version="3",outcome="timeout"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"hookyard_plugin_calls_total{plugin="p",version="3",outcome="ok"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"hookyard_plugin_call_duration_seconds_count{plugin="p",version="3"} 2"#
            ),
            "{text}"
        );
    }
}
