//! Loading and validation of the project's configuration: `sluice.toml`,
//! `functions/<name>/function.toml`.
//!
//! Layers, lowest first: built-in defaults, `sluice.toml`, `SLUICE_*` environment variables,
//! command-line flags (the last two are applied by the CLI). Every error names the file and,
//! where one is to blame, the field.

mod function;
mod project;

use std::path::{Path, PathBuf};

pub use function::{BackoffConfig, BucketGrant, FunctionConfig, RetryConfig, RuntimeKind};
pub use project::{load_function, load_trigger, BusSettings, FunctionDef, HttpSettings, NatsSettings, Project, RuntimeSettings, Settings};

/// Invalid configuration. Exit code 2.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// The file at fault.
    pub path: PathBuf,
    /// The field at fault, as written in the file (`retry.max_attempts`), when one is.
    pub field: Option<String>,
    /// What is wrong and, where it helps, what to do.
    pub message: String,
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.field {
            Some(field) => write!(f, "{}: field `{field}`: {}", self.path.display(), self.message),
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl ConfigError {
    pub fn new(path: &Path, field: Option<&str>, message: impl Into<String>) -> Self {
        Self { path: path.to_path_buf(), field: field.map(str::to_owned), message: message.into() }
    }

    /// Turns a TOML/serde error into one that names the key on the offending line.
    pub fn from_toml(path: &Path, text: &str, error: &toml::de::Error) -> Self {
        let mut field = None;
        let mut location = String::new();
        if let Some(span) = error.span() {
            let start = span.start.min(text.len());
            let line_no = text[..start].matches('\n').count() + 1;
            location = format!("line {line_no}: ");
            let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
            let line = text[line_start..].lines().next().unwrap_or_default();
            if let Some((key, _)) = line.split_once('=') {
                let key = key.trim();
                if !key.is_empty() && !key.starts_with('[') {
                    field = Some(key.trim_matches('"').to_owned());
                }
            }
        }
        Self {
            path: path.to_path_buf(),
            field,
            message: format!("{location}{}", error.message().trim()),
        }
    }
}

/// Reads and parses one TOML file into `T`, mapping every failure to a [`ConfigError`].
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::new(path, None, format!("cannot read the file: {e}")))?;
    toml::from_str(&text).map_err(|e| ConfigError::from_toml(path, &text, &e))
}

/// Checks a topic (or subscription pattern, when `wildcards`) against NATS subject rules:
/// dot-separated non-empty tokens without whitespace; `*` matches one token, `>` the rest.
pub fn validate_topic(topic: &str, wildcards: bool) -> Result<(), String> {
    if topic.is_empty() {
        return Err("a topic cannot be empty".into());
    }
    let tokens: Vec<&str> = topic.split('.').collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.is_empty() {
            return Err(format!("topic {topic:?} has an empty token (two dots, or a leading or trailing dot)"));
        }
        if token.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(format!("topic {topic:?} contains whitespace"));
        }
        let wildcard = *token == "*" || *token == ">";
        if wildcard && !wildcards {
            return Err(format!("topic {topic:?} contains a wildcard; publish to a concrete topic"));
        }
        if *token == ">" && i + 1 != tokens.len() {
            return Err(format!("topic {topic:?}: `>` must be the last token"));
        }
        if !wildcard && (token.contains('*') || token.contains('>')) {
            return Err(format!("topic {topic:?}: `*` and `>` must stand alone as a whole token"));
        }
    }
    Ok(())
}

/// Checks a function name: it becomes a NATS subject token and a consumer name.
pub fn validate_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid function name: use 1 to 64 ASCII letters, digits, `-` or `_`"
        ))
    }
}

/// Checks a bucket name: S3's rules (lowercase letters, digits, `.` and `-`, starting and
/// ending with a letter or digit), plus `_`, up to 63 characters. It is also the folder
/// name under `buckets/`.
pub fn validate_bucket(name: &str) -> Result<(), String> {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    let ok = (1..=63).contains(&name.len())
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '-' | '_'))
        && edge(name.chars().next())
        && edge(name.chars().last())
        && !name.contains("..");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a valid bucket name: use 1 to 63 lowercase letters, digits, `.`, `-` or `_`, \
             starting and ending with a letter or digit"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_follow_subject_rules() {
        assert!(validate_topic("orders.created", false).is_ok());
        assert!(validate_topic("orders.*", true).is_ok());
        assert!(validate_topic("orders.>", true).is_ok());
        assert!(validate_topic("orders.*", false).is_err());
        assert!(validate_topic("orders..created", false).is_err());
        assert!(validate_topic(".orders", false).is_err());
        assert!(validate_topic("orders created", false).is_err());
        assert!(validate_topic(">.orders", true).is_err());
        assert!(validate_topic("ord*rs", true).is_err());
        assert!(validate_topic("", true).is_err());
    }

    #[test]
    fn names_are_subject_tokens() {
        assert!(validate_name("thumbnail-v2_x").is_ok());
        assert!(validate_name("a.b").is_err());
        assert!(validate_name("").is_err());
        assert!(validate_name("has space").is_err());
    }

    #[test]
    fn bucket_names_follow_s3_rules() {
        assert!(validate_bucket("uploads").is_ok());
        assert!(validate_bucket("my-bucket.v2").is_ok());
        assert!(validate_bucket("Uploads").is_err());
        assert!(validate_bucket("..").is_err());
        assert!(validate_bucket("a/b").is_err());
        assert!(validate_bucket(".hidden").is_err());
        assert!(validate_bucket("").is_err());
    }

    #[test]
    fn toml_errors_name_the_key() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct T {
            #[serde(with = "humantime_serde")]
            timeout: std::time::Duration,
        }
        let text = "# comment\ntimeout = \"3 parsecs\"\n";
        let err = toml::from_str::<T>(text).err().map(|e| ConfigError::from_toml(Path::new("f.toml"), text, &e));
        let err = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("f.toml"), "{err}");
        assert!(err.contains("field `timeout`"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
}
