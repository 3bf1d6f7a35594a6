//! Standard Webhooks signatures (<https://www.standardwebhooks.com>).
//!
//! Receivers verify deliveries with the spec's off-the-shelf libraries, so the scheme is fixed:
//! a `whsec_<base64>` secret, and `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` in the
//! `webhook-signature` header. The message id is stable across retries (receivers de-duplicate on
//! it) while the timestamp is the time of each attempt (receivers reject stale ones).
//! [`verify`] is the receiving side, for inbound webhooks.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Header carrying the message id, stable across retries.
pub const HEADER_ID: &str = "webhook-id";
/// Header carrying the attempt's Unix timestamp in seconds.
pub const HEADER_TIMESTAMP: &str = "webhook-timestamp";
/// Header carrying the space-separated `v1,<signature>` entries.
pub const HEADER_SIGNATURE: &str = "webhook-signature";

const SECRET_PREFIX: &str = "whsec_";

/// Why signing or verification failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigningError {
    /// The secret is not `whsec_` followed by non-empty base64.
    #[error("invalid signing secret: expected whsec_ followed by base64")]
    InvalidSecret,
    /// The timestamp header is not an integer.
    #[error("invalid webhook timestamp")]
    InvalidTimestamp,
    /// The timestamp is too far from now (replay protection).
    #[error("webhook timestamp outside the tolerance")]
    TimestampOutOfTolerance,
    /// No `v1` entry of the signature header matches.
    #[error("no matching webhook signature")]
    NoMatchingSignature,
}

/// A new random secret: `whsec_` and the base64 of 24 random bytes.
pub fn generate_secret() -> String {
    let mut key = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut key);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(key))
}

/// The `webhook-signature` value of one message: `v1,<base64 HMAC-SHA256>`.
///
/// `secret` is `whsec_<base64>`; the bare base64 is accepted too.
pub fn sign(
    secret: &str,
    msg_id: &str,
    timestamp_secs: i64,
    body: &[u8],
) -> Result<String, SigningError> {
    let mac = mac(&key(secret)?, msg_id, timestamp_secs, body)?;
    Ok(format!("v1,{}", STANDARD.encode(mac)))
}

/// Checks a received message: its timestamp must be within `tolerance_secs` of `now_secs`, and
/// one of the `v1` entries of `signature_header` must match (other versions are ignored).
pub fn verify(
    secret: &str,
    msg_id: &str,
    timestamp_header: &str,
    signature_header: &str,
    body: &[u8],
    now_secs: i64,
    tolerance_secs: i64,
) -> Result<(), SigningError> {
    let key = key(secret)?;
    let timestamp: i64 = timestamp_header
        .trim()
        .parse()
        .map_err(|_| SigningError::InvalidTimestamp)?;
    if now_secs.abs_diff(timestamp) > tolerance_secs.max(0).unsigned_abs() {
        return Err(SigningError::TimestampOutOfTolerance);
    }
    let expected = mac(&key, msg_id, timestamp, body)?;
    let matches = signature_header
        .split_whitespace()
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .filter_map(|sig| STANDARD.decode(sig).ok())
        .any(|sig| bool::from(sig.as_slice().ct_eq(&expected)));
    if matches {
        Ok(())
    } else {
        Err(SigningError::NoMatchingSignature)
    }
}

fn key(secret: &str) -> Result<Vec<u8>, SigningError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    match STANDARD.decode(encoded) {
        Ok(key) if !key.is_empty() => Ok(key),
        _ => Err(SigningError::InvalidSecret),
    }
}

fn mac(key: &[u8], msg_id: &str, timestamp: i64, body: &[u8]) -> Result<Vec<u8>, SigningError> {
    // HMAC takes keys of any length; the error exists only for the trait's sake.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| SigningError::InvalidSecret)?;
    mac.update(msg_id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(mac.finalize().into_bytes().to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const MSG_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1614265330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn standard_webhooks_vector_signs() {
        assert_eq!(sign(SECRET, MSG_ID, TS, BODY).unwrap(), SIG);
        // The bare base64 works as well.
        assert_eq!(sign(&SECRET[6..], MSG_ID, TS, BODY).unwrap(), SIG);
    }

    #[test]
    fn standard_webhooks_vector_verifies() {
        verify(SECRET, MSG_ID, "1614265330", SIG, BODY, TS, 300).unwrap();
        // Among other entries, other versions and garbage.
        let header = format!("v1,Zm9v v2,abc garbage {SIG}");
        verify(SECRET, MSG_ID, "1614265330", &header, BODY, TS + 299, 300).unwrap();
    }

    #[test]
    fn verify_rejects() {
        let v = |ts: &str, sig: &str, now: i64| verify(SECRET, MSG_ID, ts, sig, BODY, now, 300);
        assert_eq!(
            v("1614265330", "v1,Zm9v", TS),
            Err(SigningError::NoMatchingSignature)
        );
        assert_eq!(
            v("1614265330", "", TS),
            Err(SigningError::NoMatchingSignature)
        );
        // A v2 entry carrying the v1 signature does not count.
        let v2 = SIG.replacen("v1,", "v2,", 1);
        assert_eq!(
            v("1614265330", &v2, TS),
            Err(SigningError::NoMatchingSignature)
        );
        assert_eq!(v("soon", SIG, TS), Err(SigningError::InvalidTimestamp));
        assert_eq!(
            v("1614265330", SIG, TS + 301),
            Err(SigningError::TimestampOutOfTolerance)
        );
        assert_eq!(
            v("1614265330", SIG, TS - 301),
            Err(SigningError::TimestampOutOfTolerance)
        );
    }

    #[test]
    fn invalid_secrets() {
        for secret in ["whsec_not base64!", "whsec_", "", "%%%"] {
            assert_eq!(
                sign(secret, MSG_ID, TS, BODY),
                Err(SigningError::InvalidSecret)
            );
        }
        assert_eq!(
            verify("whsec_!", MSG_ID, "1614265330", SIG, BODY, TS, 300),
            Err(SigningError::InvalidSecret)
        );
    }

    #[test]
    fn generated_secrets_are_usable_and_distinct() {
        let (a, b) = (generate_secret(), generate_secret());
        assert_ne!(a, b);
        assert!(a.starts_with("whsec_"));
        assert_eq!(STANDARD.decode(&a[6..]).unwrap().len(), 24);
        let sig = sign(&a, "msg_1", 10, b"{}").unwrap();
        verify(&a, "msg_1", "10", &sig, b"{}", 10, 0).unwrap();
        assert!(verify(&b, "msg_1", "10", &sig, b"{}", 10, 0).is_err());
    }

    proptest! {
        #[test]
        fn sign_verify_roundtrip(
            id in "[A-Za-z0-9_-]{1,40}",
            body in proptest::collection::vec(any::<u8>(), 0..512),
            ts in 0i64..4_000_000_000,
            skew in -300i64..=300,
        ) {
            let secret = generate_secret();
            let sig = sign(&secret, &id, ts, &body).unwrap();
            prop_assert!(verify(&secret, &id, &ts.to_string(), &sig, &body, ts + skew, 300).is_ok());
        }

        #[test]
        fn flipped_body_byte_fails(
            body in proptest::collection::vec(any::<u8>(), 1..512),
            index in any::<prop::sample::Index>(),
            mask in 1u8..=255,
        ) {
            let sig = sign(SECRET, MSG_ID, TS, &body).unwrap();
            let mut tampered = body.clone();
            tampered[index.index(body.len())] ^= mask;
            prop_assert_eq!(
                verify(SECRET, MSG_ID, "1614265330", &sig, &tampered, TS, 300),
                Err(SigningError::NoMatchingSignature)
            );
        }

        #[test]
        fn flipped_id_byte_fails(
            id in "[A-Za-z0-9]{1,40}",
            index in any::<prop::sample::Index>(),
            replacement in "[A-Za-z0-9_]",
        ) {
            let sig = sign(SECRET, &id, TS, BODY).unwrap();
            let i = index.index(id.len());
            let mut tampered = id.clone();
            tampered.replace_range(i..i + 1, &replacement);
            prop_assume!(tampered != id);
            prop_assert_eq!(
                verify(SECRET, &tampered, "1614265330", &sig, BODY, TS, 300),
                Err(SigningError::NoMatchingSignature)
            );
        }

        #[test]
        fn out_of_tolerance_fails(
            ts in 0i64..4_000_000_000,
            tolerance in 0i64..3600,
            excess in 1i64..1_000_000,
            past in any::<bool>(),
        ) {
            let sig = sign(SECRET, MSG_ID, ts, BODY).unwrap();
            let now = if past { ts + tolerance + excess } else { ts - tolerance - excess };
            prop_assert_eq!(
                verify(SECRET, MSG_ID, &ts.to_string(), &sig, BODY, now, tolerance),
                Err(SigningError::TimestampOutOfTolerance)
            );
        }
    }
}
