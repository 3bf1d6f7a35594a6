//! Sending deliveries.

pub mod client;
pub mod retry;
pub mod signing;
pub mod shape;
#[cfg(any())]
pub mod worker;
