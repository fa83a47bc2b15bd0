//! `sluice build` makes components from what Lambda handlers are made of: a Python handler's
//! pure-Python `requirements.txt` is bundled (and a package with native code refused by
//! name), a prebuilt component given as `module` is only precompiled, a JavaScript ES module (`index.mjs`) with its own imports works like a CommonJS
//! file, an import error fails the build with the traceback, and an unchanged function is
//! not built again. Guards the build step of the `component` runtime.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const PYTHON: &str = "import six\n\n\ndef lambda_handler(event, context):\n    return {'six': six.__version__, 'name': event['name']}\n";
const ES_MODULE: &str = "import { greet } from './lib.mjs';\nexport const handler = async (event, context) => ({ greeting: greet(event.name), fn: context.functionName });\n";
const LIB: &str = "export function greet(name) { return `Hello, ${name}!`; }\n";

#[test]
fn handlers_build_into_components_with_their_dependencies() {
    let project = Project::new();
    let py = project.component_function("py", "handler = \"app.lambda_handler\"", &[("app.py", PYTHON), ("requirements.txt", "six==1.16.0\n")]);
    project.component_function("esm", "handler = \"index.handler\"", &[("index.mjs", ES_MODULE), ("lib.mjs", LIB)]);
    let built = project.build(&[]);
    assert!(built.contains("esm: built") && built.contains("py: built"), "{built}");

    assert_eq!(project.invoke_json("py", &json!({"name": "Ada"}))["response"], json!({"six": "1.16.0", "name": "Ada"}));
    assert_eq!(project.invoke_json("esm", &json!({"name": "Ada"}))["response"], json!({"greeting": "Hello, Ada!", "fn": "esm"}));

    // Unchanged: nothing is built again.
    let again = project.build(&[]);
    assert!(again.contains("esm: up to date") && again.contains("py: up to date"), "{again}");

    // A component built elsewhere runs from `module`: only precompiled.
    let prebuilt = project.component_function("prebuilt", "module = \"handler.wasm\"", &[]);
    std::fs::copy(py.join("component.wasm"), prebuilt.join("handler.wasm")).unwrap();
    let built = project.build(&["prebuilt"]);
    assert!(built.contains("prebuilt component") && built.contains("precompiled in"), "{built}");
    assert_eq!(project.invoke_json("prebuilt", &json!({"name": "Bo"}))["response"], json!({"six": "1.16.0", "name": "Bo"}));

    // A package with native code cannot run in the sandbox: refused by name.
    std::fs::write(py.join("requirements.txt"), "markupsafe==2.1.5\n").unwrap();
    let out = project.sluice_within(&["build", "py"], Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("py: FAILED: requirements.txt: markupsafe contains native code"), "{stdout}");

    // An import error fails the build, with the traceback.
    std::fs::remove_file(py.join("requirements.txt")).unwrap();
    std::fs::write(py.join("app.py"), format!("import sluice_no_such_module\n{PYTHON}")).unwrap();
    let out = project.sluice_within(&["build", "py"], Duration::from_secs(300));
    let output = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{output}");
    assert!(output.contains("No module named 'sluice_no_such_module'") && output.contains("py: FAILED: componentize-py"), "{output}");
}
