//! `functions/<name>/function.toml`: one function, its artifact, limits and retry policy.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One function as written in `function.toml`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct FunctionConfig {
    /// Unique name; becomes the consumer name and the `sluice.direct.<name>` subject.
    /// 1 to 64 ASCII letters, digits, `-` or `_`.
    pub name: String,
    /// How the function runs: `wasm` (a WASI preview-1 command module), `component` (a
    /// WebAssembly component exporting `wit/sluice.wit`, prebuilt or built from a Python or
    /// JavaScript handler), or one of Lambda's runtimes: `python3.N`, `nodejsN.x`, `provided` /
    /// `provided.al2023` / `provided.al2` (an executable `bootstrap` in the folder).
    pub runtime: RuntimeKind,
    /// The wasm artifact, relative to the function's folder (an absolute path also works).
    /// Required for `wasm`; for `component`, a prebuilt component (instead of `handler`); not
    /// used by Lambda runtimes.
    #[serde(default)]
    pub module: Option<PathBuf>,
    /// Lambda runtimes: the handler as Lambda reads it, `file.function` (`app.lambda_handler`
    /// is `lambda_handler` in `app.py`; `index.handler` is `handler` exported by `index.js`,
    /// `.mjs` or `.cjs`). Required for `python3.N` and `nodejsN.x`; passed to a `provided`
    /// runtime's `bootstrap` as `_HANDLER`. For `component`, the Python (`app.lambda_handler`)
    /// or JavaScript (`index.handler`) handler `sluice build` makes the component from.
    #[serde(default)]
    pub handler: Option<String>,
    /// Memory limit in MiB. wasm: linear memory cannot grow past it. Lambda runtimes: a hard
    /// limit on the execution environment's processes. Default 128.
    #[serde(default = "default_memory_mb")]
    pub memory_mb: u32,
    /// Wall-clock limit of one invocation ("500ms", "3s", "2m"). Default 3s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Maximum in-flight invocations of this function across all nodes. Default 16.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Environment variables the function sees, besides the `SLUICE_*` context.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Topics that trigger the function; NATS wildcards (`*`, `>`) allowed. Default none:
    /// the function then runs only when invoked directly or replayed.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Topic to publish the function's response to as a new event after a successful
    /// invocation (chaining). Default none.
    #[serde(default)]
    pub on_success: Option<String>,
    /// Local buckets the function may use, as `"name:ro"` or `"name:rw"` (plain `"name"` is
    /// read-only). Each is mounted in the sandbox at `/buckets/<name>`; nothing else of the
    /// host's file system is visible. Default none.
    #[serde(default)]
    pub buckets: Vec<String>,
    /// What happens when an invocation fails.
    #[serde(default)]
    pub retry: RetryConfig,
    /// Lambda runtimes: execution environments kept started even when idle (Lambda's
    /// provisioned concurrency), at most `concurrency`. Default 0: scale to zero.
    #[serde(default)]
    pub min_warm: u32,
    /// Lambda runtimes: an execution environment idle this long is stopped ("10m", "30s").
    /// Default 5m.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

/// A bucket a function may use, parsed from `buckets`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketGrant {
    pub bucket: String,
    pub writable: bool,
}

impl BucketGrant {
    /// Parses `"name"`, `"name:ro"` or `"name:rw"`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (bucket, mode) = text.split_once(':').unwrap_or((text, "ro"));
        let writable = match mode {
            "ro" => false,
            "rw" => true,
            other => return Err(format!("{text:?}: access {other:?} is neither \"ro\" (read-only) nor \"rw\" (read-write)")),
        };
        super::validate_bucket(bucket).map_err(|m| format!("{text:?}: {m}"))?;
        Ok(Self { bucket: bucket.to_owned(), writable })
    }

    /// Where the sandbox sees it.
    pub fn guest_path(&self) -> String {
        format!("/buckets/{}", self.bucket)
    }
}

/// The runtimes this build can run, by the names Lambda and SAM use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuntimeKind {
    /// WASI preview-1 command module: event on stdin, response on stdout.
    Wasm,
    /// A WebAssembly component exporting the Sluice world (`wit/sluice.wit`).
    Component,
    /// `python3.N`: a Python handler run through `awslambdaric`.
    Python { minor: u32 },
    /// `nodejsN.x`: a Node.js handler run through `aws-lambda-ric`.
    Node { major: u32 },
    /// `provided`, `provided.al2`, `provided.al2023`: an executable `bootstrap` that speaks
    /// the Runtime API itself (Lambda's custom runtime).
    Provided { variant: ProvidedVariant },
}

/// Which `provided` name was written (they run the same way here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvidedVariant {
    Plain,
    Al2,
    Al2023,
}

impl RuntimeKind {
    /// Whether the function runs as a process speaking the Lambda Runtime API.
    pub fn is_lambda(self) -> bool {
        !matches!(self, RuntimeKind::Wasm | RuntimeKind::Component)
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let number = |digits: &str| (!digits.is_empty() && digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit())).then(|| digits.parse::<u32>().ok()).flatten();
        let kind = match text {
            "wasm" => Some(RuntimeKind::Wasm),
            "component" => Some(RuntimeKind::Component),
            "provided" => Some(RuntimeKind::Provided { variant: ProvidedVariant::Plain }),
            "provided.al2" => Some(RuntimeKind::Provided { variant: ProvidedVariant::Al2 }),
            "provided.al2023" => Some(RuntimeKind::Provided { variant: ProvidedVariant::Al2023 }),
            _ => {
                if let Some(minor) = text.strip_prefix("python3.").and_then(number) {
                    Some(RuntimeKind::Python { minor })
                } else {
                    text.strip_prefix("nodejs").and_then(|rest| rest.strip_suffix(".x")).and_then(number).map(|major| RuntimeKind::Node { major })
                }
            }
        };
        kind.ok_or_else(|| {
            format!(
                "unknown runtime {text:?}: use \"wasm\", \"component\", \"python3.N\" (e.g. \"python3.11\"), \"nodejsN.x\" (e.g. \"nodejs20.x\"), \"provided\" or \"provided.al2023\""
            )
        })
    }
}

impl std::fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RuntimeKind::Wasm => f.write_str("wasm"),
            RuntimeKind::Component => f.write_str("component"),
            RuntimeKind::Python { minor } => write!(f, "python3.{minor}"),
            RuntimeKind::Node { major } => write!(f, "nodejs{major}.x"),
            RuntimeKind::Provided { variant: ProvidedVariant::Plain } => f.write_str("provided"),
            RuntimeKind::Provided { variant: ProvidedVariant::Al2 } => f.write_str("provided.al2"),
            RuntimeKind::Provided { variant: ProvidedVariant::Al2023 } => f.write_str("provided.al2023"),
        }
    }
}

impl Serialize for RuntimeKind {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for RuntimeKind {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Retry policy of a function.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts before the event goes to the dead-letter stream, the first included. Default 3
    /// (as Lambda's asynchronous invocation: one try and two retries).
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Delay between attempts.
    #[serde(default)]
    pub backoff: BackoffConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self { max_attempts: default_max_attempts(), backoff: BackoffConfig::default() }
    }
}

/// Exponential backoff: the delay after attempt `n` is `initial * factor^(n-1)`, capped at
/// `max`; with `jitter` a uniformly random delay between zero and that value ("full jitter").
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BackoffConfig {
    /// Delay after the first failed attempt. Default 1s.
    #[serde(default = "default_initial", with = "humantime_serde")]
    pub initial: Duration,
    /// Growth per attempt, at least 1.0. Default 2.0.
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// Upper bound of one delay. Default 1m.
    #[serde(default = "default_max", with = "humantime_serde")]
    pub max: Duration,
    /// Randomise delays so failing events do not retry in lockstep. Default true.
    #[serde(default = "default_jitter")]
    pub jitter: bool,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: default_initial(),
            factor: default_factor(),
            max: default_max(),
            jitter: default_jitter(),
        }
    }
}

const fn default_memory_mb() -> u32 {
    128
}
const fn default_timeout() -> Duration {
    Duration::from_secs(3)
}
const fn default_concurrency() -> u32 {
    16
}
const fn default_idle_timeout() -> Duration {
    Duration::from_secs(5 * 60)
}
const fn default_max_attempts() -> u32 {
    3
}
const fn default_initial() -> Duration {
    Duration::from_secs(1)
}
const fn default_factor() -> f64 {
    2.0
}
const fn default_max() -> Duration {
    Duration::from_secs(60)
}
const fn default_jitter() -> bool {
    true
}

/// Bounds checked after parsing; each names the field it guards.
pub(crate) const MAX_MEMORY_MB: u32 = 4096;
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(15 * 60);
pub(crate) const MAX_CONCURRENCY: u32 = 10_000;
pub(crate) const MAX_ATTEMPTS: u32 = 100;

impl FunctionConfig {
    /// The bucket grants; entries that do not parse are skipped (`check` reports them).
    pub fn bucket_grants(&self) -> Vec<BucketGrant> {
        self.buckets.iter().filter_map(|g| BucketGrant::parse(g).ok()).collect()
    }

    /// The fields that depend on the runtime: `module` for wasm, `handler` for Lambda's.
    fn check_runtime(&self) -> Result<(), (&'static str, String)> {
        match self.runtime {
            RuntimeKind::Wasm => {
                if self.module.is_none() {
                    return Err(("module", "missing: a wasm function names its compiled module, e.g. module = \"hello.wasm\"".into()));
                }
                if self.handler.is_some() {
                    return Err(("handler", "is for Lambda runtimes (python3.N, nodejsN.x, provided); a wasm function runs its module's main".into()));
                }
                if self.min_warm > 0 {
                    return Err(("min_warm", "is for Lambda runtimes; a wasm function starts a fresh sandbox per event in microseconds".into()));
                }
            }
            RuntimeKind::Component => {
                match (&self.module, &self.handler) {
                    (None, None) => {
                        return Err((
                            "handler",
                            "missing: a component function names the handler to build it from, e.g. handler = \"app.lambda_handler\" \
                             (app.py) or handler = \"index.handler\" (index.js), or a prebuilt component as module = \"handler.wasm\""
                                .into(),
                        ))
                    }
                    (Some(_), Some(_)) => {
                        return Err(("handler", "and `module` exclude each other: `handler` is built into a component by `sluice build`, `module` is a component built already; keep one".into()))
                    }
                    (None, Some(handler)) => {
                        crate::runtime::component::source::parse(handler).map_err(|m| ("handler", m))?;
                    }
                    (Some(_), None) => {}
                }
                if self.min_warm > 0 {
                    return Err(("min_warm", "is for Lambda runtimes; a component starts a fresh instance per event from its precompiled image".into()));
                }
            }
            RuntimeKind::Python { .. } | RuntimeKind::Node { .. } | RuntimeKind::Provided { .. } => {
                if self.module.is_some() {
                    return Err(("module", format!("is for wasm functions; runtime {} runs the handler's source file (see `handler`)", self.runtime)));
                }
                if !self.buckets.is_empty() {
                    return Err(("buckets", format!("is for wasm sandboxes; a {} handler is a process that can open files itself (pass it a path through `env`)", self.runtime)));
                }
                let provided = matches!(self.runtime, RuntimeKind::Provided { .. });
                match &self.handler {
                    None if provided => {}
                    None => {
                        let example = if matches!(self.runtime, RuntimeKind::Python { .. }) { "app.lambda_handler" } else { "index.handler" };
                        return Err(("handler", format!("missing: runtime {} needs the handler as Lambda reads it, file.function, e.g. handler = {example:?}", self.runtime)));
                    }
                    Some(handler) if !provided => {
                        crate::runtime::lambda::HandlerName::parse(self.runtime, handler).map_err(|m| ("handler", m))?;
                    }
                    Some(handler) => {
                        if handler.is_empty() || handler.contains('\0') {
                            return Err(("handler", format!("{handler:?} is not a valid handler name")));
                        }
                    }
                }
                if self.min_warm > self.concurrency {
                    return Err(("min_warm", format!("{} is more than concurrency ({}): at most `concurrency` environments run", self.min_warm, self.concurrency)));
                }
                if self.idle_timeout.is_zero() {
                    return Err(("idle_timeout", "must be more than 0 (an environment is stopped after this long without an event)".into()));
                }
            }
        }
        Ok(())
    }

    /// Semantic checks serde cannot express. Returns the offending field and what is wrong.
    pub(crate) fn check(&self) -> Result<(), (String, String)> {
        let field = |f: &str, m: String| Err((f.to_owned(), m));
        if let Err(m) = super::validate_name(&self.name) {
            return field("name", m);
        }
        self.check_runtime().map_err(|(f, m)| (f.to_owned(), m))?;
        if self.memory_mb == 0 || self.memory_mb > MAX_MEMORY_MB {
            return field("memory_mb", format!("{} is out of range: use 1 to {MAX_MEMORY_MB}", self.memory_mb));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return field("timeout", format!("{:?} is out of range: use more than 0 and at most 15m", self.timeout));
        }
        if self.concurrency == 0 || self.concurrency > MAX_CONCURRENCY {
            return field("concurrency", format!("{} is out of range: use 1 to {MAX_CONCURRENCY}", self.concurrency));
        }
        for topic in &self.subscribe {
            if let Err(m) = super::validate_topic(topic, true) {
                return field("subscribe", m);
            }
        }
        if let Some(m) = overlapping_filters(&self.subscribe) {
            return field("subscribe", m);
        }
        if let Some(topic) = &self.on_success {
            if let Err(m) = super::validate_topic(topic, false) {
                return field("on_success", m);
            }
            if self.subscribe.iter().any(|s| subject_matches(s, topic)) {
                return field("on_success", format!("{topic:?} is also subscribed by this function: it would invoke itself forever"));
            }
        }
        for key in self.env.keys() {
            if key.is_empty() || key.contains('=') || key.contains('\0') {
                return field("env", format!("{key:?} is not a valid variable name"));
            }
            if key.starts_with("SLUICE_") {
                return field("env", format!("{key:?}: the SLUICE_ prefix is reserved for the invocation context"));
            }
            if self.runtime.is_lambda() && crate::runtime::lambda::is_reserved_variable(key) {
                return field("env", format!("{key:?} is set by the Lambda runtime itself (as on AWS Lambda, it is reserved); choose another name"));
            }
        }
        let mut granted = std::collections::BTreeSet::new();
        for grant in &self.buckets {
            let grant = BucketGrant::parse(grant).map_err(|m| ("buckets".to_owned(), m))?;
            if !granted.insert(grant.bucket.clone()) {
                return field("buckets", format!("bucket {:?} is listed twice", grant.bucket));
            }
        }
        let retry = &self.retry;
        if retry.max_attempts == 0 || retry.max_attempts > MAX_ATTEMPTS {
            return field("retry.max_attempts", format!("{} is out of range: use 1 to {MAX_ATTEMPTS}", retry.max_attempts));
        }
        if !(retry.backoff.factor.is_finite() && retry.backoff.factor >= 1.0) {
            return field("retry.backoff.factor", format!("{} must be a number of at least 1.0", retry.backoff.factor));
        }
        if retry.backoff.max < retry.backoff.initial {
            return field("retry.backoff.max", "must not be smaller than retry.backoff.initial".into());
        }
        Ok(())
    }
}

/// Whether a concrete subject matches a NATS subscription pattern.
pub fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut pattern = pattern.split('.');
    let mut subject = subject.split('.');
    loop {
        match (pattern.next(), subject.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(p), Some(s)) if p == s => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// The first pair of `subscribe` entries that overlap, described with what to do. Each entry
/// becomes a filter subject of the function's one consumer, and JetStream refuses a consumer
/// whose filters overlap, so this is checked up front. Every server refuses a filter that
/// covers another (`a.>` and `a.b`, or one twice); servers from nats-server PR #5224 (2024) to
/// PR #7810 (2026) also refuse filters that merely cross (`a.*.c` and `a.b.*`, both matching
/// `a.b.c`), and Sluice supports those servers, so it refuses any overlap.
fn overlapping_filters(subscribe: &[String]) -> Option<String> {
    const REFUSED: &str = "JetStream refuses overlapping filters of one consumer";
    for (i, first) in subscribe.iter().enumerate() {
        for second in &subscribe[i + 1..] {
            let Some(witness) = collision(first, second) else { continue };
            let message = if first == second {
                format!("subscribe lists {first:?} twice: {REFUSED}; keep one")
            } else if covers(first, second) {
                format!(
                    "subscribe entries {first:?} and {second:?} overlap (every {second:?} event also matches {first:?}): \
                     {REFUSED}; keep only {first:?}"
                )
            } else if covers(second, first) {
                format!(
                    "subscribe entries {first:?} and {second:?} overlap (every {first:?} event also matches {second:?}): \
                     {REFUSED}; keep only {second:?}"
                )
            } else {
                format!(
                    "subscribe entries {first:?} and {second:?} overlap (an event on {witness:?} matches both): \
                     nats-server releases of 2024 and 2025 refuse such a consumer (newer ones accept filters that \
                     only cross), so it is refused whatever the server; use one wider filter that covers both, or \
                     narrower ones that do not overlap"
                )
            };
            return Some(message);
        }
    }
    None
}

/// A concrete subject both patterns match, if there is one: the overlap rule nats-server
/// applies to the filters of one consumer (`SubjectsCollide`). Token by token, `*` matches
/// any one token and `>` one or more remaining tokens; patterns of different lengths meet
/// only where the shorter one ends in a `>` that covers the rest.
fn collision(a: &str, b: &str) -> Option<String> {
    // Stands in for a token matched only by wildcards.
    const ANY: &str = "x";
    let concrete = |token: &str| if token == "*" || token == ">" { ANY.to_owned() } else { token.to_owned() };
    let (mut a, mut b) = (a.split('.'), b.split('.'));
    let mut subject: Vec<String> = Vec::new();
    loop {
        match (a.next(), b.next()) {
            (None, None) => return Some(subject.join(".")),
            (Some(">"), Some(other)) | (Some(other), Some(">")) => {
                // `>` takes whatever the other pattern still needs (at least one token).
                let rest = if a.clone().next().is_some() { &mut a } else { &mut b };
                subject.push(concrete(other));
                subject.extend(rest.map(concrete));
                return Some(subject.join("."));
            }
            (Some("*"), Some(other)) | (Some(other), Some("*")) => subject.push(concrete(other)),
            (Some(x), Some(y)) if x == y => subject.push(x.to_owned()),
            _ => return None,
        }
    }
}

/// Whether every subject `narrow` matches is also matched by `wide`.
fn covers(wide: &str, narrow: &str) -> bool {
    let (mut wide, mut narrow) = (wide.split('.'), narrow.split('.'));
    loop {
        match (wide.next(), narrow.next()) {
            (Some(">"), Some(_)) | (None, None) => return true,
            (Some("*"), Some(n)) if n != ">" => {}
            (Some(w), Some(n)) if w == n => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<FunctionConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn defaults_apply() {
        let f = parse("name = \"a\"\nruntime = \"wasm\"\nmodule = \"a.wasm\"\n").unwrap();
        assert_eq!(f.memory_mb, 128);
        assert_eq!(f.timeout, Duration::from_secs(3));
        assert_eq!(f.retry.max_attempts, 3);
        assert!(f.retry.backoff.jitter);
        assert!(f.check().is_ok());
    }

    #[test]
    fn runtimes_use_lambdas_names() {
        for (text, kind) in [
            ("wasm", RuntimeKind::Wasm),
            ("python3.11", RuntimeKind::Python { minor: 11 }),
            ("python3.9", RuntimeKind::Python { minor: 9 }),
            ("nodejs20.x", RuntimeKind::Node { major: 20 }),
            ("provided", RuntimeKind::Provided { variant: ProvidedVariant::Plain }),
            ("provided.al2", RuntimeKind::Provided { variant: ProvidedVariant::Al2 }),
            ("provided.al2023", RuntimeKind::Provided { variant: ProvidedVariant::Al2023 }),
        ] {
            assert_eq!(text.parse::<RuntimeKind>(), Ok(kind), "{text}");
            assert_eq!(kind.to_string(), text);
            assert_eq!(kind.is_lambda(), text != "wasm");
        }
        assert_eq!("component".parse::<RuntimeKind>(), Ok(RuntimeKind::Component));
        assert_eq!(RuntimeKind::Component.to_string(), "component");
        assert!(!RuntimeKind::Component.is_lambda());
        for bad in ["python2.7", "python3", "python3.x", "nodejs20", "nodejs.x", "nodejsx.x", "java21", "provided.al2024", "WASM", "python3.1234"] {
            let error = bad.parse::<RuntimeKind>().unwrap_err();
            assert!(error.contains(&format!("{bad:?}")) && error.contains("nodejsN.x"), "{bad}: {error}");
        }
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let err = parse("name = \"a\"\nruntime = \"wasm\"\nmodule = \"a.wasm\"\nmemroy_mb = 3\n").unwrap_err();
        assert!(err.to_string().contains("memroy_mb"), "{err}");
    }

    #[test]
    fn checks_name_the_field() {
        let mut f = parse("name = \"a\"\nruntime = \"wasm\"\nmodule = \"a.wasm\"\n").unwrap();
        f.retry.max_attempts = 0;
        assert_eq!(f.check().unwrap_err().0, "retry.max_attempts");
        f.retry.max_attempts = 2;
        f.subscribe = vec!["a..b".into()];
        assert_eq!(f.check().unwrap_err().0, "subscribe");
        f.subscribe = vec!["a.*".into()];
        f.on_success = Some("a.b".into());
        assert_eq!(f.check().unwrap_err().0, "on_success");
    }

    #[test]
    fn bucket_grants_parse() {
        assert_eq!(BucketGrant::parse("uploads").unwrap(), BucketGrant { bucket: "uploads".into(), writable: false });
        assert!(BucketGrant::parse("thumbs:rw").unwrap().writable);
        assert!(!BucketGrant::parse("thumbs:ro").unwrap().writable);
        assert!(BucketGrant::parse("thumbs:wr").unwrap_err().contains("\"wr\""));
        assert!(BucketGrant::parse("../etc:ro").is_err());
        let mut f = parse("name = \"a\"\nruntime = \"wasm\"\nmodule = \"a.wasm\"\nbuckets = [\"a:rw\", \"a\"]\n").unwrap();
        assert_eq!(f.check().unwrap_err().0, "buckets");
        f.buckets = vec!["a:rw".into(), "b".into()];
        assert!(f.check().is_ok());
    }

    fn subscribing(topics: &[&str]) -> Result<(), (String, String)> {
        let mut f = parse("name = \"a\"\nruntime = \"wasm\"\nmodule = \"a.wasm\"\n").unwrap();
        f.subscribe = topics.iter().map(|t| (*t).to_owned()).collect();
        f.check()
    }

    #[test]
    fn overlapping_subscriptions_are_refused() {
        let (field, message) = subscribing(&["x", "x"]).unwrap_err();
        assert_eq!(field, "subscribe");
        assert_eq!(message, "subscribe lists \"x\" twice: JetStream refuses overlapping filters of one consumer; keep one");
        let (field, message) = subscribing(&["a.>", "a.b"]).unwrap_err();
        assert_eq!(field, "subscribe");
        assert_eq!(
            message,
            "subscribe entries \"a.>\" and \"a.b\" overlap (every \"a.b\" event also matches \"a.>\"): \
             JetStream refuses overlapping filters of one consumer; keep only \"a.>\""
        );
        let (_, message) = subscribing(&["a.b", "a.*"]).unwrap_err();
        assert!(message.contains("every \"a.b\" event also matches \"a.*\"") && message.ends_with("keep only \"a.*\""), "{message}");
        let (_, message) = subscribing(&["a.*.c", "a.b.*"]).unwrap_err();
        assert!(message.contains("an event on \"a.b.c\" matches both"), "{message}");
        assert!(message.contains("\"a.*.c\" and \"a.b.*\""), "{message}");
        // The pair is found wherever it sits in the list.
        let (_, message) = subscribing(&["orders.created", "users.*", "audit.>", "users.deleted"]).unwrap_err();
        assert!(message.contains("\"users.*\" and \"users.deleted\""), "{message}");
        // Disjoint filters pass.
        assert!(subscribing(&["a.b", "a.c", "a.*.c", "a.b.d", "b.>", "a"]).is_ok());
        assert!(subscribing(&["a.*", "a.b.c", "*.b.c.d"]).is_ok());
    }

    #[test]
    fn collision_follows_the_servers_rule() {
        for (a, b, witness) in [
            ("x", "x", Some("x")),
            ("a.>", "a.b", Some("a.b")),
            ("a.*", "a.b", Some("a.b")),
            ("a.*.c", "a.b.*", Some("a.b.c")),
            ("*.b", "a.*", Some("a.b")),
            ("a.>", "a.b.c.>", Some("a.b.c.x")),
            ("a.b.*", "a.>", Some("a.b.x")),
            (">", "*", Some("x")),
            ("*.*", "a.>", Some("a.x")),
            ("a.>", "a", None),
            ("a.*", "a.b.c", None),
            ("a.*.c", "a.b.d", None),
            ("*", "a.b", None),
            ("a.b", "a.c", None),
        ] {
            assert_eq!(collision(a, b).as_deref(), witness, "{a} vs {b}");
            assert_eq!(collision(b, a).is_some(), witness.is_some(), "{b} vs {a}");
        }
    }

    /// Every pattern over a small alphabet, against every subject that could tell them
    /// apart: two patterns collide exactly when some subject matches both, the witness is
    /// such a subject, and `covers` agrees with matching.
    #[test]
    fn collision_and_cover_agree_with_matching() {
        fn words(alphabet: &[&str], max_len: usize) -> Vec<String> {
            let mut out: Vec<String> = Vec::new();
            let mut layer: Vec<String> = vec![String::new()];
            for _ in 0..max_len {
                layer = layer
                    .iter()
                    .flat_map(|prefix| {
                        alphabet.iter().map(move |t| if prefix.is_empty() { (*t).to_owned() } else { format!("{prefix}.{t}") })
                    })
                    .collect();
                out.extend(layer.iter().cloned());
            }
            out
        }
        let patterns: Vec<String> = words(&["a", "b", "*", ">"], 3)
            .into_iter()
            .filter(|p| crate::config::validate_topic(p, true).is_ok())
            .collect();
        // Patterns have up to 3 tokens, so subjects of up to 4 tokens over their literals
        // plus one other ("x") decide every question.
        let subjects = words(&["a", "b", "x"], 4);
        for a in &patterns {
            let matched_a: Vec<&String> = subjects.iter().filter(|s| subject_matches(a, s)).collect();
            for b in &patterns {
                let both = matched_a.iter().any(|s| subject_matches(b, s));
                let witness = collision(a, b);
                assert_eq!(witness.is_some(), both, "{a} vs {b}");
                if let Some(w) = witness {
                    assert!(subject_matches(a, &w) && subject_matches(b, &w), "{a} vs {b}: witness {w}");
                }
                let covered = subjects.iter().filter(|s| subject_matches(b, s)).all(|s| subject_matches(a, s));
                assert_eq!(covers(a, b), covered, "{a} covers {b}");
            }
        }
    }

    #[test]
    fn patterns_match_subjects() {
        assert!(subject_matches("a.b", "a.b"));
        assert!(subject_matches("a.*", "a.b"));
        assert!(!subject_matches("a.*", "a.b.c"));
        assert!(subject_matches("a.>", "a.b.c"));
        assert!(!subject_matches("a.>", "a"));
        assert!(!subject_matches("a.b", "a.c"));
    }
}
