//! hookyard: a webhook gateway.
//!
//! Internal systems post events; for every webhook subscribed to an event's type, hookyard
//! commits a delivery, shapes the request (a WebAssembly plugin or the default envelope), signs
//! and authenticates it, and sends it with retries until the receiver accepts it or the delivery
//! is dead. Every attempt is logged.
//!
//! # Layout
//!
//! - [`config`]: the typed configuration, its defaults file and `HOOKYARD_*` overrides.
//! - [`model`]: webhooks, events, deliveries and attempts: what is stored and served.
//! - [`store`]: the storage interface, the queue's state machine and invariants, the SQLite
//!   implementation with group commit and the PostgreSQL one (`SKIP LOCKED` claims, `LISTEN`ed
//!   change notices, TLS by `sslmode` in [`store::postgres_tls`]); [`store::open`] picks one by
//!   URL. The Webhook Log's search (full-text index per store) and [`store::retention`] (the
//!   background purge, `hookyard_store_rows`).
//! - [`webhooks`]: the in-memory directory of webhooks and the validation of their definitions.
//! - [`catalog`]: the event catalog (types, their data schemas and examples), the checks of
//!   webhooks against it, and the counts of events of uncataloged types.
//! - [`delivery`]: sending: [`delivery::shape`] (event to request, where plugins slot in),
//!   [`delivery::client`] (the SSRF-safe HTTP client), [`delivery::signing`] (Standard
//!   Webhooks), [`delivery::retry`] (backoff and status classes), [`delivery::headers`] (the
//!   headers only the gateway sets), [`delivery::plugin_output`] (what a plugin's request may
//!   change) and [`delivery::worker`] (the claim-and-send loop).
//! - [`plugin`]: WebAssembly plugins: the one `bindgen!`, the engine and sandboxed calls, warm
//!   instances reused per (plugin version, webhook) ([`plugin::warm`]), the registry of versions
//!   with hot swap and rollback.
//! - [`source`]: events from message buses (NATS JetStream, RabbitMQ): consumers that commit
//!   batches through ingest and acknowledge them only once committed.
//! - [`sink`]: the internal system's endpoint for write-backs and inbound records.
//! - [`auth`]: credentials for outgoing requests, with the OAuth2 token cache.
//! - [`connections`]: shared connections, one set of outgoing credentials (and one cached OAuth2
//!   token) that many webhooks and the sink use by name.
//! - [`secrets`]: secrets at rest (AES-256-GCM keyring, key sources, the encrypting store
//!   wrapper, re-encryption at start-up) and redaction (URL credentials, scrubbing echoed
//!   secrets).
//! - [`private_files`]: files and directories created readable by the gateway's user only.
//! - [`server`]: the public (ingest, inbound, health, metrics) and admin HTTP APIs, their
//!   OpenAPI document generated from the handlers ([`server::openapi`]), and the listeners that
//!   serve them ([`server::listener`]: timeouts, connection caps, TLS from
//!   [`server::tls`]; [`server::limits`]: open-file budget, body deadline, inbound rate limit;
//!   [`server::log_filter`]: the Webhook Log's query; [`server::inbound_log`]: refused inbound
//!   pushes in the log; [`server::backpressure`]: ingest refused while the due backlog is over
//!   its limit).
//! - [`console`]: the admin console at `/console/`: embedded HTML/CSS/JS on the admin API,
//!   sessions (the admin token exchanged for a cookie) and CSRF tokens.
//! - [`metrics`]: the Prometheus registry.
//! - `fuzz` (tests only): a fuzz target per parser of untrusted input.
//!
//! [`run`] is the entry point: it takes bound listeners and a shutdown future, so tests run the
//! real gateway on port 0.

#![warn(missing_docs, unreachable_pub)]

pub mod auth;
pub mod catalog;
pub mod config;
pub mod connections;
pub mod console;
pub mod delivery;
pub mod metrics;
pub mod model;
pub mod plugin;
pub mod private_files;
pub mod secrets;
pub mod server;
pub mod sink;
pub mod source;
pub mod store;
pub mod webhooks;

#[cfg(test)]
mod fuzz;
mod gateway;
pub use gateway::{open_store, run, run_with_store, Error, Listeners};
