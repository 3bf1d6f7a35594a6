//! `hookyard plugin ...`: the plugin author's and the admin's command line.
//!
//! - [`project`]: `plugin new` (a scaffold per language, from `templates/`) and `plugin build`.
//! - [`check`]: `plugin check`, one hook run on a component, printing the exact output, the
//!   plugin's log lines and its stderr.
//! - [`fixtures`]: `plugin test`, the fixture files of a project run through all three hooks.
//! - [`local`]: the engine these commands share, with a compiled-code cache keyed by content
//!   hash, so an unchanged component starts in well under a second.
//! - [`admin`]: `plugin upload|activate|list|versions`, talking to the admin API.
//! - [`check_config`]: `hookyard check-config`'s checks of the files a config names.
//!
//! These modules belong to the binary: they print, and they use `anyhow` as `main.rs` does.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};

mod admin;
mod check;
pub mod check_config;
mod fixtures;
mod local;
mod project;

/// Exit code of a command line or input file that is not usable (sysexits EX_USAGE).
const EX_USAGE: u8 = 64;

/// `hookyard plugin ...`.
#[derive(Subcommand)]
pub enum PluginCommand {
    /// Create a plugin project: sources, the WIT it targets, a build script with pinned tool
    /// versions, a fixture test that passes, and a README.
    New {
        /// The plugin's name (also the directory created, unless --dir is given).
        name: String,
        /// The language.
        #[arg(long, value_enum)]
        lang: project::Lang,
        /// The hooks the plugin implements (the others pass data through).
        #[arg(long, value_enum, value_delimiter = ',', default_value = "outgoing")]
        hook: Vec<Hook>,
        /// Where to create the project (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Build a plugin project (Rust, Python or JavaScript) into a component; prints its path.
    /// Installs componentize-py or componentize-js into the project on first use.
    Build {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Run a project's fixture files (tests/*.json) through its component; exits non-zero with a
    /// diff when an output differs from the expected one.
    Test {
        /// The project directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// Use this component instead of building the project.
        #[arg(long)]
        component: Option<PathBuf>,
    },
    /// Validate a component against the hookyard:plugin world and run one hook on a sample (or
    /// given) input: prints the exact output, the plugin's log lines and stderr, time and memory.
    Check(check::CheckArgs),
    /// Upload a component as a new version of a plugin (it becomes active when it passes the
    /// gateway's checks).
    Upload {
        /// Plugin name.
        name: String,
        /// The component (.wasm).
        file: PathBuf,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Make a version of a plugin the active one (rollback or pin).
    Activate {
        /// Plugin name.
        name: String,
        /// Version number.
        version: u32,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the plugins of a gateway with their active version.
    List {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// List the versions of a plugin.
    Versions {
        /// Plugin name.
        name: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
}

/// Where the admin API is, and its token.
#[derive(Args, Clone)]
pub struct AdminArgs {
    /// Base URL of the admin listener.
    #[arg(
        long,
        env = "HOOKYARD_ADMIN_URL",
        default_value = "http://127.0.0.1:8081"
    )]
    url: String,
    /// The admin token (server.admin_token).
    #[arg(long, env = "HOOKYARD_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

/// A plugin hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Hook {
    /// An event becomes the request(s) sent to the third party.
    Outgoing,
    /// The third party's answer becomes fields written back.
    Response,
    /// A third party's push becomes internal records.
    Inbound,
}

impl Hook {
    fn name(self) -> &'static str {
        match self {
            Hook::Outgoing => "outgoing",
            Hook::Response => "response",
            Hook::Inbound => "inbound",
        }
    }
}

/// Runs a plugin command. Exit codes: 0 success, 1 the plugin failed (a check, a fixture, a
/// refused upload), 64 unusable arguments or files.
pub fn run(command: PluginCommand) -> ExitCode {
    let outcome = match command {
        PluginCommand::New {
            name,
            lang,
            hook,
            dir,
        } => project::new(&name, lang, &hook, dir).map(|()| true),
        PluginCommand::Build { dir } => project::build(&dir).map(|path| {
            println!("{}", path.display());
            true
        }),
        PluginCommand::Test { dir, component } => fixtures::run(&dir, component.as_deref()),
        PluginCommand::Check(args) => check::run(&args),
        PluginCommand::Upload { name, file, admin } => admin::upload(&admin, &name, &file),
        PluginCommand::Activate {
            name,
            version,
            admin,
        } => admin::activate(&admin, &name, version),
        PluginCommand::List { admin } => admin::list(&admin),
        PluginCommand::Versions { name, admin } => admin::versions(&admin, &name),
    };
    match outcome {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("hookyard: {e:#}");
            ExitCode::from(EX_USAGE)
        }
    }
}
