//! Where a Lambda runtime's pieces are: the interpreter on the host (`python3.N`, `node`)
//! and the runtime interface client, installed by `sluice build` into the project's tools
//! folder (`.sluice/tools/lambda/`), never system-wide.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use crate::config::RuntimeKind;

/// Versions of the clients `sluice build` installs.
pub const AWSLAMBDARIC: &str = "awslambdaric==4.2.2";
/// aws-lambda-ric 4 needs Node.js 22; 3.3.0 is the last release for older ones.
pub fn aws_lambda_ric(node_major: u32) -> &'static str {
    if node_major >= 22 {
        "aws-lambda-ric@4"
    } else {
        "aws-lambda-ric@3.3.0"
    }
}

/// An interpreter found on the host.
#[derive(Debug, Clone)]
pub struct Interpreter {
    /// The real executable (not a pyenv/asdf shim, which needs the host's variables).
    pub path: PathBuf,
    /// As the interpreter reports it ("3.11.7", "20.20.2").
    pub version: String,
}

/// The client folder of a runtime inside `tools` (`<project>/.sluice/tools`).
pub fn client_dir(tools: &Path, runtime: RuntimeKind) -> Option<PathBuf> {
    let lambda = tools.join("lambda");
    match runtime {
        RuntimeKind::Python { minor } => Some(lambda.join(format!("python3.{minor}"))),
        RuntimeKind::Node { major } => Some(lambda.join(format!("nodejs{major}"))),
        RuntimeKind::Wasm | RuntimeKind::Component | RuntimeKind::Provided { .. } => None,
    }
}

/// Finds the interpreter a runtime names, asking it for its real path and version (once
/// per process and runtime).
pub fn interpreter(runtime: RuntimeKind) -> Result<Interpreter, String> {
    static FOUND: OnceLock<Mutex<HashMap<String, Result<Interpreter, String>>>> = OnceLock::new();
    let key = runtime.to_string();
    let cache = FOUND.get_or_init(|| Mutex::new(HashMap::new()));
    if let Some(found) = cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
        return found;
    }
    let found = find_interpreter(runtime);
    if let Ok(mut cache) = cache.lock() {
        cache.insert(key, found.clone());
    }
    found
}

fn find_interpreter(runtime: RuntimeKind) -> Result<Interpreter, String> {
    let (program, script, wanted): (String, &str, String) = match runtime {
        RuntimeKind::Python { minor } => (
            format!("python3.{minor}"),
            "import sys, platform; print(sys.executable); print(platform.python_version())",
            format!("3.{minor}."),
        ),
        RuntimeKind::Node { major } => ("node".to_owned(), "", format!("{major}.")),
        RuntimeKind::Wasm | RuntimeKind::Component | RuntimeKind::Provided { .. } => return Err(format!("runtime {runtime} has no interpreter")),
    };
    let output = match runtime {
        RuntimeKind::Node { .. } => Command::new(&program).args(["-p", "process.execPath + '\\n' + process.versions.node"]).output(),
        _ => Command::new(&program).args(["-c", script]).output(),
    };
    let install = match runtime {
        RuntimeKind::Python { minor } => format!("install Python 3.{minor} (e.g. apt-get install python3.{minor}, or pyenv) or name the version you have"),
        _ => "install that Node.js version or name the one you have (`node --version`)".to_owned(),
    };
    let output = output.map_err(|e| format!("runtime {runtime}: cannot run `{program}` ({e}); {install}"))?;
    if !output.status.success() {
        return Err(format!("runtime {runtime}: `{program}` failed ({}); {install}", String::from_utf8_lossy(&output.stderr).trim()));
    }
    let text = String::from_utf8_lossy(&output.stdout);
    let mut lines = text.lines();
    let (path, version) = (lines.next().unwrap_or_default().trim(), lines.next().unwrap_or_default().trim());
    if !version.starts_with(&wanted) {
        return Err(format!("runtime {runtime}: `{program}` is version {version}, not {wanted}x; {install}"));
    }
    Ok(Interpreter { path: PathBuf::from(path), version: version.to_owned() })
}

/// The Node client's entry script, from its `package.json` `bin`.
pub fn node_client_entry(client_dir: &Path) -> Option<PathBuf> {
    let package = client_dir.join("node_modules").join("aws-lambda-ric");
    let text = std::fs::read_to_string(package.join("package.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_str(&text).ok()?;
    let bin = match &manifest["bin"] {
        serde_json::Value::String(path) => Some(path.clone()),
        serde_json::Value::Object(map) => map.get("aws-lambda-ric").or_else(|| map.values().next()).and_then(|v| v.as_str()).map(str::to_owned),
        _ => None,
    }?;
    let entry = package.join(bin);
    entry.is_file().then_some(entry)
}

/// Whether the Python client is installed in `client_dir`.
pub fn python_client_installed(client_dir: &Path) -> bool {
    client_dir.join("awslambdaric").join("__main__.py").is_file()
}
