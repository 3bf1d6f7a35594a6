//! [`SecretStore`]: a [`Store`] whose webhooks' secret fields are encrypted in the database.
//!
//! It wraps either backend: webhooks are sealed (every secret field encrypted under the first
//! key) on insert and update, and opened (decrypted with whichever key they name) on every read,
//! so the rest of the gateway only ever sees clear text in memory, and the database only ever
//! holds ciphertext. Everything else passes through unchanged. Webhooks are read from the store
//! only when the directory reloads (not per delivery), so the cost is off the hot path.
//!
//! [`SecretStore::reencrypt_all`] runs at start-up: it encrypts the plaintext secrets of a store
//! written before encryption existed, and re-encrypts under the first key what an older key
//! encrypted (rotation). It goes through [`Store::rewrite_webhooks`], one transaction that holds
//! the rows locked, so processes starting at once on one PostgreSQL database take turns, and the
//! later ones find nothing left to do; an admin's concurrent update is never overwritten.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Error as SecretError, Keyring};
use crate::connections::{Connection, Deletion};
use crate::model::{
    Attempt, Completion, Delivery, DeliveryFilter, EventToIngest, IngestResult, Job, Millis, Page,
    QueueStats, Webhook,
};
use crate::secrets::scrub::url_has_secrets;
use crate::store::{
    self, ClaimRequest, PluginRecord, PluginVersion, Store, StoreChange, StoredEventType,
    StoredSource, TypeSeen, WebhookRewrite,
};

/// A store that encrypts webhook secrets at rest (see the module documentation).
pub struct SecretStore {
    inner: Arc<dyn Store>,
    keys: Arc<Keyring>,
}

/// Encrypts every secret field of `hook` under the first key. URLs are encrypted only when
/// they hold credentials. `hook` must hold clear text (as everything in memory does).
pub fn seal(keys: &Keyring, hook: &Webhook) -> Webhook {
    let mut sealed = hook.clone();
    let params = sealed.spec.secret_query_params.clone();
    for field in sealed.spec.secret_fields_mut() {
        if field.is_url && !url_has_secrets(field.value, &params) {
            continue;
        }
        *field.value = keys.encrypt(&hook.id, &field.path, field.value);
    }
    sealed
}

/// Decrypts every encrypted field of `hook`. Plaintext fields (a store not yet migrated) are
/// kept as they are. The error names the webhook and the field.
pub fn open(keys: &Keyring, mut hook: Webhook) -> store::Result<Webhook> {
    let (id, name) = (hook.id.clone(), hook.spec.name.clone());
    for field in hook.spec.secret_fields_mut() {
        if Keyring::is_encrypted(field.value) {
            *field.value = keys
                .decrypt(&id, &field.path, field.value)
                .map_err(|e| store::Error::Secret(format!("webhook {name:?} ({id}): {e}")))?;
        }
    }
    Ok(hook)
}

/// Encrypts every secret field of `connection` under the first key (context
/// `connection:<name>`), as [`seal`] does a webhook's.
pub fn seal_connection(keys: &Keyring, connection: &Connection) -> Connection {
    let mut sealed = connection.clone();
    let context = Connection::secret_context(&connection.spec.name);
    for field in sealed.spec.secret_fields_mut() {
        if field.is_url && !url_has_secrets(field.value, &[]) {
            continue;
        }
        *field.value = keys.encrypt(&context, &field.path, field.value);
    }
    sealed
}

/// Decrypts every encrypted field of `connection`; the error names it and the field.
pub fn open_connection(keys: &Keyring, mut connection: Connection) -> store::Result<Connection> {
    let name = connection.spec.name.clone();
    let context = Connection::secret_context(&name);
    for field in connection.spec.secret_fields_mut() {
        if Keyring::is_encrypted(field.value) {
            *field.value = keys
                .decrypt(&context, &field.path, field.value)
                .map_err(|e| store::Error::Secret(format!("connection {name:?}: {e}")))?;
        }
    }
    Ok(connection)
}

/// Brings `hook` (as stored) under the first key: plaintext secrets encrypted, values of older
/// keys re-encrypted. Returns whether anything changed.
fn reencrypt(keys: &Keyring, hook: &mut Webhook) -> store::Result<bool> {
    let (id, name) = (hook.id.clone(), hook.spec.name.clone());
    let params = hook.spec.secret_query_params.clone();
    let mut changed = false;
    for field in hook.spec.secret_fields_mut() {
        let plain = if Keyring::is_encrypted(field.value) {
            if Keyring::key_of(field.value) == Some(keys.primary_id()) {
                continue;
            }
            keys.decrypt(&id, &field.path, field.value)
                .map_err(|e| store::Error::Secret(format!("webhook {name:?} ({id}): {e}")))?
        } else if field.is_url && !url_has_secrets(field.value, &params) {
            continue;
        } else {
            std::mem::take(&mut *field.value)
        };
        *field.value = keys.encrypt(&id, &field.path, &plain);
        changed = true;
    }
    Ok(changed)
}

impl SecretStore {
    /// Wraps `inner`, encrypting with `keys`.
    pub fn new(inner: Arc<dyn Store>, keys: Arc<Keyring>) -> SecretStore {
        SecretStore { inner, keys }
    }

    /// Encrypts what is stored in clear and re-encrypts what an older key encrypted; returns
    /// how many webhooks were rewritten. Safe to run by several processes at once. Fails, naming
    /// the webhook, when a stored secret was encrypted with a key that is not configured.
    pub async fn reencrypt_all(&self) -> Result<usize, SecretError> {
        let keys = self.keys.clone();
        let rewrite: WebhookRewrite = Arc::new(move |hook: &mut Webhook| reencrypt(&keys, hook));
        let mut changed = self.inner.rewrite_webhooks(rewrite).await?;
        changed += self.reencrypt_connections().await?;
        if changed > 0 {
            tracing::info!(
                webhooks = changed,
                key_id = self.keys.primary_id(),
                "encrypted stored webhook secrets under the current key"
            );
        }
        Ok(changed)
    }
}

impl SecretStore {
    /// [`SecretStore::reencrypt_all`] for the connections: each one not wholly under the first
    /// key is opened and sealed again. Connections are few and rarely written, so this reads
    /// then writes each one (two processes starting at once both write the same clear text).
    async fn reencrypt_connections(&self) -> Result<usize, SecretError> {
        let mut changed = 0;
        for mut stored in self.inner.connections().await? {
            let current = stored.spec.secret_fields_mut().into_iter().all(|field| {
                if Keyring::is_encrypted(field.value) {
                    Keyring::key_of(field.value) == Some(self.keys.primary_id())
                } else {
                    field.is_url && !url_has_secrets(field.value, &[])
                }
            });
            if current {
                continue;
            }
            let clear = open_connection(&self.keys, stored)?;
            if self
                .inner
                .update_connection(&seal_connection(&self.keys, &clear))
                .await?
            {
                changed += 1;
            }
        }
        Ok(changed)
    }
}

#[async_trait]
impl Store for SecretStore {
    async fn insert_webhook(&self, hook: &Webhook) -> store::Result<()> {
        self.inner.insert_webhook(&seal(&self.keys, hook)).await
    }
    async fn update_webhook(&self, hook: &Webhook) -> store::Result<bool> {
        self.inner.update_webhook(&seal(&self.keys, hook)).await
    }
    async fn delete_webhook(&self, id: &str) -> store::Result<bool> {
        self.inner.delete_webhook(id).await
    }
    async fn webhook(&self, id_or_name: &str) -> store::Result<Option<Webhook>> {
        match self.inner.webhook(id_or_name).await? {
            Some(hook) => Ok(Some(open(&self.keys, hook)?)),
            None => Ok(None),
        }
    }
    async fn webhooks(&self) -> store::Result<Vec<Webhook>> {
        let hooks = self.inner.webhooks().await?;
        hooks.into_iter().map(|h| open(&self.keys, h)).collect()
    }
    async fn rewrite_webhooks(&self, rewrite: WebhookRewrite) -> store::Result<usize> {
        // Callers of the wrapper work on clear text; the rows are written back sealed.
        let keys = self.keys.clone();
        self.inner
            .rewrite_webhooks(Arc::new(move |stored: &mut Webhook| {
                let mut clear = open(&keys, stored.clone())?;
                if !rewrite(&mut clear)? {
                    return Ok(false);
                }
                *stored = seal(&keys, &clear);
                Ok(true)
            }))
            .await
    }

    async fn ingest(&self, events: Vec<EventToIngest>) -> store::Result<Vec<IngestResult>> {
        self.inner.ingest(events).await
    }
    async fn event(&self, id: &str) -> store::Result<Option<crate::model::Event>> {
        self.inner.event(id).await
    }
    async fn claim(&self, req: ClaimRequest) -> store::Result<Vec<Job>> {
        self.inner.claim(req).await
    }
    async fn release(&self, owner: &str, delivery_ids: &[String]) -> store::Result<()> {
        self.inner.release(owner, delivery_ids).await
    }
    async fn complete(&self, owner: &str, completion: Completion) -> store::Result<bool> {
        self.inner.complete(owner, completion).await
    }
    async fn deliveries(&self, filter: &DeliveryFilter) -> store::Result<Page<Delivery>> {
        self.inner.deliveries(filter).await
    }
    async fn delivery(&self, id: &str) -> store::Result<Option<(Delivery, Vec<Attempt>)>> {
        self.inner.delivery(id).await
    }
    async fn replay_delivery(&self, id: &str, now: Millis) -> store::Result<Option<Delivery>> {
        self.inner.replay_delivery(id, now).await
    }
    async fn replay_dead(&self, webhook_id: &str, now: Millis) -> store::Result<u64> {
        self.inner.replay_dead(webhook_id, now).await
    }
    async fn queue_stats(&self, now: Millis) -> store::Result<QueueStats> {
        self.inner.queue_stats(now).await
    }
    async fn due_count(&self, now: Millis, at_most: u64) -> store::Result<u64> {
        self.inner.due_count(now, at_most).await
    }
    async fn log_delivery(&self, entry: crate::model::LoggedDelivery) -> store::Result<()> {
        self.inner.log_delivery(entry).await
    }
    async fn purge(&self, policy: &store::PurgePolicy) -> store::Result<store::Purged> {
        self.inner.purge(policy).await
    }
    async fn row_counts(&self) -> store::Result<store::RowCounts> {
        self.inner.row_counts().await
    }
    async fn add_plugin_version(
        &self,
        name: &str,
        sha256: &str,
        wasm: Vec<u8>,
        now: Millis,
    ) -> store::Result<PluginVersion> {
        self.inner.add_plugin_version(name, sha256, wasm, now).await
    }
    async fn plugins(&self) -> store::Result<Vec<PluginRecord>> {
        self.inner.plugins().await
    }
    async fn plugin_wasm(&self, name: &str, version: u32) -> store::Result<Option<Vec<u8>>> {
        self.inner.plugin_wasm(name, version).await
    }
    async fn set_active_plugin(&self, name: &str, version: u32) -> store::Result<bool> {
        self.inner.set_active_plugin(name, version).await
    }
    async fn remember_message(
        &self,
        scope: &str,
        message_id: &str,
        until: Millis,
        now: Millis,
    ) -> store::Result<bool> {
        self.inner
            .remember_message(scope, message_id, until, now)
            .await
    }
    async fn sources(&self) -> store::Result<Vec<StoredSource>> {
        self.inner.sources().await
    }
    async fn insert_source(&self, source: &StoredSource) -> store::Result<()> {
        self.inner.insert_source(source).await
    }
    async fn update_source(&self, source: &StoredSource) -> store::Result<bool> {
        self.inner.update_source(source).await
    }
    async fn delete_source(&self, name: &str) -> store::Result<bool> {
        self.inner.delete_source(name).await
    }
    async fn connections(&self) -> store::Result<Vec<Connection>> {
        let stored = self.inner.connections().await?;
        stored
            .into_iter()
            .map(|c| open_connection(&self.keys, c))
            .collect()
    }
    async fn connection(&self, name: &str) -> store::Result<Option<Connection>> {
        match self.inner.connection(name).await? {
            Some(c) => Ok(Some(open_connection(&self.keys, c)?)),
            None => Ok(None),
        }
    }
    async fn insert_connection(&self, connection: &Connection) -> store::Result<()> {
        self.inner
            .insert_connection(&seal_connection(&self.keys, connection))
            .await
    }
    async fn update_connection(&self, connection: &Connection) -> store::Result<bool> {
        self.inner
            .update_connection(&seal_connection(&self.keys, connection))
            .await
    }
    async fn delete_connection(&self, name: &str) -> store::Result<Deletion> {
        self.inner.delete_connection(name).await
    }
    async fn event_types(&self) -> store::Result<Vec<StoredEventType>> {
        self.inner.event_types().await
    }
    async fn insert_event_type(&self, event_type: &StoredEventType) -> store::Result<()> {
        self.inner.insert_event_type(event_type).await
    }
    async fn update_event_type(&self, event_type: &StoredEventType) -> store::Result<bool> {
        self.inner.update_event_type(event_type).await
    }
    async fn delete_event_type(&self, name: &str) -> store::Result<bool> {
        self.inner.delete_event_type(name).await
    }
    async fn count_uncataloged(&self, seen: &[TypeSeen]) -> store::Result<()> {
        self.inner.count_uncataloged(seen).await
    }
    async fn uncataloged(&self) -> store::Result<Vec<TypeSeen>> {
        self.inner.uncataloged().await
    }
    fn subscribe(&self) -> tokio::sync::broadcast::Receiver<StoreChange> {
        self.inner.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AuthConfig, WebhookSpec};
    use crate::secrets::KEY_LEN;

    fn hook() -> Webhook {
        let spec: WebhookSpec = serde_json::from_value(serde_json::json!({
            "name": "h", "events": ["*"], "url": "https://u:pw@h.example/p?token=qs&x=1",
            "headers": {"X-Static-Token": "hdr-secret", "X-Plain": "plain"},
            "secret_headers": ["x-static-token"],
            "auth": {"type": "oauth2_password", "token_url": "https://t.example/token",
                     "username": "alice", "password": "pw-secret", "client_id": "c",
                     "client_secret": "cs-secret"},
            "signing": {"secret": "whsec_c2VjcmV0"},
            "inbound": {"auth": {"type": "bearer", "token": "in-secret"}}
        }))
        .unwrap();
        Webhook {
            id: "wh_1".into(),
            spec,
            created_at: 1,
            updated_at: 1,
        }
    }

    const SECRETS: &[&str] = &[
        "pw-secret",
        "cs-secret",
        "hdr-secret",
        "in-secret",
        "whsec_c2VjcmV0",
        "u:pw",
        "token=qs",
    ];

    #[test]
    fn seal_open_round_trip() {
        let keys = Keyring::new(&[[3; KEY_LEN]]).unwrap();
        let original = hook();
        let sealed = seal(&keys, &original);
        let text = serde_json::to_string(&sealed).unwrap();
        for secret in SECRETS {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        // What is not secret stays readable: the token URL without credentials, plain headers.
        assert!(text.contains("https://t.example/token"), "{text}");
        assert!(text.contains("\"X-Plain\":\"plain\""), "{text}");
        assert!(text.contains("\"username\":\"alice\""), "{text}");
        assert_eq!(open(&keys, sealed.clone()).unwrap(), original);

        let other = Keyring::new(&[[4; KEY_LEN]]).unwrap();
        let err = open(&other, sealed).unwrap_err().to_string();
        assert!(err.contains("webhook \"h\" (wh_1)"), "{err}");
        assert!(err.contains("not configured"), "{err}");
    }

    #[test]
    fn reencrypt_migrates_plaintext_and_old_keys_once() {
        let old = Keyring::new(&[[3; KEY_LEN]]).unwrap();
        let new = Keyring::new(&[[4; KEY_LEN], [3; KEY_LEN]]).unwrap();
        let mut stored = hook();
        assert!(
            reencrypt(&old, &mut stored).unwrap(),
            "plaintext is encrypted"
        );
        assert!(!reencrypt(&old, &mut stored).unwrap(), "idempotent");
        assert!(reencrypt(&new, &mut stored).unwrap(), "rotated");
        assert!(!reencrypt(&new, &mut stored).unwrap());
        let text = serde_json::to_string(&stored).unwrap();
        assert!(!text.contains(old.primary_id()), "{text}");
        let only_new = Keyring::new(&[[4; KEY_LEN]]).unwrap();
        assert_eq!(open(&only_new, stored).unwrap(), hook());

        let mut plain = hook();
        plain.spec.auth = AuthConfig::None;
        plain.spec.url = "https://h.example/p".into();
        plain.spec.headers.clear();
        plain.spec.inbound = None;
        plain.spec.signing.secret = None;
        assert!(!reencrypt(&old, &mut plain).unwrap(), "nothing secret");
    }
}
