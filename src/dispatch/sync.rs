//! Synchronous invocations (the HTTP gateway, the Lambda Invoke API): core NATS
//! request/reply on `sluice.invoke.<function>`, served by a queue group of the function's
//! workers on every node, so a caller on one node reaches a worker on another.
//!
//! As Lambda's RequestResponse invocations: nothing is stored, retried or dead-lettered; the
//! outcome goes back to the caller. Per node, at most `concurrency` synchronous invocations of
//! a function run at once (beside the event consumer's); a request that finds no free slot
//! within the function's timeout is answered `throttled`.
//!
//! The wire: the request is the event in CloudEvents binary mode plus `sluice-request-id`;
//! the reply carries `sluice-outcome` (`success` or a failure kind label), `sluice-error-type`,
//! `sluice-duration-ms`, `sluice-memory-bytes`, `sluice-log-tail` (the last 4 KiB of the
//! function's log, base64) and the response body, or the error message for a failure. Bodies
//! over the server's `max_payload` travel through the payload store like events do.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt as _;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument as _};

use crate::bus::Bus;
use crate::config::FunctionConfig;
use crate::event::Event;
use crate::runtime::{Invocation, Runtime};

pub const INVOKE_PREFIX: &str = "sluice.invoke.";
pub const REQUEST_ID: &str = "sluice-request-id";
pub const OUTCOME: &str = "sluice-outcome";
pub const ERROR_TYPE: &str = "sluice-error-type";
pub const DURATION_MS: &str = "sluice-duration-ms";
pub const MEMORY_BYTES: &str = "sluice-memory-bytes";
pub const LOG_TAIL: &str = "sluice-log-tail";
/// `sluice-outcome` of a request that found no free slot.
pub const THROTTLED: &str = "throttled";
/// How much of the log a reply carries (as Lambda's `X-Amz-Log-Result`).
const LOG_TAIL_BYTES: usize = 4096;

pub fn invoke_subject(function: &str) -> String {
    format!("{INVOKE_PREFIX}{function}")
}

/// Serves `sluice.invoke.<function>` for one function until `shutdown`, then lets the
/// invocations it started finish.
pub async fn serve(bus: Bus, function: Arc<FunctionConfig>, runtime: Arc<dyn Runtime>, shutdown: CancellationToken) {
    let name = function.name.clone();
    let subject = invoke_subject(&name);
    let mut requests = loop {
        match bus.client.queue_subscribe(subject.clone(), name.clone()).await {
            Ok(subscriber) => break subscriber,
            Err(error) => {
                warn!(function = %name, %error, "Cannot subscribe to synchronous invocations; retrying.");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    };
    let slots = Arc::new(Semaphore::new(usize::try_from(function.concurrency).unwrap_or(1).max(1)));
    let tracker = TaskTracker::new();
    loop {
        let message = tokio::select! {
            message = requests.next() => match message {
                Some(message) => message,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (bus, function, runtime, slots) = (bus.clone(), function.clone(), runtime.clone(), slots.clone());
        tracker.spawn(async move { answer(&bus, &function, &*runtime, &slots, message).await });
    }
    // No new requests reach this node; the ones it took are answered.
    let _ = requests.unsubscribe().await;
    tracker.close();
    let _ = tokio::time::timeout(function.timeout + Duration::from_secs(5), tracker.wait()).await;
}

async fn answer(bus: &Bus, function: &FunctionConfig, runtime: &dyn Runtime, slots: &Semaphore, message: async_nats::Message) {
    let name = &function.name;
    let Some(reply) = message.reply.clone() else {
        warn!(function = %name, "Ignoring a synchronous invocation without a reply subject.");
        return;
    };
    let request_id = message
        .headers
        .as_ref()
        .and_then(|h| h.get(REQUEST_ID))
        .map(|v| v.as_str().to_owned())
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let mut headers = HeaderMap::new();
    headers.insert(REQUEST_ID, request_id.as_str());
    let payload = match bus.resolve_payload(message.headers.as_ref(), message.payload.clone()).await {
        Ok(payload) => payload,
        Err(error) => {
            headers.insert(OUTCOME, "platform_error");
            send(bus, name, reply, headers, Bytes::from(format!("cannot read the request body: {error}"))).await;
            return;
        }
    };
    if let Some(h) = message.headers.as_ref() {
        bus.remove_payload(h).await;
    }
    let mut event = Event::from_message(message.headers.as_ref(), payload, &message.subject, "", 0, Utc::now());
    event.extensions.retain(|(n, _)| !crate::bus::payload::is_payload_header(n) && !n.eq_ignore_ascii_case(REQUEST_ID));
    let Ok(_slot) = tokio::time::timeout(function.timeout, slots.acquire()).await else {
        warn!(function = %name, request_id = %request_id, "No free slot for a synchronous invocation within the function's timeout: throttled.");
        headers.insert(OUTCOME, THROTTLED);
        send(bus, name, reply, headers, Bytes::from_static(b"too many invocations at once")).await;
        return;
    };
    let event_id = event.id.clone();
    let span = tracing::info_span!("sluice.invoke", function = %name, request_id = %request_id, event_id = %event_id, attempt = 1);
    let result = runtime.invoke(Invocation { request_id: request_id.clone(), attempt: 1, event: Arc::new(event) }).instrument(span).await;
    let (logs, duration) = match &result {
        Ok(response) => (&response.logs, response.duration),
        Err(error) => (&error.logs, error.duration),
    };
    for line in logs {
        info!(target: "sluice::function", function = %name, request_id = %request_id, "{line}");
    }
    headers.insert(DURATION_MS, format!("{:.3}", duration.as_secs_f64() * 1000.0).as_str());
    let tail = log_tail(logs);
    if !tail.is_empty() {
        headers.insert(LOG_TAIL, base64::engine::general_purpose::STANDARD.encode(tail).as_str());
    }
    let duration_ms = format!("{:.2}", duration.as_secs_f64() * 1000.0);
    let body = match result {
        Ok(response) => {
            info!(function = %name, request_id = %request_id, event_id = %event_id, duration_ms, outcome = "success", invocation = "sync", "Invocation succeeded.");
            headers.insert(OUTCOME, "success");
            headers.insert(MEMORY_BYTES, response.memory_bytes.to_string().as_str());
            response.body
        }
        Err(error) => {
            warn!(function = %name, request_id = %request_id, event_id = %event_id, duration_ms, outcome = error.kind.label(), error = %error.message, invocation = "sync", "Invocation failed.");
            headers.insert(OUTCOME, error.kind.label());
            if let Some(error_type) = &error.error_type {
                headers.insert(ERROR_TYPE, error_type.as_str());
            }
            Bytes::from(error.message)
        }
    };
    send(bus, name, reply, headers, body).await;
}

/// The end of the log, at most [`LOG_TAIL_BYTES`], cut at a line start.
fn log_tail(logs: &[String]) -> String {
    let mut tail = String::new();
    for line in logs.iter().rev() {
        if tail.len() + line.len() + 1 > LOG_TAIL_BYTES {
            break;
        }
        tail.insert(0, '\n');
        tail.insert_str(0, line);
    }
    tail
}

async fn send(bus: &Bus, function: &str, reply: async_nats::Subject, mut headers: HeaderMap, body: Bytes) {
    let body = match bus.check_payload(&reply, &mut headers, body).await {
        Ok(body) => body,
        Err(error) => {
            warn!(function = %function, %error, "Cannot send a synchronous invocation's reply body; sending the error instead.");
            headers = HeaderMap::new();
            headers.insert(OUTCOME, "response_too_large");
            Bytes::from(error.to_string())
        }
    };
    if let Err(error) = bus.client.publish_with_headers(reply, headers, body).await {
        warn!(function = %function, %error, "Cannot send a synchronous invocation's reply.");
    }
}

/// What a synchronous invocation ended with.
#[derive(Debug, Clone)]
pub struct Reply {
    pub request_id: String,
    /// `success`, or the failure kind's label (`error`, `timeout`, ...), or `throttled`.
    pub outcome: String,
    pub error_type: Option<String>,
    pub duration_ms: Option<f64>,
    pub log_tail: Option<String>,
    /// The response, or the error message.
    pub body: Bytes,
}

impl Reply {
    pub fn succeeded(&self) -> bool {
        self.outcome == "success"
    }
}

/// Why a synchronous invocation got no reply.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("no worker serves function {0}")]
    NoWorker(String),
    #[error("function {function} did not answer within {waited:?}")]
    TimedOut { function: String, waited: Duration },
    #[error("the request body cannot be sent: {0}")]
    Payload(#[from] crate::bus::payload::PayloadError),
    #[error("NATS: {0}")]
    Bus(String),
}

/// Calls `function` with `event` and waits at most `wait` for its reply.
pub async fn call(bus: &Bus, function: &str, request_id: &str, event: &Event, wait: Duration) -> Result<Reply, CallError> {
    let subject = invoke_subject(function);
    let mut headers = event.to_headers();
    headers.insert(REQUEST_ID, request_id);
    let body = bus.check_payload(&subject, &mut headers, event.data.clone()).await?;
    let request = async_nats::Request::new().headers(headers).payload(body).timeout(Some(wait));
    let message = match bus.client.send_request(subject, request).await {
        Ok(message) => message,
        Err(error) => {
            return Err(match error.kind() {
                async_nats::RequestErrorKind::NoResponders => CallError::NoWorker(function.to_owned()),
                async_nats::RequestErrorKind::TimedOut => CallError::TimedOut { function: function.to_owned(), waited: wait },
                _ => CallError::Bus(error.to_string()),
            });
        }
    };
    let get = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
    let body = bus.resolve_payload(message.headers.as_ref(), message.payload.clone()).await?;
    if let Some(h) = message.headers.as_ref() {
        bus.remove_payload(h).await;
    }
    Ok(Reply {
        request_id: get(REQUEST_ID).unwrap_or_else(|| request_id.to_owned()),
        outcome: get(OUTCOME).unwrap_or_else(|| "platform_error".to_owned()),
        error_type: get(ERROR_TYPE),
        duration_ms: get(DURATION_MS).and_then(|d| d.parse().ok()),
        log_tail: get(LOG_TAIL).and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok()).map(|t| String::from_utf8_lossy(&t).into_owned()),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_tail_keeps_the_last_whole_lines() {
        assert_eq!(log_tail(&["a".into(), "b".into()]), "a\nb\n");
        let long = "x".repeat(3000);
        assert_eq!(log_tail(&[long.clone(), long.clone(), "end".into()]), format!("{long}\nend\n"));
        assert_eq!(log_tail(&[]), "");
    }
}
