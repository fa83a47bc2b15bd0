//! `sluice build` for `runtime = "component"`: an unchanged Lambda handler made into a
//! component exporting `wit/sluice.wit`, then precompiled for this machine.
//!
//! - Python (`app.lambda_handler`): componentize-py, with our adapter as the app module; the
//!   function folder's files and the pure-Python packages of its `requirements.txt` are
//!   bundled. A package with native code cannot run in the sandbox and is refused by name.
//! - JavaScript (`index.handler`): componentize-js, with our adapter around the handler file.
//! - A prebuilt component (`module`) is only precompiled.
//!
//! The tools are installed into the project's tools folder (`.sluice/tools/component/`) the
//! first time they are needed; the build folder is `.sluice/build/components/<name>/`. A
//! component is rebuilt only when its inputs changed (a digest of the sources, the adapter,
//! the world and the tool's version).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _};
use sha2::{Digest as _, Sha256};
use wasmtime::component::Component;

use super::{replace_dir, run_tool, Step, STAMP};
use crate::config::{FunctionDef, Project};
use crate::runtime::component::source::{self, Language, Source};
use crate::runtime::component::{while_running, BUILT_COMPONENT};
use crate::runtime::wasm::cache::{self, Artifact};
use crate::runtime::wasm::engine;

/// The tool versions `sluice build` installs (measured on these machines: docs/functions.md).
pub const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";
pub const COMPONENTIZE_JS: &str = "@bytecodealliance/componentize-js@0.23.0";

/// The world, written next to each build so the tools never need the Sluice sources.
const WIT: &str = include_str!("../../../wit/sluice.wit");
const PYTHON_ADAPTER: &str = include_str!("../../runtime/component/adapter/sluice_adapter.py");
const JS_ADAPTER: &str = include_str!("../../runtime/component/adapter/sluice_adapter.js");
/// The adapter's module name: componentize-py imports it as the app.
const PYTHON_APP: &str = "sluice_adapter";
/// The adapter's file name, beside the copy of the function's folder.
const JS_APP: &str = "sluice_adapter.js";

/// Builds (if needed) and precompiles one component function.
pub(super) fn build(project: &Project, def: &FunctionDef, force: bool, steps: &mut Vec<Step>) -> anyhow::Result<()> {
    let component = match (&def.config.handler, &def.module_path) {
        (Some(handler), _) => {
            let source = source::find(handler, &def.dir).map_err(anyhow::Error::msg)?;
            let output = def.dir.join(BUILT_COMPONENT);
            steps.push(componentize(project, def, &source, &output, force)?);
            output
        }
        (None, Some(module)) => {
            steps.push(Step::UpToDate(format!("prebuilt component {}", module.display())));
            module.clone()
        }
        (None, None) => bail!("{}: a component function needs `handler` or `module`", def.path.display()),
    };
    steps.push(precompile(project, &component)?);
    Ok(())
}

/// Compiles the component into the project's cache, so `sluice up` only maps it.
fn precompile(project: &Project, component: &Path) -> anyhow::Result<Step> {
    let engine = engine::build_for_components().map_err(|e| anyhow::anyhow!("{e:?}")).context("creating the component engine")?;
    let cache_dir = project.cache_dir();
    let mut artifact = Artifact::open(&cache_dir, component).with_context(|| format!("reading {}", component.display()))?;
    let path = artifact.cache_path(&engine, &cache_dir);
    if path.is_file() {
        return Ok(Step::UpToDate(format!("precompiled in {}", path.display())));
    }
    let bytes = artifact.bytes().with_context(|| format!("reading {}", component.display()))?;
    eprintln!("  precompiling {} for this machine ({} MB; an interpreter takes several seconds)", component.display(), bytes.len() >> 20);
    let started = std::time::Instant::now();
    let path = while_running(
        || cache::precompile::<Component>(&engine, &cache_dir, bytes),
        |elapsed| eprintln!("  still precompiling ({} s)", elapsed.as_secs()),
    )
    .with_context(|| format!("precompiling {}", component.display()))?;
    // Opened again now that the file has settled, its digest is remembered: `sluice up`
    // then maps the compiled form without reading the component.
    Artifact::open(&cache_dir, component).with_context(|| format!("reading {}", component.display()))?;
    Ok(Step::Built(format!("precompiled into {} in {:.1}s", path.display(), started.elapsed().as_secs_f64())))
}

/// Makes `output` from the handler, unless the stamp of its inputs says it is current.
fn componentize(project: &Project, def: &FunctionDef, source: &Source, output: &Path, force: bool) -> anyhow::Result<Step> {
    let name = &def.config.name;
    // Absolute: the tools run in the build folder.
    let build = std::path::absolute(project.dir.join(".sluice").join("build").join("components").join(name))?;
    let (tool, adapter, tool_name) = match source.language {
        Language::Python => (COMPONENTIZE_PY, PYTHON_ADAPTER, "componentize-py"),
        Language::JavaScript => (COMPONENTIZE_JS, JS_ADAPTER, "componentize-js"),
    };
    let stamp = stamp(&def.dir, &[tool.as_bytes(), adapter.as_bytes(), WIT.as_bytes(), source.module.as_bytes(), source.function.as_bytes()])?;
    let stamp_file = build.join(STAMP);
    if !force && output.is_file() && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s.trim() == stamp) {
        return Ok(Step::UpToDate(format!("{} is built from the current sources", output.display())));
    }
    let _ = std::fs::remove_dir_all(&build);
    let app = build.join("app");
    copy_sources(&def.dir, &app)?;
    std::fs::create_dir_all(build.join("wit")).with_context(|| format!("creating {}", build.display()))?;
    std::fs::write(build.join("wit").join("sluice.wit"), WIT).with_context(|| format!("writing the world into {}", build.display()))?;
    let partial = std::path::absolute(output.with_extension("partial"))?;
    let started = std::time::Instant::now();
    match source.language {
        Language::Python => python(project, def, source, &build, &app, &partial)?,
        Language::JavaScript => javascript(project, source, &build, &app, &partial)?,
    }
    std::fs::rename(&partial, output).with_context(|| format!("writing {}", output.display()))?;
    std::fs::write(&stamp_file, stamp).with_context(|| format!("writing {}", stamp_file.display()))?;
    let size = std::fs::metadata(output).map_or(0, |m| m.len());
    Ok(Step::Built(format!(
        "{tool_name} made {} from {} in {:.1}s ({} MB)",
        output.display(),
        source.file.strip_prefix(&def.dir).unwrap_or(&source.file).display(),
        started.elapsed().as_secs_f64(),
        size >> 20
    )))
}

fn python(project: &Project, def: &FunctionDef, source: &Source, build: &Path, app: &Path, output: &Path) -> anyhow::Result<()> {
    let tool = componentize_py(project)?;
    let adapter = PYTHON_ADAPTER.replace("__SLUICE_HANDLER_MODULE__", &source.module).replace("__SLUICE_HANDLER_FUNCTION__", &source.function);
    std::fs::write(build.join(format!("{PYTHON_APP}.py")), adapter).with_context(|| format!("writing the adapter into {}", build.display()))?;
    let mut paths = vec![build.to_path_buf(), app.to_path_buf()];
    let requirements = def.dir.join("requirements.txt");
    if requirements.is_file() {
        let deps = build.join("deps");
        eprintln!("  installing requirements.txt into {} (pip; pure-Python packages only)", deps.display());
        let mut command = Command::new("python3");
        command
            .args(["-m", "pip", "install", "--disable-pip-version-check", "--no-compile", "--target"])
            .arg(&deps)
            .arg("-r")
            .arg(&requirements);
        run_tool(command, "installing requirements.txt")?;
        if let Some((package, file)) = native_code(&deps) {
            bail!(
                "requirements.txt: {package} contains native code ({file}), which cannot run inside a WebAssembly component; \
                 use a pure-Python package, or run the handler with runtime = \"python3.N\""
            );
        }
        paths.push(deps);
    }
    eprintln!("  componentize-py: making the component from {} (about 10 s)", source.file.display());
    let mut command = Command::new("python3");
    command
        .env("PYTHONPATH", &tool)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-c", "import sys; from componentize_py import script; sys.argv[0] = 'componentize-py'; sys.exit(script())"])
        .arg("-d")
        .arg(build.join("wit"))
        .args(["-w", "handler", "componentize", PYTHON_APP]);
    for path in &paths {
        command.arg("-p").arg(path);
    }
    command.arg("-o").arg(output).current_dir(build);
    run_tool(command, "componentize-py").context("componentize-py imports the handler's module while it builds: an error in it shows above")
}

fn javascript(project: &Project, source: &Source, build: &Path, app: &Path, output: &Path) -> anyhow::Result<()> {
    let tool = componentize_js(project)?;
    let relative = format!("{}.{}", source.module, source.file.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default());
    // An ES module is imported from the copy of the folder beside the adapter; a CommonJS
    // file is embedded in the adapter (componentize-js has no CommonJS loader).
    let es_module = source.file.extension().is_some_and(|e| e == "mjs");
    let (specifier, embedded) = if es_module {
        (format!("./{relative}"), String::new())
    } else {
        let code = std::fs::read_to_string(&source.file).with_context(|| format!("reading {}", source.file.display()))?;
        // A `#!` line is a syntax error inside the wrapper: blanked, so line numbers hold.
        let code = match code.strip_prefix("#!") {
            Some(rest) => rest.find('\n').map_or_else(String::new, |end| rest[end..].to_owned()),
            None => code,
        };
        (format!("./{JS_APP}"), code)
    };
    let adapter = JS_ADAPTER
        .replace("__SLUICE_HANDLER_ESM__", &specifier)
        .replace("__SLUICE_HANDLER_EXPORT__", &source.function)
        .replace("__SLUICE_HANDLER_FILE__", &relative)
        .replace("__SLUICE_HANDLER_SOURCE__", &embedded);
    let entry = app.join(JS_APP);
    std::fs::write(&entry, adapter).with_context(|| format!("writing the adapter into {}", app.display()))?;
    eprintln!("  componentize-js: making the component from {} (about 20 s)", source.file.display());
    let mut command = Command::new("node");
    command
        .arg(tool.join("node_modules/@bytecodealliance/componentize-js/src/cli.js"))
        .arg(&entry)
        .arg("--wit")
        .arg(build.join("wit"))
        // The world imports no HTTP: leave out the engine's fetch support.
        .args(["--world-name", "handler", "-d", "http", "-d", "fetch-event", "-o"])
        .arg(output)
        .current_dir(app);
    run_tool(command, "componentize-js").context("componentize-js runs the handler's top level while it builds: an error in it shows above")
}

/// componentize-py in the tools folder, installed with pip when missing.
fn componentize_py(project: &Project) -> anyhow::Result<PathBuf> {
    let dir = tool_dir(project, COMPONENTIZE_PY);
    if dir.join("componentize_py").join("__init__.py").is_file() {
        return Ok(dir);
    }
    eprintln!("  installing {COMPONENTIZE_PY} into {} (pip, from PyPI; about 45 MB)", dir.display());
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    let mut command = Command::new("python3");
    command.args(["-m", "pip", "install", "--disable-pip-version-check", "--target"]).arg(&partial).arg(COMPONENTIZE_PY);
    run_tool(command, "installing componentize-py")?;
    replace_dir(&partial, &dir)?;
    Ok(dir)
}

/// componentize-js in the tools folder, installed with npm when missing.
fn componentize_js(project: &Project) -> anyhow::Result<PathBuf> {
    let dir = tool_dir(project, COMPONENTIZE_JS);
    if dir.join("node_modules/@bytecodealliance/componentize-js/src/cli.js").is_file() {
        return Ok(dir);
    }
    eprintln!("  installing {COMPONENTIZE_JS} into {} (npm; about 400 MB with its SpiderMonkey engine)", dir.display());
    let partial = dir.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    std::fs::write(partial.join("package.json"), r#"{"name":"sluice-componentize-js","private":true}"#)
        .with_context(|| format!("writing {}", partial.display()))?;
    let mut command = Command::new("npm");
    command.args(["install", "--no-audit", "--no-fund", COMPONENTIZE_JS]).current_dir(&partial);
    run_tool(command, "installing componentize-js")?;
    replace_dir(&partial, &dir)?;
    Ok(dir)
}

/// `.sluice/tools/component/<name>-<version>`, absolute (the tools run in other folders).
fn tool_dir(project: &Project, spec: &str) -> PathBuf {
    let folder: String = spec.trim_start_matches('@').chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect();
    let dir = project.tools_dir().join("component").join(folder.replace("--", "-"));
    std::path::absolute(&dir).unwrap_or(dir)
}

/// Files of the function folder that go into the component: all but its build output,
/// its manifest, installed packages and hidden or cache folders.
fn sources(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    fn walk(root: &Path, dir: &Path, found: &mut Vec<PathBuf>) -> anyhow::Result<()> {
        for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
            let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
            let path = entry.path();
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') || ["node_modules", "__pycache__", "package", "target"].contains(&name.as_ref()) {
                continue;
            }
            // Symbolic links are followed for files (an example may share its handler with
            // another function), not for folders (no cycles).
            let meta = std::fs::symlink_metadata(&path).with_context(|| format!("reading {}", path.display()))?;
            if meta.is_dir() {
                walk(root, &path, found)?;
            } else if (dir != root || !matches!(name.as_ref(), "function.toml" | "requirements.txt" | BUILT_COMPONENT))
                && !name.ends_with(".partial")
                && path.is_file()
            {
                found.push(path);
            }
        }
        Ok(())
    }
    let mut found = Vec::new();
    walk(dir, dir, &mut found)?;
    found.sort();
    Ok(found)
}

fn copy_sources(from: &Path, to: &Path) -> anyhow::Result<()> {
    for file in sources(from)? {
        let target = to.join(file.strip_prefix(from).unwrap_or(&file));
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::copy(&file, &target).with_context(|| format!("copying {} to {}", file.display(), target.display()))?;
    }
    Ok(())
}

/// A digest of the function's sources (names and contents), its requirements and `extra`.
fn stamp(dir: &Path, extra: &[&[u8]]) -> anyhow::Result<String> {
    let mut hash = Sha256::new();
    for part in extra {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    let requirements = dir.join("requirements.txt");
    let mut files = sources(dir)?;
    if requirements.is_file() {
        files.push(requirements);
    }
    for file in files {
        let relative = file.strip_prefix(dir).unwrap_or(&file).to_string_lossy().into_owned();
        let contents = std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
        hash.update((relative.len() as u64).to_le_bytes());
        hash.update(relative.as_bytes());
        hash.update((contents.len() as u64).to_le_bytes());
        hash.update(&contents);
    }
    Ok(hex::encode(hash.finalize()))
}

/// The first installed package holding a shared library, and that file.
fn native_code(deps: &Path) -> Option<(String, String)> {
    fn walk(dir: &Path, top: Option<&str>) -> Option<(String, String)> {
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            let package = top.map_or_else(|| name.clone(), str::to_owned);
            if path.is_dir() {
                if name.ends_with(".dist-info") || name == "bin" {
                    continue;
                }
                if let Some(found) = walk(&path, Some(&package)) {
                    return Some(found);
                }
            } else if name.ends_with(".so") || name.contains(".so.") || name.ends_with(".pyd") {
                return Some((package, name));
            }
        }
        None
    }
    walk(deps, None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

    use super::*;

    #[test]
    fn the_stamp_follows_sources_and_ignores_outputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "def lambda_handler(e, c): return e\n").unwrap();
        std::fs::write(dir.path().join("function.toml"), "name = \"a\"\n").unwrap();
        let first = stamp(dir.path(), &[b"tool"]).unwrap();
        std::fs::write(dir.path().join(BUILT_COMPONENT), b"\0asm").unwrap();
        std::fs::create_dir(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/app.pyc"), b"x").unwrap();
        assert_eq!(stamp(dir.path(), &[b"tool"]).unwrap(), first, "outputs changed the stamp");
        assert_ne!(stamp(dir.path(), &[b"other tool"]).unwrap(), first);
        std::fs::write(dir.path().join("requirements.txt"), "six\n").unwrap();
        let with_requirements = stamp(dir.path(), &[b"tool"]).unwrap();
        assert_ne!(with_requirements, first);
        std::fs::write(dir.path().join("app.py"), "def lambda_handler(e, c): return 1\n").unwrap();
        assert_ne!(stamp(dir.path(), &[b"tool"]).unwrap(), with_requirements);
    }

    #[test]
    fn a_package_with_native_code_is_named() {
        let deps = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(deps.path().join("six-1.0.dist-info")).unwrap();
        std::fs::write(deps.path().join("six.py"), "").unwrap();
        assert_eq!(native_code(deps.path()), None);
        std::fs::create_dir_all(deps.path().join("numpy/core")).unwrap();
        std::fs::write(deps.path().join("numpy/core/_multiarray.cpython-311-x86_64-linux-gnu.so"), b"").unwrap();
        assert_eq!(native_code(deps.path()), Some(("numpy".into(), "_multiarray.cpython-311-x86_64-linux-gnu.so".into())));
    }
}
