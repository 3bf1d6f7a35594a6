//! `hookyard plugin new` and `hookyard plugin build`: plugin projects in Rust, Python and
//! JavaScript.
//!
//! A project is a directory with a `hookyard-plugin.toml` naming its language and the tool
//! versions it builds with (pinned when it is made), the WIT it targets (`wit/plugin.wit`,
//! copied from this hookyard), its sources with the typed helpers of `sdk/` (or the Rust SDK,
//! vendored), fixture tests that pass out of the box, and a README. `plugin build` installs the
//! pinned componentize-py or componentize-js into the project on first use (`.venv/`,
//! `node_modules/`), builds, and leaves the component at `out/plugin.wasm`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context as _;
use clap::ValueEnum;
use serde::Deserialize;

use super::Hook;

/// componentize-py pinned into new Python projects.
const COMPONENTIZE_PY: &str = "0.25.1";
/// componentize-js pinned into new JavaScript projects (and the preview2-shim it needs).
const COMPONENTIZE_JS: &str = "0.23.0";
const PREVIEW2_SHIM: &str = "0.25.0";

/// The project manifest's file name.
pub(super) const MANIFEST: &str = "hookyard-plugin.toml";
/// Where a build leaves the component, relative to the project.
pub(super) const OUTPUT: &str = "out/plugin.wasm";

const WIT: &str = include_str!("../../wit/plugin.wit");
const SDK_RUST: &str = include_str!("../../plugins/sdk/src/lib.rs");
const SDK_PYTHON: &str = include_str!("../../sdk/python/hookyard_plugin.py");
const SDK_JS: &str = include_str!("../../sdk/js/hookyard-plugin.js");
const SDK_JS_TYPES: &str = include_str!("../../sdk/js/hookyard-plugin.d.ts");

/// A plugin's language.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    /// Rust with the hookyard SDK, built by cargo for wasm32-wasip2.
    Rust,
    /// Python, built by componentize-py.
    Python,
    /// JavaScript, built by componentize-js.
    Js,
}

/// `hookyard-plugin.toml`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    name: String,
    lang: Lang,
    #[allow(dead_code)]
    hooks: Vec<Hook>,
    #[serde(default)]
    tools: Tools,
    /// `fresh`: the built component asks the gateway for a new instance on every call (a
    /// `hookyard-instances` custom section); `warm` (the default): instances are reused.
    #[serde(default)]
    instances: hookyard::model::Instances,
}

/// Tool versions a project builds with.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Tools {
    componentize_py: Option<String>,
    componentize_js: Option<String>,
}

/// Whether `name` can name a plugin project in every language: a package, crate and module
/// name, and a plugin name the gateway accepts.
fn valid_project_name(name: &str) -> bool {
    name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `plugin new`.
pub(super) fn new(
    name: &str,
    lang: Lang,
    hooks: &[Hook],
    dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    if !valid_project_name(name) {
        anyhow::bail!(
            "{name:?}: a plugin project name is 1 to 64 of [a-z0-9_-] and starts with a letter"
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        anyhow::bail!("{} exists and is not empty", dir.display());
    }
    let mut hooks = hooks.to_vec();
    hooks.sort_by_key(|h| h.name());
    hooks.dedup();
    let hook_names: Vec<&str> = hooks.iter().map(|h| h.name()).collect();
    let type_name: String = name
        .split(['-', '_'])
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let vars: &[(&str, &str)] = &[
        ("name", name),
        ("type_name", &type_name),
        ("componentize_js", COMPONENTIZE_JS),
        ("preview2_shim", PREVIEW2_SHIM),
        ("hooks", &hook_names.join(", ")),
        (
            "lang_name",
            match lang {
                Lang::Rust => "Rust",
                Lang::Python => "Python",
                Lang::Js => "JavaScript",
            },
        ),
        (
            "build_note",
            match lang {
                Lang::Rust => "cargo, target wasm32-wasip2",
                Lang::Python => "componentize-py, installed into .venv/ on first use",
                Lang::Js => "componentize-js, installed into node_modules/ on first use",
            },
        ),
    ];
    let fill = |template: &str| render(template, vars, &hooks, lang);

    let mut files: Vec<(&str, String)> = vec![
        ("wit/plugin.wit", WIT.to_owned()),
        ("README.md", fill(include_str!("templates/README.md"))),
        (
            ".gitignore",
            "out/\n.venv/\nnode_modules/\ntarget/\n__pycache__/\n".to_owned(),
        ),
    ];
    let tools = match lang {
        Lang::Rust => {
            files.push((
                "Cargo.toml",
                fill(include_str!("templates/rust/Cargo.toml")),
            ));
            files.push((
                ".cargo/config.toml",
                include_str!("templates/rust/config.toml").to_owned(),
            ));
            files.push(("src/lib.rs", fill(include_str!("templates/rust/lib.rs"))));
            files.push((
                "hookyard-plugin-sdk/Cargo.toml",
                include_str!("templates/rust/sdk-Cargo.toml").to_owned(),
            ));
            // The SDK finds the WIT relative to its own manifest: here, the project's wit/.
            files.push((
                "hookyard-plugin-sdk/src/lib.rs",
                SDK_RUST.replace("path: \"../../wit\"", "path: \"../wit\""),
            ));
            String::new()
        }
        Lang::Python => {
            files.push(("app.py", fill(include_str!("templates/python/app.py"))));
            files.push(("hookyard_plugin.py", SDK_PYTHON.to_owned()));
            format!("\n[tools]\ncomponentize_py = \"{COMPONENTIZE_PY}\"\n")
        }
        Lang::Js => {
            files.push(("plugin.js", fill(include_str!("templates/js/plugin.js"))));
            files.push(("hookyard-plugin.js", SDK_JS.to_owned()));
            files.push(("hookyard-plugin.d.ts", SDK_JS_TYPES.to_owned()));
            files.push((
                "package.json",
                fill(include_str!("templates/js/package.json")),
            ));
            files.push((
                "componentize.mjs",
                include_str!("templates/js/componentize.mjs").to_owned(),
            ));
            format!("\n[tools]\ncomponentize_js = \"{COMPONENTIZE_JS}\"\n")
        }
    };
    let lang_key = match lang {
        Lang::Rust => "rust",
        Lang::Python => "python",
        Lang::Js => "js",
    };
    let hooks_toml: Vec<String> = hook_names.iter().map(|h| format!("\"{h}\"")).collect();
    files.push((
        MANIFEST,
        format!(
            "# A hookyard plugin project: `hookyard plugin build`, `hookyard plugin test`.\nname = \"{name}\"\nlang = \"{lang_key}\"\nhooks = [{}]\n{tools}",
            hooks_toml.join(", ")
        ),
    ));
    for hook in &hooks {
        let fixture = match hook {
            Hook::Outgoing => include_str!("templates/fixtures/outgoing.json"),
            Hook::Response => include_str!("templates/fixtures/response.json"),
            Hook::Inbound => include_str!("templates/fixtures/inbound.json"),
        };
        files.push((
            match hook {
                Hook::Outgoing => "tests/outgoing.json",
                Hook::Response => "tests/response.json",
                Hook::Inbound => "tests/inbound.json",
            },
            fixture.to_owned(),
        ));
    }
    for (path, text) in files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "created {} ({}; hooks: {}). Next: cd {} && hookyard plugin build && hookyard plugin test",
        dir.display(),
        lang_key,
        hook_names.join(", "),
        dir.display()
    );
    Ok(())
}

/// Fills `{{var}}`s and keeps the sections (`>> hook` ... `<< hook` marker lines, in any
/// comment syntax) of the chosen hooks only.
fn render(template: &str, vars: &[(&str, &str)], hooks: &[Hook], lang: Lang) -> String {
    let mut out = String::with_capacity(template.len());
    let mut keep = true;
    for line in template.lines() {
        let marker = line
            .trim_start()
            .trim_start_matches(['/', '#'])
            .trim_start();
        if let Some(hook) = marker.strip_prefix(">> ") {
            keep = hooks.iter().any(|h| h.name() == hook.trim());
            continue;
        }
        if marker.starts_with("<< ") {
            keep = true;
            continue;
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    // A Python class with every hook left out needs a body.
    if lang == Lang::Python && hooks.is_empty() {
        out.push_str("    pass\n");
    }
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

fn read_manifest(dir: &Path) -> anyhow::Result<Manifest> {
    let path = dir.join(MANIFEST);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: not a plugin project (no {MANIFEST}; make one with `hookyard plugin new`)",
            dir.display()
        )
    })?;
    toml::from_str(&text).with_context(|| format!("{} is not valid", path.display()))
}

/// Runs a build step, its output passed through to the terminal (stderr, so that stdout stays
/// the component's path).
fn step(command: &mut Command, what: &str) -> anyhow::Result<()> {
    let status = command
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("{what}: cannot run {:?}", command.get_program()))?;
    if !status.success() {
        anyhow::bail!("{what} failed ({status})");
    }
    Ok(())
}

/// `plugin build`: builds the project in `dir`; returns the component's path.
pub(super) fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = read_manifest(dir)?;
    std::fs::create_dir_all(dir.join("out"))?;
    let output = dir.join(OUTPUT);
    match manifest.lang {
        Lang::Rust => build_rust(dir, &manifest.name, &output)?,
        Lang::Python => build_python(dir, &manifest)?,
        Lang::Js => build_js(dir, &manifest)?,
    }
    if !output.is_file() {
        anyhow::bail!("the build left no {}", output.display());
    }
    if manifest.instances == hookyard::model::Instances::Fresh {
        let wasm = std::fs::read(&output)?;
        if hookyard::plugin::warm::declared_instances(&wasm) != hookyard::model::Instances::Fresh {
            std::fs::write(&output, hookyard::plugin::warm::with_fresh_section(&wasm))?;
        }
    }
    Ok(output)
}

fn build_rust(dir: &Path, name: &str, output: &Path) -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l == "wasm32-wasip2")
        })
        .unwrap_or(true);
    if !installed {
        step(
            Command::new("rustup").args(["target", "add", "wasm32-wasip2"]),
            "installing the wasm32-wasip2 target",
        )?;
    }
    // Cargo's own default, said explicitly so the component is found where it was built.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"));
    step(
        Command::new("cargo")
            .current_dir(dir)
            .args([
                "build",
                "--release",
                "--target",
                "wasm32-wasip2",
                "--target-dir",
            ])
            .arg(&target_dir),
        "cargo build",
    )?;
    let built = dir
        .join(&target_dir)
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")));
    std::fs::copy(&built, output)
        .with_context(|| format!("copying {} to {}", built.display(), output.display()))?;
    Ok(())
}

fn build_python(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let version = manifest
        .tools
        .componentize_py
        .as_deref()
        .unwrap_or(COMPONENTIZE_PY);
    let tool = dir.join(".venv/bin/componentize-py");
    let current = Command::new(&tool)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    if current != format!("componentize-py {version}") {
        eprintln!(
            "installing componentize-py {version} into {}/.venv",
            dir.display()
        );
        step(
            Command::new("python3")
                .current_dir(dir)
                .args(["-m", "venv", ".venv"]),
            "python3 -m venv",
        )?;
        step(
            Command::new(dir.join(".venv/bin/pip"))
                .current_dir(dir)
                .args(["install", "--quiet", &format!("componentize-py=={version}")]),
            "pip install componentize-py",
        )?;
    }
    step(
        Command::new(&tool).current_dir(dir).args([
            "-d",
            "wit",
            "-w",
            "plugin",
            "componentize",
            "-p",
            ".",
            "app",
            "-o",
            OUTPUT,
        ]),
        "componentize-py",
    )
}

fn build_js(dir: &Path, manifest: &Manifest) -> anyhow::Result<()> {
    let version = manifest
        .tools
        .componentize_js
        .as_deref()
        .unwrap_or(COMPONENTIZE_JS);
    let installed = dir.join("node_modules/@bytecodealliance/componentize-js/package.json");
    let current = std::fs::read_to_string(&installed)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    if current.as_deref() != Some(version) {
        eprintln!(
            "installing componentize-js {version} into {}/node_modules",
            dir.display()
        );
        step(
            Command::new("npm").current_dir(dir).args([
                "install",
                "--no-audit",
                "--no-fund",
                "--prefer-offline",
                "--save-exact",
                &format!("@bytecodealliance/componentize-js@{version}"),
                &format!("@bytecodealliance/preview2-shim@{PREVIEW2_SHIM}"),
            ]),
            "npm install",
        )?;
    }
    step(
        Command::new("node")
            .current_dir(dir)
            .arg("componentize.mjs"),
        "componentize-js",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_of_hooks_left_out_are_dropped_and_variables_filled() {
        let template = "a {{name}}\n  // >> outgoing\n  out\n  // << outgoing\n  # >> inbound\n  in\n  # << inbound\nz\n";
        let text = render(template, &[("name", "x")], &[Hook::Inbound], Lang::Rust);
        assert_eq!(text, "a x\n  in\nz\n");
    }

    #[test]
    fn project_names_fit_every_language() {
        assert!(valid_project_name("hr-users_2"));
        for bad in ["", ".", "..", "-x", "X", "a b", "a.b", "1a"] {
            assert!(!valid_project_name(bad), "{bad:?}");
        }
    }
}
