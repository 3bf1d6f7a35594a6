//! Sending deliveries.

pub mod client;
pub mod retry;
pub mod shape;
pub mod signing;
pub mod worker;
