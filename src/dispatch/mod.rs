//! Dispatchers: one per function, pulling from the function's durable consumer and running
//! each event in the function's runtime.
//!
//! Guarantees (at least once, end to end):
//! - An event is acked only after its invocation succeeded (and, for a function with
//!   `on_success`, after the chained event was stored).
//! - A failed attempt is NAKed with the retry policy's delay; the delivery count JetStream
//!   keeps is the attempt number, so attempts are counted across processes and restarts.
//! - After the last attempt the event is written to `SLUICE_DLQ`; only once that write is
//!   acknowledged is the original terminated. If the process dies during the last attempt,
//!   JetStream redelivers the event after `ack_wait`; a delivery past the attempt budget goes
//!   straight to the DLQ without running the function again.
//! - On shutdown no new events are fetched, everything already fetched is run to its end,
//!   and in-flight invocations are bounded by the function's timeout.
//!
//! Ordering between events is not guaranteed (up to `concurrency` run at once).

pub mod dlq;
pub mod retry;
pub mod sync;

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::consumer::pull::BatchConfig;
use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use async_nats::StatusCode;
use chrono::{DateTime, Utc};
use futures::{FutureExt as _, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn, Instrument as _};

use crate::bus::payload::{is_payload_header, PayloadError};
use crate::bus::{self, Bus};
use crate::config::FunctionConfig;
use crate::event::{Event, JSON};
use crate::runtime::{Invocation, InvokeError, Response, Runtime};
use crate::telemetry::logs::{LogSink, Path, Ran, Record, RecordKind};

/// How long a pull request waits on the server for events before it is renewed: what an
/// idle function costs (one request per this, plus heartbeats).
const PULL_EXPIRY: Duration = Duration::from_secs(30);
/// A waiting pull request hears from the server this often; two missed mean it is gone.
const PULL_HEARTBEAT: Duration = Duration::from_secs(5);
/// Slack on top of two heartbeats before a silent request is given up.
const HEARTBEAT_MARGIN: Duration = Duration::from_secs(1);
/// A new pull request waits, while another is outstanding, until this fraction of the slots
/// is free (1/4): a busy function asks in batches, not once per finished invocation.
const REFILL_FRACTION: usize = 4;
/// At shutdown, how long events the server sent before it saw the inbox close are waited for.
const DRAIN_DELIVERIES: Duration = Duration::from_secs(5);
/// Pause after a failed pull before the next one.
const FETCH_ERROR_PAUSE: Duration = Duration::from_secs(1);
/// Entries a dispatcher's per-event maps (first attempts, unwritten dead letters) hold at most.
const FIRST_ATTEMPTS_CAP: usize = 100_000;

/// The pull requests waiting on the server, by the slots they hold.
struct Pulls {
    /// One slot for every event requested and not yet delivered.
    reserved: Option<OwnedSemaphorePermit>,
    /// When the inbox last heard anything (an event, a heartbeat, a status), or a first
    /// request was sent.
    heard: tokio::time::Instant,
}

impl Pulls {
    fn requested(&self) -> usize {
        self.reserved.as_ref().map_or(0, OwnedSemaphorePermit::num_permits)
    }

    fn reserve(&mut self, slots: OwnedSemaphorePermit) {
        match &mut self.reserved {
            Some(reserved) => reserved.merge(slots),
            None => self.reserved = Some(slots),
        }
    }

    /// Frees the slots of events a request will no longer bring; all of them when the server
    /// did not say how many.
    fn release(&mut self, owed: Option<usize>) {
        match (owed, &mut self.reserved) {
            (Some(owed), Some(reserved)) => drop(reserved.split(owed.min(reserved.num_permits()))),
            _ => self.reserved = None,
        }
    }
}

/// How long results go unpublished after the server said nobody listens to them; a
/// subscriber that arrives meanwhile gets results from the next one published after this.
const RESULTS_PROBE_EVERY: Duration = Duration::from_secs(1);

/// Whether anyone listens on a function's results. Each result is published with a reply
/// subject; when no subscriber matched, the server answers that inbox with "no responders"
/// (503), and results are then skipped for [`RESULTS_PROBE_EVERY`], after which the next one
/// asks again. A function nobody watches publishes about one result a second instead of one
/// per event, and the server routes nothing for it.
#[derive(Default)]
struct Listeners {
    /// The inbox the server's "no responders" answers come to, once subscribed.
    inbox: std::sync::OnceLock<async_nats::Subject>,
    /// Until when (milliseconds after `origin`) results are skipped.
    silent_until: std::sync::atomic::AtomicU64,
    origin: std::sync::OnceLock<tokio::time::Instant>,
}

impl Listeners {
    /// Subscribes the inbox and watches it until `shutdown`. Without it (the subscription
    /// failed) every result is published.
    async fn watch(self: &Arc<Self>, bus: &Bus, function: &str, shutdown: CancellationToken) -> Option<tokio::task::JoinHandle<()>> {
        let inbox = bus.client.new_inbox();
        let mut answers = match bus.client.subscribe(inbox.clone()).await {
            Ok(answers) => answers,
            Err(error) => {
                debug!(function = %function, %error, "Cannot watch for listeners of results; publishing every result.");
                return None;
            }
        };
        let origin = *self.origin.get_or_init(tokio::time::Instant::now);
        let _ = self.inbox.set(async_nats::Subject::from(inbox));
        let this = self.clone();
        Some(tokio::spawn(async move {
            loop {
                let answer = tokio::select! {
                    answer = answers.next() => answer,
                    () = shutdown.cancelled() => None,
                };
                let Some(answer) = answer else { return };
                if answer.status == Some(StatusCode::NO_RESPONDERS) {
                    let until = origin.elapsed() + RESULTS_PROBE_EVERY;
                    this.silent_until.store(u64::try_from(until.as_millis()).unwrap_or(u64::MAX), Ordering::Relaxed);
                }
            }
        }))
    }

    /// Whether to publish a result now, and the reply subject to publish it with: `None`
    /// while nobody listens; `Some(None)` when listeners are not watched (publish plainly).
    fn probe(&self) -> Option<Option<async_nats::Subject>> {
        let (Some(inbox), Some(origin)) = (self.inbox.get(), self.origin.get()) else { return Some(None) };
        let now = u64::try_from(origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        (now >= self.silent_until.load(Ordering::Relaxed)).then(|| Some(inbox.clone()))
    }
}

/// What a message on the inbox was.
#[derive(Debug, PartialEq, Eq)]
enum Delivered {
    Event,
    Status,
    /// The server refused a request: pause before the next.
    Refused,
}

async fn pause(shutdown: &CancellationToken, pause: Duration) {
    tokio::select! {
        () = shutdown.cancelled() => {}
        () = tokio::time::sleep(pause) => {}
    }
}

/// Runs one function's events.
pub struct Dispatcher {
    bus: Bus,
    function: Arc<FunctionConfig>,
    runtime: Arc<dyn Runtime>,
    /// Where invocation records go (`SLUICE_LOGS`, metrics).
    logs: LogSink,
    /// When the first attempt of an event that is being retried started, by stream sequence.
    /// Events retried by another process fall back to their publish time.
    first_attempts: Mutex<HashMap<u64, DateTime<Utc>>>,
    /// Why the last attempt of an event failed, by stream sequence, while its dead letter
    /// could not be written: the redelivery that writes it then carries the real cause.
    unwritten: Mutex<HashMap<u64, Unwritten>>,
    /// Invocations running now (slots reserved by pull requests that wait for events are
    /// not counted).
    running: AtomicUsize,
    /// Whether anyone listens on `sluice.results.<function>`.
    listeners: Arc<Listeners>,
}

impl Dispatcher {
    pub fn new(bus: Bus, function: Arc<FunctionConfig>, runtime: Arc<dyn Runtime>, logs: LogSink) -> Arc<Self> {
        Arc::new(Self {
            bus,
            function,
            runtime,
            logs,
            first_attempts: Mutex::new(HashMap::new()),
            unwritten: Mutex::new(HashMap::new()),
            running: AtomicUsize::new(0),
            listeners: Arc::default(),
        })
    }

    /// Pulls and runs events until `shutdown`, then drains what is in flight.
    ///
    /// Every event is fetched with a slot already reserved for it: pull requests ask for
    /// exactly as many events as they hold free slots, so nothing waits in a local buffer
    /// where its ack timer would run while it is not being worked on, and shutdown can run
    /// everything that was fetched. The requests share one inbox; a new one is sent as soon
    /// as none is waiting and a slot is free, or once [`REFILL_FRACTION`] of the slots came
    /// free, so a busy function asks for events in batches rather than one per finished
    /// invocation. An idle function keeps one request waiting on the server for
    /// [`PULL_EXPIRY`], which answers the moment an event arrives.
    pub async fn run(self: Arc<Self>, consumer: PullConsumer, shutdown: CancellationToken) {
        let name = self.function.name.clone();
        let concurrency = usize::try_from(self.function.concurrency).unwrap_or(1).max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        let refill_at = u32::try_from((concurrency / REFILL_FRACTION).max(1)).unwrap_or(1);
        let tracker = TaskTracker::new();
        let listening = self.listeners.watch(&self.bus, &name, shutdown.clone()).await;
        info!(function = %name, concurrency, "Dispatcher started.");
        'subscribe: while !shutdown.is_cancelled() {
            let subject = self.bus.client.new_inbox();
            let mut inbox = match self.bus.client.subscribe(subject.clone()).await {
                Ok(inbox) => inbox,
                Err(error) => {
                    warn!(function = %name, %error, "Cannot subscribe to deliveries; retrying.");
                    pause(&shutdown, FETCH_ERROR_PAUSE).await;
                    continue;
                }
            };
            let subject = async_nats::Subject::from(subject);
            let mut pulls = Pulls { reserved: None, heard: tokio::time::Instant::now() };
            loop {
                let requested = pulls.requested();
                let wanted = if requested == 0 { 1 } else { refill_at };
                let silent_since = pulls.heard + 2 * PULL_HEARTBEAT + HEARTBEAT_MARGIN;
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => {
                        self.drain_inbox(inbox, &mut pulls, &tracker).await;
                        break 'subscribe;
                    }
                    message = inbox.next() => {
                        let Some(message) = message else { continue 'subscribe };
                        pulls.heard = tokio::time::Instant::now();
                        if self.delivered(message, &mut pulls, &tracker) == Delivered::Refused {
                            pause(&shutdown, FETCH_ERROR_PAUSE).await;
                        }
                    }
                    free = slots.clone().acquire_many_owned(wanted) => {
                        let Ok(mut free) = free else { break 'subscribe };
                        let more = u32::try_from(slots.available_permits()).unwrap_or(u32::MAX);
                        if let Ok(extra) = slots.clone().try_acquire_many_owned(more) {
                            free.merge(extra);
                        }
                        let request = BatchConfig { batch: free.num_permits(), expires: Some(PULL_EXPIRY), idle_heartbeat: PULL_HEARTBEAT, ..Default::default() };
                        match consumer.request_batch(request, subject.clone()).await {
                            Ok(()) => {
                                if requested == 0 {
                                    pulls.heard = tokio::time::Instant::now();
                                }
                                pulls.reserve(free);
                            }
                            Err(error) => {
                                drop(free);
                                self.pull_failed(&error);
                                pause(&shutdown, FETCH_ERROR_PAUSE).await;
                            }
                        }
                    }
                    () = tokio::time::sleep_until(silent_since), if requested > 0 => {
                        // A waiting request sends a heartbeat every PULL_HEARTBEAT: these were
                        // lost (a restarted server, a consumer leader that moved, a reconnect).
                        debug!(function = %name, requested, "No heartbeat from the waiting pull requests; asking again.");
                        pulls.reserved = None;
                        pulls.heard = tokio::time::Instant::now();
                    }
                }
            }
        }
        tracker.close();
        let in_flight = self.running.load(Ordering::SeqCst);
        if in_flight > 0 {
            info!(function = %name, in_flight, "Draining in-flight invocations.");
        }
        let bound = self.function.timeout + DRAIN_DELIVERIES + Duration::from_secs(5);
        if tokio::time::timeout(bound, tracker.wait()).await.is_err() {
            warn!(function = %name, "In-flight invocations did not finish in time; JetStream will redeliver them.");
        }
        if let Some(listening) = listening {
            listening.abort();
        }
        info!(function = %name, "Dispatcher stopped.");
    }

    /// One message on the inbox: an event (run in its own task with a reserved slot) or a
    /// status of the pull requests.
    fn delivered(self: &Arc<Self>, message: async_nats::Message, pulls: &mut Pulls, tracker: &TaskTracker) -> Delivered {
        let name = &self.function.name;
        match message.status {
            None | Some(StatusCode::OK) => {
                // The server sends at most what was asked for; should it send more (a request
                // given up for lost that was alive after all), the event still runs
                // (max_ack_pending bounds it) without a local slot.
                let slot = pulls.reserved.as_mut().and_then(|reserved| reserved.split(1));
                let message = jetstream::Message { message, context: self.bus.js.clone() };
                let this = self.clone();
                this.running.fetch_add(1, Ordering::SeqCst);
                tracker.spawn(async move {
                    // A bug in handling one event must not take the dispatcher's count of
                    // running invocations with it; the event is redelivered.
                    // Boxed: the task then moves a pointer, not the whole state (kilobytes)
                    // of handling an event, each time the runtime moves it.
                    if AssertUnwindSafe(Box::pin(this.handle(message))).catch_unwind().await.is_err() {
                        error!(function = %this.function.name, "Handling an event panicked; JetStream redelivers it after ack_wait.");
                    }
                    this.running.fetch_sub(1, Ordering::SeqCst);
                    drop(slot);
                });
                Delivered::Event
            }
            Some(StatusCode::IDLE_HEARTBEAT) => Delivered::Status,
            Some(status) => {
                // A request ended (expired, or the server gave it up): its slots are free for
                // the next one. The server says how many it still owed.
                let owed = message
                    .headers
                    .as_ref()
                    .and_then(|headers| headers.get("Nats-Pending-Messages"))
                    .and_then(|value| value.as_str().parse::<usize>().ok());
                pulls.release(owed);
                let description = message.description.unwrap_or_default();
                match status {
                    StatusCode::TIMEOUT => Delivered::Status,
                    StatusCode::REQUEST_TERMINATED if description == "Leadership Change" || description == "Server Shutdown" => {
                        debug!(function = %name, reason = %description, "A pull request ended; asking again.");
                        Delivered::Status
                    }
                    StatusCode::NO_RESPONDERS => {
                        self.pull_failed(&"no JetStream server answered the pull request");
                        Delivered::Refused
                    }
                    _ => {
                        warn!(function = %name, status = %status, reason = %description, "A pull request was refused; retrying.");
                        Delivered::Refused
                    }
                }
            }
        }
    }

    /// After shutdown: no more requests, and every event the server sent before it saw the
    /// inbox close still runs (the subscription is drained, not dropped).
    async fn drain_inbox(self: &Arc<Self>, mut inbox: async_nats::Subscriber, pulls: &mut Pulls, tracker: &TaskTracker) {
        if inbox.drain().await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(DRAIN_DELIVERIES, async {
            while let Some(message) = inbox.next().await {
                self.delivered(message, pulls, tracker);
            }
        })
        .await;
    }

    fn pull_failed(&self, error: &dyn std::fmt::Display) {
        // While the connection is down the bus logs the outage once; every pull failing
        // meanwhile is expected.
        if self.bus.client.connection_state() == async_nats::connection::State::Connected {
            warn!(function = %self.function.name, %error, "Cannot pull events; retrying.");
        } else {
            debug!(function = %self.function.name, %error, "Cannot pull events while NATS is unreachable; retrying.");
        }
    }

    /// Runs one delivered event to an ack, a delayed NAK or a dead letter.
    async fn handle(&self, message: jetstream::Message) {
        let name = &self.function.name;
        let (stream, sequence, delivered, published) = match message.info() {
            Ok(info) => (info.stream.to_owned(), info.stream_sequence, info.delivered, info.published),
            Err(error) => {
                // Not a JetStream delivery: nothing to ack or retry.
                warn!(function = %name, %error, subject = %message.subject, "Ignoring a message without delivery metadata.");
                return;
            }
        };
        let attempt = u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
        let max_attempts = self.function.retry.max_attempts;
        // A body over the server's max_payload is fetched from the object store.
        let (payload, payload_error) = match self.bus.resolve_payload(message.headers.as_ref(), message.payload.clone()).await {
            Ok(payload) => (payload, None),
            Err(error) => (message.payload.clone(), Some(error)),
        };
        let mut event = Event::from_message(message.headers.as_ref(), payload, &message.subject, &stream, sequence, published);
        if payload_error.is_none() {
            event.extensions.retain(|(name, _)| !is_payload_header(name));
        }
        let event = Arc::new(event);
        let delivery = Delivery { message: &message, event: &event, stream: &stream, sequence, published };

        if let Some(error) = payload_error {
            match error {
                PayloadError::Store(_) if attempt < max_attempts => {
                    warn!(function = %name, event_id = %event.id, attempt, error = %error, "Cannot read the event's stored body; retrying.");
                    nak(&message, retry::backoff_cap(&self.function.retry, attempt), name).await;
                }
                PayloadError::Store(_) => {
                    self.dead_letter(&delivery, attempt.min(max_attempts), Failure { kind: "platform_error", message: &format!("cannot read the event's body: {error}"), error_type: None }, None).await;
                }
                PayloadError::Missing { .. } | PayloadError::TooLarge { .. } => {
                    self.dead_letter(&delivery, attempt.saturating_sub(1), Failure { kind: "payload_missing", message: &error.to_string(), error_type: None }, None).await;
                }
            }
            return;
        }

        if attempt > max_attempts {
            let known = self.unwritten.lock().ok().and_then(|mut map| map.remove(&sequence));
            if let Some(Unwritten { kind, error, error_type }) = known {
                // This process ran the last attempt; only storing its outcome failed.
                self.dead_letter(&delivery, max_attempts, Failure { kind: &kind, message: &error, error_type: error_type.as_deref() }, None).await;
                return;
            }
            let error = format!(
                "attempt {} of {max_attempts} did not finish: the worker stopped, lost its NATS connection, \
                 or could not store the outcome; no attempts are left",
                attempt - 1
            );
            self.dead_letter(&delivery, attempt - 1, Failure { kind: "lost", message: &error, error_type: None }, None).await;
            return;
        }

        let started = Utc::now();
        let request_id = crate::event::uuid_text(uuid::Uuid::new_v4());
        let invocation = Invocation {
            request_id: request_id.clone(),
            attempt,
            event: event.clone(),
        };
        let span = crate::telemetry::invoke_span(name, &request_id, &event.id, attempt, &event.traceparent);
        let result = {
            let _running = self.logs.in_flight(name);
            let invoke = self.runtime.invoke(invocation).instrument(span);
            tokio::pin!(invoke);
            // Most invocations finish at their first poll: only one that does not gets the
            // timer below (registering and removing a timer costs every event otherwise).
            let first = std::future::poll_fn(|cx| std::task::Poll::Ready(std::future::Future::poll(invoke.as_mut(), cx))).await;
            match first {
                std::task::Poll::Ready(result) => result,
                std::task::Poll::Pending => {
                    // Waiting for a sandbox slot may take longer than ack_wait: keep the delivery ours.
                    let period = (self.function.timeout + bus::ACK_WAIT_MARGIN) / 2;
                    let mut heartbeat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                    loop {
                        tokio::select! {
                            result = &mut invoke => break result,
                            _ = heartbeat.tick() => {
                                if let Err(error) = message.ack_with(AckKind::Progress).await {
                                    warn!(function = %name, %error, "Cannot extend the ack deadline of a running event.");
                                }
                            }
                        }
                    }
                }
            }
        };
        if self.logs.enabled() {
            let ran = Ran { function: &self.function, node: self.logs.node(), path: Path::Event, request_id: &request_id, event: &event, event_seq: Some(sequence), attempt, start: started };
            self.logs.write(Record::invocation(&ran, &result));
        }
        let logs = match &result {
            Ok(response) => &response.logs,
            Err(error) => &error.logs,
        };
        for line in logs {
            info!(target: "sluice::function", function = %name, request_id = %request_id, "{line}");
        }
        match result {
            Ok(response) => self.succeeded(&delivery, &request_id, attempt, response).await,
            Err(error) => self.failed(&delivery, &request_id, attempt, started, error).await,
        }
    }

    async fn succeeded(&self, delivery: &Delivery<'_>, request_id: &str, attempt: u32, response: Response) {
        let name = &self.function.name;
        let duration_ms = response.duration.as_secs_f64() * 1000.0;
        info!(
            function = %name,
            request_id = %request_id,
            event_id = %delivery.event.id,
            attempt,
            duration_ms = format!("{duration_ms:.2}"),
            memory_kb = response.memory_bytes / 1024,
            outcome = "success",
            "Invocation succeeded."
        );
        self.publish_result(delivery, request_id, attempt, &response).await;
        if let Some(topic) = &self.function.on_success {
            let mut chained = Event::new(format!("sluice:function:{name}"), "sluice.function.result", response.body.clone());
            // Derived from the cause, so a retried chain publish is deduplicated.
            chained.id = format!("{}:{name}", delivery.event.id);
            chained.traceparent = crate::event::child_traceparent(&delivery.event.traceparent);
            chained.set_extension("sluice-caused-by", delivery.event.id.clone());
            let subject = bus::topic_subject(topic);
            let stored = persist(delivery.message, name, "the on_success event", || self.bus.publish_event(subject.clone(), &chained)).await;
            if let Err(error) = stored {
                let cause = format!("the invocation succeeded but its on_success event to {topic:?} could not be stored: {error:#}");
                if attempt >= self.function.retry.max_attempts {
                    // No attempt is left to retry the publish: the dead letter says what
                    // really happened rather than being found later as `lost`.
                    self.dead_letter(delivery, attempt, Failure { kind: "platform_error", message: &cause, error_type: None }, Some((request_id, Utc::now()))).await;
                    return;
                }
                warn!(function = %name, request_id = %request_id, topic = %topic, error = %format!("{error:#}"), "Cannot publish the on_success event; the invocation will be retried.");
                let delay = retry::backoff_cap(&self.function.retry, attempt);
                nak(delivery.message, delay, name).await;
                return;
            }
        }
        if attempt > 1 {
            self.forget_first_attempt(delivery.sequence);
        }
        if let Err(error) = delivery.message.ack().await {
            warn!(function = %name, request_id = %request_id, %error, "Cannot ack a finished event; it may run again.");
        }
    }

    async fn failed(&self, delivery: &Delivery<'_>, request_id: &str, attempt: u32, started: DateTime<Utc>, error: InvokeError) {
        let name = &self.function.name;
        let decision = retry::decide(&self.function.retry, attempt, &mut rand::rng());
        warn!(
            function = %name,
            request_id = %request_id,
            event_id = %delivery.event.id,
            attempt,
            max_attempts = self.function.retry.max_attempts,
            duration_ms = format!("{:.2}", error.duration.as_secs_f64() * 1000.0),
            outcome = error.kind.label(),
            error = %error.message,
            "Invocation failed."
        );
        match decision {
            retry::Decision::Retry(delay) => {
                if attempt == 1 {
                    // Entries whose retries another process finished are never removed here;
                    // a lost entry only falls back to the publish time.
                    remember(&self.first_attempts, delivery.sequence, started);
                }
                nak(delivery.message, delay, name).await;
            }
            retry::Decision::DeadLetter => {
                let failure = Failure { kind: error.kind.label(), message: &error.message, error_type: error.error_type.as_deref() };
                self.dead_letter(delivery, attempt, failure, Some((request_id, started))).await;
            }
        }
    }

    /// Writes the dead letter, then terminates the original. If the write fails the original
    /// is left unacked: JetStream redelivers it past the attempt budget and the write is
    /// tried again.
    async fn dead_letter(
        &self,
        delivery: &Delivery<'_>,
        attempts: u32,
        failure: Failure<'_>,
        last: Option<(&str, DateTime<Utc>)>,
    ) {
        let Failure { kind, message: error, error_type } = failure;
        let name = &self.function.name;
        let first_attempt = self
            .first_attempts
            .lock()
            .ok()
            .and_then(|map| map.get(&delivery.sequence).copied())
            .or_else(|| (attempts <= 1).then(|| last.map(|(_, started)| started)).flatten())
            .unwrap_or(delivery.published);
        let record = dlq::DeadLetter {
            function: name,
            error,
            error_kind: kind,
            error_type,
            attempts,
            original_subject: &delivery.message.subject,
            original_stream: delivery.stream,
            original_seq: delivery.sequence,
            first_attempt,
            failed_at: Utc::now(),
            request_id: last.map(|(id, _)| id),
        };
        match persist(delivery.message, name, "the dead letter", || dlq::write(&self.bus, delivery.event, &record)).await {
            Ok(published) => {
                warn!(
                    function = %name,
                    event_id = %delivery.event.id,
                    dlq_id = published.seq,
                    attempts,
                    "Event moved to the dead-letter stream."
                );
                let mut note = Record::note(RecordKind::DeadLetter, &self.function, self.logs.node(), Path::Event, delivery.event, record.failed_at);
                note.request_id = last.map(|(id, _)| id.to_owned());
                note.attempt = attempts;
                note.outcome = kind.to_owned();
                note.error = Some(error.to_owned());
                note.error_type = error_type.map(str::to_owned);
                note.event_seq = Some(delivery.sequence);
                note.dlq_seq = Some(published.seq);
                self.logs.write(note);
                self.forget_first_attempt(delivery.sequence);
                if let Err(error) = delivery.message.ack_with(AckKind::Term).await {
                    warn!(function = %name, %error, "Cannot terminate a dead-lettered event; a redelivery will find its DLQ entry already written.");
                }
            }
            Err(write_error) => {
                warn!(function = %name, event_id = %delivery.event.id, error = %format!("{write_error:#}"), "Cannot write the dead letter; the event stays pending and is retried.");
                remember(&self.unwritten, delivery.sequence, Unwritten { kind: kind.to_owned(), error: error.to_owned(), error_type: error_type.map(str::to_owned) });
            }
        }
    }

    /// Publishes the response on `sluice.results.<function>` (core NATS: for whoever
    /// listens), while anyone does ([`Listeners`]).
    async fn publish_result(&self, delivery: &Delivery<'_>, request_id: &str, attempt: u32, response: &Response) {
        let Some(reply) = self.listeners.probe() else { return };
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(crate::event::CONTENT_TYPE, JSON);
        headers.insert(crate::event::TRACEPARENT, delivery.event.traceparent.as_str());
        headers.insert("sluice-function", self.function.name.as_str());
        headers.insert("sluice-request-id", request_id);
        headers.insert("sluice-event-id", delivery.event.id.as_str());
        headers.insert("sluice-attempt", attempt.to_string().as_str());
        headers.insert("sluice-duration-ms", format!("{:.3}", response.duration.as_secs_f64() * 1000.0).as_str());
        let subject = bus::results_subject(&self.function.name);
        let body = match self.bus.check_payload(&subject, &mut headers, response.body.clone()).await {
            Ok(body) => body,
            Err(error) => {
                warn!(function = %self.function.name, request_id = %request_id, %error, "Cannot publish the result.");
                return;
            }
        };
        let published = match reply {
            Some(reply) => self.bus.client.publish_with_reply_and_headers(subject, reply, headers, body).await,
            None => self.bus.client.publish_with_headers(subject, headers, body).await,
        };
        if let Err(error) = published {
            warn!(function = %self.function.name, request_id = %request_id, %error, "Cannot publish the result.");
        }
    }

    fn forget_first_attempt(&self, sequence: u64) {
        if let Ok(mut map) = self.first_attempts.lock() {
            map.remove(&sequence);
        }
    }
}

/// The outcome of a last attempt whose dead letter could not be written yet.
struct Unwritten {
    kind: String,
    error: String,
    error_type: Option<String>,
}

/// Why an event is dead: the kind label, the message and, from Lambda runtimes, the
/// handler's `errorType`.
struct Failure<'a> {
    kind: &'a str,
    message: &'a str,
    error_type: Option<&'a str>,
}

/// One delivered message and what was read from it.
struct Delivery<'a> {
    message: &'a jetstream::Message,
    event: &'a Event,
    stream: &'a str,
    sequence: u64,
    published: DateTime<Utc>,
}

/// Stores something the event's outcome depends on (a dead letter, a chained event), trying
/// a few times over a couple of seconds before giving up; keeps the delivery ours meanwhile.
async fn persist<T, F, Fut>(message: &jetstream::Message, function: &str, what: &str, mut store: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    const TRIES: u32 = 5;
    let mut delay = Duration::from_millis(100);
    let mut tries = 1;
    loop {
        match store().await {
            Ok(value) => return Ok(value),
            Err(error) if tries < TRIES => {
                warn!(function = %function, error = %format!("{error:#}"), tries, "Cannot store {what}; trying again.");
                let _ = message.ack_with(AckKind::Progress).await;
                tokio::time::sleep(delay).await;
                delay *= 2;
                tries += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Records `value` for a stream sequence in a map bounded by [`FIRST_ATTEMPTS_CAP`]
/// (cleared when full: an entry lost that way only costs detail, never an event).
fn remember<V>(map: &Mutex<HashMap<u64, V>>, sequence: u64, value: V) {
    if let Ok(mut map) = map.lock() {
        if map.len() >= FIRST_ATTEMPTS_CAP {
            map.clear();
        }
        map.insert(sequence, value);
    }
}

async fn nak(message: &jetstream::Message, delay: Duration, function: &str) {
    if let Err(error) = message.ack_with(AckKind::Nak(Some(delay))).await {
        warn!(function = %function, %error, "Cannot NAK a failed event; JetStream redelivers it after ack_wait.");
    }
}
