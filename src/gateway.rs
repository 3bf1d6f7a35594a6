//! Starting and stopping the gateway: wiring the store, the workers and the listeners.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::sync::{watch, Notify};
use tracing::{info, warn};

use crate::catalog::EventCatalog;
use crate::config::Config;
use crate::delivery::client::SsrfPolicy;
use crate::delivery::shape::Shaper;
use crate::delivery::worker::Deliverer;
use crate::metrics::Metrics;
use crate::model::{new_id, now_ms, Webhook};
use crate::plugin::PluginHost;
use crate::server::listener::{self, ListenerLimits};
use crate::server::tls::Tls;
use crate::server::{self, AppState};
use crate::store::{self, Store, StoreChange};
use crate::webhooks::{self, WebhookDirectory};

/// Why the gateway could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store could not be opened or failed at start-up.
    #[error("store: {0}")]
    Store(#[from] store::Error),
    /// A webhook declared in the config is invalid.
    #[error("webhooks[{index}] ({name}): {error}")]
    DeclaredWebhook {
        /// Position in the config.
        index: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        error: webhooks::InvalidSpec,
    },
    /// A connection declared in the config, or a declared webhook's or the sink's use of one,
    /// is invalid.
    #[error("{0}")]
    DeclaredConnection(String),
    /// The secret keys could not be loaded, or stored secrets not brought under them.
    #[error("secrets: {0}")]
    Secrets(#[from] crate::secrets::Error),
    /// The plugin host could not start.
    #[error("plugins: {0}")]
    Plugins(String),
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
    /// A listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS certificate, key or client CA could not be used.
    #[error("tls: {0}")]
    Tls(#[from] server::tls::TlsError),
    /// An event type declared in the config is invalid, or could not be stored.
    #[error("{0}")]
    Catalog(#[from] crate::catalog::ApplyError),
}

/// The listeners the gateway serves on, already bound.
pub struct Listeners {
    /// Ingest, health, metrics.
    pub public: TcpListener,
    /// The admin API; `None` serves it on the public listener (same address configured).
    pub admin: Option<TcpListener>,
}

/// How often webhooks and plugins are re-read from the store even without a change notice.
const RELOAD_EVERY: Duration = Duration::from_secs(1);

/// Opens the store named by `store.url` (SQLite or PostgreSQL), with webhook secrets encrypted
/// at rest under the configured keys; secrets stored in clear or under an older key are
/// re-encrypted first (see [`crate::secrets`]).
pub async fn open_store(config: &Config) -> Result<Arc<dyn Store>, Error> {
    let inner = store::open(&config.store.url).await?;
    let keys = Arc::new(crate::secrets::keys::load(&config.store)?);
    let store = crate::secrets::store::SecretStore::new(inner, keys);
    store.reencrypt_all().await?;
    Ok(Arc::new(store))
}

/// Runs the gateway until `shutdown` resolves: stops accepting requests, drains in-flight
/// deliveries for up to `server.shutdown_grace_secs`, closes the store.
pub async fn run(
    config: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let store = open_store(&config).await?;
    run_with_store(config, store, listeners, shutdown).await
}

/// [`run`] on a given store.
pub async fn run_with_store(
    config: Config,
    store: Arc<dyn Store>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let mut config = config;
    // The effective address (the configured port may be 0), for inbound URLs.
    config.server.listen = listeners.public.local_addr()?;
    let config = Arc::new(config);
    // Before anything else starts: a bad certificate is a configuration error.
    let tls = Tls::from_config(&config.server)?;
    // The catalog first: declared webhooks are checked against it.
    crate::catalog::apply_declared(&config.event_types, store.as_ref()).await?;
    let catalog = Arc::new(EventCatalog::default());
    catalog.reload(store.as_ref()).await?;
    // Processes starting at once on one database declare the same webhooks: a name taken
    // between one's read and its insert is the other's insert, and applying again updates it.
    let mut tries = 0;
    loop {
        // Connections first: the declared webhooks and the sink may use them.
        let applied = match crate::connections::apply_declared(&config, store.as_ref()).await {
            Ok(()) => apply_declared_webhooks(&config, store.as_ref(), &catalog).await,
            Err(crate::connections::DeclaredError::Store(e)) => Err(Error::Store(e)),
            Err(e) => Err(Error::DeclaredConnection(e.to_string())),
        };
        let applied = match applied {
            Ok(()) => crate::sink::apply(&config, store.as_ref())
                .await
                .map_err(Error::from),
            Err(e) => Err(e),
        };
        match applied {
            Err(Error::Store(store::Error::Conflict(_))) if tries < 3 => tries += 1,
            other => break other?,
        }
    }
    crate::source::apply_declared(&config, store.as_ref()).await?;
    let directory = Arc::new(WebhookDirectory::load(store.as_ref()).await?);
    let mut metrics = Metrics::new();
    catalog.register(metrics.registry_mut());
    let edge = Arc::new(server::edge_metrics::EdgeMetrics::register(
        metrics.registry_mut(),
    ));
    let refusals = Arc::new(server::inbound_log::RefusalLog::register(
        &config.refusals,
        metrics.registry_mut(),
    ));
    let backlog = Arc::new(server::backpressure::IngestBacklog::register(
        &config.delivery,
        metrics.registry_mut(),
    ));
    let pool_metrics = crate::plugin::warm::PoolMetrics::default();
    metrics
        .registry_mut()
        .register_collector(Box::new(pool_metrics.clone()));
    let retention = Arc::new(store::retention::RetentionMetrics::register(
        metrics.registry_mut(),
    ));
    let metrics = Arc::new(metrics);
    let plugins = Arc::new(
        PluginHost::start(&config.plugins, store.clone(), metrics.clone())
            .await
            .map_err(|e| Error::Plugins(e.to_string()))?,
    );
    plugins
        .install_builtins()
        .await
        .map_err(|e| Error::Plugins(e.to_string()))?;
    {
        // Weak: the registry holding the collector lives in the metrics the host holds.
        let host = Arc::downgrade(&plugins);
        pool_metrics.connect(move || host.upgrade().map(|h| h.runtime().pool_stats()));
    }
    let shaper: Arc<dyn Shaper> = plugins.clone();
    let wake = Arc::new(Notify::new());
    let ssrf = Arc::new(SsrfPolicy::new(config.delivery.allow_networks.clone()));
    let http = crate::delivery::client::build(ssrf.clone(), &config.delivery.user_agent)
        .map_err(|e| Error::Client(e.to_string()))?;

    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = move |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };

    let deliverer = Arc::new(Deliverer::new(
        store.clone(),
        directory.clone(),
        shaper,
        http,
        ssrf,
        metrics.clone(),
        config.delivery.clone(),
        wake.clone(),
    ));
    let grace = Duration::from_secs(config.server.shutdown_grace_secs);
    let workers = tokio::spawn(deliverer.clone().run(stopped(stop_rx.clone()), grace));

    // Changes made through another process sharing the database reach this one through here:
    // the store's change notices (PostgreSQL: LISTEN/NOTIFY) as they happen, and a periodic
    // re-read in case a notice was lost. Webhooks and plugins apart, so compiling a new plugin
    // version does not hold up a webhook change.
    let refreshers = {
        let (store_w, directory) = (store.clone(), directory.clone());
        let webhooks = tokio::spawn(refresh(
            store.subscribe(),
            StoreChange::Webhooks,
            stopped(stop_rx.clone()),
            move || {
                let (store, directory) = (store_w.clone(), directory.clone());
                async move {
                    if let Err(e) = directory.reload(store.as_ref()).await {
                        warn!(error = %e, "reloading webhooks failed");
                    }
                }
            },
        ));
        let host = plugins.clone();
        let plugins = tokio::spawn(refresh(
            store.subscribe(),
            StoreChange::Plugins,
            stopped(stop_rx.clone()),
            move || {
                let host = host.clone();
                async move {
                    if let Err(e) = host.reload().await {
                        warn!(error = %e, "reloading plugins failed");
                    }
                }
            },
        ));
        let (store_c, event_types) = (store.clone(), catalog.clone());
        let catalog = tokio::spawn(refresh(
            store.subscribe(),
            StoreChange::EventTypes,
            stopped(stop_rx.clone()),
            move || {
                let (store, catalog) = (store_c.clone(), event_types.clone());
                async move {
                    if let Err(e) = catalog.reload(store.as_ref()).await {
                        warn!(error = %e, "reloading the event catalog failed");
                    }
                    if let Err(e) = catalog.flush(store.as_ref()).await {
                        warn!(error = %e, "adding up uncataloged event types failed");
                    }
                }
            },
        ));
        [webhooks, plugins, catalog]
    };

    let state = Arc::new(AppState {
        store: store.clone(),
        webhooks: directory,
        metrics,
        edge: edge.clone(),
        config: config.clone(),
        wake,
        ready: AtomicBool::new(true),
        plugins: Some(plugins),
        deliverer: Some(deliverer),
        sources: Arc::default(),
        refusals,
        retention: retention.clone(),
        console: crate::console::Sessions::new(&config.console),
        catalog: catalog.clone(),
        backlog: backlog.clone(),
    });
    let backlog_watch = tokio::spawn(server::backpressure::watch(
        backlog,
        store.clone(),
        stopped(stop_rx.clone()),
    ));
    let purger = tokio::spawn(store::retention::run(
        store.clone(),
        config.retention.clone(),
        retention,
        stopped(stop_rx.clone()),
    ));
    let (public_cap, admin_cap) = server::limits::connection_caps(&config.server);
    let sources = tokio::spawn(crate::source::run(state.clone(), stopped(stop_rx.clone())));
    let mut servers = Vec::new();
    let (public_tls, admin_tls) = match &tls {
        Some(tls) => {
            servers.push(tokio::spawn(tls.cert.clone().watch(
                Duration::from_millis(config.server.tls_reload_interval_ms),
                stopped(stop_rx.clone()),
            )));
            (Some(tls.public.clone()), Some(tls.admin.clone()))
        }
        None => (None, None),
    };
    let public_limits = ListenerLimits::new(&config.server, public_cap);
    match listeners.admin {
        Some(admin_listener) => {
            servers.push(spawn_listener(
                "admin",
                admin_listener,
                server::admin_router(state.clone()),
                ListenerLimits::new(&config.server, admin_cap),
                admin_tls,
                edge.listener("admin"),
                stopped(stop_rx.clone()),
            )?);
            servers.push(spawn_listener(
                "public",
                listeners.public,
                server::public_router(state.clone()),
                public_limits,
                public_tls,
                edge.listener("public"),
                stopped(stop_rx.clone()),
            )?);
        }
        None => servers.push(spawn_listener(
            "public+admin",
            listeners.public,
            server::combined_router(state.clone()),
            public_limits,
            public_tls,
            edge.listener("public+admin"),
            stopped(stop_rx.clone()),
        )?),
    }

    shutdown.await;
    info!("shutting down: no new requests, draining deliveries");
    state.ready.store(false, Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for server in servers {
        if let Err(e) = server.await {
            warn!(error = %e, "listener task failed");
        }
    }
    // Sources stop pulling and finish the batch they are committing before the workers go.
    let _ = sources.await;
    let _ = workers.await;
    let _ = purger.await;
    let _ = backlog_watch.await;
    for refresher in refreshers {
        let _ = refresher.await;
    }
    if let Err(e) = catalog.flush(store.as_ref()).await {
        warn!(error = %e, "adding up uncataloged event types at shutdown failed");
    }
    Ok(())
}

/// Logs and starts one listener's accept loop.
fn spawn_listener(
    name: &'static str,
    tcp: TcpListener,
    router: axum::Router,
    limits: ListenerLimits,
    tls: Option<tokio_rustls::TlsAcceptor>,
    metrics: (
        prometheus_client::metrics::gauge::Gauge,
        prometheus_client::metrics::counter::Counter,
    ),
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<tokio::task::JoinHandle<()>, Error> {
    info!(
        listener = name,
        addr = %tcp.local_addr()?,
        max_connections = limits.max_connections,
        tls = tls.is_some(),
        "listening"
    );
    Ok(tokio::spawn(listener::serve(
        name, tcp, router, limits, tls, metrics, stop,
    )))
}

/// Calls `reload` on every change notice of `kind` (a burst of them is one call), after a
/// lost notice (lagged), and every [`RELOAD_EVERY`] in any case, until `stop`.
async fn refresh<F, Fut>(
    changes: broadcast::Receiver<StoreChange>,
    kind: StoreChange,
    stop: impl Future<Output = ()>,
    mut reload: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    tokio::pin!(stop);
    let mut changes = Some(changes);
    loop {
        let due = tokio::select! {
            _ = &mut stop => break,
            change = next_change(&mut changes) => match change {
                Ok(change) => change == kind,
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => {
                    // No more notices: the periodic re-read is all there is.
                    changes = None;
                    true
                }
            },
            _ = tokio::time::sleep(RELOAD_EVERY) => true,
        };
        let mut due = due;
        while let Some(Ok(change)) = changes.as_mut().map(|c| c.try_recv()) {
            due |= change == kind;
        }
        if due {
            reload().await;
        }
    }
}

/// The next change notice; never, once there are none.
async fn next_change(
    changes: &mut Option<broadcast::Receiver<StoreChange>>,
) -> Result<StoreChange, RecvError> {
    match changes {
        Some(changes) => changes.recv().await,
        None => std::future::pending().await,
    }
}

/// Creates or updates, by name, the webhooks declared in the config; with
/// `webhooks_from_config = "seed"` only creates those the store has none of.
async fn apply_declared_webhooks(
    config: &Config,
    store: &dyn Store,
    catalog: &EventCatalog,
) -> Result<(), Error> {
    let seed = config.webhooks_from_config == crate::config::WebhooksFromConfig::Seed;
    for (index, spec) in config.webhooks.iter().enumerate() {
        let spec = spec.clone();
        webhooks::validate(&spec, config.max_timeout_ms())
            .and_then(|()| webhooks::check_name_free(&spec.name))
            .and_then(|()| catalog.check_webhook(&spec))
            .map_err(|error| Error::DeclaredWebhook {
                index,
                name: spec.name.clone(),
                error,
            })?;
        let now = now_ms();
        match store.webhook(&spec.name).await? {
            // Seeded before: the store owns it now, API edits included.
            Some(old) if old.spec.name == spec.name && seed => {}
            Some(old) if old.spec.name == spec.name => {
                let mut spec = spec;
                let name = spec.name.clone();
                webhooks::carry_secrets(&mut spec, &old.spec)
                    .map_err(|error| Error::DeclaredWebhook { index, name, error })?;
                let spec = webhooks::with_generated_secret(spec);
                if spec != old.spec {
                    let hook = Webhook {
                        spec,
                        updated_at: now,
                        ..old
                    };
                    store.update_webhook(&hook).await?;
                }
            }
            _ => {
                let hook = Webhook {
                    id: new_id("wh"),
                    spec: webhooks::with_generated_secret(spec),
                    created_at: now,
                    updated_at: now,
                };
                store.insert_webhook(&hook).await?;
            }
        }
    }
    Ok(())
}
