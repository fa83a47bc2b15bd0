//! Synchronous invocations (the HTTP gateway, the Lambda Invoke API): core NATS
//! request/reply on `sluice.invoke.<function>`, served by a queue group of the function's
//! workers on every node, so a caller on one node reaches a worker on another.
//!
//! A caller in a process that serves the function itself runs it there, without the round
//! trip through the NATS server ([`Local`]): it waits for one of the node's slots as a
//! request from the queue group would. Sending the overflow to the queue group instead would
//! bring most of it back to this node at twice the cost, and a busy node would fall behind
//! for good after a burst; spreading calls across nodes is the job of the load balancer in
//! front of the gateways. Both ways run the same code ([`invoke_here`]) and answer the same
//! [`Reply`].
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

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use async_nats::HeaderMap;
use base64::Engine as _;
use bytes::Bytes;
use chrono::Utc;
use futures::StreamExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn, Instrument as _};

use crate::bus::Bus;
use crate::config::FunctionConfig;
use crate::event::Event;
use crate::runtime::{Invocation, Runtime};
use crate::telemetry::logs::{LogSink, Path, Ran, Record, RecordKind};

pub const INVOKE_PREFIX: &str = "sluice.invoke.";
pub const REQUEST_ID: &str = "sluice-request-id";
pub const OUTCOME: &str = "sluice-outcome";
pub const ERROR_TYPE: &str = "sluice-error-type";
pub const DURATION_MS: &str = "sluice-duration-ms";
pub const MEMORY_BYTES: &str = "sluice-memory-bytes";
pub const LOG_TAIL: &str = "sluice-log-tail";
/// `sluice-outcome` of a request that found no free slot.
pub const THROTTLED: &str = "throttled";
/// The body of a throttled reply.
const THROTTLED_MESSAGE: &str = "too many invocations at once";
/// How much of the log a reply carries (as Lambda's `X-Amz-Log-Result`).
const LOG_TAIL_BYTES: usize = 4096;

pub fn invoke_subject(function: &str) -> String {
    format!("{INVOKE_PREFIX}{function}")
}

/// The functions this process serves, with their slots, for callers in the same process.
#[derive(Clone, Default)]
pub struct Local {
    served: Arc<RwLock<HashMap<String, Arc<Served>>>>,
}

/// A function [`serve`] answers for, and the node's slots for its synchronous invocations.
struct Served {
    function: Arc<FunctionConfig>,
    runtime: Arc<dyn Runtime>,
    slots: Arc<Semaphore>,
    logs: LogSink,
}

impl Local {
    /// `function`, when this process serves it.
    fn get(&self, function: &str) -> Option<Arc<Served>> {
        self.served.read().unwrap_or_else(PoisonError::into_inner).get(function).cloned()
    }

    fn insert(&self, served: Arc<Served>) {
        self.served.write().unwrap_or_else(PoisonError::into_inner).insert(served.function.name.clone(), served);
    }

    /// Removes `served`, unless another version of its function took its place meanwhile.
    fn remove(&self, served: &Arc<Served>) {
        let mut map = self.served.write().unwrap_or_else(PoisonError::into_inner);
        if map.get(&served.function.name).is_some_and(|current| Arc::ptr_eq(current, served)) {
            map.remove(&served.function.name);
        }
    }
}

/// Serves `sluice.invoke.<function>` for one function until `shutdown`, and callers in this
/// process through `local`; then lets the invocations it started finish.
pub async fn serve(bus: Bus, local: Local, logs: LogSink, function: Arc<FunctionConfig>, runtime: Arc<dyn Runtime>, shutdown: CancellationToken) {
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
    let served = Arc::new(Served { function, runtime, slots, logs });
    local.insert(served.clone());
    let tracker = TaskTracker::new();
    loop {
        let message = tokio::select! {
            message = requests.next() => match message {
                Some(message) => message,
                None => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (bus, served) = (bus.clone(), served.clone());
        tracker.spawn(async move { answer(&bus, &served, message).await });
    }
    // No new requests reach this node; the ones it took are answered.
    local.remove(&served);
    let _ = requests.unsubscribe().await;
    tracker.close();
    let _ = tokio::time::timeout(served.function.timeout + Duration::from_secs(5), tracker.wait()).await;
}

async fn answer(bus: &Bus, served: &Served, message: async_nats::Message) {
    let function = &served.function;
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
        .unwrap_or_else(|| crate::event::uuid_text(uuid::Uuid::new_v4()));
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
    let Some(slot) = acquire(served, &request_id, &event).await else {
        headers.insert(OUTCOME, THROTTLED);
        send(bus, name, reply, headers, Bytes::from_static(THROTTLED_MESSAGE.as_bytes())).await;
        return;
    };
    let answer = invoke_here(served, slot, request_id, event).await;
    if let Some(duration_ms) = answer.duration_ms {
        headers.insert(DURATION_MS, format!("{duration_ms:.3}").as_str());
    }
    if let Some(tail) = &answer.log_tail {
        headers.insert(LOG_TAIL, base64::engine::general_purpose::STANDARD.encode(tail).as_str());
    }
    if let Some(memory_bytes) = answer.memory_bytes {
        headers.insert(MEMORY_BYTES, memory_bytes.to_string().as_str());
    }
    if let Some(error_type) = &answer.error_type {
        headers.insert(ERROR_TYPE, error_type.as_str());
    }
    headers.insert(OUTCOME, answer.outcome.as_str());
    send(bus, name, reply, headers, answer.body).await;
}

/// One of the node's slots for `served`, waiting at most the function's timeout; `None`
/// (throttled, and recorded as such) when none freed up in time.
async fn acquire(served: &Served, request_id: &str, event: &Event) -> Option<OwnedSemaphorePermit> {
    let function = &served.function;
    if let Ok(Ok(slot)) = tokio::time::timeout(function.timeout, served.slots.clone().acquire_owned()).await {
        return Some(slot);
    }
    warn!(function = %function.name, request_id = %request_id, "No free slot for a synchronous invocation within the function's timeout: throttled.");
    let mut note = Record::note(RecordKind::Throttle, function, served.logs.node(), Path::Sync, event, Utc::now());
    note.request_id = Some(request_id.to_owned());
    note.outcome = THROTTLED.to_owned();
    served.logs.write(note);
    None
}

/// Runs one synchronous invocation in this process, holding one of the node's `slot`s.
async fn invoke_here(served: &Served, slot: OwnedSemaphorePermit, request_id: String, event: Event) -> Reply {
    let name = &served.function.name;
    let event = Arc::new(event);
    let event_id = event.id.clone();
    let span = crate::telemetry::invoke_span(name, &request_id, &event_id, 1, &event.traceparent);
    let start = Utc::now();
    let running = served.logs.in_flight(name);
    let result = served.runtime.invoke(Invocation { request_id: request_id.clone(), attempt: 1, event: event.clone() }).instrument(span).await;
    drop((slot, running));
    if served.logs.enabled() {
        let ran = Ran { function: &served.function, node: served.logs.node(), path: Path::Sync, request_id: &request_id, event: &event, event_seq: None, attempt: 1, start };
        served.logs.write(Record::invocation(&ran, &result));
    }
    let (logs, duration) = match &result {
        Ok(response) => (&response.logs, response.duration),
        Err(error) => (&error.logs, error.duration),
    };
    for line in logs {
        info!(target: "sluice::function", function = %name, request_id = %request_id, "{line}");
    }
    let tail = log_tail(logs);
    let duration_ms = duration.as_secs_f64() * 1000.0;
    let mut reply = Reply {
        request_id,
        outcome: String::new(),
        error_type: None,
        duration_ms: Some(duration_ms),
        memory_bytes: None,
        log_tail: (!tail.is_empty()).then_some(tail),
        body: Bytes::new(),
    };
    let request_id = &reply.request_id;
    let duration_ms = format!("{duration_ms:.2}");
    match result {
        Ok(response) => {
            info!(function = %name, request_id = %request_id, event_id = %event_id, duration_ms, outcome = "success", invocation = "sync", "Invocation succeeded.");
            reply.outcome = "success".to_owned();
            reply.memory_bytes = Some(response.memory_bytes);
            reply.body = response.body;
        }
        Err(error) => {
            warn!(function = %name, request_id = %request_id, event_id = %event_id, duration_ms, outcome = error.kind.label(), error = %error.message, invocation = "sync", "Invocation failed.");
            reply.outcome = error.kind.label().to_owned();
            reply.error_type = error.error_type;
            reply.body = Bytes::from(error.message);
        }
    }
    reply
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
    /// Peak memory of a successful invocation.
    pub memory_bytes: Option<u64>,
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

/// Calls `function` with `event` and waits at most `wait` for its reply: in this process
/// when it serves the function, else through the function's queue group.
pub async fn call(bus: &Bus, local: &Local, function: &str, request_id: &str, event: Event, wait: Duration) -> Result<Reply, CallError> {
    if let Some(served) = local.get(function) {
        let here = async {
            match acquire(&served, request_id, &event).await {
                Some(slot) => invoke_here(&served, slot, request_id.to_owned(), event).await,
                None => Reply {
                    request_id: request_id.to_owned(),
                    outcome: THROTTLED.to_owned(),
                    error_type: None,
                    duration_ms: None,
                    memory_bytes: None,
                    log_tail: None,
                    body: Bytes::from_static(THROTTLED_MESSAGE.as_bytes()),
                },
            }
        };
        return tokio::time::timeout(wait, here).await.map_err(|_| CallError::TimedOut { function: function.to_owned(), waited: wait });
    }
    let subject = invoke_subject(function);
    let mut headers = event.to_headers();
    headers.insert(REQUEST_ID, request_id);
    let body = bus.check_payload(&subject, &mut headers, event.data).await?;
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
        memory_bytes: get(MEMORY_BYTES).and_then(|m| m.parse().ok()),
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
