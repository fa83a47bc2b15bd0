//! The project directory: `sluice.toml` plus every `functions/*/function.toml`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{read_toml, ConfigError, FunctionConfig, RuntimeKind};

/// `sluice.toml`, every section optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Where the NATS server is. Without it `sluice up` runs an embedded one.
    #[serde(default)]
    pub nats: NatsSettings,
    /// Stream limits.
    #[serde(default)]
    pub bus: BusSettings,
    /// Host-wide runtime limits.
    #[serde(default)]
    pub runtime: RuntimeSettings,
    /// The HTTP listener: `http` triggers, the Lambda Invoke API.
    #[serde(default)]
    pub http: HttpSettings,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSettings {
    /// NATS URL, e.g. "nats://127.0.0.1:4222", or several seed URLs of a cluster: a list
    /// (`["nats://a:4222", "nats://b:4222"]`) or one comma-separated string. Overridden by
    /// `SLUICE_NATS_URL` and `--nats`.
    #[serde(default, deserialize_with = "seed_urls")]
    pub url: Option<String>,
}

/// `url = "a"`, `url = "a,b"` or `url = ["a", "b"]`, kept as one comma-separated string.
fn seed_urls<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Urls {
        One(String),
        Many(Vec<String>),
    }
    let joined = match Urls::deserialize(deserializer)? {
        Urls::One(url) => url,
        Urls::Many(urls) => urls.join(","),
    };
    Ok(Some(joined))
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    /// How long `SLUICE_EVENTS` keeps events. Default 7 days.
    #[serde(default = "default_events_max_age", with = "humantime_serde")]
    pub events_max_age: Duration,
    /// Window in which a second publish with the same event id is dropped. Default 2m.
    #[serde(default = "default_duplicate_window", with = "humantime_serde")]
    pub duplicate_window: Duration,
    /// How long `SLUICE_DLQ` keeps dead letters; "0s" keeps them until purged. Default 0s.
    #[serde(default, with = "humantime_serde")]
    pub dlq_max_age: Duration,
    /// JetStream replicas of Sluice's streams (3 in a cluster for HA). Default 1.
    #[serde(default = "default_replicas")]
    pub replicas: usize,
    /// How long `SLUICE_LOGS` keeps invocation records (the lines functions wrote and one
    /// report per invocation; what `sluice logs` and `sluice stats` read). Default 7 days.
    #[serde(default = "default_logs_max_age", with = "humantime_serde")]
    pub logs_max_age: Duration,
    /// The most bytes `SLUICE_LOGS` keeps; the oldest records go first. Default 1 GiB.
    #[serde(default = "default_logs_max_bytes")]
    pub logs_max_bytes: i64,
}

impl Default for BusSettings {
    fn default() -> Self {
        Self {
            events_max_age: default_events_max_age(),
            duplicate_window: default_duplicate_window(),
            dlq_max_age: Duration::ZERO,
            replicas: default_replicas(),
            logs_max_age: default_logs_max_age(),
            logs_max_bytes: default_logs_max_bytes(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeSettings {
    /// Invocations running at once on this node, over all functions. Default: twice the
    /// number of CPUs (sandboxes are CPU-bound; more only queues in memory).
    pub max_concurrent: Option<usize>,
    /// Where precompiled modules are cached. Default `.sluice/cache`.
    pub cache_dir: Option<PathBuf>,
    /// The region Lambda handlers see as `AWS_REGION` (a function's `env` may override it).
    /// Default "us-east-1".
    pub region: Option<String>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Where `sluice up` listens for HTTP: "127.0.0.1:8080" by default (loopback: put a
    /// proxy in front to serve others), "off" for no listener. Overridden by
    /// `SLUICE_HTTP_LISTEN` and `sluice up --http`.
    #[serde(default = "default_http_listen")]
    pub listen: String,
    /// A file of API keys, one `name:key` per line (relative to the project folder). Keys
    /// are also read from `SLUICE_API_KEYS` (`name:key,name:key`).
    #[serde(default)]
    pub api_keys_file: Option<PathBuf>,
    /// The largest request body accepted (413 above). Default 6 MiB, Lambda's limit.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// How long a request waits for a function this node does not know (one served by
    /// other nodes only); a known function's wait is its own timeout. Default 30s, API
    /// Gateway's integration timeout.
    #[serde(default = "default_http_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Serve the Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`).
    /// Default true.
    #[serde(default = "default_true")]
    pub invoke_api: bool,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            listen: default_http_listen(),
            api_keys_file: None,
            max_body_bytes: default_max_body_bytes(),
            timeout: default_http_timeout(),
            invoke_api: true,
        }
    }
}

fn default_http_listen() -> String {
    "127.0.0.1:8080".to_owned()
}
const fn default_max_body_bytes() -> usize {
    crate::bus::payload::MAX_PAYLOAD_BYTES
}
const fn default_http_timeout() -> Duration {
    Duration::from_secs(30)
}
const fn default_true() -> bool {
    true
}

const fn default_events_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
const fn default_logs_max_age() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
const fn default_logs_max_bytes() -> i64 {
    1 << 30
}
const fn default_duplicate_window() -> Duration {
    Duration::from_secs(120)
}
const fn default_replicas() -> usize {
    1
}

/// A function with where it came from.
#[derive(Debug, Clone)]
pub struct FunctionDef {
    pub config: FunctionConfig,
    /// The `function.toml` it was read from.
    pub path: PathBuf,
    /// The function's folder (Lambda's task root for Lambda runtimes).
    pub dir: PathBuf,
    /// `module` resolved against the function's folder (wasm functions).
    pub module_path: Option<PathBuf>,
}

impl FunctionDef {
    /// What `functions list` shows as the function's code: the module, or the folder.
    pub fn artifact(&self) -> &Path {
        self.module_path.as_deref().unwrap_or(&self.dir)
    }
}

/// Everything `sluice up` runs, loaded from one directory.
#[derive(Debug, Clone)]
pub struct Project {
    pub dir: PathBuf,
    pub settings: Settings,
    /// Sorted by name.
    pub functions: Vec<FunctionDef>,
    /// `triggers/*.toml`, sorted by name.
    pub triggers: Vec<crate::triggers::TriggerDef>,
}

impl Settings {
    /// Loads `dir/sluice.toml`; defaults when there is none.
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        let path = dir.join("sluice.toml");
        if !path.exists() {
            return Ok(Self::default());
        }
        let settings: Settings = read_toml(&path)?;
        if settings.bus.replicas == 0 || settings.bus.replicas > 5 {
            return Err(ConfigError::new(&path, Some("bus.replicas"), "use 1 to 5"));
        }
        let window = settings.bus.duplicate_window;
        for (field, max_age) in [("bus.events_max_age", settings.bus.events_max_age), ("bus.dlq_max_age", settings.bus.dlq_max_age)] {
            if !max_age.is_zero() && window > max_age {
                return Err(ConfigError::new(
                    &path,
                    Some(field),
                    format!(
                        "{} is shorter than bus.duplicate_window ({}); JetStream refuses that: shorten duplicate_window or keep events longer",
                        humantime::format_duration(max_age),
                        humantime::format_duration(window)
                    ),
                ));
            }
        }
        if let Some(url) = &settings.nats.url {
            if let Err(error) = crate::bus::server_addrs(url) {
                return Err(ConfigError::new(&path, Some("nats.url"), error.to_string()));
            }
        }
        if settings.runtime.max_concurrent == Some(0) {
            return Err(ConfigError::new(&path, Some("runtime.max_concurrent"), "must be at least 1"));
        }
        Ok(settings)
    }
}

impl Project {
    /// Loads `dir/sluice.toml` (optional) and `dir/functions/*/function.toml`, every
    /// function built (its module or handler file present).
    pub fn load(dir: &Path) -> Result<Self, ConfigError> {
        Self::load_with(dir, true)
    }

    /// Like [`Project::load`] without requiring the functions' build outputs (modules,
    /// `bootstrap`), for `sluice build`.
    pub fn load_sources(dir: &Path) -> Result<Self, ConfigError> {
        Self::load_with(dir, false)
    }

    fn load_with(dir: &Path, built: bool) -> Result<Self, ConfigError> {
        let settings = Settings::load(dir)?;
        let functions = load_functions(&dir.join("functions"), built)?;
        let triggers = load_triggers(&dir.join("triggers"), &functions)?;
        Ok(Self { dir: dir.to_path_buf(), settings, functions, triggers })
    }

    pub fn function(&self, name: &str) -> Option<&FunctionDef> {
        self.functions.iter().find(|f| f.config.name == name)
    }

    /// Where local buckets live: `buckets/<name>/`.
    pub fn buckets_dir(&self) -> PathBuf {
        self.dir.join("buckets")
    }

    /// `.sluice/tools`: nats-server and the Lambda runtime interface clients.
    pub fn tools_dir(&self) -> PathBuf {
        Self::tools_dir_of(&self.dir)
    }

    /// The tools folder of the project in `dir`, for commands that load no project.
    pub fn tools_dir_of(dir: &Path) -> PathBuf {
        dir.join(".sluice").join("tools")
    }

    /// Settings of the Lambda runtimes on this node.
    pub fn lambda_host_config(&self) -> crate::runtime::lambda::HostConfig {
        crate::runtime::lambda::HostConfig { tools_dir: self.tools_dir(), region: self.settings.runtime.region.clone().unwrap_or_else(|| "us-east-1".to_owned()) }
    }

    /// The cache directory for precompiled modules.
    pub fn cache_dir(&self) -> PathBuf {
        match &self.settings.runtime.cache_dir {
            Some(dir) => self.dir.join(dir),
            None => self.dir.join(".sluice").join("cache"),
        }
    }
}

/// Reads every `function.toml` one level below `dir`. A missing `functions/` folder is an
/// empty project, not an error.
fn load_functions(dir: &Path, built: bool) -> Result<Vec<FunctionDef>, ConfigError> {
    let paths = list_dir(dir, |path| {
        let file = path.join("function.toml");
        file.is_file().then_some(file)
    })?;

    let mut seen: BTreeMap<String, PathBuf> = BTreeMap::new();
    let mut functions = Vec::with_capacity(paths.len());
    for path in paths {
        let def = load_function(&path, built)?;
        if let Some(first) = seen.get(&def.config.name) {
            return Err(ConfigError::new(
                &path,
                Some("name"),
                format!("{:?} is already the name of the function in {}; names must be unique", def.config.name, first.display()),
            ));
        }
        seen.insert(def.config.name.clone(), path.clone());
        functions.push(def);
    }
    functions.sort_by(|a, b| a.config.name.cmp(&b.config.name));
    Ok(functions)
}

/// Reads and checks one `function.toml` (`path`) and what its folder holds; with `built`,
/// the function's build outputs (module, component, `bootstrap`) must be present.
pub fn load_function(path: &Path, built: bool) -> Result<FunctionDef, ConfigError> {
    let config: FunctionConfig = read_toml(path)?;
    if let Err((field, message)) = config.check() {
        return Err(ConfigError::new(path, Some(&field), message));
    }
    let folder = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let mut module_path = config.module.as_ref().map(|module| folder.join(module));
    if let (RuntimeKind::Component, Some(handler)) = (config.runtime, &config.handler) {
        crate::runtime::component::source::find(handler, &folder).map_err(|m| ConfigError::new(path, Some("handler"), m))?;
        let component = folder.join(crate::runtime::component::BUILT_COMPONENT);
        if built && !component.is_file() {
            return Err(ConfigError::new(
                path,
                Some("handler"),
                format!("{} does not exist; build the function first (`sluice build {}`)", component.display(), config.name),
            ));
        }
        module_path = Some(component);
    } else if let Some(module_path) = &module_path {
        if !module_path.is_file() {
            if built {
                return Err(ConfigError::new(
                    path,
                    Some("module"),
                    format!("{} does not exist; build the function first (`sluice build {}`)", module_path.display(), config.name),
                ));
            }
        } else if let Err((field, message)) = check_module(&config, module_path) {
            return Err(ConfigError::new(path, Some(field), message));
        }
    }
    if config.runtime.is_lambda() {
        if let Err((field, message)) = crate::runtime::lambda::check_folder(&config, &folder, built) {
            return Err(ConfigError::new(path, Some(field), message));
        }
    }
    Ok(FunctionDef { config, path: path.to_path_buf(), dir: folder, module_path })
}

const MIB: u64 = 1024 * 1024;

/// What the runtime would refuse about a function's module, found without compiling it, with
/// the field to blame: a file that is not WebAssembly (`module`), or an initial linear memory
/// larger than `memory_mb` allows (`memory_mb`). Binary modules only, except that a file named
/// `*.wat` may hold the text format.
fn check_module(config: &FunctionConfig, module_path: &Path) -> Result<(), (&'static str, String)> {
    let shown = module_path.display();
    if config.runtime == RuntimeKind::Component {
        // Its memories are many and made at instantiation; the runtime caps their sum. Only
        // the header is read: a component of tens of MB is mapped, not read, at start.
        use std::io::Read as _;
        let mut head = Vec::with_capacity(8);
        std::fs::File::open(module_path)
            .and_then(|file| file.take(8).read_to_end(&mut head))
            .map_err(|e| ("module", format!("cannot read {shown}: {e}")))?;
        return check_component_header(&head).map_err(|m| ("module", format!("{shown} {m}")));
    }
    let bytes = std::fs::read(module_path).map_err(|e| ("module", format!("cannot read {shown}: {e}")))?;
    let binary = if module_path.extension().is_some_and(|e| e == "wat") {
        wat::parse_bytes(&bytes)
            .map_err(|e| ("module", format!("{shown} is not valid WebAssembly text: {e}")))?
            .into_owned()
    } else {
        check_header(&bytes).map_err(|m| ("module", format!("{shown} {m}")))?;
        bytes
    };
    let limit = u64::from(config.memory_mb) * MIB;
    for memory in initial_memories(&binary).map_err(|e| ("module", format!("{shown} is not a valid WebAssembly module: {e}")))? {
        let bytes = memory.initial.saturating_mul(u64::from(memory.page_size()));
        if bytes > limit {
            return Err((
                "memory_mb",
                format!(
                    "the module asks for an initial memory of {} ({} pages) but memory_mb = {}; \
                     raise memory_mb or shrink the module's initial memory",
                    mebibytes(bytes),
                    memory.initial,
                    config.memory_mb
                ),
            ));
        }
    }
    Ok(())
}

/// Checks the 8-byte preamble of a binary core module: `\0asm` and version 1.
fn check_header(bytes: &[u8]) -> Result<(), String> {
    const BUILD: &str = "build the function for wasm32-wasip1 (a WASI preview-1 command module)";
    if bytes.is_empty() {
        return Err(format!("is empty, not a WebAssembly module; {BUILD}"));
    }
    if !bytes.starts_with(b"\0asm") {
        return Err(format!("is not a WebAssembly module: it starts with {}; {BUILD}", first_bytes(bytes)));
    }
    match bytes.get(4..8) {
        Some([1, 0, 0, 0]) => Ok(()),
        Some([_, _, 1, 0]) => Err(format!(
            "is a WebAssembly component, but runtime \"wasm\" runs core modules; {BUILD}"
        )),
        _ => Err(format!("is not a WebAssembly module this runtime can run: it starts with {}", first_bytes(bytes))),
    }
}

/// Checks the preamble of a binary component: `\0asm` and a component's version and layer.
fn check_component_header(bytes: &[u8]) -> Result<(), String> {
    const BUILD: &str = "give `handler` (a Python or JavaScript handler `sluice build` makes the component from) or a component built for wit/sluice.wit";
    if !bytes.starts_with(b"\0asm") {
        return Err(format!("is not a WebAssembly component: it starts with {}; {BUILD}", first_bytes(bytes)));
    }
    match bytes.get(4..8) {
        Some([_, _, 1, 0]) => Ok(()),
        Some([1, 0, 0, 0]) => Err("is a core WebAssembly module, but runtime \"component\" runs components; a WASI preview-1 command module runs under runtime = \"wasm\"".to_owned()),
        _ => Err(format!("is not a WebAssembly component this runtime can run: it starts with {}", first_bytes(bytes))),
    }
}

/// Up to the first 16 bytes, readably: as text when they are text (`"#!/bin/sh\n..."`),
/// else in hex (`7f 45 4c 46 02 01 01 00 ... (hex)`).
fn first_bytes(bytes: &[u8]) -> String {
    const SHOWN: usize = 16;
    let head = &bytes[..bytes.len().min(SHOWN)];
    let more = if bytes.len() > SHOWN { "..." } else { "" };
    let text = match std::str::from_utf8(head) {
        Ok(text) => Some(text),
        // A multi-byte character cut at the end of the window.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&head[..e.valid_up_to()]).ok(),
        Err(_) => None,
    };
    match text {
        Some(text) if !text.is_empty() && text.chars().all(|c| !c.is_control() || c.is_ascii_whitespace()) => {
            let escaped = format!("{text:?}");
            format!("{}{more}\"", escaped.strip_suffix('"').unwrap_or(&escaped))
        }
        _ => {
            let hex: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
            format!("{}{} (hex)", hex.join(" "), if more.is_empty() { "" } else { " ..." })
        }
    }
}

/// `130 MiB`, or `4.1 MiB` when not a whole number.
fn mebibytes(bytes: u64) -> String {
    if bytes.is_multiple_of(MIB) {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{:.1} MiB", bytes as f64 / MIB as f64)
    }
}

/// The linear memories a binary module defines or imports, with their initial sizes.
fn initial_memories(binary: &[u8]) -> wasmparser::Result<Vec<wasmparser::MemoryType>> {
    use wasmparser::{Payload, TypeRef};
    let mut memories = Vec::new();
    for payload in wasmparser::Parser::new(0).parse_all(binary) {
        match payload? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    if let TypeRef::Memory(memory) = import?.ty {
                        memories.push(memory);
                    }
                }
            }
            Payload::MemorySection(section) => {
                for memory in section {
                    memories.push(memory?);
                }
            }
            // Memories are declared before any code; the rest is not needed.
            Payload::CodeSectionStart { .. } | Payload::DataSection(_) => break,
            _ => {}
        }
    }
    Ok(memories)
}

/// Reads every `triggers/*.toml`; the file name (without `.toml`) is the trigger's name.
fn load_triggers(dir: &Path, functions: &[FunctionDef]) -> Result<Vec<crate::triggers::TriggerDef>, ConfigError> {
    let paths = list_dir(dir, |path| {
        (path.is_file() && path.extension().is_some_and(|e| e == "toml")).then_some(path)
    })?;
    let mut triggers = Vec::with_capacity(paths.len());
    for path in paths {
        let trigger = load_trigger(&path)?;
        for function in trigger.config.required_functions() {
            if !functions.iter().any(|f| f.config.name == function) {
                return Err(ConfigError::new(
                    &path,
                    Some("function"),
                    format!("no function named {function:?} in functions/"),
                ));
            }
        }
        triggers.push(trigger);
    }
    Ok(triggers)
}

/// Reads and checks one trigger file; its file name (without `.toml`) is the trigger's name.
pub fn load_trigger(path: &Path) -> Result<crate::triggers::TriggerDef, ConfigError> {
    use crate::triggers::{TriggerConfig, TriggerDef};
    let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
    if let Err(message) = super::validate_name(&name) {
        return Err(ConfigError::new(path, None, format!("the file name is the trigger's name: {message}")));
    }
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError::new(path, None, format!("cannot read the file: {e}")))?;
    let config = TriggerConfig::parse(path, &text)?;
    if let Err((field, message)) = config.check() {
        return Err(ConfigError::new(path, Some(&field), message));
    }
    Ok(TriggerDef { name, path: path.to_path_buf(), config })
}

/// The entries of `dir` that `pick` keeps (mapped), sorted. A missing folder is empty.
fn list_dir(dir: &Path, pick: impl Fn(PathBuf) -> Option<PathBuf>) -> Result<Vec<PathBuf>, ConfigError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ConfigError::new(dir, None, format!("cannot list the folder: {e}"))),
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(Result::ok).filter_map(|entry| pick(entry.path())).collect();
    paths.sort();
    Ok(paths)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_url_takes_one_or_several_seeds() {
        let one: Settings = toml::from_str("[nats]\nurl = \"nats://a:4222\"\n").unwrap();
        assert_eq!(one.nats.url.as_deref(), Some("nats://a:4222"));
        let list: Settings = toml::from_str("[nats]\nurl = [\"nats://a:4222\", \"nats://b:4222\"]\n").unwrap();
        assert_eq!(list.nats.url.as_deref(), Some("nats://a:4222,nats://b:4222"));
        let none: Settings = toml::from_str("[nats]\n").unwrap();
        assert_eq!(none.nats.url, None);
        assert!(toml::from_str::<Settings>("[nats]\nurl = 4222\n").is_err());
    }

    #[test]
    fn retention_must_cover_the_duplicate_window() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sluice.toml"), "[bus]\nevents_max_age = \"3s\"\n").unwrap();
        let error = Settings::load(dir.path()).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("bus.events_max_age"), "{error}");
        assert!(error.message.contains("2m"), "{error}");
        std::fs::write(dir.path().join("sluice.toml"), "[bus]\nevents_max_age = \"3s\"\nduplicate_window = \"1s\"\n").unwrap();
        assert!(Settings::load(dir.path()).is_ok());
    }

    #[test]
    fn a_bad_seed_names_the_field() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("sluice.toml"), "[nats]\nurl = [\"nats://a:4222\", \"nats://b:x\"]\n").unwrap();
        let error = Settings::load(dir.path()).unwrap_err();
        assert_eq!(error.field.as_deref(), Some("nats.url"), "{error}");
    }

    #[test]
    fn first_bytes_read_as_text_or_hex() {
        assert_eq!(first_bytes(b"#!/bin/sh\necho hello world\n"), r##""#!/bin/sh\necho h...""##);
        assert_eq!(first_bytes(b"hi\n"), r#""hi\n""#);
        assert_eq!(first_bytes(b"\x7fELF\x02\x01\x01\x00"), "7f 45 4c 46 02 01 01 00 (hex)");
        assert_eq!(first_bytes(&[0u8; 20]), format!("{} ... (hex)", ["00"; 16].join(" ")));
        // A character cut at the window's edge is still text.
        assert_eq!(first_bytes("aéééééééé".as_bytes()), "\"aééééééé...\"");
        assert_eq!(first_bytes(b"say \"hi\""), r#""say \"hi\"""#);
    }

    #[test]
    fn headers_name_what_the_file_is() {
        assert!(check_header(b"\0asm\x01\0\0\0").is_ok());
        assert!(check_header(b"").unwrap_err().starts_with("is empty"));
        assert!(check_header(b"(module)").unwrap_err().contains(r#"it starts with "(module)""#));
        assert!(check_header(b"\0asm\x0d\0\x01\0").unwrap_err().contains("component"));
        assert!(check_header(b"\0asm").unwrap_err().contains("not a WebAssembly module this runtime can run"));
    }

    #[test]
    fn initial_memory_is_read_from_definitions_and_imports() {
        let defined = wat::parse_str("(module (memory 2080) (func (export \"_start\")))").unwrap();
        let pages: Vec<u64> = initial_memories(&defined).unwrap().iter().map(|m| m.initial).collect();
        assert_eq!(pages, [2080]);
        let imported = wat::parse_str("(module (import \"env\" \"memory\" (memory 3 10)))").unwrap();
        let pages: Vec<u64> = initial_memories(&imported).unwrap().iter().map(|m| m.initial).collect();
        assert_eq!(pages, [3]);
        assert_eq!(mebibytes(2080 * 65536), "130 MiB");
        assert_eq!(mebibytes(65 * 65536), "4.1 MiB");
    }
}
