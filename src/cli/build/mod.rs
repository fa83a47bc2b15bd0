//! `sluice build [NAME...]`, like `sam build`: builds each function by its runtime and
//! skips what is up to date.
//!
//! - `wasm` with a `Cargo.toml` in its folder: `cargo build --release --target
//!   wasm32-wasip1`, the module copied to the function's `module` path.
//! - `provided` with a `Cargo.toml`: a native release build, copied to `bootstrap`.
//! - `python3.N`: the runtime interface client (`awslambdaric`) into the project's tools
//!   folder, and a `requirements.txt` into the folder's `package/`.
//! - `nodejsN.x`: the runtime interface client (`aws-lambda-ric`) into the tools folder, and
//!   a `package.json`'s dependencies into the folder's `node_modules/`.
//! - `component`: the handler made into a component and precompiled (see [`component`]).
//!
//! Tool output (cargo, pip, npm) goes to stderr as it comes; stdout has one line per function
//! (or, with `--json`, one document).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Instant, SystemTime};

use anyhow::{bail, Context as _};
use serde::Serialize;
use sha2::{Digest as _, Sha256};

mod component;

use super::output::print_json;
use super::Context;
use crate::config::{FunctionDef, Project, RuntimeKind};
use crate::error::UsageError;
use crate::runtime::lambda::{tools, PYTHON_PACKAGE_DIR};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Functions to build (default: all of them).
    pub names: Vec<String>,
    /// Build even what looks up to date.
    #[arg(long)]
    pub force: bool,
}

/// One function's build, as `--json` prints it.
#[derive(Debug, Serialize)]
struct Outcome {
    function: String,
    runtime: String,
    /// `built`, `up_to_date` or `failed`.
    outcome: &'static str,
    /// What was done or found, one entry per step.
    steps: Vec<String>,
    duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// What one step did.
enum Step {
    Built(String),
    UpToDate(String),
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let project = ctx.project_sources()?;
    let mut selected: Vec<&FunctionDef> = Vec::new();
    for name in &args.names {
        match project.function(name) {
            Some(def) => selected.push(def),
            None => {
                let names: Vec<&str> = project.functions.iter().map(|f| f.config.name.as_str()).collect();
                return Err(UsageError::new(format!("no function named {name:?}; functions: {}", if names.is_empty() { "none".to_owned() } else { names.join(", ") })).into());
            }
        }
    }
    if args.names.is_empty() {
        selected = project.functions.iter().collect();
    }
    let total = selected.len();
    let mut outcomes = Vec::new();
    for (i, def) in selected.into_iter().enumerate() {
        let name = &def.config.name;
        let runtime = def.config.runtime.to_string();
        eprintln!("[{}/{total}] {name} ({runtime}): building", i + 1);
        let started = Instant::now();
        let mut steps = Vec::new();
        let result = build(&project, def, args.force, &mut steps);
        let duration = started.elapsed();
        let built = steps.iter().any(|s| matches!(s, Step::Built(_)));
        let texts: Vec<String> = steps.into_iter().map(|s| match s {
            Step::Built(t) | Step::UpToDate(t) => t,
        }).collect();
        let outcome = match &result {
            Err(_) => "failed",
            Ok(()) if built => "built",
            Ok(()) => "up_to_date",
        };
        let error = result.err().map(|e| format!("{e:#}"));
        let line = match (&error, outcome) {
            (Some(error), _) => format!("{name}: FAILED: {error}"),
            (None, "built") => format!("{name}: built in {:.1}s: {}", duration.as_secs_f64(), texts.join("; ")),
            (None, _) => format!("{name}: up to date: {}", texts.join("; ")),
        };
        if !ctx.json {
            println!("{line}");
        } else if error.is_some() {
            eprintln!("{line}");
        }
        outcomes.push(Outcome { function: name.clone(), runtime, outcome, steps: texts, duration_ms: duration.as_millis() as u64, error });
    }
    let failed = outcomes.iter().filter(|o| o.outcome == "failed").count();
    if ctx.json {
        print_json(&outcomes)?;
    } else if total == 0 {
        println!("No functions in {}.", project.dir.join("functions").display());
    }
    Ok(if failed == 0 { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn build(project: &Project, def: &FunctionDef, force: bool, steps: &mut Vec<Step>) -> anyhow::Result<()> {
    let config = &def.config;
    let crate_manifest = def.dir.join("Cargo.toml");
    match config.runtime {
        RuntimeKind::Wasm => {
            let Some(module) = &def.module_path else { bail!("no `module` in {}", def.path.display()) };
            if crate_manifest.is_file() {
                steps.push(cargo(project, def, &crate_manifest, Some("wasm32-wasip1"), module, force)?);
            } else if module.is_file() {
                steps.push(Step::UpToDate(format!("prebuilt module {}", module.display())));
            } else {
                bail!("{} does not exist and there is no Cargo.toml in {} to build it from", module.display(), def.dir.display());
            }
        }
        RuntimeKind::Component => component::build(project, def, force, steps)?,
        RuntimeKind::Provided { .. } => {
            let bootstrap = def.dir.join("bootstrap");
            if crate_manifest.is_file() {
                steps.push(cargo(project, def, &crate_manifest, None, &bootstrap, force)?);
            } else if bootstrap.is_file() {
                steps.push(Step::UpToDate(format!("prebuilt {}", bootstrap.display())));
            } else {
                bail!("no bootstrap in {} and no Cargo.toml to build one from", def.dir.display());
            }
        }
        RuntimeKind::Python { .. } => {
            steps.push(python_client(project, config.runtime)?);
            let requirements = def.dir.join("requirements.txt");
            if requirements.is_file() {
                let target = def.dir.join(PYTHON_PACKAGE_DIR);
                let python = tools::interpreter(config.runtime).map_err(anyhow::Error::msg)?;
                let stamp = || stamp_of(&[&requirements], &python.version);
                steps.push(install_if_changed(&target, stamp, force, "requirements.txt", || {
                    let mut command = Command::new(&python.path);
                    command.args(["-m", "pip", "install", "--disable-pip-version-check", "--upgrade", "--target"]).arg(&target).arg("-r").arg(&requirements);
                    command
                })?);
            }
        }
        RuntimeKind::Node { major } => {
            steps.push(node_client(project, config.runtime, major)?);
            let manifest = def.dir.join("package.json");
            if manifest.is_file() {
                let lock = def.dir.join("package-lock.json");
                // npm writes package-lock.json on the first install: read it each time.
                let stamp = || {
                    let inputs: Vec<&Path> = if lock.is_file() { vec![&manifest, &lock] } else { vec![&manifest] };
                    stamp_of(&inputs, &major.to_string())
                };
                let target = def.dir.join("node_modules");
                steps.push(install_if_changed(&target, stamp, force, "package.json", || {
                    let mut command = Command::new("npm");
                    command.args(["install", "--omit=dev", "--no-audit", "--no-fund"]).current_dir(&def.dir);
                    command
                })?);
            }
        }
    }
    Ok(())
}

/// Runs a tool with its output on stderr, failing with its name and status.
fn run_tool(mut command: Command, what: &str) -> anyhow::Result<()> {
    command.stdin(Stdio::null()).stdout(std::io::stderr()).stderr(Stdio::inherit());
    let status = command.status().with_context(|| format!("{what}: cannot run {:?}", command.get_program()))?;
    if !status.success() {
        bail!("{what} failed ({status}); its output is above");
    }
    Ok(())
}

/// Installs the runtime interface client a Lambda runtime needs into the project's tools
/// folder when it is missing (for `sluice up --registry`, whose functions were built
/// elsewhere); nothing for other runtimes.
pub fn ensure_lambda_client(project: &Project, runtime: RuntimeKind) -> anyhow::Result<()> {
    match runtime {
        RuntimeKind::Python { .. } => python_client(project, runtime).map(drop),
        RuntimeKind::Node { major } => node_client(project, runtime, major).map(drop),
        _ => Ok(()),
    }
}

/// The Python runtime interface client in the tools folder, installed when missing.
fn python_client(project: &Project, runtime: RuntimeKind) -> anyhow::Result<Step> {
    let dir = tools::client_dir(&project.tools_dir(), runtime).context("no client folder")?;
    if tools::python_client_installed(&dir) {
        return Ok(Step::UpToDate(format!("{} in {}", tools::AWSLAMBDARIC, dir.display())));
    }
    let python = tools::interpreter(runtime).map_err(anyhow::Error::msg)?;
    eprintln!("  installing {} for Python {} into {} (pip, from PyPI)", tools::AWSLAMBDARIC, python.version, dir.display());
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let mut command = Command::new(&python.path);
    command.args(["-m", "pip", "install", "--disable-pip-version-check", "--target"]).arg(&partial).arg(tools::AWSLAMBDARIC);
    run_tool(command, "installing awslambdaric")?;
    replace_dir(&partial, &dir)?;
    Ok(Step::Built(format!("installed {} in {}", tools::AWSLAMBDARIC, dir.display())))
}

/// The Node.js runtime interface client in the tools folder, installed when missing.
fn node_client(project: &Project, runtime: RuntimeKind, major: u32) -> anyhow::Result<Step> {
    let dir = tools::client_dir(&project.tools_dir(), runtime).context("no client folder")?;
    let package = tools::aws_lambda_ric(major);
    if tools::node_client_entry(&dir).is_some() {
        return Ok(Step::UpToDate(format!("{package} in {}", dir.display())));
    }
    let node = tools::interpreter(runtime).map_err(anyhow::Error::msg)?;
    eprintln!(
        "  installing {package} for Node.js {major} into {} (npm; it compiles a native module, about a minute; \
         needs autoconf, automake, libtool, cmake, make and g++)",
        dir.display()
    );
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    // Installed as the dependency of a folder of its own (not with --prefix, which would
    // also move npm's global configuration, CA certificates included).
    std::fs::write(partial.join("package.json"), r#"{"name":"sluice-lambda-runtime-client","private":true}"#)
        .with_context(|| format!("writing {}", partial.display()))?;
    let mut command = Command::new("npm");
    command.args(["install", "--no-audit", "--no-fund", package]).current_dir(&partial);
    // node-gyp builds against the installed Node.js headers instead of downloading them.
    if let Some(prefix) = node.path.parent().and_then(Path::parent) {
        if prefix.join("include/node/node.h").is_file() {
            command.arg(format!("--nodedir={}", prefix.display()));
        }
    }
    run_tool(command, "installing aws-lambda-ric").context(
        "on Debian, `apt-get install autoconf automake libtool cmake make g++` provides what its native build needs",
    )?;
    // The native build's sources and intermediates (~150 MB) are not needed to run it.
    let _ = std::fs::remove_dir_all(partial.join("node_modules/aws-lambda-ric/deps"));
    replace_dir(&partial, &dir)?;
    Ok(Step::Built(format!("installed {package} in {}", dir.display())))
}

fn replace_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let _ = std::fs::remove_dir_all(to);
    if let Some(parent) = to.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::rename(from, to).with_context(|| format!("moving {} to {}", from.display(), to.display()))
}

const STAMP: &str = ".sluice-build";

/// A digest of the dependency manifests and the interpreter version.
fn stamp_of(inputs: &[&Path], version: &str) -> anyhow::Result<String> {
    let mut hash = Sha256::new();
    hash.update(version.as_bytes());
    for input in inputs {
        hash.update(std::fs::read(input).with_context(|| format!("reading {}", input.display()))?);
    }
    Ok(hex::encode(hash.finalize()))
}

/// Installs dependencies into `target` unless its stamp says they match the manifest (the
/// stamp is taken again after the install, which may write a lock file).
fn install_if_changed(
    target: &Path,
    stamp: impl Fn() -> anyhow::Result<String>,
    force: bool,
    manifest: &str,
    command: impl FnOnce() -> Command,
) -> anyhow::Result<Step> {
    let stamp_file = target.join(STAMP);
    let before = stamp()?;
    if !force && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s.trim() == before) {
        return Ok(Step::UpToDate(format!("{manifest} installed in {}", target.display())));
    }
    eprintln!("  installing {manifest} into {}", target.display());
    run_tool(command(), &format!("installing {manifest}"))?;
    std::fs::create_dir_all(target).with_context(|| format!("creating {}", target.display()))?;
    std::fs::write(&stamp_file, stamp()?).with_context(|| format!("writing {}", stamp_file.display()))?;
    Ok(Step::Built(format!("installed {manifest} into {}", target.display())))
}

/// Where cargo builds functions: `$CARGO_TARGET_DIR/functions`, else `.sluice/build/target`.
fn cargo_target_dir(project: &Project) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join("functions"),
        _ => project.dir.join(".sluice").join("build").join("target"),
    }
}

/// Builds a crate with cargo (for `target`, else the host) and copies its binary to `output`.
fn cargo(project: &Project, def: &FunctionDef, manifest: &Path, target: Option<&str>, output: &Path, force: bool) -> anyhow::Result<Step> {
    let newest = newest_source(&def.dir, output);
    let output_time = std::fs::metadata(output).and_then(|m| m.modified()).ok();
    if !force && output_time.is_some_and(|built| newest.is_some_and(|source| source <= built)) {
        return Ok(Step::UpToDate(format!("{} is newer than its sources", output.display())));
    }
    let mut command = Command::new("cargo");
    command.args(["build", "--release", "--message-format=json-render-diagnostics", "--manifest-path"]).arg(manifest);
    if let Some(target) = target {
        command.args(["--target", target]);
    }
    command.env("CARGO_TARGET_DIR", cargo_target_dir(project));
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let result = command.output().context("cannot run cargo (is Rust installed with rustup?)")?;
    if !result.status.success() {
        let hint = match target {
            Some(target) => format!("; if the target is missing: rustup target add {target}"),
            None => String::new(),
        };
        bail!("cargo build failed ({}){hint}; its output is above", result.status);
    }
    let manifest = manifest.canonicalize().unwrap_or_else(|_| manifest.to_path_buf());
    let artifact = String::from_utf8_lossy(&result.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["manifest_path"].as_str().is_some_and(|p| Path::new(p) == manifest))
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .with_context(|| format!("cargo built no binary for {}; the crate needs a `main` (a bin target)", manifest.display()))?;
    let partial = output.with_extension("partial");
    std::fs::copy(&artifact, &partial).with_context(|| format!("copying {} to {}", artifact.display(), partial.display()))?;
    std::fs::rename(&partial, output).with_context(|| format!("writing {}", output.display()))?;
    if target.is_none() {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(output, std::fs::Permissions::from_mode(0o755)).with_context(|| format!("making {} executable", output.display()))?;
    }
    Ok(Step::Built(format!("cargo built {}", output.display())))
}

/// The newest modification time among a crate's sources (`Cargo.toml`, `Cargo.lock`, `src/`,
/// `build.rs`, and the enclosing workspace's manifest and lock), ignoring `output`.
fn newest_source(dir: &Path, output: &Path) -> Option<SystemTime> {
    fn walk(path: &Path, newest: &mut Option<SystemTime>) {
        let Ok(meta) = std::fs::metadata(path) else { return };
        if meta.is_dir() {
            if let Ok(entries) = std::fs::read_dir(path) {
                for entry in entries.flatten() {
                    walk(&entry.path(), newest);
                }
            }
        } else if let Ok(modified) = meta.modified() {
            *newest = Some(newest.map_or(modified, |n| n.max(modified)));
        }
    }
    let mut newest = None;
    let workspace = dir.parent().map(Path::to_path_buf).unwrap_or_default();
    for path in [dir.join("Cargo.toml"), dir.join("Cargo.lock"), dir.join("build.rs"), dir.join("src"), workspace.join("Cargo.toml"), workspace.join("Cargo.lock")] {
        if path != output {
            walk(&path, &mut newest);
        }
    }
    newest
}
