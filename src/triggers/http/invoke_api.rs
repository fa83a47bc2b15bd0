//! The Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`), so the AWS CLI
//! (`aws lambda invoke --endpoint-url http://127.0.0.1:8080`) and the SDKs
//! (`boto3.client("lambda", endpoint_url=...)`) call Sluice functions unchanged.
//!
//! - `X-Amz-Invocation-Type: RequestResponse` (the default): a synchronous call over
//!   `sluice.invoke.<function>`; `200` with the function's response, or with
//!   `X-Amz-Function-Error: Unhandled` and Lambda's `{"errorMessage", "errorType"}` body when
//!   the function failed. Not retried, not dead-lettered.
//! - `Event`: the payload is stored in JetStream for the function alone
//!   (`sluice.direct.<function>`) before `202`; retries and the DLQ apply.
//! - `DryRun`: `204` when the function exists.
//!
//! `X-Amz-Log-Type: Tail` returns the end of the function's log in `X-Amz-Log-Result`.
//! Requests are not authenticated (SigV4 signatures are not checked): the listener binds
//! loopback by default; `[http] invoke_api = false` turns this API off.

use std::sync::Arc;

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;
use tracing::warn;

use super::{RequestId, Shared};
use crate::dispatch::sync::{self, CallError};
use crate::event::Event;

pub const PATH: &str = "/2015-03-31/functions/{name}/invocations";
/// `ce-source` and `ce-type` of events sent through this API.
pub const SOURCE: &str = "sluice:invoke";
pub const EVENT_TYPE: &str = "sluice.invoke";

#[derive(Debug, Deserialize)]
pub struct Params {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
}

/// The function name in a `FunctionName`: a name, `name:qualifier`, or a function ARN.
fn function_name(given: &str) -> &str {
    let name = given.strip_prefix("arn:").map_or(given, |rest| {
        // arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
        rest.split_once(":function:").map_or(rest, |(_, name)| name)
    });
    name.split(':').next().unwrap_or(name)
}

/// An error of the Lambda service, as the SDKs parse it.
fn service_error(status: StatusCode, kind: &str, message: &str, request_id: &str) -> Response {
    let body = serde_json::json!({ "Type": "User", "message": message });
    let mut response = (status, [("content-type", "application/json")], body.to_string()).into_response();
    let headers = response.headers_mut();
    if let Ok(kind) = HeaderValue::from_str(kind) {
        headers.insert("x-amzn-errortype", kind);
    }
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

pub(super) async fn invoke(State(shared): State<Arc<Shared>>, Path(given): Path<String>, Query(params): Query<Params>, request: Request) -> Response {
    let id = request.extensions().get::<RequestId>().cloned().unwrap_or_default().0;
    let name = function_name(&given).to_owned();
    let arn = format!("arn:aws:lambda:{}:{}:function:{name}", region(), crate::runtime::lambda::ACCOUNT_ID);
    if crate::config::validate_name(&name).is_err() {
        return service_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &format!("Function not found: {arn}"), &id);
    }
    if params.qualifier.as_deref().is_some_and(|q| q != "$LATEST") {
        return service_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &format!("Function not found: {arn}:{} (only $LATEST exists)", params.qualifier.unwrap_or_default()), &id);
    }
    let headers = request.headers().clone();
    let invocation_type = header(&headers, "x-amz-invocation-type").unwrap_or("RequestResponse").to_owned();
    let tail = header(&headers, "x-amz-log-type") == Some("Tail");
    let request = match super::read_body(request, shared.backend.settings.max_body_bytes).await {
        Ok(request) => request,
        Err(_) => {
            let limit = shared.backend.settings.max_body_bytes;
            return service_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", &format!("Request must be smaller than {limit} bytes for the InvokeFunction operation"), &id);
        }
    };
    let mut payload = axum::body::to_bytes(request.into_body(), usize::MAX).await.unwrap_or_default();
    if payload.is_empty() {
        payload = Bytes::from_static(b"{}");
    }
    if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
        return service_error(StatusCode::BAD_REQUEST, "InvalidRequestContentException", "Could not parse request body into json: the payload must be JSON", &id);
    }
    let mut event = Event::new(SOURCE, EVENT_TYPE, payload);
    event.id = id.clone();
    if let Some(parent) = header(&headers, "traceparent").filter(|t| crate::event::valid_traceparent(t)) {
        event.traceparent = parent.to_owned();
    }
    let backend = &shared.backend;
    match invocation_type.as_str() {
        "RequestResponse" => {
            let reply = sync::call(&backend.bus, &backend.local, &name, &id, event, backend.wait(&name)).await;
            match reply {
                Ok(reply) => answer(&reply, tail),
                Err(CallError::NoWorker(_)) if !exists(&shared, &name).await => {
                    service_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &format!("Function not found: {arn}"), &id)
                }
                Err(CallError::NoWorker(_)) => service_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", &format!("No worker serves function {name} now"), &id),
                Err(CallError::TimedOut { waited, .. }) => {
                    let body = serde_json::json!({ "errorMessage": format!("Task timed out: no answer within {waited:?}"), "errorType": "Sandbox.Timedout" });
                    function_error(&id, body.to_string())
                }
                Err(CallError::Payload(_)) => service_error(StatusCode::PAYLOAD_TOO_LARGE, "RequestTooLargeException", "Request too large", &id),
                Err(error) => service_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", &error.to_string(), &id),
            }
        }
        "Event" => {
            if !exists(&shared, &name).await {
                return service_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &format!("Function not found: {arn}"), &id);
            }
            match backend.bus.publish_event(crate::bus::direct_subject(&name), &event).await {
                Ok(_) => with_request_id(StatusCode::ACCEPTED.into_response(), &id),
                Err(error) => {
                    warn!(function = %name, request_id = %id, error = %format!("{error:#}"), "Cannot store an Event invocation.");
                    service_error(StatusCode::SERVICE_UNAVAILABLE, "ServiceException", "The event could not be stored; send it again", &id)
                }
            }
        }
        "DryRun" => {
            if exists(&shared, &name).await {
                with_request_id(StatusCode::NO_CONTENT.into_response(), &id)
            } else {
                service_error(StatusCode::NOT_FOUND, "ResourceNotFoundException", &format!("Function not found: {arn}"), &id)
            }
        }
        other => service_error(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            &format!("X-Amz-Invocation-Type {other:?} is not one of RequestResponse, Event, DryRun"),
            &id,
        ),
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn region() -> String {
    std::env::var("AWS_REGION").unwrap_or_else(|_| "us-east-1".to_owned())
}

/// Whether `name` is a function: this node knows it, or its consumer exists (another node
/// runs it).
async fn exists(shared: &Shared, name: &str) -> bool {
    if shared.backend.timeouts.contains_key(name) {
        return true;
    }
    let Ok(stream) = shared.backend.bus.js.get_stream(crate::bus::EVENTS_STREAM).await else { return false };
    stream.consumer_info(name).await.is_ok()
}

/// A RequestResponse reply in Lambda's shape.
fn answer(reply: &sync::Reply, tail: bool) -> Response {
    let mut response = if reply.succeeded() {
        let mut response = Response::new(axum::body::Body::from(reply.body.clone()));
        response.headers_mut().insert("content-type", HeaderValue::from_static("application/json"));
        with_request_id(response, &reply.request_id)
    } else if reply.outcome == sync::THROTTLED {
        return service_error(StatusCode::TOO_MANY_REQUESTS, "TooManyRequestsException", "Rate Exceeded.", &reply.request_id);
    } else {
        let message = String::from_utf8_lossy(&reply.body).into_owned();
        let error_type = reply.error_type.clone().unwrap_or_else(|| error_type_of(&reply.outcome).to_owned());
        let message = message.strip_prefix(&format!("{error_type}: ")).map_or(message.clone(), str::to_owned);
        let body = serde_json::json!({ "errorMessage": message, "errorType": error_type });
        function_error(&reply.request_id, body.to_string())
    };
    if tail {
        if let Some(log) = &reply.log_tail {
            if let Ok(value) = HeaderValue::from_str(&base64::engine::general_purpose::STANDARD.encode(log)) {
                response.headers_mut().insert("x-amz-log-result", value);
            }
        }
    }
    response
}

/// Lambda's `errorType` for a failure without one of its own.
fn error_type_of(outcome: &str) -> &'static str {
    match outcome {
        "timeout" => "Sandbox.Timedout",
        "memory_limit" => "Runtime.OutOfMemory",
        "trap" => "Runtime.ExitError",
        "invalid_response" => "Runtime.InvalidResponse",
        "response_too_large" => "Function.ResponseSizeTooLarge",
        "platform_error" => "ServiceException",
        _ => "Function.Error",
    }
}

/// `200` with `X-Amz-Function-Error: Unhandled`: how Lambda reports a failed function.
fn function_error(request_id: &str, body: String) -> Response {
    let mut response = Response::new(axum::body::Body::from(body));
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    headers.insert("x-amz-function-error", HeaderValue::from_static("Unhandled"));
    with_request_id(response, request_id)
}

fn with_request_id(mut response: Response, request_id: &str) -> Response {
    let headers = response.headers_mut();
    headers.insert("x-amz-executed-version", HeaderValue::from_static("$LATEST"));
    if let Ok(id) = HeaderValue::from_str(request_id) {
        headers.insert("x-amzn-requestid", id);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn function_names_from_names_and_arns() {
        assert_eq!(function_name("hello"), "hello");
        assert_eq!(function_name("hello:$LATEST"), "hello");
        assert_eq!(function_name("arn:aws:lambda:us-east-1:000000000000:function:hello"), "hello");
        assert_eq!(function_name("arn:aws:lambda:us-east-1:000000000000:function:hello:prod"), "hello");
    }
}
