//! `hookyard plugin upload|activate|list|versions`: the admin API's plugin routes from the
//! command line. The URL and token come from `--url`/`--token` or `HOOKYARD_ADMIN_URL` /
//! `HOOKYARD_ADMIN_TOKEN`; the token is never printed.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use super::AdminArgs;

/// How long an upload may take: the gateway compiles the component before it answers (a Python
/// component: 15-30 s, longer on a busy machine).
const UPLOAD_TIMEOUT: Duration = Duration::from_secs(600);
/// How long any other call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// One admin API call; returns the status and the JSON body.
fn call(
    admin: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<reqwest::Body>,
    timeout: Duration,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    let url = format!("{}{path}", admin.url.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        let mut request = client.request(method, &url);
        if let Some(token) = &admin.token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/wasm")
                .body(body);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the admin API at {}", admin.url))?;
        let status = response.status();
        let text = response.text().await?;
        let json = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((status, json))
    })
}

/// Prints a refusal (the API's `error.message`, else the body); returns `Ok(false)`, or `Err`
/// for an answer that says the command itself is wrong (no token, bad token).
fn refused(status: reqwest::StatusCode, body: &Value) -> anyhow::Result<bool> {
    let message = body["error"]["message"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| body.to_string());
    if status == reqwest::StatusCode::UNAUTHORIZED {
        anyhow::bail!(
            "the admin API refused the token ({status}): set --token or HOOKYARD_ADMIN_TOKEN"
        );
    }
    eprintln!("refused ({status}): {message}");
    Ok(false)
}

/// `plugin upload NAME FILE`.
pub(super) fn upload(admin: &AdminArgs, name: &str, file: &Path) -> anyhow::Result<bool> {
    let wasm = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let size = wasm.len();
    eprintln!(
        "uploading {} ({size} bytes) as plugin {name}; the gateway compiles and checks it...",
        file.display()
    );
    let (status, body) = call(
        admin,
        reqwest::Method::PUT,
        &format!("/admin/v1/plugins/{name}"),
        Some(wasm.into()),
        UPLOAD_TIMEOUT,
    )?;
    if !status.is_success() {
        return refused(status, &body);
    }
    println!(
        "plugin {name} version {} active (sha256 {})",
        body["version"],
        body["sha256"].as_str().unwrap_or("?")
    );
    Ok(true)
}

/// `plugin activate NAME VERSION`.
pub(super) fn activate(admin: &AdminArgs, name: &str, version: u32) -> anyhow::Result<bool> {
    let body = serde_json::json!({ "version": version }).to_string();
    let url = format!("/admin/v1/plugins/{name}/activate");
    let (status, answer) = call_json(admin, reqwest::Method::POST, &url, body)?;
    if !status.is_success() {
        return refused(status, &answer);
    }
    println!("plugin {name} version {version} active");
    Ok(true)
}

fn call_json(
    admin: &AdminArgs,
    method: reqwest::Method,
    path: &str,
    body: String,
) -> anyhow::Result<(reqwest::StatusCode, Value)> {
    call(admin, method, path, Some(body.into()), CALL_TIMEOUT)
}

/// `plugin list`: one line per plugin, `NAME active VERSION (N versions)`.
pub(super) fn list(admin: &AdminArgs) -> anyhow::Result<bool> {
    let (status, body) = call(
        admin,
        reqwest::Method::GET,
        "/admin/v1/plugins",
        None,
        CALL_TIMEOUT,
    )?;
    if !status.is_success() {
        return refused(status, &body);
    }
    let items = body["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no plugins");
    }
    for item in items {
        println!(
            "{}\tactive {}\t{} version(s)",
            item["name"].as_str().unwrap_or("?"),
            item["active"],
            item["versions"].as_array().map_or(0, Vec::len)
        );
    }
    Ok(true)
}

/// `plugin versions NAME`: one line per version, the active one marked.
pub(super) fn versions(admin: &AdminArgs, name: &str) -> anyhow::Result<bool> {
    let (status, body) = call(
        admin,
        reqwest::Method::GET,
        &format!("/admin/v1/plugins/{name}"),
        None,
        CALL_TIMEOUT,
    )?;
    if !status.is_success() {
        return refused(status, &body);
    }
    let active = body["active"].as_u64();
    for v in body["versions"].as_array().cloned().unwrap_or_default() {
        let version = v["version"].as_u64();
        println!(
            "{}{}\tsha256 {}\t{} bytes",
            if version == active && version.is_some() {
                "* "
            } else {
                "  "
            },
            v["version"],
            v["sha256"].as_str().unwrap_or("?"),
            v["size"]
        );
    }
    Ok(true)
}
