//! The records hookyard accepts, stores and serves: webhooks, events, deliveries and attempts.
//!
//! A [`WebhookSpec`] is what an admin writes (the JSON of `product.md`); a [`Webhook`] is a spec
//! the gateway has accepted, with its id and timestamps. Secrets live in the spec in clear text
//! in memory (the store encrypts them, see [`crate::secrets`]) and are only ever shown through
//! [`WebhookSpec::redacted`]. [`WebhookSpec::secret_fields_mut`] is the one list of them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Milliseconds since the Unix epoch. Every timestamp in the store uses it.
pub type Millis = i64;

/// What reads show in place of a secret.
pub const MASK: &str = "********";

/// The current time in [`Millis`].
pub fn now_ms() -> Millis {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_millis() as Millis
}

/// A new, time-ordered id with a short type prefix (`wh_`, `evt_`, `msg_`).
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::now_v7().simple())
}

/// A configured webhook: an accepted [`WebhookSpec`] plus what the gateway keeps about it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Webhook {
    /// Stable id, `wh_...`.
    pub id: String,
    /// The admin's definition.
    #[serde(flatten)]
    pub spec: WebhookSpec,
    /// Creation time.
    pub created_at: Millis,
    /// Last change, by an admin or by the gateway (410 disables a webhook).
    pub updated_at: Millis,
}

/// A webhook as an admin defines it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookSpec {
    /// Unique, URL-safe name (`[A-Za-z0-9._-]`, 1 to 100 characters): the key in URLs and
    /// the config.
    pub name: String,
    /// A free display name (`Audit Service Webhook`), up to 200 characters; spaces allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Free text for admins.
    #[serde(default)]
    pub description: String,
    /// Disabled webhooks receive no new deliveries and send none of their pending ones.
    #[serde(default = "default_true")]
    #[schema(default = true)]
    pub enabled: bool,
    /// Event types, exact (`user.created`) or globs (`user.*`, `*`). Required unless the
    /// webhook is inbound only (`inbound.enabled` and no `url`).
    #[serde(default)]
    pub events: Vec<String>,
    /// Where deliveries go (http or https). Required unless the webhook is inbound only.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub url: String,
    /// HTTP method of deliveries.
    #[serde(default = "default_method")]
    #[schema(default = "POST")]
    pub method: String,
    /// Static headers added to every delivery.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Names of `headers` whose values are secret (case-insensitive): write-only, masked in
    /// the API, the Webhook Log and logs, encrypted at rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_headers: Vec<String>,
    /// Query parameters of `url` whose values are secret, besides those secret by name
    /// (`token`, `key`, `secret`, `signature`, `password`, `auth`...): masked where the URL is
    /// shown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secret_query_params: Vec<String>,
    /// Header that carries the event type, with dots turned into underscores
    /// (`X-Defguard-Event: user_created`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_header: Option<String>,
    /// How hookyard authenticates to the receiver.
    #[serde(default)]
    pub auth: AuthConfig,
    /// A shared connection whose credentials this webhook sends, in place of `auth` (see
    /// [`crate::connections`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Standard Webhooks signing.
    #[serde(default)]
    pub signing: SigningConfig,
    /// The plugin that shapes this webhook's requests (none: the default body).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<PluginRef>,
    /// Inbound side: a third party pushing to `POST /v1/inbound/{name}` (two-way sync).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inbound: Option<InboundConfig>,
    /// Response write-back: turns on the plugin's response phase for this webhook, and says how
    /// the fields it maps from a successful delivery's response are addressed when they go to the
    /// sink. Without it the response phase is not called (`writeback = {}` takes the defaults).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub writeback: Option<WritebackConfig>,
    /// Retry policy.
    #[serde(default)]
    pub retry: RetryPolicy,
    /// Timeout of one attempt, connect to last byte.
    #[serde(default = "default_timeout_ms")]
    #[schema(default = 10000)]
    pub timeout_ms: u64,
    /// How many deliveries to this webhook may be in flight at once (none: the gateway default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrency: Option<u32>,
}

fn default_true() -> bool {
    true
}
fn default_method() -> String {
    "POST".to_owned()
}
fn default_timeout_ms() -> u64 {
    10_000
}

/// How hookyard authenticates its deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuthConfig {
    /// No credentials.
    #[default]
    None,
    /// A fixed header, `X-API-Key: value` by default.
    ApiKey {
        /// Header name.
        #[serde(default = "default_api_key_header")]
        header: String,
        /// Header value (secret).
        value: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token (secret).
        token: String,
    },
    /// `Authorization: Basic ...`.
    Basic {
        /// User name.
        username: String,
        /// Password (secret).
        password: String,
    },
    /// OAuth2 resource-owner password grant (RFC 6749 §4.3).
    Oauth2Password {
        /// Token endpoint.
        token_url: String,
        /// Resource owner's user name.
        username: String,
        /// Resource owner's password (secret).
        password: String,
        /// Client id, if the server wants one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_id: Option<String>,
        /// Client secret (secret).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_secret: Option<String>,
        /// Space-separated scopes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
    /// OAuth2 client-credentials grant (RFC 6749 §4.4).
    Oauth2ClientCredentials {
        /// Token endpoint.
        token_url: String,
        /// Client id.
        client_id: String,
        /// Client secret (secret).
        client_secret: String,
        /// Space-separated scopes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scope: Option<String>,
    },
}

fn default_api_key_header() -> String {
    "X-API-Key".to_owned()
}

impl AuthConfig {
    /// The `type` tag, for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            AuthConfig::None => "none",
            AuthConfig::ApiKey { .. } => "api_key",
            AuthConfig::Bearer { .. } => "bearer",
            AuthConfig::Basic { .. } => "basic",
            AuthConfig::Oauth2Password { .. } => "oauth2_password",
            AuthConfig::Oauth2ClientCredentials { .. } => "oauth2_client_credentials",
        }
    }

    /// Every secret field, mutably: masking and carrying secrets over on update both walk these.
    pub fn secrets_mut(&mut self) -> Vec<&mut String> {
        self.secret_fields_mut()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Every secret field with its name (`password`, `client_secret`...), mutably.
    pub fn secret_fields_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        self.url_and_secret_fields_mut().1
    }

    /// The token URL (OAuth2 types) and every secret field with its name, mutably at once.
    pub fn url_and_secret_fields_mut(
        &mut self,
    ) -> (Option<&mut String>, Vec<(&'static str, &mut String)>) {
        match self {
            AuthConfig::None => (None, vec![]),
            AuthConfig::ApiKey { value, .. } => (None, vec![("value", value)]),
            AuthConfig::Bearer { token } => (None, vec![("token", token)]),
            AuthConfig::Basic { password, .. } => (None, vec![("password", password)]),
            AuthConfig::Oauth2Password {
                token_url,
                password,
                client_secret,
                ..
            } => {
                let mut v = vec![("password", password)];
                v.extend(client_secret.as_mut().map(|s| ("client_secret", s)));
                (Some(token_url), v)
            }
            AuthConfig::Oauth2ClientCredentials {
                token_url,
                client_secret,
                ..
            } => (Some(token_url), vec![("client_secret", client_secret)]),
        }
    }

    /// The OAuth2 token endpoint, for the types that have one.
    pub fn token_url(&self) -> Option<&str> {
        match self {
            AuthConfig::Oauth2Password { token_url, .. }
            | AuthConfig::Oauth2ClientCredentials { token_url, .. } => Some(token_url),
            _ => None,
        }
    }
}

/// The inbound side of a webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundConfig {
    /// Accept pushes (on by default once the section exists).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// How the caller proves who it is. Required: no configured secret means no access.
    pub auth: InboundAuth,
    /// The internal entity the records are about (`user`, `location`).
    #[serde(default = "default_entity")]
    pub entity: String,
    /// Create records that do not exist yet: records go to the sink as `upsert`, not `update`.
    #[serde(default)]
    pub jit_provisioning: bool,
    /// Without a plugin: the body fields that identify the record.
    #[serde(default = "default_identify_by")]
    pub identify_by: Vec<String>,
    /// When the caller is answered: `async` (the default) answers 202 once the records are
    /// stored, before the sink is asked; `sync` waits for the sink and answers with its verdict.
    #[serde(default)]
    pub mode: InboundMode,
    /// In `sync` mode, how long to wait for the sink before answering 504 (the sink delivery
    /// stays queued and is still delivered), in milliseconds.
    #[serde(default = "default_sync_timeout_ms")]
    pub sync_timeout_ms: u64,
}

/// When an inbound push is answered.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InboundMode {
    /// 202 once the records are committed, before the sink is asked: the caller never learns
    /// the sink's answer (an unknown record becomes a dead sink delivery in the Webhook Log).
    #[default]
    Async,
    /// The records are committed, then the answer waits for the sink's: its 2xx as 200 (or
    /// 201), its refusal (404 for an unknown record, 409, 422...) as is; 504 after
    /// `sync_timeout_ms`, while the sink delivery stays queued.
    Sync,
}

fn default_sync_timeout_ms() -> u64 {
    10_000
}

fn default_entity() -> String {
    "record".to_owned()
}

fn default_identify_by() -> Vec<String> {
    vec!["id".to_owned()]
}

/// How an inbound caller authenticates.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum InboundAuth {
    /// A header carrying a shared key.
    ApiKey {
        /// Header name.
        #[serde(default = "default_api_key_header")]
        header: String,
        /// The key (secret).
        value: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer {
        /// The token (secret).
        token: String,
    },
    /// `Authorization: Basic ...`.
    Basic {
        /// User name.
        username: String,
        /// Password (secret).
        password: String,
    },
    /// A Standard Webhooks signature (`webhook-id`, `webhook-timestamp`, `webhook-signature`).
    StandardWebhooks {
        /// `whsec_...` (secret).
        secret: String,
        /// Largest accepted clock difference, in seconds.
        #[serde(default = "default_tolerance")]
        tolerance_secs: i64,
    },
}

fn default_tolerance() -> i64 {
    300
}

impl InboundAuth {
    /// Every secret field, mutably.
    pub fn secrets_mut(&mut self) -> Vec<&mut String> {
        self.secret_fields_mut()
            .into_iter()
            .map(|(_, v)| v)
            .collect()
    }

    /// Every secret field with its name, mutably.
    pub fn secret_fields_mut(&mut self) -> Vec<(&'static str, &mut String)> {
        match self {
            InboundAuth::ApiKey { value, .. } => vec![("value", value)],
            InboundAuth::Bearer { token } => vec![("token", token)],
            InboundAuth::Basic { password, .. } => vec![("password", password)],
            InboundAuth::StandardWebhooks { secret, .. } => vec![("secret", secret)],
        }
    }

    /// The `type` tag.
    pub fn kind(&self) -> &'static str {
        match self {
            InboundAuth::ApiKey { .. } => "api_key",
            InboundAuth::Bearer { .. } => "bearer",
            InboundAuth::Basic { .. } => "basic",
            InboundAuth::StandardWebhooks { .. } => "standard_webhooks",
        }
    }
}

/// How write-backs from a webhook's responses address the internal record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WritebackConfig {
    /// The entity; default: the inbound entity, else the event type's first segment
    /// (`user.created` -> `user`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    /// Event data fields that identify the record, as the event identified it; default `["id"]`.
    #[serde(default = "default_identify_by")]
    pub identify_by: Vec<String>,
}

/// What hookyard sends to the internal system's sink: one change to one record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SinkMessage {
    /// The webhook it came from (name).
    pub webhook: String,
    /// The webhook's id.
    pub webhook_id: String,
    /// Where it came from: `response` (a write-back) or `inbound` (a third party's push).
    pub source: String,
    /// The entity (`user`, `location`).
    pub entity: String,
    /// `update`, or `upsert` under JIT provisioning.
    pub operation: String,
    /// The fields that identify the record.
    pub identifiers: Value,
    /// The mapped fields.
    pub fields: Value,
    /// For write-backs: the event whose delivery was answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
}

/// Standard Webhooks signing of deliveries.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SigningConfig {
    /// Sign deliveries (on by default).
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// `whsec_<base64>`; generated when a webhook is created without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
}

impl Default for SigningConfig {
    fn default() -> Self {
        SigningConfig {
            enabled: true,
            secret: None,
        }
    }
}

/// Which plugin shapes a webhook's payloads.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRef {
    /// Registered plugin name (for example `field-map`).
    pub name: String,
    /// Pinned version; none follows the plugin's active version.
    #[serde(default)]
    pub version: Option<u32>,
    /// Plugin-specific configuration, checked by the plugin's `validate-config`.
    #[serde(default)]
    pub config: Value,
    /// What happens to a delivery when the plugin call fails (trap, time or memory limit,
    /// plugin error). An `invalid-input` error (the event cannot be mapped, and never will be)
    /// is not retried: with `retry` it goes dead at once.
    #[serde(default)]
    pub on_error: PluginFailure,
    /// `fresh`: a new plugin instance for every call of this webhook, for plugins that must
    /// not keep state between calls; `warm` (the default): instances are reused, within the
    /// limits of `[plugins.instances]`.
    #[serde(default, skip_serializing_if = "Instances::is_warm")]
    pub instances: Instances,
}

/// Whether plugin instances are reused between calls.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Instances {
    /// Reused across calls of one webhook (linear memory persists between calls).
    #[default]
    Warm,
    /// A new instance for every call.
    Fresh,
}

impl Instances {
    /// Whether this is the default, `warm`.
    pub fn is_warm(&self) -> bool {
        *self == Instances::Warm
    }
}

/// What a failed plugin call does to its delivery.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PluginFailure {
    /// Count it as a failed attempt and retry later (a fixed plugin version may succeed).
    #[default]
    Retry,
    /// Give up on the delivery at once: it is `dead`.
    DeadLetter,
    /// Do not send it: it is `skipped`.
    Skip,
}

/// When to give up on a delivery.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts before the delivery is `dead`, the first included.
    #[serde(default = "default_max_attempts")]
    #[schema(default = 8)]
    pub max_attempts: u32,
}

fn default_max_attempts() -> u32 {
    8
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: default_max_attempts(),
        }
    }
}

/// One secret field of a [`WebhookSpec`], as [`WebhookSpec::secret_fields_mut`] lists it.
#[derive(Debug)]
pub struct SecretField<'a> {
    /// Its dotted path (`auth.password`, `headers.X-Static-Token`).
    pub path: String,
    /// Its value.
    pub value: &'a mut String,
    /// A URL: secret only in part (userinfo, secret query values), so masked with
    /// [`crate::secrets::scrub::redact_url`] and encrypted only when it holds credentials.
    pub is_url: bool,
}

impl WebhookSpec {
    /// Whether header `name` is listed in `secret_headers`.
    pub fn is_secret_header(&self, name: &str) -> bool {
        self.secret_headers
            .iter()
            .any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Every field that holds or may hold a secret: the auth and inbound auth secrets, the
    /// signing secret, the static headers listed in `secret_headers`, and the URLs (`url`,
    /// `auth.token_url`) that may carry credentials.
    pub fn secret_fields_mut(&mut self) -> Vec<SecretField<'_>> {
        fn field(path: String, value: &mut String, is_url: bool) -> SecretField<'_> {
            SecretField {
                path,
                value,
                is_url,
            }
        }
        let mut fields = Vec::new();
        // An inbound-only webhook has no URL (and nothing to mask in it).
        if !self.url.is_empty() {
            fields.push(field("url".to_owned(), &mut self.url, true));
        }
        let secret_headers = &self.secret_headers;
        for (name, value) in self.headers.iter_mut() {
            if secret_headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                fields.push(field(format!("headers.{name}"), value, false));
            }
        }
        let (token_url, secrets) = self.auth.url_and_secret_fields_mut();
        if let Some(url) = token_url {
            fields.push(field("auth.token_url".to_owned(), url, true));
        }
        for (name, value) in secrets {
            fields.push(field(format!("auth.{name}"), value, false));
        }
        if let Some(inbound) = self.inbound.as_mut() {
            for (name, value) in inbound.auth.secret_fields_mut() {
                fields.push(field(format!("inbound.auth.{name}"), value, false));
            }
        }
        if let Some(secret) = self.signing.secret.as_mut() {
            fields.push(field("signing.secret".to_owned(), secret, false));
        }
        fields
    }

    /// A copy safe to show: every secret replaced by [`MASK`], credentials in URLs masked.
    pub fn redacted(&self) -> WebhookSpec {
        let mut spec = self.clone();
        let params = spec.secret_query_params.clone();
        for field in spec.secret_fields_mut() {
            *field.value = if field.is_url {
                crate::secrets::scrub::redact_url(field.value, &params)
            } else {
                MASK.to_owned()
            };
        }
        spec
    }

    /// Whether this webhook subscribes to `event_type`.
    pub fn matches(&self, event_type: &str) -> bool {
        self.events.iter().any(|p| glob_match(p, event_type))
    }
}

impl Webhook {
    /// A copy safe to show: every secret replaced by [`MASK`].
    pub fn redacted(&self) -> Webhook {
        Webhook {
            spec: self.spec.redacted(),
            ..self.clone()
        }
    }
}

/// Matches `text` against `pattern`, where `*` stands for any run of characters (dots included).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position of the last `*` and of the text it was matched against, for backtracking.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// JSON text kept as it was received: an event's `data` and `context` go from the request body
/// to the store, the plugin and the delivered body without being parsed into a tree, so key
/// order, number formatting and the precision of large numbers pass through unchanged, and
/// nothing is allocated per key. Well-formed by construction (parsed once, on the way in).
#[derive(Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Json(Box<serde_json::value::RawValue>);

impl Json {
    /// `null`.
    pub fn null() -> Json {
        Json::from(&Value::Null)
    }

    /// The JSON text.
    pub fn get(&self) -> &str {
        self.0.get()
    }

    /// Parses the text into a tree, for the rare reader that needs to look inside (write-back
    /// identifiers). The text is well-formed, so this cannot fail; `null` if it ever did.
    pub fn to_value(&self) -> Value {
        serde_json::from_str(self.get()).unwrap_or(Value::Null)
    }
}

impl From<&Value> for Json {
    fn from(value: &Value) -> Json {
        // A `Value` always serialises: its map keys are strings.
        Json(serde_json::value::to_raw_value(value).expect("a Value serialises"))
    }
}

impl From<Value> for Json {
    fn from(value: Value) -> Json {
        Json::from(&value)
    }
}

/// Text equality: the same JSON written differently (`1.0` and `1`, other key order) differs.
impl PartialEq for Json {
    fn eq(&self, other: &Json) -> bool {
        self.get() == other.get()
    }
}

/// Equality of the parsed value, for tests that compare with `json!`.
impl PartialEq<Value> for Json {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl std::fmt::Debug for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.get())
    }
}

/// An event as posted to `POST /v1/events`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewEvent {
    /// Idempotency key; generated when absent. A repeated id is not enqueued again.
    #[serde(default)]
    pub id: Option<String>,
    /// Event type, for example `user.created`.
    #[serde(rename = "type")]
    pub event_type: String,
    /// The event's payload.
    #[schema(value_type = serde_json::Value)]
    pub data: Json,
    /// Extra context (who did it, which tenant...), passed through.
    #[serde(default)]
    #[schema(value_type = Option<serde_json::Value>)]
    pub context: Option<Json>,
    /// When it happened (RFC 3339); the time of receipt when absent.
    #[serde(default, with = "time::serde::rfc3339::option")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub occurred_at: Option<time::OffsetDateTime>,
}

/// An accepted event.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Event {
    /// The idempotency key (given or generated).
    pub id: String,
    /// Event type.
    #[serde(rename = "type")]
    pub event_type: String,
    /// Payload.
    pub data: Json,
    /// Context (`null` when none was given).
    pub context: Json,
    /// When it happened.
    pub occurred_at: Millis,
    /// When hookyard accepted it.
    pub received_at: Millis,
}

/// An event to commit together with the deliveries it fans out to.
#[derive(Debug, Clone)]
pub struct EventToIngest {
    /// The event.
    pub event: Event,
    /// Ids of the webhooks that get a delivery, each with the new delivery's id.
    pub deliveries: Vec<(String, String)>,
    /// Commit the deliveries already leased to this worker, which starts them itself as soon as
    /// the commit returns (no claim). None: they are committed free, for any worker to claim.
    pub lease: Option<Lease>,
}

/// A lease on deliveries: who holds it and until when. After `until` any worker may claim them
/// again, so deliveries leased by a process that died are sent by another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The worker (process) holding it.
    pub owner: String,
    /// When it runs out.
    pub until: Millis,
}

/// What the store did with one ingested event.
#[derive(Debug, Clone, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct IngestResult {
    /// The event id.
    pub id: String,
    /// How many deliveries the event has.
    pub deliveries: usize,
    /// True when the id was already known: nothing new was enqueued.
    pub duplicate: bool,
}

/// Where a delivery is in its life. See `store` for the state machine.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (possibly leased by a worker right now).
    Pending,
    /// A 2xx answer was received.
    Succeeded,
    /// Given up: attempts exhausted, a non-retryable answer, or the webhook is gone.
    Dead,
    /// The webhook's plugin chose not to send it.
    Skipped,
}

impl DeliveryStatus {
    /// The name used in the API and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Skipped => "skipped",
        }
    }

    /// Parses [`DeliveryStatus::as_str`].
    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "succeeded" => DeliveryStatus::Succeeded,
            "dead" => DeliveryStatus::Dead,
            "skipped" => DeliveryStatus::Skipped,
            _ => return None,
        })
    }
}

/// One event on its way to one webhook.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Delivery {
    /// Stable id, `msg_...`; sent as `webhook-id` on every attempt.
    pub id: String,
    /// The event delivered.
    pub event_id: String,
    /// The event's type (copied so the log can filter on it).
    pub event_type: String,
    /// The webhook it goes to.
    pub webhook_id: String,
    /// Where it is in its life.
    pub status: DeliveryStatus,
    /// Attempts made, across replays: as many as the Webhook Log holds for it.
    pub attempts: u32,
    /// Attempts made since it was created or last replayed: what `retry.max_attempts` limits.
    pub attempts_since_replay: u32,
    /// When the next attempt is due (pending only; Unix ms).
    #[schema(value_type = Option<i64>)]
    pub next_attempt_at: Option<Millis>,
    /// HTTP status of the last attempt, if one was received.
    pub last_status: Option<u16>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// Creation time (Unix ms).
    #[schema(value_type = i64)]
    pub created_at: Millis,
    /// Last change (Unix ms).
    #[schema(value_type = i64)]
    pub updated_at: Millis,
    /// Where it comes from: an event to a webhook, a message to the sink, a refused inbound
    /// push, or a test send.
    #[serde(default)]
    pub source: DeliverySource,
    /// For a sink message or a refused inbound push: the id of the webhook it came from.
    #[serde(default)]
    pub origin: Option<String>,
}

/// Event type of a refused inbound push as the Webhook Log keeps it (see
/// [`crate::server::inbound_log`]).
pub const REFUSED_INBOUND_EVENT: &str = "hookyard.inbound.refused";

/// Event type of a message a bus source dead-lettered, as the Webhook Log keeps it (see
/// [`crate::source::dead_letters`]). Logged with source `inbound` (refused on the way in) and
/// origin `source:<name>`.
pub const DEAD_LETTERED_EVENT: &str = "hookyard.source.dead_lettered";

/// The origin the Webhook Log gives the dead-lettered messages of the bus source `name`.
pub fn bus_origin(name: &str) -> String {
    format!("source:{name}")
}

/// Where a delivery comes from, as the Webhook Log filters it (`source=`).
#[derive(
    Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq, Hash, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum DeliverySource {
    /// An event delivered to a webhook.
    #[default]
    Webhook,
    /// A message to the internal system: a write-back or an accepted inbound record.
    Sink,
    /// A refused inbound push, or a message a bus source dead-lettered, logged with its reason
    /// (never sent anywhere).
    Inbound,
    /// A test send (`POST /admin/v1/webhooks/{id}/test`).
    Test,
}

impl DeliverySource {
    /// The name used in the API and in the store.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliverySource::Webhook => "webhook",
            DeliverySource::Sink => "sink",
            DeliverySource::Inbound => "inbound",
            DeliverySource::Test => "test",
        }
    }

    /// Parses [`DeliverySource::as_str`].
    pub fn parse(s: &str) -> Option<DeliverySource> {
        Some(match s {
            "webhook" => DeliverySource::Webhook,
            "sink" => DeliverySource::Sink,
            "inbound" => DeliverySource::Inbound,
            "test" => DeliverySource::Test,
            _ => return None,
        })
    }

    /// The source and origin of an event's deliveries, from the event alone, so that every
    /// path into the store (ingest, write-backs, inbound, the log of refused pushes) gets them
    /// without saying: `hookyard.sink.*` events are sink messages (origin: the `webhook_id` of
    /// their data), [`REFUSED_INBOUND_EVENT`] is a refused push (origin likewise),
    /// [`DEAD_LETTERED_EVENT`] a dead-lettered bus message (source `inbound`, origin
    /// [`bus_origin`] of the `source` of its data), and everything else goes to a webhook. (A test send is told by its delivery id:
    /// [`is_test_delivery`].)
    pub fn of(event: &Event) -> (DeliverySource, Option<String>) {
        let origin = || {
            #[derive(Deserialize)]
            struct Origin {
                webhook_id: Option<String>,
            }
            serde_json::from_str::<Origin>(event.data.get())
                .ok()
                .and_then(|o| o.webhook_id)
                .filter(|id| !id.is_empty())
        };
        if event.event_type.starts_with("hookyard.sink.") {
            return (DeliverySource::Sink, origin());
        }
        if event.event_type == REFUSED_INBOUND_EVENT {
            return (DeliverySource::Inbound, origin());
        }
        if event.event_type == DEAD_LETTERED_EVENT {
            #[derive(Deserialize)]
            struct Source {
                source: String,
            }
            let source = serde_json::from_str::<Source>(event.data.get())
                .ok()
                .map(|s| bus_origin(&s.source));
            return (DeliverySource::Inbound, source);
        }
        (DeliverySource::Webhook, None)
    }
}

/// The end of a test send's delivery id. The gateway makes every delivery id, so no caller can
/// mark a delivery as a test: a test is one attempt, never retried, and logged as `source = test`.
pub const TEST_DELIVERY_SUFFIX: &str = "_test";

/// Whether a delivery is a test send (`POST /admin/v1/webhooks/{id}/test`).
pub fn is_test_delivery(delivery_id: &str) -> bool {
    delivery_id.ends_with(TEST_DELIVERY_SUFFIX)
}

/// The plugin version that shaped an attempt's request.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct PluginUsed {
    /// Plugin name.
    pub name: String,
    /// Version number.
    pub version: u32,
}

/// A delivery written to the Webhook Log already finished, with its event and attempts, in one
/// transaction: a refused inbound push (see [`crate::store::Store::log_delivery`]).
#[derive(Debug, Clone)]
pub struct LoggedDelivery {
    /// The event (stored like any other; its type and data give the source and origin).
    pub event: Event,
    /// The delivery's id (`msg_...`).
    pub delivery_id: String,
    /// The webhook it concerns; empty when there is none (a push to an unknown name).
    pub webhook_id: String,
    /// Its final status (never pending: nothing ever sends it).
    pub status: DeliveryStatus,
    /// Its attempts, in order.
    pub attempts: Vec<Attempt>,
}

/// A delivery handed to a worker by [`crate::store::Store::claim`], with what it needs to send it.
#[derive(Debug, Clone)]
pub struct Job {
    /// The delivery.
    pub delivery: Delivery,
    /// Its event.
    pub event: Event,
    /// The number the next attempt will carry in the log (1 for the first ever).
    pub attempt_no: u32,
}

/// A request as the Webhook Log shows it: secrets redacted, body truncated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default, utoipa::ToSchema)]
pub struct RequestLog {
    /// Method.
    pub method: String,
    /// URL.
    pub url: String,
    /// Headers, with credentials and signatures redacted.
    pub headers: Vec<(String, String)>,
    /// Body (truncated to the configured size).
    pub body: String,
    /// Set when the body is one the gateway can make again from the delivery's event, byte
    /// for byte: the log then stores no copy of it and fills it in when it is read
    /// ([`RequestLog::fill_body`]). A delivery without a plugin sends exactly that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_from: Option<BodyFrom>,
}

/// Where a logged request body comes from when the log keeps no copy of it.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BodyFrom {
    /// The default envelope of the event (`{"type", "timestamp", "data", "context"}`).
    EventEnvelope,
    /// The event's `data` as it was sent in (messages to the sink).
    EventData,
}

impl RequestLog {
    /// This log with its body left out when the body can be made again from the event: what
    /// the store keeps.
    pub fn for_storage(&self) -> std::borrow::Cow<'_, RequestLog> {
        match self.body_from {
            Some(_) if !self.body.is_empty() => std::borrow::Cow::Owned(RequestLog {
                body: String::new(),
                ..self.clone()
            }),
            _ => std::borrow::Cow::Borrowed(self),
        }
    }

    /// Makes the body again from `event` when the log kept none, cut to `cap` bytes as it was
    /// when logged.
    pub fn fill_body(&mut self, event: &Event, cap: usize) {
        let Some(from) = self.body_from else { return };
        if !self.body.is_empty() {
            return;
        }
        let full = match from {
            BodyFrom::EventEnvelope => crate::delivery::shape::default_body(event),
            BodyFrom::EventData => event.data.get().as_bytes().to_vec(),
        };
        let cut = &full[..full.len().min(cap)];
        self.body = String::from_utf8_lossy(cut).into_owned();
    }
}

/// One HTTP attempt of a delivery, as the Webhook Log shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct Attempt {
    /// The delivery.
    pub delivery_id: String,
    /// 1, 2, ... in order, across replays.
    pub attempt_no: u32,
    /// When it started (Unix ms).
    #[schema(value_type = i64)]
    pub started_at: Millis,
    /// How long it took, until the response body was read or the error happened.
    pub duration_ms: u64,
    /// What was sent (none when nothing could be built, e.g. a plugin failure).
    pub request: Option<RequestLog>,
    /// Response status.
    pub response_status: Option<u16>,
    /// Response headers.
    pub response_headers: Vec<(String, String)>,
    /// Response body, truncated.
    pub response_body: Option<String>,
    /// What went wrong, if anything.
    pub error: Option<String>,
    /// What the gateway decided after this attempt.
    pub outcome: AttemptOutcome,
    /// The plugin version that shaped the request; none without a plugin.
    #[serde(default)]
    pub plugin: Option<PluginUsed>,
}

/// What an attempt led to.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// Delivered.
    Succeeded,
    /// Failed, will be tried again.
    Retry,
    /// Failed for good.
    Dead,
    /// Not sent: the plugin skipped it.
    Skipped,
}

/// How a worker finishes a claimed delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    /// Done: delivered.
    Succeeded,
    /// Try again at this time.
    RetryAt(Millis),
    /// Give up.
    Dead,
    /// The plugin chose not to send.
    Skipped,
}

/// The result of one attempt, recorded by [`crate::store::Store::complete`].
#[derive(Debug, Clone)]
pub struct Completion {
    /// The attempt, for the log.
    pub attempt: Attempt,
    /// What happens to the delivery.
    pub next: Next,
    /// Also disable the delivery's webhook (the receiver answered 410 Gone).
    pub disable_webhook: bool,
    /// Events to commit in the same transaction (write-backs to the sink), so a crash cannot
    /// record the delivery as done and lose its write-back.
    pub followups: Vec<EventToIngest>,
    /// Attempts made before `attempt` within this one try, logged before it: a request the
    /// receiver answered 401 to, sent again with a refreshed OAuth2 token.
    pub earlier: Vec<Attempt>,
}

/// Filters of the Webhook Log. All given filters must hold.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeliveryFilter {
    /// Webhook id (the API also takes a name and resolves it first).
    pub webhook_id: Option<String>,
    /// Status.
    pub status: Option<DeliveryStatus>,
    /// Event types, exact or globs (`user.*`); any of them matches. Empty: every type.
    #[serde(default)]
    pub event_types: Vec<String>,
    /// Event id.
    pub event_id: Option<String>,
    /// Where the delivery comes from.
    pub source: Option<DeliverySource>,
    /// The webhook a sink message (or refused inbound push) came from, by id.
    pub origin: Option<String>,
    /// Created at or after this time.
    pub since: Option<Millis>,
    /// Created before this time.
    pub until: Option<Millis>,
    /// Free text over the event's id and data: every whitespace-separated term must occur, a
    /// term with punctuation as the phrase of its words; case-insensitive.
    pub text: Option<String>,
    /// Page size (the API caps it).
    pub limit: usize,
    /// Opaque cursor from the previous page: deliveries older than this id.
    pub cursor: Option<String>,
}

/// One page of a listing, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Page<T> {
    /// The items.
    pub items: Vec<T>,
    /// Pass as `cursor` to get the next page; none when this is the last.
    pub next_cursor: Option<String>,
}

/// What `/metrics` and `/readyz` report about the queue.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QueueStats {
    /// Pending deliveries.
    pub pending: u64,
    /// Pending deliveries whose time has come.
    pub due: u64,
    /// How overdue the oldest due delivery is, in ms (0 when none).
    pub oldest_due_age_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("*", "user.created"));
        assert!(glob_match("user.*", "user.created"));
        assert!(!glob_match("user.*", "location.created"));
        assert!(glob_match("user.created", "user.created"));
        assert!(!glob_match("user.created", "user.created2"));
        assert!(glob_match("*.created", "location.created"));
        assert!(glob_match("u*r.*d", "user.created"));
        assert!(!glob_match("", "x"));
    }

    #[test]
    fn secrets_are_masked() {
        let spec: WebhookSpec = serde_json::from_value(serde_json::json!({
            "name": "a", "events": ["*"], "url": "http://x",
            "auth": {"type": "oauth2_password", "token_url": "http://t", "username": "u",
                     "password": "p", "client_secret": "cs"},
            "signing": {"secret": "whsec_abc"}
        }))
        .unwrap();
        let shown = serde_json::to_string(&spec.redacted()).unwrap();
        assert!(!shown.contains("\"p\""), "{shown}");
        assert!(!shown.contains("cs"), "{shown}");
        assert!(!shown.contains("whsec_abc"), "{shown}");
        assert!(shown.contains("\"username\":\"u\""));
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<WebhookSpec, _> = serde_json::from_value(serde_json::json!({
            "name": "a", "events": ["*"], "url": "http://x", "bogus": 1
        }));
        assert!(r.is_err());
        let r: Result<WebhookSpec, _> = serde_json::from_value(serde_json::json!({
            "name": "a", "events": ["*"], "url": "http://x",
            "auth": {"type": "bearer", "token": "t", "bogus": 1}
        }));
        assert!(r.is_err());
    }
}
