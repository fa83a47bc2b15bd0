//! Bad HTTP settings stop `sluice up` with exit status 2 and a message naming the file and
//! the field: two routes that would answer the same requests (both files named), a route
//! that needs API keys when none are configured, a schema that is not a JSON Schema, an
//! address that is taken; and `--http off` runs no listener.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::*;

fn up_fails(project: &Project, nats: &NatsServer, args: &[&str]) -> String {
    let url = nats.url();
    let mut full: Vec<&str> = vec!["--nats", &url, "up"];
    full.extend_from_slice(args);
    let out = project.sluice(&full);
    assert_eq!(out.status.code(), Some(2), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_http_settings_are_configuration_errors() {
    let nats = NatsServer::start();

    let project = Project::new();
    project.function("f", "hello", "");
    project.trigger("a", "kind = \"http\"\n[routes.\"GET /users/{id}\"]\nfunction = \"f\"\n");
    project.trigger("b", "kind = \"http\"\n[routes.\"GET /users/{name}\"]\nfunction = \"f\"\n");
    let error = up_fails(&project, &nats, &[]);
    assert!(error.contains("triggers/a.toml") && error.contains("triggers/b.toml") && error.contains("conflicts"), "{error}");

    let project = Project::new();
    project.function("f", "hello", "");
    project.trigger("a", "kind = \"http\"\n[routes.\"GET /x\"]\nfunction = \"f\"\napi_key = true\n");
    let error = up_fails(&project, &nats, &[]);
    assert!(error.contains("triggers/a.toml") && error.contains("api_key") && error.contains("SLUICE_API_KEYS"), "{error}");

    let project = Project::new();
    project.function("f", "hello", "");
    std::fs::write(project.path().join("order.json"), "{\"type\": 12}").unwrap();
    project.trigger("a", "kind = \"http\"\n[routes.\"POST /x\"]\nfunction = \"f\"\nschema = \"order.json\"\n");
    let error = up_fails(&project, &nats, &[]);
    assert!(error.contains("triggers/a.toml") && error.contains("schema") && error.contains("order.json"), "{error}");

    let project = Project::new();
    project.trigger("a", "kind = \"http\"\n[routes.\"FETCH /x\"]\nfunction = \"f\"\n");
    let error = up_fails(&project, &nats, &[]);
    assert!(error.contains("triggers/a.toml") && error.contains("FETCH"), "{error}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let project = Project::new();
    let error = up_fails(&project, &nats, &["--http", &addr]);
    assert!(error.contains(&addr) && error.contains("--http"), "{error}");
    let error = up_fails(&project, &nats, &["--http", "localhost"]);
    assert!(error.contains("IP:PORT"), "{error}");

    let mut command = project.command(&["--nats", &nats.url(), "up", "--http", "off"]);
    command.env_remove("SLUICE_HTTP_LISTEN");
    let up = project.spawn_up(command, "up-off", "sluice up --http off");
    assert_eq!(up.http, None, "no listener with --http off");
}
