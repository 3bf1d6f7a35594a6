//! JSON Schemas of event data: compiling one (which checks it against its meta-schema) and
//! validating an example with it, through the `jsonschema` crate; and finding out whether a
//! schema describes a field, for the `field-map` check ([`super::fields`]).

use serde_json::Value;

/// Nesting the field lookup follows at most (`$ref` chains and combinators included), so a
/// schema that refers to itself cannot loop.
const MAX_DEPTH: usize = 32;

/// Compiles a schema, which checks it against its meta-schema (draft 2020-12 unless `$schema`
/// names another); the error says what is wrong with it. References are resolved within the
/// document only: nothing is fetched.
pub fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    if !matches!(schema, Value::Object(_) | Value::Bool(_)) {
        return Err("must be a JSON Schema: an object or a boolean".to_owned());
    }
    // An admin's schema is input: whatever the library does with it must not take the
    // request's task down.
    let built = std::panic::catch_unwind(|| jsonschema::validator_for(schema))
        .map_err(|_| "this schema cannot be compiled".to_owned())?;
    built.map_err(|e| describe(&e))
}

/// Validates `instance`; the error names the first place that does not match, and why.
pub fn check(validator: &jsonschema::Validator, instance: &Value) -> Result<(), String> {
    match validator.iter_errors(instance).next() {
        None => Ok(()),
        Some(e) => Err(describe(&e)),
    }
}

fn describe(e: &jsonschema::ValidationError<'_>) -> String {
    let at = e.instance_path().to_string();
    if at.is_empty() {
        e.to_string()
    } else {
        format!("at {at}: {e}")
    }
}

/// What a schema says about a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Knows {
    /// It describes the field.
    Yes,
    /// It lists the fields of the object the path goes through, and not this one.
    No,
    /// It cannot tell: it does not list the properties at some step (an open object, a
    /// `patternProperties` or `additionalProperties` schema, a `$ref` outside the document).
    Unsure,
}

/// Whether `schema` describes the field at `path` (segments of a dotted path; a segment of
/// digits steps into an array's items).
pub fn knows(schema: &Value, path: &[&str]) -> Knows {
    walk(schema, schema, path, 0).unwrap_or(Knows::Unsure)
}

/// What `node` says about `path`; none when it says nothing about fields at all (a schema of
/// constraints only, such as an `anyOf` branch that only lists `required` fields), which
/// leaves the verdict to the rest of the schema.
fn walk(root: &Value, node: &Value, path: &[&str], depth: usize) -> Option<Knows> {
    if depth > MAX_DEPTH {
        return Some(Knows::Unsure);
    }
    let Some((first, rest)) = path.split_first() else {
        return Some(Knows::Yes);
    };
    let object = match node {
        Value::Object(object) => object,
        Value::Bool(false) => return Some(Knows::No),
        _ => return None,
    };
    let mut verdicts = Vec::new();
    if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
        verdicts.push(match resolve(root, reference) {
            Some(target) => walk(root, target, path, depth + 1),
            None => Some(Knows::Unsure),
        });
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        if let Some(Value::Array(branches)) = object.get(combinator) {
            verdicts.extend(branches.iter().map(|b| walk(root, b, path, depth + 1)));
        }
    }
    if first.bytes().all(|b| b.is_ascii_digit()) {
        if let Some(items) = object.get("items") {
            verdicts.push(walk(root, items, rest, depth + 1));
        } else if let Some(Value::Array(prefix)) = object.get("prefixItems") {
            let i: usize = first.parse().unwrap_or(usize::MAX);
            verdicts.push(match prefix.get(i) {
                Some(item) => walk(root, item, rest, depth + 1),
                None => Some(Knows::Unsure),
            });
        }
    }
    if let Some(Value::Object(properties)) = object.get("properties") {
        verdicts.push(match properties.get(*first) {
            Some(property) => walk(root, property, rest, depth + 1),
            None if open_beyond_properties(object) => Some(Knows::Unsure),
            None => Some(Knows::No),
        });
    } else if open_beyond_properties(object) || is_open_object(object) {
        verdicts.push(Some(Knows::Unsure));
    }
    let verdicts: Vec<Knows> = verdicts.into_iter().flatten().collect();
    if verdicts.is_empty() {
        None
    } else if verdicts.contains(&Knows::Yes) {
        Some(Knows::Yes)
    } else if verdicts.contains(&Knows::Unsure) {
        Some(Knows::Unsure)
    } else {
        Some(Knows::No)
    }
}

/// Whether an object schema that lists `properties` describes other fields too: by pattern,
/// or with a schema for the rest. (`additionalProperties` left out, or `true`, allows other
/// fields without describing them: a field the schema does not list is still taken for a
/// typo.)
fn open_beyond_properties(object: &serde_json::Map<String, Value>) -> bool {
    object
        .get("patternProperties")
        .and_then(Value::as_object)
        .is_some_and(|p| !p.is_empty())
        || object
            .get("additionalProperties")
            .is_some_and(Value::is_object)
}

/// An object schema that lists no properties and does not forbid others (`{"type": "object"}`):
/// any field may be there.
fn is_open_object(object: &serde_json::Map<String, Value>) -> bool {
    let is_object = match object.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(types)) => types.iter().any(|t| t == "object"),
        _ => false,
    };
    is_object && object.get("additionalProperties") != Some(&Value::Bool(false))
}

/// A `$ref` within the same document (`#`, `#/$defs/x`, `#/definitions/x`).
fn resolve<'a>(root: &'a Value, reference: &str) -> Option<&'a Value> {
    let pointer = reference.strip_prefix('#')?;
    root.pointer(pointer)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn invalid_schemas_are_refused_with_a_reason() {
        assert!(compile(&json!({"type": "object"})).is_ok());
        assert!(compile(&json!(true)).is_ok());
        for bad in [
            json!({"type": "objekt"}),
            json!({"properties": 5}),
            json!({"required": "name"}),
            json!("object"),
            // Nothing is fetched.
            json!({"$ref": "https://schemas.example.com/user.json"}),
            json!({"$schema": "https://schemas.example.com/meta.json"}),
        ] {
            let e = compile(&bad).unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
    }

    #[test]
    fn examples_are_checked_naming_the_place() {
        let schema = json!({"type": "object", "properties": {
            "id": {"type": "string"},
            "groups": {"type": "array", "items": {"type": "string"}}
        }, "required": ["id"]});
        let v = compile(&schema).unwrap();
        check(&v, &json!({"id": "u1", "groups": ["a"]})).unwrap();
        let e = check(&v, &json!({"id": 7})).unwrap_err();
        assert!(e.contains("/id"), "{e}");
        let e = check(&v, &json!({"id": "u", "groups": ["a", 1]})).unwrap_err();
        assert!(e.contains("/groups/1"), "{e}");
        let e = check(&v, &json!({})).unwrap_err();
        assert!(e.contains("id"), "{e}");
    }

    #[test]
    fn field_lookup_follows_properties_items_refs_and_combinators() {
        let schema = json!({
            "type": "object",
            "$defs": {"address": {"type": "object", "properties": {"city": {"type": "string"}}}},
            "properties": {
                "email": {"type": "string"},
                "address": {"$ref": "#/$defs/address"},
                "groups": {"type": "array", "items": {"type": "object", "properties": {"name": {}}}},
                "extra": {"type": "object"},
                "tags": {"type": "object", "additionalProperties": {"type": "string"}}
            },
            "anyOf": [{"properties": {"phone": {"type": "string"}}}]
        });
        let knows = |p: &str| knows(&schema, &p.split('.').collect::<Vec<_>>());
        assert_eq!(knows("email"), Knows::Yes);
        assert_eq!(knows("emial"), Knows::No);
        assert_eq!(knows("address.city"), Knows::Yes);
        assert_eq!(knows("address.cty"), Knows::No);
        assert_eq!(knows("groups.0.name"), Knows::Yes);
        assert_eq!(knows("groups.0.nme"), Knows::No);
        assert_eq!(knows("phone"), Knows::Yes, "from anyOf");
        assert_eq!(knows("extra.anything"), Knows::Unsure, "an open object");
        assert_eq!(
            knows("tags.x"),
            Knows::Unsure,
            "additionalProperties schema"
        );
        let open = json!({"type": "object"});
        assert_eq!(super::knows(&open, &["x"]), Knows::Unsure);
        let looping = json!({"$ref": "#"});
        assert_eq!(super::knows(&looping, &["x"]), Knows::Unsure);
        // Branches of constraints only leave the verdict to the properties.
        let either = json!({"properties": {"email": {}, "phone": {}},
            "anyOf": [{"required": ["email"]}, {"required": ["phone"]}]});
        assert_eq!(super::knows(&either, &["emal"]), Knows::No);
        assert_eq!(super::knows(&either, &["phone"]), Knows::Yes);
    }
}
