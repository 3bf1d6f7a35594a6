//! The in-memory view of the configured webhooks that ingest and the workers read.
//!
//! The store is the source of truth; this is a snapshot of it, replaced whole after every change
//! made through this process and on a timer (so changes made through another process sharing the
//! database are seen too). Readers take an `Arc` of the snapshot and never block writers.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use crate::model::{AuthConfig, InboundAuth, InboundConfig, Webhook, WebhookSpec, MASK};
use crate::store::{self, Store};

#[derive(Default)]
struct Snapshot {
    /// In creation order.
    all: Vec<Arc<Webhook>>,
    by_id: HashMap<String, Arc<Webhook>>,
}

/// The current webhooks.
#[derive(Default)]
pub struct WebhookDirectory {
    snapshot: RwLock<Arc<Snapshot>>,
    /// Held from reading the store to replacing the snapshot, so reloads take turns: without it a
    /// reload that read the store before a change could replace the snapshot after a reload that
    /// read it after the change, and the change would be lost until the next reload (events
    /// ingested meanwhile would not fan out to a webhook just created).
    reloading: tokio::sync::Mutex<()>,
}

impl WebhookDirectory {
    /// Loads the directory from the store.
    pub async fn load(store: &dyn Store) -> store::Result<WebhookDirectory> {
        let dir = WebhookDirectory::default();
        dir.reload(store).await?;
        Ok(dir)
    }

    /// Re-reads every webhook from the store.
    pub async fn reload(&self, store: &dyn Store) -> store::Result<()> {
        let _turn = self.reloading.lock().await;
        let hooks = store.webhooks().await?;
        let all: Vec<Arc<Webhook>> = hooks.into_iter().map(Arc::new).collect();
        let by_id = all.iter().map(|h| (h.id.clone(), h.clone())).collect();
        let next = Arc::new(Snapshot { all, by_id });
        match self.snapshot.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    fn current(&self) -> Arc<Snapshot> {
        match self.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// A webhook by id.
    pub fn get(&self, id: &str) -> Option<Arc<Webhook>> {
        self.current().by_id.get(id).cloned()
    }

    /// A webhook by name.
    pub fn named(&self, name: &str) -> Option<Arc<Webhook>> {
        self.current()
            .all
            .iter()
            .find(|h| h.spec.name == name)
            .cloned()
    }

    /// Every enabled webhook, in creation order.
    pub fn enabled(&self) -> Vec<Arc<Webhook>> {
        self.current()
            .all
            .iter()
            .filter(|h| h.spec.enabled)
            .cloned()
            .collect()
    }

    /// The enabled webhooks subscribed to `event_type`.
    pub fn matching(&self, event_type: &str) -> Vec<Arc<Webhook>> {
        self.current()
            .all
            .iter()
            .filter(|h| h.spec.enabled && h.spec.matches(event_type))
            .cloned()
            .collect()
    }
}

/// A webhook definition that failed validation: which field, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct InvalidSpec {
    /// Dotted path of the field.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidSpec {
    InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

/// Checks a webhook definition. `max_timeout_ms` is the longest timeout the lease allows.
pub fn validate(spec: &WebhookSpec, max_timeout_ms: u64) -> Result<(), InvalidSpec> {
    let name_ok = !spec.name.is_empty()
        && spec.name.len() <= 100
        && spec
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !spec.name.starts_with("wh_");
    if !name_ok {
        return Err(invalid(
            "name",
            "must be 1 to 100 of [A-Za-z0-9._-] and not start with wh_",
        ));
    }
    if spec.events.is_empty() {
        return Err(invalid(
            "events",
            "at least one event type or glob is required",
        ));
    }
    for (i, e) in spec.events.iter().enumerate() {
        if e.trim().is_empty() || e.len() > 200 {
            return Err(invalid(
                format!("events[{i}]"),
                "must be 1 to 200 characters",
            ));
        }
    }
    check_http_url("url", &spec.url)?;
    if http::Method::from_bytes(spec.method.as_bytes()).is_err() {
        return Err(invalid("method", "not a valid HTTP method"));
    }
    for (name, value) in &spec.headers {
        let field = format!("headers.{name}");
        let parsed = http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid(&field, "not a valid header name"))?;
        let event_header = spec.event_header.as_deref();
        if let Some(reason) = crate::delivery::headers::reserved(&parsed, &spec.auth, event_header)
        {
            return Err(invalid(&field, reason));
        }
        http::HeaderValue::from_str(value)
            .map_err(|_| invalid(&field, "not a valid header value"))?;
    }
    if let Some(name) = &spec.event_header {
        http::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| invalid("event_header", "not a valid header name"))?;
    }
    validate_auth(&spec.auth)?;
    if let Some(inbound) = &spec.inbound {
        validate_inbound(inbound, spec.plugin.is_some())?;
    }
    if let Some(writeback) = &spec.writeback {
        if writeback.identify_by.is_empty() || writeback.identify_by.iter().any(|f| f.is_empty()) {
            return Err(invalid(
                "writeback.identify_by",
                "must list at least one non-empty field",
            ));
        }
        if writeback.entity.as_deref().is_some_and(str::is_empty) {
            return Err(invalid("writeback.entity", "must not be empty"));
        }
    }
    if let Some(secret) = &spec.signing.secret {
        if crate::delivery::signing::sign(secret, "msg", 0, b"").is_err() {
            return Err(invalid(
                "signing.secret",
                "must be whsec_ followed by base64",
            ));
        }
    }
    if let Some(plugin) = &spec.plugin {
        if plugin.name.trim().is_empty() {
            return Err(invalid("plugin.name", "must not be empty"));
        }
    }
    if !(1..=100).contains(&spec.retry.max_attempts) {
        return Err(invalid("retry.max_attempts", "must be 1 to 100"));
    }
    if spec.timeout_ms == 0 || spec.timeout_ms > max_timeout_ms {
        return Err(invalid(
            "timeout_ms",
            format!("must be 1 to {max_timeout_ms} (delivery.lease_secs less 5 s)"),
        ));
    }
    if spec.max_concurrency == Some(0) {
        return Err(invalid("max_concurrency", "must be at least 1"));
    }
    Ok(())
}

fn check_http_url(field: &str, url: &str) -> Result<(), InvalidSpec> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| invalid(field, format!("not a valid URL: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(invalid(field, "must be an http or https URL with a host"));
    }
    Ok(())
}

fn validate_auth(auth: &AuthConfig) -> Result<(), InvalidSpec> {
    let not_empty = |field: &str, v: &str| {
        if v.is_empty() {
            Err(invalid(format!("auth.{field}"), "must not be empty"))
        } else {
            Ok(())
        }
    };
    match auth {
        AuthConfig::None => {}
        AuthConfig::ApiKey { header, value } => {
            http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| invalid("auth.header", "not a valid header name"))?;
            not_empty("value", value)?;
            http::HeaderValue::from_str(value)
                .map_err(|_| invalid("auth.value", "not a valid header value"))?;
        }
        AuthConfig::Bearer { token } => {
            not_empty("token", token)?;
            http::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| invalid("auth.token", "not a valid header value"))?;
        }
        AuthConfig::Basic { username, .. } => {
            not_empty("username", username)?;
            if username.contains(':') {
                return Err(invalid("auth.username", "must not contain ':'"));
            }
        }
        AuthConfig::Oauth2Password {
            token_url,
            username,
            password,
            ..
        } => {
            check_http_url("auth.token_url", token_url)?;
            not_empty("username", username)?;
            not_empty("password", password)?;
        }
        AuthConfig::Oauth2ClientCredentials {
            token_url,
            client_id,
            client_secret,
            ..
        } => {
            check_http_url("auth.token_url", token_url)?;
            not_empty("client_id", client_id)?;
            not_empty("client_secret", client_secret)?;
        }
    }
    Ok(())
}

fn validate_inbound(inbound: &InboundConfig, has_plugin: bool) -> Result<(), InvalidSpec> {
    if inbound.entity.trim().is_empty() {
        return Err(invalid("inbound.entity", "must not be empty"));
    }
    if !has_plugin
        && (inbound.identify_by.is_empty() || inbound.identify_by.iter().any(|f| f.is_empty()))
    {
        return Err(invalid(
            "inbound.identify_by",
            "must list the body fields that identify a record (or use a plugin)",
        ));
    }
    let not_empty = |field: &str, v: &str| {
        if v.is_empty() {
            Err(invalid(
                format!("inbound.auth.{field}"),
                "must not be empty",
            ))
        } else {
            Ok(())
        }
    };
    match &inbound.auth {
        InboundAuth::ApiKey { header, value } => {
            http::HeaderName::from_bytes(header.as_bytes())
                .map_err(|_| invalid("inbound.auth.header", "not a valid header name"))?;
            not_empty("value", value)?;
        }
        InboundAuth::Bearer { token } => not_empty("token", token)?,
        InboundAuth::Basic { username, password } => {
            not_empty("username", username)?;
            not_empty("password", password)?;
        }
        InboundAuth::StandardWebhooks {
            secret,
            tolerance_secs,
        } => {
            if crate::delivery::signing::sign(secret, "msg", 0, b"").is_err() {
                return Err(invalid(
                    "inbound.auth.secret",
                    "must be whsec_ followed by base64",
                ));
            }
            if !(1..=3600).contains(tolerance_secs) {
                return Err(invalid("inbound.auth.tolerance_secs", "must be 1 to 3600"));
            }
        }
    }
    Ok(())
}

/// Refuses names the gateway keeps for itself.
pub fn check_name_free(name: &str) -> Result<(), InvalidSpec> {
    if name == crate::sink::SINK_WEBHOOK {
        return Err(invalid(
            "name",
            "is reserved for the sink (configured in [sink])",
        ));
    }
    Ok(())
}

/// Fills in what an admin may leave out on update: a secret given as [`MASK`] (or a signing
/// secret left out) keeps the old value, when the auth type is unchanged.
pub fn carry_secrets(new: &mut WebhookSpec, old: &WebhookSpec) {
    if new.auth.kind() == old.auth.kind() {
        let mut old_auth = old.auth.clone();
        let olds = old_auth.secrets_mut();
        // Optional secrets (client_secret) may be absent on one side: pair by position only
        // when both sides have the same shape.
        let news = new.auth.secrets_mut();
        if news.len() == olds.len() {
            for (n, o) in news.into_iter().zip(olds) {
                if n == MASK {
                    *n = o.clone();
                }
            }
        }
    }
    if let (Some(new_in), Some(old_in)) = (new.inbound.as_mut(), old.inbound.as_ref()) {
        if new_in.auth.kind() == old_in.auth.kind() {
            let mut old_auth = old_in.auth.clone();
            for (n, o) in new_in
                .auth
                .secrets_mut()
                .into_iter()
                .zip(old_auth.secrets_mut())
            {
                if n == MASK {
                    *n = o.clone();
                }
            }
        }
    }
    if new.signing.secret.as_deref().is_none_or(|s| s == MASK) {
        new.signing.secret = old.signing.secret.clone();
    }
}

/// Gives a new webhook its signing secret, unless signing is off or a secret was given.
pub fn with_generated_secret(mut spec: WebhookSpec) -> WebhookSpec {
    if spec.signing.enabled && spec.signing.secret.is_none() {
        spec.signing.secret = Some(crate::delivery::signing::generate_secret());
    }
    spec
}
