//! Request validation: a route's `schema` (a JSON Schema file) checks the body before the
//! function runs or the event is stored; a body that does not match gets `400` with the
//! first violation.

use std::path::Path;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;

use super::{error_response, RequestId};

pub struct Schema {
    validator: jsonschema::Validator,
}

impl Schema {
    /// Reads and compiles the schema at `path`.
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read the schema {}: {e}", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text).map_err(|e| format!("the schema {} is not JSON: {e}", path.display()))?;
        let validator = jsonschema::validator_for(&value).map_err(|e| format!("the schema {} is not a valid JSON Schema: {e}", path.display()))?;
        Ok(Self { validator })
    }

    /// `Ok`, or what is wrong with `body`, naming where.
    pub fn check(&self, body: &[u8]) -> Result<(), String> {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("the body is not JSON: {e}"))?;
        let first = self.validator.iter_errors(&value).next().map(|error| {
            let at = error.instance_path().to_string();
            if at.is_empty() { error.to_string() } else { format!("{at}: {error}") }
        });
        first.map_or(Ok(()), Err)
    }
}

pub async fn validate(State(schema): State<Arc<Schema>>, request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    // The gateway has already read the body within its limit.
    let bytes = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    if let Err(problem) = schema.check(&bytes) {
        let id = parts.extensions.get::<RequestId>().cloned().unwrap_or_default();
        return error_response(StatusCode::BAD_REQUEST, &format!("Invalid request body: {problem}"), &id.0);
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_violation_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("order.json");
        std::fs::write(&path, r#"{"type": "object", "required": ["item"], "properties": {"qty": {"type": "integer", "minimum": 1}}}"#).unwrap();
        let schema = Schema::load(&path).unwrap();
        assert!(schema.check(br#"{"item": "x", "qty": 2}"#).is_ok());
        assert!(schema.check(br#"{"qty": 2}"#).unwrap_err().contains("item"));
        assert!(schema.check(br#"{"item": "x", "qty": 0}"#).unwrap_err().starts_with("/qty"));
        assert!(schema.check(b"nope").unwrap_err().contains("not JSON"));
        std::fs::write(&path, r#"{"type": 5}"#).unwrap();
        assert!(Schema::load(&path).is_err());
    }
}
