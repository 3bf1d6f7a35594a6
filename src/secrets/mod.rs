//! Secrets at rest, and secrets kept out of what admins and logs see.
//!
//! - [`Keyring`] (this file): AES-256-GCM encryption of one secret value. The first key
//!   encrypts; every key decrypts. A stored value reads `enc:v1:<key id>:<base64url(nonce |
//!   ciphertext | tag)>`, with a fresh random 96-bit nonce per value and, as associated data, the
//!   webhook id and the field's path, so a ciphertext copied into another webhook or field does
//!   not decrypt.
//! - [`keys`]: where keys come from (`HOOKYARD_SECRET_KEY`, `store.secret_key`, a key file; a key
//!   file generated beside a new SQLite database).
//! - [`store`]: [`store::SecretStore`], the [`crate::store::Store`] wrapper that encrypts every
//!   secret field of a webhook on the way in and decrypts it on the way out, and
//!   [`store::SecretStore::reencrypt_all`] (plaintext stores and rotation, at start-up).
//! - [`scrub`]: masking of credentials in URLs, and removal of secrets, in every encoding the
//!   gateway sends them in, from text that came back from a server.
//!
//! Invariant: every value the store holds in a secret field (see
//! [`crate::model::WebhookSpec::secret_fields_mut`]) is a ciphertext once the start-up pass has
//! run; a plaintext value read before that is accepted as it is (a store written by an older
//! version), and the pass rewrites it.

pub mod keys;
pub mod scrub;
pub mod store;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefix of an encrypted value (format version 1).
pub const PREFIX: &str = "enc:v1:";
/// Bytes of a key (AES-256).
pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

/// Why a key could not be loaded or a value could not be decrypted. Never carries key material
/// or a secret.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configured key is not base64 of 32 bytes, or no key is configured where one is needed.
    #[error("secret key: {0}")]
    Key(String),
    /// A key file could not be read, created or written.
    #[error("secret key file {path}: {reason}")]
    KeyFile {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// A stored value is not one this keyring can decrypt.
    #[error("{field} cannot be decrypted: {reason}")]
    Decrypt {
        /// The field's path (`auth.password`).
        field: String,
        /// Why (unknown key id, wrong key or damaged value).
        reason: String,
    },
    /// The store failed during the start-up re-encryption.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
}

/// One key and its id.
struct Key {
    id: String,
    cipher: Aes256Gcm,
}

/// The keys secrets are encrypted with: the first encrypts, all decrypt.
pub struct Keyring {
    keys: Vec<Key>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("Keyring").field("key_ids", &ids).finish()
    }
}

/// The id of a key: a short hash, so a stored value names its key without revealing it and
/// without the operator having to name keys.
pub fn key_id(key: &[u8; KEY_LEN]) -> String {
    let digest = Sha256::new()
        .chain_update(b"hookyard secret key id\0")
        .chain_update(key)
        .finalize();
    digest[..6].iter().map(|b| format!("{b:02x}")).collect()
}

/// Associated data binding a ciphertext to its webhook and field.
fn aad(context: &str, field: &str) -> Vec<u8> {
    format!("hookyard\0{context}\0{field}").into_bytes()
}

impl Keyring {
    /// A keyring of `keys`, the first encrypting. At least one key is required; a key given
    /// twice is kept once.
    pub fn new(keys: &[[u8; KEY_LEN]]) -> Result<Keyring, Error> {
        if keys.is_empty() {
            return Err(Error::Key("no key configured".into()));
        }
        let mut ring = Keyring { keys: Vec::new() };
        for key in keys {
            let id = key_id(key);
            if ring.keys.iter().any(|k| k.id == id) {
                continue;
            }
            let cipher = Aes256Gcm::new_from_slice(key)
                .map_err(|_| Error::Key("a key must be 32 bytes".into()))?;
            ring.keys.push(Key { id, cipher });
        }
        Ok(ring)
    }

    /// A keyring of one fresh random key (an in-memory store, whose data dies with the process).
    pub fn ephemeral() -> Keyring {
        let mut key = [0u8; KEY_LEN];
        rand::rngs::OsRng.fill_bytes(&mut key);
        Keyring::new(&[key]).unwrap_or_else(|_| unreachable!("one 32-byte key"))
    }

    /// The id of the key that encrypts.
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Ids of every key, the encrypting one first.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Whether `value` is an encrypted value (of any key, known or not).
    pub fn is_encrypted(value: &str) -> bool {
        value.starts_with(PREFIX)
    }

    /// The key id an encrypted value names.
    pub fn key_of(value: &str) -> Option<&str> {
        value
            .strip_prefix(PREFIX)?
            .split_once(':')
            .map(|(id, _)| id)
    }

    /// Encrypts `plaintext` under the first key, bound to `context` (the webhook id) and `field`.
    pub fn encrypt(&self, context: &str, field: &str, plaintext: &str) -> String {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = aad(context, field);
        let payload = Payload {
            msg: plaintext.as_bytes(),
            aad: &aad,
        };
        // AES-GCM encryption fails only for messages past 64 GiB.
        let sealed = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut bytes = Vec::with_capacity(NONCE_LEN + sealed.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&sealed);
        format!("{PREFIX}{}:{}", key.id, URL_SAFE_NO_PAD.encode(bytes))
    }

    /// Decrypts a value made by [`Keyring::encrypt`] with the same `context` and `field`.
    pub fn decrypt(&self, context: &str, field: &str, value: &str) -> Result<String, Error> {
        let fail = |reason: String| Error::Decrypt {
            field: field.to_owned(),
            reason,
        };
        let rest = value
            .strip_prefix(PREFIX)
            .ok_or_else(|| fail("not an encrypted value".into()))?;
        let (id, data) = rest
            .split_once(':')
            .ok_or_else(|| fail("malformed encrypted value".into()))?;
        let key = self.keys.iter().find(|k| k.id == id).ok_or_else(|| {
            fail(format!(
                "it was encrypted with key {id}, which is not configured (configured: {})",
                self.ids().join(", ")
            ))
        })?;
        let bytes = URL_SAFE_NO_PAD
            .decode(data)
            .map_err(|_| fail("malformed encrypted value (base64)".into()))?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return Err(fail("malformed encrypted value (too short)".into()));
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        let aad = aad(context, field);
        let plain = key
            .cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: &aad,
                },
            )
            .map_err(|_| {
                fail(format!(
                    "authentication failed with key {id}: the key is not the one it was \
                     encrypted with, or the value was altered or moved"
                ))
            })?;
        String::from_utf8(plain).map_err(|_| fail("decrypted value is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn ring(seed: u8) -> Keyring {
        Keyring::new(&[[seed; KEY_LEN]]).unwrap()
    }

    #[test]
    fn round_trip_with_fresh_nonces() {
        let ring = ring(1);
        let a = ring.encrypt("wh_1", "auth.token", "s3cret");
        let b = ring.encrypt("wh_1", "auth.token", "s3cret");
        assert_ne!(a, b, "a nonce per value");
        assert!(a.starts_with(&format!("{PREFIX}{}:", ring.primary_id())));
        assert!(!a.contains("s3cret"));
        assert_eq!(ring.decrypt("wh_1", "auth.token", &a).unwrap(), "s3cret");
        assert_eq!(Keyring::key_of(&a), Some(ring.primary_id()));
    }

    #[test]
    fn bound_to_webhook_and_field() {
        let ring = ring(1);
        let value = ring.encrypt("wh_1", "auth.token", "s3cret");
        for (context, field) in [("wh_2", "auth.token"), ("wh_1", "auth.password")] {
            let err = ring.decrypt(context, field, &value).unwrap_err();
            assert!(err.to_string().contains("authentication failed"), "{err}");
        }
    }

    #[test]
    fn wrong_or_missing_key_is_a_clear_error() {
        let value = ring(1).encrypt("wh_1", "auth.token", "s3cret");
        let err = ring(2).decrypt("wh_1", "auth.token", &value).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("auth.token cannot be decrypted"), "{text}");
        assert!(text.contains(&key_id(&[1; KEY_LEN])), "{text}");
        assert!(text.contains("not configured"), "{text}");
        // Same id, damaged data.
        let mut damaged = value.clone();
        let last = damaged.pop().unwrap();
        damaged.push(if last == 'A' { 'B' } else { 'A' });
        assert!(ring(1).decrypt("wh_1", "auth.token", &damaged).is_err());
        for bad in ["enc:v1:", "enc:v1:abc", "enc:v1:x:!!!", "plain"] {
            assert!(ring(1).decrypt("wh_1", "f", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rotation_first_encrypts_all_decrypt() {
        let old = ring(1);
        let both = Keyring::new(&[[2; KEY_LEN], [1; KEY_LEN], [2; KEY_LEN]]).unwrap();
        assert_eq!(both.ids().len(), 2, "duplicates kept once");
        let under_old = old.encrypt("wh_1", "f", "v");
        assert_eq!(both.decrypt("wh_1", "f", &under_old).unwrap(), "v");
        let under_new = both.encrypt("wh_1", "f", "v");
        assert_eq!(Keyring::key_of(&under_new), Some(both.primary_id()));
        assert_ne!(both.primary_id(), old.primary_id());
        assert!(old.decrypt("wh_1", "f", &under_new).is_err());
        assert!(Keyring::new(&[]).is_err());
        assert!(!format!("{both:?}").contains("cipher"));
    }

    proptest! {
        #[test]
        fn any_text_round_trips(text in ".*", field in "[a-z.]{1,20}") {
            let ring = ring(7);
            let value = ring.encrypt("wh_p", &field, &text);
            prop_assert!(Keyring::is_encrypted(&value));
            prop_assert_eq!(ring.decrypt("wh_p", &field, &value).unwrap(), text);
        }
    }
}
