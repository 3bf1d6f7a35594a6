//! The test harness: the real gateway on port 0, a scriptable receiver, an OAuth2 token server,
//! and one bounded `eventually` helper. No fixed ports, no fixed sleeps.

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use hookyard::config::Config;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const ADMIN_TOKEN: &str = "test-admin-token";
pub const INGEST_TOKEN: &str = "test-ingest-token";
/// The secret key PostgreSQL test gateways share (base64 of 32 bytes); SQLite ones generate
/// their own key file beside the database, as a fresh install does.
pub const TEST_SECRET_KEY: &str = "aG9va3lhcmQtdGVzdC1zZWNyZXQta2V5LTMyYnl0ZXM=";

/// The `[store]` lines besides `url` a test gateway needs: the shared key on PostgreSQL.
pub fn store_key_line() -> String {
    if on_postgres() {
        format!("secret_key = \"{TEST_SECRET_KEY}\"")
    } else {
        String::new()
    }
}

/// Polls `check` until it returns `Some`, or panics after `timeout` with `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A config for tests: the store of [`store_url`], tokens set, 127.0.0.1/32 allow-listed, fast
/// retries.
pub fn test_config(dir: &Path) -> Config {
    let file = format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
admin_token = "{ADMIN_TOKEN}"
ingest_token = "{INGEST_TOKEN}"
max_body_bytes = 65536
shutdown_grace_secs = 5

[store]
url = "{}"
{}

[delivery]
allow_networks = ["127.0.0.1/32"]
retry_base_ms = 50
retry_factor = 2.0
retry_max_ms = 400
poll_interval_ms = 20
lease_secs = 30

[plugins]
cache_dir = "{}"
timeout_ms = 500
memory_limit_mb = 64
# The machine running the tests is busy with builds at normal priority: a niced compile of a
# Python component would take minutes there (compile.rs tests the niceness itself).
compile_nice = 0
# No built-in plugin: each test's fresh plugin cache would compile field-map again, and tests
# count the plugins they upload. tests/it/builtin.rs tests the built-in install.
builtin = []
"#,
        store_url(dir),
        store_key_line(),
        dir.join("plugin-cache").display()
    );
    Config::from_layers(Some(("test".into(), file)), []).expect("test config is valid")
}

/// A gateway's two HTTP APIs, with the test tokens: what tests call, whether the gateway runs
/// in this process ([`TestGateway`]) or as a child process (the cluster tests).
pub struct Api {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    http: reqwest::Client,
}

/// The gateway, running in this process on 127.0.0.1:0.
pub struct TestGateway {
    api: Api,
    pub config: Config,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), hookyard::Error>>>,
}

impl std::ops::Deref for TestGateway {
    type Target = Api;

    fn deref(&self) -> &Api {
        &self.api
    }
}

impl TestGateway {
    /// Starts a gateway with `config` (its listen addresses are ignored: port 0 is used).
    pub async fn start(config: Config) -> TestGateway {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let listeners = hookyard::Listeners {
            public,
            admin: Some(admin),
        };
        let task = tokio::spawn(hookyard::run(config.clone(), listeners, async {
            let _ = rx.await;
        }));
        let mut gw = TestGateway {
            api: Api::new(public_addr, admin_addr),
            config,
            shutdown: Some(tx),
            task: Some(task),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if gw.task.as_ref().is_some_and(|t| t.is_finished()) {
                let result = gw.task.take().unwrap().await;
                panic!("the gateway stopped while starting: {result:?}");
            }
            if let Ok(r) = gw.http.get(gw.url("/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            if Instant::now() > deadline {
                panic!("timed out after 10s waiting for: gateway ready");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        gw
    }

    /// Stops the gateway (as SIGTERM would) and waits until it has drained.
    pub async fn stop(mut self) {
        self.stop_in_place().await;
    }

    async fn stop_in_place(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("gateway task")
                .expect("gateway stopped cleanly");
        }
    }
}

impl Api {
    pub fn new(public: SocketAddr, admin: SocketAddr) -> Api {
        Api {
            public,
            admin,
            http: reqwest::Client::new(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.public)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// POST /v1/events with the ingest token.
    pub async fn post_event(&self, event: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url("/v1/events"))
            .bearer_auth(INGEST_TOKEN)
            .json(&event)
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    /// An admin request with the admin token.
    pub async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), self.admin_url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            req = req.json(&body);
        }
        status_json(req.send().await.unwrap()).await
    }

    /// Creates a webhook, asserting 201; returns it (secrets masked).
    pub async fn create_webhook(&self, spec: Value) -> Value {
        let (status, body) = self.admin("POST", "/admin/v1/webhooks", Some(spec)).await;
        assert_eq!(status, StatusCode::CREATED, "{body}");
        body
    }

    /// The Webhook Log entry of a delivery, with attempts.
    pub async fn delivery(&self, id: &str) -> Value {
        let (status, body) = self
            .admin("GET", &format!("/admin/v1/deliveries/{id}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body
    }

    /// Deliveries matching a query string (`webhook=x&status=dead`), every page.
    pub async fn deliveries(&self, query: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut cursor = String::new();
        loop {
            let (status, body) = self
                .admin(
                    "GET",
                    &format!("/admin/v1/deliveries?{query}&limit=1000{cursor}"),
                    None,
                )
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            items.extend(body["items"].as_array().cloned().unwrap_or_default());
            match body["next_cursor"].as_str() {
                Some(next) => cursor = format!("&cursor={next}"),
                None => return items,
            }
        }
    }

    /// Waits until `n` deliveries of `webhook` have `status`.
    pub async fn wait_for_status(&self, webhook: &str, status: &str, n: usize) -> Vec<Value> {
        eventually(
            Duration::from_secs(20),
            &format!("{n} {status} deliveries of {webhook}"),
            || async {
                let items = self
                    .deliveries(&format!("webhook={webhook}&status={status}"))
                    .await;
                (items.len() >= n).then_some(items)
            },
        )
        .await
    }

    /// POST /v1/events/batch with the ingest token.
    pub async fn post_batch(&self, events: Value) -> (StatusCode, Value) {
        let r = self
            .http
            .post(self.url("/v1/events/batch"))
            .bearer_auth(INGEST_TOKEN)
            .json(&events)
            .send()
            .await
            .unwrap();
        status_json(r).await
    }

    /// The HTTP client the helpers use (for raw requests).
    pub fn client(&self) -> reqwest::Client {
        self.http.clone()
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// The value of the sample `series` (name and labels) in `/metrics`; none when the gateway
    /// does not answer or has no such sample.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = self
            .http
            .get(self.url("/metrics"))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse::<f64>().ok())
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Sends `body` raw (as JSON content) with an optional bearer token.
pub async fn send_raw(
    gw: &TestGateway,
    method: &str,
    url: String,
    token: Option<&str>,
    body: Option<Vec<u8>>,
) -> (StatusCode, Value) {
    let mut req = gw.client().request(method.parse().unwrap(), url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b);
    }
    status_json(req.send().await.unwrap()).await
}

pub async fn status_json(r: reqwest::Response) -> (StatusCode, Value) {
    let status = StatusCode::from_u16(r.status().as_u16()).unwrap();
    let text = r.text().await.unwrap();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, body)
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
}

/// A scripted answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            headers: vec![],
            body: String::new(),
            delay: None,
        }
    }
    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.into();
        self
    }
    pub fn delay(mut self, d: Duration) -> Reply {
        self.delay = Some(d);
        self
    }
}

#[derive(Default)]
struct ReceiverState {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    default: Mutex<Option<Reply>>,
    hang: AtomicBool,
    /// Requests that arrived, counted before hanging or checking tokens.
    arrived: AtomicUsize,
    /// When set, requests must carry `Authorization: Bearer <one of these>` or get 401.
    tokens: Option<Arc<TokenState>>,
}

/// A receiver whose answers a test scripts: queued replies first, then the default (200).
#[derive(Clone)]
pub struct Receiver {
    pub addr: SocketAddr,
    state: Arc<ReceiverState>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_with(None).await
    }

    /// A receiver that accepts only tokens issued (and not revoked) by `tokens`.
    pub async fn protected_by(tokens: &TokenServer) -> Receiver {
        Self::start_with(Some(tokens.state.clone())).await
    }

    async fn start_with(tokens: Option<Arc<TokenState>>) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve_on(listener, tokens)
    }

    /// A receiver listening on `ip` (port 0), e.g. `127.0.0.2` or `::1`; None if it cannot bind.
    pub async fn start_on(ip: &str) -> Option<Receiver> {
        let ip: std::net::IpAddr = ip.parse().unwrap();
        let listener = TcpListener::bind(SocketAddr::new(ip, 0)).await.ok()?;
        Some(Self::serve_on(listener, None))
    }

    fn serve_on(listener: TcpListener, tokens: Option<Arc<TokenState>>) -> Receiver {
        let state = Arc::new(ReceiverState {
            tokens,
            ..Default::default()
        });
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests that reached the handler, including hanging ones and ones refused for a bad
    /// token (`count()` only counts recorded ones).
    pub fn arrived(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }

    /// Queues replies answered in order before the default.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// The answer once the script is used up (200 when never set).
    pub fn set_default(&self, reply: Reply) {
        *self.state.default.lock().unwrap() = Some(reply);
    }

    /// Never answer (until turned off).
    pub fn set_hang(&self, hang: bool) {
        self.state.hang.store(hang, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    pub fn count(&self) -> usize {
        self.state.received.lock().unwrap().len()
    }

    /// Waits until at least `n` requests arrived; returns them all.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(
            Duration::from_secs(20),
            &format!("{n} requests at the receiver"),
            || async {
                let got = self.received();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

async fn receive(State(state): State<Arc<ReceiverState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    state.arrived.fetch_add(1, Ordering::SeqCst);
    if state.hang.load(Ordering::SeqCst) {
        std::future::pending::<()>().await;
    }
    let received = Received {
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        headers: parts.headers.clone(),
        body,
        at: Instant::now(),
    };
    if let Some(tokens) = &state.tokens {
        let given = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !tokens.valid.lock().unwrap().contains(given) {
            tokens.rejected.fetch_add(1, Ordering::SeqCst);
            return (StatusCode::UNAUTHORIZED, "bad token").into_response();
        }
    }
    state.received.lock().unwrap().push(received);
    let reply = state
        .script
        .lock()
        .unwrap()
        .pop_front()
        .or_else(|| state.default.lock().unwrap().clone())
        .unwrap_or(Reply::status(200));
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut response = (StatusCode::from_u16(reply.status).unwrap(), reply.body).into_response();
    for (k, v) in reply.headers {
        response.headers_mut().insert(
            axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    response
}

/// One token request the token server got.
#[derive(Debug, Clone)]
pub struct Grant {
    pub form: Vec<(String, String)>,
    pub authorization: Option<String>,
}

impl Grant {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Default)]
pub struct TokenState {
    issued: AtomicUsize,
    valid: Mutex<HashSet<String>>,
    grants: Mutex<Vec<Grant>>,
    rejected: AtomicUsize,
    expires_in: AtomicUsize,
    fail: AtomicBool,
}

/// An OAuth2 token endpoint that counts the tokens it issues.
#[derive(Clone)]
pub struct TokenServer {
    pub addr: SocketAddr,
    state: Arc<TokenState>,
}

impl TokenServer {
    pub async fn start() -> TokenServer {
        let state = Arc::new(TokenState::default());
        state.expires_in.store(3600, Ordering::SeqCst);
        let app = axum::Router::new()
            .route("/token", axum::routing::post(token))
            .with_state(state.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        TokenServer { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// Tokens issued so far.
    pub fn issued(&self) -> usize {
        self.state.issued.load(Ordering::SeqCst)
    }

    /// Requests the protected receiver refused for a bad token.
    pub fn rejected(&self) -> usize {
        self.state.rejected.load(Ordering::SeqCst)
    }

    pub fn grants(&self) -> Vec<Grant> {
        self.state.grants.lock().unwrap().clone()
    }

    /// Revokes every token issued so far (the receiver then answers 401 to them).
    pub fn revoke_all(&self) {
        self.state.valid.lock().unwrap().clear();
    }

    pub fn set_expires_in(&self, secs: usize) {
        self.state.expires_in.store(secs, Ordering::SeqCst);
    }

    /// Makes the token endpoint answer 500 (until turned off).
    pub fn set_fail(&self, fail: bool) {
        self.state.fail.store(fail, Ordering::SeqCst);
    }
}

async fn token(State(state): State<Arc<TokenState>>, headers: HeaderMap, body: Bytes) -> Response {
    let form: Vec<(String, String)> = form_urlencoded_pairs(&body);
    state.grants.lock().unwrap().push(Grant {
        form: form.clone(),
        authorization: headers
            .get("authorization")
            .map(|v| v.to_str().unwrap().to_owned()),
    });
    if state.fail.load(Ordering::SeqCst) {
        return (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
    }
    let n = state.issued.fetch_add(1, Ordering::SeqCst) + 1;
    let token = format!("tok-{n}");
    state.valid.lock().unwrap().insert(token.clone());
    axum::Json(json!({
        "access_token": token,
        "token_type": "bearer",
        "expires_in": state.expires_in.load(Ordering::SeqCst),
    }))
    .into_response()
}

fn form_urlencoded_pairs(body: &[u8]) -> Vec<(String, String)> {
    reqwest::Url::parse(&format!("http://x/?{}", String::from_utf8_lossy(body)))
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

/// A temporary directory that lives as long as the test, and the PostgreSQL schema that goes
/// with it when one was made ([`postgres_url`]): both are removed when it is dropped.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let schema = schema_name(self.dir.path());
        let made = SCHEMAS
            .lock()
            .unwrap()
            .as_mut()
            .is_some_and(|made| made.remove(&schema));
        if made {
            if let Err(e) = postgres_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE")) {
                eprintln!("could not drop test schema {schema}: {e}");
            }
        }
    }
}

/// A temporary directory that lives as long as the test.
pub fn temp_dir() -> TestDir {
    TestDir {
        dir: tempfile::tempdir().unwrap(),
    }
}

/// Whether the integration tests run on PostgreSQL (`HOOKYARD_TEST_STORE=postgres`) rather than
/// SQLite (the default). `scripts/test.sh` runs them both ways.
pub fn on_postgres() -> bool {
    match std::env::var("HOOKYARD_TEST_STORE").as_deref() {
        Ok("postgres") => true,
        Ok("sqlite") | Err(_) => false,
        Ok(other) => panic!("HOOKYARD_TEST_STORE={other}: expected sqlite or postgres"),
    }
}

/// The store URL a test gateway in `dir` uses: SQLite in `dir`, or (on PostgreSQL) a fresh
/// schema named after `dir`, so a gateway restarted on the same directory finds its data.
pub fn store_url(dir: &Path) -> String {
    if on_postgres() {
        postgres_url(dir)
    } else {
        format!("sqlite://{}", dir.join("hookyard.db").display())
    }
}

/// The database the PostgreSQL tests use (`HOOKYARD_TEST_POSTGRES_URL`, by default the local
/// server's `test` database).
pub fn postgres_base_url() -> String {
    std::env::var("HOOKYARD_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// Schemas this test process made, dropped with their [`TestDir`].
static SCHEMAS: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// The schema of the tests in `dir`: the process id (so leftovers of a killed run can be told
/// apart from a concurrent run's) and a hash of the path.
pub fn schema_name(dir: &Path) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    dir.hash(&mut h);
    format!("hy_it_{}_{:016x}", std::process::id(), h.finish())
}

/// A PostgreSQL URL on a schema of its own for the tests in `dir` (created on first use; dropped
/// with the [`TestDir`]).
pub fn postgres_url(dir: &Path) -> String {
    static PURGED: std::sync::Once = std::sync::Once::new();
    PURGED.call_once(purge_dead_schemas);
    let schema = schema_name(dir);
    let fresh = SCHEMAS
        .lock()
        .unwrap()
        .get_or_insert_with(HashSet::new)
        .insert(schema.clone());
    if fresh {
        postgres_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}")).unwrap_or_else(|e| {
            panic!(
                "PostgreSQL at {} is needed by this test: {e}",
                postgres_base_url()
            )
        });
    }
    with_search_path(&postgres_base_url(), &schema)
}

/// `url` with `search_path` set to `schema` for every connection.
pub fn with_search_path(url: &str, schema: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}options=-c%20search_path%3D{schema}")
}

/// Drops the schemas of earlier test processes that no longer run (killed before cleaning up).
fn purge_dead_schemas() {
    let listed =
        postgres_query("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'hy\\_it\\_%'");
    let Ok(names) = listed else { return };
    for name in names {
        let pid = name.split('_').nth(2).unwrap_or_default();
        if !pid.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = postgres_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"));
        }
    }
}

/// Runs `sql` on the test database, from any context (a thread with its own runtime).
pub fn postgres_execute(sql: &str) -> Result<(), String> {
    let sql = sql.to_owned();
    postgres_blocking(move |client| async move {
        client.batch_execute(&sql).await.map_err(|e| e.to_string())
    })
}

/// The first column (text) of every row of `sql` on the test database.
pub fn postgres_query(sql: &str) -> Result<Vec<String>, String> {
    let sql = sql.to_owned();
    postgres_blocking(move |client| async move {
        let rows = client.query(&sql, &[]).await.map_err(|e| e.to_string())?;
        Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
    })
}

fn postgres_blocking<T, F, Fut>(f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce(tokio_postgres::Client) -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>>,
{
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async move {
            let (client, connection) =
                tokio_postgres::connect(&postgres_base_url(), tokio_postgres::NoTls)
                    .await
                    .map_err(|e| format!("cannot connect: {e}"))?;
            tokio::spawn(connection);
            f(client).await
        })
    })
    .join()
    .map_err(|_| "the PostgreSQL helper thread panicked".to_string())?
}

/// The path of the built `hookyard` binary.
pub fn binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hookyard"))
}

/// A port on 127.0.0.1 that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Asserts `body` is the JSON error shape `{"error": {"code", "message"}}` with `code`.
pub fn assert_error(status: StatusCode, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status.as_u16(), want_status, "{body}");
    assert_eq!(body["error"]["code"], want_code, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "error message missing: {body}"
    );
}
