//! Shared connections: one set of outgoing credentials that many webhooks (and the sink) use.
//!
//! A [`ConnectionSpec`] is `{"name", "description"?, "auth"}`, where `auth` is any outgoing
//! [`AuthConfig`]. A webhook names one with `"connection": "<name>"` in place of its own `auth`
//! (both at once is refused). Invariants:
//! - **One token per connection.** Webhooks on one OAuth2 connection share one slot of the
//!   token cache, keyed [`token_key`] (`connection:<name>`), so N webhooks fetch one token.
//! - **Edits take effect everywhere.** The webhook directory holds the connections beside the
//!   webhooks and reloads both together; a changed `auth` changes the cached token's credential
//!   fingerprint, so the old token is never handed out again, and the next delivery of every
//!   webhook on the connection fetches with the new credentials.
//! - **No dangling names.** A webhook naming an unknown connection is refused (422), and a
//!   connection in use cannot be deleted (409 naming the webhooks; the store checks inside the
//!   deleting transaction). Should one go missing anyway, deliveries through it fail with a
//!   retryable error naming it rather than going out without credentials.
//! - **Secrets as a webhook's.** The secret fields are encrypted at rest by
//!   [`crate::secrets::store::SecretStore`] (context `connection:<name>`), masked on every read,
//!   kept when sent back masked, and must be sent again when the auth type or token URL changes.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::model::{AuthConfig, Millis, SecretField, Webhook, WebhookSpec, MASK};
use crate::store::{self, Store};
use crate::webhooks::{self, InvalidSpec};

use crate::auth::CONNECTION_KEY_PREFIX as TOKEN_KEY_PREFIX;

/// A connection as an admin defines it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ConnectionSpec {
    /// Unique, URL-safe name (`[A-Za-z0-9._-]`, 1 to 100 characters, starting with a letter or
    /// digit).
    pub name: String,
    /// Free text for admins.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The credentials every webhook using the connection sends.
    pub auth: AuthConfig,
}

/// A stored connection.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Connection {
    /// The admin's definition.
    #[serde(flatten)]
    pub spec: ConnectionSpec,
    /// Creation time.
    pub created_at: Millis,
    /// Last change.
    pub updated_at: Millis,
}

/// What [`Store::delete_connection`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Deletion {
    /// Deleted.
    Deleted,
    /// No connection has that name.
    NotFound,
    /// Kept: these webhooks (names) use it.
    InUse(Vec<String>),
}

impl ConnectionSpec {
    /// Every field that holds or may hold a secret, with its dotted path: the auth secrets and
    /// the token URL (a URL: secret only in its credentials).
    pub fn secret_fields_mut(&mut self) -> Vec<SecretField<'_>> {
        let (token_url, secrets) = self.auth.url_and_secret_fields_mut();
        let mut fields = Vec::new();
        if let Some(url) = token_url {
            fields.push(SecretField {
                path: "auth.token_url".to_owned(),
                value: url,
                is_url: true,
            });
        }
        for (name, value) in secrets {
            fields.push(SecretField {
                path: format!("auth.{name}"),
                value,
                is_url: false,
            });
        }
        fields
    }

    /// A copy safe to show: secrets replaced by [`MASK`], credentials in the token URL masked.
    pub fn redacted(&self) -> ConnectionSpec {
        let mut spec = self.clone();
        for field in spec.secret_fields_mut() {
            *field.value = if field.is_url {
                crate::secrets::scrub::redact_url(field.value, &[])
            } else {
                MASK.to_owned()
            };
        }
        spec
    }
}

impl Connection {
    /// A copy safe to show.
    pub fn redacted(&self) -> Connection {
        Connection {
            spec: self.spec.redacted(),
            ..self.clone()
        }
    }

    /// The encryption context of its secrets at rest.
    pub fn secret_context(name: &str) -> String {
        format!("{TOKEN_KEY_PREFIX}{name}")
    }
}

/// The token-cache key of connection `name`, shared by every webhook on it.
pub fn cache_key(name: &str) -> String {
    format!("{TOKEN_KEY_PREFIX}{name}")
}

/// The token-cache key of `hook`'s credentials: its connection's when it uses one, else its
/// own id.
pub fn token_key(hook: &Webhook) -> String {
    match &hook.spec.connection {
        Some(name) => cache_key(name),
        None => hook.id.clone(),
    }
}

/// Checks a connection definition.
pub fn validate(spec: &ConnectionSpec) -> Result<(), InvalidSpec> {
    let name_ok = webhooks::is_path_segment_name(&spec.name);
    if !name_ok {
        return Err(InvalidSpec {
            field: "name".into(),
            message: "must be 1 to 100 of [A-Za-z0-9._-], starting with a letter or digit".into(),
        });
    }
    webhooks::validate_auth(&spec.auth)
}

/// Fills in what an admin may leave out on update: a secret sent back as [`MASK`] keeps the
/// stored value, and a token URL sent back as shown keeps the stored one. When the auth type or
/// the token URL changes, every masked secret is refused (it must be sent again), as for a
/// webhook ([`webhooks::carry_auth_secrets`]).
pub fn carry_secrets(new: &mut ConnectionSpec, old: &ConnectionSpec) -> Result<(), InvalidSpec> {
    webhooks::carry_token_url(&mut new.auth, &old.auth, &[]);
    let moved = if new.auth.kind() != old.auth.kind() {
        Some("the auth type changed")
    } else if new.auth.token_url() != old.auth.token_url() {
        Some("auth.token_url changed")
    } else {
        None
    };
    webhooks::carry_auth_secrets(&mut new.auth, &old.auth, moved)
}

/// Refuses masks left after [`carry_secrets`] (a new connection, another auth type), naming the
/// field.
pub fn check_no_masks(spec: &mut ConnectionSpec) -> Result<(), InvalidSpec> {
    for field in spec.secret_fields_mut() {
        if field.value.contains(MASK) && (field.is_url || *field.value == MASK) {
            return Err(InvalidSpec {
                field: field.path,
                message: "a masked secret can only be sent back unchanged, for the same auth \
                          type and token URL: send the secret itself"
                    .into(),
            });
        }
    }
    Ok(())
}

/// Checks a webhook's use of a connection against `connection` (the one it names, looked up by
/// the caller; none when there is no such connection): not together with its own `auth`, an
/// existing name, and no static header that the connection's credentials set.
pub fn check_reference(
    spec: &WebhookSpec,
    connection: Option<&Connection>,
) -> Result<(), InvalidSpec> {
    let Some(name) = &spec.connection else {
        return Ok(());
    };
    if spec.auth != AuthConfig::None {
        return Err(InvalidSpec {
            field: "connection".into(),
            message: "set either auth or connection, not both".into(),
        });
    }
    let Some(connection) = connection else {
        return Err(InvalidSpec {
            field: "connection".into(),
            message: format!("no connection named {name:?}"),
        });
    };
    for name in spec.headers.keys() {
        let Ok(parsed) = http::HeaderName::from_bytes(name.as_bytes()) else {
            continue;
        };
        if crate::delivery::headers::reserved(
            &parsed,
            &connection.spec.auth,
            spec.event_header.as_deref(),
        )
        .is_some()
        {
            return Err(InvalidSpec {
                field: format!("headers.{name}"),
                message: format!(
                    "is set by the credentials of connection {:?}",
                    connection.spec.name
                ),
            });
        }
    }
    Ok(())
}

/// [`check_reference`] with the connection read from `store`.
pub async fn check_webhook(
    store: &dyn Store,
    spec: &WebhookSpec,
) -> store::Result<Result<(), InvalidSpec>> {
    let connection = match &spec.connection {
        Some(name) => store.connection(name).await?,
        None => None,
    };
    Ok(check_reference(spec, connection.as_ref()))
}

/// Why the connections declared in the config could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum DeclaredError {
    /// A declared connection, or a declared webhook's or the sink's use of one, is invalid.
    #[error("{what}: {error}")]
    Invalid {
        /// `connections[0] (name)`, `webhooks[1] (name)` or `sink`.
        what: String,
        /// What is wrong.
        error: InvalidSpec,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] store::Error),
}

/// Creates or updates, by name, the connections declared in the config (before the webhooks,
/// which may use them), then checks that every declared webhook and the sink name an existing
/// connection.
pub async fn apply_declared(config: &Config, store: &dyn Store) -> Result<(), DeclaredError> {
    let now = crate::model::now_ms();
    for (index, spec) in config.connections.iter().enumerate() {
        let what = || format!("connections[{index}] ({})", spec.name);
        validate(spec).map_err(|error| DeclaredError::Invalid {
            what: what(),
            error,
        })?;
        match store.connection(&spec.name).await? {
            Some(old) if old.spec == *spec => {}
            Some(old) => {
                let updated = Connection {
                    spec: spec.clone(),
                    updated_at: now,
                    ..old
                };
                store.update_connection(&updated).await?;
            }
            None => {
                store
                    .insert_connection(&Connection {
                        spec: spec.clone(),
                        created_at: now,
                        updated_at: now,
                    })
                    .await?;
            }
        }
    }
    for (index, spec) in config.webhooks.iter().enumerate() {
        check_webhook(store, spec)
            .await?
            .map_err(|error| DeclaredError::Invalid {
                what: format!("webhooks[{index}] ({})", spec.name),
                error,
            })?;
    }
    if !config.sink.connection.is_empty() {
        if config.sink.auth != AuthConfig::None {
            return Err(DeclaredError::Invalid {
                what: "sink".into(),
                error: InvalidSpec {
                    field: "connection".into(),
                    message: "set either auth or connection, not both".into(),
                },
            });
        }
        if store.connection(&config.sink.connection).await?.is_none() {
            return Err(DeclaredError::Invalid {
                what: "sink".into(),
                error: InvalidSpec {
                    field: "connection".into(),
                    message: format!("no connection named {:?}", config.sink.connection),
                },
            });
        }
    }
    Ok(())
}

/// Whether connection `name` is declared in the config (the config owns it: the admin API may
/// read it but not change it, or the next start would undo the change).
pub fn is_declared(config: &Config, name: &str) -> bool {
    config.connections.iter().any(|c| c.name == name)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(value: serde_json::Value) -> ConnectionSpec {
        serde_json::from_value(value).unwrap()
    }

    fn stored() -> ConnectionSpec {
        spec(
            json!({"name": "workplace", "auth": {"type": "oauth2_password",
            "token_url": "https://u:tu@t.example/token", "username": "alice",
            "password": "pw", "client_id": "app", "client_secret": "cs"}}),
        )
    }

    #[test]
    fn masked_secrets_are_kept_unless_the_destination_changes() {
        let shown = serde_json::to_value(stored().redacted()).unwrap();
        let text = shown.to_string();
        for secret in ["\"pw\"", "\"cs\"", "tu@"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        let mut back = spec(shown.clone());
        carry_secrets(&mut back, &stored()).unwrap();
        check_no_masks(&mut back).unwrap();
        assert_eq!(back, stored());

        let mut moved = shown.clone();
        moved["auth"]["token_url"] = json!("https://evil.example/token");
        let err = carry_secrets(&mut spec(moved), &stored()).unwrap_err();
        assert_eq!(err.field, "auth.password");
        assert!(err.message.contains("send this secret again"), "{err}");

        let retyped = json!({"name": "workplace", "auth": {"type": "bearer", "token": MASK}});
        let err = carry_secrets(&mut spec(retyped), &stored()).unwrap_err();
        assert_eq!(err.field, "auth.token");

        let mut fresh = spec(
            json!({"name": "n", "auth": {"type": "basic", "username": "u",
            "password": MASK}}),
        );
        assert_eq!(
            check_no_masks(&mut fresh).unwrap_err().field,
            "auth.password"
        );
    }

    #[test]
    fn references() {
        let connection = Connection {
            spec: spec(
                json!({"name": "c", "auth": {"type": "api_key", "header": "X-Key",
                "value": "v"}}),
            ),
            created_at: 0,
            updated_at: 0,
        };
        let hook = |extra: serde_json::Value| {
            let mut value = json!({"name": "h", "events": ["*"], "url": "https://h/",
                "connection": "c"});
            value
                .as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            serde_json::from_value::<WebhookSpec>(value).unwrap()
        };
        check_reference(&hook(json!({})), Some(&connection)).unwrap();
        let err = check_reference(&hook(json!({})), None).unwrap_err();
        assert_eq!(err.field, "connection");
        assert!(err.message.contains("\"c\""), "{err}");
        let both = hook(json!({"auth": {"type": "bearer", "token": "t"}}));
        let err = check_reference(&both, Some(&connection)).unwrap_err();
        assert!(err.message.contains("not both"), "{err}");
        let clash = hook(json!({"headers": {"x-key": "1"}}));
        assert_eq!(
            check_reference(&clash, Some(&connection))
                .unwrap_err()
                .field,
            "headers.x-key"
        );
        for name in ["", ".x", "a/b", "a b"] {
            let s = spec(json!({"name": name, "auth": {"type": "none"}}));
            assert_eq!(validate(&s).unwrap_err().field, "name", "{name:?}");
        }
    }
}
