//! The admin console's server side: its files with a strict policy, the admin token exchanged
//! for a session cookie, the admin API used with the cookie (CSRF token and Origin required for
//! changes), sign-out, the cookie's flags over TLS, and `/admin/v1/metrics` for the Overview.
//! The screens themselves are tested in a real browser by `scripts/console-test.sh`.

use std::net::SocketAddr;
use std::time::Duration;

use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// A signed-in console: the cookie (`name=value`) and the CSRF token.
struct Session {
    cookie: String,
    csrf: String,
    set_cookie: String,
}

async fn sign_in(http: &reqwest::Client, base: &str, token: &str) -> (StatusCode, Option<Session>) {
    let r = http
        .post(format!("{base}/console/session"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    let status = r.status();
    let set_cookie = r
        .headers()
        .get(SET_COOKIE)
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = r.json().await.unwrap_or(Value::Null);
    let session = set_cookie.map(|set_cookie| Session {
        cookie: set_cookie.split(';').next().unwrap().to_owned(),
        csrf: body["csrf_token"].as_str().unwrap_or_default().to_owned(),
        set_cookie,
    });
    (status, session)
}

/// A request with the session cookie (and optionally the CSRF token and an Origin).
async fn with_cookie(
    http: &reqwest::Client,
    method: &str,
    url: String,
    s: &Session,
    csrf: Option<&str>,
    origin: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http
        .request(method.parse().unwrap(), url)
        .header("cookie", &s.cookie);
    if let Some(csrf) = csrf {
        req = req.header("x-csrf-token", csrf);
    }
    if let Some(origin) = origin {
        req = req.header("origin", origin);
    }
    if let Some(body) = body {
        req = req.json(&body);
    }
    status_json(req.send().await.unwrap()).await
}

fn hook(name: &str) -> Value {
    json!({"name": name, "events": ["user.created"], "url": "http://127.0.0.1:9/x"})
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_is_served_with_a_strict_policy() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let http = no_redirects();

    let r = http.get(gw.admin_url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let h = r.headers().clone();
    assert!(header(&h, "content-type").starts_with("text/html"));
    let csp = header(&h, "content-security-policy");
    for directive in [
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(directive), "{csp}");
    }
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(header(&h, "x-frame-options"), "DENY");
    assert_eq!(header(&h, "x-content-type-options"), "nosniff");
    let page = r.text().await.unwrap();
    assert!(page.contains(r#"<script type="module" src="/console/js/app.js">"#));

    // A module, revalidated by its ETag.
    let r = http
        .get(gw.admin_url("/console/js/app.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(header(r.headers(), "content-type").starts_with("text/javascript"));
    let etag = header(r.headers(), "etag");
    assert!(!etag.is_empty());
    let r = http
        .get(gw.admin_url("/console/js/app.js"))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_MODIFIED);

    // A bookmark of a screen gets the page; an unknown file a JSON 404.
    let r = http
        .get(gw.admin_url("/console/webhooks"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let (status, body) = status_json(
        http.get(gw.admin_url("/console/js/nope.js"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["code"], "not_found");
    let r = http.get(gw.admin_url("/console")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(header(r.headers(), "location"), "/console/");
    // Not on the public listener.
    let r = http.get(gw.url("/console/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_admin_token_is_exchanged_for_a_session_cookie() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let http = no_redirects();
    let base = gw.admin_url("");

    let (status, session) = sign_in(&http, &base, "wrong-token").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(session.is_none(), "no cookie for a wrong token");

    let (status, session) = sign_in(&http, &base, ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    let s = session.unwrap();
    assert_eq!(s.csrf.len(), 43, "32 random bytes");
    let flags: Vec<&str> = s.set_cookie.split("; ").collect();
    assert!(
        s.set_cookie.starts_with("hookyard_console="),
        "{}",
        s.set_cookie
    );
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(flags.contains(&flag), "{flag} missing: {}", s.set_cookie);
    }
    assert!(
        flags.iter().any(|f| f.starts_with("Max-Age=")),
        "{}",
        s.set_cookie
    );
    assert!(!flags.contains(&"Secure"), "plain HTTP: {}", s.set_cookie);

    // The cookie alone reads the admin API, through the same handlers as the token.
    gw.create_webhook(hook("a")).await;
    let (status, body) = with_cookie(
        &http,
        "GET",
        gw.admin_url("/admin/v1/webhooks"),
        &s,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["items"][0]["name"], "a");
    // The page learns its CSRF token again after a reload.
    let (status, body) = with_cookie(
        &http,
        "GET",
        gw.admin_url("/console/session"),
        &s,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["csrf_token"], s.csrf.as_str());
    // Without the cookie nothing.
    let (status, _) = status_json(
        http.get(gw.admin_url("/console/session"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, _) = status_json(
        http.get(gw.admin_url("/admin/v1/webhooks"))
            .header("cookie", "hookyard_console=forged")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // A wrong bearer token is refused even with a valid cookie: the header decides alone.
    let (status, _) = status_json(
        http.get(gw.admin_url("/admin/v1/webhooks"))
            .header("cookie", &s.cookie)
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn changes_need_the_csrf_token_and_the_consoles_origin() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let http = no_redirects();
    let (_, s) = sign_in(&http, &gw.admin_url(""), ADMIN_TOKEN).await;
    let s = s.unwrap();
    let url = gw.admin_url("/admin/v1/webhooks");
    let origin = format!("http://{}", gw.admin);

    let (status, body) = with_cookie(
        &http,
        "POST",
        url.clone(),
        &s,
        None,
        Some(&origin),
        Some(hook("a")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "csrf_failed");
    let (status, body) = with_cookie(
        &http,
        "POST",
        url.clone(),
        &s,
        Some("not-the-token"),
        Some(&origin),
        Some(hook("a")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "csrf_failed");
    for bad_origin in [
        None,
        Some("http://evil.example"),
        Some("https://127.0.0.1:1"),
    ] {
        let (status, body) = with_cookie(
            &http,
            "POST",
            url.clone(),
            &s,
            Some(&s.csrf),
            bad_origin,
            Some(hook("a")),
        )
        .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{bad_origin:?}: {body}");
        assert_eq!(body["error"]["code"], "bad_origin");
    }
    // A browser that says the request is cross-site is refused whatever Origin says.
    let (status, _) = status_json(
        http.post(url.clone())
            .header("cookie", &s.cookie)
            .header("x-csrf-token", &s.csrf)
            .header("origin", &origin)
            .header("sec-fetch-site", "cross-site")
            .json(&hook("a"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Nothing refused was created.
    let (_, list) = gw.admin("GET", "/admin/v1/webhooks", None).await;
    assert_eq!(list["items"], json!([]));

    let (status, body) = with_cookie(
        &http,
        "POST",
        url.clone(),
        &s,
        Some(&s.csrf),
        Some(&origin),
        Some(hook("a")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The API's own errors come through unchanged.
    let (status, body) = with_cookie(
        &http,
        "POST",
        url.clone(),
        &s,
        Some(&s.csrf),
        Some(&origin),
        Some(json!({"name": "b"})),
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn sign_out_ends_the_session() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let http = no_redirects();
    let (_, s) = sign_in(&http, &gw.admin_url(""), ADMIN_TOKEN).await;
    let s = s.unwrap();
    let origin = format!("http://{}", gw.admin);
    let url = gw.admin_url("/console/session");

    let (status, _) =
        with_cookie(&http, "DELETE", url.clone(), &s, None, Some(&origin), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "sign-out is a change too");
    let r = http
        .delete(url.clone())
        .header("cookie", &s.cookie)
        .header("x-csrf-token", &s.csrf)
        .header("origin", &origin)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert!(header(r.headers(), "set-cookie").contains("Max-Age=0"));
    let (status, body) = with_cookie(
        &http,
        "GET",
        gw.admin_url("/admin/v1/webhooks"),
        &s,
        None,
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"]["code"], "session_expired");
    gw.stop().await;
}

/// Sessions end after `console.session_idle_secs` without use.
#[tokio::test(flavor = "multi_thread")]
async fn an_idle_session_expires() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.console.session_idle_secs = 1;
    let gw = TestGateway::start(config).await;
    let http = no_redirects();
    let (_, s) = sign_in(&http, &gw.admin_url(""), ADMIN_TOKEN).await;
    let s = s.unwrap();
    let url = gw.admin_url("/admin/v1/webhooks");
    let (status, _) = with_cookie(&http, "GET", url.clone(), &s, None, None, None).await;
    assert_eq!(status, StatusCode::OK);
    eventually(Duration::from_secs(5), "the session expires", || {
        let (http, url, s) = (&http, url.clone(), &s);
        async move {
            // Each poll is a use: wait a little more than the idle time between them.
            tokio::time::sleep(Duration::from_millis(1100)).await;
            let (status, _) = with_cookie(http, "GET", url, s, None, None, None).await;
            (status == StatusCode::UNAUTHORIZED).then_some(())
        }
    })
    .await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_overview_reads_metrics_through_the_admin_api() {
    let dir = temp_dir();
    let gw = TestGateway::start(test_config(dir.path())).await;
    let r = reqwest::Client::new()
        .get(gw.admin_url("/admin/v1/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let text = r.text().await.unwrap();
    assert!(text.contains("hookyard_queue_depth"), "{text}");
    let r = reqwest::Client::new()
        .get(gw.admin_url("/admin/v1/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    gw.stop().await;
}

/// Without an admin token (loopback only) the admin API is open to local clients, but not to a
/// web page a browser on the machine shows.
#[tokio::test(flavor = "multi_thread")]
async fn without_an_admin_token_cross_site_changes_are_refused() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.server.admin_token = String::new();
    let gw = TestGateway::start(config).await;
    let http = reqwest::Client::new();
    let url = gw.admin_url("/admin/v1/webhooks");
    let r = http
        .post(url.clone())
        .header("origin", "http://evil.example")
        .json(&hook("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(url.clone())
        .header("sec-fetch-site", "cross-site")
        .json(&hook("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = http
        .post(url.clone())
        .json(&hook("a"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED, "curl still works");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_can_be_turned_off() {
    let dir = temp_dir();
    let mut config = test_config(dir.path());
    config.console.enabled = false;
    let gw = TestGateway::start(config).await;
    let r = reqwest::get(gw.admin_url("/console/")).await.unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = reqwest::Client::new()
        .post(gw.admin_url("/console/session"))
        .json(&json!({"token": ADMIN_TOKEN}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    gw.stop().await;
}

/// Over TLS the cookie is `Secure` with the `__Host-` prefix, and the console works on https.
#[tokio::test(flavor = "multi_thread")]
async fn over_tls_the_cookie_is_secure() {
    let dir = temp_dir();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, cert.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    let mut config = test_config(dir.path());
    config.server.tls_cert = cert_file.display().to_string();
    config.server.tls_key = key_file.display().to_string();

    let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr: SocketAddr = admin.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(hookyard::run(
        config,
        hookyard::Listeners {
            public,
            admin: Some(admin),
        },
        async {
            let _ = rx.await;
        },
    ));
    let http = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(cert.pem().as_bytes()).unwrap())
        .resolve("localhost", admin_addr)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = format!("https://localhost:{}", admin_addr.port());
    eventually(Duration::from_secs(10), "the console over TLS", || {
        let (http, url) = (&http, format!("{base}/console/"));
        async move {
            let r = http.get(url).send().await.ok()?;
            r.status().is_success().then_some(())
        }
    })
    .await;

    let (status, s) = sign_in(&http, &base, ADMIN_TOKEN).await;
    assert_eq!(status, StatusCode::OK);
    let s = s.unwrap();
    assert!(
        s.set_cookie.starts_with("__Host-hookyard_console="),
        "{}",
        s.set_cookie
    );
    let flags: Vec<&str> = s.set_cookie.split("; ").collect();
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(flags.contains(&flag), "{flag} missing: {}", s.set_cookie);
    }
    let (status, body) = with_cookie(
        &http,
        "POST",
        format!("{base}/admin/v1/webhooks"),
        &s,
        Some(&s.csrf),
        Some(&base),
        Some(hook("a")),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    // The plain-HTTP origin of the same host is another origin.
    let (status, _) = with_cookie(
        &http,
        "POST",
        format!("{base}/admin/v1/webhooks"),
        &s,
        Some(&s.csrf),
        Some(&format!("http://localhost:{}", admin_addr.port())),
        Some(hook("b")),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let _ = tx.send(());
    task.await.unwrap().unwrap();
}
