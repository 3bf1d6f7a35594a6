//! Fuzz target of the config parser, [`Mapping::from_json`]: a webhook's plugin config is
//! written by an admin and checked at activation, so it must never panic, whatever the bytes.
//! Arbitrary bytes and structure-aware configs (tables of rows with the keys, conversions and
//! references the parser knows, then possibly cut short or with a byte changed) are fed to it,
//! and an accepted config must also map an event without panicking.
//!
//! A proptest property, so it runs on stable with the other host tests; raise the case count
//! for a long run: `HOOKYARD_FUZZ_CASES=200000 cargo test --target <host> -p field-map fuzz`.

use proptest::prelude::*;
use serde_json::{json, Value};

use crate::mapping::{Mapping, ROW_KEYS, TOP_LEVEL_KEYS};
use crate::tests::CONVERSIONS;

fn config() -> ProptestConfig {
    let cases = std::env::var("HOOKYARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

/// Words the parser gives a meaning to, beside the conversions' names.
const WORDS: &[&str] = &[
    "date:",
    "@id",
    "@type",
    "@timestamp",
    "@data",
    "@data.a",
    "@context.b",
    "@webhook.id",
    "@webhook.url",
    "@",
    "@data.",
    "a.b",
    "a..b",
    ".",
    "",
    "PATCH",
    "GE T",
    "emp_id",
    "user.*",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => prop::sample::select(TOP_LEVEL_KEYS).prop_map(str::to_owned),
        2 => prop::sample::select(ROW_KEYS).prop_map(str::to_owned),
        1 => "[a-z_]{1,8}",
    ]
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(WORDS).prop_map(Value::from),
        prop::sample::select(CONVERSIONS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ]
}

fn json_config() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A row with the row keys and fuzzed values.
fn row() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop::sample::select(ROW_KEYS).prop_map(str::to_owned),
        leaf(),
        0..6,
    )
    .prop_map(|m| Value::Object(m.into_iter().collect()))
}

fn table() -> impl Strategy<Value = Value> {
    prop::collection::vec(row(), 0..4).prop_map(Value::Array)
}

/// A config of well-formed tables whose rows take fuzzed values.
fn tables() -> impl Strategy<Value = Value> {
    (table(), table(), table(), leaf()).prop_map(|(request, response, input, method)| {
        json!({"request": request, "response": response, "input": input, "method": method})
    })
}

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let garble = |value: Value,
                  change: Option<(prop::sample::Index, u8)>,
                  cut: Option<prop::sample::Index>| {
        let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
        if let Some((at, byte)) = change.filter(|_| !bytes.is_empty()) {
            let i = at.index(bytes.len());
            bytes[i] = byte;
        }
        if let Some(at) = cut.filter(|_| !bytes.is_empty()) {
            bytes.truncate(at.index(bytes.len()));
        }
        bytes
    };
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..256),
        (
            json_config(),
            any::<Option<(prop::sample::Index, u8)>>(),
            any::<Option<prop::sample::Index>>()
        )
            .prop_map(move |(v, c, t)| garble(v, c, t)),
        tables().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
        json_config().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
    ]
}

#[test]
fn fuzz_field_map_config() {
    proptest!(config(), |(config in bytes(), data in json_config())| {
        if let Ok(mapping) = Mapping::from_json(&config) {
            // The same config read as a value gives the same mapping (both paths of the parser).
            if let Ok(value) = serde_json::from_slice::<Value>(&config) {
                prop_assert_eq!(Mapping::from_value(&value).ok(), Some(mapping.clone()));
            }
            let body = serde_json::to_vec(&data).unwrap_or_default();
            let headers = [("content-type".to_owned(), "application/json".to_owned())];
            let _ = mapping.response_fields(200, &headers, &body);
            let _ = mapping.input_records(&headers, "a=1&b=%zz", &body);
        }
    });
}
