//! The console's files, embedded in the binary with `include_str!`: plain HTML, CSS and
//! JavaScript modules under `src/console/assets/`, served as they are (no build step, no
//! network). Each answer carries an `ETag` (SHA-256 of the file) and `Cache-Control: no-cache`,
//! so a browser revalidates and an upgraded gateway never serves stale scripts.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use crate::server::ApiError;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static str,
}

macro_rules! asset {
    ($path:literal, $type:expr) => {
        Asset {
            path: $path,
            content_type: $type,
            body: include_str!(concat!("assets/", $path)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    asset!("index.html", "text/html; charset=utf-8"),
    asset!("style.css", "text/css; charset=utf-8"),
    asset!("js/app.js", JS),
    asset!("js/api.js", JS),
    asset!("js/dom.js", JS),
    asset!("js/charts.js", JS),
    asset!("js/overview.js", JS),
    asset!("js/webhooks.js", JS),
    asset!("js/webhook_form.js", JS),
    asset!("js/mapping.js", JS),
    asset!("js/log.js", JS),
    asset!("js/plugins.js", JS),
    asset!("js/catalog.js", JS),
];

static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|a| {
            let digest = Sha256::digest(a.body.as_bytes());
            let hex: String = digest[..12].iter().map(|b| format!("{b:02x}")).collect();
            format!("\"{hex}\"")
        })
        .collect()
});

/// The total size of the embedded files, in bytes (kept well under 300 KB).
pub fn total_bytes() -> usize {
    ASSETS.iter().map(|a| a.body.len()).sum()
}

fn serve(index: usize, request_headers: &HeaderMap) -> Response {
    let asset = &ASSETS[index];
    let etag = &ETAGS[index];
    let fresh = request_headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut response = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, asset.content_type)], asset.body).into_response()
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(v) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, v);
    }
    response
}

/// `GET /console/`.
pub async fn index(headers: HeaderMap) -> Response {
    serve(0, &headers)
}

/// `GET /console/{*path}`: a file, or the page itself for a path without an extension (a
/// bookmark of a screen).
pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    match ASSETS.iter().position(|a| a.path == path) {
        Some(i) => serve(i, &headers),
        None if !path.contains('.') => serve(0, &headers),
        None => ApiError::not_found("console file").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_console_is_small_and_self_contained() {
        assert!(total_bytes() < 300_000, "{} bytes", total_bytes());
        for a in ASSETS {
            // Nothing fetched from elsewhere, and no inline script the CSP would block.
            // (The SVG namespace is a name, not a link.)
            let body = a.body.replace("http://www.w3.org/2000/svg", "");
            assert!(!body.contains("http://"), "{} links elsewhere", a.path);
            assert!(!body.contains("https://"), "{} links elsewhere", a.path);
            if a.path.ends_with(".html") {
                assert!(!a.body.contains("<script>"), "{} has inline script", a.path);
                assert!(!a.body.contains(" style="), "{} has inline style", a.path);
                assert!(
                    !a.body.contains(" onclick="),
                    "{} has inline handlers",
                    a.path
                );
            }
            assert!(a.content_type == JS || !a.path.ends_with(".js"));
        }
    }

    #[test]
    fn every_module_imported_is_embedded() {
        for a in ASSETS.iter().filter(|a| a.path.ends_with(".js")) {
            for line in a.body.lines().filter(|l| l.starts_with("import ")) {
                let Some(from) = line.split(['"', '\'']).nth(1) else {
                    continue;
                };
                let target = format!("js/{}", from.trim_start_matches("./"));
                assert!(
                    ASSETS.iter().any(|b| b.path == target),
                    "{} imports {from}, which is not embedded",
                    a.path
                );
            }
        }
    }
}
