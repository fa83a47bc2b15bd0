//! `kind = "http"`: routes in API Gateway's route-key syntax, each to a function
//! (synchronous) or a topic (asynchronous, `202 Accepted`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::triggers::Target;

/// One `triggers/<name>.toml` of kind `http`. Settings beside `routes` are defaults for
/// every route of the file; a route's own setting wins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    pub kind: String,
    /// Routes by route key: `"GET /users/{id}"`, `"ANY /files/{proxy+}"`, `"$default"`.
    pub routes: BTreeMap<String, RouteConfig>,
    /// Require an `x-api-key` header on every route.
    #[serde(default)]
    pub api_key: Option<bool>,
    /// Usage plan of every route.
    #[serde(default)]
    pub throttle: Option<Throttle>,
    /// CORS of every route.
    #[serde(default)]
    pub cors: Option<Cors>,
    /// Response caching of every route.
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    /// Request headers that are part of the cache key besides method, path and query.
    #[serde(default)]
    pub cache_headers: Option<Vec<String>>,
}

/// `[routes."METHOD /path"]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Call this function and answer with its response (synchronous).
    #[serde(default)]
    pub function: Option<String>,
    /// Publish the request as an event to this topic and answer `202 Accepted` with its id.
    #[serde(default)]
    pub topic: Option<String>,
    /// Require an `x-api-key` header (keys from `SLUICE_API_KEYS` or `[http] api_keys_file`).
    #[serde(default)]
    pub api_key: Option<bool>,
    /// Requests per second (`rate`) and burst, per API key (per client address without keys).
    #[serde(default)]
    pub throttle: Option<Throttle>,
    /// JSON Schema file (relative to the project folder) the request body must match.
    #[serde(default)]
    pub schema: Option<PathBuf>,
    /// Cache successful GET and HEAD responses this long ("30s").
    #[serde(default, with = "humantime_serde")]
    pub cache_ttl: Option<Duration>,
    /// Request headers that are part of the cache key besides method, path and query.
    #[serde(default)]
    pub cache_headers: Option<Vec<String>>,
    /// Cross-origin requests: the gateway answers preflights and adds the headers.
    #[serde(default)]
    pub cors: Option<Cors>,
}

/// `throttle = { rate = 50, burst = 10 }`: a token bucket refilled at `rate` tokens a
/// second holding at most `burst`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// Requests per second (may be below 1: 0.5 is one request every 2 s).
    pub rate: f64,
    /// Requests allowed at once above the rate. Default: `rate` rounded up, at least 1.
    #[serde(default)]
    pub burst: Option<u32>,
}

impl Throttle {
    pub fn burst(&self) -> u32 {
        self.burst.unwrap_or_else(|| {
            // In range: rate was checked to be at most MAX_RATE.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            let rate = self.rate.ceil() as u32;
            rate.max(1)
        })
    }
}

/// The highest `rate` accepted.
const MAX_RATE: f64 = 1_000_000.0;

/// `cors = { origins = ["https://example.com"] }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// Allowed origins; `["*"]` allows any.
    pub origins: Vec<String>,
    /// Allowed methods. Default: the route's method (every method for `ANY`).
    #[serde(default)]
    pub methods: Option<Vec<String>>,
    /// Allowed request headers. Default: whatever the preflight asks for.
    #[serde(default)]
    pub headers: Option<Vec<String>>,
    /// Response headers the browser may read.
    #[serde(default)]
    pub expose_headers: Vec<String>,
    /// How long a browser may cache the preflight answer. Default 0 (not cached).
    #[serde(default, with = "humantime_serde")]
    pub max_age: Option<Duration>,
    /// Allow cookies and credentials (not with `origins = ["*"]`).
    #[serde(default)]
    pub allow_credentials: bool,
}

/// A parsed route key.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RouteKey {
    /// `$default`: requests no other route matches.
    Default,
    /// `METHOD /path`; method `ANY` is `None`.
    Route { method: Option<String>, path: String },
}

/// Methods a route key may name.
const METHODS: &[&str] = &["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "ANY"];

impl RouteKey {
    /// Parses `"GET /users/{id}"`, `"ANY /files/{proxy+}"` or `"$default"`.
    pub fn parse(key: &str) -> Result<Self, String> {
        if key == "$default" {
            return Ok(RouteKey::Default);
        }
        let Some((method, path)) = key.split_once(' ') else {
            return Err(format!("{key:?} is not a route key: write \"METHOD /path\" (\"GET /users/{{id}}\") or \"$default\""));
        };
        if !METHODS.contains(&method) {
            return Err(format!("unknown method {method:?} in {key:?}; use one of {}", METHODS.join(", ")));
        }
        if !path.starts_with('/') {
            return Err(format!("the path of {key:?} must start with /"));
        }
        let segments: Vec<&str> = path[1..].split('/').collect();
        for (i, segment) in segments.iter().enumerate() {
            if segment.is_empty() && !(i == segments.len() - 1 && segments.len() == 1) {
                return Err(format!("the path of {key:?} has an empty segment"));
            }
            if let Some(inner) = segment.strip_prefix('{') {
                let Some(name) = inner.strip_suffix('}') else {
                    return Err(format!("segment {segment:?} of {key:?}: a parameter is a whole segment, {{name}} or {{name+}}"));
                };
                let (name, greedy) = match name.strip_suffix('+') {
                    Some(name) => (name, true),
                    None => (name, false),
                };
                if greedy && i != segments.len() - 1 {
                    return Err(format!("{{{name}+}} in {key:?} must be the last segment"));
                }
                if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                    return Err(format!("parameter {segment:?} of {key:?}: use letters, digits, - and _"));
                }
            } else if segment.contains(['{', '}', '*']) {
                return Err(format!("segment {segment:?} of {key:?}: a parameter is a whole segment, {{name}} or {{name+}}"));
            }
        }
        let method = (method != "ANY").then(|| method.to_owned());
        Ok(RouteKey::Route { method, path: path.to_owned() })
    }

    /// The path in the router's syntax: `{name+}` becomes a catch-all `{*name}`.
    pub fn router_path(path: &str) -> String {
        path.split('/')
            .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix("+}")) {
                Some(name) => format!("{{*{name}}}"),
                None => segment.to_owned(),
            })
            .collect::<Vec<_>>()
            .join("/")
    }

    /// The path with parameter names erased: two routes with the same shape conflict.
    pub fn shape(path: &str) -> String {
        path.split('/')
            .map(|segment| match segment.strip_prefix('{') {
                Some(rest) if rest.ends_with("+}") => "{+}",
                Some(_) => "{}",
                None => segment,
            })
            .collect::<Vec<_>>()
            .join("/")
    }
}

impl HttpConfig {
    /// The effective settings of each route: the route's own, else the file's.
    pub fn route(&self, route: &RouteConfig) -> RouteConfig {
        RouteConfig {
            function: route.function.clone(),
            topic: route.topic.clone(),
            api_key: route.api_key.or(self.api_key),
            throttle: route.throttle.or(self.throttle),
            schema: route.schema.clone(),
            cache_ttl: route.cache_ttl.or(self.cache_ttl),
            cache_headers: route.cache_headers.clone().or_else(|| self.cache_headers.clone()),
            cors: route.cors.clone().or_else(|| self.cors.clone()),
        }
    }

    pub fn check(&self) -> Result<(), (String, String)> {
        if self.routes.is_empty() {
            return Err(("routes".to_owned(), "no routes: add [routes.\"GET /path\"] with a function or a topic".to_owned()));
        }
        let check_throttle = |field: String, throttle: &Option<Throttle>| -> Result<(), (String, String)> {
            if let Some(t) = throttle {
                if !(t.rate > 0.0 && t.rate <= MAX_RATE) {
                    return Err((format!("{field}.rate"), format!("{} is not a rate: give requests per second, above 0 and at most {MAX_RATE}", t.rate)));
                }
                if t.burst == Some(0) {
                    return Err((format!("{field}.burst"), "must be at least 1".to_owned()));
                }
            }
            Ok(())
        };
        check_throttle("throttle".to_owned(), &self.throttle)?;
        check_cors("cors", self.cors.as_ref())?;
        for (key, route) in &self.routes {
            let field = format!("routes.{key:?}");
            RouteKey::parse(key).map_err(|m| (field.clone(), m))?;
            crate::triggers::check_target(&route.topic, &route.function).map_err(|(f, m)| (format!("{field}.{f}"), m))?;
            check_throttle(format!("{field}.throttle"), &route.throttle)?;
            check_cors(&format!("{field}.cors"), route.cors.as_ref())?;
            if route.cache_ttl.is_some() && route.topic.is_some() {
                return Err((format!("{field}.cache_ttl"), "only a function's responses are cached; a topic route answers 202".to_owned()));
            }
        }
        Ok(())
    }

    pub fn targets(&self) -> Vec<Target> {
        self.routes.values().map(|r| crate::triggers::target_of(&r.topic, &r.function)).collect()
    }
}

fn check_cors(field: &str, cors: Option<&Cors>) -> Result<(), (String, String)> {
    let Some(cors) = cors else { return Ok(()) };
    if cors.origins.is_empty() {
        return Err((format!("{field}.origins"), "empty: list the allowed origins, or [\"*\"] for any".to_owned()));
    }
    let any = cors.origins.iter().any(|o| o == "*");
    if any && cors.origins.len() > 1 {
        return Err((format!("{field}.origins"), "\"*\" allows every origin: give it alone".to_owned()));
    }
    if any && cors.allow_credentials {
        return Err((format!("{field}.allow_credentials"), "browsers refuse credentials with any origin: list the origins instead of \"*\"".to_owned()));
    }
    for origin in cors.origins.iter().filter(|o| *o != "*") {
        if origin.parse::<axum::http::HeaderValue>().is_err() || !(origin.starts_with("http://") || origin.starts_with("https://")) {
            return Err((format!("{field}.origins"), format!("{origin:?} is not an origin: write scheme://host[:port], e.g. \"https://example.com\"")));
        }
    }
    for method in cors.methods.iter().flatten() {
        if method.parse::<axum::http::Method>().is_err() {
            return Err((format!("{field}.methods"), format!("{method:?} is not an HTTP method")));
        }
    }
    for header in cors.headers.iter().flatten().chain(&cors.expose_headers) {
        if header.parse::<axum::http::HeaderName>().is_err() {
            return Err((format!("{field}.headers"), format!("{header:?} is not a header name")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_keys_parse_like_api_gateway() {
        assert_eq!(RouteKey::parse("$default"), Ok(RouteKey::Default));
        assert_eq!(RouteKey::parse("GET /users/{id}"), Ok(RouteKey::Route { method: Some("GET".into()), path: "/users/{id}".into() }));
        assert_eq!(RouteKey::parse("ANY /files/{proxy+}"), Ok(RouteKey::Route { method: None, path: "/files/{proxy+}".into() }));
        assert_eq!(RouteKey::parse("GET /"), Ok(RouteKey::Route { method: Some("GET".into()), path: "/".into() }));
        for bad in ["GET", "FETCH /x", "GET x", "GET /a//b", "GET /{a+}/b", "GET /a{b}", "GET /{}", "GET /a*"] {
            assert!(RouteKey::parse(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn router_paths_and_shapes() {
        assert_eq!(RouteKey::router_path("/files/{proxy+}"), "/files/{*proxy}");
        assert_eq!(RouteKey::router_path("/users/{id}"), "/users/{id}");
        assert_eq!(RouteKey::shape("/users/{id}/x"), RouteKey::shape("/users/{name}/x"));
        assert_ne!(RouteKey::shape("/users/{id}"), RouteKey::shape("/users/{id+}"));
    }

    #[test]
    fn route_settings_fall_back_to_the_file() {
        let config: HttpConfig = toml::from_str(
            "kind = \"http\"\napi_key = true\nthrottle = { rate = 5 }\n[routes.\"GET /a\"]\nfunction = \"f\"\n[routes.\"GET /b\"]\nfunction = \"f\"\napi_key = false\n",
        )
        .unwrap();
        config.check().unwrap();
        let a = config.route(&config.routes["GET /a"]);
        let b = config.route(&config.routes["GET /b"]);
        assert_eq!((a.api_key, b.api_key), (Some(true), Some(false)));
        assert_eq!(a.throttle.map(|t| t.burst()), Some(5));
    }

    #[test]
    fn bad_settings_name_the_field() {
        let check = |text: &str| toml::from_str::<HttpConfig>(text).unwrap().check().unwrap_err().0;
        assert_eq!(check("kind = \"http\"\n[routes]\n"), "routes");
        assert_eq!(check("kind = \"http\"\n[routes.\"GET x\"]\nfunction = \"f\"\n"), "routes.\"GET x\"");
        assert_eq!(check("kind = \"http\"\n[routes.\"GET /x\"]\n"), "routes.\"GET /x\".topic");
        assert_eq!(check("kind = \"http\"\n[routes.\"GET /x\"]\nfunction = \"f\"\nthrottle = { rate = 0 }\n"), "routes.\"GET /x\".throttle.rate");
        assert_eq!(check("kind = \"http\"\n[routes.\"GET /x\"]\nfunction = \"f\"\ncors = { origins = [\"*\"], allow_credentials = true }\n"), "routes.\"GET /x\".cors.allow_credentials");
        assert_eq!(check("kind = \"http\"\n[routes.\"POST /x\"]\ntopic = \"t\"\ncache_ttl = \"1s\"\n"), "routes.\"POST /x\".cache_ttl");
    }
}
