//! `hookyard plugin check`: one hook of a component on a sample or given input.
//!
//! The output is what the gateway would send, byte for byte (a body is printed as is; `--pretty`
//! indents JSON and keeps its key order), followed by the plugin's `log` lines, what it wrote to
//! stdout and stderr, the time taken and the memory used. With no input files the sample of
//! [`hookyard::plugin::sample`] is used: the event the gateway's upload smoke call uses, so a
//! plugin that passes here passes that call too.

use std::io::Write as _;
use std::path::PathBuf;

use clap::Args;
use hookyard::model::Event;
use hookyard::plugin::{self, bindings::types, sample, CallError, Usage};

use super::local::{self, Local};
use super::Hook;

/// Arguments of `plugin check`.
#[derive(Args)]
pub struct CheckArgs {
    /// The component (.wasm).
    file: PathBuf,
    /// The hook to run.
    #[arg(long, value_enum, default_value = "outgoing")]
    hook: Hook,
    /// An event as posted to /v1/events (JSON); the sample `user.created` when absent.
    #[arg(long)]
    event: Option<PathBuf>,
    /// The webhook's plugin config (JSON); `null` when absent.
    #[arg(long)]
    config: Option<PathBuf>,
    /// For `--hook response`: the third party's answer, `{"status", "headers", "body"}`.
    #[arg(long)]
    response: Option<PathBuf>,
    /// For `--hook inbound`: the push, `{"method", "path", "query", "headers", "body"}`.
    #[arg(long)]
    request: Option<PathBuf>,
    /// Indent JSON bodies (key order kept) instead of printing the exact bytes.
    #[arg(long)]
    pretty: bool,
}

/// The inputs of one hook call.
pub(super) struct Input {
    pub(super) config: serde_json::Value,
    pub(super) event: Event,
    pub(super) response: types::Response,
    pub(super) request: types::InboundRequest,
}

impl Default for Input {
    fn default() -> Self {
        Input {
            config: serde_json::Value::Null,
            event: sample::event(),
            response: sample::response(),
            request: sample::inbound_request(),
        }
    }
}

/// What a hook returned.
pub(super) enum Output {
    Outgoing(Result<types::OutgoingAction, types::PluginError>),
    Response(Result<Option<Vec<u8>>, types::PluginError>),
    Inbound(Result<Vec<types::InboundRecord>, types::Rejection>),
}

/// One run: `validate-config`, then the hook (not run when the config is refused).
pub(super) struct Run {
    pub(super) validate: Result<(), String>,
    pub(super) output: Option<Result<Output, CallError>>,
    pub(super) usage: Usage,
}

/// Runs `validate-config` and `hook` on `input`.
pub(super) async fn run_hook(local: &Local, hook: Hook, input: &Input) -> Run {
    let (rt, p) = (&local.runtime, &local.plugin);
    let validate = plugin::call_validate_config(rt, p, &input.config).await;
    if validate.is_err() {
        return Run {
            validate,
            output: None,
            usage: Usage::default(),
        };
    }
    let config = &input.config;
    let (output, usage) = match hook {
        Hook::Outgoing => {
            let (r, u) =
                plugin::call_outgoing(rt, p, config, sample::webhook(), &input.event).await;
            (r.map(Output::Outgoing), u)
        }
        Hook::Response => {
            let ev = plugin::wit_event(&input.event);
            let (r, u) =
                plugin::call_response(rt, p, config, sample::webhook(), ev, input.response.clone())
                    .await;
            (r.map(Output::Response), u)
        }
        Hook::Inbound => {
            let (r, u) =
                plugin::call_inbound(rt, p, config, sample::webhook(), input.request.clone()).await;
            (r.map(Output::Inbound), u)
        }
    };
    Run {
        validate,
        output: Some(output),
        usage,
    }
}

/// `plugin check`: returns whether the plugin passed.
pub(super) fn run(args: &CheckArgs) -> anyhow::Result<bool> {
    let mut input = Input::default();
    if let Some(path) = &args.config {
        input.config = local::read_json(path)?;
    }
    if let Some(path) = &args.event {
        input.event = local::event(local::read_json(path)?, &path.display().to_string())?;
    }
    if let Some(path) = &args.response {
        input.response = local::response(&local::read_json(path)?, &path.display().to_string())?;
    }
    if let Some(path) = &args.request {
        input.request =
            local::inbound_request(&local::read_json(path)?, &path.display().to_string())?;
    }
    let local = match local::load(&args.file)? {
        Ok(l) => l,
        Err(e) => {
            println!("invalid: {e}");
            return Ok(false);
        }
    };
    println!("{}", local.describe(&args.file));
    let run = local::block_on(run_hook(&local, args.hook, &input))?;
    let mut out = std::io::stdout().lock();
    let passed = print_run(&mut out, args.hook, &run, args.pretty)?;
    out.flush()?;
    Ok(passed)
}

/// Prints a run; returns whether the plugin passed (a refused config, a plugin error, a trap
/// or a limit are failures; a skip or an inbound rejection are answers).
pub(super) fn print_run(
    out: &mut impl std::io::Write,
    hook: Hook,
    run: &Run,
    pretty: bool,
) -> std::io::Result<bool> {
    if let Err(e) = &run.validate {
        writeln!(out, "validate-config: rejected: {e}")?;
        return Ok(false);
    }
    writeln!(out, "validate-config: ok")?;
    let name = hook.name();
    let passed = match &run.output {
        None => false,
        Some(Err(e)) => {
            writeln!(out, "{name}: failed: {e}")?;
            false
        }
        Some(Ok(output)) => print_output(out, output, pretty)?,
    };
    for line in &run.usage.logs {
        writeln!(out, "log {}: {}", line.level, line.message)?;
    }
    // A trap's message carries the guest output already.
    let trapped = matches!(run.output, Some(Err(CallError::Trap(_))));
    if !run.usage.guest_output.is_empty() && !trapped {
        writeln!(out, "guest output:\n{}", run.usage.guest_output.trim_end())?;
    }
    writeln!(
        out,
        "time: {:.3} ms (instantiation included), memory: {} KiB peak",
        run.usage.duration.as_secs_f64() * 1000.0,
        run.usage.peak_memory / 1024
    )?;
    Ok(passed)
}

fn print_output(
    out: &mut impl std::io::Write,
    output: &Output,
    pretty: bool,
) -> std::io::Result<bool> {
    match output {
        Output::Outgoing(Ok(types::OutgoingAction::Skip(reason))) => {
            writeln!(out, "outgoing: skip: {reason}")?;
            Ok(true)
        }
        Output::Outgoing(Ok(types::OutgoingAction::Send(requests))) => {
            writeln!(out, "outgoing: send {} request(s)", requests.len())?;
            for (i, r) in requests.iter().enumerate() {
                writeln!(
                    out,
                    "request {}: {} {}{}",
                    i + 1,
                    r.method.as_deref().unwrap_or("(webhook's method)"),
                    r.path.as_deref().unwrap_or("(webhook's path)"),
                    r.query
                        .as_deref()
                        .map(|q| format!("?{q}"))
                        .unwrap_or_default()
                )?;
                writeln!(
                    out,
                    "content-type: {}",
                    r.content_type.as_deref().unwrap_or("application/json")
                )?;
                for (k, v) in &r.headers {
                    writeln!(out, "{k}: {v}")?;
                }
                writeln!(out, "body ({} bytes):", r.body.len())?;
                write_body(out, &r.body, pretty)?;
            }
            Ok(true)
        }
        Output::Outgoing(Err(e)) | Output::Response(Err(e)) => {
            writeln!(out, "plugin error: {}", plugin_error(e))?;
            Ok(false)
        }
        Output::Response(Ok(None)) => {
            writeln!(out, "response: nothing to write back")?;
            Ok(true)
        }
        Output::Response(Ok(Some(fields))) => {
            writeln!(out, "response: write back ({} bytes):", fields.len())?;
            write_body(out, fields, pretty)?;
            Ok(true)
        }
        Output::Inbound(Ok(records)) => {
            writeln!(out, "inbound: {} record(s)", records.len())?;
            for (i, r) in records.iter().enumerate() {
                writeln!(
                    out,
                    "record {}: entity {}",
                    i + 1,
                    r.entity.as_deref().unwrap_or("(webhook's entity)")
                )?;
                writeln!(out, "identifiers:")?;
                write_body(out, &r.identifiers, pretty)?;
                writeln!(out, "fields:")?;
                write_body(out, &r.fields, pretty)?;
            }
            Ok(true)
        }
        Output::Inbound(Err(rejection)) => {
            writeln!(
                out,
                "inbound: rejected with {}: {}",
                rejection.status, rejection.message
            )?;
            Ok(true)
        }
    }
}

/// The text of a plugin's error variant.
pub(super) fn plugin_error(e: &types::PluginError) -> String {
    match e {
        types::PluginError::InvalidConfig(m) => format!("invalid-config: {m}"),
        types::PluginError::InvalidInput(m) => format!("invalid-input: {m}"),
        types::PluginError::Internal(m) => format!("internal: {m}"),
    }
}

/// Writes a body as is (then a newline), or indented when `pretty` and it is JSON.
fn write_body(out: &mut impl std::io::Write, body: &[u8], pretty: bool) -> std::io::Result<()> {
    if pretty {
        if let Some(text) = indent_json(body) {
            return writeln!(out, "{text}");
        }
    }
    out.write_all(body)?;
    writeln!(out)
}

/// `body` indented, keys in their order; `None` when it is not JSON.
pub(super) fn indent_json(body: &[u8]) -> Option<String> {
    let mut deserializer = serde_json::Deserializer::from_slice(body);
    let mut text = Vec::new();
    let mut serializer = serde_json::Serializer::pretty(&mut text);
    serde_transcode::transcode(&mut deserializer, &mut serializer).ok()?;
    deserializer.end().ok()?;
    String::from_utf8(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_keeps_the_key_order_and_refuses_what_is_not_json() {
        assert_eq!(
            indent_json(br#"{"z":1,"a":[true,null]}"#).as_deref(),
            Some("{\n  \"z\": 1,\n  \"a\": [\n    true,\n    null\n  ]\n}")
        );
        assert_eq!(indent_json(b"{\"a\":1} trailing"), None);
        assert_eq!(indent_json(b"plain text"), None);
    }
}
