//! `hookyard plugin test`: a project's fixture files run through its component.
//!
//! A fixture (`tests/*.json`) names a hook, its input and the expected output (the format is in
//! the project README and docs/PLUGINS.md). The actual output is turned into the same JSON shape
//! and compared on what the fixture states: only the keys written in an expected request or
//! record; `body`, `fields`, `identifiers` and `write_back` as JSON values; `body_text` byte for
//! byte; header names case-insensitively; error and rejection messages by containment. A
//! mismatch prints a line diff of the expected and actual output (restricted to those keys) and
//! the run exits 1.
//!
//! The project is built first unless its component is newer than every source file, and the
//! component is loaded from the compiled-code cache when unchanged ([`super::local`]): a second
//! run of an unchanged project starts in well under a second.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use hookyard::plugin::{bindings::types, CallError};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::check::{self, Input, Output};
use super::local;
use super::project;
use super::Hook;

/// One fixture file.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    hook: Hook,
    #[serde(default)]
    config: Value,
    event: Option<Value>,
    response: Option<Value>,
    request: Option<Value>,
    expect: Value,
}

/// `plugin test`: returns whether every fixture passed.
pub(super) fn run(dir: &Path, component: Option<&Path>) -> anyhow::Result<bool> {
    let component = match component {
        Some(c) => c.to_owned(),
        None => {
            let output = dir.join(project::OUTPUT);
            if up_to_date(dir, &output) {
                output
            } else {
                eprintln!("building {}", dir.display());
                project::build(dir)?
            }
        }
    };
    let files = fixture_files(&dir.join("tests"))?;
    if files.is_empty() {
        anyhow::bail!(
            "{}: no fixture files (tests/*.json)",
            dir.join("tests").display()
        );
    }
    let fixtures = files
        .iter()
        .map(|path| {
            let value = local::read_json(path)?;
            let fixture: Fixture = serde_json::from_value(value)
                .with_context(|| format!("{} is not a fixture", path.display()))?;
            let input = input(&fixture, &path.display().to_string())?;
            Ok((path, fixture, input))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let local = match local::load(&component)? {
        Ok(l) => l,
        Err(e) => {
            println!("invalid: {}: {e}", component.display());
            return Ok(false);
        }
    };
    println!("{}", local.describe(&component));
    let mut failed = 0;
    for (path, fixture, input) in &fixtures {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let run = local::block_on(check::run_hook(&local, fixture.hook, input))?;
        let actual = actual_json(&run);
        let projected = project(&fixture.expect, &actual, false);
        if projected == fixture.expect {
            println!("ok     {name} ({})", fixture.hook.name());
            continue;
        }
        failed += 1;
        println!(
            "FAILED {name} ({}): - expected, + actual",
            fixture.hook.name()
        );
        print!("{}", diff(&fixture.expect, &projected));
        for line in &run.usage.logs {
            println!("  log {}: {}", line.level, line.message);
        }
        let trapped = matches!(run.output, Some(Err(CallError::Trap(_))));
        if !run.usage.guest_output.is_empty() && !trapped {
            println!("  guest output:\n{}", run.usage.guest_output.trim_end());
        }
    }
    println!("{} passed, {failed} failed", fixtures.len() - failed);
    Ok(failed == 0)
}

/// Whether `output` exists and is newer than every file of the project that goes into it.
fn up_to_date(dir: &Path, output: &Path) -> bool {
    fn newest(dir: &Path, newest_so_far: &mut SystemTime) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.filter_map(Result::ok) {
            let name = entry.file_name();
            if [
                ".venv",
                "node_modules",
                "target",
                "out",
                "tests",
                "__pycache__",
                ".git",
            ]
            .iter()
            .any(|skip| name == *skip)
            {
                continue;
            }
            let path = entry.path();
            if path.is_dir() {
                newest(&path, newest_so_far);
            } else if let Ok(modified) = entry.metadata().and_then(|m| m.modified()) {
                *newest_so_far = (*newest_so_far).max(modified);
            }
        }
    }
    let Ok(built) = std::fs::metadata(output).and_then(|m| m.modified()) else {
        return false;
    };
    let mut sources = SystemTime::UNIX_EPOCH;
    newest(dir, &mut sources);
    built > sources
}

fn fixture_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    Ok(files)
}

fn input(fixture: &Fixture, what: &str) -> anyhow::Result<Input> {
    let mut input = Input {
        config: fixture.config.clone(),
        ..Input::default()
    };
    if let Some(event) = &fixture.event {
        input.event = local::event(event.clone(), &format!("{what}: event"))?;
    }
    if let Some(response) = &fixture.response {
        input.response = local::response(response, &format!("{what}: response"))?;
    }
    if let Some(request) = &fixture.request {
        input.request = local::inbound_request(request, &format!("{what}: request"))?;
    }
    Ok(input)
}

/// A body as JSON when it is JSON, else as text.
fn body_json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(bytes).into_owned()))
}

fn plugin_error_json(e: &types::PluginError) -> Value {
    let (tag, message) = match e {
        types::PluginError::InvalidConfig(m) => ("invalid-config", m),
        types::PluginError::InvalidInput(m) => ("invalid-input", m),
        types::PluginError::Internal(m) => ("internal", m),
    };
    json!({ "error": { tag: message } })
}

/// A run's output in the fixtures' shape.
fn actual_json(run: &check::Run) -> Value {
    if let Err(e) = &run.validate {
        return json!({ "error": { "invalid-config": e } });
    }
    let output = match &run.output {
        None => return Value::Null,
        Some(Err(e)) => return json!({ "failed": e.to_string() }),
        Some(Ok(output)) => output,
    };
    match output {
        Output::Outgoing(Ok(types::OutgoingAction::Skip(reason))) => json!({ "skip": reason }),
        Output::Outgoing(Ok(types::OutgoingAction::Send(requests))) => {
            let requests: Vec<Value> = requests
                .iter()
                .map(|r| {
                    let headers: Map<String, Value> = r
                        .headers
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect();
                    json!({
                        "method": r.method,
                        "path": r.path,
                        "query": r.query,
                        "headers": headers,
                        "content_type": r.content_type,
                        "body": body_json(&r.body),
                        "body_text": String::from_utf8_lossy(&r.body),
                    })
                })
                .collect();
            json!({ "send": requests })
        }
        Output::Outgoing(Err(e)) | Output::Response(Err(e)) => plugin_error_json(e),
        Output::Response(Ok(fields)) => {
            json!({ "write_back": fields.as_deref().map(body_json) })
        }
        Output::Inbound(Ok(records)) => {
            let records: Vec<Value> = records
                .iter()
                .map(|r| {
                    json!({
                        "entity": r.entity,
                        "identifiers": body_json(&r.identifiers),
                        "fields": body_json(&r.fields),
                    })
                })
                .collect();
            json!({ "records": records })
        }
        Output::Inbound(Err(rejection)) => {
            json!({ "rejection": { "status": rejection.status, "message": rejection.message } })
        }
    }
}

/// `actual` seen through `expect`: objects keep only the keys `expect` has (payloads, whose key
/// is one of [`PAYLOADS`], stay whole), header names match case-insensitively, and a message
/// that contains the expected text shows as that text. Equal to `expect` when it matches.
fn project(expect: &Value, actual: &Value, message: bool) -> Value {
    const PAYLOADS: [&str; 4] = ["body", "fields", "identifiers", "write_back"];
    match (expect, actual) {
        (Value::String(want), Value::String(got)) if message && got.contains(want.as_str()) => {
            expect.clone()
        }
        (Value::Object(want), Value::Object(got)) => {
            let mut out = Map::new();
            for (key, want_value) in want {
                let got_value = got.get(key).cloned().or_else(|| {
                    // Header names are case-insensitive.
                    got.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(key))
                        .map(|(_, v)| v.clone())
                });
                let Some(got_value) = got_value else { continue };
                let value = if PAYLOADS.contains(&key.as_str()) {
                    got_value
                } else {
                    let message = message || key == "error" || key == "message" || key == "failed";
                    project(want_value, &got_value, message)
                };
                out.insert(key.clone(), value);
            }
            // Keys of the actual output that the expectation does not name, at the top level
            // (another outcome: `skip` where `send` was expected), stay visible in the diff.
            if want
                .keys()
                .all(|k| !got.keys().any(|g| g.eq_ignore_ascii_case(k)))
            {
                return actual.clone();
            }
            Value::Object(out)
        }
        (Value::Array(want), Value::Array(got)) => Value::Array(
            got.iter()
                .enumerate()
                .map(|(i, g)| match want.get(i) {
                    Some(w) => project(w, g, message),
                    None => g.clone(),
                })
                .collect(),
        ),
        _ => actual.clone(),
    }
}

/// A line diff of two values, pretty-printed.
fn diff(expect: &Value, actual: &Value) -> String {
    let a = serde_json::to_string_pretty(expect).unwrap_or_default() + "\n";
    let b = serde_json::to_string_pretty(actual).unwrap_or_default() + "\n";
    let mut out = String::new();
    for change in similar::TextDiff::from_lines(&a, &b).iter_all_changes() {
        let sign = match change.tag() {
            similar::ChangeTag::Delete => "-",
            similar::ChangeTag::Insert => "+",
            similar::ChangeTag::Equal => " ",
        };
        out.push_str(&format!("  {sign} {change}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_expected_keys_count_and_payloads_compare_whole() {
        let actual = json!({"send": [{"method": null, "headers": {"X-A": "1", "x-b": "2"},
            "body": {"a": 1, "b": [1, 2]}, "body_text": "{\"a\":1,\"b\":[1,2]}"}]});
        let expect = json!({"send": [{"headers": {"x-a": "1"}, "body": {"b": [1, 2], "a": 1}}]});
        assert_eq!(project(&expect, &actual, false), expect);
        let expect = json!({"send": [{"body": {"a": 1}}]});
        assert_ne!(
            project(&expect, &actual, false),
            expect,
            "a body compares whole"
        );
        let expect = json!({"send": [{"body_text": "{\"b\":[1,2],\"a\":1}"}]});
        assert_ne!(
            project(&expect, &actual, false),
            expect,
            "body_text is exact bytes"
        );
    }

    #[test]
    fn messages_match_by_containment_and_other_outcomes_show() {
        let actual = json!({"error": {"invalid-input": "event data has no email field"}});
        let expect = json!({"error": {"invalid-input": "no email"}});
        assert_eq!(project(&expect, &actual, false), expect);
        let expect = json!({"error": {"invalid-config": "no email"}});
        assert_ne!(project(&expect, &actual, false), expect);
        let actual = json!({"skip": "not for us"});
        let expect = json!({"send": []});
        assert_eq!(project(&expect, &actual, false), actual);
        let text = diff(&expect, &actual);
        assert!(
            text.contains("-   \"send\": []") && text.contains("+   \"skip\": \"not for us\""),
            "{text}"
        );
    }
}
