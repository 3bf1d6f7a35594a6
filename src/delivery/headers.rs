//! Headers the gateway sets itself, which neither a webhook's static headers nor a plugin's
//! output may set.
//!
//! One list for both, so the two checks cannot drift apart. What it protects:
//! - the transport: `host` would send the request to another virtual host than the URL's,
//!   `content-length` or `transfer-encoding` would cut or extend the body the receiver reads (and
//!   so the attempt's log would show a request other than the one received), the hop-by-hop
//!   headers (`connection`, `upgrade`, `te`, `trailer`, `keep-alive`, `proxy-*`, RFC 9110 §7.6.1)
//!   belong to the connection, not the message, and `expect` changes how the client sends;
//! - the signature: every `webhook-*` header (Standard Webhooks reserves the prefix), so a receiver
//!   never sees a forged `webhook-signature` beside the real one;
//! - the webhook's credentials: the header its auth sets (`authorization`, or an API key's header)
//!   and the event header it is configured with.

use http::HeaderName;

use crate::model::AuthConfig;

/// Header names the gateway or the HTTP client sets.
const RESERVED: &[&str] = &[
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "trailer",
    "keep-alive",
    "expect",
];

/// Prefixes of reserved header names: hop-by-hop proxy headers and the Standard Webhooks ones.
const RESERVED_PREFIXES: &[&str] = &["proxy-", "webhook-"];

/// Why a header may not be set by a webhook's static headers or a plugin, or `None` when it may.
/// `name` is a parsed header name (so already lowercase); `auth` and `event_header` are the
/// webhook's.
pub fn reserved(
    name: &HeaderName,
    auth: &AuthConfig,
    event_header: Option<&str>,
) -> Option<&'static str> {
    let name = name.as_str();
    if RESERVED.contains(&name) {
        return Some("is set by the gateway");
    }
    if RESERVED_PREFIXES.iter().any(|p| name.starts_with(p)) {
        return Some("is set by the gateway");
    }
    if auth_header(auth).is_some_and(|h| h.eq_ignore_ascii_case(name)) {
        return Some("is set by the webhook's auth");
    }
    if event_header.is_some_and(|h| h.eq_ignore_ascii_case(name)) {
        return Some("is the webhook's event_header");
    }
    None
}

/// The header the webhook's auth sets, if any.
fn auth_header(auth: &AuthConfig) -> Option<&str> {
    match auth {
        AuthConfig::None => None,
        AuthConfig::ApiKey { header, .. } => Some(header),
        AuthConfig::Bearer { .. }
        | AuthConfig::Basic { .. }
        | AuthConfig::Oauth2Password { .. }
        | AuthConfig::Oauth2ClientCredentials { .. } => Some("authorization"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &str, auth: &AuthConfig) -> Option<&'static str> {
        reserved(
            &HeaderName::from_bytes(name.as_bytes()).unwrap(),
            auth,
            Some("X-Event"),
        )
    }

    #[test]
    fn transport_and_signature_headers_are_reserved() {
        for name in [
            "Host",
            "content-length",
            "Transfer-Encoding",
            "connection",
            "upgrade",
            "te",
            "trailer",
            "keep-alive",
            "expect",
            "proxy-authorization",
            "Proxy-Connection",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "Webhook-Anything",
        ] {
            assert_eq!(
                check(name, &AuthConfig::None),
                Some("is set by the gateway"),
                "{name}"
            );
        }
        for name in [
            "x-trace",
            "content-type",
            "accept",
            "authorization",
            "x-api-key",
            "hostname",
            "tex",
        ] {
            assert_eq!(check(name, &AuthConfig::None), None, "{name}");
        }
    }

    #[test]
    fn the_webhooks_auth_and_event_headers_are_reserved() {
        let bearer = AuthConfig::Bearer { token: "t".into() };
        assert_eq!(
            check("Authorization", &bearer),
            Some("is set by the webhook's auth")
        );
        let key = AuthConfig::ApiKey {
            header: "X-Api-Key".into(),
            value: "v".into(),
        };
        assert_eq!(
            check("x-api-key", &key),
            Some("is set by the webhook's auth")
        );
        assert_eq!(check("authorization", &key), None);
        assert_eq!(
            check("x-event", &AuthConfig::None),
            Some("is the webhook's event_header")
        );
    }
}
