//! Host-side tests of the mapping engine:
//! `cargo test --target x86_64-unknown-linux-gnu -p field-map` (inside `plugins/`).

use serde_json::{json, Map, Value};

use crate::mapping::{
    upper_snake, Conversion, InputError, MapError, Mapping, Record, Source, WebhookField,
    WebhookView,
};
use crate::request::{EventInput, RequestError};

/// The event, as the request table sees it.
#[derive(Debug, Clone, Copy)]
struct EventView<'a> {
    id: &'a str,
    event_type: &'a str,
    timestamp: &'a str,
    data: &'a Value,
    context: &'a Value,
    webhook: WebhookView<'a>,
}

impl Mapping {
    /// The request body for parsed data and context, through [`Mapping::request_body_json`].
    fn request_body(&self, event: &EventView<'_>) -> Result<Option<Value>, MapError> {
        let data = serde_json::to_vec(event.data).unwrap();
        let context = serde_json::to_vec(event.context).unwrap();
        let input = EventInput {
            id: event.id,
            event_type: event.event_type,
            timestamp: event.timestamp,
            data: &data,
            context: &context,
            webhook: event.webhook,
        };
        match self.request_body_json(&input) {
            Ok(body) => Ok(body.map(|b| serde_json::from_slice(&b).expect("the body is JSON"))),
            Err(RequestError::Map(e)) => Err(e),
            Err(RequestError::NotJson(m)) => panic!("serialised values are JSON: {m}"),
        }
    }

    /// The request table evaluated on parsed values, the obvious way: the oracle the lazy
    /// evaluation of [`crate::request`] is checked against.
    fn reference_request_body(&self, event: &EventView<'_>) -> Result<Option<Value>, MapError> {
        if self.request.is_empty() {
            return Ok(None);
        }
        let mut body = Value::Object(Map::new());
        for row in &self.request {
            let resolved = match &row.source {
                Source::Const(value) => Some(value.clone()),
                Source::Path(path) | Source::Data(Some(path)) => path.get(event.data).cloned(),
                Source::Data(None) => Some(event.data.clone()),
                Source::Context(Some(path)) => path.get(event.context).cloned(),
                Source::Context(None) => Some(event.context.clone()),
                Source::EventId => Some(event.id.into()),
                Source::EventType => Some(event.event_type.into()),
                Source::Timestamp => Some(event.timestamp.into()),
                Source::Webhook(field) => Some(
                    match field {
                        WebhookField::Id => event.webhook.id,
                        WebhookField::Name => event.webhook.name,
                        WebhookField::Url => event.webhook.url,
                        WebhookField::Method => event.webhook.method,
                    }
                    .into(),
                ),
                Source::Status | Source::Header(_) | Source::Query(_) => None,
            };
            if let Some(value) = row.value(resolved)? {
                row.target.set(&mut body, value).map_err(|m| row.error(m))?;
            }
        }
        Ok(Some(body))
    }
}

fn mapping(config: Value) -> Mapping {
    Mapping::from_value(&config).unwrap_or_else(|e| panic!("config rejected: {e}"))
}

fn config_error(config: Value) -> String {
    match Mapping::from_value(&config) {
        Ok(m) => panic!("config accepted: {m:?}"),
        Err(e) => e,
    }
}

struct Ev {
    data: Value,
    context: Value,
}

impl Ev {
    fn new(data: Value) -> Ev {
        Ev {
            data,
            context: json!({"tenant": "t1", "actor": {"id": 42}}),
        }
    }

    fn view(&self) -> EventView<'_> {
        EventView {
            id: "ev_1",
            event_type: "user.created",
            timestamp: "2024-05-01T12:00:00Z",
            data: &self.data,
            context: &self.context,
            webhook: WebhookView {
                id: "wh_1",
                name: "crm",
                url: "https://crm.example/hook",
                method: "POST",
            },
        }
    }
}

fn request(m: &Mapping, data: Value) -> Value {
    m.request_body(&Ev::new(data).view())
        .unwrap()
        .expect("a body")
}

fn records(m: &Mapping, body: &str) -> Result<Vec<Record>, InputError> {
    m.input_records(&[], "", body.as_bytes())
        .map(|r| r.expect("records"))
}

// ---- config validation ----

#[test]
fn example_config_is_valid() {
    let m = mapping(json!({
        "request":  [{"api_field": "emp_id", "field": "employee_id"}],
        "response": [{"api_field": "id", "field": "hr_id"}],
        "input":    [{"api_field": "work_email", "field": "email", "identifier": true}]
    }));
    assert_eq!(
        (m.request.len(), m.response.len(), m.input.len()),
        (1, 1, 1)
    );
}

#[test]
fn empty_and_null_configs_are_valid() {
    assert_eq!(Mapping::from_json(b"").unwrap(), Mapping::default());
    assert_eq!(Mapping::from_json(b"null").unwrap(), Mapping::default());
    assert_eq!(Mapping::from_json(b"{}").unwrap(), Mapping::default());
}

#[test]
fn config_that_is_not_an_object_is_rejected() {
    assert!(Mapping::from_json(b"[1]")
        .unwrap_err()
        .contains("must be a JSON object"));
    assert!(Mapping::from_json(b"{nope")
        .unwrap_err()
        .contains("not JSON"));
}

#[test]
fn unknown_top_level_key_is_rejected() {
    assert!(config_error(json!({"requests": []})).contains("unknown key \"requests\""));
}

#[test]
fn unknown_row_key_names_table_and_row() {
    let e = config_error(json!({"request": [
        {"api_field": "a", "field": "a"},
        {"api_field": "b", "feild": "b"}
    ]}));
    assert!(e.contains("request[1]: unknown key \"feild\""), "{e}");
}

#[test]
fn unknown_conversion_names_table_and_row() {
    let e = config_error(json!({"request": [
        {"api_field": "a", "field": "a"},
        {"api_field": "b", "field": "b"},
        {"api_field": "c", "field": "c", "convert": "uppper"}
    ]}));
    assert!(
        e.starts_with("request[2]: unknown conversion \"uppper\""),
        "{e}"
    );
}

#[test]
fn every_problem_is_reported() {
    let e = config_error(json!({
        "request": [{"api_field": "", "field": "a"}, {"api_field": "b", "field": "b", "value": 1}],
        "response": [{"api_field": "x", "field": "y", "identifier": true}],
    }));
    assert!(
        e.contains("request[0]: api_field is missing or empty"),
        "{e}"
    );
    assert!(e.contains("request[1]: has both field and value"), "{e}");
    assert!(
        e.contains("response[0]: identifier is only allowed in input rows"),
        "{e}"
    );
}

#[test]
fn request_row_needs_field_or_value() {
    let e = config_error(json!({"request": [{"api_field": "a"}]}));
    assert!(e.contains("request[0]: has neither field nor value"), "{e}");
}

#[test]
fn input_needs_an_identifier_row() {
    let e = config_error(json!({"input": [{"api_field": "a", "field": "a"}]}));
    assert!(
        e.contains("input: at least one row must be an identifier"),
        "{e}"
    );
}

#[test]
fn response_and_input_rows_need_a_field() {
    let e = config_error(json!({"response": [{"api_field": "a", "value": 1}]}));
    assert!(e.contains("response[0]: field is missing"), "{e}");
}

#[test]
fn wrong_types_in_rows_are_rejected() {
    let e = config_error(json!({"request": [{"api_field": 3, "field": "a", "required": "yes"}]}));
    assert!(e.contains("request[0]: api_field must be a string"), "{e}");
    assert!(
        e.contains("request[0]: required must be true or false"),
        "{e}"
    );
    let e = config_error(json!({"request": {"api_field": "a"}}));
    assert!(e.contains("request: must be a list of rows"), "{e}");
}

#[test]
fn references_are_checked_per_table() {
    let e = config_error(json!({"request": [{"api_field": "a", "field": "@status"}]}));
    assert!(
        e.contains("request[0]: field: unknown reference \"@status\""),
        "{e}"
    );
    let e = config_error(json!({"request": [{"api_field": "@type", "field": "a"}]}));
    assert!(e.contains("can only be read"), "{e}");
    mapping(
        json!({"response": [{"api_field": "@status", "field": "s"}, {"api_field": "@header.location", "field": "l"}]}),
    );
    mapping(json!({"input": [{"api_field": "@query.id", "field": "id", "identifier": true}]}));
}

#[test]
fn colliding_targets_are_rejected() {
    let e = config_error(json!({"request": [
        {"api_field": "user", "field": "a"},
        {"api_field": "user.name", "field": "b"}
    ]}));
    assert!(
        e.contains("request[1]: api_field user.name is inside a field written by request[0]"),
        "{e}"
    );
    let e = config_error(json!({"request": [
        {"api_field": "user.name", "field": "b"},
        {"api_field": "user", "field": "a"}
    ]}));
    assert!(
        e.contains("request[1]: api_field user contains a field written by request[0]"),
        "{e}"
    );
    let e = config_error(json!({"response": [
        {"api_field": "a", "field": "x"},
        {"api_field": "b", "field": "x"}
    ]}));
    assert!(
        e.contains("response[1]: field x is also written by response[0]"),
        "{e}"
    );
    let e = config_error(json!({"request": [
        {"api_field": "groups.0", "field": "a"},
        {"api_field": "groups.name", "field": "b"}
    ]}));
    assert!(e.contains("mixes array indices and keys"), "{e}");
}

#[test]
fn bad_paths_and_methods_are_rejected() {
    let e = config_error(json!({"request": [{"api_field": "a..b", "field": "x"}]}));
    assert!(e.contains("empty segment"), "{e}");
    let e = config_error(json!({"request": [{"api_field": "a.5000", "field": "x"}]}));
    assert!(e.contains("array index 5000"), "{e}");
    let e = config_error(json!({"method": "PO ST"}));
    assert!(e.starts_with("method:"), "{e}");
    let e = config_error(json!({"skip_events": "user.deleted"}));
    assert!(e.starts_with("skip_events:"), "{e}");
}

// ---- request ----

#[test]
fn request_body_holds_exactly_the_mapped_fields() {
    let m = mapping(json!({"request": [
        {"api_field": "emp_id", "field": "employee_id"},
        {"api_field": "user.name", "field": "name.full"},
        {"api_field": "user.mail", "field": "email", "convert": "lower"},
        {"api_field": "kind", "value": "employee"},
        {"api_field": "absent", "field": "nowhere"}
    ]}));
    let body = request(
        &m,
        json!({
            "employee_id": 7, "name": {"full": "Ada L"}, "email": "ADA@X.ORG", "secret": "s3"
        }),
    );
    assert_eq!(
        body,
        json!({"emp_id": 7, "user": {"name": "Ada L", "mail": "ada@x.org"}, "kind": "employee"})
    );
    // Table order is kept.
    let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["emp_id", "user", "kind"]);
}

#[test]
fn request_envelope_references() {
    let m = mapping(json!({"request": [
        {"api_field": "event", "field": "@type", "convert": "upper_snake"},
        {"api_field": "id", "field": "@id"},
        {"api_field": "at", "field": "@timestamp", "convert": "date:unix"},
        {"api_field": "payload", "field": "@data"},
        {"api_field": "tenant", "field": "@context.tenant"},
        {"api_field": "actor", "field": "@context.actor.id"},
        {"api_field": "ctx", "field": "@context"},
        {"api_field": "hook", "field": "@webhook.name"},
        {"api_field": "first", "field": "@data.groups.0"}
    ]}));
    let body = request(&m, json!({"groups": ["admins", "staff"]}));
    assert_eq!(
        body,
        json!({
            "event": "USER_CREATED", "id": "ev_1", "at": 1714564800,
            "payload": {"groups": ["admins", "staff"]},
            "tenant": "t1", "actor": 42, "ctx": {"tenant": "t1", "actor": {"id": 42}},
            "hook": "crm", "first": "admins"
        })
    );
}

#[test]
fn request_array_paths() {
    let m = mapping(json!({"request": [
        {"api_field": "groups.0", "field": "main_group"},
        {"api_field": "groups.1", "field": "other_group"},
        {"api_field": "second", "field": "teams.1.name"}
    ]}));
    let body = request(
        &m,
        json!({"main_group": "a", "other_group": "b", "teams": [{"name": "x"}, {"name": "y"}]}),
    );
    assert_eq!(body, json!({"groups": ["a", "b"], "second": "y"}));
}

#[test]
fn request_defaults_and_nulls() {
    let m = mapping(json!({"request": [
        {"api_field": "country", "field": "country", "default": "FR"},
        {"api_field": "nickname", "field": "nickname"},
        {"api_field": "age", "field": "age", "default": 0}
    ]}));
    assert_eq!(
        request(&m, json!({"nickname": null, "age": null})),
        json!({"country": "FR", "nickname": null, "age": 0})
    );
    assert_eq!(
        request(&m, json!({"country": "DE"})),
        json!({"country": "DE", "age": 0})
    );
}

#[test]
fn missing_required_field_names_the_row() {
    let m = mapping(json!({"request": [
        {"api_field": "a", "field": "a"},
        {"api_field": "emp_id", "field": "employee_id", "required": true}
    ]}));
    let e = m
        .request_body(&Ev::new(json!({"a": 1})).view())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "request[1] (api_field \"emp_id\"): required value is missing"
    );
    let e = m
        .request_body(&Ev::new(json!({"employee_id": null})).view())
        .unwrap_err();
    assert!(e.to_string().starts_with("request[1]"));
    // A default satisfies it.
    let m = mapping(
        json!({"request": [{"api_field": "x", "field": "x", "required": true, "default": 1}]}),
    );
    assert_eq!(request(&m, json!({})), json!({"x": 1}));
}

#[test]
fn failed_conversion_names_the_row() {
    let m = mapping(json!({"request": [{"api_field": "n", "field": "n", "convert": "integer"}]}));
    let e = m
        .request_body(&Ev::new(json!({"n": "seven"})).view())
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "request[0] (api_field \"n\"): cannot apply integer to \"seven\""
    );
}

#[test]
fn empty_request_table_means_default_body() {
    let m = mapping(json!({"request": [], "method": "PUT", "skip_events": ["user.deleted"]}));
    assert_eq!(m.request_body(&Ev::new(json!({})).view()).unwrap(), None);
    assert_eq!(m.method.as_deref(), Some("PUT"));
    assert_eq!(m.skip_events, ["user.deleted"]);
}

// ---- response ----

#[test]
fn response_maps_into_internal_fields() {
    let m = mapping(json!({"response": [
        {"api_field": "id", "field": "hr_id", "convert": "string"},
        {"api_field": "meta.state", "field": "sync.state", "convert": "lower"},
        {"api_field": "@status", "field": "sync.status"},
        {"api_field": "@header.Location", "field": "sync.location"},
        {"api_field": "missing", "field": "x"}
    ]}));
    let headers = [("location".to_string(), "/users/9".to_string())];
    let fields = m
        .response_fields(201, &headers, br#"{"id": 9, "meta": {"state": "ACTIVE"}}"#)
        .unwrap();
    assert_eq!(
        fields,
        Some(
            json!({"hr_id": "9", "sync": {"state": "active", "status": 201, "location": "/users/9"}})
        )
    );
}

#[test]
fn response_none_cases() {
    let empty = mapping(json!({}));
    assert_eq!(
        empty.response_fields(200, &[], br#"{"id": 1}"#).unwrap(),
        None
    );
    let m = mapping(json!({"response": [{"api_field": "id", "field": "hr_id"}]}));
    assert_eq!(
        m.response_fields(200, &[], br#"{"other": 1}"#).unwrap(),
        None
    );
    assert_eq!(
        m.response_fields(200, &[], b"<html>oops</html>").unwrap(),
        None
    );
    assert_eq!(m.response_fields(204, &[], b"").unwrap(), None);
}

#[test]
fn response_required_row_fails_on_non_json() {
    let m = mapping(json!({"response": [{"api_field": "id", "field": "hr_id", "required": true}]}));
    let e = m.response_fields(200, &[], b"not json").unwrap_err();
    assert_eq!(e.row, "response[0] (api_field \"id\")");
}

// ---- input ----

#[test]
fn input_object_becomes_one_record() {
    let m = mapping(json!({"input": [
        {"api_field": "work_email", "field": "email", "identifier": true, "convert": "lower"},
        {"api_field": "name.first", "field": "first_name"},
        {"api_field": "active", "field": "active", "convert": "boolean"},
        {"api_field": "source", "field": "origin", "value": "workday"}
    ]}));
    let r = records(
        &m,
        r#"{"work_email": "Ada@X.org", "name": {"first": "Ada"}, "active": "yes", "extra": 1}"#,
    )
    .unwrap();
    assert_eq!(
        r,
        [Record {
            identifiers: json!({"email": "ada@x.org"}),
            fields: json!({"email": "ada@x.org", "first_name": "Ada", "active": true, "origin": "workday"}),
        }]
    );
}

#[test]
fn input_array_becomes_one_record_each() {
    let m = mapping(json!({"input": [{"api_field": "id", "field": "ext.id", "identifier": true}]}));
    let r = records(&m, r#"[{"id": 1}, {"id": 2}]"#).unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!(r[1].identifiers, json!({"ext": {"id": 2}}));
    assert_eq!(records(&m, "[]").unwrap(), []);
}

#[test]
fn input_missing_identifier_is_422() {
    let m = mapping(json!({"input": [
        {"api_field": "name", "field": "name"},
        {"api_field": "work_email", "field": "email", "identifier": true}
    ]}));
    let e = records(&m, r#"{"name": "Ada"}"#).unwrap_err();
    assert_eq!(
        e,
        InputError::Unprocessable("missing identifier field work_email (row 1)".into())
    );
    assert_eq!(e.status(), 422);
    let e = records(&m, r#"{"work_email": null}"#).unwrap_err();
    assert_eq!(e.message(), "missing identifier field work_email (row 1)");
    // An empty or blank string identifies nothing either (JIT would create a record without
    // an id).
    for empty in [r#""""#, r#"" ""#] {
        let e = records(&m, &format!(r#"{{"work_email": {empty}}}"#)).unwrap_err();
        assert_eq!(e.message(), "missing identifier field work_email (row 1)");
    }
}

#[test]
fn input_array_errors_name_the_item() {
    let m = mapping(json!({"input": [
        {"api_field": "emp_id", "field": "employee_id", "identifier": true},
        {"api_field": "age", "field": "age", "convert": "integer"}
    ]}));
    let e = records(&m, r#"[{"emp_id": "E1"}, {"emp_id": ""}]"#).unwrap_err();
    assert_eq!(
        e.message(),
        "item 1 of the body: missing identifier field emp_id (row 0)"
    );
    let e = records(
        &m,
        r#"[{"emp_id": "E1"}, {"emp_id": "E2"}, {"emp_id": "E3", "age": "old"}]"#,
    )
    .unwrap_err();
    assert!(
        e.message().starts_with("item 2 of the body: input[1]"),
        "{e:?}"
    );
    // A single object is not an item of anything.
    let e = records(&m, r#"{"emp_id": ""}"#).unwrap_err();
    assert_eq!(e.message(), "missing identifier field emp_id (row 0)");
}

#[test]
fn input_malformed_is_400_and_non_objects_422() {
    let m = mapping(json!({"input": [{"api_field": "id", "field": "id", "identifier": true}]}));
    let e = records(&m, "{nope").unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.message().starts_with("body is not JSON"));
    assert_eq!(records(&m, "3").unwrap_err().status(), 422);
    assert_eq!(
        records(&m, r#"[{"id": 1}, 2]"#).unwrap_err().message(),
        "item 1 of the body must be a JSON object, not 2"
    );
}

#[test]
fn input_headers_and_query() {
    let m = mapping(json!({"input": [
        {"api_field": "@query.user id", "field": "id", "identifier": true, "convert": "integer"},
        {"api_field": "@header.X-Tenant", "field": "tenant"}
    ]}));
    let headers = [("x-tenant".to_string(), "t9".to_string())];
    let r = m
        .input_records(&headers, "a=1&user%20id=%2042+&b", b"{}")
        .unwrap()
        .unwrap();
    assert_eq!(r[0].fields, json!({"id": 42, "tenant": "t9"}));
}

#[test]
fn empty_input_table_means_default_mapping() {
    assert_eq!(
        mapping(json!({})).input_records(&[], "", b"{}").unwrap(),
        None
    );
}

// ---- conversions ----

fn convert(name: &str, value: Value) -> Result<Value, String> {
    Conversion::parse(name)
        .expect("known conversion")
        .apply(value)
}

#[test]
fn text_conversions() {
    assert_eq!(convert("upper", json!("abc")).unwrap(), json!("ABC"));
    assert_eq!(convert("lower", json!("ÀBC")).unwrap(), json!("àbc"));
    assert_eq!(convert("trim", json!("  a b ")).unwrap(), json!("a b"));
    assert_eq!(
        convert("upper_snake", json!("user.created")).unwrap(),
        json!("USER_CREATED")
    );
    assert_eq!(upper_snake("userCreated"), "USER_CREATED");
    assert_eq!(upper_snake("order-line item"), "ORDER_LINE_ITEM");
    assert_eq!(upper_snake("..a..b.."), "A_B");
    assert_eq!(upper_snake("HTTPServer2go"), "HTTPSERVER2GO");
    assert!(convert("upper", json!(1))
        .unwrap_err()
        .contains("cannot apply upper to 1"));
    assert_eq!(convert("upper", Value::Null).unwrap(), Value::Null);
}

#[test]
fn scalar_conversions() {
    assert_eq!(convert("string", json!(12)).unwrap(), json!("12"));
    assert_eq!(convert("string", json!(1.5)).unwrap(), json!("1.5"));
    assert_eq!(convert("string", json!(true)).unwrap(), json!("true"));
    assert!(convert("string", json!({})).is_err());
    assert_eq!(convert("number", json!(" 12 ")).unwrap(), json!(12));
    assert_eq!(convert("number", json!("1.25")).unwrap(), json!(1.25));
    assert!(convert("number", json!("x")).is_err());
    assert!(convert("number", json!("NaN")).is_err());
    assert_eq!(convert("integer", json!("42")).unwrap(), json!(42));
    assert_eq!(convert("integer", json!(42.0)).unwrap(), json!(42));
    assert_eq!(convert("integer", json!("7.0")).unwrap(), json!(7));
    assert!(convert("integer", json!(4.5)).is_err());
    assert!(convert("integer", json!(true)).is_err());
    for (input, expected) in [
        ("true", true),
        ("FALSE", false),
        ("1", true),
        ("0", false),
        ("yes", true),
        (" No ", false),
    ] {
        assert_eq!(
            convert("boolean", json!(input)).unwrap(),
            json!(expected),
            "{input}"
        );
    }
    assert_eq!(convert("boolean", json!(1)).unwrap(), json!(true));
    assert_eq!(convert("boolean", json!(false)).unwrap(), json!(false));
    assert!(convert("boolean", json!("maybe")).is_err());
    assert!(convert("boolean", json!(2)).is_err());
}

#[test]
fn date_conversions() {
    let t = json!("2024-05-01T12:00:00Z");
    assert_eq!(convert("date:unix", t.clone()).unwrap(), json!(1714564800));
    assert_eq!(
        convert("date:unix_ms", t.clone()).unwrap(),
        json!(1714564800000i64)
    );
    assert_eq!(
        convert("date:date", t.clone()).unwrap(),
        json!("2024-05-01")
    );
    assert_eq!(
        convert("date:rfc3339", t).unwrap(),
        json!("2024-05-01T12:00:00Z")
    );
    // Offsets: rfc3339 and unix are in UTC, date keeps the local date.
    let local = json!("2024-05-01T23:30:00-05:00");
    assert_eq!(
        convert("date:rfc3339", local.clone()).unwrap(),
        json!("2024-05-02T04:30:00Z")
    );
    assert_eq!(convert("date:date", local).unwrap(), json!("2024-05-01"));
    // Unix numbers: seconds, or milliseconds when large; also as strings.
    assert_eq!(
        convert("date:rfc3339", json!(1714564800)).unwrap(),
        json!("2024-05-01T12:00:00Z")
    );
    assert_eq!(
        convert("date:rfc3339", json!(1714564800123i64)).unwrap(),
        json!("2024-05-01T12:00:00.123Z")
    );
    assert_eq!(
        convert("date:unix", json!("1714564800")).unwrap(),
        json!(1714564800)
    );
    assert_eq!(
        convert("date:unix_ms", json!(1714564800.5)).unwrap(),
        json!(1714564800500i64)
    );
    // Date-only strings are midnight UTC.
    assert_eq!(
        convert("date:unix", json!("1970-01-02")).unwrap(),
        json!(86400)
    );
    assert_eq!(convert("date:date", json!(0)).unwrap(), json!("1970-01-01"));
    assert_eq!(convert("date:unix", json!(-86400)).unwrap(), json!(-86400));
    for bad in [
        json!("yesterday"),
        json!("2024-13-01"),
        json!("2024-02-30"),
        json!(true),
        json!([1]),
    ] {
        assert!(convert("date:unix", bad.clone()).is_err(), "{bad}");
    }
}

/// Every conversion's name, as a config spells it.
pub(crate) const CONVERSIONS: &[&str] = &[
    "upper",
    "lower",
    "trim",
    "string",
    "number",
    "integer",
    "boolean",
    "upper_snake",
    "date:rfc3339",
    "date:date",
    "date:unix",
    "date:unix_ms",
];

#[test]
fn every_conversion_name_round_trips() {
    for &name in CONVERSIONS {
        assert_eq!(Conversion::parse(name).unwrap().name(), name);
    }
    assert_eq!(Conversion::parse("date:iso"), None);
}

// ---- properties ----

#[cfg(not(target_arch = "wasm32"))]
mod properties {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde_json::{json, Map, Value};

    use super::*;

    /// Simple keys: no dots, not numeric, not a reference.
    fn key() -> impl Strategy<Value = String> {
        "[a-z_][a-z0-9_]{0,8}"
    }

    /// A dotted path of simple keys.
    fn path() -> impl Strategy<Value = String> {
        prop::collection::vec(key(), 1..4).prop_map(|segments| segments.join("."))
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-1e9f64..1e9).prop_map(Value::from),
            ".{0,12}".prop_map(Value::from),
        ]
    }

    fn json_value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(key(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Paths where none is a prefix of another (so they can all be targets of one table).
    fn disjoint_paths(max: usize) -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(path(), 1..max).prop_map(|paths| {
            let mut kept: Vec<String> = Vec::new();
            for p in paths {
                let clash = kept.iter().any(|k| {
                    k == &p || p.starts_with(&format!("{k}.")) || k.starts_with(&format!("{p}."))
                });
                if !clash {
                    kept.push(p);
                }
            }
            kept
        })
    }

    /// Segments shared by documents and paths, so that paths often exist.
    fn segment() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "0", "1", "x"]).prop_map(str::to_owned)
    }

    /// Documents built of the shared segments: nested objects and arrays, scalars at the leaves.
    fn shared_value() -> impl Strategy<Value = Value> {
        scalar().prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
                prop::collection::btree_map(segment(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// A row's column name: mostly known ones, sometimes not.
    fn column() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "api_field",
            "api_field",
            "field",
            "field",
            "value",
            "default",
            "convert",
            "required",
            "identifier",
            "bogus",
        ])
        .prop_map(str::to_owned)
    }

    /// A column's value: mostly of a type some column expects.
    fn column_value() -> impl Strategy<Value = Value> {
        prop_oneof![
            3 => prop::sample::select(vec!["a", "b.c", "@type", "@status", "x.0", "lower", "date:unix", ""])
                .prop_map(Value::from),
            1 => any::<bool>().prop_map(Value::from),
            1 => scalar(),
        ]
    }

    /// A row's source: a field (a path of shared segments or a reference), or a constant.
    fn source() -> impl Strategy<Value = Result<String, Value>> {
        let path = || prop::collection::vec(segment(), 1..4).prop_map(|s| s.join("."));
        prop_oneof![
            4 => path().prop_map(Ok),
            1 => path().prop_map(|p| Ok(format!("@data.{p}"))),
            1 => path().prop_map(|p| Ok(format!("@context.{p}"))),
            1 => prop::sample::select(vec![
                "@id", "@type", "@timestamp", "@data", "@context", "@webhook.id",
                "@webhook.name", "@webhook.url", "@webhook.method",
            ])
            .prop_map(|r| Ok(r.to_owned())),
            1 => scalar().prop_map(Err),
        ]
    }

    fn rows(pairs: &[(String, String)]) -> Value {
        pairs
            .iter()
            .map(|(api, field)| json!({"api_field": api, "field": field}))
            .collect()
    }

    fn event(data: &Value) -> Ev {
        Ev::new(data.clone())
    }

    proptest! {
        /// Identity rows (api_field == field) send back any flat object of simple keys.
        #[test]
        fn identity_rows_round_trip_flat_objects(object in prop::collection::btree_map(key(), json_value(), 0..8)) {
            let pairs: Vec<(String, String)> = object.keys().map(|k| (k.clone(), k.clone())).collect();
            let m = mapping(json!({"request": rows(&pairs), "response": rows(&pairs)}));
            let data = Value::Object(object.clone().into_iter().collect());
            if pairs.is_empty() {
                prop_assert_eq!(m.request_body(&event(&data).view()).unwrap(), None);
            } else {
                let body = m.request_body(&event(&data).view()).unwrap().unwrap();
                prop_assert_eq!(&body, &data);
                // And the response table maps the body back to the same fields.
                let back = m.response_fields(200, &[], body.to_string().as_bytes()).unwrap();
                prop_assert_eq!(back, Some(data));
            }
        }

        /// The body's keys are exactly the api_fields whose field is present in the data.
        #[test]
        fn body_keys_are_the_mapped_fields_present(
            fields in prop::collection::btree_set(key(), 1..8),
            present in prop::collection::vec(any::<bool>(), 8),
            values in prop::collection::vec(json_value(), 8),
        ) {
            let fields: Vec<String> = fields.into_iter().collect();
            let pairs: Vec<(String, String)> =
                fields.iter().map(|f| (format!("api_{f}"), f.clone())).collect();
            let m = mapping(json!({"request": rows(&pairs)}));
            let mut data = Map::new();
            data.insert("unmapped_extra".into(), json!(1));
            let mut expected = Vec::new();
            for (i, f) in fields.iter().enumerate() {
                if present[i] {
                    data.insert(f.clone(), values[i].clone());
                    expected.push(format!("api_{f}"));
                }
            }
            let body = m.request_body(&event(&Value::Object(data)).view()).unwrap().unwrap();
            let keys: Vec<String> = body.as_object().unwrap().keys().cloned().collect();
            prop_assert_eq!(keys, expected);
        }

        /// Mapping a request body back with the rows swapped recovers the original fields
        /// (nested paths on both sides).
        #[test]
        fn swapped_response_rows_recover_the_fields(
            internal in disjoint_paths(6),
            api in disjoint_paths(6),
            values in prop::collection::vec(json_value(), 6),
        ) {
            let n = internal.len().min(api.len());
            let request_rows: Vec<(String, String)> =
                (0..n).map(|i| (api[i].clone(), internal[i].clone())).collect();
            let response_rows: Vec<Value> = (0..n)
                .map(|i| json!({"api_field": api[i], "field": internal[i]}))
                .collect();
            let m = mapping(json!({"request": rows(&request_rows), "response": response_rows}));
            let mut data = Value::Object(Map::new());
            for i in 0..n {
                crate::mapping::Path(internal[i].split('.').map(str::to_owned).collect())
                    .set(&mut data, values[i].clone())
                    .unwrap();
            }
            let body = m.request_body(&event(&data).view()).unwrap().unwrap();
            let back = m.response_fields(200, &[], &serde_json::to_vec(&body).unwrap()).unwrap();
            prop_assert_eq!(back, Some(data));
        }

        /// Input rows are the mirror of request rows: pushing a request body gives back the
        /// data as the record's fields.
        #[test]
        fn input_inverts_request(object in prop::collection::btree_map(key(), scalar(), 1..6)) {
            let object: BTreeMap<String, Value> = object
                .into_iter()
                // An identifier must identify: null and blank strings are refused.
                .map(|(k, v)| {
                    let blank = v.is_null() || v.as_str().is_some_and(|s| s.trim().is_empty());
                    (k, if blank { json!(0) } else { v })
                })
                .collect();
            let keys: Vec<&String> = object.keys().collect();
            let request_rows: Vec<Value> =
                keys.iter().map(|k| json!({"api_field": format!("ext.{k}"), "field": k})).collect();
            let input_rows: Vec<Value> = keys
                .iter()
                .enumerate()
                .map(|(i, k)| json!({"api_field": format!("ext.{k}"), "field": k, "identifier": i == 0}))
                .collect();
            let m = mapping(json!({"request": request_rows, "input": input_rows}));
            let data = Value::Object(object.clone().into_iter().collect());
            let body = m.request_body(&event(&data).view()).unwrap().unwrap();
            let records = m.input_records(&[], "", body.to_string().as_bytes()).unwrap().unwrap();
            prop_assert_eq!(records.len(), 1);
            prop_assert_eq!(&records[0].fields, &data);
            let first = keys[0].clone();
            prop_assert_eq!(&records[0].identifiers, &json!({first.clone(): object[&first].clone()}));
        }

        /// Config validation and mapping never panic, whatever the JSON.
        #[test]
        fn arbitrary_configs_never_panic(config in json_value(), data in json_value()) {
            if let Ok(m) = Mapping::from_value(&config) {
                let _ = m.request_body(&event(&data).view());
                let _ = m.response_fields(200, &[], data.to_string().as_bytes());
                let _ = m.input_records(&[], "", data.to_string().as_bytes());
            }
        }

        /// Rows built from random paths and conversions are either accepted or rejected with a
        /// message naming the table and row; mapping with them never panics.
        #[test]
        fn random_rows_never_panic(
            targets in prop::collection::vec("[a-z0-9.@]{0,10}", 1..5),
            sources in prop::collection::vec("[a-z0-9.@]{0,10}", 5),
            converts in prop::collection::vec(prop::option::of(prop::sample::select(
                CONVERSIONS.iter().copied().chain(["bogus"]).collect::<Vec<_>>()
            )), 5),
            data in json_value(),
        ) {
            let request: Vec<Value> = targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut row = json!({"api_field": t, "field": sources[i]});
                    if let Some(c) = converts[i] {
                        row["convert"] = json!(c);
                    }
                    row
                })
                .collect();
            match Mapping::from_value(&json!({"request": request})) {
                Ok(m) => {
                    let _ = m.request_body(&event(&data).view());
                }
                Err(e) => prop_assert!(e.starts_with("request["), "{}", e),
            }
        }

        /// The request table evaluated lazily on raw JSON agrees with the same table evaluated
        /// on parsed values: same body (as JSON), or the same error, for random rows reading
        /// random documents (nested objects and arrays, missing paths, nulls, conversions,
        /// defaults, required rows, constants and references).
        #[test]
        fn lazy_request_matches_the_value_oracle(
            data in shared_value(),
            context in shared_value(),
            targets in disjoint_paths(6),
            sources in prop::collection::vec(source(), 6),
            converts in prop::collection::vec(prop::option::of(prop::sample::select(CONVERSIONS.to_vec())), 6),
            defaults in prop::collection::vec(prop::option::of(scalar()), 6),
            required in prop::collection::vec(any::<bool>(), 6),
        ) {
            let request: Vec<Value> = targets
                .iter()
                .enumerate()
                .map(|(i, target)| {
                    let mut row = json!({"api_field": target, "required": required[i]});
                    match &sources[i] {
                        Err(constant) => row["value"] = constant.clone(),
                        Ok(field) => {
                            row["field"] = json!(field);
                            if let Some(c) = converts[i] {
                                row["convert"] = json!(c);
                            }
                            if let Some(d) = &defaults[i] {
                                row["default"] = d.clone();
                            }
                        }
                    }
                    row
                })
                .collect();
            let m = mapping(json!({"request": request}));
            let ev = Ev { data, context };
            prop_assert_eq!(m.request_body(&ev.view()), m.reference_request_body(&ev.view()));
        }

        /// Reading a config straight into typed rows (the fast path of `from_json`) gives what
        /// reading it as a `Value` gives: the same mapping, or the same list of problems.
        #[test]
        fn typed_config_matches_the_value_path(
            tables in prop::collection::vec(
                (prop::sample::select(vec!["request", "response", "input"]),
                 prop::collection::vec(
                     (path(), path(), prop::collection::vec((column(), column_value()), 0..3)),
                     0..4)),
                0..3),
            method in prop::option::of(prop_oneof![Just(json!("PUT")), Just(json!("P T")), Just(json!(1)), Just(Value::Null)]),
            skip in prop::option::of(prop_oneof![Just(json!(["a.b"])), Just(json!([1])), Just(Value::Null)]),
        ) {
            let mut config = Map::new();
            for (name, rows) in tables {
                // A valid row, then columns added or overwritten at random.
                let rows: Vec<Value> = rows
                    .into_iter()
                    .map(|(api_field, field, columns)| {
                        let mut row = json!({"api_field": api_field, "field": field});
                        for (column, value) in columns {
                            row[column] = value;
                        }
                        row
                    })
                    .collect();
                config.insert(name.to_owned(), Value::from(rows));
            }
            if let Some(method) = method {
                config.insert("method".into(), method);
            }
            if let Some(skip) = skip {
                config.insert("skip_events".into(), skip);
            }
            let config = Value::Object(config);
            let bytes = serde_json::to_vec(&config).unwrap();
            prop_assert_eq!(Mapping::from_json(&bytes), Mapping::from_value(&config));
        }

        /// Date conversions agree with each other: unix → rfc3339 → unix is the identity.
        #[test]
        fn unix_rfc3339_round_trip(seconds in -62_000_000_000i64..99_000_000_000i64) {
            let text = convert("date:rfc3339", json!(seconds)).unwrap();
            prop_assert_eq!(convert("date:unix", text).unwrap(), json!(seconds));
        }

        /// `upper_snake` output is uppercase letters, digits and single inner underscores.
        #[test]
        fn upper_snake_shape(text in "[a-zA-Z0-9 ._-]{0,20}") {
            let out = upper_snake(&text);
            prop_assert!(!out.starts_with('_') && !out.ends_with('_') && !out.contains("__"), "{}", out);
            prop_assert!(out.chars().all(|c| c == '_' || c.is_ascii_digit() || c.is_ascii_uppercase()), "{}", out);
        }
    }
}

/// The example of `plugins/README.md`, kept true.
#[test]
fn readme_example() {
    let m = mapping(json!({
        "request": [
            {"api_field": "emp_id",     "field": "employee_id", "required": true},
            {"api_field": "user.email", "field": "email", "convert": "lower"},
            {"api_field": "user.name",  "field": "name.full", "default": ""},
            {"api_field": "event",      "field": "@type", "convert": "upper_snake"},
            {"api_field": "sent_at",    "field": "@timestamp", "convert": "date:unix"},
            {"api_field": "source",     "value": "hookyard"}
        ],
        "response": [
            {"api_field": "id", "field": "hr_id", "convert": "string"}
        ],
        "input": [
            {"api_field": "work_email", "field": "email", "identifier": true, "convert": "lower"},
            {"api_field": "active",     "field": "enabled", "convert": "boolean"}
        ],
        "method": "PUT",
        "skip_events": ["user.deleted"]
    }));
    let body = request(
        &m,
        json!({"employee_id": 7, "email": "Ada@X.org", "name": {"full": "Ada L"}}),
    );
    assert_eq!(
        body.to_string(),
        r#"{"emp_id":7,"user":{"email":"ada@x.org","name":"Ada L"},"event":"USER_CREATED","sent_at":1714564800,"source":"hookyard"}"#
    );
    assert_eq!(m.method.as_deref(), Some("PUT"));
    assert_eq!(
        m.response_fields(200, &[], br#"{"id": 9001}"#).unwrap(),
        Some(json!({"hr_id": "9001"}))
    );
    let r = records(&m, r#"{"work_email": "Bob@X.org", "active": "yes"}"#).unwrap();
    assert_eq!(r[0].identifiers, json!({"email": "bob@x.org"}));
    assert_eq!(r[0].fields, json!({"email": "bob@x.org", "enabled": true}));
    let e = records(&m, r#"{"active": "yes"}"#).unwrap_err();
    assert_eq!(e.message(), "missing identifier field work_email (row 0)");
}
