//! Checks a component's `handler` exports against the WIT before it is accepted, so that a type
//! mismatch names the function that does not match, what it should be and what it is.
//!
//! wasmtime type-checks the exports only when an instance is made, and reports the first
//! mismatch without naming the function (`expected 3-tuple, found 2-tuple`), which then surfaced
//! as an error of whichever export happened to be called first. Here every function of the
//! interface is rendered structurally (parameter names ignored, as the component model does)
//! and compared with the shape the host's bindings expect. The expected shapes are pinned by a
//! test against a component built from `wit/` (`plugin::tests`), so they cannot drift from it.

use std::fmt::Write as _;

use wasmtime::component::types::{ComponentFunc, ComponentItem};
use wasmtime::component::{Component, Type};
use wasmtime::Engine;

/// The exported interface every plugin implements.
pub const HANDLER: &str = "hookyard:plugin/handler@0.1.0";

const WEBHOOK: &str = "record { id: string, name: string, url: string, method: string }";
const EVENT: &str = "record { id: string, event-type: string, occurred-at: string, data: list<u8>, context: list<u8> }";
const PLUGIN_ERROR: &str =
    "variant { invalid-config(string), invalid-input(string), internal(string) }";

/// One function of the interface: its WIT (for the message) and its structural shape.
pub struct ExpectedFunc {
    /// Export name.
    pub name: &'static str,
    /// The declaration in `wit/plugin.wit`.
    pub wit: &'static str,
    params: fn() -> Vec<String>,
    results: fn() -> Vec<String>,
}

fn outgoing_action() -> String {
    "variant { send(list<record { method: option<string>, path: option<string>, query: option<string>, headers: list<tuple<string, string>>, body: list<u8>, content-type: option<string> }>), skip(string) }".to_owned()
}

fn http_response() -> String {
    "record { status: u16, headers: list<tuple<string, string>>, body: list<u8> }".to_owned()
}

fn inbound_request() -> String {
    "record { method: string, path: string, query: string, headers: list<tuple<string, string>>, body: list<u8>, content-type: option<string> }".to_owned()
}

fn inbound_result() -> String {
    "result<list<record { entity: option<string>, identifiers: list<u8>, fields: list<u8> }>, record { status: u16, message: string }>".to_owned()
}

/// The functions of [`HANDLER`], in WIT order.
pub const EXPECTED: &[ExpectedFunc] = &[
    ExpectedFunc {
        name: "validate-config",
        wit: "validate-config: func(config: list<u8>) -> result<_, string>",
        params: || vec!["list<u8>".into()],
        results: || vec!["result<_, string>".into()],
    },
    ExpectedFunc {
        name: "outgoing",
        wit: "outgoing: func(config: list<u8>, hook: webhook, ev: event) -> result<outgoing-action, plugin-error>",
        params: || vec!["list<u8>".into(), WEBHOOK.into(), EVENT.into()],
        results: || vec![format!("result<{}, {PLUGIN_ERROR}>", outgoing_action())],
    },
    ExpectedFunc {
        name: "response",
        wit: "response: func(config: list<u8>, hook: webhook, ev: event, resp: response) -> result<option<list<u8>>, plugin-error>",
        params: || vec!["list<u8>".into(), WEBHOOK.into(), EVENT.into(), http_response()],
        results: || vec![format!("result<option<list<u8>>, {PLUGIN_ERROR}>")],
    },
    ExpectedFunc {
        name: "inbound",
        wit: "inbound: func(config: list<u8>, hook: webhook, req: inbound-request) -> result<list<inbound-record>, rejection>",
        params: || vec!["list<u8>".into(), WEBHOOK.into(), inbound_request()],
        results: || vec![inbound_result()],
    },
];

/// Checks that `component` exports [`HANDLER`] with every function of [`EXPECTED`] in the
/// expected shape; the error names the first function that does not match.
pub fn check(engine: &Engine, component: &Component) -> Result<(), String> {
    let ty = component.component_type();
    let handler = match ty.get_export(engine, HANDLER).map(|e| e.ty) {
        Some(ComponentItem::ComponentInstance(instance)) => instance,
        Some(_) => return Err(format!("export {HANDLER} is not an interface instance")),
        None => {
            let found: Vec<String> = ty.exports(engine).map(|(n, _)| n.to_owned()).collect();
            return Err(format!(
                "the component does not export {HANDLER} (it exports: {})",
                if found.is_empty() {
                    "nothing".to_owned()
                } else {
                    found.join(", ")
                }
            ));
        }
    };
    for expected in EXPECTED {
        let func = match handler.get_export(engine, expected.name).map(|e| e.ty) {
            Some(ComponentItem::ComponentFunc(f)) => f,
            Some(_) => {
                return Err(format!(
                    "export `{}` of {HANDLER} is not a function; expected `{}`",
                    expected.name, expected.wit
                ))
            }
            None => {
                return Err(format!(
                    "{HANDLER} has no function `{}`; expected `{}`",
                    expected.name, expected.wit
                ))
            }
        };
        if let Some(difference) = compare(expected, &func) {
            return Err(format!(
                "export `{}` of {HANDLER} does not match the WIT: {difference}; expected `{}`, found `{}`",
                expected.name,
                expected.wit,
                render_func(expected.name, &func)
            ));
        }
    }
    Ok(())
}

/// The first difference between `found` and `expected`, if any.
fn compare(expected: &ExpectedFunc, found: &ComponentFunc) -> Option<String> {
    let (want_params, want_results) = ((expected.params)(), (expected.results)());
    let params: Vec<String> = found.params().map(|(_, t)| render(&t)).collect();
    let results: Vec<String> = found.results().map(|t| render(&t)).collect();
    if params.len() != want_params.len() {
        return Some(format!(
            "it takes {} parameters where {} are expected",
            params.len(),
            want_params.len()
        ));
    }
    if let Some(i) = (0..params.len()).find(|&i| params[i] != want_params[i]) {
        return Some(format!("parameter {} has another type", i + 1));
    }
    if results != want_results {
        return Some("its result has another type".to_owned());
    }
    None
}

/// A function's signature with its types spelled out.
pub fn render_func(name: &str, func: &ComponentFunc) -> String {
    let params: Vec<String> = func
        .params()
        .map(|(n, t)| format!("{n}: {}", render(&t)))
        .collect();
    let mut out = format!("{name}: func({})", params.join(", "));
    let results: Vec<String> = func.results().map(|t| render(&t)).collect();
    if !results.is_empty() {
        let _ = write!(out, " -> {}", results.join(", "));
    }
    out
}

/// A type spelled out structurally, in WIT syntax with every named type expanded.
pub fn render(ty: &Type) -> String {
    let join = |items: Vec<String>| items.join(", ");
    match ty {
        Type::Bool => "bool".into(),
        Type::S8 => "s8".into(),
        Type::U8 => "u8".into(),
        Type::S16 => "s16".into(),
        Type::U16 => "u16".into(),
        Type::S32 => "s32".into(),
        Type::U32 => "u32".into(),
        Type::S64 => "s64".into(),
        Type::U64 => "u64".into(),
        Type::Float32 => "f32".into(),
        Type::Float64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "string".into(),
        Type::List(l) => format!("list<{}>", render(&l.ty())),
        Type::Record(r) => format!(
            "record {{ {} }}",
            join(
                r.fields()
                    .map(|f| format!("{}: {}", f.name, render(&f.ty)))
                    .collect()
            )
        ),
        Type::Tuple(t) => format!("tuple<{}>", join(t.types().map(|t| render(&t)).collect())),
        Type::Variant(v) => format!(
            "variant {{ {} }}",
            join(
                v.cases()
                    .map(|c| match &c.ty {
                        Some(t) => format!("{}({})", c.name, render(t)),
                        None => c.name.to_owned(),
                    })
                    .collect()
            )
        ),
        Type::Enum(e) => format!(
            "enum {{ {} }}",
            join(e.names().map(str::to_owned).collect())
        ),
        Type::Flags(f) => format!(
            "flags {{ {} }}",
            join(f.names().map(str::to_owned).collect())
        ),
        Type::Option(o) => format!("option<{}>", render(&o.ty())),
        Type::Result(r) => match (r.ok(), r.err()) {
            (None, None) => "result".into(),
            (Some(ok), None) => format!("result<{}>", render(&ok)),
            (None, Some(err)) => format!("result<_, {}>", render(&err)),
            (Some(ok), Some(err)) => format!("result<{}, {}>", render(&ok), render(&err)),
        },
        Type::Own(_) => "own<resource>".into(),
        Type::Borrow(_) => "borrow<resource>".into(),
        Type::Map(m) => format!("map<{}, {}>", render(&m.key()), render(&m.value())),
        Type::Future(_) => "future".into(),
        Type::Stream(_) => "stream".into(),
        Type::ErrorContext => "error-context".into(),
        Type::FixedLengthList(l) => format!("list<{}, {}>", render(&l.ty()), l.len()),
    }
}
