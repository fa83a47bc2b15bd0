//! API keys (`x-api-key`), as API Gateway's usage plans: named keys from `SLUICE_API_KEYS`
//! (`name:key,name:key`) or `[http] api_keys_file` (one `name:key` per line, `#` comments),
//! never from a trigger file. A route with `api_key = true` answers 401 without a key and
//! 403 with an unknown one, before anything else runs.
//!
//! Keys are compared by their SHA-256 digests in constant time, against every known key,
//! so the time taken says nothing about how much of a key was right or which key matched.

use std::path::Path;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest as _, Sha256};
use subtle::ConstantTimeEq as _;

use super::{error_response, RequestId};

pub const HEADER: &str = "x-api-key";

/// The name of the key a request presented (for throttling per key).
#[derive(Debug, Clone)]
pub struct KeyName(pub String);

/// The known keys, by name.
#[derive(Default)]
pub struct ApiKeys {
    keys: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("ApiKeys").field("names", &self.keys.iter().map(|(n, _)| n).collect::<Vec<_>>()).finish()
    }
}

impl ApiKeys {
    /// Reads the keys of `SLUICE_API_KEYS` (`env`) and of the keys file; an error says which
    /// entry is malformed, never the key.
    pub fn load(env: Option<&str>, file: Option<&Path>) -> Result<Self, String> {
        let mut keys = Self::default();
        if let Some(text) = env {
            for (i, entry) in text.split(',').map(str::trim).enumerate().filter(|(_, e)| !e.is_empty()) {
                keys.add(entry).map_err(|m| format!("SLUICE_API_KEYS, entry {}: {m}", i + 1))?;
            }
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the API keys file {}: {e}", path.display()))?;
            for (i, line) in text.lines().enumerate() {
                let line = line.trim();
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                keys.add(line).map_err(|m| format!("{} line {}: {m}", path.display(), i + 1))?;
            }
        }
        Ok(keys)
    }

    fn add(&mut self, entry: &str) -> Result<(), String> {
        let Some((name, key)) = entry.split_once(':') else {
            return Err("write name:key".to_owned());
        };
        let (name, key) = (name.trim(), key.trim());
        if name.is_empty() || key.is_empty() {
            return Err("write name:key, both non-empty".to_owned());
        }
        if self.keys.iter().any(|(n, _)| n == name) {
            return Err(format!("key name {name:?} given twice"));
        }
        self.keys.push((name.to_owned(), Sha256::digest(key.as_bytes()).into()));
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The name of the key `presented` is, if any.
    pub fn check(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (name, key) in &self.keys {
            if bool::from(key.ct_eq(&digest)) {
                found = Some(name.as_str());
            }
        }
        found
    }
}

/// The layer of routes with `api_key = true`.
pub async fn require(State(keys): State<Arc<ApiKeys>>, mut request: Request, next: Next) -> Response {
    let id = request.extensions().get::<RequestId>().cloned().unwrap_or_default();
    let Some(presented) = request.headers().get(HEADER) else {
        return error_response(StatusCode::UNAUTHORIZED, "Unauthorized: send an API key in the x-api-key header", &id.0);
    };
    let name = presented.to_str().ok().and_then(|p| keys.check(p)).map(str::to_owned);
    let Some(name) = name else {
        return error_response(StatusCode::FORBIDDEN, "Forbidden: the API key is not valid", &id.0);
    };
    request.extensions_mut().insert(KeyName(name));
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_load_from_env_and_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "# partners\npartner:p-secret\n\n").unwrap();
        let keys = ApiKeys::load(Some("alice:a-secret, bob:b-secret"), Some(&file)).unwrap();
        assert_eq!(keys.check("a-secret"), Some("alice"));
        assert_eq!(keys.check("b-secret"), Some("bob"));
        assert_eq!(keys.check("p-secret"), Some("partner"));
        assert_eq!(keys.check("a-secre"), None);
        assert_eq!(keys.check(""), None);
        assert!(!format!("{keys:?}").contains("secret"));
    }

    #[test]
    fn bad_entries_are_named_without_the_key() {
        let error = ApiKeys::load(Some("alice:x,nocolon-secret"), None).unwrap_err();
        assert!(error.contains("entry 2") && !error.contains("secret"), "{error}");
        assert!(ApiKeys::load(Some("a:x,a:y"), None).unwrap_err().contains("twice"));
        assert!(ApiKeys::load(None, Some(Path::new("/nonexistent/keys"))).unwrap_err().contains("/nonexistent/keys"));
    }
}
