//! Response caching per route (`cache_ttl`), as API Gateway's stage cache: successful
//! (2xx) answers to GET and HEAD are kept for the TTL, keyed by method, path, query string
//! and the route's `cache_headers`. Every cacheable response says `x-sluice-cache: hit` or
//! `miss`. The cache sits behind the API key and throttling layers, so a cached answer is
//! only ever served to a caller who may call the route.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;

pub const HEADER: &str = "x-sluice-cache";
/// Bytes of cached bodies one route keeps at most.
const CAPACITY_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
struct Cached {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

pub struct ResponseCache {
    entries: moka::sync::Cache<String, Cached>,
    headers: Vec<HeaderName>,
}

impl ResponseCache {
    pub fn new(ttl: Duration, headers: &[String]) -> Self {
        let entries = moka::sync::Cache::builder()
            .time_to_live(ttl)
            .max_capacity(CAPACITY_BYTES)
            .weigher(|key: &String, value: &Cached| u32::try_from(key.len() + value.body.len()).unwrap_or(u32::MAX))
            .build();
        Self { entries, headers: headers.iter().filter_map(|h| h.to_ascii_lowercase().parse().ok()).collect() }
    }

    fn key(&self, request: &Request) -> String {
        let mut key = format!("{} {}", request.method(), request.uri().path());
        key.push('?');
        key.push_str(request.uri().query().unwrap_or_default());
        for name in &self.headers {
            key.push('\n');
            key.push_str(name.as_str());
            key.push(':');
            for value in request.headers().get_all(name) {
                key.push_str(&String::from_utf8_lossy(value.as_bytes()));
                key.push(',');
            }
        }
        key
    }
}

pub async fn cached(State(cache): State<Arc<ResponseCache>>, request: Request, next: Next) -> Response {
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return next.run(request).await;
    }
    let key = cache.key(&request);
    if let Some(hit) = cache.entries.get(&key) {
        let mut response = Response::new(Body::from(hit.body));
        *response.status_mut() = hit.status;
        *response.headers_mut() = hit.headers;
        response.headers_mut().insert(HEADER, HeaderValue::from_static("hit"));
        return response;
    }
    let response = next.run(request).await;
    if !response.status().is_success() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let body = match axum::body::to_bytes(body, usize::MAX).await {
        Ok(body) => body,
        Err(_) => return error_body(parts),
    };
    cache.entries.insert(key, Cached { status: parts.status, headers: parts.headers.clone(), body: body.clone() });
    parts.headers.insert(HEADER, HeaderValue::from_static("miss"));
    Response::from_parts(parts, Body::from(body))
}

fn error_body(mut parts: axum::http::response::Parts) -> Response {
    parts.status = StatusCode::BAD_GATEWAY;
    Response::from_parts(parts, Body::empty())
}
