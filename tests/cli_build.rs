//! `sluice build` installs a Lambda function's dependencies from the registries so its
//! handler can import them (`requirements.txt` into `package/`, `package.json` into
//! `node_modules/`), skips what is up to date, and refuses an unknown function with exit 2.
//! Guards `sam build`'s promise for the handlers people already have.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::*;

const PYTHON: &str = "import six\n\n\ndef handler(event, context):\n    return {'six': six.__version__}\n";
const NODE: &str = "const isNumber = require('is-number');\nexports.handler = async (event) => ({ isNumber: isNumber(event.value) });\n";

#[test]
fn build_installs_handler_dependencies_and_skips_what_is_up_to_date() {
    let project = Project::new();
    let py = project.lambda_function("py", "runtime = \"python3.11\"\nhandler = \"app.handler\"", &[("app.py", PYTHON), ("requirements.txt", "six==1.16.0\n")]);
    let node = project.lambda_function(
        "node",
        "runtime = \"nodejs20.x\"\nhandler = \"index.handler\"",
        &[("index.js", NODE), ("package.json", r#"{"name":"node-fn","private":true,"dependencies":{"is-number":"7.0.0"}}"#)],
    );

    let out = project.sluice_within(&["--json", "build"], Duration::from_secs(300));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let outcomes: Vec<(&str, &str)> = report.as_array().unwrap().iter().map(|f| (f["function"].as_str().unwrap(), f["outcome"].as_str().unwrap())).collect();
    assert_eq!(outcomes, [("node", "built"), ("py", "built")], "{report:#}");
    assert!(py.join("package/six.py").is_file());
    assert!(node.join("node_modules/is-number/package.json").is_file());

    // The handlers import what was installed.
    let event = project.path().join("event.json");
    std::fs::write(&event, r#"{"value": 42}"#).unwrap();
    for (name, expected) in [("py", r#""six": "1.16.0""#), ("node", r#""isNumber":true"#)] {
        let out = project.sluice(&["invoke", name, "--event", event.to_str().unwrap()]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && stdout.contains(expected), "{name}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    }

    // Nothing changed: nothing is installed again; a changed manifest is.
    let out = project.sluice(&["build"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("node: up to date") && stdout.contains("py: up to date"), "{stdout}");
    std::fs::write(py.join("requirements.txt"), "six==1.17.0\n").unwrap();
    let out = project.sluice_within(&["build", "py"], Duration::from_secs(300));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && stdout.contains("py: built"), "{stdout}{}", String::from_utf8_lossy(&out.stderr));

    // An unknown function is bad usage; a failing install fails the build with status 1.
    let out = project.sluice(&["build", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no function named \"nope\""));
    std::fs::write(py.join("requirements.txt"), "this-package-does-not-exist-sluice==0.0.1\n").unwrap();
    let out = project.sluice_within(&["build", "py"], Duration::from_secs(300));
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("py: FAILED: installing requirements.txt failed"), "{}", String::from_utf8_lossy(&out.stdout));
}
