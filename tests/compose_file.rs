//! The container deployment: `docker-compose.yml`, `Dockerfile`, `.dockerignore` and `deploy/`.
//! Guards against a compose file that Docker would refuse (it is validated against the Compose
//! specification's JSON Schema, vendored in tests/fixtures/compose-spec/: the file
//! `compose/config/compose_spec.json` of the PyPI wheel docker-compose 1.29.2, see its README),
//! against broken promises (3 NATS servers with JetStream and routes to each other, two sluice
//! nodes fed by a one-shot `deploy`, PostgreSQL with `wal_level=logical`, only the gateways
//! published, a multi-stage Dockerfile that runs as a non-root user), against triggers of the
//! compose project that Sluice's own parser refuses or that name a service the file lacks,
//! against flags or `SLUICE_*` variables given to `sluice` that it does not have, and against
//! NATS cluster files that do not form a cluster: the same `deploy/nats/*.conf` run here as
//! nats-server processes on loopback. Each check is also run on a deliberately broken copy,
//! so none of them can pass vacuously.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::cluster::{free_port_on, NatsCluster, NatsNode};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("reading {relative}: {e}"))
}

/// docker-compose.yml as JSON.
fn compose() -> Value {
    serde_yaml_ng::from_str(&read("docker-compose.yml")).expect("docker-compose.yml is YAML")
}

/// Every `deploy/nats/*.conf`, by its path as the compose file names it (`./deploy/nats/x.conf`).
fn nats_confs() -> BTreeMap<String, String> {
    let mut confs = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("deploy/nats")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "conf") {
            let name = path.file_name().unwrap().to_str().unwrap().to_owned();
            confs.insert(format!("./deploy/nats/{name}"), std::fs::read_to_string(&path).unwrap());
        }
    }
    confs
}

// ---------------------------------------------------------------------------------------------
// Reading the compose file.

fn services(doc: &Value) -> &serde_json::Map<String, Value> {
    doc["services"].as_object().expect("services is a map")
}

fn image(service: &Value) -> &str {
    service["image"].as_str().unwrap_or_default()
}

/// A command or entrypoint: a list, or a string split at spaces.
fn words(value: &Value) -> Vec<String> {
    match value {
        Value::Array(items) => items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect(),
        Value::String(text) => text.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    }
}

/// `environment` as a map (it may be a map or a list of `KEY=VALUE`).
fn environment(service: &Value) -> BTreeMap<String, String> {
    match &service["environment"] {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned))).collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(|i| i.as_str())
            .map(|i| i.split_once('=').map_or((i.to_owned(), String::new()), |(k, v)| (k.to_owned(), v.to_owned())))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// `volumes` as (source, target) pairs, short or long syntax.
fn mounts(service: &Value) -> Vec<(String, String)> {
    service["volumes"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|item| match item {
                    Value::String(short) => {
                        let mut parts = short.split(':');
                        (parts.next().unwrap_or_default().to_owned(), parts.next().unwrap_or_default().to_owned())
                    }
                    long => (long["source"].as_str().unwrap_or_default().to_owned(), long["target"].as_str().unwrap_or_default().to_owned()),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn is_named_volume(source: &str) -> bool {
    !source.is_empty() && !source.starts_with('.') && !source.starts_with('/') && !source.starts_with('~')
}

/// `depends_on` as service → condition (the list form means `service_started`).
fn depends_on(service: &Value) -> BTreeMap<String, String> {
    match &service["depends_on"] {
        Value::Array(items) => items.iter().filter_map(|i| i.as_str()).map(|i| (i.to_owned(), "service_started".to_owned())).collect(),
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v["condition"].as_str().unwrap_or_default().to_owned())).collect(),
        _ => BTreeMap::new(),
    }
}

// ---------------------------------------------------------------------------------------------
// The checks. Each returns what is wrong, so that it can be run on broken copies too.

fn check_schema(doc: &Value) -> Result<(), String> {
    let schema: Value = serde_json::from_str(&read("tests/fixtures/compose-spec/compose_spec.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).expect("the Compose specification's schema compiles");
    let errors: Vec<String> = validator.iter_errors(doc).map(|e| format!("at {}: {e}", e.instance_path())).collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("\n"))
    }
}

/// What a nats-server config file of deploy/nats/ says, read line by line (the files use one
/// setting per line).
#[derive(Debug, Default)]
struct NatsConf {
    server_name: String,
    listen: String,
    http: String,
    store_dir: String,
    jetstream: bool,
    cluster_name: String,
    cluster_listen: String,
    routes: Vec<String>,
}

fn parse_nats_conf(text: &str) -> NatsConf {
    let mut conf = NatsConf::default();
    // The blocks the line is in: `jetstream`, `cluster`, `routes`, ...
    let mut blocks: Vec<String> = Vec::new();
    let value = |line: &str, key: &str| -> Option<String> {
        let rest = line.strip_prefix(key)?.trim_start();
        let rest = rest.strip_prefix(':').or_else(|| rest.strip_prefix('='))?;
        Some(rest.trim().trim_matches('"').to_owned())
    };
    for raw in text.lines() {
        let line = raw.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_suffix('{').or_else(|| line.strip_suffix('[')) {
            let name = name.trim().trim_end_matches([':', '=']).trim().to_owned();
            conf.jetstream |= name == "jetstream" && blocks.is_empty();
            blocks.push(name);
            continue;
        }
        if line == "}" || line == "]" {
            blocks.pop();
            continue;
        }
        let path: Vec<&str> = blocks.iter().map(String::as_str).collect();
        match path.as_slice() {
            [] => {
                if let Some(v) = value(line, "server_name") {
                    conf.server_name = v;
                } else if let Some(v) = value(line, "listen") {
                    conf.listen = v;
                } else if let Some(v) = value(line, "http") {
                    conf.http = v;
                }
            }
            ["jetstream"] => {
                if let Some(v) = value(line, "store_dir") {
                    conf.store_dir = v;
                }
            }
            ["cluster"] => {
                if let Some(v) = value(line, "name") {
                    conf.cluster_name = v;
                } else if let Some(v) = value(line, "listen") {
                    conf.cluster_listen = v;
                }
            }
            ["cluster", "routes"] => conf.routes.extend(line.split([',', ' ']).map(|r| r.trim_matches('"')).filter(|r| !r.is_empty()).map(str::to_owned)),
            _ => {}
        }
    }
    conf
}

fn port_of(address: &str) -> &str {
    address.rsplit(':').next().unwrap_or_default()
}

/// The NATS services: 3 of them, nats-server 2.10 or newer, each run from its own
/// deploy/nats/*.conf with JetStream on a named volume, routes to the two others, one cluster
/// name, a healthcheck on the monitoring port, nothing published. Returns the confs by service.
fn check_nats(doc: &Value, confs: &BTreeMap<String, String>) -> Result<BTreeMap<String, NatsConf>, String> {
    let services = services(doc);
    let declared: BTreeSet<&String> = doc["volumes"].as_object().map(|v| v.keys().collect()).unwrap_or_default();
    let nats: Vec<(&String, &Value)> = services.iter().filter(|(_, s)| image(s).starts_with("nats:")).collect();
    if nats.len() != 3 {
        return Err(format!("{} NATS services ({:?}), not 3", nats.len(), nats.iter().map(|(n, _)| n).collect::<Vec<_>>()));
    }
    let mut found = BTreeMap::new();
    for (name, service) in &nats {
        let tag = image(service).trim_start_matches("nats:");
        let version: Vec<u32> = tag.split(['-', '.']).take(2).map_while(|p| p.parse().ok()).collect();
        if version.len() < 2 || (version[0], version[1]) < (2, 10) {
            return Err(format!("{name}: image {} is not nats-server 2.10 or newer", image(service)));
        }
        let command = words(&service["command"]);
        let config = command
            .iter()
            .position(|w| w == "--config" || w == "-c")
            .and_then(|i| command.get(i + 1))
            .ok_or_else(|| format!("{name}: the command {command:?} names no --config"))?;
        let mounts = mounts(service);
        let source = mounts
            .iter()
            .find(|(_, target)| target == config)
            .map(|(source, _)| source.clone())
            .ok_or_else(|| format!("{name}: nothing is mounted at {config}"))?;
        let text = confs.get(&source).ok_or_else(|| format!("{name}: {source} is not one of deploy/nats/*.conf"))?;
        let conf = parse_nats_conf(text);
        if !conf.jetstream || conf.store_dir.is_empty() {
            return Err(format!("{name}: {source} does not enable JetStream with a store_dir"));
        }
        match mounts.iter().find(|(_, target)| *target == conf.store_dir) {
            Some((volume, _)) if is_named_volume(volume) && declared.contains(volume) => {}
            other => return Err(format!("{name}: the JetStream store {} is not on a declared named volume ({other:?})", conf.store_dir)),
        }
        if conf.cluster_listen.is_empty() || conf.cluster_name.is_empty() {
            return Err(format!("{name}: {source} has no cluster block with a name and a listen address"));
        }
        let health = words(&service["healthcheck"]["test"]).join(" ");
        if conf.http.is_empty() || !health.contains(&format!(":{}/healthz", port_of(&conf.http))) {
            return Err(format!("{name}: the healthcheck ({health}) does not ask /healthz on the monitoring port ({})", conf.http));
        }
        if service.get("ports").is_some() {
            return Err(format!("{name}: publishes ports; only the HTTP gateways are published"));
        }
        found.insert((*name).clone(), conf);
    }
    let names: BTreeSet<String> = found.values().map(|c| c.server_name.clone()).collect();
    if names.len() != 3 {
        return Err(format!("the servers' names are not distinct: {names:?}"));
    }
    let clusters: BTreeSet<&String> = found.values().map(|c| &c.cluster_name).collect();
    if clusters.len() != 1 {
        return Err(format!("the servers name different clusters: {clusters:?}"));
    }
    for (name, conf) in &found {
        let routes: BTreeSet<String> = conf.routes.iter().map(|r| r.trim_start_matches("nats-route://").to_owned()).collect();
        let wanted: BTreeSet<String> =
            found.iter().filter(|(other, _)| *other != name).map(|(other, c)| format!("{other}:{}", port_of(&c.cluster_listen))).collect();
        if routes != wanted {
            return Err(format!("{name} routes to {routes:?}; it must route to the two others: {wanted:?}"));
        }
    }
    Ok(found)
}

/// The Dockerfile, instruction by instruction, with `ARG` defaults of the global scope applied.
#[derive(Debug)]
struct Stage {
    from: String,
    name: Option<String>,
    instructions: Vec<(String, String)>,
}

fn parse_dockerfile(text: &str) -> Vec<Stage> {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    logical.push(std::mem::take(&mut current));
                }
                current.clear();
            }
        }
    }
    let mut args: BTreeMap<String, String> = BTreeMap::new();
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in logical {
        let (keyword, rest) = instruction.split_once(char::is_whitespace).unwrap_or((&instruction, ""));
        let keyword = keyword.to_uppercase();
        let mut rest = rest.trim().to_owned();
        for (key, value) in &args {
            rest = rest.replace(&format!("${{{key}}}"), value).replace(&format!("${key}"), value);
        }
        match (keyword.as_str(), stages.last_mut()) {
            ("ARG", None) => {
                if let Some((key, value)) = rest.split_once('=') {
                    args.insert(key.trim().to_owned(), value.trim().to_owned());
                }
            }
            ("FROM", _) => {
                let parts: Vec<&str> = rest.split_whitespace().filter(|p| !p.starts_with("--")).collect();
                let name = match parts.as_slice() {
                    [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some((*name).to_owned()),
                    _ => None,
                };
                stages.push(Stage { from: parts.first().copied().unwrap_or_default().to_owned(), name, instructions: Vec::new() });
            }
            (_, Some(stage)) => stage.instructions.push((keyword, rest)),
            (_, None) => {}
        }
    }
    stages
}

/// Two stages or more; a Rust 1.95 bookworm builder that builds `sluice` in release and the
/// example functions and splits off the debug information; a slim runtime stage, the last,
/// without nats-server, that runs as a fixed non-root user with `ENTRYPOINT ["sluice"]`.
/// Returns the runtime stage's WORKDIR.
fn check_dockerfile(text: &str, dockerignore: &str) -> Result<String, String> {
    let stages = parse_dockerfile(text);
    if stages.len() < 2 {
        return Err(format!("{} stage(s); a builder and a runtime stage are needed", stages.len()));
    }
    let builder = stages
        .iter()
        .find(|s| s.from.starts_with("rust:1.95") && s.from.contains("bookworm"))
        .ok_or("no stage builds from rust:1.95 on bookworm")?;
    let runs: String = builder.instructions.iter().filter(|(k, _)| k == "RUN").map(|(_, r)| r.as_str()).collect::<Vec<_>>().join("\n");
    for needed in ["cargo build --release", "--bin sluice", "sluice build", "--only-keep-debug", "--strip-debug", "cmake", "libcurl4-openssl-dev", "autoconf", "automake", "libtool", "g++", "wasm32-wasip1"] {
        if !runs.contains(needed) {
            return Err(format!("the builder stage does not run {needed:?}"));
        }
    }
    let names: Vec<&str> = stages.iter().filter_map(|s| s.name.as_deref()).collect();
    for stage in &stages {
        for (_, rest) in stage.instructions.iter().filter(|(k, _)| k == "COPY") {
            if let Some(from) = rest.split_whitespace().find_map(|w| w.strip_prefix("--from=")) {
                if !names.contains(&from) && !from.contains(':') {
                    return Err(format!("COPY --from={from} names neither a stage nor an image"));
                }
            }
        }
    }
    let runtime = stages.last().unwrap();
    if !(runtime.from.starts_with("debian:bookworm") && runtime.from.contains("slim")) {
        return Err(format!("the last stage starts from {}, not debian bookworm-slim", runtime.from));
    }
    let user = runtime.instructions.iter().rev().find(|(k, _)| k == "USER").map(|(_, u)| u.clone()).ok_or("the last stage sets no USER")?;
    let account = user.split(':').next().unwrap_or_default();
    if account.is_empty() || account == "root" || account == "0" {
        return Err(format!("the last stage runs as {user:?}, which is root"));
    }
    let entrypoint = runtime.instructions.iter().rev().find(|(k, _)| k == "ENTRYPOINT").map(|(_, e)| e.clone()).unwrap_or_default();
    if serde_json::from_str::<Vec<String>>(&entrypoint).ok() != Some(vec!["sluice".to_owned()]) {
        return Err(format!("the last stage's ENTRYPOINT is {entrypoint:?}, not [\"sluice\"]"));
    }
    if runtime.instructions.iter().any(|(_, r)| r.contains("nats-server")) {
        return Err("the runtime stage installs nats-server; the compose file runs NATS separately".to_owned());
    }
    let workdir = runtime.instructions.iter().rev().find(|(k, _)| k == "WORKDIR").map(|(_, w)| w.clone()).ok_or("the last stage sets no WORKDIR")?;
    let ignored: BTreeSet<&str> = dockerignore.lines().map(|l| l.trim().trim_end_matches('/')).filter(|l| !l.starts_with('#')).collect();
    for needed in ["target", ".sluice", ".git"] {
        if !ignored.contains(needed) {
            return Err(format!(".dockerignore does not leave out {needed}"));
        }
    }
    Ok(workdir)
}

/// The sluice services: the one that builds the image runs `sluice deploy` once every NATS
/// server is healthy; exactly two nodes run `sluice up --registry --roles
/// workers,triggers,gateway` after it, with the same settings, after every other service;
/// both mount the compose project into the image's project folder; only they publish a port,
/// their gateway's; they get time to drain on stop.
fn check_sluice(doc: &Value, nats: &[String], workdir: &str, longest_timeout: Duration) -> Result<(), String> {
    let services = services(doc);
    let built: Vec<(&String, &Value)> = services.iter().filter(|(_, s)| s.get("build").is_some()).collect();
    let [(deploy_name, deploy)] = built.as_slice() else {
        return Err(format!("{} services build the image; one should ({:?})", built.len(), built.iter().map(|(n, _)| n).collect::<Vec<_>>()));
    };
    let tag = image(deploy);
    if words(&deploy["command"]).first().map(String::as_str) != Some("deploy") {
        return Err(format!("{deploy_name} (which builds the image) does not run `sluice deploy`"));
    }
    for server in nats {
        if depends_on(deploy).get(server).map(String::as_str) != Some("service_healthy") {
            return Err(format!("{deploy_name} does not wait for {server} to be healthy"));
        }
    }
    let nodes: Vec<(&String, &Value)> = services.iter().filter(|(_, s)| image(s) == tag && words(&s["command"]).first().map(String::as_str) == Some("up")).collect();
    if nodes.len() != 2 {
        return Err(format!("{} sluice nodes (`up` on image {tag}), not 2", nodes.len()));
    }
    let listen_port = |service: &Value| environment(service).get("SLUICE_HTTP_LISTEN").map(|l| port_of(l).to_owned());
    let mut host_ports = BTreeSet::new();
    for (name, node) in &nodes {
        let command = words(&node["command"]);
        let roles = command.iter().position(|w| w == "--roles").and_then(|i| command.get(i + 1));
        let roles: BTreeSet<&str> = roles.map(|r| r.split(',').collect()).unwrap_or_default();
        if !command.iter().any(|w| w == "--registry") || roles != BTreeSet::from(["workers", "triggers", "gateway"]) {
            return Err(format!("{name} runs {command:?}, not `up --registry --roles workers,triggers,gateway`"));
        }
        let depends = depends_on(node);
        if depends.get(deploy_name.as_str()).map(String::as_str) != Some("service_completed_successfully") {
            return Err(format!("{name} does not wait for {deploy_name} to complete"));
        }
        for (other, service) in services.iter().filter(|(_, s)| image(s) != tag) {
            let wanted = if service.get("healthcheck").is_some() { "service_healthy" } else { "service_completed_successfully" };
            if depends.get(other).map(String::as_str) != Some(wanted) {
                return Err(format!("{name} does not wait for {other} ({wanted})"));
            }
        }
        let ports = node["ports"].as_array().cloned().unwrap_or_default();
        let container_port = listen_port(node).ok_or_else(|| format!("{name} sets no SLUICE_HTTP_LISTEN"))?;
        if ports.len() != 1 || ports[0].as_str().map(port_of) != Some(container_port.as_str()) {
            return Err(format!("{name} publishes {ports:?}; it should publish its gateway's port {container_port} only"));
        }
        host_ports.insert(ports[0].as_str().unwrap_or_default().to_owned());
        let grace = node["stop_grace_period"].as_str().and_then(|g| humantime::parse_duration(g).ok()).unwrap_or_default();
        if grace < longest_timeout + Duration::from_secs(10) {
            return Err(format!("{name}: stop_grace_period {grace:?} is shorter than the drain bound (longest timeout {longest_timeout:?} + 10 s)"));
        }
    }
    if host_ports.len() != 2 {
        return Err(format!("the two nodes publish on the same host port: {host_ports:?}"));
    }
    if environment(nodes[0].1) != environment(nodes[1].1) {
        return Err("the two nodes have different environments".to_owned());
    }
    // `deploy` stores the project's triggers in the registry; the nodes run them from there
    // and need only the project's settings.
    let project_mounts = |service: &Value, files: &[&str]| -> Result<(), String> {
        let mounts = mounts(service);
        for file in files {
            let (source, target) = (format!("./deploy/project/{file}"), format!("{workdir}/{file}"));
            if !mounts.iter().any(|(s, t)| *s == source && *t == target) {
                return Err(format!("{source} is not mounted at {target}"));
            }
        }
        Ok(())
    };
    project_mounts(deploy, &["sluice.toml", "triggers"]).map_err(|e| format!("{deploy_name}: {e}"))?;
    for (name, node) in &nodes {
        project_mounts(node, &["sluice.toml"]).map_err(|e| format!("{name}: {e}"))?;
    }
    for (name, service) in services.iter().filter(|(_, s)| !nodes.iter().any(|(_, n)| std::ptr::eq(*n, *s))) {
        if service.get("ports").is_some() {
            return Err(format!("{name} publishes ports; only the sluice nodes' gateways are published"));
        }
    }
    Ok(())
}

/// The PostgreSQL service runs with `wal_level=logical` and has a healthcheck.
fn check_postgres(doc: &Value) -> Result<(), String> {
    let (name, service) = services(doc).iter().find(|(_, s)| image(s).starts_with("postgres:")).ok_or("no postgres service")?;
    let command = words(&service["command"]);
    let logical = command.windows(2).any(|w| w[0] == "-c" && w[1] == "wal_level=logical") || command.iter().any(|w| w == "-cwal_level=logical");
    if !logical {
        return Err(format!("{name} runs {command:?}, without -c wal_level=logical"));
    }
    if service.get("healthcheck").is_none() {
        return Err(format!("{name} has no healthcheck"));
    }
    Ok(())
}

/// Every named volume used is declared, and every declared one is used.
fn check_volumes(doc: &Value) -> Result<(), String> {
    let declared: BTreeSet<String> = doc["volumes"].as_object().map(|v| v.keys().cloned().collect()).unwrap_or_default();
    let used: BTreeSet<String> = services(doc).values().flat_map(mounts).map(|(s, _)| s).filter(|s| is_named_volume(s)).collect();
    if declared != used {
        return Err(format!("named volumes used {used:?} differ from those declared {declared:?}"));
    }
    for (source, _) in services(doc).values().flat_map(mounts).filter(|(s, _)| s.starts_with("./")) {
        if !root().join(&source).exists() {
            return Err(format!("the bind mount {source} does not exist in the repository"));
        }
    }
    Ok(())
}

/// The compose project as `sluice` sees it in the container: the repository's functions and
/// schemas (baked into the image) with deploy/project's sluice.toml and triggers.
fn compose_project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for shared in ["functions", "schemas"] {
        std::os::unix::fs::symlink(root().join(shared), dir.path().join(shared)).unwrap();
    }
    std::fs::copy(root().join("deploy/project/sluice.toml"), dir.path().join("sluice.toml")).unwrap();
    std::fs::create_dir(dir.path().join("triggers")).unwrap();
    for entry in std::fs::read_dir(root().join("deploy/project/triggers")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, dir.path().join("triggers").join(path.file_name().unwrap())).unwrap();
    }
    dir
}

/// The compose project's triggers, each as its TOML.
fn compose_triggers() -> BTreeMap<String, toml::Value> {
    let mut triggers = BTreeMap::new();
    for entry in std::fs::read_dir(root().join("deploy/project/triggers")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            triggers.insert(name, toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap());
        }
    }
    triggers
}

/// The host of `scheme://[user[:password]@]host[:port][/...]` or `host:port`.
fn host_of(address: &str) -> String {
    let rest = address.split_once("://").map_or(address, |(_, r)| r);
    let rest = rest.split(['/', '?']).next().unwrap_or_default();
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(':').next().unwrap_or_default().to_owned()
}

/// One trigger of each kind; every source a trigger names is a service of the compose file,
/// and every environment variable it reads is set on the sluice nodes.
fn check_triggers(doc: &Value, triggers: &BTreeMap<String, toml::Value>) -> Result<(), String> {
    let services = services(doc);
    let nodes: Vec<&Value> = services.values().filter(|s| words(&s["command"]).first().map(String::as_str) == Some("up")).collect();
    let env = nodes.first().map(|n| environment(n)).unwrap_or_default();
    let kinds: BTreeSet<&str> = triggers.values().filter_map(|t| t["kind"].as_str()).collect();
    let wanted = BTreeSet::from(["cron", "kafka", "bucket", "mqtt", "postgres", "nats", "http"]);
    if kinds != wanted {
        return Err(format!("the compose project has triggers of kinds {kinds:?}, not {wanted:?}"));
    }
    let text = |t: &toml::Value, key: &str| t.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let mut hosts: Vec<(String, String)> = Vec::new();
    let mut variables: Vec<(String, String)> = Vec::new();
    for (name, trigger) in triggers {
        let resolve = |value: String, variables: &mut Vec<(String, String)>| -> String {
            match value.strip_prefix('$') {
                Some(variable) => {
                    variables.push((name.clone(), variable.to_owned()));
                    env.get(variable).cloned().unwrap_or_default()
                }
                None => value,
            }
        };
        match trigger["kind"].as_str().unwrap_or_default() {
            "kafka" => {
                for broker in text(trigger, "brokers").unwrap_or_default().split(',') {
                    hosts.push((name.clone(), host_of(broker.trim())));
                }
            }
            "bucket" => {
                let endpoint = text(trigger, "endpoint").ok_or_else(|| format!("{name}: the bucket trigger has no S3 endpoint"))?;
                hosts.push((name.clone(), host_of(&endpoint)));
                let credentials = trigger.get("credentials");
                for (key, default) in [("access_key_id_env", "AWS_ACCESS_KEY_ID"), ("secret_access_key_env", "AWS_SECRET_ACCESS_KEY")] {
                    let variable = credentials.and_then(|c| text(c, key)).unwrap_or_else(|| default.to_owned());
                    variables.push((name.clone(), variable));
                }
            }
            "mqtt" => {
                hosts.push((name.clone(), host_of(&text(trigger, "broker").unwrap_or_default())));
                for key in ["username_env", "password_env"] {
                    if let Some(variable) = text(trigger, key) {
                        variables.push((name.clone(), variable));
                    }
                }
            }
            "postgres" => {
                let dsn = text(trigger, "dsn").unwrap_or_else(|| "$SLUICE_PG_DSN".to_owned());
                let dsn = resolve(dsn, &mut variables);
                hosts.push((name.clone(), host_of(&dsn)));
            }
            "nats" => {
                if let Some(url) = text(trigger, "url") {
                    hosts.push((name.clone(), host_of(&resolve(url, &mut variables))));
                }
            }
            _ => {}
        }
    }
    for (trigger, host) in hosts {
        if !services.contains_key(&host) {
            return Err(format!("trigger {trigger} names the host {host:?}, which is not a service of docker-compose.yml"));
        }
    }
    for node in &nodes {
        let env = environment(node);
        for (trigger, variable) in &variables {
            if !env.contains_key(variable) {
                return Err(format!("trigger {trigger} reads ${variable}, which a sluice node does not set"));
            }
        }
    }
    Ok(())
}

fn longest_function_timeout() -> Duration {
    let project = sluice::config::Project::load_sources(root()).unwrap();
    project.functions.iter().map(|f| f.config.timeout).max().unwrap()
}

fn nats_services(doc: &Value) -> Vec<String> {
    services(doc).iter().filter(|(_, s)| image(s).starts_with("nats:")).map(|(n, _)| n.clone()).collect()
}

// ---------------------------------------------------------------------------------------------
// The tests.

#[test]
fn the_compose_file_is_valid_against_the_compose_specification() {
    if let Err(errors) = check_schema(&compose()) {
        panic!("docker-compose.yml does not match the Compose specification's schema:\n{errors}");
    }
}

#[test]
fn the_compose_file_keeps_its_promises() {
    let doc = compose();
    let nats = check_nats(&doc, &nats_confs()).unwrap_or_else(|e| panic!("NATS: {e}"));
    assert_eq!(nats.keys().collect::<Vec<_>>(), ["nats-1", "nats-2", "nats-3"]);
    let workdir = check_dockerfile(&read("Dockerfile"), &read(".dockerignore")).unwrap_or_else(|e| panic!("Dockerfile: {e}"));
    assert_eq!(workdir, "/srv/sluice");
    check_sluice(&doc, &nats_services(&doc), &workdir, longest_function_timeout()).unwrap_or_else(|e| panic!("sluice: {e}"));
    check_postgres(&doc).unwrap_or_else(|e| panic!("postgres: {e}"));
    check_volumes(&doc).unwrap_or_else(|e| panic!("volumes: {e}"));

    // The project's seeds are the three servers' client ports.
    let dir = compose_project();
    let project = sluice::config::Project::load_sources(dir.path()).unwrap();
    let seeds: BTreeSet<String> = project.settings.nats.url.unwrap().split(',').map(str::to_owned).collect();
    let servers: BTreeSet<String> = nats.iter().map(|(name, conf)| format!("nats://{name}:{}", port_of(&conf.listen))).collect();
    assert_eq!(seeds, servers, "[nats] url of deploy/project/sluice.toml");
    assert_eq!(project.settings.bus.replicas, 3, "[bus] replicas of deploy/project/sluice.toml");
}

#[test]
fn the_compose_projects_triggers_load_and_name_services_of_the_file() {
    // Sluice's own loader: sluice.toml, every trigger (parsed and checked), and the functions
    // the triggers name, as `sluice deploy` in the `deploy` container loads them.
    let dir = compose_project();
    let project = sluice::config::Project::load_sources(dir.path()).unwrap_or_else(|e| panic!("the compose project does not load: {e}"));
    let names: Vec<&str> = project.triggers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["api", "every-minute", "legacy-nats", "orders-db", "orders-kafka", "telemetry-mqtt", "uploads-s3"]);
    for trigger in &project.triggers {
        for function in trigger.config.required_functions() {
            assert!(project.function(&function).is_some(), "{} names {function}", trigger.name);
        }
    }
    check_triggers(&compose(), &compose_triggers()).unwrap_or_else(|e| panic!("{e}"));
}

/// Fails until `sluice deploy`, `sluice up --registry` and `--roles` exist: it lists every
/// flag and `SLUICE_*` variable the compose file and the Dockerfile give to `sluice` that the
/// binary lacks.
#[test]
fn the_flags_and_variables_given_to_sluice_exist() {
    let doc = compose();
    let help = |args: &[&str]| -> Option<String> {
        let output = std::process::Command::new(common::SLUICE).args(args).output().unwrap();
        output.status.success().then(|| String::from_utf8_lossy(&output.stdout).into_owned())
    };
    let global = help(&["--help"]).expect("sluice --help");
    let mut sources = String::new();
    collect_sources(&root().join("src"), &mut sources);
    let mut missing = Vec::new();
    let mut checked = Vec::new();
    let tag = services(&doc).values().find(|s| s.get("build").is_some()).map(image).unwrap_or_default().to_owned();
    let mut variables: BTreeSet<String> = BTreeSet::new();
    for (name, service) in services(&doc).iter().filter(|(_, s)| image(s) == tag) {
        let command = words(&service["command"]);
        let subcommand = command.first().cloned().unwrap_or_default();
        let Some(text) = help(&[subcommand.as_str(), "--help"]) else {
            missing.push(format!("{name}: `sluice {subcommand}` does not exist"));
            continue;
        };
        for flag in command.iter().filter(|w| w.starts_with("--")) {
            let flag = flag.split('=').next().unwrap();
            checked.push(format!("sluice {subcommand} {flag}"));
            if !text.contains(&format!("{flag} ")) && !text.contains(&format!("{flag}\n")) && !global.contains(&format!("{flag} ")) {
                missing.push(format!("{name}: `sluice {subcommand}` has no flag {flag}"));
            }
        }
        variables.extend(environment(service).into_keys().filter(|k| k.starts_with("SLUICE_")));
    }
    for stage in parse_dockerfile(&read("Dockerfile")) {
        for (_, rest) in stage.instructions.iter().filter(|(k, _)| k == "ENV") {
            variables.extend(rest.split_whitespace().filter_map(|w| w.split_once('=')).map(|(k, _)| k.to_owned()).filter(|k| k.starts_with("SLUICE_")));
        }
    }
    for variable in &variables {
        checked.push(variable.clone());
        if !global.contains(&format!("[env: {variable}=")) && !sources.contains(&format!("\"{variable}\"")) {
            missing.push(format!("sluice reads no variable {variable}"));
        }
    }
    assert!(checked.iter().any(|c| c.contains("--registry")) && checked.iter().any(|c| c.contains("--roles")), "checked only {checked:?}");
    assert!(missing.is_empty(), "checked {checked:?}; missing:\n{}", missing.join("\n"));
}

fn collect_sources(dir: &Path, into: &mut String) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push_str(&std::fs::read_to_string(&path).unwrap());
        }
    }
}

#[test]
fn each_check_fails_on_a_broken_copy() {
    let doc = compose();
    let confs = nats_confs();
    let nats = nats_services(&doc);
    let longest = longest_function_timeout();
    let broken = |edit: &dyn Fn(&mut Value)| {
        let mut copy = doc.clone();
        edit(&mut copy);
        copy
    };
    // The schema: a misspelled key, an unknown condition, an unknown top-level key.
    for (what, copy) in [
        ("healthcheck.intervall", broken(&|d: &mut Value| {
            let check = d.pointer_mut("/services/nats-1/healthcheck").unwrap().as_object_mut().unwrap();
            let interval = check.remove("interval").unwrap();
            check.insert("intervall".to_owned(), interval);
        })),
        ("condition service_is_healthy", broken(&|d: &mut Value| {
            *d.pointer_mut("/services/sluice-1/depends_on/nats-1/condition").unwrap() = Value::from("service_is_healthy");
        })),
        ("top-level servics", broken(&|d: &mut Value| {
            d.as_object_mut().unwrap().insert("servics".to_owned(), serde_json::json!({}));
        })),
        ("ports as a map", broken(&|d: &mut Value| {
            *d.pointer_mut("/services/sluice-1/ports").unwrap() = serde_json::json!({"8080": 8080});
        })),
    ] {
        assert!(check_schema(&copy).is_err(), "the schema accepts a compose file with {what}");
    }

    // NATS: a route removed, a duplicate server name, JetStream off, a published port.
    let conf_edit = |file: &str, from: &str, to: &str| {
        let mut copy = confs.clone();
        let text = copy.get_mut(file).unwrap();
        assert!(text.contains(from), "{file} has no {from:?}");
        *text = text.replacen(from, to, 1);
        copy
    };
    for (what, copy) in [
        ("a route removed", conf_edit("./deploy/nats/nats-2.conf", "nats-route://nats-3:6222", "")),
        ("a route to itself", conf_edit("./deploy/nats/nats-2.conf", "nats-route://nats-3:6222", "nats-route://nats-2:6222")),
        ("two servers named nats-1", conf_edit("./deploy/nats/nats-2.conf", "server_name: nats-2", "server_name: nats-1")),
        ("no JetStream", conf_edit("./deploy/nats/nats-3.conf", "jetstream {", "leafnodes {")),
    ] {
        assert!(check_nats(&doc, &copy).is_err(), "check_nats accepts {what}");
    }
    let published = broken(&|d: &mut Value| d["services"]["nats-2"]["ports"] = serde_json::json!(["4222:4222"]));
    assert!(check_nats(&published, &confs).is_err(), "check_nats accepts a published NATS port");
    let old = broken(&|d: &mut Value| d["services"]["nats-3"]["image"] = Value::from("nats:2.9-alpine"));
    assert!(check_nats(&old, &confs).is_err(), "check_nats accepts nats-server 2.9");
    let two = broken(&|d: &mut Value| {
        d["services"].as_object_mut().unwrap().remove("nats-3");
    });
    assert!(check_nats(&two, &confs).is_err(), "check_nats accepts 2 servers");

    // The sluice services.
    let workdir = "/srv/sluice";
    let one_node = broken(&|d: &mut Value| {
        d["services"].as_object_mut().unwrap().remove("sluice-2");
    });
    let no_registry = broken(&|d: &mut Value| d["services"]["sluice-2"]["command"] = serde_json::json!(["up", "--roles", "workers,triggers,gateway"]));
    let no_wait = broken(&|d: &mut Value| {
        d["services"]["sluice-1"]["depends_on"].as_object_mut().unwrap().remove("deploy");
    });
    let short_grace = broken(&|d: &mut Value| d["services"]["sluice-1"]["stop_grace_period"] = Value::from("5s"));
    let no_triggers = broken(&|d: &mut Value| {
        d["services"]["deploy"]["volumes"].as_array_mut().unwrap().retain(|v| !v.as_str().unwrap_or_default().contains("triggers"));
    });
    let postgres_published = broken(&|d: &mut Value| d["services"]["postgres"]["ports"] = serde_json::json!(["5432:5432"]));
    for (what, copy) in [("one node", one_node), ("a node without --registry", no_registry), ("a node not waiting for deploy", no_wait), ("a short stop_grace_period", short_grace), ("deploy without the project's triggers", no_triggers), ("a published postgres", postgres_published)] {
        assert!(check_sluice(&copy, &nats, workdir, longest).is_err(), "check_sluice accepts {what}");
    }
    let replica = broken(&|d: &mut Value| d["services"]["postgres"]["command"] = serde_json::json!(["postgres", "-c", "wal_level=replica"]));
    assert!(check_postgres(&replica).is_err(), "check_postgres accepts wal_level=replica");
    let undeclared = broken(&|d: &mut Value| {
        d["volumes"].as_object_mut().unwrap().remove("postgres-data");
    });
    assert!(check_volumes(&undeclared).is_err(), "check_volumes accepts an undeclared volume");

    // Triggers: a broker that is no service, an unset variable.
    let mut triggers = compose_triggers();
    triggers.get_mut("orders-kafka").unwrap()["brokers"] = toml::Value::from("kafka:9092");
    assert!(check_triggers(&doc, &triggers).is_err(), "check_triggers accepts a broker that is no service");
    let no_dsn = broken(&|d: &mut Value| {
        d["services"]["sluice-1"]["environment"].as_object_mut().unwrap().remove("SLUICE_PG_DSN");
    });
    assert!(check_triggers(&no_dsn, &compose_triggers()).is_err(), "check_triggers accepts an unset $SLUICE_PG_DSN");

    // The Dockerfile: root, no USER, one stage, no stripping.
    let dockerfile = read("Dockerfile");
    let ignore = read(".dockerignore");
    for (what, copy) in [
        ("USER root", dockerfile.replace("USER 10001:10001", "USER root")),
        ("no USER", dockerfile.replace("USER 10001:10001", "")),
        ("a single stage", dockerfile.lines().skip_while(|l| !l.starts_with("FROM debian:bookworm-slim")).collect::<Vec<_>>().join("\n")),
        ("no split debug information", dockerfile.replace("--only-keep-debug", "--keep-everything")),
    ] {
        assert_ne!(copy, dockerfile, "{what}: the edit changed nothing");
        assert!(check_dockerfile(&copy, &ignore).is_err(), "check_dockerfile accepts {what}");
    }
    assert!(check_dockerfile(&dockerfile, &ignore.replace(".sluice/", "")).is_err(), "check_dockerfile accepts .sluice/ in the build context");
}

/// Rewrites one of deploy/nats/*.conf to run on loopback: its listen, monitoring and cluster
/// addresses become the given loopback ports, its routes point at the other nodes' loopback
/// cluster ports, its store and log go to `dir`. Every setting rewritten must be found, so a
/// changed file fails here rather than being tested half.
fn on_loopback(text: &str, conf: &NatsConf, ports: &Ports, cluster_ports: &BTreeMap<String, u16>, dir: &Path) -> String {
    let mut text = text.to_owned();
    let mut swap = |from: String, to: String| {
        assert_eq!(text.matches(&from).count(), 1, "{from:?} appears once in the file");
        text = text.replace(&from, &to);
    };
    swap(format!("listen: {}\n", conf.listen), format!("listen: 127.0.0.1:{}\n", ports.client));
    swap(format!("http: {}\n", conf.http), format!("http: 127.0.0.1:{}\n", ports.http));
    swap(format!("listen: {}\n", conf.cluster_listen), format!("listen: 127.0.0.1:{}\n", ports.cluster));
    swap(format!("store_dir: {}\n", conf.store_dir), format!("store_dir: {:?}\n", dir.join("store").display().to_string()));
    for route in &conf.routes {
        let target = route.trim_start_matches("nats-route://");
        let host = target.split(':').next().unwrap();
        let port = cluster_ports.get(host).unwrap_or_else(|| panic!("route {route} names no node"));
        swap(route.clone(), format!("nats-route://127.0.0.1:{port}"));
    }
    assert!(!text.contains("0.0.0.0") && !text.contains("nats-route://nats-"), "left unrewritten:\n{text}");
    text.push_str(&format!("\nlogfile: {:?}\n", dir.join("nats.log").display().to_string()));
    text
}

struct Ports {
    client: u16,
    http: u16,
    cluster: u16,
}

#[tokio::test(flavor = "multi_thread")]
async fn the_compose_nats_files_form_a_jetstream_cluster() {
    let doc = compose();
    let confs = nats_confs();
    let parsed = check_nats(&doc, &confs).unwrap_or_else(|e| panic!("NATS: {e}"));
    let host = "127.0.0.1";
    let ports: BTreeMap<String, Ports> =
        parsed.keys().map(|name| (name.clone(), Ports { client: free_port_on(host), http: free_port_on(host), cluster: free_port_on(host) })).collect();
    let cluster_ports: BTreeMap<String, u16> = ports.iter().map(|(name, p)| (name.clone(), p.cluster)).collect();
    let mut nodes = Vec::new();
    for (name, conf) in &parsed {
        let file = format!("./deploy/nats/{name}.conf");
        let text = confs.get(&file).unwrap_or_else(|| panic!("{file}"));
        let own = &ports[name];
        nodes.push(NatsNode::from_config(name, host, own.client, |dir| on_loopback(text, conf, own, &cluster_ports, dir)));
    }
    for node in &mut nodes {
        node.spawn();
    }
    let cluster = NatsCluster { nodes };

    // The compose healthcheck's URL answers 200 on every node once JetStream is ready.
    let http = reqwest::Client::new();
    let started = Instant::now();
    for (name, own) in &ports {
        loop {
            let status = http.get(format!("http://{host}:{}/healthz", own.http)).send().await.map(|r| r.status().as_u16()).map_err(|e| e.to_string());
            if status == Ok(200) {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "{name}: /healthz answers {status:?}; logs:\n{}", cluster.logs());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // A meta leader, known by every node, in a cluster of 3.
    for (name, own) in &ports {
        let jsz: Value = http.get(format!("http://{host}:{}/jsz", own.http)).send().await.unwrap().json().await.unwrap();
        let meta = &jsz["meta_cluster"];
        let leader = meta["leader"].as_str().unwrap_or_default();
        assert!(parsed.values().any(|c| c.server_name == leader), "{name}: meta leader {leader:?}; /jsz: {jsz}");
        assert_eq!(meta["cluster_size"], 3, "{name}: /jsz: {jsz}");
    }

    // A stream on file storage with 3 replicas, as Sluice's own with `[bus] replicas = 3`.
    cluster.wait_ready(Duration::from_secs(60)).await;
    let js = async_nats::jetstream::new(cluster.client().await);
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: "COMPOSE_R3".into(),
            subjects: vec!["compose.r3".into()],
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("an R3 stream: {e}; logs:\n{}", cluster.logs()));
    let ack = js.publish("compose.r3", "stored on three servers".into()).await.unwrap().await.unwrap();
    assert_eq!(ack.sequence, 1);
    let info = stream.info().await.unwrap();
    let placement = info.cluster.clone().unwrap();
    let mut peers: BTreeSet<String> = placement.replicas.iter().map(|r| r.name.clone()).collect();
    peers.insert(placement.leader.clone().unwrap_or_default());
    let servers: BTreeSet<String> = parsed.values().map(|c| c.server_name.clone()).collect();
    assert_eq!(peers, servers, "the stream's peers");
}
