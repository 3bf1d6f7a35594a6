//! Outgoing credentials.
