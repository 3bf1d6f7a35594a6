//! `hookyard check-config`: what the gateway would refuse at start, found without starting it.
//!
//! Beyond what loading the config checks (syntax, types, values), every file the config names
//! must be usable: plugin components (read, and their header checked to be a WebAssembly
//! component, not compiled), the TLS certificate, key and client CA (parsed, as the listeners
//! would), the secret key file, a PostgreSQL `sslrootcert`, the message-bus sources' credential
//! and certificate files; the plugin cache directory must be a directory if it exists; each
//! declared webhook must pass the same validation as at start-up. Every problem is reported,
//! one a line, not only the first.

use std::io::Read as _;
use std::path::Path;

use hookyard::config::Config;

/// The first 8 bytes of a WebAssembly component (magic, then the component layer's version).
const COMPONENT_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00];
/// The first 8 bytes of a core WebAssembly module (version 1).
const MODULE_HEADER: [u8; 8] = [0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00];

/// Every problem found in `config`'s files and declared webhooks; empty when all is well.
pub fn problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, plugin) in config.plugins.load.iter().enumerate() {
        let what = format!("plugins.load[{i}] ({}) path", plugin.name);
        if let Err(e) = component_file(&plugin.path) {
            problems.push(format!("{what} {}: {e}", plugin.path.display()));
        }
    }
    let server = &config.server;
    for (key, path) in [
        ("server.tls_cert", &server.tls_cert),
        ("server.tls_key", &server.tls_key),
        ("server.tls_client_ca", &server.tls_client_ca),
    ] {
        if !path.is_empty() {
            if let Err(e) = readable_file(Path::new(path)) {
                problems.push(format!("{key} {path}: {e}"));
            }
        }
    }
    // The files are there: parse them as the listeners would (a key that does not match the
    // certificate, a file that holds no PEM).
    if problems.iter().all(|p| !p.starts_with("server.tls")) {
        if let Err(e) = hookyard::server::tls::Tls::from_config(server) {
            problems.push(format!("tls: {e}"));
        }
    }
    let store = &config.store;
    if store.secret_key.trim().is_empty() && !store.secret_key_file.is_empty() {
        if let Err(e) = readable_file(Path::new(&store.secret_key_file)) {
            problems.push(format!(
                "store.secret_key_file {}: {e}",
                store.secret_key_file
            ));
        }
    }
    if let Some(root) = url_param(&store.url, "sslrootcert") {
        if let Err(e) = readable_file(Path::new(&root)) {
            problems.push(format!("store.url sslrootcert {root}: {e}"));
        }
    }
    let cache = &config.plugins.cache_dir;
    if cache.exists() && !cache.is_dir() {
        problems.push(format!(
            "plugins.cache_dir {}: exists and is not a directory",
            cache.display()
        ));
    }
    for (i, source) in config.sources.iter().enumerate() {
        for (key, path) in [
            ("credentials_file", &source.credentials_file),
            ("tls_cert_file", &source.tls_cert_file),
            ("tls_key_file", &source.tls_key_file),
            ("tls_ca_file", &source.tls_ca_file),
        ] {
            if let Some(path) = path {
                if let Err(e) = readable_file(path) {
                    problems.push(format!(
                        "sources[{i}] ({}) {key} {}: {e}",
                        source.name,
                        path.display()
                    ));
                }
            }
        }
    }
    for (i, spec) in config.webhooks.iter().enumerate() {
        let checked = hookyard::webhooks::validate(spec, config.max_timeout_ms())
            .and_then(|()| hookyard::webhooks::check_name_free(&spec.name));
        if let Err(e) = checked {
            problems.push(format!("webhooks[{i}] ({}): {e}", spec.name));
        }
        let inbound = spec.inbound.as_ref().is_some_and(|i| i.enabled);
        if inbound && config.sink.url.is_empty() {
            problems.push(format!(
                "webhooks[{i}] ({}): inbound webhooks need a sink: set [sink] url",
                spec.name
            ));
        }
    }
    problems
}

/// A file that exists and can be read.
fn readable_file(path: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    std::fs::File::open(path).map_err(|e| e.to_string())?;
    Ok(())
}

/// A readable file that starts like a WebAssembly component. Nothing is compiled.
fn component_file(path: &Path) -> Result<(), String> {
    readable_file(path)?;
    let mut header = [0u8; 8];
    let mut file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let read = file.read(&mut header).map_err(|e| e.to_string())?;
    match header {
        COMPONENT_HEADER if read == 8 => Ok(()),
        MODULE_HEADER if read == 8 => Err(
            "a core WebAssembly module, not a component (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)"
                .into(),
        ),
        _ => Err("not a WebAssembly component".into()),
    }
}

/// The value of query parameter `name` of a URL, percent-decoded; none when absent.
fn url_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?')?.1;
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}
