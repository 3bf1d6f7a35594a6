//! The `hookyard` binary: parse the command line, load the config, set up logging, bind, run.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use hookyard::config::{Config, LogFormat};
use tokio::net::TcpListener;

/// Exit code for an invalid configuration or command line (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

#[derive(Parser)]
#[command(name = "hookyard", version, about = "A webhook gateway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (TOML). Without one, the built-in defaults apply (embedded SQLite under
        /// ./hookyard-data/).
        #[arg(long, short, env = "HOOKYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Check a config file and print the effective configuration's problems, if any.
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, short, env = "HOOKYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Work with plugins locally.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Validate a component against the hookyard:plugin world and run its outgoing phase on a
    /// sample event: prints the output, the time taken and the memory used.
    Check {
        /// The component (.wasm).
        file: PathBuf,
        /// An event as posted to /v1/events (JSON); a small sample when absent.
        #[arg(long)]
        event: Option<PathBuf>,
        /// The webhook's plugin config (JSON); `null` when absent.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let config = match load(config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_tracing(&config);
            let runtime = match tokio::runtime::Runtime::new() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("hookyard: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(serve(config)) {
                Ok(()) => ExitCode::SUCCESS,
                // Unusable certificate files are a configuration error like any other.
                Err(e) if matches!(e.downcast_ref(), Some(hookyard::Error::Tls(_))) => {
                    eprintln!("hookyard: invalid config: {e:#}");
                    ExitCode::from(EX_USAGE)
                }
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "hookyard stopped");
                    eprintln!("hookyard: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Plugin {
            command:
                PluginCommand::Check {
                    file,
                    event,
                    config,
                },
        } => match plugin_check(&file, event.as_deref(), config.as_deref()) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("hookyard: {e:#}");
                ExitCode::from(EX_USAGE)
            }
        },
        Command::CheckConfig { config } => match load(config.as_deref()) {
            Ok(_) => {
                println!("config ok");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
    }
}

/// Loads the config, or prints one line and returns exit code 64.
fn load(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    Config::load(path, std::env::vars()).map_err(|e| {
        eprintln!("hookyard: {e}");
        ExitCode::from(EX_USAGE)
    })
}

fn init_tracing(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HOOKYARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&config.log.level));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    // Connections, the store, plugins and deliveries all take descriptors: use what the hard
    // limit allows (the default connection caps are shares of it).
    let nofile = hookyard::server::limits::raise_nofile_limit();
    tracing::debug!(nofile, "open-file limit");
    let public = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let admin = if config.server.admin_listen == config.server.listen {
        None
    } else {
        Some(
            TcpListener::bind(config.server.admin_listen)
                .await
                .with_context(|| format!("cannot listen on {}", config.server.admin_listen))?,
        )
    };
    let listeners = hookyard::Listeners { public, admin };
    hookyard::run(config, listeners, shutdown_signal()).await?;
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// `hookyard plugin check`: returns whether the plugin passed.
fn plugin_check(
    file: &std::path::Path,
    event: Option<&std::path::Path>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<bool> {
    use hookyard::model::{now_ms, Event, NewEvent};
    use hookyard::plugin::{self, bindings::types};

    let read_json = |path: &std::path::Path| -> anyhow::Result<serde_json::Value> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not valid JSON", path.display()))
    };
    let config_value = match config {
        Some(path) => read_json(path)?,
        None => serde_json::Value::Null,
    };
    let new_event: NewEvent = match event {
        Some(path) => serde_json::from_value(read_json(path)?).with_context(|| {
            format!(
                "{} is not an event (type, data, context?, id?, occurred_at?)",
                path.display()
            )
        })?,
        None => serde_json::from_value(serde_json::json!({
            "type": "user.created",
            "data": {"id": "42", "username": "jdoe", "email": "jdoe@example.com", "first_name": "Jane", "last_name": "Doe"}
        }))?,
    };
    let now = now_ms();
    let event = Event {
        id: new_event.id.unwrap_or_else(|| "evt_check".into()),
        event_type: new_event.event_type,
        data: new_event.data,
        context: new_event
            .context
            .unwrap_or_else(hookyard::model::Json::null),
        occurred_at: new_event
            .occurred_at
            .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
            .unwrap_or(now),
        received_at: now,
    };
    let cache = tempfile_dir()?;
    let limits = hookyard::config::Config::default().plugins;
    let runtime =
        plugin::Runtime::new(&limits, &cache).context("starting the WebAssembly engine")?;
    let started = std::time::Instant::now();
    let loaded = match plugin::load_file(&runtime, file) {
        Ok(p) => p,
        Err(e) => {
            println!("invalid: {e}");
            let _ = std::fs::remove_dir_all(&cache);
            return Ok(false);
        }
    };
    println!(
        "component: {} (sha256 {}), compiled in {} ms",
        file.display(),
        loaded.sha256,
        started.elapsed().as_millis()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let passed = rt.block_on(async {
        if let Err(e) = plugin::call_validate_config(&runtime, &loaded, &config_value).await {
            println!("validate-config: rejected: {e}");
            return false;
        }
        println!("validate-config: ok");
        let hook = types::Webhook {
            id: "wh_check".into(),
            name: "check".into(),
            url: "https://example.invalid/hook".into(),
            method: "POST".into(),
        };
        let (result, usage) =
            plugin::call_outgoing(&runtime, &loaded, &config_value, hook, &event).await;
        let report = match result {
            Err(e) => {
                println!("outgoing: failed: {e}");
                false
            }
            Ok(Err(e)) => {
                println!("outgoing: plugin error: {e:?}");
                false
            }
            Ok(Ok(types::OutgoingAction::Skip(reason))) => {
                println!("outgoing: skip: {reason}");
                true
            }
            Ok(Ok(types::OutgoingAction::Send(requests))) => {
                for (i, r) in requests.iter().enumerate() {
                    let body = serde_json::from_slice::<serde_json::Value>(&r.body)
                        .map(|v| serde_json::to_string_pretty(&v).unwrap_or_default())
                        .unwrap_or_else(|_| String::from_utf8_lossy(&r.body).into_owned());
                    println!(
                        "outgoing: request {}: method {} path {} query {} headers {:?}\n{body}",
                        i + 1,
                        r.method.as_deref().unwrap_or("(webhook's)"),
                        r.path.as_deref().unwrap_or("(webhook's)"),
                        r.query.as_deref().unwrap_or("-"),
                        r.headers
                    );
                }
                true
            }
        };
        println!(
            "time: {:.3} ms (instantiation included), memory: {} KiB peak",
            usage.duration.as_secs_f64() * 1000.0,
            usage.peak_memory / 1024
        );
        report
    });
    let _ = std::fs::remove_dir_all(&cache);
    Ok(passed)
}

/// A fresh directory for the compiled-code cache of one `plugin check` run.
fn tempfile_dir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("hookyard-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}
