//! Integration tests: the real gateway on port 0 against real peers started by each test.

mod common;

mod admin;
mod auth;
mod backpressure;
mod bad_input;
mod builtin;
mod catalog;
mod cli;
mod cluster;
mod connections;
mod console;
mod delivery;
mod durability;
mod edge;
mod examples;
mod ingest;
mod log_search;
mod openapi;
mod plugin_kit;
mod plugin_output;
mod plugin_try;
mod plugins;
mod retention;
mod rough_edges;
mod secrets;
mod sources;
mod ssrf;
mod sync;
mod test_send;
mod tls;
mod warm;
