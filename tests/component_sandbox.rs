//! A component sees nothing of its host but what it is granted: no file outside its
//! bucket grants, no variable of `sluice`'s own environment (only its `env` and Lambda's),
//! and no sockets. Guards the WASI context the `component` runtime builds per invocation.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::component::probe_source;
use common::*;
use serde_json::json;

#[test]
fn a_component_reaches_only_what_it_is_granted() {
    let project = Project::new();
    project.component_function(
        "probe",
        "handler = \"app.lambda_handler\"\nbuckets = [\"inbox:rw\"]\nenv = { TABLE = \"orders\" }",
        &[("app.py", &probe_source())],
    );
    project.build(&["probe"]);
    let secret = project.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();

    // Files: the granted bucket, read and written; nothing else, not even by absolute path.
    std::fs::create_dir_all(project.path().join("buckets/inbox")).unwrap();
    std::fs::write(project.path().join("buckets/inbox/order.txt"), "one order").unwrap();
    let read = project.invoke_json("probe", &json!({"action": "open", "path": "/buckets/inbox/order.txt"}));
    assert_eq!(read["response"]["read"], "one order", "{read}");
    let written = project.invoke_json("probe", &json!({"action": "write", "path": "/buckets/inbox/reply.txt", "text": "done"}));
    assert_eq!(written["response"]["written"], true, "{written}");
    assert_eq!(std::fs::read_to_string(project.path().join("buckets/inbox/reply.txt")).unwrap(), "done");
    for path in [secret.display().to_string(), "/etc/passwd".to_owned(), "/buckets/inbox/../../secret.txt".to_owned()] {
        let denied = project.invoke_json("probe", &json!({"action": "open", "path": path}));
        assert_eq!(denied["outcome"], "success", "{denied}");
        assert!(denied["response"]["read"].is_null(), "the component read {path}: {denied}");
        assert!(denied["response"]["error"].is_string(), "{denied}");
    }

    // Variables: the function's own and Lambda's, never the host's.
    let output = project
        .command(&["--json", "invoke", "probe", "--event", "-"])
        .env("SLUICE_TEST_HOST_SECRET", "must-not-leak")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(json!({"action": "env"}).to_string().as_bytes())?;
            child.wait_with_output()
        })
        .unwrap();
    let env: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let seen = env["response"]["env"].as_object().unwrap_or_else(|| panic!("{env}"));
    assert_eq!(seen.get("TABLE").and_then(|v| v.as_str()), Some("orders"), "{env}");
    assert_eq!(seen.get("AWS_LAMBDA_FUNCTION_NAME").and_then(|v| v.as_str()), Some("probe"), "{env}");
    for key in seen.keys() {
        assert!(
            key == "TABLE" || key.starts_with("AWS_") || key.starts_with("_") || key == "TZ",
            "the component sees {key}, which is not its own: {env}"
        );
    }
    assert!(!output.stdout.windows(13).any(|w| w == b"must-not-leak"));

    // Sockets: a listener on loopback is never reached.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let connect = project.invoke_json("probe", &json!({"action": "connect", "port": port}));
    assert_eq!(connect["outcome"], "success", "{connect}");
    assert!(connect["response"]["connected"].is_null(), "the component opened a socket: {connect}");
    // The invoking process has exited: a connection it made would be queued already.
    assert!(listener.accept().is_err(), "the listener accepted a connection from the component");
}
