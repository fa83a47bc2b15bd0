//! Bad configuration: `sluice` exits with status 2 and names the file and the field.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::*;

/// `functions list`, `up` and `invoke` all refuse the project with status 2, naming the file
/// and the field as `ConfigError` prints them (`<file>: field `<field>`: ...`). Returns the
/// error output of `invoke`, for checks of the message.
fn assert_config_error(project: &Project, path: &std::path::Path, field: &str) -> String {
    let named = format!("{}: field `{field}`: ", path.display());
    let event = project.path().join("event.json");
    std::fs::write(&event, "{}").unwrap();
    let event = event.display().to_string();
    let mut stderr = String::new();
    for args in [&["functions", "list"][..], &["up"][..], &["invoke", "a", "--event", &event][..]] {
        let out = project.sluice(args);
        stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&named), "{args:?} names the file and field `{field}`: {stderr}");
    }
    stderr
}

/// Function `a` with `toml` after its name and `files` in its folder is refused, naming
/// `field`, with a message that holds `words`.
fn assert_function_error(toml: &str, files: &[(&str, &[u8])], field: &str, words: &str) {
    let project = Project::new();
    let dir = project.path().join("functions/a");
    std::fs::create_dir_all(&dir).unwrap();
    for (file, content) in files {
        std::fs::write(dir.join(file), content).unwrap();
    }
    let path = project.raw_function("a", &format!("name = \"a\"\n{toml}\n"));
    let stderr = assert_config_error(&project, &path, field);
    assert!(stderr.contains(words), "{toml}: {stderr}");
}

#[test]
fn unknown_field() {
    let project = Project::new();
    let path = project.raw_function("a", "name = \"a\"\nruntime = \"wasm\"\nmodule = \"a.wasm\"\nmemroy_mb = 64\n");
    assert_config_error(&project, &path, "memroy_mb");
}

#[test]
fn bad_duration() {
    let project = Project::new();
    let module = example_module("hello");
    let path = project.raw_function(
        "a",
        &format!("name = \"a\"\nruntime = \"wasm\"\nmodule = {:?}\ntimeout = \"3 parsecs\"\n", module.display().to_string()),
    );
    assert_config_error(&project, &path, "timeout");
}

#[test]
fn missing_module() {
    let project = Project::new();
    let path = project.raw_function("a", "name = \"a\"\nruntime = \"wasm\"\nmodule = \"nowhere.wasm\"\n");
    assert_config_error(&project, &path, "module");
}

#[test]
fn duplicate_names() {
    let project = Project::new();
    project.function("one", "hello", "");
    let module = example_module("hello");
    let path = project.raw_function(
        "two",
        &format!("name = \"one\"\nruntime = \"wasm\"\nmodule = {:?}\n", module.display().to_string()),
    );
    assert_config_error(&project, &path, "name");
}

#[test]
fn out_of_range_retry() {
    let project = Project::new();
    project.function("a", "hello", "[retry]\nmax_attempts = 0");
    let path = project.path().join("functions/a/function.toml");
    assert_config_error(&project, &path, "retry.max_attempts");
}

#[test]
fn unknown_runtime() {
    let project = Project::new();
    let path = project.raw_function("a", "name = \"a\"\nruntime = \"jvm\"\nmodule = \"a.jar\"\n");
    assert_config_error(&project, &path, "runtime");
}

#[test]
fn bad_lambda_functions() {
    // (function.toml after `name`, files in the folder, the field to blame, words the message must hold)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        ("runtime = \"python2.7\"\nhandler = \"app.h\"", &[("app.py", "")], "runtime", "python3.N"),
        ("runtime = \"nodejs20\"\nhandler = \"index.handler\"", &[("index.js", "")], "runtime", "nodejsN.x"),
        ("runtime = \"python3.11\"", &[("app.py", "")], "handler", "app.lambda_handler"),
        ("runtime = \"python3.11\"\nhandler = \"app\"", &[("app.py", "")], "handler", "file.function"),
        ("runtime = \"python3.11\"\nhandler = \"main.handler\"", &[("app.py", "")], "handler", "no main.py"),
        ("runtime = \"nodejs20.x\"\nhandler = \"index.handler\"", &[("app.js", "")], "handler", "index.js or index.mjs or index.cjs"),
        ("runtime = \"python3.11\"\nhandler = \"app.h\"\nmodule = \"a.wasm\"", &[("app.py", "")], "module", "wasm functions"),
        ("runtime = \"python3.11\"\nhandler = \"app.h\"\nenv = { AWS_LAMBDA_FUNCTION_NAME = \"x\" }", &[("app.py", "")], "env", "reserved"),
        ("runtime = \"python3.11\"\nhandler = \"app.h\"\nconcurrency = 2\nmin_warm = 3", &[("app.py", "")], "min_warm", "concurrency"),
        ("runtime = \"python3.11\"\nhandler = \"app.h\"\nidle_timeout = \"0s\"", &[("app.py", "")], "idle_timeout", "more than 0"),
        ("runtime = \"provided\"", &[], "runtime", "bootstrap"),
        ("runtime = \"wasm\"\nhandler = \"app.h\"\nmodule = \"a.wasm\"", &[], "handler", "Lambda runtimes"),
    ];
    for (toml, files, field, words) in cases {
        let files: Vec<(&str, &[u8])> = files.iter().map(|(file, content)| (*file, content.as_bytes())).collect();
        assert_function_error(toml, &files, field, words);
    }
    // A bootstrap that cannot be executed.
    let project = Project::new();
    let path = project.raw_function("a", "name = \"a\"\nruntime = \"provided.al2023\"\n");
    std::fs::write(project.path().join("functions/a/bootstrap"), "#!/bin/sh\n").unwrap();
    let stderr = assert_config_error(&project, &path, "runtime");
    assert!(stderr.contains("chmod +x"), "{stderr}");
}

#[test]
fn bad_component_functions() {
    // (function.toml after `name`, files in the folder, the field to blame, words the message must hold)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a [u8])], &'a str, &'a str);
    let core_module: &[u8] = b"\0asm\x01\0\0\0";
    let cases: &[Case] = &[
        ("runtime = \"component\"", &[], "handler", "app.lambda_handler"),
        ("runtime = \"component\"\nhandler = \"app.h\"\nmodule = \"a.wasm\"", &[("app.py", b""), ("a.wasm", b"")], "handler", "exclude each other"),
        ("runtime = \"component\"\nhandler = \"main.handler\"", &[("app.py", b"")], "handler", "neither main.py nor main.js"),
        ("runtime = \"component\"\nhandler = \"app\"", &[("app.py", b"")], "handler", "file.function"),
        // Not built yet: `sluice build` makes component.wasm from the handler.
        ("runtime = \"component\"\nhandler = \"app.h\"", &[("app.py", b"")], "handler", "sluice build a"),
        ("runtime = \"component\"\nmodule = \"a.wasm\"", &[("a.wasm", core_module)], "module", "runtime = \"wasm\""),
        ("runtime = \"component\"\nmodule = \"a.wasm\"", &[("a.wasm", b"#!/bin/sh\n")], "module", "not a WebAssembly component"),
        ("runtime = \"component\"\nhandler = \"app.h\"\nmin_warm = 1", &[("app.py", b"")], "min_warm", "Lambda runtimes"),
    ];
    for (toml, files, field, words) in cases {
        assert_function_error(toml, files, field, words);
    }
}

#[test]
fn overlapping_subscriptions() {
    // JetStream refuses a consumer whose filter subjects overlap; the function's own file says so.
    for (subscribe, says) in [
        (r#"["x", "x"]"#, r#"subscribe lists "x" twice"#),
        (r#"["a.>", "a.b"]"#, r#"subscribe entries "a.>" and "a.b" overlap (every "a.b" event also matches "a.>")"#),
        (r#"["a.*", "a.b"]"#, r#"keep only "a.*""#),
        (r#"["a.*.c", "a.b.*"]"#, r#"subscribe entries "a.*.c" and "a.b.*" overlap (an event on "a.b.c" matches both): nats-server"#),
    ] {
        let project = Project::new();
        project.function("a", "hello", &format!("subscribe = {subscribe}"));
        let path = project.path().join("functions/a/function.toml");
        let stderr = assert_config_error(&project, &path, "subscribe");
        assert!(stderr.contains(says), "{subscribe}: {stderr}");
        assert!(stderr.contains("refuse"), "says that the server refuses it: {stderr}");
    }
}

#[test]
fn a_module_that_is_not_webassembly() {
    let project = Project::new();
    let dir = project.path().join("functions/a");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\necho hello world\n").unwrap();
    let path = project.raw_function("a", "name = \"a\"\nruntime = \"wasm\"\nmodule = \"run.sh\"\n");
    let stderr = assert_config_error(&project, &path, "module");
    assert!(stderr.contains(r##"is not a WebAssembly module: it starts with "#!/bin/sh\necho h...""##), "{stderr}");
    assert!(!stderr.contains("expected ("), "no text-format parser error: {stderr}");
}

#[test]
fn text_modules_need_the_wat_extension() {
    let project = Project::new();
    let dir = project.path().join("functions/a");
    std::fs::create_dir_all(&dir).unwrap();
    let text = "(module (memory 1) (func (export \"_start\")))";
    std::fs::write(dir.join("a.wasm"), text).unwrap();
    let path = project.raw_function("a", "name = \"a\"\nruntime = \"wasm\"\nmodule = \"a.wasm\"\n");
    let stderr = assert_config_error(&project, &path, "module");
    assert!(stderr.contains(r#"it starts with "(module (memory ...""#), "{stderr}");
    // The same text in a `.wat` file runs.
    std::fs::write(dir.join("a.wat"), text).unwrap();
    project.raw_function("a", "name = \"a\"\nruntime = \"wasm\"\nmodule = \"a.wat\"\n");
    let out = project.sluice(&["invoke", "a"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn initial_memory_over_memory_mb() {
    let project = Project::new();
    let dir = project.path().join("functions/a");
    std::fs::create_dir_all(&dir).unwrap();
    let module = wat::parse_str("(module (memory 2080) (func (export \"_start\")))").unwrap();
    std::fs::write(dir.join("big.wasm"), module).unwrap();
    let path = project.raw_function("a", "name = \"a\"\nruntime = \"wasm\"\nmodule = \"big.wasm\"\nmemory_mb = 64\n");
    let stderr = assert_config_error(&project, &path, "memory_mb");
    assert!(
        stderr.contains("the module asks for an initial memory of 130 MiB (2080 pages) but memory_mb = 64; raise memory_mb"),
        "{stderr}"
    );
    assert!(!stderr.contains("cached module"), "no cache warning: {stderr}");
    // With room for it, the module runs.
    project.raw_function("a", "name = \"a\"\nruntime = \"wasm\"\nmodule = \"big.wasm\"\nmemory_mb = 130\n");
    let out = project.sluice(&["invoke", "a"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_valid_project_lists_its_functions() {
    let project = Project::new();
    project.function("hello", "hello", "subscribe = [\"greetings\"]\nmemory_mb = 32\ntimeout = \"1500ms\"");
    let out = project.sluice(&["--json", "functions", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list[0]["name"], "hello");
    assert_eq!(list[0]["runtime"], "wasm");
    assert_eq!(list[0]["memory_mb"], 32);
    assert_eq!(list[0]["timeout_ms"], 1500);
    assert_eq!(list[0]["max_attempts"], 3);
    assert_eq!(list[0]["subscribe"][0], "greetings");
    let out = project.sluice(&["functions", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("hello") && text.contains("1s 500ms") && text.contains("greetings"), "{text}");
}


#[test]
fn bad_cron_triggers() {
    for (text, field) in [
        ("kind = \"cron\"\nschedule = \"every tuesday\"\ntopic = \"t\"\n", "schedule"),
        ("kind = \"cron\"\nschedule = \"@hourly\"\ntimezone = \"Mars/Olympus\"\ntopic = \"t\"\n", "timezone"),
        ("kind = \"cron\"\nschedule = \"@hourly\"\ntopic = \"t\"\nmised = \"skip\"\n", "mised"),
        ("kind = \"cron\"\nschedule = \"@hourly\"\ntopic = \"t\"\nmissed = \"sometimes\"\n", "missed"),
        ("kind = \"cron\"\nschedule = \"@hourly\"\nfunction = \"nope\"\n", "function"),
        ("kind = \"cron\"\nschedule = \"@hourly\"\n", "topic"),
        ("kind = \"sundial\"\nschedule = \"@hourly\"\n", "kind"),
    ] {
        let project = Project::new();
        let path = project.trigger("t", text);
        assert_config_error(&project, &path, field);
    }
}

#[test]
fn bad_source_triggers() {
    for (text, field) in [
        ("kind = \"bucket\"\nbucket = \"Up Loads\"\ntopic = \"t\"\n", "bucket"),
        ("kind = \"bucket\"\nbucket = \"u\"\nevents = [\"modified\"]\ntopic = \"t\"\n", "events"),
        ("kind = \"bucket\"\nbucket = \"u\"\nendpoint = \"s3.example.com\"\ntopic = \"t\"\n", "endpoint"),
        ("kind = \"kafka\"\nbrokers = \"nohost\"\ntopics = [\"o\"]\ntopic = \"t\"\n", "brokers"),
        ("kind = \"kafka\"\nbrokers = \"h:9092\"\ntopics = []\ntopic = \"t\"\n", "topics"),
        ("kind = \"nats\"\nsubject = \">\"\ntopic = \"t\"\n", "subject"),
        ("kind = \"nats\"\nsubject = \"a.b\"\nconsumer = \"c\"\ntopic = \"t\"\n", "consumer"),
        ("kind = \"mqtt\"\nbroker = \"http://h\"\nfilter = \"a/#\"\ntopic = \"t\"\n", "broker"),
        ("kind = \"mqtt\"\nbroker = \"mqtt://h\"\nfilter = \"a/#/b\"\ntopic = \"t\"\n", "filter"),
        ("kind = \"postgres\"\ndsn = \"postgres://h:port/db\"\ntables = [\"orders\"]\ntopic = \"t\"\n", "dsn"),
        ("kind = \"postgres\"\ntables = [\"public.orders;\"]\ntopic = \"t\"\n", "tables"),
        ("kind = \"postgres\"\nslot = \"Orders\"\ntables = [\"orders\"]\ntopic = \"t\"\n", "slot"),
        ("kind = \"postgres\"\ntables = [\"orders\"]\noperations = [\"upsert\"]\ntopic = \"t\"\n", "operations"),
    ] {
        let project = Project::new();
        let path = project.trigger("t", text);
        assert_config_error(&project, &path, field);
    }
}

#[test]
fn the_example_project_loads() {
    // Every example function in the repository parses and validates.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let project = sluice::config::Project::load(root).unwrap();
    let names: Vec<&str> = project.functions.iter().map(|f| f.config.name.as_str()).collect();
    assert_eq!(names, ["flaky", "hello", "hello-node", "hello-node-component", "hello-python", "hello-python-component", "http-echo", "inbox-python", "wordcount"]);
    // The component examples are the Lambda examples' very files.
    for (component, lambda, file) in [("hello-python-component", "hello-python", "app.py"), ("hello-node-component", "hello-node", "index.js")] {
        let def = project.function(component).unwrap();
        assert_eq!(def.config.runtime.to_string(), "component");
        let read = |function: &str| std::fs::read(root.join("functions").join(function).join(file)).unwrap();
        assert_eq!(read(component), read(lambda), "{component}/{file} differs from {lambda}/{file}");
    }
    assert_eq!(project.function("hello-python").unwrap().config.handler.as_deref(), Some("app.lambda_handler"));
    assert_eq!(project.function("hello-node").unwrap().config.runtime.to_string(), "nodejs20.x");
    assert!(project.function("hello").unwrap().config.subscribe.contains(&"greetings".to_owned()));
    // Every example trigger parses too.
    let triggers: Vec<&str> = project.triggers.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(triggers, ["api", "every-minute", "inbox", "uploads"]);
    let api = project.triggers[0].config.get::<sluice::triggers::http::HttpConfig>().unwrap();
    for (key, route) in &api.routes {
        if let Some(function) = &route.function {
            assert!(project.function(function).is_some(), "route {key} names {function}, not an example");
        }
        if let Some(schema) = &route.schema {
            assert!(root.join(schema).is_file(), "route {key}: {} is missing", schema.display());
        }
    }
    assert_eq!(project.function("wordcount").unwrap().config.buckets, ["uploads:ro", "reports:rw"]);
}

#[test]
fn a_lambda_function_without_its_runtime_client_says_to_build() {
    // No `.sluice/tools` in this project: the runtime interface client is missing.
    let project = Project::new();
    let path = project.raw_function("a", "name = \"a\"\nruntime = \"python3.11\"\nhandler = \"app.handler\"\n");
    std::fs::write(project.path().join("functions/a/app.py"), "def handler(e, c):\n    return e\n").unwrap();
    for args in [&["invoke", "a"][..], &["up"][..]] {
        let out = project.sluice(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(&format!("{}: field `runtime`: ", path.display())), "{stderr}");
        assert!(stderr.contains("awslambdaric") && stderr.contains("sluice build a"), "{stderr}");
    }
}
