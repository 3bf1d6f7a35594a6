//! Fuzz targets, one per parser of untrusted input, run by `cargo test` on stable.
//!
//! Each target feeds a parser both arbitrary bytes and structure-aware inputs (JSON built from
//! the keys and values the parser looks for, then possibly cut short or with a byte changed),
//! and checks that it never panics and that what it accepts is consistent. They are proptest
//! properties rather than cargo-fuzz targets (which need nightly), so they run in the normal
//! suite: [`DEFAULT_CASES`] cases each, about a second in all in a debug build. For a long run,
//! raise the count: `HOOKYARD_FUZZ_CASES=200000 cargo test --lib fuzz::`. A failure is shrunk
//! to a minimal input and saved under `proptest-regressions/`, so it is re-run first from then
//! on.
//!
//! The field-map config parser has its own target in `plugins/field-map/src/fuzz.rs`.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{json, Value};

use crate::delivery::plugin_output;
use crate::delivery::shape::OutgoingRequest;
use crate::model::{InboundAuth, InboundConfig, NewEvent, Webhook, WebhookSpec};
use crate::server::error::parse_json;
use crate::server::inbound;

/// Cases per target unless `HOOKYARD_FUZZ_CASES` says otherwise.
const DEFAULT_CASES: u32 = 2048;

fn config() -> Config {
    let cases = std::env::var("HOOKYARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    Config {
        cases,
        ..Config::default()
    }
}

/// Strings a parser treats specially, beside arbitrary ones.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,24}",
        Just(String::new()),
        Just("*".to_owned()),
        Just("user.*".to_owned()),
        Just("http://127.0.0.1:1/hook".to_owned()),
        Just("https://[::1]/x?a=b".to_owned()),
        Just("ftp://h/".to_owned()),
        Just("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned()),
        Just("whsec_!!".to_owned()),
        Just("2021-02-25T15:02:10Z".to_owned()),
        Just("+999999-12-31T23:59:59.999999999Z".to_owned()),
        Just("-9999-01-01T00:00:00-23:59".to_owned()),
        Just("a.b.c".to_owned()),
        Just("..".to_owned()),
        Just("wh_x".to_owned()),
        Just("\u{0}\r\n".to_owned()),
    ]
}

/// JSON leaves, including numbers at the edges of every integer type.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(0u64),
            Just(1),
            Just(100),
            Just(101),
            Just(u32::MAX as u64 + 1)
        ]
        .prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        text().prop_map(Value::from),
    ]
}

/// JSON values whose object keys are mostly from `keys`, nested a few levels deep.
fn json_with(keys: &'static [&'static str]) -> impl Strategy<Value = Value> {
    let key = prop_oneof![4 => proptest::sample::select(keys).prop_map(str::to_owned), 1 => "[a-z_]{1,8}"];
    leaf().prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// The bytes of `value`, cut short or with one byte changed, as a sender might garble them.
fn garbled(value: impl Strategy<Value = Value>) -> impl Strategy<Value = Vec<u8>> {
    (
        value,
        any::<Option<(prop::sample::Index, u8)>>(),
        any::<Option<prop::sample::Index>>(),
    )
        .prop_map(|(value, change, cut)| {
            let mut bytes = serde_json::to_vec(&value).unwrap_or_default();
            if let (Some((at, byte)), false) = (change, bytes.is_empty()) {
                let i = at.index(bytes.len());
                bytes[i] = byte;
            }
            if let (Some(at), false) = (cut, bytes.is_empty()) {
                bytes.truncate(at.index(bytes.len()));
            }
            bytes
        })
}

/// Arbitrary bytes, or structure-aware JSON with the parser's `keys`.
fn input(keys: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..256),
        garbled(json_with(keys)),
        json_with(keys).prop_map(|v| serde_json::to_vec(&v).unwrap_or_default()),
    ]
}

const EVENT_KEYS: &[&str] = &["type", "id", "data", "context", "occurred_at"];

const SPEC_KEYS: &[&str] = &[
    "name",
    "description",
    "enabled",
    "events",
    "url",
    "method",
    "headers",
    "event_header",
    "auth",
    "signing",
    "plugin",
    "inbound",
    "writeback",
    "retry",
    "timeout_ms",
    "max_concurrency",
    "type",
    "header",
    "value",
    "token",
    "username",
    "password",
    "token_url",
    "client_id",
    "client_secret",
    "scope",
    "secret",
    "config",
    "on_error",
    "instances",
    "max_attempts",
    "entity",
    "identify_by",
    "jit_provisioning",
    "tolerance_secs",
];

/// `POST /v1/events` and `POST /v1/events/batch` bodies: 400 or 422, never a panic; an accepted
/// event has a type.
#[test]
fn fuzz_ingest_json() {
    proptest!(config(), |(body in input(EVENT_KEYS))| {
        match parse_json::<NewEvent>(&body) {
            Ok(event) => prop_assert!(serde_json::from_slice::<Value>(&body).is_ok(), "{event:?}"),
            Err(e) => prop_assert!(matches!(e.status.as_u16(), 400 | 422), "{}", e.status),
        }
        if let Ok(items) = parse_json::<Vec<Box<serde_json::value::RawValue>>>(&body) {
            for item in items {
                if let Err(e) = parse_json::<NewEvent>(item.get().as_bytes()) {
                    prop_assert!(matches!(e.status.as_u16(), 400 | 422));
                }
            }
        }
    });
}

/// A valid spec with some of its fields replaced by fuzzed values.
fn spec_json() -> impl Strategy<Value = Vec<u8>> {
    let base = json!({"name": "w", "events": ["t"], "url": "http://127.0.0.1:1/hook"});
    let auth = prop_oneof![
        json_with(SPEC_KEYS),
        (
            prop::sample::select(
                &[
                    "none",
                    "api_key",
                    "bearer",
                    "basic",
                    "oauth2_password",
                    "oauth2_client_credentials"
                ][..]
            ),
            json_with(SPEC_KEYS)
        )
            .prop_map(|(kind, mut v)| {
                if let Value::Object(o) = &mut v {
                    o.insert("type".into(), kind.into());
                }
                v
            }),
    ];
    let overrides = proptest::collection::btree_map(
        prop::sample::select(SPEC_KEYS).prop_map(str::to_owned),
        json_with(SPEC_KEYS),
        0..5,
    );
    (overrides, proptest::option::of(auth)).prop_map(
        move |(overrides, auth): (BTreeMap<String, Value>, _)| {
            let mut spec = base.clone();
            if let Value::Object(o) = &mut spec {
                o.extend(overrides);
                if let Some(auth) = auth {
                    o.insert("auth".into(), auth);
                }
            }
            serde_json::to_vec(&spec).unwrap_or_default()
        },
    )
}

/// `POST /admin/v1/webhooks` bodies through deserialisation and [`crate::webhooks::validate`].
#[test]
fn fuzz_webhook_spec() {
    let bodies = prop_oneof![input(SPEC_KEYS), spec_json(), garbled(json_with(SPEC_KEYS))];
    proptest!(config(), |(body in bodies)| {
        match parse_json::<WebhookSpec>(&body) {
            Ok(spec) => {
                let checked = crate::webhooks::validate(&spec, 60_000);
                if checked.is_ok() {
                    // What validation accepts, the gateway can build a request for (an
                    // inbound-only webhook sends nothing, so has no URL).
                    let inbound_only = spec.url.is_empty()
                        && spec.events.is_empty()
                        && spec.inbound.as_ref().is_some_and(|i| i.enabled);
                    prop_assert!(inbound_only || reqwest::Url::parse(&spec.url).is_ok());
                    prop_assert!(http::Method::from_bytes(spec.method.as_bytes()).is_ok());
                }
                let _ = crate::webhooks::check_name_free(&spec.name);
            }
            Err(e) => prop_assert!(matches!(e.status.as_u16(), 400 | 422)),
        }
    });
}

const HEADER_NAMES: &[&str] = &[
    "authorization",
    "x-api-key",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "content-type",
];

fn header_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..40),
        text().prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..24).prop_map(|raw| {
            use base64::Engine as _;
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
            .into_bytes()
        }),
        Just(b"Basic dTpwYXNz".to_vec()),
        Just(b"Bearer t0ken".to_vec()),
        Just(b"v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE= v1,".to_vec()),
        any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        Just(b"application/x-www-form-urlencoded".to_vec()),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    let name = prop_oneof![
        4 => prop::sample::select(HEADER_NAMES).prop_map(str::to_owned),
        1 => "[a-z-]{1,12}",
    ];
    proptest::collection::vec((name, header_value()), 0..6).prop_map(|pairs| {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(&value),
            ) {
                map.append(n, v);
            }
        }
        map
    })
}

fn inbound_auths() -> Vec<InboundAuth> {
    vec![
        InboundAuth::ApiKey {
            header: "x-api-key".into(),
            value: "k3y".into(),
        },
        InboundAuth::Bearer {
            token: "t0ken".into(),
        },
        InboundAuth::Basic {
            username: "u".into(),
            password: "pass".into(),
        },
        InboundAuth::StandardWebhooks {
            secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into(),
            tolerance_secs: 300,
        },
    ]
}

/// `POST /v1/inbound/{webhook}`: the caller check of every auth type, the body's decoding and
/// the records made from it without a plugin. Never a panic; an API key is accepted exactly when
/// it is the right one; a decoded body is UTF-8 JSON; each record carries every identifying
/// field.
#[test]
fn fuzz_inbound_verification() {
    let paths = prop_oneof![
        Just("id".to_owned()),
        Just("a.b".to_owned()),
        Just(String::new()),
        Just("..".to_owned()),
        Just("a..b".to_owned()),
        "[a-z.\\[\\]0-9]{0,8}",
    ];
    let inbound_body = prop_oneof![
        input(&["id", "a", "b", "email"]),
        proptest::collection::vec(any::<u8>(), 0..64),
    ];
    proptest!(config(), |(headers in headers(), body in inbound_body, identify_by in proptest::collection::vec(paths, 0..3))| {
        for auth in inbound_auths() {
            let verdict = inbound::verify(&auth, &headers, &body);
            if let InboundAuth::ApiKey { value, .. } = &auth {
                let given = headers.get("x-api-key").map(HeaderValue::as_bytes);
                prop_assert_eq!(verdict.is_ok(), given == Some(value.as_bytes()));
            }
        }
        if let Ok(json) = inbound::json_body(&headers, &body) {
            // Well-formed JSON text (numbers beyond f64's range are well-formed, RFC 8259 §6).
            prop_assert!(std::str::from_utf8(&json).is_ok());
            prop_assert!(serde_json::from_slice::<serde::de::IgnoredAny>(&json).is_ok());
            let config = InboundConfig {
                identify_by: identify_by.clone(),
                ..serde_json::from_value(json!({"auth": {"type": "bearer", "token": "t"}})).unwrap()
            };
            if let Ok(records) = inbound::plain_records(&config, &json) {
                for record in records {
                    for field in &identify_by {
                        prop_assert!(record.identifiers.get(field).is_some(), "{field}");
                    }
                }
            }
        }
    });
}

/// A correctly signed inbound push passes; any change to its body fails.
#[test]
fn fuzz_inbound_signatures() {
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let auth = InboundAuth::StandardWebhooks {
        secret: secret.into(),
        tolerance_secs: 300,
    };
    proptest!(config(), |(body in proptest::collection::vec(any::<u8>(), 0..128), id in "[a-zA-Z0-9_]{1,20}", flip in any::<prop::sample::Index>())| {
        let now = crate::model::now_ms() / 1000;
        let signature = crate::delivery::signing::sign(secret, &id, now, &body).unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("webhook-id", HeaderValue::from_str(&id).unwrap());
        headers.insert("webhook-timestamp", HeaderValue::from(now));
        headers.insert("webhook-signature", HeaderValue::from_str(&signature).unwrap());
        prop_assert!(inbound::verify(&auth, &headers, &body).is_ok());
        if !body.is_empty() {
            let mut changed = body.clone();
            let i = flip.index(changed.len());
            changed[i] ^= 0x01;
            prop_assert!(inbound::verify(&auth, &headers, &changed).is_err());
        }
    });
}

const SEGMENTS: &[&str] = &[
    "..", ".", "%2e", "%2E%2e", ".%2e", "", "a", "b", "%2f", "%5C", "..;", ";x", "%", "%zz", "%25",
    "\u{e9}", "?", "#", "\\", "//", "admin",
];

/// Plugin paths and queries: the checks never panic, and whatever they accept is sent under the
/// webhook's path with the webhook's own query kept.
#[test]
fn fuzz_plugin_output() {
    let segment =
        prop_oneof![3 => prop::sample::select(SEGMENTS).prop_map(str::to_owned), 1 => ".{0,6}"];
    let path =
        proptest::collection::vec((segment, prop::sample::select(&["/", "\\", ""][..])), 0..8)
            .prop_map(|parts| {
                parts
                    .into_iter()
                    .map(|(s, sep)| format!("{sep}{s}"))
                    .collect::<String>()
            });
    let query = prop_oneof![".{0,16}", "[a-z=&%0-9]{0,16}", Just("k=2".to_owned())];
    let base = prop::sample::select(
        &[
            "http://h/p-evil",
            "http://h/",
            "http://h",
            "http://h/a/b/",
            "http://h/p?k=1",
        ][..],
    );
    proptest!(config(), |(path in proptest::option::of(path), query in proptest::option::of(query), base in base)| {
        let spec: WebhookSpec = serde_json::from_value(json!({"name": "w", "events": ["t"], "url": base})).unwrap();
        let hook = Webhook { id: "wh_1".into(), spec, created_at: 0, updated_at: 0 };
        let request = OutgoingRequest { path, query, ..OutgoingRequest::json(Vec::new()) };
        if let Ok(checked) = plugin_output::check(&hook, request) {
            let url = plugin_output::target_url(base, &checked);
            prop_assert!(url.is_ok(), "{checked:?}: {url:?}");
            let url = url.unwrap();
            let root = reqwest::Url::parse(base).unwrap();
            let root_path = root.path().trim_end_matches('/');
            prop_assert!(url.path().starts_with(root_path), "{url} from {base}");
            if let Some(own) = root.query() {
                prop_assert!(url.query().is_some_and(|q| q.starts_with(own)), "{url}");
            }
            for segment in url.path().split('/') {
                prop_assert!(!matches!(segment.to_ascii_lowercase().as_str(), ".." | "%2e%2e" | ".%2e" | "%2e."), "{url}");
            }
        }
    });
}
