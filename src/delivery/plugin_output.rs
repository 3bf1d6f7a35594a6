//! The checks a plugin's outgoing request passes before the gateway sends it.
//!
//! A plugin is code an admin uploads, fed with event data from the internal systems; the gateway
//! trusts neither to choose where a request goes or how it is framed. Its output may add headers,
//! choose the method, a path under the webhook's URL and query parameters, and nothing more:
//! - headers the gateway sets (transport, signature, the webhook's auth: [`headers::reserved`])
//!   are refused, with the same list as a webhook's static headers;
//! - the path is normalised the way receivers do (percent-encoded dots decoded, `.` and `..`
//!   resolved, `//` collapsed, `\` read as `/`) and must stay under the webhook URL's path, so
//!   `http://host/p-evil` with `/../../admin` cannot become `http://host/admin`;
//! - the query must be RFC 3986 query characters with well-formed percent escapes, is appended to
//!   the webhook URL's own query, and may not repeat one of its parameters (those are the admin's).
//!
//! A refusal is a per-call error: the delivery fails as the webhook's `plugin.on_error` says, and
//! the Webhook Log names the header, path or query at fault. [`target_url`] builds the URL the
//! worker sends to, and checks confinement once more on the joined URL.

use http::{HeaderName, HeaderValue, Method};

use super::headers;
use super::shape::OutgoingRequest;
use crate::model::Webhook;

/// Why a plugin's request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OutputError {
    /// A header the gateway sets itself.
    #[error("header {name:?} {reason}: a plugin may not set it")]
    ReservedHeader {
        /// The header, lowercase.
        name: String,
        /// Who sets it.
        reason: &'static str,
    },
    /// Not an HTTP header name.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// Not an HTTP header value.
    #[error("invalid value of header {0:?}")]
    HeaderValue(String),
    /// The body's type goes in the request's `content-type` field, not in its headers.
    #[error("header \"content-type\": set the request's content-type field instead")]
    ContentTypeHeader,
    /// The `content-type` field is not a header value.
    #[error("invalid content-type {0:?}")]
    ContentType(String),
    /// Not a method the gateway sends.
    #[error("invalid method {0:?}")]
    Method(String),
    /// The path is malformed or leaves the webhook's path.
    #[error("path {path:?} {reason}")]
    Path {
        /// The plugin's path.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The query is malformed or overrides the webhook URL's own parameters.
    #[error("query {query:?} {reason}")]
    Query {
        /// The plugin's query.
        query: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Checks a plugin's request for `hook`; returns it with its path normalised.
pub fn check(hook: &Webhook, mut request: OutgoingRequest) -> Result<OutgoingRequest, OutputError> {
    if let Some(method) = &request.method {
        let parsed = Method::from_bytes(method.as_bytes())
            .map_err(|_| OutputError::Method(method.clone()))?;
        // CONNECT asks for a tunnel, not a delivery.
        if parsed == Method::CONNECT {
            return Err(OutputError::Method(method.clone()));
        }
    }
    for (name, value) in &request.headers {
        let parsed = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| OutputError::HeaderName(name.clone()))?;
        if let Some(reason) =
            headers::reserved(&parsed, &hook.spec.auth, hook.spec.event_header.as_deref())
        {
            return Err(OutputError::ReservedHeader {
                name: parsed.as_str().to_owned(),
                reason,
            });
        }
        if parsed == http::header::CONTENT_TYPE {
            return Err(OutputError::ContentTypeHeader);
        }
        HeaderValue::from_str(value).map_err(|_| OutputError::HeaderValue(name.clone()))?;
    }
    if let Some(content_type) = &request.content_type {
        HeaderValue::from_str(content_type)
            .map_err(|_| OutputError::ContentType(content_type.clone()))?;
    }
    if let Some(path) = request.path.take() {
        request.path = Some(normalise_path(&path)?);
    }
    if let Some(query) = request.query.take() {
        if !query.is_empty() {
            check_query(&query, &hook.spec.url)?;
            request.query = Some(query);
        }
    }
    Ok(request)
}

/// A plugin path as receivers read it, relative to the webhook URL's path: always starting with
/// `/`, without empty, `.` or `..` segments (a `..` may undo an earlier segment of the plugin's
/// own, never climb above it). Percent escapes are kept as given, except that a segment decoding
/// to `/` or `\` is refused: servers that decode before routing would split it.
pub fn normalise_path(path: &str) -> Result<String, OutputError> {
    let refuse = |reason| OutputError::Path {
        path: path.to_owned(),
        reason,
    };
    if path.bytes().any(|b| b.is_ascii_control()) {
        return Err(refuse("has a control character"));
    }
    if path.contains(['?', '#']) {
        return Err(refuse(
            "has '?' or '#' (a query goes in the request's query field)",
        ));
    }
    // WHATWG URL parsing (and many servers) read '\' as '/' in http URLs.
    let path = path.replace('\\', "/");
    let mut segments: Vec<&str> = Vec::new();
    for segment in path.split('/') {
        if segment.is_empty() {
            continue;
        }
        let decoded =
            percent_decode(segment).ok_or_else(|| refuse("has a malformed percent escape"))?;
        if decoded.contains(&b'/') || decoded.contains(&b'\\') {
            return Err(refuse("has an encoded '/' or '\\'"));
        }
        // Some servers (Tomcat, Jetty) drop `;parameters` before resolving dot segments, so
        // `..;x` climbs like `..` does there.
        let bare = decoded.split(|&b| b == b';').next().unwrap_or_default();
        match bare {
            b"." => {}
            b".." => {
                if segments.pop().is_none() {
                    return Err(refuse("leaves the webhook's path"));
                }
            }
            _ => segments.push(segment),
        }
    }
    let mut normalised = String::with_capacity(path.len() + 1);
    for segment in &segments {
        normalised.push('/');
        normalised.push_str(segment);
    }
    // A trailing slash is part of the resource's name for many servers: keep it.
    if normalised.is_empty() || (path.ends_with('/') && !segments.is_empty()) {
        normalised.push('/');
    }
    Ok(normalised)
}

/// The bytes `segment` percent-decodes to, or `None` if an escape is malformed.
fn percent_decode(segment: &str) -> Option<Vec<u8>> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// Checks a plugin's query: RFC 3986 query characters, well-formed escapes, and no parameter
/// the webhook's URL sets itself.
fn check_query(query: &str, webhook_url: &str) -> Result<(), OutputError> {
    let refuse = |reason: String| OutputError::Query {
        query: query.to_owned(),
        reason,
    };
    if query.starts_with('?') {
        return Err(refuse("starts with '?' (give it without)".into()));
    }
    // query = *( pchar / "/" / "?" ), pchar = unreserved / pct-encoded / sub-delims / ":" / "@"
    let allowed = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/?%".contains(&b);
    if let Some(bad) = query.bytes().find(|&b| !allowed(b)) {
        return Err(refuse(format!(
            "has {:?}, which must be percent-encoded",
            char::from(bad)
        )));
    }
    if percent_decode(query).is_none() {
        return Err(refuse("has a malformed percent escape".into()));
    }
    let own = reqwest::Url::parse(webhook_url)
        .ok()
        .and_then(|u| u.query().map(str::to_owned))
        .unwrap_or_default();
    let own_keys: Vec<String> = form_urlencoded::parse(own.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    if let Some((key, _)) =
        form_urlencoded::parse(query.as_bytes()).find(|(k, _)| own_keys.iter().any(|o| o == k))
    {
        return Err(refuse(format!(
            "sets {key:?}, a parameter of the webhook's URL"
        )));
    }
    Ok(())
}

/// The URL a request goes to: the webhook URL with the request's (normalised) path appended to
/// its path and its query appended to its query. Refuses a result outside the webhook's path.
pub fn target_url(base: &str, request: &OutgoingRequest) -> Result<reqwest::Url, String> {
    let mut url = reqwest::Url::parse(base).map_err(|e| format!("invalid url: {e}"))?;
    if let Some(path) = &request.path {
        let path = normalise_path(path).map_err(|e| e.to_string())?;
        let root = url.path().trim_end_matches('/').to_owned();
        url.set_path(&format!("{root}{path}"));
        // Normalisation makes this hold; checked again because a URL library that resolved
        // something differently would otherwise silently send elsewhere.
        let under = url.path().strip_prefix(root.as_str());
        if !under.is_some_and(|rest| rest.starts_with('/')) {
            return Err(format!("path {path:?} leaves the webhook's path"));
        }
    }
    if let Some(query) = request.query.as_deref().filter(|q| !q.is_empty()) {
        let joined = match url.query().filter(|q| !q.is_empty()) {
            Some(own) => format!("{own}&{query}"),
            None => query.to_owned(),
        };
        url.set_query(Some(&joined));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuthConfig, WebhookSpec};

    fn hook(url: &str, auth: AuthConfig) -> Webhook {
        let spec: WebhookSpec =
            serde_json::from_value(serde_json::json!({"name": "w", "events": ["*"], "url": url}))
                .unwrap();
        Webhook {
            id: "wh_1".into(),
            spec: WebhookSpec { auth, ..spec },
            created_at: 0,
            updated_at: 0,
        }
    }

    fn with_headers(headers: &[(&str, &str)]) -> OutgoingRequest {
        OutgoingRequest {
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            ..OutgoingRequest::json(b"{}".to_vec())
        }
    }

    #[test]
    fn reserved_headers_are_refused_by_name() {
        let plain = hook("http://h/p", AuthConfig::None);
        for (name, shown) in [
            ("host", "host"),
            ("Content-Length", "content-length"),
            ("transfer-encoding", "transfer-encoding"),
            ("webhook-signature", "webhook-signature"),
            ("Proxy-Authorization", "proxy-authorization"),
        ] {
            let err = check(&plain, with_headers(&[(name, "x")])).unwrap_err();
            assert!(
                matches!(&err, OutputError::ReservedHeader { name, .. } if name == shown),
                "{err}"
            );
            assert!(err.to_string().contains(shown), "{err}");
        }
        let bearer = hook("http://h/p", AuthConfig::Bearer { token: "t".into() });
        let err = check(&bearer, with_headers(&[("authorization", "Bearer forged")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "header \"authorization\" is set by the webhook's auth: a plugin may not set it"
        );
        // Without auth, a plugin may carry its own authorization.
        check(
            &plain,
            with_headers(&[("authorization", "Token x"), ("x-trace", "1")]),
        )
        .unwrap();
        assert_eq!(
            check(&plain, with_headers(&[("content-type", "text/plain")])).unwrap_err(),
            OutputError::ContentTypeHeader
        );
        assert!(matches!(
            check(&plain, with_headers(&[("bad name", "x")])),
            Err(OutputError::HeaderName(_))
        ));
        assert!(matches!(
            check(&plain, with_headers(&[("x-a", "line\r\nbreak")])),
            Err(OutputError::HeaderValue(_))
        ));
    }

    #[test]
    fn methods_and_content_types_are_checked() {
        let plain = hook("http://h/p", AuthConfig::None);
        let with = |method: &str, content_type: &str| OutgoingRequest {
            method: Some(method.into()),
            content_type: Some(content_type.into()),
            ..OutgoingRequest::json(Vec::new())
        };
        check(&plain, with("PUT", "text/plain")).unwrap();
        assert!(matches!(
            check(&plain, with("CONNECT", "a/b")),
            Err(OutputError::Method(_))
        ));
        assert!(matches!(
            check(&plain, with("GE T", "a/b")),
            Err(OutputError::Method(_))
        ));
        assert!(matches!(
            check(&plain, with("POST", "a/b\nx: y")),
            Err(OutputError::ContentType(_))
        ));
    }

    #[test]
    fn paths_are_normalised_under_the_webhook_path() {
        for (given, normalised) in [
            ("/123", "/123"),
            ("123", "/123"),
            ("/a/./b//c", "/a/b/c"),
            ("/a/b/../c", "/a/c"),
            ("a\\b", "/a/b"),
            ("/a/", "/a/"),
            ("/", "/"),
            ("", "/"),
            ("/a/%2E%2E/b", "/b"),
            ("/a/%2e/b", "/a/b"),
            ("/users/j%C3%BCrgen", "/users/j%C3%BCrgen"),
            ("/%252e%252e/x", "/%252e%252e/x"),
        ] {
            assert_eq!(normalise_path(given).unwrap(), normalised, "{given}");
        }
        for (given, reason) in [
            ("/../../../admin/v1/webhooks", "leaves the webhook's path"),
            ("..", "leaves the webhook's path"),
            ("/a/../../b", "leaves the webhook's path"),
            ("/%2e%2e/admin", "leaves the webhook's path"),
            ("/.%2E/admin", "leaves the webhook's path"),
            ("\\..\\admin", "leaves the webhook's path"),
            ("//..//admin", "leaves the webhook's path"),
            ("/..;/admin", "leaves the webhook's path"),
            ("/..;x/admin", "leaves the webhook's path"),
            ("/a/%2f..%2fadmin", "has an encoded '/' or '\\'"),
            ("/a/..%5cadmin", "has an encoded '/' or '\\'"),
            ("/a%zz", "has a malformed percent escape"),
            ("/a%2", "has a malformed percent escape"),
            (
                "/a?x=1",
                "has '?' or '#' (a query goes in the request's query field)",
            ),
            (
                "/a#f",
                "has '?' or '#' (a query goes in the request's query field)",
            ),
            ("/a\r\nHost: x", "has a control character"),
        ] {
            match normalise_path(given) {
                Err(OutputError::Path { reason: r, .. }) => assert_eq!(r, reason, "{given}"),
                other => panic!("{given}: {other:?}"),
            }
        }
    }

    #[test]
    fn the_target_url_stays_under_the_webhook_url() {
        let url = |base: &str, path: Option<&str>, query: Option<&str>| {
            let request = OutgoingRequest {
                path: path.map(str::to_owned),
                query: query.map(str::to_owned),
                ..OutgoingRequest::json(Vec::new())
            };
            target_url(base, &request).map(|u| u.to_string())
        };
        assert_eq!(
            url("http://h/p-evil", Some("/x/y"), None).unwrap(),
            "http://h/p-evil/x/y"
        );
        assert_eq!(url("http://h/p/", Some("x"), None).unwrap(), "http://h/p/x");
        assert_eq!(url("http://h", Some("/x"), None).unwrap(), "http://h/x");
        assert!(url("http://h/p-evil", Some("/../../../admin/v1/webhooks"), None).is_err());
        assert!(url("http://h/p-evil", Some("/%2e%2e/admin"), None).is_err());
        assert_eq!(
            url("http://h/p?a=1", None, Some("b=2")).unwrap(),
            "http://h/p?a=1&b=2"
        );
        assert_eq!(
            url("http://h/p", None, Some("b=2")).unwrap(),
            "http://h/p?b=2"
        );
        assert_eq!(
            url("http://h/p?a=1", None, Some("")).unwrap(),
            "http://h/p?a=1"
        );
    }

    #[test]
    fn queries_must_be_well_formed_and_add_only() {
        let plain = hook("http://h/p?token=abc&x=1", AuthConfig::None);
        let with = |query: &str| OutgoingRequest {
            query: Some(query.into()),
            ..OutgoingRequest::json(Vec::new())
        };
        check(&plain, with("a=1&b=%20c&d=/x:y@z")).unwrap();
        assert_eq!(check(&plain, with("")).unwrap().query, None);
        for (query, reason) in [
            ("a=%zz", "has a malformed percent escape"),
            ("a=%4", "has a malformed percent escape"),
            ("a=b c", "has ' ', which must be percent-encoded"),
            ("a=b#frag", "has '#', which must be percent-encoded"),
            ("a=\u{e9}", "has '\u{c3}', which must be percent-encoded"),
            ("?a=1", "starts with '?' (give it without)"),
            (
                "token=mine",
                "sets \"token\", a parameter of the webhook's URL",
            ),
            (
                "a=1&%74oken=mine",
                "sets \"token\", a parameter of the webhook's URL",
            ),
        ] {
            match check(&plain, with(query)) {
                Err(OutputError::Query { reason: r, .. }) => assert_eq!(r, reason, "{query}"),
                other => panic!("{query}: {other:?}"),
            }
        }
    }
}
