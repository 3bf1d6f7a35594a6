//! The registry's turn-taking between reloads and activations, on a store whose reads of the
//! plugin list can be held at a gate.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

use super::*;
use crate::config::Config;
use crate::model::{
    Attempt, Completion, Delivery, DeliveryFilter, EventToIngest, IngestResult, Job, Millis, Page,
    QueueStats,
};
use crate::store::{
    ClaimRequest, PluginRecord, Result as StoreResult, StoreChange, StoredEventType, StoredSource,
    TypeSeen,
};

/// SQLite in memory, except that `plugins()` reads, then waits for the gate when one is set.
struct GatedStore {
    inner: Arc<dyn Store>,
    /// Taken by the next `plugins()`: it reports having read on the first sender, then waits.
    gate: Mutex<Option<(oneshot::Sender<()>, oneshot::Receiver<()>)>>,
}

#[async_trait]
impl Store for GatedStore {
    async fn plugins(&self) -> StoreResult<Vec<PluginRecord>> {
        let records = self.inner.plugins().await?;
        let gate = self.gate.lock().unwrap().take();
        if let Some((have_read, open)) = gate {
            let _ = have_read.send(());
            let _ = open.await;
        }
        Ok(records)
    }
    async fn set_active_plugin(&self, name: &str, version: u32) -> StoreResult<bool> {
        self.inner.set_active_plugin(name, version).await
    }
    async fn add_plugin_version(
        &self,
        name: &str,
        sha256: &str,
        wasm: Vec<u8>,
        now: Millis,
    ) -> StoreResult<PluginVersion> {
        self.inner.add_plugin_version(name, sha256, wasm, now).await
    }
    async fn plugin_wasm(&self, name: &str, version: u32) -> StoreResult<Option<Vec<u8>>> {
        self.inner.plugin_wasm(name, version).await
    }
    async fn webhooks(&self) -> StoreResult<Vec<Webhook>> {
        self.inner.webhooks().await
    }
    async fn sources(&self) -> StoreResult<Vec<StoredSource>> {
        self.inner.sources().await
    }
    async fn insert_source(&self, source: &StoredSource) -> StoreResult<()> {
        self.inner.insert_source(source).await
    }
    async fn update_source(&self, source: &StoredSource) -> StoreResult<bool> {
        self.inner.update_source(source).await
    }
    async fn delete_source(&self, name: &str) -> StoreResult<bool> {
        self.inner.delete_source(name).await
    }
    async fn connections(&self) -> StoreResult<Vec<crate::connections::Connection>> {
        self.inner.connections().await
    }
    async fn connection(&self, name: &str) -> StoreResult<Option<crate::connections::Connection>> {
        self.inner.connection(name).await
    }
    async fn insert_connection(&self, c: &crate::connections::Connection) -> StoreResult<()> {
        self.inner.insert_connection(c).await
    }
    async fn update_connection(&self, c: &crate::connections::Connection) -> StoreResult<bool> {
        self.inner.update_connection(c).await
    }
    async fn delete_connection(&self, name: &str) -> StoreResult<crate::connections::Deletion> {
        self.inner.delete_connection(name).await
    }
    async fn event_types(&self) -> StoreResult<Vec<StoredEventType>> {
        self.inner.event_types().await
    }
    async fn insert_event_type(&self, event_type: &StoredEventType) -> StoreResult<()> {
        self.inner.insert_event_type(event_type).await
    }
    async fn update_event_type(&self, event_type: &StoredEventType) -> StoreResult<bool> {
        self.inner.update_event_type(event_type).await
    }
    async fn delete_event_type(&self, name: &str) -> StoreResult<bool> {
        self.inner.delete_event_type(name).await
    }
    async fn count_uncataloged(&self, seen: &[TypeSeen]) -> StoreResult<()> {
        self.inner.count_uncataloged(seen).await
    }
    async fn uncataloged(&self) -> StoreResult<Vec<TypeSeen>> {
        self.inner.uncataloged().await
    }
    fn subscribe(&self) -> broadcast::Receiver<StoreChange> {
        self.inner.subscribe()
    }
    // Not used by the registry.
    async fn insert_webhook(&self, _: &Webhook) -> StoreResult<()> {
        unimplemented!()
    }
    async fn update_webhook(&self, _: &Webhook) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn delete_webhook(&self, _: &str) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn webhook(&self, _: &str) -> StoreResult<Option<Webhook>> {
        unimplemented!()
    }
    async fn ingest(&self, _: Vec<EventToIngest>) -> StoreResult<Vec<IngestResult>> {
        unimplemented!()
    }
    async fn event(&self, _: &str) -> StoreResult<Option<Event>> {
        unimplemented!()
    }
    async fn claim(&self, _: ClaimRequest) -> StoreResult<Vec<Job>> {
        unimplemented!()
    }
    async fn release(&self, _: &str, _: &[String]) -> StoreResult<()> {
        unimplemented!()
    }
    async fn complete(&self, _: &str, _: Completion) -> StoreResult<bool> {
        unimplemented!()
    }
    async fn deliveries(&self, _: &DeliveryFilter) -> StoreResult<Page<Delivery>> {
        unimplemented!()
    }
    async fn delivery(&self, _: &str) -> StoreResult<Option<(Delivery, Vec<Attempt>)>> {
        unimplemented!()
    }
    async fn replay_delivery(&self, _: &str, _: Millis) -> StoreResult<Option<Delivery>> {
        unimplemented!()
    }
    async fn replay_dead(&self, _: &str, _: Millis) -> StoreResult<u64> {
        unimplemented!()
    }
    async fn queue_stats(&self, _: Millis) -> StoreResult<QueueStats> {
        unimplemented!()
    }
    async fn log_delivery(&self, _: crate::model::LoggedDelivery) -> StoreResult<()> {
        unimplemented!()
    }
    async fn purge(&self, _: &crate::store::PurgePolicy) -> StoreResult<crate::store::Purged> {
        unimplemented!()
    }
    async fn row_counts(&self) -> StoreResult<crate::store::RowCounts> {
        unimplemented!()
    }
    async fn remember_message(&self, _: &str, _: &str, _: Millis, _: Millis) -> StoreResult<bool> {
        unimplemented!()
    }
}

fn fixture(name: &str) -> Bytes {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join(format!("plugins/target/wasm32-wasip2/release/{name}.wasm"));
    Bytes::from(std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Build the plugins first: bash scripts/build-plugins.sh",
            path.display()
        )
    }))
}

fn active(host: &PluginHost) -> Option<u32> {
    host.resolve(&PluginRef {
        name: "stamp".into(),
        version: None,
        config: serde_json::Value::Null,
        on_error: PluginFailure::Retry,
        instances: Default::default(),
    })
    .map(|p| p.version)
}

/// A reload that read the store before an activation must not set the previous version back
/// after it: the activation waits for the reload's turn, then applies.
#[tokio::test(flavor = "multi_thread")]
async fn a_reload_that_read_before_an_activation_does_not_undo_it() {
    let cache = tempfile::tempdir().expect("tempdir");
    let mut config = Config::default().plugins;
    config.cache_dir = cache.path().to_owned();
    let store = Arc::new(GatedStore {
        inner: store::open("sqlite::memory:").await.expect("store"),
        gate: Mutex::new(None),
    });
    let host = Arc::new(
        PluginHost::start(&config, store.clone(), Arc::new(Metrics::new()))
            .await
            .expect("host"),
    );
    assert_eq!(
        host.upload("stamp", fixture("version_a"))
            .await
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        host.upload("stamp", fixture("version_b"))
            .await
            .unwrap()
            .version,
        2
    );
    assert_eq!(active(&host), Some(2));

    // The reload reads (v2 active) and is held at the gate.
    let (have_read, read) = oneshot::channel();
    let (open, gate) = oneshot::channel();
    *store.gate.lock().unwrap() = Some((have_read, gate));
    let reload = tokio::spawn({
        let host = host.clone();
        async move { host.reload().await }
    });
    read.await.expect("the reload read the store");

    // Meanwhile an admin rolls back to v1.
    let activate = tokio::spawn({
        let host = host.clone();
        async move { host.activate("stamp", 1).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let _ = open.send(());
    reload.await.unwrap().expect("reload");
    activate.await.unwrap().expect("activate");
    assert_eq!(active(&host), Some(1), "the rollback stands");
    host.reload().await.expect("reload");
    assert_eq!(active(&host), Some(1));
}

fn scratch_runtime() -> (tempfile::TempDir, Runtime) {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(&Config::default().plugins, dir.path()).unwrap();
    (dir, runtime)
}

/// A component built from `wit/` passes the export check: the shapes pinned in
/// [`super::exports::EXPECTED`] are the WIT's.
#[test]
fn a_component_built_from_the_wit_has_the_expected_exports() {
    let (_dir, runtime) = scratch_runtime();
    let wasm = fixture("passthrough");
    let sha = hex(&Sha256::digest(&wasm));
    runtime.load(&wasm, &sha).map(|_| ()).unwrap();
}

/// `outgoing` without its `hook` parameter is refused naming `outgoing`, with the expected and
/// the found signature, and its compiled code is not kept.
#[test]
fn a_mismatched_export_is_named_with_what_was_expected_and_found() {
    let (dir, runtime) = scratch_runtime();
    let wasm = fixture("wrong_signature");
    let sha = hex(&Sha256::digest(&wasm));
    let error = match runtime.load(&wasm, &sha) {
        Ok(_) => panic!("a wrong signature was accepted"),
        Err(e) => e.to_string(),
    };
    for part in [
        "export `outgoing` of hookyard:plugin/handler@0.1.0 does not match the WIT",
        "it takes 2 parameters where 3 are expected",
        "expected `outgoing: func(config: list<u8>, hook: webhook, ev: event)",
        "found `outgoing: func(config: list<u8>, ev: record { id: string, event-type: string",
    ] {
        assert!(error.contains(part), "{part:?} missing in: {error}");
    }
    assert!(!error.contains("validate-config"), "{error}");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn dot_names_and_option_like_names_are_refused() {
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "-rf",
        "_x",
        "a/b",
        &"x".repeat(101),
    ] {
        assert!(!valid_name(bad), "{bad:?}");
    }
    for good in ["field-map", "a", "v1.2_x", "9lives"] {
        assert!(valid_name(good), "{good:?}");
    }
}

/// A guest's panic message (its stderr) is in the trap's error, after the trap itself.
#[tokio::test(flavor = "multi_thread")]
async fn a_trap_carries_the_guest_output() {
    let (_dir, runtime) = scratch_runtime();
    let wasm = fixture("always_trap");
    let sha = hex(&Sha256::digest(&wasm));
    let plugin = LoadedPlugin {
        name: "always-trap".into(),
        version: 1,
        sha256: sha.clone(),
        id: next_load_id(),
        instances: Instances::Warm,
        pre: runtime.load(&wasm, &sha).unwrap().pre,
    };
    let (result, usage) = call_outgoing(
        &runtime,
        &plugin,
        &serde_json::Value::Null,
        sample::webhook(),
        &sample::event(),
    )
    .await;
    let error = match result {
        Ok(_) => panic!("always-trap did not trap"),
        Err(e) => e.to_string(),
    };
    assert!(
        error.starts_with(
            "plugin trapped: wasm trap: wasm `unreachable` instruction executed; guest output:\n"
        ),
        "{error}"
    );
    assert!(
        error.contains("always-trap fixture: outgoing traps on purpose (event evt_sample)"),
        "{error}"
    );
    assert!(
        usage.guest_output.contains("panicked"),
        "{}",
        usage.guest_output
    );
}
