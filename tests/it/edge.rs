//! The network edge: slow clients cut off by the timeouts, the connection cap, descriptor
//! exhaustion, the inbound rate limit, inbound pushes refused before their body, and both APIs
//! on one address.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Connects, writes `head` at once, then `trickle` one byte every 100 ms, and reads until the
/// server closes the connection (10 s at most). Returns whether it closed, when (since
/// `started`), and what the server wrote.
async fn slow_client(
    addr: SocketAddr,
    started: Instant,
    head: String,
    trickle: String,
) -> (bool, Duration, String) {
    let (mut r, mut w) = TcpStream::connect(addr).await.unwrap().into_split();
    w.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        for b in trickle.as_bytes() {
            if w.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let (got, closed) = read_until_closed(&mut r, Duration::from_secs(10)).await;
    writer.abort();
    (
        closed,
        started.elapsed(),
        String::from_utf8_lossy(&got).into_owned(),
    )
}

/// Reads until the server closes the connection (EOF or reset) or `limit` passes; returns what
/// was read and whether it closed.
async fn read_until_closed(
    stream: &mut (impl AsyncRead + Unpin),
    limit: Duration,
) -> (Vec<u8>, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (got, false),
            Ok(Ok(0)) | Ok(Err(_)) => return (got, true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads one HTTP/1.1 response (with a Content-Length) arriving within `limit`: its status
/// line and body.
async fn read_response(stream: &mut TcpStream, limit: Duration) -> (String, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            if body.len() >= length {
                let status = head.lines().next().unwrap_or("").to_owned();
                return (status, body[..length].to_owned());
            }
        }
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => panic!("no whole response within {limit:?}; got {text:?}"),
            Ok(Ok(0)) | Ok(Err(_)) => panic!("closed before a whole response: {text:?}"),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A slow client of each kind is cut off after its timeout, while a real request goes through.
#[tokio::test(flavor = "multi_thread")]
async fn slow_clients_are_closed_after_the_timeouts() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.server.header_read_timeout_ms = 800;
    config.server.body_timeout_ms = 1500;
    config.server.idle_timeout_ms = 60_000;
    let gw = TestGateway::start(config).await;
    let started = Instant::now();

    // Connected, silent.
    let silent = tokio::spawn({
        let addr = gw.public;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
            (closed, started.elapsed())
        }
    });
    // A request head, one byte every 100 ms (it would take seconds).
    let slow_head = tokio::spawn(slow_client(
        gw.public,
        started,
        String::new(),
        format!(
            "GET /healthz HTTP/1.1\r\nhost: x\r\nx-padding: {}\r\n\r\n",
            "p".repeat(100)
        ),
    ));
    // A whole head, then a body one byte every 100 ms.
    let slow_body = tokio::spawn(slow_client(
        gw.public,
        started,
        format!(
            "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {INGEST_TOKEN}\r\n\
             content-type: application/json\r\ncontent-length: 1000\r\n\r\n"
        ),
        " ".repeat(1000),
    ));
    // A keep-alive connection left idle after one request.
    let idle_keepalive = tokio::spawn({
        let addr = gw.public;
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n")
                .await
                .unwrap();
            let (status, _) = read_response(&mut s, Duration::from_secs(5)).await;
            let answered = started.elapsed();
            let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
            (status, closed, started.elapsed() - answered)
        }
    });

    // Meanwhile a real client is served.
    let (status, body) = gw
        .post_event(json!({"type": "user.created", "data": {"id": 1}}))
        .await;
    assert_eq!(status, 202, "{body}");

    let (closed, after) = silent.await.unwrap();
    assert!(closed, "a silent connection stayed open");
    assert!(
        after >= Duration::from_millis(700),
        "closed after {after:?}"
    );

    let (closed, after, got) = slow_head.await.unwrap();
    assert!(closed, "a trickled request head stayed open");
    assert!(
        !got.contains("200 OK"),
        "the trickled head was served: {got}"
    );
    assert!(after < Duration::from_secs(5), "closed after {after:?}");

    let (closed, after, got) = slow_body.await.unwrap();
    assert!(closed, "a trickled body stayed open");
    assert!(got.starts_with("HTTP/1.1 408"), "{got}");
    assert!(got.contains("body_timeout"), "{got}");
    assert!(
        after >= Duration::from_millis(1400) && after < Duration::from_secs(6),
        "closed after {after:?}"
    );

    let (status, closed, idle) = idle_keepalive.await.unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    assert!(closed, "an idle keep-alive connection stayed open");
    assert!(
        idle >= Duration::from_millis(700),
        "closed after {idle:?} idle"
    );

    // And after all that, still served.
    let (status, body) = gw
        .post_event(json!({"type": "user.created", "data": {"id": 2}}))
        .await;
    assert_eq!(status, 202, "{body}");
    gw.stop().await;
}

/// A connection that stops moving bytes is closed by the idle timeout even when the header
/// timeout is far away; one whose request is in a handler is not.
#[tokio::test(flavor = "multi_thread")]
async fn idle_connections_are_closed_after_the_idle_timeout() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.server.header_read_timeout_ms = 60_000;
    config.server.body_timeout_ms = 60_000;
    config.server.idle_timeout_ms = 600;
    let gw = TestGateway::start(config).await;
    let started = Instant::now();
    let mut s = TcpStream::connect(gw.public).await.unwrap();
    // Half a request head, then nothing.
    s.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    let (_, closed) = read_until_closed(&mut s, Duration::from_secs(10)).await;
    let after = started.elapsed();
    assert!(closed, "a stalled connection stayed open");
    assert!(
        after >= Duration::from_millis(550) && after < Duration::from_secs(5),
        "closed after {after:?}"
    );
    gw.stop().await;
}

/// Beyond `max_connections` new connections wait; the admin listener is unaffected; a slot
/// freed lets the next one in.
#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.server.max_connections = 3;
    config.server.header_read_timeout_ms = 60_000;
    config.server.idle_timeout_ms = 60_000;
    let gw = TestGateway::start(config).await;
    let client = unpooled();
    // Three silent connections fill the cap (with the readiness probe's pooled connection, if
    // it is still open, one of them waits in the backlog too).
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(TcpStream::connect(gw.public).await.unwrap());
    }
    let refused = client
        .get(gw.url("/healthz"))
        .timeout(Duration::from_millis(700))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "a connection beyond the cap was served: {refused:?}"
    );
    let (status, body) = gw.admin("GET", "/admin/v1/webhooks", None).await;
    assert_eq!(status, 200, "{body}");
    // Closed by their clients: their slots go to the connections waiting.
    drop(held);
    let status = eventually(Duration::from_secs(10), "a freed slot is used", || async {
        client
            .get(gw.url("/healthz"))
            .timeout(Duration::from_millis(500))
            .send()
            .await
            .ok()
            .map(|r| r.status())
    })
    .await;
    assert_eq!(status, 200);
    gw.stop().await;
}

/// A gateway with a sink (inbound webhooks need one) and an inbound webhook `src` taking
/// `X-API-Key: in-key`.
async fn inbound_gateway(config: hookyard::config::Config, sink: &Receiver) -> TestGateway {
    let mut config = config;
    config.sink.url = sink.url("/hookyard");
    let gw = TestGateway::start(config).await;
    gw.create_webhook(json!({"name": "src",
        "inbound": {"auth": {"type": "api_key", "header": "X-API-Key", "value": "in-key"},
                    "entity": "user", "identify_by": ["email"]}}))
        .await;
    gw.create_webhook(json!({"name": "signed",
        "inbound": {"auth": {"type": "standard_webhooks",
                             "secret": "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"},
                    "entity": "user", "identify_by": ["email"]}}))
        .await;
    gw
}

/// Sends a request head announcing `length` body bytes and no body; returns the answer.
async fn head_only(addr: SocketAddr, path: &str, headers: &str, length: usize) -> (String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {length}\r\n{headers}\r\n"
    );
    s.write_all(head.as_bytes()).await.unwrap();
    read_response(&mut s, Duration::from_secs(10)).await
}

/// An unknown name, a wrong key, and a signed push without its headers get the same 401, before
/// the body is sent; with the right key the body is read with its size limit.
#[tokio::test(flavor = "multi_thread")]
async fn inbound_pushes_are_refused_before_the_body() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let mut config = test_config(dir.path());
    // Long enough that an answer within the read limit cannot come from a timeout.
    config.server.header_read_timeout_ms = 60_000;
    config.server.body_timeout_ms = 60_000;
    let gw = inbound_gateway(config, &sink).await;
    let length = 60_000; // under max_body_bytes (65536): no early 413
    let unknown = head_only(
        gw.public,
        "/v1/inbound/nope",
        "x-api-key: in-key\r\n",
        length,
    )
    .await;
    let wrong = head_only(gw.public, "/v1/inbound/src", "x-api-key: nope\r\n", length).await;
    let missing = head_only(gw.public, "/v1/inbound/src", "", length).await;
    let unsigned = head_only(gw.public, "/v1/inbound/signed", "", length).await;
    let stale = head_only(
        gw.public,
        "/v1/inbound/signed",
        "webhook-id: m1\r\nwebhook-timestamp: 1000\r\nwebhook-signature: v1,AAAA\r\n",
        length,
    )
    .await;
    assert!(unknown.0.starts_with("HTTP/1.1 401"), "{unknown:?}");
    assert!(unknown.1.contains("\"unauthorized\""), "{unknown:?}");
    for other in [&wrong, &missing, &unsigned, &stale] {
        assert_eq!(other, &unknown, "not the same answer as an unknown name");
    }
    // The right key: the body is read, and held to max_body_bytes.
    let (status, body) = send_push(&gw, "src", "in-key", br#"{"email": "a@x.org"}"#.to_vec()).await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = send_push(&gw, "src", "in-key", vec![b' '; 70_000]).await;
    assert_error(status, &body, 413, "body_too_large");
    gw.stop().await;
}

async fn send_push(
    gw: &TestGateway,
    name: &str,
    key: &str,
    body: Vec<u8>,
) -> (axum::http::StatusCode, serde_json::Value) {
    let r = gw
        .client()
        .post(gw.url(&format!("/v1/inbound/{name}")))
        .header("x-api-key", key)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    status_json(r).await
}

/// Past its burst a client address gets 429 with Retry-After; another address does not.
#[tokio::test(flavor = "multi_thread")]
async fn inbound_pushes_are_rate_limited_per_client_address() {
    let dir = temp_dir();
    let sink = Receiver::start().await;
    let mut config = test_config(dir.path());
    config.server.inbound_rate_per_sec = 1;
    config.server.inbound_rate_burst = 3;
    let gw = inbound_gateway(config, &sink).await;
    let push_from = |from: &'static str| {
        let client = reqwest::Client::builder()
            .local_address(Some(from.parse().unwrap()))
            .build()
            .unwrap();
        let url = gw.url("/v1/inbound/src");
        async move {
            client
                .post(url)
                .header("x-api-key", "in-key")
                .header("content-type", "application/json")
                .body(r#"{"email": "a@x.org"}"#)
                .send()
                .await
                .unwrap()
        }
    };
    for i in 0..3 {
        let r = push_from("127.0.0.1").await;
        assert_eq!(r.status(), 202, "push {i}");
    }
    let r = push_from("127.0.0.1").await;
    assert_eq!(r.status(), 429);
    let retry_after: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let (status, body) = status_json(r).await;
    assert_error(status, &body, 429, "rate_limited");
    assert_eq!(
        gw.metric("hookyard_inbound_rate_limited_total").await,
        Some(1.0)
    );
    // Another address has its own bucket (127.0.0.0/8 is all loopback on Linux).
    let r = push_from("127.0.0.2").await;
    assert_eq!(r.status(), 202);
    // Ingest is not rate limited.
    for i in 0..5 {
        let (status, body) = gw
            .post_event(json!({"type": "user.created", "data": {"i": i}}))
            .await;
        assert_eq!(status, 202, "{body}");
    }
    gw.stop().await;
}

/// `admin_listen` equal to `listen`: both APIs on the one address (it used to panic at start).
#[tokio::test(flavor = "multi_thread")]
async fn admin_and_public_on_one_address() {
    let dir = temp_dir();
    let config = test_config(dir.path());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hookyard::run(
        config,
        hookyard::Listeners {
            public: listener,
            admin: None,
        },
        async {
            let _ = rx.await;
        },
    ));
    let api = Api::new(addr, addr);
    eventually(Duration::from_secs(10), "the gateway is ready", || async {
        let r = api.client().get(api.url("/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    let (status, body) = api.admin("GET", "/admin/v1/webhooks", None).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = api
        .post_event(json!({"type": "user.created", "data": {}}))
        .await;
    assert_eq!(status, 202, "{body}");
    let r = api
        .client()
        .get(api.url("/no/such/route"))
        .send()
        .await
        .unwrap();
    let (status, body) = status_json(r).await;
    assert_error(status, &body, 404, "not_found");
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}

/// The binary under `ulimit -n 256` with a config in `dir`; `extra` goes into `[server]`.
fn start_limited(dir: &Path, public: u16, admin: u16, extra: &str) -> Child {
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{public}"
admin_listen = "127.0.0.1:{admin}"
admin_token = "{ADMIN_TOKEN}"
ingest_token = "{INGEST_TOKEN}"
shutdown_grace_secs = 2
{extra}

[store]
url = "sqlite://{}"

[plugins]
cache_dir = "{}"
builtin = []
"#,
        dir.join("hookyard.db").display(),
        dir.join("plugin-cache").display()
    );
    let path = dir.join("hookyard.toml");
    std::fs::write(&path, config).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("ulimit -n 256 && exec \"$0\" serve --config \"$1\"")
        .arg(binary())
        .arg(&path)
        .current_dir(dir)
        .stdin(Stdio::null())
        // The log goes to stdout; a file cannot fill up and block the process as a pipe can.
        .stdout(std::fs::File::create(dir.join("out.log")).unwrap())
        .stderr(std::fs::File::create(dir.join("err.log")).unwrap());
    for (k, _) in std::env::vars() {
        if k.starts_with("HOOKYARD_") {
            cmd.env_remove(k);
        }
    }
    cmd.spawn().unwrap()
}

/// Stops the child with SIGTERM (bounded) and returns its output, log included.
fn stop_child(mut child: Child, dir: &Path) -> String {
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    let deadline = Instant::now() + Duration::from_secs(15);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.wait();
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap_or_default();
    read("out.log") + &read("err.log")
}

/// The API of the child on these ports, once it is ready.
async fn ready_api(public: u16, admin: u16) -> Api {
    let api = Api::new(
        SocketAddr::from(([127, 0, 0, 1], public)),
        SocketAddr::from(([127, 0, 0, 1], admin)),
    );
    eventually(Duration::from_secs(20), "the gateway is ready", || async {
        let r = api.client().get(api.url("/readyz")).send().await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    api
}

/// A client without a connection pool: every request its own connection.
fn unpooled() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap()
}

/// Waits until the public API answers `/healthz` on a fresh connection again.
async fn serves_again(client: &reqwest::Client, api: &Api) {
    eventually(
        Duration::from_secs(30),
        "the public API serves again",
        || async {
            let r = client
                .get(api.url("/healthz"))
                .timeout(Duration::from_secs(2))
                .send()
                .await
                .ok()?;
            r.status().is_success().then_some(())
        },
    )
    .await;
}

/// Opens `n` connections that send nothing.
async fn flood(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        held.push(TcpStream::connect(addr).await.unwrap());
    }
    held
}

/// Under `ulimit -n 256`, 300 silent connections to the public listener: the admin API still
/// answers (the default caps leave it descriptors), and once the header timeout has closed
/// them the public API serves again.
#[tokio::test(flavor = "multi_thread")]
async fn descriptor_exhaustion_spares_the_admin_listener() {
    if on_postgres() {
        // The process under test runs on SQLite either way; once is enough.
        return;
    }
    let dir = temp_dir();
    let (public, admin) = (closed_port(), closed_port());
    let child = start_limited(dir.path(), public, admin, "header_read_timeout_ms = 1500");
    let api = ready_api(public, admin).await;
    let held = flood(api.public, 300).await;
    let (status, body) = api.admin("GET", "/admin/v1/webhooks", None).await;
    assert_eq!(status, 200, "{body}");
    let fresh = unpooled();
    serves_again(&fresh, &api).await;
    drop(held);
    let stderr = stop_child(child, dir.path());
    assert!(!stderr.contains("panicked"), "{stderr}");
}

/// With a cap above the descriptors there are, `accept` fails with EMFILE: the listener backs
/// off, logs it once, and serves again when descriptors are free.
#[tokio::test(flavor = "multi_thread")]
async fn accept_errors_back_off_and_recover() {
    if on_postgres() {
        return;
    }
    let dir = temp_dir();
    let (public, admin) = (closed_port(), closed_port());
    let child = start_limited(
        dir.path(),
        public,
        admin,
        "max_connections = 1000\nheader_read_timeout_ms = 60000\nidle_timeout_ms = 60000",
    );
    let api = ready_api(public, admin).await;
    let held = flood(api.public, 300).await;
    // Connections held in the backlog are not served while every descriptor is taken.
    let fresh = unpooled();
    let starved = fresh
        .get(api.url("/healthz"))
        .timeout(Duration::from_millis(1500))
        .send()
        .await;
    assert!(starved.is_err(), "served with every descriptor taken");
    drop(held);
    serves_again(&fresh, &api).await;
    let errors = api
        .metric("hookyard_accept_errors_total{listener=\"public\"}")
        .await
        .unwrap_or(0.0);
    assert!(errors >= 1.0, "accept errors counted: {errors}");
    let stderr = stop_child(child, dir.path());
    // Once per episode: the flood is one; freeing descriptors one by one may briefly make a
    // second. A listener that spun would log thousands.
    let failures = stderr.matches("accept failed").count();
    assert!(
        (1..=3).contains(&failures),
        "accept failures logged {failures} times: {stderr}"
    );
    assert!(stderr.contains("accepting connections again"), "{stderr}");
}
