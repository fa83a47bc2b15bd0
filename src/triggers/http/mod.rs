//! The `http` trigger: API Gateway in front of functions, and the Lambda Invoke API.
//!
//! Every `http` trigger of a project shares one listener, the gateway, that `sluice up` runs
//! (`[http] listen`, `--http`, `SLUICE_HTTP_LISTEN`). A route to a function is synchronous:
//! the request becomes an API Gateway format 2.0 event, goes to one of the function's
//! workers on any node over NATS request/reply (`sluice.invoke.<function>`), and the answer
//! comes back as API Gateway maps it; like Lambda's RequestResponse invocations it is not
//! retried and not dead-lettered (function error 502, timeout 504, no worker 503). A route to a
//! topic is asynchronous: the event is stored in JetStream before `202 Accepted` is sent, and
//! then has retries and the DLQ like every event.
//!
//! API Gateway's own features are tower layers, each in its own file and stacked in one
//! place ([`route_service`]): CORS, API keys, throttling, the response cache, schema
//! validation. The body limit and the request id apply to every request.

pub mod apigw;
pub mod cache;
pub mod config;
pub mod cors;
pub mod invoke_api;
pub mod keys;
pub mod routes;
pub mod schema;
pub mod throttle;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::serve::ListenerExt as _;
use axum::Router;
use chrono::Utc;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;
use tracing::{debug, info, warn};

pub use self::config::HttpConfig;
use self::routes::{Found, Route, RouteTable};
use crate::bus::Bus;
use crate::config::{ConfigError, HttpSettings, Project};
use crate::dispatch::sync::{self, CallError};
use crate::event::Event;
use crate::triggers::{Target, TriggerDef};

/// The header every response carries with the request's id (API Gateway's name).
pub const REQUEST_ID_HEADER: &str = "apigw-requestid";
/// `ce-source` of events made from requests: `sluice:http:<trigger>`.
pub const SOURCE_PREFIX: &str = "sluice:http:";
/// `ce-type` of events made from requests.
pub const EVENT_TYPE: &str = "sluice.http.request";
/// Where the listener serves Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Extra time a request waits beyond the function's timeout for the reply to travel.
const REPLY_MARGIN: Duration = Duration::from_secs(2);

impl crate::triggers::TriggerSpec for HttpConfig {
    fn check(&self) -> Result<(), (String, String)> {
        HttpConfig::check(self)
    }

    fn source(&self) -> String {
        let keys: Vec<&str> = self.routes.keys().map(String::as_str).collect();
        keys.join(", ")
    }

    fn targets(&self) -> Vec<Target> {
        HttpConfig::targets(self)
    }

    fn required_functions(&self) -> Vec<String> {
        // A route may reach a function served by other nodes only; an unknown name is
        // reported when `sluice up` starts and answered 503 while no node serves it.
        Vec::new()
    }

    fn build(&self, _name: &str, _project: &Project) -> anyhow::Result<Option<Box<dyn crate::triggers::Trigger>>> {
        Ok(None)
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

/// The id of a request, set by the outermost layer.
#[derive(Debug, Clone, Default)]
pub struct RequestId(pub String);

/// The route a request matched and its path parameters.
#[derive(Debug, Clone)]
struct Matched(Found);

/// A JSON error in API Gateway's shape, naming the request.
pub fn error_response(status: StatusCode, message: &str, request_id: &str) -> Response {
    let body = serde_json::json!({ "message": message, "requestId": request_id });
    (status, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

/// What the gateway needs to reach functions and topics.
struct Backend {
    bus: Bus,
    /// The functions this process serves: called here while they have a free slot.
    local: sync::Local,
    /// Timeouts of the functions this node knows.
    timeouts: HashMap<String, Duration>,
    settings: HttpSettings,
}

impl Backend {
    /// How long to wait for `function`'s reply.
    fn wait(&self, function: &str) -> Duration {
        self.timeouts.get(function).map_or(self.settings.timeout, |t| *t + REPLY_MARGIN)
    }
}

struct Shared {
    backend: Arc<Backend>,
    /// `/metrics`: the recorder, and what to read gauges of at scrape time.
    metrics: Option<Scraped>,
    table: RouteTable,
    /// One service per route of `table`, with the route's layers.
    services: Vec<Router>,
}

struct Scraped {
    handle: metrics_exporter_prometheus::PrometheusHandle,
    functions: Vec<String>,
    triggers: Vec<TriggerDef>,
}

/// A bound listener with its routes, ready to serve.
pub struct Gateway {
    listener: tokio::net::TcpListener,
    app: Router,
    pub addr: SocketAddr,
    pub routes: usize,
    /// The `http` triggers served, with how many routes each has.
    triggers: Vec<(String, usize)>,
    bus: Bus,
    local: sync::Local,
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

/// A project's routes as one router, with what it serves.
struct App {
    router: Router,
    routes: usize,
    triggers: Vec<(String, usize)>,
}

impl Gateway {
    /// Builds the route table and every route's layers from the project's `http` triggers and
    /// binds `listen`. A bad route, schema or key file is a [`ConfigError`]; an address that
    /// cannot be bound says so and how to choose another. Functions are called in this
    /// process while `local` serves them with a free slot, else through NATS. With `metrics`
    /// it also serves `/metrics` (Prometheus text format).
    pub async fn bind(listen: &str, project: &Project, bus: Bus, local: sync::Local, metrics: Option<metrics_exporter_prometheus::PrometheusHandle>) -> anyhow::Result<Self> {
        let app = build_app(project, &bus, &local, metrics.clone())?;
        let addr: SocketAddr = listen
            .parse()
            .map_err(|_| crate::error::UsageError::new(format!("{listen:?} is not an address to listen on: write IP:PORT (\"127.0.0.1:8080\"), or \"off\"")))?;
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
            crate::error::UsageError::new(format!(
                "cannot listen for HTTP on {addr}: {e}; choose another address with --http, SLUICE_HTTP_LISTEN or [http] listen in sluice.toml (\"off\" for none)"
            ))
        })?;
        let addr = listener.local_addr().context("reading the HTTP listener's address")?;
        Ok(Self { listener, app: app.router, addr, routes: app.routes, triggers: app.triggers, bus, local, metrics })
    }

    /// Serves until `shutdown`, then stops accepting connections and finishes the requests
    /// in progress. Each project sent on `updates` (functions and triggers deployed anew)
    /// replaces the routes; requests in progress finish on the routes they started on, and
    /// a project whose routes are invalid is refused (logged) while the old routes stay.
    pub async fn serve(self, shutdown: CancellationToken, mut updates: tokio::sync::watch::Receiver<Arc<Project>>) {
        // Each http trigger is healthy while the listener serves its routes (`triggers list`).
        let mut health = Vec::with_capacity(self.triggers.len());
        for (name, routes) in &self.triggers {
            let mut report = super::health::Health::new(name, &self.bus).await;
            report.set(super::health::Status::Healthy, format!("{routes} route(s) on http://{}", self.addr)).await;
            health.push(report);
        }
        let listener = self.listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                debug!(%error, "Cannot set TCP_NODELAY on an HTTP connection.");
            }
        });
        let current = Arc::new(std::sync::RwLock::new(self.app));
        updates.mark_unchanged();
        let reload = {
            let (current, bus, local, metrics, addr, shutdown) = (current.clone(), self.bus.clone(), self.local.clone(), self.metrics.clone(), self.addr, shutdown.clone());
            tokio::spawn(async move {
                let mut health: Vec<super::health::Health> = Vec::new();
                loop {
                    tokio::select! {
                        changed = updates.changed() => if changed.is_err() { return },
                        () = shutdown.cancelled() => return,
                    }
                    let project = updates.borrow_and_update().clone();
                    match build_app(&project, &bus, &local, metrics.clone()) {
                        Ok(app) => {
                            *current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = app.router;
                            info!(routes = app.routes, "HTTP routes updated.");
                            health.clear();
                            for (name, routes) in &app.triggers {
                                let mut report = super::health::Health::new(name, &bus).await;
                                report.set(super::health::Status::Healthy, format!("{routes} route(s) on http://{addr}")).await;
                                health.push(report);
                            }
                        }
                        Err(error) => warn!(error = %format!("{error:#}"), "The deployed HTTP routes are invalid; the previous routes stay."),
                    }
                }
            })
        };
        let app = Router::new().fallback_service(tower::service_fn(move |request: Request| {
            let router = current.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
            router.oneshot(request)
        }));
        let app = app.into_make_service_with_connect_info::<SocketAddr>();
        if let Err(error) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
            warn!(%error, "The HTTP listener stopped.");
        }
        reload.abort();
        for report in &mut health {
            report.set(super::health::Status::Stopped, String::new()).await;
        }
        info!(addr = %self.addr, "HTTP listener stopped; open requests were answered.");
    }
}

/// The router of a project's `http` triggers, with the Invoke API and `/metrics`.
fn build_app(project: &Project, bus: &Bus, local: &sync::Local, metrics: Option<metrics_exporter_prometheus::PrometheusHandle>) -> anyhow::Result<App> {
    let settings = project.settings.http.clone();
    let http: Vec<(&TriggerDef, &HttpConfig)> = project.triggers.iter().filter_map(|d| d.config.get::<HttpConfig>().map(|c| (d, c))).collect();
    let table = RouteTable::build(&http)?;
    let keys_file = settings.api_keys_file.as_ref().map(|f| project.dir.join(f));
    let env_keys = std::env::var("SLUICE_API_KEYS").ok();
    let keys = keys::ApiKeys::load(env_keys.as_deref(), keys_file.as_deref()).map_err(|m| {
        let sluice_toml = project.dir.join("sluice.toml");
        ConfigError::new(&sluice_toml, Some("http.api_keys_file"), m)
    })?;
    let keys = Arc::new(keys);
    for route in &table.routes {
        if let Target::Function(function) = &route.target {
            if project.function(function).is_none() {
                warn!(trigger = %route.trigger, route = %route.key, function = %function, "The route's function is not in this project; requests are answered by whichever node serves it (503 while none does).");
            }
        }
    }
    let timeouts = project.functions.iter().map(|f| (f.config.name.clone(), f.config.timeout)).collect();
    let backend = Arc::new(Backend { bus: bus.clone(), local: local.clone(), timeouts, settings: settings.clone() });
    let mut services = Vec::with_capacity(table.routes.len());
    for route in &table.routes {
        services.push(route_service(route, &backend, &keys, project)?);
    }
    let metrics = metrics.map(|handle| Scraped {
        handle,
        functions: project.functions.iter().map(|f| f.config.name.clone()).collect(),
        triggers: project.triggers.clone(),
    });
    let routes = table.routes.len();
    let shared = Arc::new(Shared { backend, metrics, table, services });
    let mut app = Router::new();
    if settings.invoke_api {
        app = app.route(invoke_api::PATH, axum::routing::post(invoke_api::invoke));
    }
    if shared.metrics.is_some() {
        app = app.route(METRICS_PATH, axum::routing::get(metrics_text));
    }
    let router = app.fallback(route_request).with_state(shared).layer(middleware::from_fn(request_id));
    let triggers = http.iter().map(|(def, config)| (def.name.clone(), config.routes.len())).collect();
    Ok(App { router, routes, triggers })
}

/// One route's service: its target behind API Gateway's features. The order is API
/// Gateway's: CORS (preflights are answered before keys are asked for), API key,
/// throttling, cache (only callers who passed both are served from it), validation.
fn route_service(route: &Route, backend: &Arc<Backend>, keys: &Arc<keys::ApiKeys>, project: &Project) -> Result<Router, ConfigError> {
    let field = |name: &str| format!("routes.{:?}.{name}", route.key);
    let settings = &route.settings;
    let state = Arc::new(RouteState { backend: backend.clone(), route: route.clone() });
    let mut service = Router::new().fallback(target).with_state(state);
    if let Some(path) = &settings.schema {
        let schema = schema::Schema::load(&project.dir.join(path)).map_err(|m| ConfigError::new(&route.file, Some(&field("schema")), m))?;
        service = service.layer(middleware::from_fn_with_state(Arc::new(schema), schema::validate));
    }
    if let Some(ttl) = settings.cache_ttl {
        let cache = cache::ResponseCache::new(ttl, settings.cache_headers.as_deref().unwrap_or_default());
        service = service.layer(middleware::from_fn_with_state(Arc::new(cache), cache::cached));
    }
    if let Some(throttle) = settings.throttle {
        service = service.layer(middleware::from_fn_with_state(Arc::new(throttle::Limiter::new(throttle)), throttle::limit));
    }
    if settings.api_key == Some(true) {
        if keys.is_empty() {
            return Err(ConfigError::new(
                &route.file,
                Some(&field("api_key")),
                "the route requires an API key but none is configured: set SLUICE_API_KEYS=name:key or [http] api_keys_file in sluice.toml",
            ));
        }
        service = service.layer(middleware::from_fn_with_state(keys.clone(), keys::require));
    }
    if let Some(cors) = &settings.cors {
        let method = match config::RouteKey::parse(&route.key) {
            Ok(config::RouteKey::Route { method, .. }) => method,
            _ => None,
        };
        service = service.layer(cors::layer(cors, method.as_deref()));
    }
    Ok(service)
}

/// The outermost layer: gives the request its id and puts it on the response.
async fn request_id(mut request: Request, next: Next) -> Response {
    let id = crate::event::uuid_text(uuid::Uuid::new_v4());
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).await;
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// `GET /metrics`.
async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    let Some(scraped) = &shared.metrics else { return StatusCode::NOT_FOUND.into_response() };
    let text = crate::telemetry::metrics::scrape(&scraped.handle, &shared.backend.bus, &scraped.functions, &scraped.triggers).await;
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
}

/// Every request that is not for the Invoke API or `/metrics`: finds its route, reads its
/// body within the limit and hands it to the route's service; counts the answer by route.
async fn route_request(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let started = std::time::Instant::now();
    let (route, response) = route_to_service(&shared, request).await;
    crate::telemetry::metrics::http_request(route.unwrap_or("none"), response.status().as_u16(), started.elapsed());
    response
}

async fn route_to_service(shared: &Shared, request: Request) -> (Option<&str>, Response) {
    let id = request.extensions().get::<RequestId>().cloned().unwrap_or_default();
    let path = request.uri().path().to_owned();
    let preflight = request.method() == Method::OPTIONS
        && request.headers().contains_key(header::ORIGIN)
        && request.headers().contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
    let found = if preflight {
        let requested = request.headers().get(header::ACCESS_CONTROL_REQUEST_METHOD).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
        shared.table.find_preflight(&requested, &path).or_else(|| shared.table.find(request.method().as_str(), &path))
    } else {
        shared.table.find(request.method().as_str(), &path)
    };
    let Some(found) = found else {
        return (None, error_response(StatusCode::NOT_FOUND, "Not Found", &id.0));
    };
    let route = Some(shared.table.routes[found.route].key.as_str());
    let request = match read_body(request, shared.backend.settings.max_body_bytes).await {
        Ok(request) => request,
        Err(response) => return (route, response),
    };
    let service = shared.services[found.route].clone();
    let mut request = request;
    request.extensions_mut().insert(Matched(found));
    match service.oneshot(request).await {
        Ok(response) => (route, response),
        Err(never) => match never {},
    }
}

/// The request with its body read into memory; 413 when it is over `limit`.
///
/// A body over the limit is still read to its end (and dropped) when it is at most
/// [`DRAIN_CAP`], so that a client that sends the whole body before reading the answer gets
/// the 413 rather than a broken connection; a larger one is cut off.
pub(crate) async fn read_body(request: Request, limit: usize) -> Result<Request, Response> {
    use futures::StreamExt as _;
    let id = request.extensions().get::<RequestId>().cloned().unwrap_or_default();
    let too_large = || error_response(StatusCode::PAYLOAD_TOO_LARGE, &format!("Request Entity Too Large: the body may hold at most {limit} bytes"), &id.0);
    let declared = request.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_CAP.max(limit)) {
        return Err(too_large());
    }
    let (parts, body) = request.into_parts();
    let mut frames = body.into_data_stream();
    let mut bytes = bytes::BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
    let mut seen = 0usize;
    while let Some(frame) = frames.next().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(error) => return Err(error_response(StatusCode::BAD_REQUEST, &format!("Cannot read the request body: {error}"), &id.0)),
        };
        seen += frame.len();
        if seen > DRAIN_CAP.max(limit) {
            return Err(too_large());
        }
        if seen <= limit {
            bytes.extend_from_slice(&frame);
        }
    }
    if seen > limit {
        return Err(too_large());
    }
    Ok(Request::from_parts(parts, Body::from(bytes.freeze())))
}

/// The most of an over-limit body the gateway reads (and drops) before answering 413.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

struct RouteState {
    backend: Arc<Backend>,
    route: Route,
}

/// The end of a route: the request as an API Gateway event, to its function or topic.
async fn target(State(state): State<Arc<RouteState>>, request: Request) -> Response {
    let id = request.extensions().get::<RequestId>().cloned().unwrap_or_default().0;
    let params = request.extensions().get::<Matched>().map(|m| m.0.params.clone()).unwrap_or_default();
    let client = request.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "127.0.0.1".to_owned(), |c| c.0.ip().to_string());
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let route = &state.route;
    let data = apigw::event(&apigw::Request {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        body: &body,
        route_key: &route.key,
        path_parameters: &params,
        request_id: &id,
        source_ip: client,
        api_id: &route.trigger,
        time: Utc::now(),
    });
    let mut event = Event::new(format!("{SOURCE_PREFIX}{}", route.trigger), EVENT_TYPE, data);
    event.id = id.clone();
    event.subject = Some(route.key.clone());
    if let Some(parent) = parts.headers.get("traceparent").and_then(|v| v.to_str().ok()).filter(|t| crate::event::valid_traceparent(t)) {
        event.traceparent = parent.to_owned();
    }
    let backend = &state.backend;
    match &route.target {
        Target::Topic(topic) => match backend.bus.publish_event(crate::bus::topic_subject(topic), &event).await {
            Ok(_) => {
                let body = serde_json::json!({ "eventId": event.id, "requestId": id });
                (StatusCode::ACCEPTED, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
            }
            Err(error) => {
                warn!(trigger = %route.trigger, route = %route.key, request_id = %id, error = %format!("{error:#}"), "Cannot store a request's event.");
                error_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable: the event could not be stored; send it again", &id)
            }
        },
        Target::Function(function) => {
            let reply = sync::call(&backend.bus, &backend.local, function, &id, event, backend.wait(function)).await;
            function_response(function, &id, reply)
        }
    }
}

/// The HTTP answer to a synchronous call: the function's response, or the error status.
fn function_response(function: &str, id: &str, reply: Result<sync::Reply, CallError>) -> Response {
    match reply {
        Ok(reply) if reply.succeeded() => match apigw::response(&reply.body) {
            Ok(response) => response,
            Err(problem) => {
                warn!(function = %function, request_id = %id, problem = %problem, "The function's answer is not an HTTP response.");
                error_response(StatusCode::BAD_GATEWAY, "Bad Gateway: the function's answer is not a valid response", id)
            }
        },
        Ok(reply) => match reply.outcome.as_str() {
            "timeout" => error_response(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout: the function ran past its timeout", id),
            sync::THROTTLED => error_response(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests: the function is running at its concurrency", id),
            _ => error_response(StatusCode::BAD_GATEWAY, "Internal Server Error: the function failed", id),
        },
        Err(CallError::NoWorker(_)) => error_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable: no worker serves the function", id),
        Err(CallError::TimedOut { .. }) => error_response(StatusCode::GATEWAY_TIMEOUT, "Gateway Timeout: the function did not answer in time", id),
        Err(CallError::Payload(crate::bus::payload::PayloadError::TooLarge { .. })) => {
            error_response(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large", id)
        }
        Err(error) => {
            warn!(function = %function, request_id = %id, %error, "Cannot call the function.");
            error_response(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable: the function cannot be reached", id)
        }
    }
}
