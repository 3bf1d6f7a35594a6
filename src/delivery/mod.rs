//! Sending deliveries.

pub mod client;
pub mod headers;
pub mod plugin_output;
pub mod retry;
pub mod shape;
pub mod signing;
pub mod worker;
