//! The request table, evaluated on the event's raw JSON.
//!
//! The outgoing phase runs once per delivery, so it reads only what its rows name: the event's
//! `data` (and `context`) are split one level at a time, into members kept as raw JSON text
//! ([`RawValue`]), and only the levels a path walks through are split. A value copied as is is
//! written out as the text it was read as; only a value that is converted, or replaced by a
//! default, becomes a [`Value`]. The body is built in row order and written straight to bytes.
//!
//! What a row writes is decided by [`Row::value`], the same rule the other tables use, so this is
//! an evaluation strategy, not a second set of semantics.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::Value;

use crate::mapping::{MapError, Mapping, Path, Resolved, Source, WebhookField, WebhookView};

/// The event as the outgoing phase receives it: `data` and `context` are JSON bytes.
#[derive(Debug, Clone, Copy)]
pub struct EventInput<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub timestamp: &'a str,
    pub data: &'a [u8],
    pub context: &'a [u8],
    pub webhook: WebhookView<'a>,
}

/// Why an outgoing body could not be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// The event's `data` or `context` is not JSON.
    NotJson(String),
    /// A row could not be mapped.
    Map(MapError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RequestError::NotJson(message) => f.write_str(message),
            RequestError::Map(e) => e.fmt(f),
        }
    }
}

impl From<MapError> for RequestError {
    fn from(e: MapError) -> Self {
        RequestError::Map(e)
    }
}

impl Mapping {
    /// The outgoing body for an event, as JSON bytes: an object holding exactly the mapped API
    /// fields; none when the request table is empty (the gateway's default body is then sent).
    pub fn request_body_json(
        &self,
        event: &EventInput<'_>,
    ) -> Result<Option<Vec<u8>>, RequestError> {
        if self.request.is_empty() {
            return Ok(None);
        }
        let reads = |data: bool| {
            self.request.iter().any(|row| match row.source {
                Source::Path(_) | Source::Data(_) => data,
                Source::Context(_) => !data,
                _ => false,
            })
        };
        let mut data = Document::new(event.data, reads(true), "data")?;
        let mut context = Document::new(event.context, reads(false), "context")?;
        let mut body = Node::Absent;
        for row in &self.request {
            let resolved = match &row.source {
                Source::Const(value) => Some(Leaf::Value(value.clone())),
                Source::Path(path) | Source::Data(Some(path)) => data.get(path)?.map(Leaf::Raw),
                Source::Data(None) => Some(Leaf::Raw(data.root)),
                Source::Context(Some(path)) => context.get(path)?.map(Leaf::Raw),
                Source::Context(None) => Some(Leaf::Raw(context.root)),
                Source::EventId => Some(Leaf::Str(event.id)),
                Source::EventType => Some(Leaf::Str(event.event_type)),
                Source::Timestamp => Some(Leaf::Str(event.timestamp)),
                Source::Webhook(field) => Some(Leaf::Str(match field {
                    WebhookField::Id => event.webhook.id,
                    WebhookField::Name => event.webhook.name,
                    WebhookField::Url => event.webhook.url,
                    WebhookField::Method => event.webhook.method,
                })),
                Source::Status | Source::Header(_) | Source::Query(_) => None,
            };
            if let Some(value) = row.value(resolved)? {
                body.set(&row.target, value).map_err(|m| row.error(m))?;
            }
        }
        let mut out = Vec::with_capacity(256);
        match body {
            Node::Absent => out.extend_from_slice(b"{}"),
            body => body.write(&mut out),
        }
        Ok(Some(out))
    }
}

/// A value a row resolved to, kept in the cheapest form that can be written out.
#[derive(Debug)]
pub enum Leaf<'a> {
    /// JSON text from the event, written as is.
    Raw(&'a RawValue),
    /// A string from the event's envelope.
    Str(&'a str),
    /// A constant, a default or a converted value.
    Value(Value),
}

impl Resolved for Leaf<'_> {
    fn is_null(&self) -> bool {
        match self {
            Leaf::Raw(raw) => raw.get() == "null",
            Leaf::Str(_) => false,
            Leaf::Value(value) => value.is_null(),
        }
    }

    fn into_value(self) -> Value {
        match self {
            // The text is one JSON value (the parser that split it said so).
            Leaf::Raw(raw) => serde_json::from_str(raw.get()).unwrap_or(Value::Null),
            Leaf::Str(s) => Value::String(s.to_owned()),
            Leaf::Value(value) => value,
        }
    }

    fn from_value(value: Value) -> Self {
        Leaf::Value(value)
    }
}

/// The body being built: objects keep their keys in the order rows first wrote them, as the
/// `Value` a mapping would build does.
enum Node<'a> {
    /// Nothing written here yet (or an array hole): written as `null`.
    Absent,
    Leaf(Leaf<'a>),
    Object(Vec<(&'a str, Node<'a>)>),
    Array(Vec<Node<'a>>),
}

impl<'a> Node<'a> {
    fn is_null(&self) -> bool {
        match self {
            Node::Absent => true,
            Node::Leaf(leaf) => leaf.is_null(),
            Node::Object(_) | Node::Array(_) => false,
        }
    }

    /// Writes `value` at `path`, creating objects (arrays for numeric segments) on the way; the
    /// same rules as [`Path::set`] on a `Value`.
    fn set(&mut self, path: &'a Path, value: Leaf<'a>) -> Result<(), String> {
        let mut slot = self;
        for segment in &path.0 {
            let index = crate::mapping::array_index(segment);
            if slot.is_null() {
                *slot = match index {
                    Some(_) => Node::Array(Vec::new()),
                    None => Node::Object(Vec::new()),
                };
            }
            slot = match (slot, index) {
                (Node::Array(items), Some(index)) => {
                    if items.len() <= index {
                        items.resize_with(index + 1, || Node::Absent);
                    }
                    &mut items[index]
                }
                (Node::Object(members), _) => {
                    match members.iter().position(|(key, _)| *key == segment.as_str()) {
                        Some(at) => &mut members[at].1,
                        None => {
                            members.push((segment.as_str(), Node::Absent));
                            &mut members.last_mut().expect("just pushed").1
                        }
                    }
                }
                _ => return Err(format!("{path} collides with another mapped field")),
            };
        }
        *slot = Node::Leaf(value);
        Ok(())
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Node::Absent => out.extend_from_slice(b"null"),
            Node::Leaf(Leaf::Raw(raw)) => out.extend_from_slice(raw.get().as_bytes()),
            Node::Leaf(Leaf::Str(s)) => write_json(out, s),
            Node::Leaf(Leaf::Value(value)) => write_json(out, value),
            Node::Object(members) => {
                out.push(b'{');
                for (i, (key, node)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    write_json(out, key);
                    out.push(b':');
                    node.write(out);
                }
                out.push(b'}');
            }
            Node::Array(items) => {
                out.push(b'[');
                for (i, node) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    node.write(out);
                }
                out.push(b']');
            }
        }
    }
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing a string or a `Value` into a Vec cannot fail.
    serde_json::to_writer(out, value).expect("JSON to memory");
}

/// A JSON document split lazily: its root first, then each nested level a path walks into.
struct Document<'a> {
    root: &'a RawValue,
    /// Levels split so far, by the address of their text (rows often share a parent).
    levels: Vec<(*const u8, Level<'a>)>,
    what: &'static str,
}

impl<'a> Document<'a> {
    /// Checks `bytes` is one JSON value when some row reads it (blank bytes are `null`).
    fn new(bytes: &'a [u8], read: bool, what: &'static str) -> Result<Self, RequestError> {
        let null = || -> &'static RawValue { serde_json::from_str("null").expect("null is JSON") };
        let root = if !read || bytes.iter().all(u8::is_ascii_whitespace) {
            null()
        } else {
            serde_json::from_slice(bytes).map_err(|e| not_json(what, e))?
        };
        Ok(Document {
            root,
            levels: Vec::new(),
            what,
        })
    }

    /// The value at `path`, as raw JSON; none when a step is missing.
    fn get(&mut self, path: &Path) -> Result<Option<&'a RawValue>, RequestError> {
        let mut current = self.root;
        for segment in &path.0 {
            let level = self.level(current)?;
            let next = match level {
                // The last of duplicate keys wins, as when parsing into a map.
                Level::Object(members) => members
                    .iter()
                    .rev()
                    .find(|(key, _)| key == segment)
                    .map(|(_, value)| *value),
                Level::Array(items) => segment
                    .parse::<usize>()
                    .ok()
                    .and_then(|i| items.get(i))
                    .copied(),
                Level::Scalar => None,
            };
            match next {
                Some(next) => current = next,
                None => return Ok(None),
            }
        }
        Ok(Some(current))
    }

    fn level(&mut self, raw: &'a RawValue) -> Result<&Level<'a>, RequestError> {
        let at = raw.get().as_ptr();
        let found = self.levels.iter().position(|(key, _)| *key == at);
        let index = match found {
            Some(index) => index,
            None => {
                let level = serde_json::from_str(raw.get()).map_err(|e| not_json(self.what, e))?;
                self.levels.push((at, level));
                self.levels.len() - 1
            }
        };
        Ok(&self.levels[index].1)
    }
}

fn not_json(what: &str, e: serde_json::Error) -> RequestError {
    RequestError::NotJson(format!("event {what} is not JSON: {e}"))
}

/// One level of a document: an object's members or an array's items, as raw JSON text.
enum Level<'a> {
    Object(Vec<(Cow<'a, str>, &'a RawValue)>),
    Array(Vec<&'a RawValue>),
    Scalar,
}

impl<'de> Deserialize<'de> for Level<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(LevelVisitor)
    }
}

struct LevelVisitor;

impl<'de> Visitor<'de> for LevelVisitor {
    type Value = Level<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut members = Vec::with_capacity(map.size_hint().unwrap_or(16));
        while let Some((Key(key), value)) = map.next_entry::<Key<'de>, &'de RawValue>()? {
            members.push((key, value));
        }
        Ok(Level::Object(members))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(8));
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            items.push(item);
        }
        Ok(Level::Array(items))
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Level::Scalar)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
        Ok(Level::Scalar)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
        Ok(Level::Scalar)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
        Ok(Level::Scalar)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Level::Scalar)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Level::Scalar)
    }
}

/// An object key, borrowed from the document unless it holds escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E: de::Error>(self, key: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(key)))
            }
            fn visit_str<E: de::Error>(self, key: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(key.to_owned())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
    }
}
