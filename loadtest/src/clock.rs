//! One monotonic clock for the whole harness.
//!
//! The generator stamps each event with `sent_at_ns` from this clock and the receiver, in the
//! same process, subtracts it from its own reading: lag needs no clock synchronisation and is
//! immune to wall-clock steps.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static START: OnceLock<Instant> = OnceLock::new();

/// The instant the clock counts from (the first call of any function here).
pub fn origin() -> Instant {
    *START.get_or_init(Instant::now)
}

/// Nanoseconds since [`origin`].
pub fn now_ns() -> u64 {
    origin().elapsed().as_nanos() as u64
}

/// The instant of a clock reading.
pub fn instant_of(ns: u64) -> Instant {
    origin() + Duration::from_nanos(ns)
}
