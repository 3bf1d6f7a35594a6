//! Integration tests: the real gateway on port 0 against real peers started by each test.

mod common;

mod admin;
mod auth;
mod bad_input;
mod catalog;
mod cli;
mod cluster;
mod delivery;
mod durability;
mod edge;
mod examples;
mod ingest;
mod plugin_kit;
mod plugin_output;
mod plugins;
mod secrets;
mod sources;
mod ssrf;
mod sync;
mod test_send;
mod tls;
