//! First-party plugins embedded in the binary (`plugins.builtin`), so a fresh install has them
//! with no plugin build and no upload: the console's mapping tables work on
//! `cargo run --release -- serve`.
//!
//! The bytes are the component committed in `plugins/field-map/dist/` (`scripts/field-map-dist.sh`
//! refreshes it, and `scripts/test.sh` fails when it is older than its sources). Installing one
//! is an upload of those bytes, done only when no stored version of that name holds them: the
//! first start adds it, a restart changes nothing (an admin's rollback stays), and a new binary
//! with different bytes adds and activates a new version.
//!
//! The first install compiles the component (about a second of CPU for field-map). It runs in
//! the background so the listeners are up at once; meanwhile calls that need a plugin that is not
//! loaded wait for the install instead of failing ([`Installing`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::{hex, PluginHost};

/// A plugin shipped in the binary.
pub struct Builtin {
    /// The name it is installed under.
    pub name: &'static str,
    /// The component.
    pub wasm: &'static [u8],
}

/// Every built-in plugin.
pub const ALL: &[Builtin] = &[Builtin {
    name: "field-map",
    wasm: include_bytes!("../../plugins/field-map/dist/field_map.wasm"),
}];

/// The built-in plugin of this name.
pub fn find(name: &str) -> Option<&'static Builtin> {
    ALL.iter().find(|b| b.name == name)
}

/// The names of the built-in plugins.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|b| b.name).collect()
}

/// The number of built-in installs still running, for callers that must wait for them (and
/// in the `hookyard_plugin_installs_running` gauge).
pub(super) struct Installing(watch::Sender<usize>, Gauge);

impl Installing {
    pub(super) fn new(gauge: Gauge) -> Installing {
        Installing(watch::channel(0).0, gauge)
    }

    fn add(&self, n: isize) {
        self.0
            .send_modify(|count| *count = count.saturating_add_signed(n));
        self.1.inc_by(n as i64);
    }

    /// Whether an install is running.
    pub(super) fn any(&self) -> bool {
        *self.0.borrow() > 0
    }

    /// Waits until no install is running, or `limit` passed.
    pub(super) async fn wait(&self, limit: Duration) {
        let mut rx = self.0.subscribe();
        let _ = tokio::time::timeout(limit, rx.wait_for(|count| *count == 0)).await;
    }
}

impl PluginHost {
    /// Installs the built-in plugins the config names that the store does not hold yet, in the
    /// background, except those a `[[plugins.load]]` file replaces. A failure is logged: the
    /// gateway runs on without that plugin.
    pub async fn install_builtins(self: &Arc<Self>) -> Result<(), super::PluginError> {
        let records = self.store.plugins().await?;
        for name in &self.config.builtin {
            let Some(builtin) = find(name) else { continue };
            // A `[[plugins.load]]` file of the same name is the operator's choice: it wins.
            if self.config.load.iter().any(|f| f.name == builtin.name) {
                continue;
            }
            let sha256 = hex(&Sha256::digest(builtin.wasm));
            let held = records
                .iter()
                .filter(|r| r.name == builtin.name)
                .flat_map(|r| &r.versions)
                .any(|v| v.sha256 == sha256);
            if held {
                continue;
            }
            self.installing.add(1);
            let host = self.clone();
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                match host
                    .upload(builtin.name, Bytes::from_static(builtin.wasm))
                    .await
                {
                    Ok(v) => tracing::info!(
                        plugin = builtin.name,
                        version = v.version,
                        ms = started.elapsed().as_millis() as u64,
                        "built-in plugin installed"
                    ),
                    Err(e) => tracing::error!(
                        plugin = builtin.name,
                        error = %e,
                        "built-in plugin cannot be installed"
                    ),
                }
                host.installing.add(-1);
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_is_a_component_with_its_name() {
        assert_eq!(names(), ["field-map"]);
        for b in ALL {
            // The component-model preamble: magic, then layer 1 (version 0x0d).
            assert_eq!(
                &b.wasm[..8],
                b"\0asm\x0d\0\x01\0",
                "{} is not a component",
                b.name
            );
        }
        assert!(find("nope").is_none());
    }
}
