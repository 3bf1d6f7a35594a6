//! The admin console: a browser UI at `/console/` on the admin listener.
//!
//! The console is static HTML, CSS and JavaScript modules embedded in the binary ([`assets`]);
//! it has no API of its own. Every screen reads and writes through the admin API
//! (`/admin/v1/...`), the same handlers `curl` uses: the admin middleware
//! (`server::require_admin_token`) accepts either the bearer admin token or a console session
//! cookie, through [`authorize`]. The only routes here are the assets and the session itself:
//!
//! - `POST /console/session` `{"token": "<admin token>"}`: sign in; sets the session cookie
//!   (HttpOnly, SameSite=Strict, Secure under TLS) and answers the CSRF token.
//! - `GET /console/session`: the live session's CSRF token (after a page reload), else 401.
//! - `DELETE /console/session`: sign out (a change: CSRF token and Origin required).
//!
//! Sessions and CSRF tokens are in [`session`]. Every console response carries a strict
//! Content-Security-Policy (no inline script or style, nothing from elsewhere) and
//! `X-Frame-Options: DENY`.

pub mod assets;
pub mod session;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::model::{now_ms, Millis};
use crate::server::error::{body_error, parse_json};
use crate::server::{ApiError, AppState, Shared};
pub use session::Sessions;

/// The console's routes (assets and session), outside the admin token layer.
pub fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route(
            "/console/session",
            get(session_info).post(sign_in).delete(sign_out),
        )
        .route("/console/", get(assets::index))
        .route("/console/{*path}", get(assets::file))
        .layer(axum::middleware::map_response(security_headers))
}

/// The Content-Security-Policy of every console response: scripts, styles and fetches from
/// this origin only, no inline script or style, no frames, no plugins, forms post nowhere else.
pub const CSP: &str =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// Whether a request is a change (needs the CSRF token and the Origin check).
fn is_change(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request comes from the console's own origin: `Origin` is this listener's
/// scheme and `Host`, or one of `console.allowed_origins` (a reverse proxy in front), and the
/// browser does not call it cross-site. `require` makes a missing `Origin` a refusal (browsers
/// send it on every change).
pub fn origin_ok(state: &AppState, headers: &HeaderMap, require: bool) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site") {
            return false;
        }
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return !require;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    if state
        .config
        .console
        .allowed_origins
        .iter()
        .any(|o| o.trim_end_matches('/') == origin)
    {
        return true;
    }
    let scheme = if state.config.server.tls() {
        "https"
    } else {
        "http"
    };
    match headers.get(header::HOST).and_then(|h| h.to_str().ok()) {
        Some(host) => origin == format!("{scheme}://{host}"),
        None => false,
    }
}

/// The admin middleware's verdict on a request that carries a console session cookie and no
/// bearer token; `None` when it has no session cookie.
pub fn authorize(state: &AppState, request: &Request) -> Option<Result<(), ApiError>> {
    let tls = state.config.server.tls();
    let cookie = session::cookie_value(request.headers().get_all(header::COOKIE), tls)?;
    let change = is_change(request.method());
    let csrf = request
        .headers()
        .get(session::CSRF_HEADER)
        .and_then(|v| v.to_str().ok());
    let verdict = match state.console.authorize(cookie, change, csrf, now_ms()) {
        Err(session::Refusal::NoSession) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "session_expired",
            "the console session expired or was signed out; sign in again",
        )),
        Err(session::Refusal::Csrf) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "csrf_failed",
            "a change made with the console session needs its CSRF token in X-CSRF-Token",
        )),
        Ok(()) if change && !origin_ok(state, request.headers(), true) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "a change made with the console session must come from the console's own origin",
        )),
        Ok(()) => Ok(()),
    };
    Some(verdict)
}

/// Body of `POST /console/session`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    /// The admin token (`server.admin_token`).
    pub token: String,
}

/// What the console learns about its session.
#[derive(Debug, Serialize)]
pub struct SessionInfo {
    /// Send it as `X-CSRF-Token` with every change.
    pub csrf_token: String,
    /// When the session ends at the latest, in ms since the epoch.
    pub expires_at: Millis,
    /// The gateway's version.
    pub version: &'static str,
}

impl SessionInfo {
    fn new(view: session::SessionView) -> SessionInfo {
        SessionInfo {
            csrf_token: view.csrf_token,
            expires_at: view.expires_at,
            version: env!("CARGO_PKG_VERSION"),
        }
    }
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn sign_in(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !origin_ok(&state, &headers, false) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_origin",
            "sign in from the console's own origin",
        ));
    }
    let body = body.map_err(body_error)?;
    let SignIn { token } = parse_json(&body)?;
    let expected = &state.config.server.admin_token;
    // No admin token configured (loopback only): the admin API is open, and so is the console.
    let ok = expected.is_empty() || bool::from(token.as_bytes().ct_eq(expected.as_bytes()));
    if !ok {
        tracing::warn!("console sign-in with a wrong admin token");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong_token",
            "that is not the admin token",
        ));
    }
    let (cookie, view) = state.console.create(now_ms());
    let set_cookie = session::set_cookie(
        &cookie,
        state.console.max_age_secs(),
        state.config.server.tls(),
    );
    let mut response = Json(SessionInfo::new(view)).into_response();
    if let Ok(value) = HeaderValue::from_str(&set_cookie) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(no_store(response))
}

async fn session_info(
    State(state): State<Shared>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tls = state.config.server.tls();
    session::cookie_value(headers.get_all(header::COOKIE), tls)
        .and_then(|cookie| state.console.touch(cookie, now_ms()))
        .map(|view| no_store(Json(SessionInfo::new(view)).into_response()))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "no_session", "not signed in"))
}

async fn sign_out(State(state): State<Shared>, request: Request) -> Result<Response, ApiError> {
    match authorize(&state, &request) {
        Some(Ok(())) => {}
        Some(Err(e)) => return Err(e),
        None => {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "no_session",
                "not signed in",
            ))
        }
    }
    let tls = state.config.server.tls();
    if let Some(cookie) = session::cookie_value(request.headers().get_all(header::COOKIE), tls) {
        state.console.remove(cookie);
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    if let Ok(value) = HeaderValue::from_str(&session::clear_cookie(tls)) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    Ok(response)
}
