//! The mapping engine of `field-map`: pure Rust over `serde_json` values, no WIT types, so it is
//! tested on the host.
//!
//! A config holds up to three tables of rows, as on a webhook admin screen:
//! - `request`: internal event → the body sent to the third party (`api_field` is the target);
//! - `response`: the third party's answer → fields written back (`field` is the target);
//! - `input`: a third party's push → internal records (`field` is the target).
//!
//! Paths are dotted (`user.name`); a segment of digits indexes an array (`groups.0`). Targets
//! build nested objects (and arrays for numeric segments). Rows are numbered from 0, as in
//! `request[0]`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde_json::{Map, Number, Value};

/// The largest array index a target path may write (larger ones would allocate for nothing).
pub const MAX_TARGET_INDEX: usize = 1000;

/// Which table a row belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    Request,
    Response,
    Input,
}

impl Table {
    pub fn name(self) -> &'static str {
        match self {
            Table::Request => "request",
            Table::Response => "response",
            Table::Input => "input",
        }
    }
}

/// A dotted path, split into its segments.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Path(pub Vec<String>);

impl Path {
    fn parse(text: &str) -> Result<Path, String> {
        if text.is_empty() {
            return Err("empty path".into());
        }
        let segments: Vec<String> = text.split('.').map(str::to_owned).collect();
        if segments.iter().any(String::is_empty) {
            return Err(format!("path {text:?} has an empty segment"));
        }
        Ok(Path(segments))
    }

    /// Reads the value at this path under `root`; none when any step is missing.
    pub fn get<'v>(&self, root: &'v Value) -> Option<&'v Value> {
        self.0.iter().try_fold(root, |value, segment| match value {
            Value::Object(map) => map.get(segment),
            Value::Array(items) => segment.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        })
    }

    /// Writes `value` at this path under `root` (an object), creating objects, and arrays for
    /// numeric segments, on the way. Config validation guarantees the targets of a table do not
    /// collide, so a step into a non-container only happens for targets that were not checked.
    pub fn set(&self, root: &mut Value, value: Value) -> Result<(), String> {
        let mut slot = root;
        for (i, segment) in self.0.iter().enumerate() {
            let last = i + 1 == self.0.len();
            let index = array_index(segment);
            if slot.is_null() {
                *slot = if index.is_some() {
                    Value::Array(Vec::new())
                } else {
                    Value::Object(Map::new())
                };
            }
            let next = match (slot, index) {
                (Value::Array(items), Some(index)) => {
                    if items.len() <= index {
                        items.resize(index + 1, Value::Null);
                    }
                    &mut items[index]
                }
                (Value::Object(map), _) => map.entry(segment.clone()).or_insert(Value::Null),
                _ => return Err(format!("{} collides with another mapped field", self)),
            };
            if last {
                *next = value;
                return Ok(());
            }
            slot = next;
        }
        Ok(())
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join("."))
    }
}

pub(crate) fn array_index(segment: &str) -> Option<usize> {
    if segment.is_empty() || !segment.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    segment.parse().ok()
}

/// Where a row's value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// A constant (`value`).
    Const(Value),
    /// A path in the phase's main document: the event's `data` (request), the response body
    /// (response), the pushed body (input).
    Path(Path),
    /// `@id`: the event id (request).
    EventId,
    /// `@type`: the event type (request).
    EventType,
    /// `@timestamp`: the event's `occurred-at` (request).
    Timestamp,
    /// `@data` / `@data.p` (request).
    Data(Option<Path>),
    /// `@context` / `@context.p` (request).
    Context(Option<Path>),
    /// `@webhook.id|name|url|method` (request).
    Webhook(WebhookField),
    /// `@status`: the response status (response).
    Status,
    /// `@header.NAME`: a response header (response) or a request header (input), first match,
    /// case-insensitive.
    Header(String),
    /// `@query.NAME`: a query parameter of the push (input), percent-decoded.
    Query(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookField {
    Id,
    Name,
    Url,
    Method,
}

impl Source {
    fn parse(text: &str, table: Table) -> Result<Source, String> {
        let Some(reference) = text.strip_prefix('@') else {
            return Path::parse(text).map(Source::Path);
        };
        let (head, rest) = match reference.split_once('.') {
            Some((head, rest)) => (head, Some(rest)),
            None => (reference, None),
        };
        let sub_path = |rest: Option<&str>| rest.map(Path::parse).transpose();
        let source = match (table, head, rest) {
            (Table::Request, "id", None) => Source::EventId,
            (Table::Request, "type", None) => Source::EventType,
            (Table::Request, "timestamp", None) => Source::Timestamp,
            (Table::Request, "data", rest) => Source::Data(sub_path(rest)?),
            (Table::Request, "context", rest) => Source::Context(sub_path(rest)?),
            (Table::Request, "webhook", Some(field)) => Source::Webhook(match field {
                "id" => WebhookField::Id,
                "name" => WebhookField::Name,
                "url" => WebhookField::Url,
                "method" => WebhookField::Method,
                _ => return Err(format!("unknown reference {text:?}")),
            }),
            (Table::Response, "status", None) => Source::Status,
            (Table::Response | Table::Input, "header", Some(name)) if !name.is_empty() => {
                Source::Header(name.to_ascii_lowercase())
            }
            (Table::Input, "query", Some(name)) if !name.is_empty() => Source::Query(name.into()),
            _ => {
                let known = match table {
                    Table::Request => "@id, @type, @timestamp, @data[.path], @context[.path], @webhook.id|name|url|method",
                    Table::Response => "@status, @header.NAME",
                    Table::Input => "@header.NAME, @query.NAME",
                };
                return Err(format!(
                    "unknown reference {text:?} (known in this table: {known})"
                ));
            }
        };
        Ok(source)
    }
}

/// A conversion applied to the value read from a row's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    Upper,
    Lower,
    Trim,
    String,
    Number,
    Integer,
    Boolean,
    UpperSnake,
    Date(DateFormat),
}

/// The targets of `date:<target>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFormat {
    /// `2024-05-01T12:00:00Z` (UTC).
    Rfc3339,
    /// `2024-05-01` (the date as written, in the value's own offset).
    Date,
    /// Seconds since the epoch (integer).
    Unix,
    /// Milliseconds since the epoch (integer).
    UnixMs,
}

impl Conversion {
    pub fn parse(text: &str) -> Option<Conversion> {
        Some(match text {
            "upper" => Conversion::Upper,
            "lower" => Conversion::Lower,
            "trim" => Conversion::Trim,
            "string" => Conversion::String,
            "number" => Conversion::Number,
            "integer" => Conversion::Integer,
            "boolean" => Conversion::Boolean,
            "upper_snake" => Conversion::UpperSnake,
            "date:rfc3339" => Conversion::Date(DateFormat::Rfc3339),
            "date:date" => Conversion::Date(DateFormat::Date),
            "date:unix" => Conversion::Date(DateFormat::Unix),
            "date:unix_ms" => Conversion::Date(DateFormat::UnixMs),
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Conversion::Upper => "upper",
            Conversion::Lower => "lower",
            Conversion::Trim => "trim",
            Conversion::String => "string",
            Conversion::Number => "number",
            Conversion::Integer => "integer",
            Conversion::Boolean => "boolean",
            Conversion::UpperSnake => "upper_snake",
            Conversion::Date(DateFormat::Rfc3339) => "date:rfc3339",
            Conversion::Date(DateFormat::Date) => "date:date",
            Conversion::Date(DateFormat::Unix) => "date:unix",
            Conversion::Date(DateFormat::UnixMs) => "date:unix_ms",
        }
    }

    /// Applies the conversion. `null` passes through every conversion unchanged.
    pub fn apply(self, value: Value) -> Result<Value, String> {
        if value.is_null() {
            return Ok(value);
        }
        let cannot = |value: &Value| format!("cannot apply {} to {}", self.name(), describe(value));
        let text = |value: &Value| {
            value
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| cannot(value))
        };
        Ok(match self {
            Conversion::Upper => Value::String(text(&value)?.to_uppercase()),
            Conversion::Lower => Value::String(text(&value)?.to_lowercase()),
            Conversion::Trim => Value::String(text(&value)?.trim().to_owned()),
            Conversion::UpperSnake => Value::String(upper_snake(&text(&value)?)),
            Conversion::String => match &value {
                Value::String(_) => value,
                Value::Number(n) => Value::String(n.to_string()),
                Value::Bool(b) => Value::String(b.to_string()),
                _ => return Err(cannot(&value)),
            },
            Conversion::Number => match &value {
                Value::Number(_) => value,
                Value::String(s) => parse_number(s.trim()).ok_or_else(|| cannot(&value))?,
                _ => return Err(cannot(&value)),
            },
            Conversion::Integer => {
                let integer = match &value {
                    Value::Number(n) => integral(n),
                    Value::String(s) => parse_number(s.trim()).as_ref().and_then(|v| match v {
                        Value::Number(n) => integral(n),
                        _ => None,
                    }),
                    _ => None,
                };
                integer.ok_or_else(|| cannot(&value))?
            }
            Conversion::Boolean => {
                let boolean = match &value {
                    Value::Bool(b) => Some(*b),
                    Value::Number(n) => match n.as_f64() {
                        Some(1.0) => Some(true),
                        Some(0.0) => Some(false),
                        _ => None,
                    },
                    Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => Some(true),
                        "false" | "0" | "no" => Some(false),
                        _ => None,
                    },
                    _ => None,
                };
                Value::Bool(boolean.ok_or_else(|| cannot(&value))?)
            }
            Conversion::Date(format) => {
                let moment = dates::read(&value).ok_or_else(|| cannot(&value))?;
                dates::write(moment, format).ok_or_else(|| cannot(&value))?
            }
        })
    }
}

fn describe(value: &Value) -> String {
    let mut text = value.to_string();
    if text.len() > 60 {
        let mut cut = 57;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

fn parse_number(text: &str) -> Option<Value> {
    if let Ok(i) = text.parse::<i64>() {
        return Some(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Some(u.into());
    }
    let x: f64 = text.parse().ok()?;
    Number::from_f64(x).map(Value::Number)
}

fn integral(n: &Number) -> Option<Value> {
    if n.is_i64() || n.is_u64() {
        return Some(Value::Number(n.clone()));
    }
    let x = n.as_f64()?;
    if x.fract() == 0.0 && x >= i64::MIN as f64 && x < i64::MAX as f64 {
        Some((x as i64).into())
    } else {
        None
    }
}

/// `user.created` → `USER_CREATED`, `userCreated` → `USER_CREATED`, `order-line item` →
/// `ORDER_LINE_ITEM`.
pub fn upper_snake(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 4);
    let mut previous_lower_or_digit = false;
    let mut pending_separator = false;
    for c in text.chars() {
        if c.is_alphanumeric() {
            let boundary = c.is_uppercase() && previous_lower_or_digit;
            if (pending_separator || boundary) && !out.is_empty() {
                out.push('_');
            }
            pending_separator = false;
            out.extend(c.to_uppercase());
            previous_lower_or_digit = c.is_lowercase() || c.is_ascii_digit();
        } else {
            pending_separator = true;
            previous_lower_or_digit = false;
        }
    }
    out
}

mod dates {
    use serde_json::{Number, Value};
    use time::format_description::well_known::Rfc3339;
    use time::{Date, Month, OffsetDateTime, UtcOffset};

    use super::DateFormat;

    /// Unix numbers at or above this magnitude are taken as milliseconds (as seconds it would be
    /// the year 5138).
    const MILLIS_THRESHOLD: f64 = 1e11;

    /// Reads an RFC 3339 string, a `YYYY-MM-DD` string (midnight UTC), or unix seconds
    /// (milliseconds when large) as a number or a string of digits.
    pub fn read(value: &Value) -> Option<OffsetDateTime> {
        match value {
            Value::Number(n) => from_unix(n),
            Value::String(s) => {
                let s = s.trim();
                if let Ok(t) = OffsetDateTime::parse(s, &Rfc3339) {
                    return Some(t);
                }
                if let Some(date) = parse_date(s) {
                    return Some(date.midnight().assume_utc());
                }
                if s.bytes()
                    .all(|b| b.is_ascii_digit() || b == b'-' || b == b'.')
                {
                    match super::parse_number(s)? {
                        Value::Number(n) => from_unix(&n),
                        _ => None,
                    }
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    fn from_unix(n: &Number) -> Option<OffsetDateTime> {
        let nanos: i128 = if let Some(i) = n.as_i64() {
            let scale = if (i.unsigned_abs() as f64) >= MILLIS_THRESHOLD {
                1_000_000
            } else {
                1_000_000_000
            };
            i128::from(i) * scale
        } else {
            let x = n.as_f64().filter(|x| x.is_finite() && x.abs() < 1e17)?;
            let scale = if x.abs() >= MILLIS_THRESHOLD {
                1e6
            } else {
                1e9
            };
            // Whole units exactly, the fraction rounded to the nanosecond.
            x.trunc() as i128 * scale as i128 + (x.fract() * scale).round() as i128
        };
        OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
    }

    fn parse_date(s: &str) -> Option<Date> {
        let bytes = s.as_bytes();
        if bytes.len() != 10 || bytes[4] != b'-' || bytes[7] != b'-' {
            return None;
        }
        let number = |range: std::ops::Range<usize>| -> Option<u32> {
            let part = &s[range];
            if part.bytes().all(|b| b.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        let month = Month::try_from(u8::try_from(number(5..7)?).ok()?).ok()?;
        Date::from_calendar_date(
            number(0..4)? as i32,
            month,
            u8::try_from(number(8..10)?).ok()?,
        )
        .ok()
    }

    pub fn write(moment: OffsetDateTime, format: DateFormat) -> Option<Value> {
        Some(match format {
            DateFormat::Rfc3339 => {
                Value::String(moment.to_offset(UtcOffset::UTC).format(&Rfc3339).ok()?)
            }
            DateFormat::Date => {
                let d = moment.date();
                Value::String(format!(
                    "{:04}-{:02}-{:02}",
                    d.year(),
                    u8::from(d.month()),
                    d.day()
                ))
            }
            DateFormat::Unix => moment.unix_timestamp().into(),
            DateFormat::UnixMs => {
                i64::try_from(moment.unix_timestamp_nanos().div_euclid(1_000_000))
                    .ok()?
                    .into()
            }
        })
    }
}

/// One row of a table, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub table: Table,
    pub index: usize,
    /// `api_field` as written, for messages.
    pub api_field: String,
    /// Where the value comes from: `field` (request), `api_field` (response, input), or `value`.
    pub source: Source,
    /// Where it goes: `api_field` (request), `field` (response, input).
    pub target: Path,
    pub default: Option<Value>,
    pub convert: Option<Conversion>,
    pub required: bool,
    pub identifier: bool,
}

impl Row {
    /// `request[2] (api_field "emp_id")`, for messages.
    pub fn label(&self) -> String {
        format!(
            "{}[{}] (api_field {:?})",
            self.table.name(),
            self.index,
            self.api_field
        )
    }

    /// The value this row writes: the source's value (converted), else the default; none when
    /// there is nothing to write. A missing `required` value is an error.
    pub(crate) fn value<R: Resolved>(&self, resolved: Option<R>) -> Result<Option<R>, MapError> {
        let value = match resolved {
            r if r.as_ref().is_none_or(R::is_null) && self.default.is_some() => {
                self.default.clone().map(R::from_value)
            }
            Some(value) if !matches!(self.source, Source::Const(_)) => match self.convert {
                Some(conversion) => Some(R::from_value(
                    conversion
                        .apply(value.into_value())
                        .map_err(|message| self.error(message))?,
                )),
                None => Some(value),
            },
            other => other,
        };
        if self.required && value.as_ref().is_none_or(R::is_null) {
            return Err(self.error("required value is missing".into()));
        }
        Ok(value)
    }

    pub(crate) fn error(&self, message: String) -> MapError {
        MapError {
            row: self.label(),
            message,
        }
    }
}

/// What a row's source resolved to: a parsed [`Value`], or (for the request table) a value still
/// in the form it was read in ([`crate::request::Leaf`]).
pub(crate) trait Resolved: Sized {
    fn is_null(&self) -> bool;
    fn into_value(self) -> Value;
    fn from_value(value: Value) -> Self;
}

impl Resolved for Value {
    fn is_null(&self) -> bool {
        Value::is_null(self)
    }
    fn into_value(self) -> Value {
        self
    }
    fn from_value(value: Value) -> Self {
        value
    }
}

/// A failure to map an input with a valid config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapError {
    /// The row, as `request[2] (api_field "emp_id")`.
    pub row: String,
    pub message: String,
}

impl fmt::Display for MapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.row, self.message)
    }
}

/// Why an inbound push is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputError {
    /// The body is not JSON (HTTP 400).
    Malformed(String),
    /// The body is JSON but cannot be mapped (HTTP 422).
    Unprocessable(String),
}

impl InputError {
    pub fn status(&self) -> u16 {
        match self {
            InputError::Malformed(_) => 400,
            InputError::Unprocessable(_) => 422,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            InputError::Malformed(m) | InputError::Unprocessable(m) => m,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct WebhookView<'a> {
    pub id: &'a str,
    pub name: &'a str,
    pub url: &'a str,
    pub method: &'a str,
}

/// One record derived from a push.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The identifier fields (rows with `identifier: true`), internal names.
    pub identifiers: Value,
    /// All mapped fields, internal names.
    pub fields: Value,
}

/// A checked config.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mapping {
    pub request: Vec<Row>,
    pub response: Vec<Row>,
    pub input: Vec<Row>,
    /// Overrides the webhook's method for outgoing requests.
    pub method: Option<String>,
    /// Event types sent nowhere (the outgoing phase skips them).
    pub skip_events: Vec<String>,
}

pub(crate) const TOP_LEVEL_KEYS: &[&str] =
    &["request", "response", "input", "method", "skip_events"];
pub(crate) const ROW_KEYS: &[&str] = &[
    "api_field",
    "field",
    "value",
    "default",
    "convert",
    "required",
    "identifier",
];

impl Mapping {
    /// Parses and checks a config (JSON bytes; empty bytes or `null` is the empty config). The
    /// error lists every problem found, each naming its table and row, separated by `; `.
    pub fn from_json(config: &[u8]) -> Result<Mapping, String> {
        if config.iter().all(u8::is_ascii_whitespace) {
            return Ok(Mapping::default());
        }
        // The outgoing phase parses its config on every call: read it straight into typed rows
        // first. Whatever that refuses (a wrong type, an unknown key, a failed check) is read
        // again as a `Value`, which reports every problem; both build rows with `build_row`.
        if let Some(mapping) = serde_json::from_slice::<TypedConfig>(config)
            .ok()
            .and_then(TypedConfig::into_mapping)
        {
            return Ok(mapping);
        }
        let value: Value =
            serde_json::from_slice(config).map_err(|e| format!("config is not JSON: {e}"))?;
        Mapping::from_value(&value)
    }

    /// As [`Mapping::from_json`], from a parsed value.
    pub fn from_value(config: &Value) -> Result<Mapping, String> {
        let object = match config {
            Value::Null => return Ok(Mapping::default()),
            Value::Object(object) => object,
            other => {
                return Err(format!(
                    "config must be a JSON object, not {}",
                    describe(other)
                ))
            }
        };
        let mut errors = Vec::new();
        let mut mapping = Mapping::default();
        for (key, value) in object {
            match key.as_str() {
                "request" => mapping.request = parse_table(Table::Request, value, &mut errors),
                "response" => mapping.response = parse_table(Table::Response, value, &mut errors),
                "input" => mapping.input = parse_table(Table::Input, value, &mut errors),
                "method" => match value {
                    Value::String(m) if is_token(m) => mapping.method = Some(m.clone()),
                    Value::Null => {}
                    other => errors.push(format!(
                        "method: must be an HTTP method name, not {}",
                        describe(other)
                    )),
                },
                "skip_events" => match value {
                    Value::Array(items) if items.iter().all(Value::is_string) => {
                        mapping.skip_events = items
                            .iter()
                            .filter_map(Value::as_str)
                            .map(str::to_owned)
                            .collect()
                    }
                    Value::Null => {}
                    other => errors.push(format!(
                        "skip_events: must be a list of event types, not {}",
                        describe(other)
                    )),
                },
                other => errors.push(format!(
                    "unknown key {other:?} (known: {})",
                    TOP_LEVEL_KEYS.join(", ")
                )),
            }
        }
        mapping.check(errors)
    }

    /// The checks across tables, then the verdict: the mapping, or every problem found.
    fn check(self, mut errors: Vec<String>) -> Result<Mapping, String> {
        if !self.input.is_empty() && !self.input.iter().any(|row| row.identifier) {
            errors.push(
                "input: at least one row must be an identifier (\"identifier\": true)".into(),
            );
        }
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors.join("; "))
        }
    }

    /// The fields to write back from a response: an object keyed by internal field names; none
    /// when the response table is empty or nothing was mapped. A body that is not JSON maps as
    /// if every path were missing.
    pub fn response_fields(
        &self,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) -> Result<Option<Value>, MapError> {
        if self.response.is_empty() {
            return Ok(None);
        }
        let document = serde_json::from_slice::<Value>(body).unwrap_or(Value::Null);
        let mut fields = Value::Object(Map::new());
        let mut mapped = false;
        for row in &self.response {
            let resolved = match &row.source {
                Source::Const(value) => Some(value.clone()),
                Source::Path(path) => path.get(&document).cloned(),
                Source::Status => Some(status.into()),
                Source::Header(name) => header(headers, name).map(Value::from),
                _ => None,
            };
            if let Some(value) = row.value(resolved)? {
                row.target
                    .set(&mut fields, value)
                    .map_err(|m| row.error(m))?;
                mapped = true;
            }
        }
        Ok(mapped.then_some(fields))
    }

    /// The records of a push: one per object (the body is an object, or an array of objects);
    /// none when the input table is empty (the default mapping then applies).
    pub fn input_records(
        &self,
        headers: &[(String, String)],
        query: &str,
        body: &[u8],
    ) -> Result<Option<Vec<Record>>, InputError> {
        if self.input.is_empty() {
            return Ok(None);
        }
        let document: Value = serde_json::from_slice(body)
            .map_err(|e| InputError::Malformed(format!("body is not JSON: {e}")))?;
        let items = match &document {
            Value::Array(items) => items.iter().collect(),
            _ => vec![&document],
        };
        let mut records = Vec::with_capacity(items.len());
        for (n, item) in items.into_iter().enumerate() {
            if !item.is_object() {
                let which = if document.is_array() {
                    format!("item {n} of the body")
                } else {
                    "the body".into()
                };
                return Err(InputError::Unprocessable(format!(
                    "{which} must be a JSON object, not {}",
                    describe(item)
                )));
            }
            let record = self.input_record(headers, query, item).map_err(|e| {
                if !document.is_array() {
                    return e;
                }
                // Which item failed, besides which row: `row 0` alone does not say which of the
                // pushed records to fix.
                let message = format!("item {n} of the body: {}", e.message());
                match e {
                    InputError::Malformed(_) => InputError::Malformed(message),
                    InputError::Unprocessable(_) => InputError::Unprocessable(message),
                }
            })?;
            records.push(record);
        }
        Ok(Some(records))
    }

    fn input_record(
        &self,
        headers: &[(String, String)],
        query: &str,
        item: &Value,
    ) -> Result<Record, InputError> {
        let mut identifiers = Value::Object(Map::new());
        let mut fields = Value::Object(Map::new());
        for row in &self.input {
            let resolved = match &row.source {
                Source::Const(value) => Some(value.clone()),
                Source::Path(path) => path.get(item).cloned(),
                Source::Header(name) => header(headers, name).map(Value::from),
                Source::Query(name) => query_param(query, name).map(Value::from),
                _ => None,
            };
            let value = row
                .value(resolved)
                .map_err(|e| InputError::Unprocessable(e.to_string()))?;
            // An identifier must identify: `null` and an empty (or blank) string are missing,
            // or JIT provisioning would create a record with an empty id.
            let blank = |v: &Value| v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
            match value {
                Some(value) if !(row.identifier && blank(&value)) => {
                    if row.identifier {
                        row.target
                            .set(&mut identifiers, value.clone())
                            .map_err(|m| InputError::Unprocessable(row.error(m).to_string()))?;
                    }
                    row.target
                        .set(&mut fields, value)
                        .map_err(|m| InputError::Unprocessable(row.error(m).to_string()))?;
                }
                _ if row.identifier => {
                    return Err(InputError::Unprocessable(format!(
                        "missing identifier field {} (row {})",
                        row.api_field, row.index
                    )))
                }
                _ => {}
            }
        }
        Ok(Record {
            identifiers,
            fields,
        })
    }
}

fn header<'h>(headers: &'h [(String, String)], lowercase_name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(lowercase_name))
        .map(|(_, value)| value.as_str())
}

/// The first value of a query parameter, percent-decoded (`+` is a space).
fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(key) == name).then(|| percent_decode(value))
    })
}

fn percent_decode(text: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = match bytes.get(i..i + 3) {
            Some([b'%', high, low]) => hex(*high).zip(hex(*low)).map(|(h, l)| h << 4 | l),
            _ => None,
        };
        match (escaped, bytes[i]) {
            (Some(byte), _) => {
                out.push(byte);
                i += 3;
                continue;
            }
            (None, b'+') => out.push(b' '),
            (None, b) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_token(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

fn parse_table(table: Table, value: &Value, errors: &mut Vec<String>) -> Vec<Row> {
    let items = match value {
        Value::Null => return Vec::new(),
        Value::Array(items) => items,
        other => {
            errors.push(format!(
                "{}: must be a list of rows, not {}",
                table.name(),
                describe(other)
            ));
            return Vec::new();
        }
    };
    let rows = items
        .iter()
        .enumerate()
        .map(|(index, item)| parse_row(table, index, item));
    collect_table(table, rows, errors)
}

/// Keeps a table's good rows, reports the others' problems (each naming its table and row),
/// and checks the targets of the rows kept.
fn collect_table(
    table: Table,
    rows: impl Iterator<Item = Result<Row, Vec<String>>>,
    errors: &mut Vec<String>,
) -> Vec<Row> {
    let rows: Vec<Row> = rows
        .enumerate()
        .filter_map(|(index, row)| match row {
            Ok(row) => Some(row),
            Err(problems) => {
                errors.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("{}[{index}]: {p}", table.name())),
                );
                None
            }
        })
        .collect();
    check_targets(table, &rows, errors);
    rows
}

/// A config whose every key is known and every column has its type, read without building a
/// `Value` (the fast path of [`Mapping::from_json`]).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedConfig {
    request: Option<Vec<TypedRow>>,
    response: Option<Vec<TypedRow>>,
    input: Option<Vec<TypedRow>>,
    method: Option<String>,
    skip_events: Option<Vec<String>>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TypedRow {
    api_field: Option<String>,
    field: Option<String>,
    #[serde(default, deserialize_with = "present")]
    value: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    default: Option<Value>,
    required: Option<bool>,
    identifier: Option<bool>,
    convert: Option<String>,
}

/// A column that is there, `null` included (`"value": null` is a constant null).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

impl TypedConfig {
    /// The mapping, when the config passes every check; none sends it down the slow path.
    fn into_mapping(self) -> Option<Mapping> {
        if self.method.as_deref().is_some_and(|m| !is_token(m)) {
            return None;
        }
        let mut errors = Vec::new();
        let mut table = |table: Table, rows: Option<Vec<TypedRow>>| {
            let rows = rows
                .unwrap_or_default()
                .into_iter()
                .enumerate()
                .map(|(index, row)| {
                    let fields = RowFields {
                        api_field: row.api_field,
                        field: row.field,
                        constant: row.value,
                        default: row.default,
                        required: row.required.unwrap_or(false),
                        identifier: row.identifier.unwrap_or(false),
                        convert: row.convert,
                    };
                    build_row(table, index, fields, Vec::new())
                });
            collect_table(table, rows, &mut errors)
        };
        let mapping = Mapping {
            request: table(Table::Request, self.request),
            response: table(Table::Response, self.response),
            input: table(Table::Input, self.input),
            method: self.method,
            skip_events: self.skip_events.unwrap_or_default(),
        };
        mapping.check(errors).ok()
    }
}

fn parse_row(table: Table, index: usize, item: &Value) -> Result<Row, Vec<String>> {
    let Value::Object(object) = item else {
        return Err(vec![format!(
            "a row must be a JSON object, not {}",
            describe(item)
        )]);
    };
    let mut problems = Vec::new();
    for key in object.keys() {
        if !ROW_KEYS.contains(&key.as_str()) {
            problems.push(format!(
                "unknown key {key:?} (known: {})",
                ROW_KEYS.join(", ")
            ));
        }
    }
    let text = |key: &str, problems: &mut Vec<String>| -> Option<String> {
        match object.get(key) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => {
                problems.push(format!("{key} must be a string, not {}", describe(other)));
                None
            }
        }
    };
    let flag = |key: &str, problems: &mut Vec<String>| -> bool {
        match object.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                problems.push(format!(
                    "{key} must be true or false, not {}",
                    describe(other)
                ));
                false
            }
        }
    };

    let fields = RowFields {
        api_field: text("api_field", &mut problems),
        field: text("field", &mut problems),
        constant: object.get("value").cloned(),
        default: object.get("default").cloned(),
        required: flag("required", &mut problems),
        identifier: flag("identifier", &mut problems),
        convert: text("convert", &mut problems),
    };
    build_row(table, index, fields, problems)
}

/// A row's columns, read from the config with their JSON types checked.
struct RowFields {
    api_field: Option<String>,
    field: Option<String>,
    /// `value`, when present (`null` included: a constant null).
    constant: Option<Value>,
    default: Option<Value>,
    required: bool,
    identifier: bool,
    convert: Option<String>,
}

/// Checks a row's columns together and builds the row; `problems` already holds what reading
/// the columns found.
fn build_row(
    table: Table,
    index: usize,
    fields: RowFields,
    mut problems: Vec<String>,
) -> Result<Row, Vec<String>> {
    let RowFields {
        api_field,
        field,
        constant,
        default,
        required,
        identifier,
        convert,
    } = fields;
    let convert = convert.and_then(|name| {
        let conversion = Conversion::parse(&name);
        if conversion.is_none() {
            problems.push(format!(
                "unknown conversion {name:?} (known: upper, lower, trim, string, number, integer, boolean, upper_snake, date:rfc3339, date:date, date:unix, date:unix_ms)"
            ));
        }
        conversion
    });

    let api_field = match api_field {
        Some(a) if !a.is_empty() => Some(a),
        _ => {
            problems.push("api_field is missing or empty".into());
            None
        }
    };
    if identifier && table != Table::Input {
        problems.push("identifier is only allowed in input rows".into());
    }
    // Which column is read and which is written depends on the table. In the request table
    // `value` replaces `field` (the source); in the others `field` names the internal field
    // written, so it is always needed, and `value` replaces what `api_field` would read.
    let (source_text, target_text) = match table {
        Table::Request => {
            match (&field, &constant) {
                (Some(_), Some(_)) => {
                    problems.push("has both field and value: give exactly one".into())
                }
                (None, None) => {
                    problems.push("has neither field nor value: give exactly one".into())
                }
                _ => {}
            }
            (field.clone(), api_field.clone())
        }
        Table::Response | Table::Input => {
            if field.is_none() {
                problems.push("field is missing (the internal field written)".into());
            }
            (api_field.clone(), field.clone())
        }
    };
    if constant.is_some() && convert.is_some() {
        problems.push("convert applies to a field, not to a value".into());
    }
    if constant.is_some() && default.is_some() {
        problems.push("default applies to a field, not to a value".into());
    }
    let source = match (&constant, source_text) {
        (Some(value), _) => Some(Source::Const(value.clone())),
        (None, Some(text)) => match Source::parse(&text, table) {
            Ok(source) => Some(source),
            Err(e) => {
                let column = if table == Table::Request {
                    "field"
                } else {
                    "api_field"
                };
                problems.push(format!("{column}: {e}"));
                None
            }
        },
        (None, None) => None,
    };
    let target = target_text.and_then(|text| {
        let column = if table == Table::Request {
            "api_field"
        } else {
            "field"
        };
        if text.starts_with('@') {
            problems.push(format!(
                "{column} {text:?}: a reference (@...) can only be read, not written"
            ));
            return None;
        }
        match Path::parse(&text) {
            Ok(path) => {
                if let Some(big) = path
                    .0
                    .iter()
                    .filter_map(|s| array_index(s))
                    .find(|&i| i > MAX_TARGET_INDEX)
                {
                    problems.push(format!(
                        "{column} {text:?}: array index {big} is above {MAX_TARGET_INDEX}"
                    ));
                    None
                } else {
                    Some(path)
                }
            }
            Err(e) => {
                problems.push(format!("{column}: {e}"));
                None
            }
        }
    });

    match (problems.is_empty(), api_field, source, target) {
        (true, Some(api_field), Some(source), Some(target)) => Ok(Row {
            table,
            index,
            api_field,
            source,
            target,
            default,
            convert,
            required,
            identifier,
        }),
        _ => Err(problems),
    }
}

/// Targets of one table must not collide: no duplicates, no target inside another
/// (`user` and `user.name`), and no mix of array indices and keys under the same parent.
fn check_targets(table: Table, rows: &[Row], errors: &mut Vec<String>) {
    let column = if table == Table::Request {
        "api_field"
    } else {
        "field"
    };
    let mut full: BTreeMap<&[String], usize> = BTreeMap::new();
    let mut prefixes: BTreeMap<&[String], (usize, bool)> = BTreeMap::new();
    let mut reported = BTreeSet::new();
    for row in rows {
        let segments = row.target.0.as_slice();
        let mut problem = None;
        if let Some(&other) = full.get(segments) {
            problem = Some(format!(
                "{column} {} is also written by {}[{other}]",
                row.target,
                table.name()
            ));
        } else if let Some(&(other, _)) = prefixes.get(segments) {
            problem = Some(format!(
                "{column} {} contains a field written by {}[{other}]",
                row.target,
                table.name()
            ));
        }
        for k in 1..segments.len() {
            let (parent, child) = (&segments[..k], &segments[k]);
            if problem.is_none() {
                if let Some(&other) = full.get(parent) {
                    problem = Some(format!(
                        "{column} {} is inside a field written by {}[{other}]",
                        row.target,
                        table.name()
                    ));
                }
            }
            let numeric = array_index(child).is_some();
            match prefixes.get(parent) {
                Some(&(other, kind)) if kind != numeric && problem.is_none() => {
                    problem = Some(format!(
                        "{column} {} mixes array indices and keys under {} with {}[{other}]",
                        row.target,
                        parent.join("."),
                        table.name()
                    ));
                }
                Some(_) => {}
                None => {
                    prefixes.insert(parent, (row.index, numeric));
                }
            }
        }
        // The root of every table is an object.
        if problem.is_none() && array_index(&segments[0]).is_some() {
            problem = Some(format!(
                "{column} {} cannot start with an array index",
                row.target
            ));
        }
        match problem {
            Some(p) if reported.insert(row.index) => {
                errors.push(format!("{}[{}]: {p}", table.name(), row.index))
            }
            _ => {
                full.entry(segments).or_insert(row.index);
            }
        }
    }
}
