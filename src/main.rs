//! The `hookyard` binary: parse the command line, load the config, set up logging, bind, run.

use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

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
    /// Check a config file and print the effective configuration's problems, if any: values,
    /// every file it names (plugins, TLS, keys; nothing is compiled) and the declared webhooks.
    CheckConfig {
        /// Config file (TOML).
        #[arg(long, short, env = "HOOKYARD_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Plugins: make, build, test and check them locally; upload and activate them on a gateway.
    Plugin {
        #[command(subcommand)]
        command: cli::PluginCommand,
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
        Command::Plugin { command } => cli::run(command),
        Command::CheckConfig { config } => match load(config.as_deref()) {
            Ok(config) => {
                let problems = cli::check_config::problems(&config);
                if problems.is_empty() {
                    println!("config ok");
                    return ExitCode::SUCCESS;
                }
                for problem in &problems {
                    eprintln!("hookyard: invalid config: {problem}");
                }
                ExitCode::from(EX_USAGE)
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
