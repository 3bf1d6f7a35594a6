//! The HTTP APIs: the public listener (ingest, inbound, health, metrics) and the admin listener.
//!
//! [`listener`] serves them (timeouts, connection caps, TLS from [`tls`]); [`limits`] holds the
//! open-file budget, the body deadline and the inbound rate limit.
//!
//! Every error is a JSON body (see [`error`]); no input, however malformed, reaches a panic.
//! Bodies are read whole up to `server.max_body_bytes` and parsed by the handler, so malformed
//! JSON (400), a body of the wrong shape (422) and an oversized body (413) are told apart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use subtle::ConstantTimeEq;
use tokio::sync::Notify;

use crate::config::Config;
use crate::delivery::worker::Deliverer;
use crate::metrics::Metrics;
use crate::model::now_ms;
use crate::plugin::PluginHost;
use crate::store::Store;
use crate::webhooks::WebhookDirectory;

pub mod admin;
pub mod backpressure;
pub mod catalog;
pub mod connections;
pub mod edge_metrics;
pub mod error;
pub mod inbound;
pub mod inbound_log;
pub mod ingest;
pub mod limits;
pub mod listener;
pub mod log_filter;
pub mod openapi;
pub mod plugin_try;
pub mod plugins;
pub mod sources;
pub mod test_send;
pub mod tls;

pub use error::ApiError;

/// What the handlers share.
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// The webhooks, as ingest and workers see them.
    pub webhooks: Arc<WebhookDirectory>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Metrics of the listeners.
    pub edge: Arc<edge_metrics::EdgeMetrics>,
    /// The configuration.
    pub config: Arc<Config>,
    /// Wakes the workers when new work is committed.
    pub wake: Arc<Notify>,
    /// False once shutdown has begun: `/readyz` then answers 503.
    pub ready: AtomicBool,
    /// The plugin registry (none when plugins are off).
    pub plugins: Option<Arc<PluginHost>>,
    /// The workers, which start new deliveries at ingest when they can (none: every delivery
    /// waits for a claim).
    pub deliverer: Option<Arc<Deliverer>>,
    /// What the message-bus sources of this process are doing.
    pub sources: Arc<crate::source::SourceBoard>,
    /// The log of refused inbound pushes, with its sampling.
    pub refusals: Arc<inbound_log::RefusalLog>,
    /// The retention metrics (`hookyard_store_rows`).
    pub retention: Arc<crate::store::retention::RetentionMetrics>,
    /// The admin console's sessions.
    pub console: crate::console::Sessions,
    /// The event catalog, and the counts of uncataloged event types.
    pub catalog: Arc<crate::catalog::EventCatalog>,
    /// The ingest back-pressure: the due backlog as last read, and its limit.
    pub backlog: Arc<backpressure::IngestBacklog>,
}

/// Shared state of the routers.
pub type Shared = Arc<AppState>;

/// The public router: ingest, inbound, health, metrics.
pub fn public_router(state: Shared) -> Router {
    finish(public_routes(&state), state)
}

/// The admin router.
pub fn admin_router(state: Shared) -> Router {
    finish(admin_routes(&state), state)
}

/// Both APIs on one listener (`admin_listen` equal to `listen`).
pub fn combined_router(state: Shared) -> Router {
    finish(public_routes(&state).merge(admin_routes(&state)), state)
}

fn public_routes(state: &Shared) -> Router<Shared> {
    let ingest = Router::new()
        .route("/v1/events", post(ingest::one))
        .route("/v1/events/batch", post(ingest::batch))
        // Under the token check (a later layer runs first): only a caller with the token
        // learns that the queue is backlogged.
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            backpressure::refuse_when_backlogged,
        ))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_ingest_token,
        ));
    let mut inbound = Router::new()
        .route("/v1/inbound/{webhook}", post(inbound::receive))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            inbound_log::log_refusals,
        ));
    if let Some(limit) = limits::InboundRateLimit::from_config(
        &state.config.server,
        state.edge.inbound_rate_limited.clone(),
    ) {
        inbound = inbound.route_layer(middleware::from_fn_with_state(
            Arc::new(limit),
            limits::limit_inbound,
        ));
    }
    Router::new()
        .merge(ingest)
        .merge(inbound)
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

fn admin_routes(state: &Shared) -> Router<Shared> {
    admin::routes()
        .merge(plugins::routes(state.config.plugins.max_upload_bytes))
        .merge(sources::routes())
        .route("/admin/v1/metrics", get(admin_metrics))
        .merge(connections::routes())
        .merge(catalog::routes())
        .merge(test_send::routes())
        .merge(plugin_try::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_admin_token,
        ))
        .route("/admin/v1/openapi.json", get(openapi::document))
        .merge(console_routes(state))
}

fn console_routes(state: &Shared) -> Router<Shared> {
    if state.config.console.enabled {
        crate::console::routes()
    } else {
        Router::new()
    }
}

/// The fallback and the body limit, added once to a whole router: two routers that each have
/// a fallback cannot be merged.
fn finish(routes: Router<Shared>, state: Shared) -> Router {
    routes
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .with_state(state)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

/// Whether the request carries `Authorization: Bearer <expected>`; an empty `expected` means
/// no token is configured (allowed on loopback listeners only, checked by the config).
pub fn bearer_ok(headers: &HeaderMap, expected: &str) -> bool {
    if expected.is_empty() {
        return true;
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    given.as_bytes().ct_eq(expected.as_bytes()).into()
}

async fn require_ingest_token(
    State(state): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    if bearer_ok(request.headers(), &state.config.server.ingest_token) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// The admin API's guard: the bearer admin token, or a console session cookie with, for a
/// change, its CSRF token and the console's Origin ([`crate::console::authorize`]). A request
/// with an `Authorization` header is judged by it alone.
async fn require_admin_token(
    State(state): State<Shared>,
    request: Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    if !headers.contains_key(header::AUTHORIZATION) && state.config.console.enabled {
        if let Some(verdict) = crate::console::authorize(&state, &request) {
            return match verdict {
                Ok(()) => next.run(request).await,
                Err(e) => e.into_response(),
            };
        }
    }
    let token = &state.config.server.admin_token;
    // Without a token the admin API is open to loopback clients: still not to a web page in a
    // browser on this machine (a cross-site form post needs no CORS preflight).
    if token.is_empty()
        && !matches!(*request.method(), Method::GET | Method::HEAD)
        && !crate::console::origin_ok(&state, headers, false)
    {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "cross-site requests to the admin API are refused",
        )
        .into_response();
    }
    if bearer_ok(headers, token) {
        next.run(request).await
    } else {
        ApiError::unauthorized().into_response()
    }
}

/// `GET /healthz`: the process is up.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    summary = "Liveness",
    responses((status = 200, description = "Alive: `{\"status\": \"ok\"}`", body = openapi::Health)),
    security(()),
)]
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// `GET /readyz`: the store answers and shutdown has not begun.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    summary = "Readiness: the store answers and shutdown has not begun",
    responses(
        (status = 200, description = "Ready: `{\"status\": \"ready\"}`", body = openapi::Health),
        (status = 503, response = openapi::Unavailable),
    ),
    security(()),
)]
async fn readyz(State(state): State<Shared>) -> Response {
    if !state.ready.load(Ordering::Relaxed) {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "shutting_down",
            "shutting down",
        )
        .into_response();
    }
    match state.store.queue_stats(now_ms()).await {
        Ok(_) => axum::Json(serde_json::json!({"status": "ready"})).into_response(),
        Err(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_unavailable",
            e.to_string(),
        )
        .into_response(),
    }
}

/// `GET /admin/v1/metrics`: the figures of `/metrics` behind the admin token (the console's
/// Overview reads them from the admin listener).
#[utoipa::path(
    get,
    path = "/admin/v1/metrics",
    tag = "operations",
    summary = "Prometheus metrics, on the admin listener",
    responses(
        (
            status = 200,
            description = "Metrics",
            body = String,
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
        ),
        (status = 401, response = openapi::Unauthorized),
    ),
    security(("admin_token" = [])),
)]
async fn admin_metrics(state: State<Shared>) -> Response {
    metrics(state).await
}

/// `GET /metrics`: Prometheus metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    summary = "Prometheus metrics (OpenMetrics text)",
    responses((
        status = 200,
        description = "Metrics",
        body = String,
        content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
    )),
    security(()),
)]
async fn metrics(State(state): State<Shared>) -> Response {
    state.retention.observe_rows(state.store.as_ref()).await;
    match state.store.queue_stats(now_ms()).await {
        Ok(stats) => {
            state.metrics.queue_depth.set(stats.pending as i64);
            state.metrics.queue_due.set(stats.due as i64);
            state
                .metrics
                .oldest_due_age
                .set(stats.oldest_due_age_ms as f64 / 1000.0);
        }
        Err(e) => tracing::warn!(error = %e, "reading queue stats for /metrics failed"),
    }
    state
        .metrics
        .webhooks
        .set(state.webhooks.enabled().len() as i64);
    if let Some(plugins) = &state.plugins {
        for (plugin, version) in plugins.active_versions() {
            state
                .metrics
                .plugin_active_version
                .get_or_create(&crate::metrics::PluginLabel { plugin })
                .set(i64::from(version));
        }
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}
