//! When to retry a delivery, and how long to wait: pure functions, so the policy is tested
//! without clocks or sockets.
//!
//! Backoff is exponential and capped, with jitter so that deliveries failing together (an
//! endpoint that went down) do not come back together. A receiver's `Retry-After` is honoured as
//! a lower bound, capped so that a hostile or buggy receiver cannot park a delivery for ever.

use std::time::{Duration, SystemTime};

use rand::Rng;

/// Exponential backoff with jitter.
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Delay after the first failed attempt, in milliseconds.
    pub base_ms: u64,
    /// Growth per further failed attempt (2.0 doubles).
    pub factor: f64,
    /// Upper bound of every delay, in milliseconds.
    pub max_ms: u64,
    /// Random spread as a fraction: 0.2 is ±20%. Clamped to `[0, 1]`.
    pub jitter: f64,
}

impl Backoff {
    /// The delay after the `attempt`-th failed attempt (1-based): `base * factor^(attempt-1)`,
    /// capped at `max_ms`, then jittered, and never above `max_ms`.
    pub fn delay(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let max = self.max_ms as f64;
        // Past a few thousand doublings everything is infinite anyway; powi takes an i32.
        let exponent = attempt.saturating_sub(1).min(10_000) as i32;
        let raw = match self.base_ms {
            // 0 * infinity would be NaN.
            0 => 0.0,
            base => base as f64 * self.factor.powi(exponent),
        };
        // `f64::min` ignores NaN, so a NaN factor yields the maximum.
        let capped = raw.min(max);
        let jitter = if self.jitter.is_finite() {
            self.jitter.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let jittered = if jitter > 0.0 {
            capped * rng.gen_range(1.0 - jitter..=1.0 + jitter)
        } else {
            capped
        };
        // Float-to-int `as` saturates; clamp handles the rest.
        Duration::from_millis(jittered.clamp(0.0, max) as u64)
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date. A date in the past is zero;
/// anything else unparsable is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Only digits: a number too large for u64 is "very long", not garbage.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = httpdate::parse_http_date(value).ok()?;
    Some(date.duration_since(now).unwrap_or(Duration::ZERO))
}

/// What an HTTP status means for a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusClass {
    /// 2xx: delivered.
    Success,
    /// 5xx or a configured retryable status: try again later.
    Retryable,
    /// Any other status (3xx included: redirects are not followed): give up now.
    Permanent,
    /// 410: the receiver wants no more deliveries; the webhook gets disabled.
    Gone,
}

/// Classifies a response status; `retryable` lists the non-5xx statuses worth retrying
/// (the configuration's default is `[408, 425, 429]`).
pub fn classify(status: u16, retryable: &[u16]) -> StatusClass {
    match status {
        200..=299 => StatusClass::Success,
        410 => StatusClass::Gone,
        500..=599 => StatusClass::Retryable,
        s if retryable.contains(&s) => StatusClass::Retryable,
        _ => StatusClass::Permanent,
    }
}

/// The wait before the next attempt: the backoff delay, or the receiver's `Retry-After`
/// (capped at `max_retry_after`) when that is later.
pub fn next_delay(
    backoff: &Backoff,
    attempt: u32,
    retry_after: Option<Duration>,
    max_retry_after: Duration,
    rng: &mut impl Rng,
) -> Duration {
    let delay = backoff.delay(attempt, rng);
    match retry_after {
        Some(wanted) => delay.max(wanted.min(max_retry_after)),
        None => delay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    fn backoff(base_ms: u64, factor: f64, max_ms: u64, jitter: f64) -> Backoff {
        Backoff {
            base_ms,
            factor,
            max_ms,
            jitter,
        }
    }

    #[test]
    fn delay_grows_and_caps() {
        let b = backoff(1000, 2.0, 60_000, 0.0);
        let mut rng = StdRng::seed_from_u64(1);
        let delays: Vec<u64> = (1..=8)
            .map(|a| b.delay(a, &mut rng).as_millis() as u64)
            .collect();
        assert_eq!(
            delays,
            [1000, 2000, 4000, 8000, 16_000, 32_000, 60_000, 60_000]
        );
        // Attempt 0 is treated as the first; huge attempts do not overflow.
        assert_eq!(b.delay(0, &mut rng), Duration::from_millis(1000));
        assert_eq!(b.delay(u32::MAX, &mut rng), Duration::from_millis(60_000));
        let huge = backoff(u64::MAX, f64::MAX, u64::MAX, 1.0);
        assert!(huge.delay(u32::MAX, &mut rng) <= Duration::from_millis(u64::MAX));
        let nan = backoff(1000, f64::NAN, 5000, f64::NAN);
        assert_eq!(nan.delay(3, &mut rng), Duration::from_millis(5000));
    }

    #[test]
    fn parses_retry_after() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now),
            Some(Duration::from_secs(u64::MAX))
        );
        let later = httpdate::fmt_http_date(now + Duration::from_secs(90));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(90))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(90));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        for garbage in ["", "soon", "-5", "1.5", "12s", "Mon, 32 Foo 2024"] {
            assert_eq!(parse_retry_after(garbage, now), None, "{garbage:?}");
        }
    }

    #[test]
    fn classifies_statuses() {
        let retryable = [408, 425, 429];
        for (status, class) in [
            (200, StatusClass::Success),
            (204, StatusClass::Success),
            (299, StatusClass::Success),
            (301, StatusClass::Permanent),
            (302, StatusClass::Permanent),
            (304, StatusClass::Permanent),
            (400, StatusClass::Permanent),
            (401, StatusClass::Permanent),
            (404, StatusClass::Permanent),
            (408, StatusClass::Retryable),
            (410, StatusClass::Gone),
            (425, StatusClass::Retryable),
            (429, StatusClass::Retryable),
            (500, StatusClass::Retryable),
            (503, StatusClass::Retryable),
            (599, StatusClass::Retryable),
            (100, StatusClass::Permanent),
            (600, StatusClass::Permanent),
        ] {
            assert_eq!(classify(status, &retryable), class, "{status}");
        }
        assert_eq!(classify(429, &[]), StatusClass::Permanent);
        assert_eq!(classify(409, &[409]), StatusClass::Retryable);
    }

    proptest! {
        #[test]
        fn delay_within_bounds(
            base in 0u64..100_000,
            extra in 0u64..10_000_000,
            factor in 1.0f64..10.0,
            jitter in 0.0f64..=1.0,
            attempt in 0u32..200,
            seed: u64,
        ) {
            let b = backoff(base, factor, base + extra, jitter);
            let d = b.delay(attempt, &mut StdRng::seed_from_u64(seed)).as_millis() as f64;
            prop_assert!(d <= (base + extra) as f64);
            prop_assert!(d >= (base as f64 * (1.0 - jitter)).floor() - 1.0);
        }

        #[test]
        fn delay_without_jitter_is_monotone(
            base in 0u64..100_000,
            max in 0u64..100_000_000,
            factor in 1.0f64..10.0,
            attempt in 0u32..10_000,
        ) {
            let b = backoff(base, factor, max, 0.0);
            let mut rng = StdRng::seed_from_u64(0);
            prop_assert!(b.delay(attempt, &mut rng) <= b.delay(attempt + 1, &mut rng));
        }

        #[test]
        fn retry_after_is_a_capped_lower_bound(
            base in 0u64..100_000,
            attempt in 1u32..20,
            retry_after_ms in 0u64..10_000_000,
            cap_ms in 0u64..10_000_000,
            seed: u64,
        ) {
            let b = backoff(base, 2.0, 3_600_000, 0.2);
            let cap = Duration::from_millis(cap_ms);
            let wanted = Duration::from_millis(retry_after_ms);
            let own = b.delay(attempt, &mut StdRng::seed_from_u64(seed));
            let d = next_delay(&b, attempt, Some(wanted), cap, &mut StdRng::seed_from_u64(seed));
            prop_assert!(d >= wanted.min(cap));
            prop_assert!(d >= own);
            prop_assert_eq!(d, own.max(wanted.min(cap)));
            let none = next_delay(&b, attempt, None, cap, &mut StdRng::seed_from_u64(seed));
            prop_assert_eq!(none, own);
        }
    }
}
