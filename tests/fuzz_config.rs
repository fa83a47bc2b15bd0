//! Property tests of project loading (`function.toml`, `triggers/*.toml` of every kind)
//! through `Project::load`: any text loads or fails with a `ConfigError` naming the file, and
//! a file with one wrong field fails naming that field while a correct one loads.
//! `scripts/fuzz.sh` runs these with many more cases (`PROPTEST_CASES`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};

use common::fuzz::config;
use proptest::prelude::*;
use sluice::config::{ConfigError, Project};


/// The smallest valid WebAssembly module: the header alone (the loader checks it).
const EMPTY_MODULE: &[u8] = b"\0asm\x01\0\0\0";
const HELLO: &str = "name = \"hello\"\nruntime = \"wasm\"\nmodule = \"hello.wasm\"\n";

/// A project with `functions/<dir>/function.toml` = `function` (plus an empty module `hello.wasm`
/// beside it) and, if given, `triggers/t.toml` = `trigger`. Returns the project folder and
/// the paths of the two files.
fn project(function: &str, trigger: Option<&str>) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("functions").join("hello");
    std::fs::create_dir_all(&folder).unwrap();
    std::fs::write(folder.join("hello.wasm"), EMPTY_MODULE).unwrap();
    let function_path = folder.join("function.toml");
    std::fs::write(&function_path, function).unwrap();
    let trigger_path = dir.path().join("triggers").join("t.toml");
    if let Some(trigger) = trigger {
        std::fs::create_dir_all(dir.path().join("triggers")).unwrap();
        std::fs::write(&trigger_path, trigger).unwrap();
    }
    (dir, function_path, trigger_path)
}

fn load(dir: &Path) -> Result<Project, ConfigError> {
    Project::load(dir)
}

/// A TOML string literal holding `text`.
fn quoted(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// One field of a file: the lines it may be written as (an empty line leaves an optional
/// field out) and wrong versions with the field the error must name.
#[derive(Debug)]
struct Field {
    valid: &'static [&'static str],
    invalid: &'static [(&'static str, &'static str)],
}

const fn field(valid: &'static [&'static str], invalid: &'static [(&'static str, &'static str)]) -> Field {
    Field { valid, invalid }
}

const FUNCTION: &[Field] = &[
    field(
        &["name = \"hello\""],
        &[
            ("name = \"a.b\"", "name"),
            ("name = \"\"", "name"),
            ("name = \"has space\"", "name"),
            ("name = \"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"", "name"),
            ("name = 7", "name"),
        ],
    ),
    field(&["runtime = \"wasm\""], &[("runtime = \"python\"", "runtime"), ("runtime = \"WASM\"", "runtime")]),
    field(&["module = \"hello.wasm\""], &[("module = \"missing.wasm\"", "module"), ("module = 3", "module")]),
    field(
        &["", "memory_mb = 1", "memory_mb = 128", "memory_mb = 4096"],
        &[("memory_mb = 0", "memory_mb"), ("memory_mb = 4097", "memory_mb"), ("memory_mb = -1", "memory_mb"), ("memory_mb = \"big\"", "memory_mb"), ("memory_mb = 1.5", "memory_mb")],
    ),
    field(
        &["", "timeout = \"500ms\"", "timeout = \"3s\"", "timeout = \"15m\"", "timeout = \"1m 30s\""],
        &[("timeout = \"0s\"", "timeout"), ("timeout = \"16m\"", "timeout"), ("timeout = \"soon\"", "timeout"), ("timeout = 3", "timeout")],
    ),
    field(&["", "concurrency = 1", "concurrency = 10000"], &[("concurrency = 0", "concurrency"), ("concurrency = 10001", "concurrency")]),
    field(
        &["", "env = {}", "env = { A = \"1\", OUT_BUCKET = \"thumbs\" }"],
        &[("env = { SLUICE_X = \"1\" }", "env"), ("env = { \"A=B\" = \"1\" }", "env"), ("env = { \"\" = \"1\" }", "env"), ("env = { A = 1 }", "env")],
    ),
    field(
        &["", "subscribe = []", "subscribe = [\"orders.created\"]", "subscribe = [\"uploads.*\", \"a.>\"]"],
        &[("subscribe = [\"a..b\"]", "subscribe"), ("subscribe = [\"a b\"]", "subscribe"), ("subscribe = [\">.x\"]", "subscribe"), ("subscribe = [\"\"]", "subscribe"), ("subscribe = \"orders\"", "subscribe")],
    ),
    field(&["", "on_success = \"results.done\""], &[("on_success = \"a.*\"", "on_success"), ("on_success = \"\"", "on_success")]),
    field(
        &["", "buckets = []", "buckets = [\"uploads\", \"thumbs:rw\"]"],
        &[("buckets = [\"Up\"]", "buckets"), ("buckets = [\"a:wx\"]", "buckets"), ("buckets = [\"a\", \"a:rw\"]", "buckets")],
    ),
    field(
        &[
            "",
            "retry = { max_attempts = 1 }",
            "retry = { max_attempts = 100, backoff = { initial = \"1s\", factor = 2.0, max = \"1m\", jitter = false } }",
            "retry = { backoff = { factor = 1.0 } }",
        ],
        &[
            ("retry = { max_attempts = 0 }", "retry.max_attempts"),
            ("retry = { max_attempts = 101 }", "retry.max_attempts"),
            ("retry = { backoff = { factor = 0.5 } }", "retry.backoff.factor"),
            ("retry = { backoff = { factor = nan } }", "retry.backoff.factor"),
            ("retry = { backoff = { initial = \"2m\", max = \"1m\" } }", "retry.backoff.max"),
        ],
    ),
    // Not a field: a misspelt one.
    field(&[""], &[("memroy_mb = 3", "memroy_mb")]),
];

/// Where a trigger delivers: exactly one of `topic` and `function`, naming a function that
/// exists.
const TARGET: Field = field(
    &["topic = \"orders.in\"", "function = \"hello\""],
    &[
        ("", "topic"),
        ("topic = \"a\"\nfunction = \"hello\"", "topic"),
        ("topic = \"a..b\"", "topic"),
        ("topic = \"a.*\"", "topic"),
        ("function = \"nope\"", "function"),
        ("function = \"a.b\"", "function"),
    ],
);

const CRON: &[Field] = &[
    field(&["kind = \"cron\""], &[]),
    field(
        &["schedule = \"0 * * * * *\"", "schedule = \"@every 30s\"", "schedule = \"rate(5 minutes)\"", "schedule = \"@hourly\"", "schedule = \"0 30 2 * * * 2030\""],
        &[("schedule = \"every day\"", "schedule"), ("schedule = \"61 * * * * *\"", "schedule"), ("schedule = \"@every 10ms\"", "schedule"), ("schedule = 5", "schedule")],
    ),
    field(&["", "timezone = \"UTC\"", "timezone = \"Europe/Berlin\"", "timezone = \"Australia/Lord_Howe\""], &[("timezone = \"Mars/Base\"", "timezone"), ("timezone = \"\"", "timezone")]),
    field(&["", "missed = \"skip\"", "missed = \"fire_once\"", "missed = \"fire_all\""], &[("missed = \"sometimes\"", "missed")]),
    field(&["", "max_catchup = 1", "max_catchup = 10000"], &[("max_catchup = 0", "max_catchup"), ("max_catchup = 10001", "max_catchup"), ("max_catchup = -1", "max_catchup")]),
    field(&["", "payload = { job = \"x\", n = 1, list = [1, 2] }"], &[]),
];

const BUCKET: &[Field] = &[
    field(&["kind = \"bucket\""], &[]),
    field(&["bucket = \"uploads\"", "bucket = \"my-bucket.v2\""], &[("bucket = \"Up\"", "bucket"), ("bucket = \"a/b\"", "bucket"), ("bucket = \"..\"", "bucket")]),
    field(
        &["", "endpoint = \"http://127.0.0.1:8333\"\nregion = \"eu-west-1\"", "endpoint = \"https://s3.example.com\""],
        &[("endpoint = \"localhost:9000\"", "endpoint"), ("endpoint = \"http://\"", "endpoint"), ("region = \"eu-west-1\"", "region")],
    ),
    field(&["", "events = [\"created\"]", "events = [\"created\", \"deleted\"]"], &[("events = []", "events"), ("events = [\"changed\"]", "events")]),
    field(&["", "poll_interval = \"100ms\"", "poll_interval = \"1h\""], &[("poll_interval = \"10ms\"", "poll_interval"), ("poll_interval = \"often\"", "poll_interval")]),
    field(&["", "settle = \"0s\"", "settle = \"60s\""], &[("settle = \"61s\"", "settle")]),
    field(&["", "existing = \"fire\"", "existing = \"skip\""], &[("existing = \"maybe\"", "existing")]),
    field(&["", "credentials = { access_key_id_env = \"K\", secret_access_key_env = \"S\" }"], &[("credentials = { key = \"K\" }", "credentials")]),
];

const KAFKA: &[Field] = &[
    field(&["kind = \"kafka\""], &[]),
    field(&["brokers = \"127.0.0.1:9092\"", "brokers = \"a:1, b:2\""], &[("brokers = \"localhost\"", "brokers"), ("brokers = \"\"", "brokers"), ("brokers = \"a:1,\"", "brokers")]),
    field(&["topics = [\"orders\"]", "topics = [\"a.b_c-d\", \"e\"]"], &[("topics = []", "topics"), ("topics = [\"or ders\"]", "topics"), ("topics = [\"\"]", "topics")]),
    field(&["", "start = \"earliest\"", "start = \"latest\""], &[("start = \"middle\"", "start")]),
    field(&["", "options = { \"fetch.min.bytes\" = \"1\" }"], &[("options = { \"group.id\" = \"x\" }", "options"), ("options = { \"auto.offset.reset\" = \"x\" }", "options")]),
];

const NATS: &[Field] = &[
    field(&["kind = \"nats\""], &[]),
    // The subject and where it is read: a subject that can match Sluice's own is refused only
    // on Sluice's server (no `url`) and in core NATS (no `stream`).
    field(
        &[
            "subject = \"legacy.orders.>\"",
            "subject = \"a.*.b\"\nqueue = \"q\"",
            "subject = \"legacy.>\"\nstream = \"ORDERS\"",
            "subject = \"a.b\"\nstream = \"ORDERS\"\nconsumer = \"c\"",
            "subject = \"sluice.events.x\"\nstream = \"ORDERS\"",
            "subject = \">\"\nurl = \"nats://127.0.0.1:4223\"",
        ],
        &[
            ("subject = \"a..b\"", "subject"),
            ("subject = \"sluice.events.x\"", "subject"),
            ("subject = \">\"", "subject"),
            ("subject = \"*.x\"\nqueue = \"q\"", "subject"),
            ("subject = \"\"", "subject"),
            ("subject = \"a.b\"\nstream = \"ORDERS\"\nqueue = \"q\"", "queue"),
            ("subject = \"a.b\"\nconsumer = \"c\"", "consumer"),
            ("subject = \"a.b\"\nstream = \"A.B\"", "stream"),
            ("subject = \"a.b\"\nstream = \"\"", "stream"),
            ("subject = \"a.b\"\nstream = \"SLUICE_EVENTS\"", "stream"),
        ],
    ),
];

const MQTT: &[Field] = &[
    field(&["kind = \"mqtt\""], &[]),
    field(
        &["broker = \"mqtt://127.0.0.1:1883\"", "broker = \"mqtts://broker.example.com\"", "broker = \"tcp://h:1\""],
        &[("broker = \"http://x\"", "broker"), ("broker = \"127.0.0.1:1883\"", "broker"), ("broker = \"mqtt://\"", "broker")],
    ),
    field(&["filter = \"devices/+/telemetry\"", "filter = \"#\"", "filter = \"a/b/#\""], &[("filter = \"a/#/b\"", "filter"), ("filter = \"a+/b\"", "filter"), ("filter = \"\"", "filter")]),
    field(&["", "qos = 0", "qos = 1"], &[("qos = 2", "qos"), ("qos = 256", "qos")]),
    field(&["", "username_env = \"U\"\npassword_env = \"P\""], &[("username_env = \"U\"", "username_env"), ("password_env = \"P\"", "username_env")]),
];

const POSTGRES: &[Field] = &[
    field(&["kind = \"postgres\""], &[]),
    field(
        &["", "dsn = \"postgres://u@h:5432/db\"", "dsn = \"host=db dbname='my shop'\"", "dsn = \"$ORDERS_DSN\""],
        &[("dsn = \"postgres://h:port/x\"", "dsn"), ("dsn = \"just words\"", "dsn"), ("dsn = \"host='open\"", "dsn")],
    ),
    field(&["", "slot = \"s_1\""], &[("slot = \"Orders\"", "slot"), ("slot = \"\"", "slot")]),
    field(&["", "publication = \"pub_1\""], &[("publication = \"a.b\"", "publication")]),
    field(&["tables = [\"public.orders\", \"customers\"]"], &[("tables = []", "tables"), ("tables = [\"a;drop table x\"]", "tables"), ("tables = [\"a.b.c\"]", "tables")]),
    field(&["", "operations = [\"insert\"]", "operations = [\"insert\", \"update\", \"delete\", \"truncate\"]"], &[("operations = []", "operations"), ("operations = [\"upsert\"]", "operations")]),
];

/// A file made of `fields` (plus `extra` free-form lines) with at most one wrong field;
/// returns the text and the field the error must name.
fn file(fields: &'static [Field], extra: Vec<String>) -> impl Strategy<Value = (String, Option<&'static str>)> {
    let choices: Vec<BoxedStrategy<usize>> = fields.iter().map(|f| (0..f.valid.len()).boxed()).collect();
    let wrong_candidates: Vec<(usize, usize)> =
        fields.iter().enumerate().flat_map(|(i, f)| (0..f.invalid.len()).map(move |j| (i, j))).collect();
    let wrong = proptest::option::weighted(0.6, proptest::sample::select(wrong_candidates));
    (choices, wrong, Just(extra)).prop_map(move |(choices, wrong, extra)| {
        let mut lines = Vec::new();
        let mut expected = None;
        for (i, (field, choice)) in fields.iter().zip(choices).enumerate() {
            match wrong {
                Some((w, j)) if w == i => {
                    lines.push(field.invalid[j].0.to_owned());
                    expected = Some(field.invalid[j].1);
                }
                _ => lines.push(field.valid[choice].to_owned()),
            }
        }
        lines.extend(extra);
        (lines.join("\n") + "\n", expected)
    })
}

/// A trigger file of any kind, with its target, free-form strings where any string goes.
fn trigger_file() -> impl Strategy<Value = (String, Option<&'static str>)> {
    let any = || "\\PC{0,20}";
    let kind = prop_oneof![
        Just(CRON).prop_map(|f| (f, Vec::<String>::new())).boxed(),
        (any(), any()).prop_map(|(p, s)| (BUCKET, vec![format!("prefix = {}", quoted(&p)), format!("suffix = {}", quoted(&s))])).boxed(),
        any().prop_map(|g| (KAFKA, vec![format!("group = {}", quoted(&g))])).boxed(),
        Just(NATS).prop_map(|f| (f, Vec::new())).boxed(),
        any().prop_map(|c| (MQTT, vec![format!("client_id = {}", quoted(&c))])).boxed(),
        Just(POSTGRES).prop_map(|f| (f, Vec::new())).boxed(),
    ];
    (kind, 0..TARGET.valid.len(), proptest::option::weighted(0.15, 0..TARGET.invalid.len())).prop_flat_map(
        |((fields, extra), target, wrong_target)| {
            file(fields, extra).prop_map(move |(text, expected)| match (expected, wrong_target) {
                // One wrong thing at a time: the target is wrong only when nothing else is.
                (None, Some(j)) => (format!("{text}{}\n", TARGET.invalid[j].0), Some(TARGET.invalid[j].1)),
                _ => (format!("{text}{}\n", TARGET.valid[target]), expected),
            })
        },
    )
}

/// Text that is sometimes TOML: random lines of keys (the real ones, misspelt ones) and
/// values of every TOML type, valid or broken, and plain garbage.
fn tomlish(keys: &'static [&'static str]) -> impl Strategy<Value = String> {
    let key = prop_oneof![4 => proptest::sample::select(keys.to_vec()).prop_map(str::to_owned), 1 => "[a-z_.\"]{1,10}"];
    let value = prop_oneof![
        "\"[^\"\\\\\n]{0,12}\"",
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|n| n.to_string()),
        Just("nan".to_owned()),
        Just("inf".to_owned()),
        Just("true".to_owned()),
        Just("1979-05-27T07:32:00Z".to_owned()),
        Just("[]".to_owned()),
        Just("{}".to_owned()),
        Just("[\"a\", 1]".to_owned()),
        Just("{ a = 1 }".to_owned()),
        "[\\[\\]{}\"=,. a-z0-9]{0,12}",
    ];
    let line = prop_oneof![
        6 => (key, value).prop_map(|(k, v)| format!("{k} = {v}")),
        1 => "\\[[a-z.]{0,10}\\]?",
        1 => "\\PC{0,30}",
        1 => "#\\PC{0,10}",
    ];
    prop_oneof![
        4 => proptest::collection::vec(line, 0..10).prop_map(|lines| lines.join("\n")),
        1 => "\\PC{0,200}",
        1 => proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

const FUNCTION_KEYS: &[&str] = &["name", "runtime", "module", "memory_mb", "timeout", "concurrency", "env", "subscribe", "on_success", "buckets", "retry", "retry.max_attempts", "[retry]", "[retry.backoff]"];
const TRIGGER_KEYS: &[&str] = &[
    "kind", "schedule", "timezone", "missed", "max_catchup", "payload", "bucket", "endpoint", "region", "events", "prefix", "suffix",
    "poll_interval", "settle", "existing", "brokers", "topics", "group", "start", "options", "subject", "queue", "url", "stream",
    "consumer", "broker", "filter", "qos", "dsn", "slot", "publication", "tables", "operations", "topic", "function",
];

proptest! {
    #![proptest_config(config(128))]

    /// Any `function.toml`: loads, or fails with an error naming that file.
    #[test]
    fn any_function_file_loads_or_names_the_file(text in tomlish(FUNCTION_KEYS)) {
        let (dir, path, _) = project(&text, None);
        if let Err(error) = load(dir.path()) {
            prop_assert_eq!(&error.path, &path, "{}", error);
            prop_assert!(error.to_string().contains(&path.display().to_string()));
        }
    }

    /// Any `triggers/t.toml`, of a known kind or not: loads, or fails naming that file.
    #[test]
    fn any_trigger_file_loads_or_names_the_file(
        kind in proptest::option::of(proptest::sample::select(vec!["cron", "bucket", "kafka", "nats", "mqtt", "postgres", "http", ""])),
        text in tomlish(TRIGGER_KEYS),
    ) {
        let text = match kind {
            Some(kind) => format!("kind = \"{kind}\"\n{text}"),
            None => text,
        };
        let (dir, _, path) = project(HELLO, Some(&text));
        if let Err(error) = load(dir.path()) {
            prop_assert_eq!(&error.path, &path, "{}", error);
        }
    }

    /// A `function.toml` with every field right loads as written; one with one field wrong
    /// fails naming that field.
    #[test]
    fn one_wrong_function_field_is_named((text, expected) in file(FUNCTION, Vec::new())) {
        let (dir, path, _) = project(&text, None);
        match (load(dir.path()), expected) {
            (Ok(project), None) => {
                prop_assert_eq!(project.functions.len(), 1);
                prop_assert_eq!(&project.functions[0].config.name, "hello");
            }
            (Ok(_), Some(field)) => prop_assert!(false, "loaded although `{}` is wrong:\n{}", field, text),
            (Err(error), None) => prop_assert!(false, "refused a correct file: {}\n{}", error, text),
            (Err(error), Some(field)) => {
                prop_assert_eq!(&error.path, &path);
                prop_assert_eq!(error.field.as_deref(), Some(field), "{}\n{}", error, text);
            }
        }
    }

    /// A trigger file of any kind with every field right loads as that kind; one with one
    /// field wrong fails naming that field.
    #[test]
    fn one_wrong_trigger_field_is_named((text, expected) in trigger_file()) {
        let (dir, _, path) = project(HELLO, Some(&text));
        match (load(dir.path()), expected) {
            (Ok(project), None) => {
                prop_assert_eq!(project.triggers.len(), 1);
                let kind = project.triggers[0].config.kind();
                prop_assert!(text.starts_with(&format!("kind = \"{kind}\"")), "loaded as {}:\n{}", kind, text);
            }
            (Ok(_), Some(field)) => prop_assert!(false, "loaded although `{}` is wrong:\n{}", field, text),
            (Err(error), None) => prop_assert!(false, "refused a correct file: {}\n{}", error, text),
            (Err(error), Some(field)) => {
                prop_assert_eq!(&error.path, &path);
                prop_assert_eq!(error.field.as_deref(), Some(field), "{}\n{}", error, text);
            }
        }
    }
}

/// A required field left out is named (the error points at the whole document, not a line).
#[test]
fn a_missing_required_field_is_named_in_the_message() {
    let (dir, path, _) = project("name = \"hello\"\nmodule = \"hello.wasm\"\n", None);
    let error = load(dir.path()).unwrap_err();
    assert_eq!(error.path, path);
    assert!(error.message.contains("runtime"), "{error}");
}
