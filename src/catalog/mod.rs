//! The event catalog: the event types internal systems post, each with a description, an
//! optional JSON Schema of its `data`, an example payload and a `deprecated` flag.
//!
//! The catalog is optional. While it is empty nothing changes. Once it lists a type:
//! - a webhook's `events` entry must name a cataloged type or be a glob matching one
//!   ([`EventCatalog::check_webhook`], on create and update through the API and for webhooks
//!   declared in the config), so a typo is a 422 instead of a webhook that silently gets nothing;
//! - a webhook using the first-party `field-map` plugin may only read, in its `request` rows,
//!   `data` fields that the schema of at least one of its event types describes
//!   ([`fields`]);
//! - events of a type the catalog does not list are still accepted, and counted per type: in
//!   memory on the ingest path, added to the store's totals every second
//!   ([`EventCatalog::flush`]), and shown by `GET /admin/v1/event-types`.
//!
//! Like the webhooks, the catalog lives in the store and each process keeps a snapshot of it,
//! reloaded after a change made here, on a change notice from another process, and every
//! second. Event types declared in the config (`[[event_types]]`) are created or updated by
//! name at start-up ([`apply_declared`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::model::{glob_match, now_ms, EventToIngest, Millis, Webhook, WebhookSpec};
use crate::store::{self, Store, StoredEventType, TypeSeen};
use crate::webhooks::InvalidSpec;

pub mod fields;
pub mod schema;

/// Longest event type name (the longest type ingest accepts).
pub const MAX_NAME_LEN: usize = 200;

/// An event type as an admin defines it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTypeSpec {
    /// The type, exactly as events carry it (`user.created`): letters, digits and `._:-`,
    /// starting with a letter or digit, at most 200 characters.
    pub name: String,
    /// Free text for admins and integrators.
    #[serde(default)]
    pub description: String,
    /// A JSON Schema of the events' `data` (draft 2020-12 unless `$schema` says otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub schema: Option<Value>,
    /// An example of the events' `data`; must validate against `schema`. A test send to a
    /// webhook uses it when no event is given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub example: Option<Value>,
    /// Still accepted and delivered; shown so integrators move off it.
    #[serde(default)]
    pub deprecated: bool,
}

/// A cataloged event type as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, utoipa::ToSchema)]
pub struct EventType {
    /// The definition.
    #[serde(flatten)]
    pub spec: EventTypeSpec,
    /// Creation time (ms since the epoch).
    #[schema(value_type = i64)]
    pub created_at: Millis,
    /// Last change (ms since the epoch).
    #[schema(value_type = i64)]
    pub updated_at: Millis,
}

/// An event type definition that failed validation: which field, and why.
pub type InvalidEventType = InvalidSpec;

fn invalid(field: impl Into<String>, message: impl Into<String>) -> InvalidEventType {
    InvalidSpec {
        field: field.into(),
        message: message.into(),
    }
}

impl EventTypeSpec {
    /// Checks the name, that the schema is a valid JSON Schema and that the example validates
    /// against it.
    pub fn validate(&self) -> Result<(), InvalidEventType> {
        check_name(&self.name)?;
        if let Some(schema) = &self.schema {
            let validator = schema::compile(schema).map_err(|m| invalid("schema", m))?;
            if let Some(example) = &self.example {
                schema::check(&validator, example)
                    .map_err(|m| invalid("example", format!("does not match the schema: {m}")))?;
            }
        }
        Ok(())
    }

    /// Reads a stored spec.
    pub fn from_stored(stored: &StoredEventType) -> store::Result<EventType> {
        let spec: EventTypeSpec = serde_json::from_str(&stored.spec)
            .map_err(|e| store::Error::Corrupt(format!("event type {:?}: {e}", stored.name)))?;
        Ok(EventType {
            spec,
            created_at: stored.created_at,
            updated_at: stored.updated_at,
        })
    }

    /// The stored form of this spec.
    pub fn to_stored(&self, created_at: Millis, updated_at: Millis) -> StoredEventType {
        StoredEventType {
            name: self.name.clone(),
            // A struct of strings, bools and `Value`s always serialises.
            spec: serde_json::to_string(self).unwrap_or_default(),
            created_at,
            updated_at,
        }
    }
}

/// A name is a path segment of `/admin/v1/event-types/{name}` and never a glob.
fn check_name(name: &str) -> Result<(), InvalidEventType> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_alphanumeric());
    if !ok {
        return Err(invalid(
            "name",
            format!(
                "must be 1 to {MAX_NAME_LEN} of [A-Za-z0-9._:-], starting with a letter or digit"
            ),
        ));
    }
    if name.starts_with(crate::sink::RESERVED_EVENT_PREFIX) {
        return Err(invalid(
            "name",
            "event types starting with \"hookyard.\" are the gateway's own",
        ));
    }
    Ok(())
}

/// How often a type not in the catalog was seen: what this process has not yet added to the
/// store's totals.
#[derive(Debug, Clone, Copy)]
struct Unflushed {
    count: u64,
    last_seen: Millis,
}

/// The current catalog of this process, and the uncataloged types it has counted.
#[derive(Default)]
pub struct EventCatalog {
    /// By name.
    snapshot: RwLock<Arc<BTreeMap<String, EventType>>>,
    /// Held from reading the store to replacing the snapshot (see `WebhookDirectory`).
    reloading: tokio::sync::Mutex<()>,
    unflushed: Mutex<HashMap<String, Unflushed>>,
    /// `hookyard_events_uncataloged_total`.
    uncataloged: Counter,
}

impl EventCatalog {
    /// Registers the counter of uncataloged events (`hookyard_events_uncataloged_total`).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "events_uncataloged",
            "Events accepted with a type the event catalog does not list (while it lists any)",
            self.uncataloged.clone(),
        );
    }

    /// Re-reads the catalog from the store.
    pub async fn reload(&self, store: &dyn Store) -> store::Result<()> {
        let _turn = self.reloading.lock().await;
        let mut types = BTreeMap::new();
        for stored in store.event_types().await? {
            match EventTypeSpec::from_stored(&stored) {
                Ok(t) => {
                    types.insert(t.spec.name.clone(), t);
                }
                // One unreadable row must not hide the rest of the catalog.
                Err(e) => tracing::warn!(error = %e, "skipping an unreadable event type"),
            }
        }
        let next = Arc::new(types);
        match self.snapshot.write() {
            Ok(mut guard) => *guard = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    fn current(&self) -> Arc<BTreeMap<String, EventType>> {
        match self.snapshot.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Every cataloged type, by name.
    pub fn all(&self) -> Vec<EventType> {
        self.current().values().cloned().collect()
    }

    /// A cataloged type by name.
    pub fn get(&self, name: &str) -> Option<EventType> {
        self.current().get(name).cloned()
    }

    /// Whether the catalog lists no type (then nothing is checked or counted).
    pub fn is_empty(&self) -> bool {
        self.current().is_empty()
    }

    /// The positions in `events` of those whose type the catalog does not list; none while
    /// the catalog is empty. Cheap: one map lookup per event.
    pub fn uncataloged_of(&self, events: &[EventToIngest]) -> Vec<usize> {
        let types = self.current();
        if types.is_empty() {
            return Vec::new();
        }
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| !types.contains_key(&e.event.event_type))
            .map(|(i, _)| i)
            .collect()
    }

    /// Counts one accepted event of an uncataloged type, seen at `at`.
    pub fn count_uncataloged(&self, event_type: &str, at: Millis) {
        self.uncataloged.inc();
        let mut unflushed = self.lock_unflushed();
        match unflushed.get_mut(event_type) {
            Some(u) => {
                u.count += 1;
                u.last_seen = u.last_seen.max(at);
            }
            None => {
                unflushed.insert(
                    event_type.to_owned(),
                    Unflushed {
                        count: 1,
                        last_seen: at,
                    },
                );
            }
        }
    }

    fn lock_unflushed(&self) -> std::sync::MutexGuard<'_, HashMap<String, Unflushed>> {
        self.unflushed.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds what this process counted to the store's totals. On failure the counts are kept
    /// for the next try.
    pub async fn flush(&self, store: &dyn Store) -> store::Result<()> {
        let taken = std::mem::take(&mut *self.lock_unflushed());
        if taken.is_empty() {
            return Ok(());
        }
        let seen: Vec<TypeSeen> = taken
            .iter()
            .map(|(t, u)| TypeSeen {
                event_type: t.clone(),
                count: u.count,
                last_seen: u.last_seen,
            })
            .collect();
        if let Err(e) = store.count_uncataloged(&seen).await {
            let mut unflushed = self.lock_unflushed();
            for (t, u) in taken {
                let entry = unflushed.entry(t).or_insert(Unflushed {
                    count: 0,
                    last_seen: u.last_seen,
                });
                entry.count += u.count;
                entry.last_seen = entry.last_seen.max(u.last_seen);
            }
            return Err(e);
        }
        Ok(())
    }

    /// Types seen in events but not in the catalog (now), with their totals across processes:
    /// this process's counts are flushed first.
    pub async fn seen_uncataloged(&self, store: &dyn Store) -> store::Result<Vec<TypeSeen>> {
        self.flush(store).await?;
        let types = self.current();
        Ok(store
            .uncataloged()
            .await?
            .into_iter()
            .filter(|s| !types.contains_key(&s.event_type))
            .collect())
    }

    /// Checks a webhook against the catalog (nothing while it is empty): every `events` entry
    /// names a cataloged type or is a glob matching one, and a `field-map` plugin's request rows
    /// read only fields the schemas of the webhook's types describe. Names the field.
    pub fn check_webhook(&self, spec: &WebhookSpec) -> Result<(), InvalidSpec> {
        let types = self.current();
        if types.is_empty() {
            return Ok(());
        }
        for (i, pattern) in spec.events.iter().enumerate() {
            let known = types.contains_key(pattern)
                || (pattern.contains('*') && types.keys().any(|n| glob_match(pattern, n)));
            if !known {
                let hint = closest(pattern, types.keys())
                    .map(|n| format!(" (did you mean {n:?}?)"))
                    .unwrap_or_default();
                return Err(invalid(
                    format!("events[{i}]"),
                    format!(
                        "{pattern:?} is neither an event type of the catalog nor a glob \
                         matching one{hint}; see GET /admin/v1/event-types"
                    ),
                ));
            }
        }
        fields::check_field_map(spec, &subscribed(&types, spec))
    }

    /// A webhook subscription that deleting `name` from the catalog would leave matching no
    /// cataloged type (while others remain): the webhook's name and its `events` entry.
    pub fn left_without_types(&self, name: &str, hooks: &[Webhook]) -> Option<(String, String)> {
        let types = self.current();
        let rest: Vec<&String> = types.keys().filter(|n| *n != name).collect();
        if rest.is_empty() {
            return None;
        }
        hooks
            .iter()
            .filter(|h| !crate::sink::is_sink(h))
            .find_map(|hook| {
                hook.spec
                    .events
                    .iter()
                    .find(|p| glob_match(p, name) && !rest.iter().any(|n| glob_match(p, n)))
                    .map(|p| (hook.spec.name.clone(), p.clone()))
            })
    }

    /// The event a test send uses when it is given none: the catalog's first type the webhook
    /// subscribes to that has an example (in the order of the webhook's `events`, then by
    /// name), with that example as `data`.
    pub fn example_for(&self, spec: &WebhookSpec) -> Option<(String, Value)> {
        let types = self.current();
        subscribed(&types, spec)
            .into_iter()
            .find_map(|t| Some((t.spec.name.clone(), t.spec.example.clone()?)))
    }

    /// The first type a webhook subscribes to, for a test event given without a type: the
    /// catalog's first match, else its first `events` entry that is not a glob.
    pub fn first_type_of(&self, spec: &WebhookSpec) -> Option<String> {
        let types = self.current();
        subscribed(&types, spec)
            .first()
            .map(|t| t.spec.name.clone())
            .or_else(|| spec.events.iter().find(|e| !e.contains('*')).cloned())
    }
}

/// The cataloged types a webhook subscribes to, in the order of its `events`, then by name,
/// each once.
fn subscribed<'a>(
    types: &'a BTreeMap<String, EventType>,
    spec: &WebhookSpec,
) -> Vec<&'a EventType> {
    let mut out: Vec<&EventType> = Vec::new();
    for pattern in &spec.events {
        for t in types.values() {
            if glob_match(pattern, &t.spec.name) && !out.iter().any(|o| o.spec.name == t.spec.name)
            {
                out.push(t);
            }
        }
    }
    out
}

/// The cataloged name nearest to a mistyped one, when it is near enough to be a typo.
fn closest<'a>(typo: &str, names: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    names
        .map(|n| (edit_distance(typo, n), n))
        .filter(|(d, n)| *d <= 2_usize.max(n.len() / 5))
        .min_by_key(|(d, _)| *d)
        .map(|(_, n)| n)
}

/// Levenshtein distance over bytes (names are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Creates or updates, by name, the event types declared in the config. Types created
/// through the API are left alone; a declared type removed from the file stays in the store.
pub async fn apply_declared(
    declared: &[EventTypeSpec],
    store: &dyn Store,
) -> Result<(), ApplyError> {
    if declared.is_empty() {
        return Ok(());
    }
    let stored: HashMap<String, StoredEventType> = store
        .event_types()
        .await?
        .into_iter()
        .map(|t| (t.name.clone(), t))
        .collect();
    for (index, spec) in declared.iter().enumerate() {
        spec.validate().map_err(|error| ApplyError::Invalid {
            index,
            name: spec.name.clone(),
            error,
        })?;
        let now = now_ms();
        match stored.get(&spec.name) {
            Some(old) => {
                let unchanged = EventTypeSpec::from_stored(old)
                    .map(|t| &t.spec == spec)
                    .unwrap_or(false);
                if !unchanged {
                    store
                        .update_event_type(&spec.to_stored(old.created_at, now))
                        .await?;
                }
            }
            None => match store.insert_event_type(&spec.to_stored(now, now)).await {
                // Another process starting at once inserted it: same file, same spec.
                Err(store::Error::Conflict(_)) => {}
                other => other?,
            },
        }
    }
    Ok(())
}

/// Why the declared event types could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// A declared type is invalid.
    #[error("event_types[{index}] ({name}): {error}")]
    Invalid {
        /// Position in the config.
        index: usize,
        /// Its name.
        name: String,
        /// What is wrong.
        error: InvalidEventType,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] store::Error),
}

#[cfg(test)]
mod tests;
