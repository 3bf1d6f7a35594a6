//! Console sessions: the admin token exchanged for a session cookie, and the CSRF token bound
//! to each session.
//!
//! Invariants:
//! - A session exists only in this process's memory ([`Sessions`]), at most
//!   `console.max_sessions` of them; a restart signs everyone out. When the table is full the
//!   least recently used session is dropped to make room (never a refusal, so admins cannot be
//!   locked out by stale sessions).
//! - The cookie holds 32 random bytes; the table is keyed by their SHA-256, so a lookup's timing
//!   says nothing about the ids held, and a memory dump shows no usable cookie.
//! - A session ends `session_idle_secs` after its last use, or `session_max_secs` after sign-in,
//!   whichever comes first; the cookie's `Max-Age` is the latter.
//! - Every change (any method but GET/HEAD/OPTIONS) made with the cookie must carry the
//!   session's CSRF token in `X-CSRF-Token` (compared in constant time) and an `Origin` that is
//!   the console's own (checked by [`super::origin_ok`]).

use std::collections::HashMap;
use std::sync::Mutex;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::ConsoleConfig;
use crate::model::Millis;

/// The cookie's name over plain HTTP.
pub const COOKIE: &str = "hookyard_console";
/// The cookie's name under TLS: the `__Host-` prefix makes the browser refuse it unless it is
/// `Secure`, for `Path=/` and without `Domain`, so no sibling host can plant one.
pub const COOKIE_TLS: &str = "__Host-hookyard_console";
/// The header carrying the CSRF token.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// One signed-in console.
#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    created_at: Millis,
    last_used: Millis,
}

/// What a caller learns about a live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionView {
    /// The CSRF token to send with every change.
    pub csrf_token: String,
    /// When the session ends at the latest (ms since the epoch).
    pub expires_at: Millis,
}

/// Why a request with a session cookie was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No such session, or it expired: sign in again (401).
    NoSession,
    /// The CSRF token is missing or wrong (403).
    Csrf,
}

/// The session table.
pub struct Sessions {
    idle_ms: i64,
    max_ms: i64,
    cap: usize,
    table: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(cookie_value: &str) -> [u8; 32] {
    Sha256::digest(cookie_value.as_bytes()).into()
}

fn random_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

impl Sessions {
    /// An empty table with the limits of `config`.
    pub fn new(config: &ConsoleConfig) -> Sessions {
        Sessions {
            idle_ms: (config.session_idle_secs as i64).saturating_mul(1000),
            max_ms: (config.session_max_secs as i64).saturating_mul(1000),
            cap: config.max_sessions.max(1),
            table: Mutex::new(HashMap::new()),
        }
    }

    /// How long the cookie lives, in seconds (its `Max-Age`).
    pub fn max_age_secs(&self) -> i64 {
        self.max_ms / 1000
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        // A panic while holding the lock cannot leave the map half-changed (every change is
        // one insert or remove), so a poisoned lock is still usable.
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn alive(&self, s: &Session, now: Millis) -> bool {
        now - s.last_used < self.idle_ms && now - s.created_at < self.max_ms
    }

    /// Starts a session: the cookie value and what the console needs.
    pub fn create(&self, now: Millis) -> (String, SessionView) {
        let id = random_token();
        let session = Session {
            csrf: random_token(),
            created_at: now,
            last_used: now,
        };
        let view = SessionView {
            csrf_token: session.csrf.clone(),
            expires_at: now + self.max_ms,
        };
        let mut table = self.lock();
        if table.len() >= self.cap {
            table.retain(|_, s| self.alive(s, now));
        }
        while table.len() >= self.cap {
            let oldest = table
                .iter()
                .min_by_key(|(_, s)| s.last_used)
                .map(|(k, _)| *k);
            match oldest {
                Some(k) => table.remove(&k),
                None => break,
            };
        }
        table.insert(key(&id), session);
        (id, view)
    }

    /// The live session of `cookie_value`, marked as used now.
    pub fn touch(&self, cookie_value: &str, now: Millis) -> Option<SessionView> {
        let k = key(cookie_value);
        let mut table = self.lock();
        let session = table.get_mut(&k)?;
        if !self.alive(session, now) {
            table.remove(&k);
            return None;
        }
        session.last_used = now;
        Some(SessionView {
            csrf_token: session.csrf.clone(),
            expires_at: session.created_at + self.max_ms,
        })
    }

    /// Checks a request made with `cookie_value`: the session must be live and, for a change,
    /// `csrf` must be its token.
    pub fn authorize(
        &self,
        cookie_value: &str,
        change: bool,
        csrf: Option<&str>,
        now: Millis,
    ) -> Result<(), Refusal> {
        let view = self.touch(cookie_value, now).ok_or(Refusal::NoSession)?;
        if change && !csrf_matches(&view.csrf_token, csrf) {
            return Err(Refusal::Csrf);
        }
        Ok(())
    }

    /// Ends a session (sign-out).
    pub fn remove(&self, cookie_value: &str) -> bool {
        self.lock().remove(&key(cookie_value)).is_some()
    }

    /// Sessions held, expired ones included until they are next looked at.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no session is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Constant-time comparison of the session's CSRF token with the one given.
pub fn csrf_matches(expected: &str, given: Option<&str>) -> bool {
    match given {
        // ct_eq of slices of different lengths answers at once, which only reveals the length
        // (always 43 characters here).
        Some(given) => expected.as_bytes().ct_eq(given.as_bytes()).into(),
        None => false,
    }
}

/// The `Set-Cookie` value that stores a session.
pub fn set_cookie(value: &str, max_age_secs: i64, tls: bool) -> String {
    let (name, secure) = if tls {
        (COOKIE_TLS, "; Secure")
    } else {
        (COOKIE, "")
    };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_secs}{secure}")
}

/// The `Set-Cookie` value that deletes the session cookie.
pub fn clear_cookie(tls: bool) -> String {
    set_cookie("", 0, tls)
}

/// The session cookie's value in the request's `Cookie` headers, if any.
pub fn cookie_value<'a>(
    headers: impl IntoIterator<Item = &'a http::HeaderValue>,
    tls: bool,
) -> Option<&'a str> {
    let name = if tls { COOKIE_TLS } else { COOKIE };
    headers
        .into_iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(idle: u64, max: u64, cap: usize) -> ConsoleConfig {
        ConsoleConfig {
            enabled: true,
            session_idle_secs: idle,
            session_max_secs: max,
            max_sessions: cap,
            allowed_origins: vec![],
        }
    }

    #[test]
    fn a_session_lives_until_idle_or_max() {
        let s = Sessions::new(&config(10, 30, 10));
        let (id, view) = s.create(0);
        assert_eq!(view.expires_at, 30_000);
        assert_eq!(s.touch(&id, 9_999), Some(view.clone()));
        // Used at 9.999 s: idle until 19.999 s.
        assert!(s.touch(&id, 19_000).is_some());
        assert!(s.touch(&id, 28_000).is_some());
        // Still used recently, but past the absolute lifetime.
        assert_eq!(s.touch(&id, 30_000), None);
        assert!(s.is_empty(), "an expired session is dropped when seen");

        let (id, _) = s.create(100_000);
        assert_eq!(s.touch(&id, 110_000), None, "idle for 10 s");
    }

    #[test]
    fn unknown_and_removed_sessions_are_refused() {
        let s = Sessions::new(&config(10, 30, 10));
        let (id, view) = s.create(0);
        assert_eq!(s.touch("nope", 1), None);
        assert_eq!(s.authorize("nope", false, None, 1), Err(Refusal::NoSession));
        assert!(s.remove(&id));
        assert!(!s.remove(&id));
        assert_eq!(
            s.authorize(&id, true, Some(&view.csrf_token), 1),
            Err(Refusal::NoSession)
        );
    }

    #[test]
    fn changes_need_the_sessions_csrf_token() {
        let s = Sessions::new(&config(10, 30, 10));
        let (a, view_a) = s.create(0);
        let (_b, view_b) = s.create(0);
        assert_ne!(view_a.csrf_token, view_b.csrf_token);
        assert_eq!(s.authorize(&a, false, None, 1), Ok(()), "reads need none");
        assert_eq!(s.authorize(&a, true, None, 1), Err(Refusal::Csrf));
        assert_eq!(s.authorize(&a, true, Some(""), 1), Err(Refusal::Csrf));
        assert_eq!(
            s.authorize(&a, true, Some(&view_b.csrf_token), 1),
            Err(Refusal::Csrf),
            "another session's token"
        );
        let mut wrong = view_a.csrf_token.clone();
        wrong.pop();
        wrong.push('!');
        assert_eq!(s.authorize(&a, true, Some(&wrong), 1), Err(Refusal::Csrf));
        assert_eq!(s.authorize(&a, true, Some(&view_a.csrf_token), 1), Ok(()));
    }

    #[test]
    fn the_table_is_capped_dropping_the_least_recently_used() {
        let s = Sessions::new(&config(1000, 1000, 3));
        let (a, _) = s.create(0);
        let (b, _) = s.create(1);
        let (c, _) = s.create(2);
        assert!(s.touch(&a, 3).is_some(), "a is now the most recent");
        let (d, _) = s.create(4);
        assert_eq!(s.len(), 3);
        assert!(s.touch(&b, 5).is_none(), "b was the least recently used");
        for id in [&a, &c, &d] {
            assert!(s.touch(id, 5).is_some());
        }
        // Expired sessions go first, before any live one.
        let s = Sessions::new(&config(10, 1000, 2));
        let (old, _) = s.create(0);
        let (live, _) = s.create(9_000);
        let _ = s.create(12_000);
        assert!(s.touch(&live, 12_001).is_some());
        assert!(s.touch(&old, 12_001).is_none());
    }

    #[test]
    fn tokens_are_random_and_hashed() {
        let s = Sessions::new(&config(10, 30, 10));
        let (a, va) = s.create(0);
        let (b, vb) = s.create(0);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in unpadded base64url");
        assert_ne!(va.csrf_token, vb.csrf_token);
        let raw: [u8; 32] = URL_SAFE_NO_PAD
            .decode(a.as_bytes())
            .unwrap()
            .try_into()
            .unwrap();
        assert!(
            !s.lock().contains_key(&raw),
            "the table holds no cookie value"
        );
        assert!(s.lock().contains_key(&key(&a)));
    }

    #[test]
    fn csrf_comparison() {
        assert!(csrf_matches("abc", Some("abc")));
        assert!(!csrf_matches("abc", Some("abd")));
        assert!(!csrf_matches("abc", Some("ab")));
        assert!(!csrf_matches("abc", None));
    }

    #[test]
    fn cookie_flags() {
        let plain = set_cookie("v", 3600, false);
        assert_eq!(
            plain,
            "hookyard_console=v; Path=/; HttpOnly; SameSite=Strict; Max-Age=3600"
        );
        let tls = set_cookie("v", 3600, true);
        assert!(tls.starts_with("__Host-hookyard_console=v;"), "{tls}");
        assert!(tls.contains("; Secure"), "{tls}");
        assert!(tls.contains("; HttpOnly"), "{tls}");
        assert!(tls.contains("; SameSite=Strict"), "{tls}");
        assert!(!tls.contains("Domain"), "{tls}");
        assert!(clear_cookie(true).contains("Max-Age=0"));
    }

    #[test]
    fn cookie_parsing() {
        let h = |s: &'static str| http::HeaderValue::from_static(s);
        let headers = [h("a=1; hookyard_console=xyz; b=2")];
        assert_eq!(cookie_value(&headers, false), Some("xyz"));
        assert_eq!(
            cookie_value(&headers, true),
            None,
            "TLS wants the __Host- name"
        );
        let headers = [h("x=1"), h("__Host-hookyard_console=t")];
        assert_eq!(cookie_value(&headers, true), Some("t"));
        let headers = [h("hookyard_console=")];
        assert_eq!(cookie_value(&headers, false), None);
        let headers = [h("hookyard_console_x=1")];
        assert_eq!(cookie_value(&headers, false), None);
    }
}
