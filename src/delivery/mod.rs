//! Sending deliveries.

pub mod client;
pub mod retry;
pub mod signing;
pub mod shape;
pub mod worker;
