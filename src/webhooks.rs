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
    /// The shared connections, by name: read with the webhooks, so a webhook using one carries
    /// its credentials in `spec.auth` here (see [`WebhookDirectory::auth_of`]).
    connections: HashMap<String, Arc<crate::connections::Connection>>,
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
        let connections: HashMap<_, _> = store
            .connections()
            .await?
            .into_iter()
            .map(|c| (c.spec.name.clone(), Arc::new(c)))
            .collect();
        let all: Vec<Arc<Webhook>> = hooks
            .into_iter()
            .map(|mut hook| {
                // What reads a webhook's auth here (headers a plugin may not set, the log's
                // redaction) sees its connection's; a missing one leaves `none`, and
                // `auth_of` refuses to send.
                if let Some(connection) = hook.spec.connection.as_ref() {
                    if let Some(connection) = connections.get(connection) {
                        hook.spec.auth = connection.spec.auth.clone();
                    }
                }
                Arc::new(hook)
            })
            .collect();
        let by_id = all.iter().map(|h| (h.id.clone(), h.clone())).collect();
        let next = Arc::new(Snapshot {
            all,
            by_id,
            connections,
        });
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

    /// The credentials `hook` (from this directory) sends now, and the token-cache key they are
    /// cached under ([`crate::connections::token_key`]): its connection's current ones when it
    /// uses one (so an edited connection applies at once, whichever snapshot `hook` came
    /// from), else its own. An error names a connection that does not exist.
    pub fn auth_of(&self, hook: &Webhook) -> Result<(String, AuthConfig), String> {
        let key = crate::connections::token_key(hook);
        match &hook.spec.connection {
            None => Ok((key, hook.spec.auth.clone())),
            Some(name) => match self.current().connections.get(name) {
                Some(connection) => Ok((key, connection.spec.auth.clone())),
                None => Err(format!("connection {name:?} does not exist")),
            },
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

/// The longest an inbound push in `sync` mode may wait for the sink, in milliseconds: callers
/// rarely wait longer, and each waiting push holds a connection.
pub const MAX_SYNC_TIMEOUT_MS: u64 = 120_000;

/// Whether `name` may name a webhook or a connection: it is a path segment
/// (`/v1/inbound/{name}`, `/admin/v1/webhooks/{name}`), so it must not be `.`, `..` or anything
/// else a client or proxy would resolve as a relative path: 1 to 100 of `[A-Za-z0-9._-]`,
/// starting with a letter or digit.
pub fn is_path_segment_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Checks a webhook definition. `max_timeout_ms` is the longest timeout the lease allows.
pub fn validate(spec: &WebhookSpec, max_timeout_ms: u64) -> Result<(), InvalidSpec> {
    let name_ok = is_path_segment_name(&spec.name) && !spec.name.starts_with("wh_");
    if !name_ok {
        return Err(invalid(
            "name",
            "must be 1 to 100 of [A-Za-z0-9._-], start with a letter or digit, and not start with wh_ (a display name with spaces goes in `title`)",
        ));
    }
    if let Some(title) = &spec.title {
        if title.trim().is_empty() || title.chars().count() > 200 {
            return Err(invalid("title", "must be 1 to 200 characters"));
        }
        if title.chars().any(char::is_control) {
            return Err(invalid("title", "must not contain control characters"));
        }
    }
    // An inbound-only webhook (a third party pushes, nothing is sent to it) needs neither
    // events nor a URL; anything else delivers, so it needs both.
    let inbound = spec.inbound.as_ref().is_some_and(|i| i.enabled);
    let inbound_only = inbound && spec.url.is_empty() && spec.events.is_empty();
    if !inbound_only {
        if spec.events.is_empty() {
            let why = if inbound {
                "at least one event type or glob is required with a url (an inbound-only webhook has neither)"
            } else {
                "at least one event type or glob is required (or an enabled inbound side, for an inbound-only webhook)"
            };
            return Err(invalid("events", why));
        }
        if spec.url.is_empty() {
            let why = if inbound {
                "is required with events (an inbound-only webhook has neither)"
            } else {
                "is required (or an enabled inbound side, for an inbound-only webhook)"
            };
            return Err(invalid("url", why));
        }
    }
    for (i, e) in spec.events.iter().enumerate() {
        if e.trim().is_empty() || e.len() > 200 {
            return Err(invalid(
                format!("events[{i}]"),
                "must be 1 to 200 characters",
            ));
        }
    }
    if !inbound_only {
        check_http_url("url", &spec.url)?;
    }
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
    for (i, name) in spec.secret_headers.iter().enumerate() {
        if !spec.headers.keys().any(|h| h.eq_ignore_ascii_case(name)) {
            return Err(invalid(
                format!("secret_headers[{i}]"),
                format!("names no header of `headers` ({name:?})"),
            ));
        }
    }
    for (i, name) in spec.secret_query_params.iter().enumerate() {
        if name.is_empty() {
            return Err(invalid(
                format!("secret_query_params[{i}]"),
                "must not be empty",
            ));
        }
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

/// Checks an outgoing auth definition (a webhook's or a connection's); fields are `auth.*`.
pub fn validate_auth(auth: &AuthConfig) -> Result<(), InvalidSpec> {
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
    if !(1..=MAX_SYNC_TIMEOUT_MS).contains(&inbound.sync_timeout_ms) {
        return Err(invalid(
            "inbound.sync_timeout_ms",
            format!("must be 1 to {MAX_SYNC_TIMEOUT_MS}"),
        ));
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
/// secret left out) keeps the stored value, and a URL sent back as shown (credentials masked)
/// keeps the stored URL.
///
/// A stored secret never follows a new destination: when `url`, `auth.token_url` or the auth
/// type changes, every secret that would be sent there (the auth secrets, the secret headers)
/// must be sent again; a masked one is refused, naming the field. Otherwise an admin who can
/// never read a secret could have it sent to a server of theirs. The signing secret and the
/// inbound secrets are not sent anywhere, so they are kept across such changes.
pub fn carry_secrets(new: &mut WebhookSpec, old: &WebhookSpec) -> Result<(), InvalidSpec> {
    let shown = old.redacted();
    if new.url == shown.url {
        new.url = old.url.clone();
    }
    carry_token_url(&mut new.auth, &old.auth, &old.secret_query_params);
    let moved = if new.auth.kind() != old.auth.kind() {
        Some("the auth type changed")
    } else if new.url != old.url {
        Some("url changed")
    } else if new.auth.token_url() != old.auth.token_url() {
        Some("auth.token_url changed")
    } else {
        None
    };
    carry_auth_secrets(&mut new.auth, &old.auth, moved)?;

    let url_moved = (new.url != old.url).then_some("url changed");
    for (name, value) in new.headers.iter_mut() {
        if value != MASK
            || !new
                .secret_headers
                .iter()
                .any(|h| h.eq_ignore_ascii_case(name))
        {
            continue;
        }
        let field = format!("headers.{name}");
        if let Some(why) = url_moved {
            return Err(must_resend(field, why));
        }
        let stored = old
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name) && old.is_secret_header(n));
        match stored {
            Some((_, stored)) => *value = stored.clone(),
            None => {
                return Err(invalid(
                    field,
                    "masked, but no secret value is stored to keep",
                ))
            }
        }
    }

    if let (Some(new_in), Some(old_in)) = (new.inbound.as_mut(), old.inbound.as_ref()) {
        if new_in.auth.kind() == old_in.auth.kind() {
            let mut old_auth = old_in.auth.clone();
            let olds = old_auth.secret_fields_mut();
            for (name, value) in new_in.auth.secret_fields_mut() {
                if value == MASK {
                    if let Some((_, stored)) = olds.iter().find(|(n, _)| *n == name) {
                        *value = (*stored).clone();
                    }
                }
            }
        }
    }
    if new.signing.secret.as_deref().is_none_or(|s| s == MASK) {
        new.signing.secret = old.signing.secret.clone();
    }
    Ok(())
}

fn must_resend(field: String, why: &str) -> InvalidSpec {
    invalid(
        field,
        format!(
            "{why}: send this secret again (a stored secret is never sent to a new destination)"
        ),
    )
}

/// A token URL sent back as a read shows it (credentials and the `secret_params` masked) keeps
/// the stored one.
pub fn carry_token_url(new: &mut AuthConfig, old: &AuthConfig, secret_params: &[String]) {
    let shown = old
        .token_url()
        .map(|url| crate::secrets::scrub::redact_url(url, secret_params));
    if let (Some(new_url), Some(shown_url), Some(old_url)) =
        (token_url_mut(new), shown.as_deref(), old.token_url())
    {
        if new_url == shown_url {
            *new_url = old_url.to_owned();
        }
    }
}

/// Puts the stored value back into every auth secret sent as [`MASK`]; `moved` says why the
/// secrets may not follow (the destination changed): then a masked secret is refused, naming
/// the field.
pub fn carry_auth_secrets(
    new: &mut AuthConfig,
    old: &AuthConfig,
    moved: Option<&str>,
) -> Result<(), InvalidSpec> {
    let mut old_auth = old.clone();
    let olds = old_auth.secret_fields_mut();
    for (name, value) in new.secret_fields_mut() {
        if value != MASK {
            continue;
        }
        let field = format!("auth.{name}");
        if let Some(why) = moved {
            return Err(must_resend(field, why));
        }
        match olds.iter().find(|(n, _)| *n == name) {
            Some((_, stored)) => *value = (*stored).clone(),
            None => return Err(invalid(field, "masked, but no value is stored to keep")),
        }
    }
    Ok(())
}

fn token_url_mut(auth: &mut AuthConfig) -> Option<&mut String> {
    auth.url_and_secret_fields_mut().0
}

/// Refuses masks left in a spec after [`carry_secrets`]: a masked secret that had nothing to
/// keep (another auth type, a new webhook), a masked header not listed as secret, a URL with a
/// masked credential but otherwise changed. Names the field.
pub fn check_no_masks(spec: &mut WebhookSpec) -> Result<(), InvalidSpec> {
    let leftover = "a masked secret can only be sent back unchanged, for the same auth type \
                    and destination: send the secret itself";
    let is_secret_header = |name: &str| spec.is_secret_header(name);
    for (name, value) in &spec.headers {
        if value == MASK && !is_secret_header(name) {
            return Err(invalid(
                format!("headers.{name}"),
                "a masked value is only kept for headers listed in secret_headers",
            ));
        }
    }
    for field in spec.secret_fields_mut() {
        if field.value.contains(MASK) && (field.is_url || *field.value == MASK) {
            return Err(invalid(field.path, leftover));
        }
    }
    Ok(())
}

/// Gives a new webhook its signing secret, unless signing is off or a secret was given.
pub fn with_generated_secret(mut spec: WebhookSpec) -> WebhookSpec {
    if spec.signing.enabled && spec.signing.secret.is_none() {
        spec.signing.secret = Some(crate::delivery::signing::generate_secret());
    }
    spec
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> WebhookSpec {
        serde_json::from_value(value).unwrap()
    }

    fn stored() -> WebhookSpec {
        spec(json!({
            "name": "h", "events": ["*"], "url": "https://u:pw@h.example/p?token=t",
            "headers": {"X-Static-Token": "hdr"}, "secret_headers": ["X-Static-Token"],
            "auth": {"type": "oauth2_password", "token_url": "https://t.example/token",
                     "username": "alice", "password": "pw", "client_secret": "cs"},
            "signing": {"secret": "whsec_c2VjcmV0"},
            "inbound": {"auth": {"type": "bearer", "token": "in"}}
        }))
    }

    /// What a client sends back after a GET, with `edit` applied to it.
    fn edited(edit: impl FnOnce(&mut serde_json::Value)) -> WebhookSpec {
        let mut shown = serde_json::to_value(stored().redacted()).unwrap();
        edit(&mut shown);
        spec(shown)
    }

    #[test]
    fn masks_sent_back_keep_the_stored_values() {
        let mut new = edited(|_| {});
        carry_secrets(&mut new, &stored()).unwrap();
        assert_eq!(new, stored());
        check_no_masks(&mut new).unwrap();
    }

    #[test]
    fn a_new_destination_needs_the_secrets_again() {
        type Edit = fn(&mut serde_json::Value);
        let cases: [(&str, Edit); 3] = [
            ("auth.password", |v| {
                v["url"] = json!("https://evil.example/")
            }),
            ("auth.password", |v| {
                v["auth"]["token_url"] = json!("https://evil.example/token")
            }),
            ("auth.token", |v| {
                v["auth"] = json!({"type": "bearer", "token": MASK})
            }),
        ];
        for (field, edit) in cases {
            let err = carry_secrets(&mut edited(edit), &stored()).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.message.contains("send this secret again"), "{err}");
        }
        // With the auth secrets sent again, the secret header is next.
        let mut new = edited(|v| {
            v["url"] = json!("https://evil.example/");
            v["auth"]["password"] = json!("new-pw");
            v["auth"]["client_secret"] = json!("new-cs");
        });
        let err = carry_secrets(&mut new, &stored()).unwrap_err();
        assert_eq!(err.field, "headers.X-Static-Token");
        // Everything sent again: accepted; the signing and inbound secrets are kept.
        let mut new = edited(|v| {
            v["url"] = json!("https://new.example/");
            v["auth"]["password"] = json!("new-pw");
            v["auth"]["client_secret"] = json!("new-cs");
            v["headers"]["X-Static-Token"] = json!("new-hdr");
        });
        carry_secrets(&mut new, &stored()).unwrap();
        check_no_masks(&mut new).unwrap();
        assert_eq!(new.signing.secret.as_deref(), Some("whsec_c2VjcmV0"));
        assert_eq!(new.url, "https://new.example/");
    }

    #[test]
    fn leftover_masks_are_refused() {
        let mut new = spec(json!({"name": "h", "events": ["*"], "url": "https://h/",
            "headers": {"X-A": MASK}}));
        assert_eq!(check_no_masks(&mut new).unwrap_err().field, "headers.X-A");
        let mut new =
            spec(json!({"name": "h", "events": ["*"], "url": "https://h/?token=********"}));
        assert_eq!(check_no_masks(&mut new).unwrap_err().field, "url");
        let mut new = spec(json!({"name": "h", "events": ["*"], "url": "https://h/",
            "auth": {"type": "bearer", "token": MASK}}));
        assert_eq!(check_no_masks(&mut new).unwrap_err().field, "auth.token");
    }

    #[test]
    fn inbound_only_webhooks_need_no_events_or_url() {
        let inbound = json!({"auth": {"type": "bearer", "token": "t"}});
        let s = spec(json!({"name": "in", "inbound": inbound}));
        validate(&s, 10_000).unwrap();
        // Half of a delivering webhook is a mistake, not an inbound-only one.
        let s = spec(json!({"name": "in", "inbound": inbound, "url": "https://h/"}));
        assert_eq!(validate(&s, 10_000).unwrap_err().field, "events");
        let s = spec(json!({"name": "in", "inbound": inbound, "events": ["*"]}));
        assert_eq!(validate(&s, 10_000).unwrap_err().field, "url");
        // Neither inbound nor delivery: nothing to do.
        let s = spec(json!({"name": "x"}));
        assert_eq!(validate(&s, 10_000).unwrap_err().field, "events");
        let disabled = json!({"enabled": false, "auth": {"type": "bearer", "token": "t"}});
        let s = spec(json!({"name": "x", "inbound": disabled}));
        assert_eq!(validate(&s, 10_000).unwrap_err().field, "events");
    }

    #[test]
    fn titles_are_free_text() {
        let s = spec(
            json!({"name": "audit", "title": "Audit Service Webhook", "events": ["*"],
            "url": "https://h/"}),
        );
        validate(&s, 10_000).unwrap();
        for bad in ["", "  ", "a\nb"] {
            let s = spec(json!({"name": "a", "title": bad, "events": ["*"], "url": "https://h/"}));
            assert_eq!(validate(&s, 10_000).unwrap_err().field, "title", "{bad:?}");
        }
    }

    #[test]
    fn names_are_not_paths() {
        for name in [".", "..", ".x", "-x", "_x", "a/b", ""] {
            let s = spec(json!({"name": name, "events": ["*"], "url": "https://h/"}));
            assert_eq!(validate(&s, 10_000).unwrap_err().field, "name", "{name:?}");
        }
        for name in ["a", "a.b", "9-x_y.z"] {
            let s = spec(json!({"name": name, "events": ["*"], "url": "https://h/"}));
            validate(&s, 10_000).unwrap();
        }
        let s = spec(json!({"name": "a", "events": ["*"], "url": "https://h/",
            "secret_headers": ["X-Missing"]}));
        assert_eq!(validate(&s, 10_000).unwrap_err().field, "secret_headers[0]");
    }
}
