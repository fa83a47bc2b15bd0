//! The AWS Lambda Runtime API (`/2018-06-01/runtime/...`), served to one execution
//! environment on its own loopback port.
//!
//! One endpoint per environment, unlike the Runtime Interface Emulator's single
//! reservation: every environment long-polls `next` on its own server, so any number of
//! them serve invocations at once. Sockets are TCP_NODELAY: with Nagle's algorithm and the
//! client's delayed ACK each invocation would wait ~40 ms per small write.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::ListenerExt as _;
use axum::Router;
use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::{mpsc, oneshot, watch};
use tracing::debug;

use crate::runtime::wasm::MAX_RESPONSE_BYTES;

pub const REQUEST_ID: &str = "lambda-runtime-aws-request-id";
pub const DEADLINE_MS: &str = "lambda-runtime-deadline-ms";
pub const FUNCTION_ARN: &str = "lambda-runtime-invoked-function-arn";
pub const TRACE_ID: &str = "lambda-runtime-trace-id";
const ERROR_TYPE: &str = "lambda-runtime-function-error-type";

/// One invocation handed to the environment's next `GET .../invocation/next`.
#[derive(Debug)]
pub struct Pending {
    pub request_id: String,
    pub body: Bytes,
    /// Epoch milliseconds.
    pub deadline_ms: u64,
    pub function_arn: String,
    /// X-Ray form (`Root=1-...;Parent=...;Sampled=1`).
    pub trace_id: String,
    pub reply: oneshot::Sender<Outcome>,
}

/// What the runtime answered for an invocation.
#[derive(Debug)]
pub enum Outcome {
    Response(Bytes),
    Error(RuntimeError),
    /// The response was larger than [`MAX_RESPONSE_BYTES`]; the runtime got a 413.
    TooLarge(usize),
}

/// Lambda's error document (`/error`, `/init/error`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeError {
    pub error_type: String,
    pub error_message: String,
    pub stack_trace: Vec<String>,
}

impl RuntimeError {
    /// Reads a posted error: the JSON document, the type header as a fallback.
    fn parse(headers: &HeaderMap, body: &[u8]) -> Self {
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "camelCase", default)]
        struct Document {
            error_message: Option<serde_json::Value>,
            error_type: Option<String>,
            stack_trace: Option<serde_json::Value>,
            /// aws-lambda-ric (Node.js) calls the stack trace `trace`.
            trace: Option<serde_json::Value>,
        }
        let document: Option<Document> = serde_json::from_slice(body).ok();
        let header_type = headers.get(ERROR_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let Some(document) = document else {
            let text = String::from_utf8_lossy(body).trim().to_owned();
            return Self {
                error_type: header_type.unwrap_or_else(|| "Runtime.Unknown".to_owned()),
                error_message: if text.is_empty() { "the runtime reported an error without a message".to_owned() } else { text },
                stack_trace: Vec::new(),
            };
        };
        let error_message = match document.error_message {
            Some(serde_json::Value::String(text)) => text,
            Some(serde_json::Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        let stack_trace = match document.stack_trace.or(document.trace) {
            Some(serde_json::Value::Array(lines)) => lines
                .into_iter()
                .map(|line| match line {
                    serde_json::Value::String(text) => text,
                    other => other.to_string(),
                })
                .collect(),
            Some(serde_json::Value::String(text)) => text.lines().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Self {
            error_type: document.error_type.filter(|t| !t.is_empty()).or(header_type).unwrap_or_else(|| "Runtime.Unknown".to_owned()),
            error_message,
            stack_trace,
        }
    }
}

/// Where the environment's runtime is in its start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Starting,
    /// The runtime asked for its first invocation: initialisation is over.
    Ready,
    /// The runtime reported `/init/error`.
    InitFailed(RuntimeError),
}

struct Shared {
    queue: tokio::sync::Mutex<mpsc::Receiver<Pending>>,
    current: Mutex<Option<(String, oneshot::Sender<Outcome>)>>,
    readiness: watch::Sender<Readiness>,
}

/// The server of one environment; stops when dropped.
pub struct Api {
    addr: SocketAddr,
    invocations: mpsc::Sender<Pending>,
    readiness: watch::Receiver<Readiness>,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.server.abort();
    }
}

impl Api {
    /// Binds a free loopback port and serves the Runtime API on it.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (invocations, queue) = mpsc::channel(1);
        let (readiness_tx, readiness) = watch::channel(Readiness::Starting);
        let shared = Arc::new(Shared { queue: tokio::sync::Mutex::new(queue), current: Mutex::new(None), readiness: readiness_tx });
        let router = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/response", post(response))
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(shared);
        let listener = listener.tap_io(|stream| {
            if let Err(error) = stream.set_nodelay(true) {
                debug!(%error, "Cannot set TCP_NODELAY on a Runtime API connection.");
            }
        });
        let server = tokio::spawn(async move {
            if let Err(error) = axum::serve(listener, router).await {
                debug!(%error, "The Runtime API server stopped.");
            }
        });
        Ok(Self { addr, invocations, readiness, server })
    }

    /// `host:port`, for `AWS_LAMBDA_RUNTIME_API`.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Queues an invocation for the runtime's next `next`.
    pub async fn submit(&self, pending: Pending) -> Result<(), Pending> {
        self.invocations.send(pending).await.map_err(|e| e.0)
    }

    pub fn readiness(&self) -> watch::Receiver<Readiness> {
        self.readiness.clone()
    }
}

fn lambda_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string();
    (status, [("content-type", "application/json")], body).into_response()
}

fn accepted() -> Response {
    (StatusCode::ACCEPTED, [("content-type", "application/json")], r#"{"status":"OK"}"#).into_response()
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    shared.readiness.send_if_modified(|state| {
        let starting = *state == Readiness::Starting;
        if starting {
            *state = Readiness::Ready;
        }
        starting
    });
    let pending = shared.queue.lock().await.recv().await;
    let Some(pending) = pending else {
        return lambda_error(StatusCode::GONE, "Runtime.Stopping", "the execution environment is stopping");
    };
    let mut response = Response::new(Body::from(pending.body));
    let headers = response.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(value) = HeaderValue::from_str(value) {
            headers.insert(name, value);
        }
    };
    set(REQUEST_ID, &pending.request_id);
    set(DEADLINE_MS, &pending.deadline_ms.to_string());
    set(FUNCTION_ARN, &pending.function_arn);
    set(TRACE_ID, &pending.trace_id);
    set("content-type", "application/json");
    if let Ok(mut current) = shared.current.lock() {
        *current = Some((pending.request_id, pending.reply));
    }
    response
}

/// Takes the invocation `id` if it is the one in progress.
fn take(shared: &Shared, id: &str) -> Option<oneshot::Sender<Outcome>> {
    let mut current = shared.current.lock().ok()?;
    match current.take() {
        Some((current_id, reply)) if current_id == id => Some(reply),
        other => {
            *current = other;
            None
        }
    }
}

fn unknown_request(id: &str) -> Response {
    lambda_error(StatusCode::BAD_REQUEST, "InvalidRequestID", &format!("request {id} is not the invocation in progress"))
}

async fn response(State(shared): State<Arc<Shared>>, Path(id): Path<String>, body: Body) -> Response {
    let Some(reply) = take(&shared, &id) else {
        return unknown_request(&id);
    };
    match axum::body::to_bytes(body, MAX_RESPONSE_BYTES + 1).await {
        Ok(bytes) if bytes.len() <= MAX_RESPONSE_BYTES => {
            let _ = reply.send(Outcome::Response(bytes));
            accepted()
        }
        _ => {
            let _ = reply.send(Outcome::TooLarge(MAX_RESPONSE_BYTES));
            lambda_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestEntityTooLarge",
                &format!("the response is larger than {MAX_RESPONSE_BYTES} bytes"),
            )
        }
    }
}

async fn error(State(shared): State<Arc<Shared>>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(reply) = take(&shared, &id) else {
        return unknown_request(&id);
    };
    let _ = reply.send(Outcome::Error(RuntimeError::parse(&headers, &body)));
    accepted()
}

async fn init_error(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let error = RuntimeError::parse(&headers, &body);
    shared.readiness.send_replace(Readiness::InitFailed(error));
    accepted()
}

/// `traceparent` (`00-<trace>-<span>-<flags>`) as the X-Ray header Lambda passes on.
pub fn xray_trace_id(traceparent: &str) -> String {
    let parts: Vec<&str> = traceparent.split('-').collect();
    match parts.as_slice() {
        [_, trace, span, flags] if trace.len() == 32 && span.len() == 16 => {
            let sampled = u8::from_str_radix(flags, 16).map_or(0, |f| f & 1);
            format!("Root=1-{}-{};Parent={span};Sampled={sampled}", &trace[..8], &trace[8..])
        }
        _ => "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// One HTTP/1.1 exchange on a new connection: (status, lowercase headers, body).
    async fn exchange(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> (u16, Vec<(String, String)>, Vec<u8>) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("{method} {path} HTTP/1.1\r\nhost: test\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(body).await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.unwrap();
        let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&raw[..split]).into_owned();
        let mut lines = head.lines();
        let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
        let headers = lines.filter_map(|l| l.split_once(": ")).map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned())).collect();
        (status, headers, raw[split + 4..].to_vec())
    }

    fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn pending(id: &str) -> (Pending, oneshot::Receiver<Outcome>) {
        let (reply, outcome) = oneshot::channel();
        let pending = Pending {
            request_id: id.into(),
            body: Bytes::from_static(br#"{"name":"Ann"}"#),
            deadline_ms: 1_700_000_000_000,
            function_arn: "arn:aws:lambda:us-east-1:000000000000:function:f".into(),
            trace_id: "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1".into(),
            reply,
        };
        (pending, outcome)
    }

    #[tokio::test]
    async fn the_runtime_api_hands_out_invocations_and_takes_their_outcomes() {
        let api = Api::start().await.unwrap();
        let addr = api.addr();
        let mut readiness = api.readiness();
        assert_eq!(*readiness.borrow(), Readiness::Starting);

        // next: the event with all four headers; the first call ends initialisation.
        let (first, outcome) = pending("req-1");
        api.submit(first).await.unwrap();
        let (status, headers, body) = exchange(addr, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        assert_eq!(status, 200);
        assert_eq!(body, br#"{"name":"Ann"}"#);
        assert_eq!(header(&headers, REQUEST_ID), Some("req-1"));
        assert_eq!(header(&headers, DEADLINE_MS), Some("1700000000000"));
        assert_eq!(header(&headers, FUNCTION_ARN), Some("arn:aws:lambda:us-east-1:000000000000:function:f"));
        assert!(header(&headers, TRACE_ID).unwrap().starts_with("Root=1-4bf92f35-"));
        readiness.changed().await.unwrap();
        assert_eq!(*readiness.borrow(), Readiness::Ready);

        // Only the invocation in progress can be answered.
        let (status, _, body) = exchange(addr, "POST", "/2018-06-01/runtime/invocation/req-0/response", b"{}").await;
        assert_eq!(status, 400);
        assert!(String::from_utf8_lossy(&body).contains("InvalidRequestID"));
        let (status, _, body) = exchange(addr, "POST", "/2018-06-01/runtime/invocation/req-1/response", br#"{"ok":1}"#).await;
        assert_eq!((status, body.as_slice()), (202, br#"{"status":"OK"}"#.as_slice()));
        assert!(matches!(outcome.await.unwrap(), Outcome::Response(b) if b.as_ref() == br#"{"ok":1}"#));
        // Answered once: a second answer is refused.
        let (status, _, _) = exchange(addr, "POST", "/2018-06-01/runtime/invocation/req-1/error", b"{}").await;
        assert_eq!(status, 400);

        // An error document.
        let (second, outcome) = pending("req-2");
        api.submit(second).await.unwrap();
        exchange(addr, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        let error = br#"{"errorType":"ValueError","errorMessage":"bad","stackTrace":["x"]}"#;
        let (status, _, _) = exchange(addr, "POST", "/2018-06-01/runtime/invocation/req-2/error", error).await;
        assert_eq!(status, 202);
        match outcome.await.unwrap() {
            Outcome::Error(e) => assert_eq!((e.error_type.as_str(), e.error_message.as_str()), ("ValueError", "bad")),
            other => panic!("{other:?}"),
        }

        // A response of exactly the limit is taken (a JSON string of that size) ...
        let (limit, outcome) = pending("req-limit");
        api.submit(limit).await.unwrap();
        exchange(addr, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        let mut exact = vec![b'x'; MAX_RESPONSE_BYTES];
        (exact[0], exact[MAX_RESPONSE_BYTES - 1]) = (b'"', b'"');
        let (status, _, _) = exchange(addr, "POST", "/2018-06-01/runtime/invocation/req-limit/response", &exact).await;
        assert_eq!(status, 202);
        assert!(matches!(outcome.await.unwrap(), Outcome::Response(b) if b.len() == MAX_RESPONSE_BYTES));
        // ... one byte more is refused and reported as such.
        let (third, outcome) = pending("req-3");
        api.submit(third).await.unwrap();
        exchange(addr, "GET", "/2018-06-01/runtime/invocation/next", b"").await;
        let big = vec![b' '; MAX_RESPONSE_BYTES + 1];
        let (status, _, body) = exchange(addr, "POST", "/2018-06-01/runtime/invocation/req-3/response", &big).await;
        assert_eq!(status, 413);
        assert!(String::from_utf8_lossy(&body).contains("RequestEntityTooLarge"));
        assert!(matches!(outcome.await.unwrap(), Outcome::TooLarge(MAX_RESPONSE_BYTES)));

        // An init error.
        let init = br#"{"errorType":"Runtime.ImportModuleError","errorMessage":"Unable to import module 'app'"}"#;
        let (status, _, _) = exchange(addr, "POST", "/2018-06-01/runtime/init/error", init).await;
        assert_eq!(status, 202);
        match &*readiness.borrow() {
            Readiness::InitFailed(e) => assert_eq!(e.error_type, "Runtime.ImportModuleError"),
            other => panic!("{other:?}"),
        }

        // The server stops with its environment.
        drop(api);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while tokio::net::TcpStream::connect(addr).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "the Runtime API still listens after its environment was dropped");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    #[test]
    fn trace_ids_follow_the_xray_mapping() {
        assert_eq!(
            xray_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "Root=1-4bf92f35-77b34da6a3ce929d0e0e4736;Parent=00f067aa0ba902b7;Sampled=1"
        );
        assert!(xray_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00").ends_with("Sampled=0"));
        let fallback = "Root=1-00000000-000000000000000000000000;Sampled=0";
        assert_eq!(xray_trace_id("garbage"), fallback);
        // Four parts are not enough: the trace id must have 32 digits and the span 16.
        assert_eq!(xray_trace_id("00-short-00f067aa0ba902b7-01"), fallback);
        assert_eq!(xray_trace_id("00-4bf92f3577b34da6a3ce929d0e0e4736-span-01"), fallback);
    }

    #[test]
    fn posted_errors_are_read() {
        let headers = HeaderMap::new();
        let body = br#"{"errorMessage":"boom","errorType":"ValueError","stackTrace":["  File \"app.py\", line 3"]}"#;
        let error = RuntimeError::parse(&headers, body);
        assert_eq!(error.error_type, "ValueError");
        assert_eq!(error.error_message, "boom");
        assert_eq!(error.stack_trace, vec!["  File \"app.py\", line 3".to_owned()]);
        let mut headers = HeaderMap::new();
        headers.insert(ERROR_TYPE, HeaderValue::from_static("Unhandled"));
        let error = RuntimeError::parse(&headers, b"not json");
        assert_eq!(error.error_type, "Unhandled");
        assert_eq!(error.error_message, "not json");
        let error = RuntimeError::parse(&headers, br#"{"errorMessage":"x"}"#);
        assert_eq!(error.error_type, "Unhandled");
        let node = br#"{"errorType":"Error","errorMessage":"boom","trace":["Error: boom","    at index.js:2"]}"#;
        assert_eq!(RuntimeError::parse(&HeaderMap::new(), node).stack_trace, ["Error: boom", "    at index.js:2"]);
        let text = br#"{"errorType":"E","errorMessage":{"code":7},"stackTrace":"line 1\nline 2"}"#;
        let error = RuntimeError::parse(&HeaderMap::new(), text);
        assert_eq!(error.stack_trace, ["line 1", "line 2"]);
        assert_eq!(error.error_message, r#"{"code":7}"#);
    }
}
