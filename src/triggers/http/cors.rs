//! CORS per route (tower-http's `CorsLayer`): the gateway answers preflights itself, as API
//! Gateway does, and adds the `Access-Control-*` headers to the route's responses.

use axum::http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowHeaders, AllowMethods, AllowOrigin, CorsLayer};

use super::config::Cors;

/// The layer for a route answering `method` (`None`: ANY).
pub fn layer(cors: &Cors, method: Option<&str>) -> CorsLayer {
    let origins = if cors.origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(cors.origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    let methods = match (&cors.methods, method) {
        (Some(methods), _) => AllowMethods::list(methods.iter().filter_map(|m| m.parse::<Method>().ok())),
        (None, Some(method)) => AllowMethods::list(method.parse::<Method>().ok()),
        (None, None) => AllowMethods::mirror_request(),
    };
    let headers = match &cors.headers {
        Some(headers) => AllowHeaders::list(headers.iter().filter_map(|h| h.parse::<HeaderName>().ok())),
        None => AllowHeaders::mirror_request(),
    };
    let mut layer = CorsLayer::new()
        .allow_origin(origins)
        .allow_methods(methods)
        .allow_headers(headers)
        .expose_headers(cors.expose_headers.iter().filter_map(|h| h.parse::<HeaderName>().ok()).collect::<Vec<_>>())
        .allow_credentials(cors.allow_credentials);
    if let Some(max_age) = cors.max_age {
        layer = layer.max_age(max_age);
    }
    layer
}
