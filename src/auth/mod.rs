//! Credentials for outgoing requests: the headers each [`AuthConfig`] type adds to a delivery.
//!
//! Static credentials become headers directly; OAuth2 ones go through the [`TokenCache`], so
//! concurrent deliveries share one token and one fetch. Every produced header value is marked
//! sensitive, and no error carries a secret: these errors end up in logs and in the attempt log.

pub mod oauth2;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use http::header::AUTHORIZATION;
use http::{HeaderName, HeaderValue};

use crate::model::{AuthConfig, MASK};

pub use self::oauth2::{TokenCache, TokenInfo, CONNECTION_KEY_PREFIX, DEFAULT_TOKEN_LIFETIME};

/// Why credentials could not be produced. Messages never contain secrets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token URL is malformed or refused by the SSRF policy (a configuration error).
    #[error("invalid token url {url}: {reason}")]
    TokenUrl {
        /// The URL, without credentials or query.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The token server could not be reached, or did not answer in time.
    #[error("token server {url} unreachable: {reason}")]
    Unreachable {
        /// The URL, without credentials or query.
        url: String,
        /// The transport error.
        reason: String,
    },
    /// The token server answered with an OAuth2 error (`invalid_grant`, `invalid_client`...).
    #[error("token server {url} rejected the token request (http {status}): {error}")]
    Rejected {
        /// The URL, without credentials or query.
        url: String,
        /// HTTP status of the answer.
        status: u16,
        /// The OAuth2 error code, and its description when given.
        error: String,
    },
    /// The token server answered something other than a token or an OAuth2 error.
    #[error("token server {url} answered unexpectedly (http {status}): {reason}")]
    BadResponse {
        /// The URL, without credentials or query.
        url: String,
        /// HTTP status of the answer.
        status: u16,
        /// What was wrong with the answer.
        reason: String,
    },
    /// An `api_key` header name is not a valid HTTP header name.
    #[error("invalid header name {0:?}")]
    HeaderName(String),
    /// A credential does not fit in an HTTP header value (control characters...).
    #[error("invalid value for header {0}")]
    HeaderValue(String),
    /// [`TokenCache::token`] was asked for a non-OAuth2 auth type.
    #[error("auth type {0} does not use oauth2")]
    NotOauth(&'static str),
}

impl AuthError {
    /// True when the token server rejected the request (bad credentials, unknown client...),
    /// as opposed to being unreachable or misbehaving. Either way a delivery may retry later.
    pub fn is_rejected(&self) -> bool {
        matches!(self, AuthError::Rejected { .. })
    }

    /// True when trying again later cannot help, so a delivery waiting on these credentials is
    /// dead at once, as one to a refused webhook URL is: a token URL that is malformed or
    /// refused by the SSRF policy, credentials that do not fit a header, or a token endpoint
    /// answering a 3xx or 4xx other than the `retryable` ones (400 `invalid_client`, 401...).
    /// Unreachable servers, timeouts and 5xx stay retryable.
    pub fn is_permanent(&self, retryable: &[u16]) -> bool {
        match self {
            AuthError::TokenUrl { .. }
            | AuthError::HeaderName(_)
            | AuthError::HeaderValue(_)
            | AuthError::NotOauth(_) => true,
            AuthError::Rejected { status, .. } | AuthError::BadResponse { status, .. } => {
                (300..500).contains(status) && !retryable.contains(status)
            }
            AuthError::Unreachable { .. } => false,
        }
    }
}

/// The credentials of one request.
#[derive(Clone, Default)]
pub struct Credentials {
    /// Headers to add, values marked sensitive.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// The OAuth2 access token used, to pass to [`TokenCache::invalidate`] on a 401.
    pub oauth_token: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Credentials")
            .field("headers", &names)
            .field("oauth_token", &self.oauth_token.as_ref().map(|_| MASK))
            .finish()
    }
}

/// Whether `auth` needs the [`TokenCache`] (and a 401 should invalidate its token).
pub fn uses_oauth(auth: &AuthConfig) -> bool {
    matches!(
        auth,
        AuthConfig::Oauth2Password { .. } | AuthConfig::Oauth2ClientCredentials { .. }
    )
}

/// The credentials `auth` adds to a request of webhook `webhook_id`.
pub async fn credentials(
    cache: &TokenCache,
    webhook_id: &str,
    auth: &AuthConfig,
) -> Result<Credentials, AuthError> {
    let (name, value, oauth_token) = match auth {
        AuthConfig::None => return Ok(Credentials::default()),
        AuthConfig::ApiKey { header, value } => {
            let name = HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| AuthError::HeaderName(header.clone()))?;
            (name, value.clone(), None)
        }
        AuthConfig::Bearer { token } => (AUTHORIZATION, format!("Bearer {token}"), None),
        AuthConfig::Basic { username, password } => {
            let encoded = STANDARD.encode(format!("{username}:{password}"));
            (AUTHORIZATION, format!("Basic {encoded}"), None)
        }
        AuthConfig::Oauth2Password { .. } | AuthConfig::Oauth2ClientCredentials { .. } => {
            let token = cache.token(webhook_id, auth).await?;
            (AUTHORIZATION, format!("Bearer {token}"), Some(token))
        }
    };
    let mut value =
        HeaderValue::from_str(&value).map_err(|_| AuthError::HeaderValue(name.to_string()))?;
    value.set_sensitive(true);
    Ok(Credentials {
        headers: vec![(name, value)],
        oauth_token,
    })
}

/// The headers `auth` adds to a request of webhook `webhook_id` (see [`credentials`]).
pub async fn headers(
    cache: &TokenCache,
    webhook_id: &str,
    auth: &AuthConfig,
) -> Result<Vec<(HeaderName, HeaderValue)>, AuthError> {
    Ok(credentials(cache, webhook_id, auth).await?.headers)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;
    use crate::delivery::client::SsrfPolicy;
    use crate::metrics::Metrics;

    fn cache() -> TokenCache {
        let http = crate::delivery::client::build(Arc::new(SsrfPolicy::default()), "test").unwrap();
        TokenCache::new(http, Arc::new(Metrics::new()), Duration::from_secs(60))
    }

    async fn one_header(auth: AuthConfig) -> (String, HeaderValue) {
        let mut headers = headers(&cache(), "wh_1", &auth).await.unwrap();
        assert_eq!(headers.len(), 1);
        let (name, value) = headers.remove(0);
        assert!(value.is_sensitive());
        (name.to_string(), value)
    }

    #[tokio::test]
    async fn static_credentials() {
        assert!(headers(&cache(), "wh_1", &AuthConfig::None)
            .await
            .unwrap()
            .is_empty());
        let (name, value) = one_header(AuthConfig::ApiKey {
            header: "X-API-Key".into(),
            value: "k3y".into(),
        })
        .await;
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("x-api-key", "k3y")
        );
        let (name, value) = one_header(AuthConfig::Bearer {
            token: "t0k".into(),
        })
        .await;
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Bearer t0k")
        );
        let (name, value) = one_header(AuthConfig::Basic {
            username: "Aladdin".into(),
            password: "open sesame".into(),
        })
        .await;
        assert_eq!(
            (name.as_str(), value.to_str().unwrap()),
            ("authorization", "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==")
        );
    }

    #[tokio::test]
    async fn invalid_headers_are_errors_without_secrets() {
        let err = headers(
            &cache(),
            "wh_1",
            &AuthConfig::ApiKey {
                header: "bad header".into(),
                value: "v".into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err, AuthError::HeaderName("bad header".into()));
        let err = headers(
            &cache(),
            "wh_1",
            &AuthConfig::Bearer {
                token: "s3cret\nx".into(),
            },
        )
        .await
        .unwrap_err();
        assert_eq!(err, AuthError::HeaderValue("authorization".into()));
        assert!(!err.to_string().contains("s3cret"));
    }

    #[test]
    fn permanent_token_errors() {
        let retryable = [408, 425, 429];
        let rejected = |status| AuthError::Rejected {
            url: "u".into(),
            status,
            error: "invalid_client".into(),
        };
        let bad = |status| AuthError::BadResponse {
            url: "u".into(),
            status,
            reason: "r".into(),
        };
        for permanent in [rejected(400), rejected(401), bad(403), bad(302)] {
            assert!(permanent.is_permanent(&retryable), "{permanent}");
        }
        for transient in [rejected(429), bad(500), bad(503), bad(200), rejected(408)] {
            assert!(!transient.is_permanent(&retryable), "{transient}");
        }
        let refused = AuthError::TokenUrl {
            url: "u".into(),
            reason: "SSRF".into(),
        };
        assert!(refused.is_permanent(&retryable));
        let unreachable = AuthError::Unreachable {
            url: "u".into(),
            reason: "timeout".into(),
        };
        assert!(!unreachable.is_permanent(&retryable));
    }

    #[test]
    fn oauth_types() {
        assert!(!uses_oauth(&AuthConfig::None));
        assert!(!uses_oauth(&AuthConfig::Bearer { token: "t".into() }));
        assert!(uses_oauth(&AuthConfig::Oauth2ClientCredentials {
            token_url: "https://a/t".into(),
            client_id: "c".into(),
            client_secret: "s".into(),
            scope: None,
        }));
        let credentials = Credentials {
            headers: vec![],
            oauth_token: Some("tok-secret".into()),
        };
        assert!(!format!("{credentials:?}").contains("tok-secret"));
    }
}
