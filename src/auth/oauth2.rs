//! OAuth2 access tokens for outgoing requests, cached per webhook, or per shared connection for
//! the webhooks that use one (keys `connection:<name>`, see [`crate::connections`]).
//!
//! A burst of deliveries to one webhook must not become a burst of token requests: the token
//! server is often rate-limited, and some revoke older tokens when issuing new ones. So tokens are
//! reused until shortly before they expire, a fetch is single-flight (callers arriving while one
//! runs wait for it and share its outcome, failures included), and [`TokenCache::invalidate`]
//! drops a token only if it is still the one a 401 was received with, so many concurrent 401s
//! cause one refresh. A cached token remembers a fingerprint of the credentials it was fetched
//! with: editing the webhook's credentials invalidates it.
//!
//! Token requests go through the caller's SSRF-protected, no-redirect client; token URLs that
//! are IP literals are checked here against the same kind of policy.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ::oauth2::basic::{BasicClient, BasicErrorResponse, BasicTokenType};
use ::oauth2::{
    AsyncHttpClient, AuthType, ClientId, ClientSecret, HttpClientError, HttpRequest, HttpResponse,
    RequestTokenError, ResourceOwnerPassword, ResourceOwnerUsername, Scope, TokenResponse,
    TokenUrl,
};
use dashmap::DashMap;
use sha2::{Digest, Sha256};

use super::AuthError;
use crate::delivery::client::{check_url, ssrf_refusal, SsrfPolicy};
use crate::metrics::Metrics;
use crate::model::AuthConfig;
use crate::secrets::scrub::{is_secret_param, Scrubber};

/// How long a token is cached when the server does not say (`expires_in` absent).
pub const DEFAULT_TOKEN_LIFETIME: Duration = Duration::from_secs(300);
/// Longest a token is cached, whatever `expires_in` says.
const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Longest a token request may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(30);

/// The start of a shared connection's key in the cache (`connection:<name>`); other keys are
/// webhook ids. Fetches under such a key are also counted per connection.
pub const CONNECTION_KEY_PREFIX: &str = "connection:";

type Fingerprint = [u8; 32];

/// What a token fetch brought, besides the token: what a connection test shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// `token_type` of the answer (`bearer`...), lowercase.
    pub token_type: String,
    /// `expires_in` of the answer; none when the server did not say.
    pub expires_in: Option<Duration>,
    /// How long the token is used: `expires_in` (or [`DEFAULT_TOKEN_LIFETIME`]), capped.
    pub lifetime: Duration,
}

/// Per-webhook (or per-connection) cache of OAuth2 access tokens with single-flight fetches.
pub struct TokenCache {
    http: reqwest::Client,
    metrics: Arc<Metrics>,
    refresh_margin: Duration,
    policy: Arc<SsrfPolicy>,
    slots: DashMap<String, Arc<Slot>>,
}

/// One webhook's token.
#[derive(Default)]
struct Slot {
    /// The cached token and the last fetch's outcome; never held across an await.
    state: Mutex<State>,
    /// Held by the caller fetching; the others wait on it, then reuse what it fetched.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    cached: Option<Cached>,
    last_fetch: Option<Fetched>,
}

struct Cached {
    token: String,
    fingerprint: Fingerprint,
    /// When the token stops being handed out: its expiry minus the refresh margin.
    refresh_at: Instant,
}

struct Fetched {
    finished_at: Instant,
    fingerprint: Fingerprint,
    result: Result<String, AuthError>,
}

impl Slot {
    fn state(&self) -> MutexGuard<'_, State> {
        // The state is consistent after any panic: each update is a single assignment.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn fresh(&self, fingerprint: &Fingerprint) -> Option<String> {
        let state = self.state();
        let cached = state.cached.as_ref()?;
        (cached.fingerprint == *fingerprint && Instant::now() < cached.refresh_at)
            .then(|| cached.token.clone())
    }

    /// What a caller waiting since `since` gets without fetching: the outcome of a fetch that
    /// finished while it waited, or a fresh cached token.
    fn reusable(
        &self,
        fingerprint: &Fingerprint,
        since: Instant,
    ) -> Option<Result<String, AuthError>> {
        {
            let state = self.state();
            if let Some(last) = &state.last_fetch {
                if last.fingerprint == *fingerprint && last.finished_at >= since {
                    return Some(last.result.clone());
                }
            }
        }
        self.fresh(fingerprint).map(Ok)
    }
}

/// The OAuth2 part of an [`AuthConfig`].
struct Grant<'a> {
    token_url: &'a str,
    /// Username and password for the password grant; none for client credentials.
    owner: Option<(&'a str, &'a str)>,
    client_id: Option<&'a str>,
    client_secret: Option<&'a str>,
    scope: Option<&'a str>,
}

impl<'a> Grant<'a> {
    fn of(auth: &'a AuthConfig) -> Result<Grant<'a>, AuthError> {
        match auth {
            AuthConfig::Oauth2Password {
                token_url,
                username,
                password,
                client_id,
                client_secret,
                scope,
            } => Ok(Grant {
                token_url,
                owner: Some((username.as_str(), password.as_str())),
                client_id: client_id.as_deref(),
                client_secret: client_secret.as_deref(),
                scope: scope.as_deref(),
            }),
            AuthConfig::Oauth2ClientCredentials {
                token_url,
                client_id,
                client_secret,
                scope,
            } => Ok(Grant {
                token_url,
                owner: None,
                client_id: Some(client_id.as_str()),
                client_secret: Some(client_secret.as_str()),
                scope: scope.as_deref(),
            }),
            other => Err(AuthError::NotOauth(other.kind())),
        }
    }

    fn fingerprint(&self) -> Fingerprint {
        let mut hash = Sha256::new();
        let (username, password) = self.owner.unzip();
        for field in [
            Some(self.token_url),
            username,
            password,
            self.client_id,
            self.client_secret,
            self.scope,
        ] {
            // Length-prefixed, with absent distinct from empty.
            match field {
                Some(value) => {
                    hash.update([1]);
                    hash.update((value.len() as u64).to_be_bytes());
                    hash.update(value.as_bytes());
                }
                None => hash.update([0]),
            }
        }
        hash.finalize().into()
    }

    /// Replaces the grant's secrets in `text` (a server may echo them in an error), in every
    /// form the request carried them: the password form field, the client credentials' Basic
    /// header (form-urlencoded parts, RFC 6749 §2.3.1) or form fields, and credentials in the
    /// token URL itself (userinfo, secret query values).
    fn scrub(&self, text: String) -> String {
        let mut scrubber = Scrubber::new();
        if let Some((_, password)) = self.owner {
            scrubber = scrubber.secret(password);
        }
        if let Some(secret) = self.client_secret {
            scrubber = scrubber.basic(self.client_id.unwrap_or_default(), secret);
        }
        if let Ok(url) = reqwest::Url::parse(self.token_url) {
            if let Some(password) = url.password() {
                scrubber = scrubber.basic(url.username(), password);
            }
            if !url.username().is_empty() {
                scrubber = scrubber.secret(url.username());
            }
            for (name, value) in url.query_pairs() {
                if is_secret_param(&name, &[]) {
                    scrubber = scrubber.secret(&value);
                }
            }
        }
        scrubber.scrub(&text)
    }
}

impl TokenCache {
    /// An empty cache fetching through `http`, which must be the SSRF-protected, no-redirect
    /// delivery client. Tokens are refetched `refresh_margin` before they expire. Token URLs
    /// that are IP literals are judged by the default [`SsrfPolicy`] (public addresses only)
    /// unless [`TokenCache::with_ssrf_policy`] gives the gateway's.
    pub fn new(
        http: reqwest::Client,
        metrics: Arc<Metrics>,
        refresh_margin: Duration,
    ) -> TokenCache {
        TokenCache {
            http,
            metrics,
            refresh_margin,
            policy: Arc::new(SsrfPolicy::default()),
            slots: DashMap::new(),
        }
    }

    /// Judges IP-literal token URLs by `policy` (the one the client's resolver uses).
    pub fn with_ssrf_policy(mut self, policy: Arc<SsrfPolicy>) -> TokenCache {
        self.policy = policy;
        self
    }

    /// An access token for webhook `webhook_id`: the cached one unless it expires within the
    /// refresh margin or was fetched with other credentials, else a new one. Concurrent callers
    /// share one fetch.
    pub async fn token(&self, webhook_id: &str, auth: &AuthConfig) -> Result<String, AuthError> {
        let since = Instant::now();
        let grant = Grant::of(auth)?;
        let fingerprint = grant.fingerprint();
        let slot = self.slot(webhook_id);
        if let Some(token) = slot.fresh(&fingerprint) {
            return Ok(token);
        }
        let _fetching = slot.fetching.lock().await;
        if let Some(result) = slot.reusable(&fingerprint, since) {
            return result;
        }
        self.fetch_into(webhook_id, &slot, &grant, fingerprint)
            .await
            .map(|(token, _)| token)
    }

    /// Fetches a new token for `key` with `auth` whatever is cached (a connection test), and
    /// caches it as [`TokenCache::token`] would. Says what came back, never the token.
    pub async fn probe(&self, key: &str, auth: &AuthConfig) -> Result<TokenInfo, AuthError> {
        let grant = Grant::of(auth)?;
        let fingerprint = grant.fingerprint();
        let slot = self.slot(key);
        let _fetching = slot.fetching.lock().await;
        self.fetch_into(key, &slot, &grant, fingerprint)
            .await
            .map(|(_, info)| info)
    }

    /// One fetch whose outcome becomes `slot`'s (the caller holds `slot.fetching`).
    async fn fetch_into(
        &self,
        key: &str,
        slot: &Slot,
        grant: &Grant<'_>,
        fingerprint: Fingerprint,
    ) -> Result<(String, TokenInfo), AuthError> {
        let started = Instant::now();
        let result = self.fetch(key, grant).await;
        let mut state = slot.state();
        if let Ok((token, info)) = &result {
            state.cached = Some(Cached {
                token: token.clone(),
                fingerprint,
                refresh_at: started + info.lifetime.saturating_sub(self.refresh_margin),
            });
        }
        state.last_fetch = Some(Fetched {
            finished_at: Instant::now(),
            fingerprint,
            result: result
                .as_ref()
                .map(|(token, _)| token.clone())
                .map_err(|e| e.clone()),
        });
        result
    }

    /// Drops webhook `webhook_id`'s token if it is still `stale_token` (the one a 401 answered).
    /// A token fetched since is kept, so concurrent 401s cause a single refresh.
    pub fn invalidate(&self, webhook_id: &str, stale_token: &str) {
        let Some(slot) = self.slots.get(webhook_id).map(|slot| slot.clone()) else {
            return;
        };
        let mut state = slot.state();
        if state
            .cached
            .as_ref()
            .is_some_and(|c| c.token == stale_token)
        {
            state.cached = None;
        }
        if let Some(Fetched {
            result: Ok(token), ..
        }) = &state.last_fetch
        {
            if token == stale_token {
                state.last_fetch = None;
            }
        }
    }

    /// Forgets webhook `webhook_id` entirely (it was deleted).
    pub fn forget(&self, webhook_id: &str) {
        self.slots.remove(webhook_id);
    }

    fn slot(&self, webhook_id: &str) -> Arc<Slot> {
        if let Some(slot) = self.slots.get(webhook_id) {
            return slot.clone();
        }
        self.slots.entry(webhook_id.to_owned()).or_default().clone()
    }

    /// One token request, counted and logged; the token and how long it may be used.
    async fn fetch(
        &self,
        webhook_id: &str,
        grant: &Grant<'_>,
    ) -> Result<(String, TokenInfo), AuthError> {
        let url = shown_url(grant.token_url);
        let result = match tokio::time::timeout(FETCH_TIMEOUT, self.request(grant, &url)).await {
            Ok(result) => result,
            Err(_) => Err(AuthError::Unreachable {
                url: url.clone(),
                reason: format!("no answer within {}s", FETCH_TIMEOUT.as_secs()),
            }),
        };
        if let Some(connection) = webhook_id.strip_prefix(CONNECTION_KEY_PREFIX) {
            self.metrics
                .connection_token_fetches
                .get_or_create(&crate::metrics::ConnectionOutcomeLabel {
                    connection: connection.to_owned(),
                    outcome: if result.is_ok() { "ok" } else { "error" }.to_owned(),
                })
                .inc();
        }
        match &result {
            Ok(_) => {
                Metrics::count(&self.metrics.token_fetches, "ok");
                tracing::debug!(webhook_id, token_url = %url, "oauth2 token fetched");
            }
            Err(error) => {
                Metrics::count(&self.metrics.token_fetches, "error");
                tracing::warn!(webhook_id, %error, "oauth2 token fetch failed");
            }
        }
        result
    }

    async fn request(
        &self,
        grant: &Grant<'_>,
        url: &str,
    ) -> Result<(String, TokenInfo), AuthError> {
        let token_url_error = |reason: String| AuthError::TokenUrl {
            url: url.to_owned(),
            reason,
        };
        let parsed =
            reqwest::Url::parse(grant.token_url).map_err(|e| token_url_error(e.to_string()))?;
        check_url(&parsed, &self.policy).map_err(|e| token_url_error(e.to_string()))?;

        // Without a client id, send none at all: no empty Basic user, no empty client_id field.
        let auth_type = match grant.client_id {
            Some(_) => AuthType::BasicAuth,
            None => AuthType::RequestBody,
        };
        let mut client = BasicClient::new(ClientId::new(
            grant.client_id.unwrap_or_default().to_owned(),
        ))
        .set_auth_type(auth_type)
        .set_token_uri(TokenUrl::from_url(parsed));
        if let Some(secret) = grant.client_secret {
            client = client.set_client_secret(ClientSecret::new(secret.to_owned()));
        }
        let http = TokenHttp {
            http: &self.http,
            drop_empty_client_id: grant.client_id.is_none(),
            status: AtomicU16::new(0),
        };
        let scopes = grant
            .scope
            .unwrap_or_default()
            .split_whitespace()
            .map(|s| Scope::new(s.to_owned()));
        let response = match grant.owner {
            Some((username, password)) => {
                let username = ResourceOwnerUsername::new(username.to_owned());
                let password = ResourceOwnerPassword::new(password.to_owned());
                client
                    .exchange_password(&username, &password)
                    .add_scopes(scopes)
                    .request_async(&http)
                    .await
            }
            None => {
                client
                    .exchange_client_credentials()
                    .add_scopes(scopes)
                    .request_async(&http)
                    .await
            }
        };
        let status = http.status.load(Ordering::Relaxed);
        let response = response.map_err(|e| token_error(e, url, status, grant))?;
        let expires_in = response.expires_in();
        let token_type = match response.token_type() {
            BasicTokenType::Bearer => "bearer".to_owned(),
            BasicTokenType::Mac => "mac".to_owned(),
            BasicTokenType::Extension(other) => other.to_ascii_lowercase(),
        };
        let info = TokenInfo {
            token_type,
            expires_in,
            lifetime: expires_in
                .unwrap_or(DEFAULT_TOKEN_LIFETIME)
                .min(MAX_TOKEN_LIFETIME),
        };
        Ok((response.access_token().secret().clone(), info))
    }
}

/// Turns the oauth2 crate's error into an [`AuthError`] without secrets or token-response
/// contents.
fn token_error(
    error: RequestTokenError<HttpClientError<reqwest::Error>, BasicErrorResponse>,
    url: &str,
    status: u16,
    grant: &Grant<'_>,
) -> AuthError {
    let url = url.to_owned();
    match error {
        RequestTokenError::ServerResponse(response) => {
            let mut error = response.error().to_string();
            if let Some(description) = response.error_description() {
                error = format!("{error}: {description}");
            }
            AuthError::Rejected {
                url,
                status,
                error: grant.scrub(error),
            }
        }
        RequestTokenError::Request(error) => {
            if let Some(refused) = ssrf_refusal(&error) {
                return AuthError::TokenUrl {
                    url,
                    reason: refused.to_string(),
                };
            }
            let reason = match error {
                HttpClientError::Reqwest(error) => error_chain(&error.without_url()),
                other => error_chain(&other),
            };
            AuthError::Unreachable {
                url,
                reason: grant.scrub(reason),
            }
        }
        // The serde message could quote the response (the token itself): give the path only.
        RequestTokenError::Parse(error, _) => AuthError::BadResponse {
            url,
            status,
            reason: format!("unparsable token response (at {})", error.path()),
        },
        RequestTokenError::Other(reason) => AuthError::BadResponse {
            url,
            status,
            reason: grant.scrub(reason),
        },
    }
}

/// An error and its sources, `: `-separated.
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text = format!("{text}: {e}");
        source = e.source();
    }
    text
}

/// A URL fit for logs: scheme, host, port and path, without credentials or query.
fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut url) => {
            // Both fail only for URLs without a host, which have no credentials either.
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.to_string()
        }
        Err(_) => "(unparsable url)".to_owned(),
    }
}

/// The oauth2 crate's view of our client: drops the empty `client_id` field it would send
/// when none is configured, and records the answer's status for error messages.
struct TokenHttp<'a> {
    http: &'a reqwest::Client,
    drop_empty_client_id: bool,
    status: AtomicU16,
}

impl<'c> AsyncHttpClient<'c> for TokenHttp<'_> {
    type Error = HttpClientError<reqwest::Error>;
    type Future =
        Pin<Box<dyn Future<Output = Result<HttpResponse, Self::Error>> + Send + Sync + 'c>>;

    fn call(&'c self, mut request: HttpRequest) -> Self::Future {
        if self.drop_empty_client_id {
            let body = String::from_utf8_lossy(request.body())
                .split('&')
                .filter(|pair| *pair != "client_id=")
                .collect::<Vec<_>>()
                .join("&");
            *request.body_mut() = body.into_bytes();
        }
        Box::pin(async move {
            let response = self.http.call(request).await?;
            self.status
                .store(response.status().as_u16(), Ordering::Relaxed);
            Ok(response)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::AtomicUsize;

    use axum::extract::State as AxState;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::Json;
    use base64::Engine;
    use serde_json::json;

    use super::*;

    /// A token request's form fields and Authorization header.
    type Seen = (HashMap<String, String>, Option<String>);

    /// A token server: counts requests, checks the grant, issues `tok-N`.
    #[derive(Default)]
    struct Server {
        requests: AtomicUsize,
        /// `expires_in` of issued tokens; none omits it.
        expires_in: Mutex<Option<u64>>,
        /// When set, every request fails with this status.
        fail: AtomicU16,
        /// Delay before answering, to let concurrent callers pile up.
        delay_ms: u64,
        /// The last request's form fields and Authorization header.
        last: Mutex<Option<Seen>>,
    }

    fn form(body: &str) -> HashMap<String, String> {
        body.split('&')
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.replace('+', " ").replace("%40", "@")))
            .collect()
    }

    async fn issue(
        AxState(server): AxState<Arc<Server>>,
        headers: HeaderMap,
        body: String,
    ) -> Response {
        let n = server.requests.fetch_add(1, Ordering::SeqCst) + 1;
        tokio::time::sleep(Duration::from_millis(server.delay_ms)).await;
        let fields = form(&body);
        let authorization = headers
            .get("authorization")
            .map(|v| v.to_str().unwrap_or_default().to_owned());
        *server.last.lock().unwrap() = Some((fields.clone(), authorization.clone()));
        let fail = server.fail.load(Ordering::SeqCst);
        if fail != 0 {
            return (StatusCode::from_u16(fail).unwrap(), "boom hunter2").into_response();
        }
        let field = |k: &str| fields.get(k).map(String::as_str);
        let ok = match field("grant_type") {
            Some("password") => {
                field("username") == Some("alice") && field("password") == Some("hunter2")
            }
            Some("client_credentials") => {
                let expected = base64::engine::general_purpose::STANDARD.encode("cid:csecret");
                authorization == Some(format!("Basic {expected}"))
            }
            _ => false,
        };
        if !ok {
            return (
                StatusCode::BAD_REQUEST,
                Json(
                    json!({"error": "invalid_grant", "error_description": "bad password hunter2"}),
                ),
            )
                .into_response();
        }
        let mut token = json!({"access_token": format!("tok-{n}"), "token_type": "bearer"});
        if let Some(expires_in) = *server.expires_in.lock().unwrap() {
            token["expires_in"] = json!(expires_in);
        }
        Json(token).into_response()
    }

    async fn start(server: Server) -> (Arc<Server>, String) {
        let server = Arc::new(server);
        let app = axum::Router::new()
            .route("/token", axum::routing::post(issue))
            .with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://127.0.0.1:{}/token",
            listener.local_addr().unwrap().port()
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        (server, url)
    }

    fn cache_with(margin: Duration) -> (TokenCache, Arc<Metrics>) {
        let policy = Arc::new(SsrfPolicy::new(vec!["127.0.0.1/32".parse().unwrap()]));
        let http = crate::delivery::client::build(policy.clone(), "hookyard-test").unwrap();
        let metrics = Arc::new(Metrics::new());
        let cache = TokenCache::new(http, metrics.clone(), margin).with_ssrf_policy(policy);
        (cache, metrics)
    }

    fn cache() -> TokenCache {
        cache_with(Duration::from_secs(60)).0
    }

    fn password(token_url: &str) -> AuthConfig {
        AuthConfig::Oauth2Password {
            token_url: token_url.to_owned(),
            username: "alice".into(),
            password: "hunter2".into(),
            client_id: None,
            client_secret: None,
            scope: None,
        }
    }

    fn client_credentials(token_url: &str) -> AuthConfig {
        AuthConfig::Oauth2ClientCredentials {
            token_url: token_url.to_owned(),
            client_id: "cid".into(),
            client_secret: "csecret".into(),
            scope: Some("read write".into()),
        }
    }

    fn with_expiry(expires_in: u64) -> Server {
        Server {
            expires_in: Mutex::new(Some(expires_in)),
            ..Server::default()
        }
    }

    fn fetches(metrics: &Metrics, outcome: &str) -> u64 {
        metrics
            .token_fetches
            .get_or_create(&crate::metrics::OutcomeLabel {
                outcome: outcome.into(),
            })
            .get()
    }

    #[tokio::test]
    async fn caches_password_grant_without_client_id() {
        let (server, url) = start(with_expiry(3600)).await;
        let (cache, metrics) = cache_with(Duration::from_secs(60));
        let auth = password(&url);
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-1");
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-1");
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
        assert_eq!(fetches(&metrics, "ok"), 1);
        let (fields, authorization) = server.last.lock().unwrap().clone().unwrap();
        assert_eq!(
            fields.get("grant_type").map(String::as_str),
            Some("password")
        );
        assert!(!fields.contains_key("client_id"), "{fields:?}");
        assert_eq!(authorization, None);
        // Another webhook has its own token.
        assert_eq!(cache.token("wh_2", &auth).await.unwrap(), "tok-2");
    }

    #[tokio::test]
    async fn password_grant_with_client() {
        let (server, url) = start(with_expiry(3600)).await;
        let auth = AuthConfig::Oauth2Password {
            token_url: url,
            username: "alice".into(),
            password: "hunter2".into(),
            client_id: Some("app".into()),
            client_secret: Some("appsecret".into()),
            scope: Some("users".into()),
        };
        assert_eq!(cache().token("wh_1", &auth).await.unwrap(), "tok-1");
        let (fields, authorization) = server.last.lock().unwrap().clone().unwrap();
        assert_eq!(fields.get("scope").map(String::as_str), Some("users"));
        let basic = base64::engine::general_purpose::STANDARD.encode("app:appsecret");
        assert_eq!(authorization, Some(format!("Basic {basic}")));
        // Public client: id in the body, no Basic header.
        let mut auth = auth;
        if let AuthConfig::Oauth2Password { client_secret, .. } = &mut auth {
            *client_secret = None;
        }
        cache().token("wh_1", &auth).await.unwrap();
        let (fields, authorization) = server.last.lock().unwrap().clone().unwrap();
        assert_eq!(fields.get("client_id").map(String::as_str), Some("app"));
        assert_eq!(authorization, None);
    }

    #[tokio::test]
    async fn client_credentials_grant() {
        let (server, url) = start(with_expiry(3600)).await;
        let cache = cache();
        assert_eq!(
            cache
                .token("wh_1", &client_credentials(&url))
                .await
                .unwrap(),
            "tok-1"
        );
        let (fields, _) = server.last.lock().unwrap().clone().unwrap();
        assert_eq!(
            fields.get("grant_type").map(String::as_str),
            Some("client_credentials")
        );
        assert_eq!(fields.get("scope").map(String::as_str), Some("read write"));
        assert!(!fields.contains_key("client_secret"));
    }

    #[tokio::test]
    async fn concurrent_callers_share_one_fetch() {
        let (server, url) = start(Server {
            delay_ms: 200,
            ..with_expiry(3600)
        })
        .await;
        let cache = Arc::new(cache());
        let auth = password(&url);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (cache, auth) = (cache.clone(), auth.clone());
                tokio::spawn(async move { cache.token("wh_1", &auth).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "tok-1");
        }
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn concurrent_callers_share_a_failure() {
        let (server, url) = start(Server {
            delay_ms: 200,
            fail: AtomicU16::new(503),
            ..Server::default()
        })
        .await;
        let cache = Arc::new(cache());
        let auth = password(&url);
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, auth) = (cache.clone(), auth.clone());
                tokio::spawn(async move { cache.token("wh_1", &auth).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_err());
        }
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn refetches_within_the_margin() {
        // expires_in 30s with a 60s margin: every call is "about to expire".
        let (server, url) = start(with_expiry(30)).await;
        let cache = cache();
        let auth = password(&url);
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-1");
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-2");
        // Outside the margin: cached.
        *server.expires_in.lock().unwrap() = Some(61);
        let (cache, _) = cache_with(Duration::from_secs(60));
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-3");
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-3");
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-4");
    }

    #[tokio::test]
    async fn default_lifetime_without_expires_in() {
        let (server, url) = start(Server::default()).await;
        let (cache, _) = cache_with(DEFAULT_TOKEN_LIFETIME - Duration::from_secs(60));
        let auth = password(&url);
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-1");
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-1");
        let (cache, _) = cache_with(DEFAULT_TOKEN_LIFETIME);
        cache.token("wh_1", &auth).await.unwrap();
        cache.token("wh_1", &auth).await.unwrap();
        assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn concurrent_invalidations_cause_one_refresh() {
        let (server, url) = start(Server {
            delay_ms: 50,
            ..with_expiry(3600)
        })
        .await;
        let cache = Arc::new(cache());
        let auth = password(&url);
        let stale = cache.token("wh_1", &auth).await.unwrap();
        // 20 deliveries got a 401 with the stale token: each invalidates, then asks again.
        let tasks: Vec<_> = (0..20)
            .map(|_| {
                let (cache, auth, stale) = (cache.clone(), auth.clone(), stale.clone());
                tokio::spawn(async move {
                    cache.invalidate("wh_1", &stale);
                    cache.token("wh_1", &auth).await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap().unwrap(), "tok-2");
        }
        assert_eq!(server.requests.load(Ordering::SeqCst), 2);
        // A late 401 with the old token does not drop the new one.
        cache.invalidate("wh_1", &stale);
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-2");
        assert_eq!(server.requests.load(Ordering::SeqCst), 2);
        // Invalidating the current token does refresh; unknown webhooks are ignored.
        cache.invalidate("wh_unknown", "tok-2");
        cache.invalidate("wh_1", "tok-2");
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-3");
    }

    #[tokio::test]
    async fn credential_change_refetches() {
        let (server, url) = start(with_expiry(3600)).await;
        let cache = cache();
        let auth = password(&url);
        assert_eq!(cache.token("wh_1", &auth).await.unwrap(), "tok-1");
        // A new password (rejected by this server) is not answered from the cache.
        let changed = match auth.clone() {
            AuthConfig::Oauth2Password {
                token_url,
                username,
                ..
            } => AuthConfig::Oauth2Password {
                token_url,
                username,
                password: "n3w-pass".into(),
                client_id: None,
                client_secret: None,
                scope: None,
            },
            _ => unreachable!(),
        };
        let err = cache.token("wh_1", &changed).await.unwrap_err();
        assert!(err.is_rejected(), "{err}");
        assert!(err.to_string().contains("invalid_grant"), "{err}");
        assert!(!err.to_string().contains("n3w-pass"), "{err}");
        // Changing the scope refetches too.
        let scoped = match auth.clone() {
            AuthConfig::Oauth2Password {
                token_url,
                username,
                password,
                ..
            } => AuthConfig::Oauth2Password {
                token_url,
                username,
                password,
                client_id: None,
                client_secret: None,
                scope: Some("more".into()),
            },
            _ => unreachable!(),
        };
        assert_eq!(cache.token("wh_1", &scoped).await.unwrap(), "tok-3");
        assert_eq!(server.requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn errors_name_the_cause_without_secrets() {
        let (server, url) = start(Server::default()).await;
        let (cache, metrics) = cache_with(Duration::from_secs(60));

        // Rejected credentials: distinguishable, the echoed password masked.
        let wrong = AuthConfig::Oauth2ClientCredentials {
            token_url: url.clone(),
            client_id: "cid".into(),
            client_secret: "hunter2".into(),
            scope: None,
        };
        let err = cache.token("wh_1", &wrong).await.unwrap_err();
        assert!(err.is_rejected(), "{err}");
        assert!(
            matches!(&err, AuthError::Rejected { status: 400, .. }),
            "{err:?}"
        );
        assert!(!err.to_string().contains("hunter2"), "{err}");

        // Server error.
        server.fail.store(500, Ordering::SeqCst);
        let err = cache.token("wh_2", &password(&url)).await.unwrap_err();
        assert!(
            matches!(&err, AuthError::BadResponse { status: 500, .. }),
            "{err:?}"
        );
        assert!(!err.is_rejected());
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");

        // Unreachable.
        let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = closed.local_addr().unwrap().port();
        drop(closed);
        let auth = password(&format!(
            "http://alice:hunter2@127.0.0.1:{port}/token?key=hunter2"
        ));
        let err = cache.token("wh_3", &auth).await.unwrap_err();
        assert!(matches!(&err, AuthError::Unreachable { .. }), "{err:?}");
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
        assert!(!format!("{err:?}").contains("alice"), "{err:?}");

        let err = cache
            .token("wh_4", &password("not a url"))
            .await
            .unwrap_err();
        assert!(matches!(&err, AuthError::TokenUrl { .. }), "{err:?}");

        // Refused by the (default) SSRF policy, as an IP literal and as a name.
        let strict = TokenCache::new(
            crate::delivery::client::build(Arc::new(SsrfPolicy::default()), "test").unwrap(),
            metrics.clone(),
            Duration::from_secs(60),
        );
        for refused in [
            url.as_str(),
            "http://10.0.0.1/token",
            "http://localhost:1/token",
        ] {
            let err = strict.token("wh_5", &password(refused)).await.unwrap_err();
            assert!(matches!(&err, AuthError::TokenUrl { .. }), "{err:?}");
            assert!(err.to_string().contains("SSRF"), "{err}");
        }
        assert_eq!(fetches(&metrics, "error"), 7);
        assert_eq!(
            cache.token("wh_5", &AuthConfig::None).await,
            Err(AuthError::NotOauth("none"))
        );
    }

    #[tokio::test]
    async fn headers_carry_the_cached_token() {
        let (server, url) = start(with_expiry(3600)).await;
        let cache = cache();
        let auth = client_credentials(&url);
        let credentials = crate::auth::credentials(&cache, "wh_1", &auth)
            .await
            .unwrap();
        assert_eq!(credentials.oauth_token.as_deref(), Some("tok-1"));
        let headers = crate::auth::headers(&cache, "wh_1", &auth).await.unwrap();
        assert_eq!(headers.len(), 1);
        assert_eq!(headers[0].0, http::header::AUTHORIZATION);
        assert_eq!(headers[0].1.to_str().unwrap(), "Bearer tok-1");
        assert!(headers[0].1.is_sensitive());
        assert_eq!(server.requests.load(Ordering::SeqCst), 1);
    }
}
