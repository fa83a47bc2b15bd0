//! Invocation logs in JetStream: stream `SLUICE_LOGS`, subjects `sluice.logs.<function>`,
//! bounded by `[logs] max_age` and `max_bytes` in `sluice.toml`.
//!
//! Every invocation, on every node and both paths (events and synchronous calls), leaves one
//! [`Record`]: who ran it where and when, how it ended, what it would be billed, and the lines
//! the function wrote (already cut at the runtime's per-invocation cap, with the cut noted).
//! Dead letters and throttled synchronous calls leave a record too, so `sluice stats` counts
//! them from the same stream.
//!
//! Logging never slows or fails an invocation: records go through a bounded queue to one
//! publisher task, which packs what is waiting into as few messages as it can (newline-
//! delimited JSON, one message per function) and keeps a window of JetStream acks in flight.
//! When the queue is full the record is dropped and counted, and the count is logged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use chrono::{DateTime, Utc};
use futures::stream::FuturesUnordered;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::bus::Bus;

pub const LOGS_STREAM: &str = "SLUICE_LOGS";
pub const LOGS_PREFIX: &str = "sluice.logs.";
/// Records waiting for the publisher; past this they are dropped (and counted).
const QUEUE: usize = 16 * 1024;
/// Largest message the publisher makes by packing records (one record may be larger).
const PACK_BYTES: usize = 256 * 1024;
/// Publishes awaiting their JetStream ack at once.
const ACKS_IN_FLIGHT: usize = 64;
/// How long the publisher lets records gather after the first of a batch: one message per
/// function every few milliseconds instead of one per invocation, and one wake-up of the
/// publisher instead of one per record.
const LINGER: Duration = Duration::from_millis(20);
/// Records packed at most per batch.
const MAX_BATCH: usize = 4096;
/// Records encoded between two yields to the executor.
const YIELD_EVERY: usize = 64;
/// Bytes packed at most per batch (records carry up to 256 KiB of lines each).
const MAX_BATCH_BYTES: usize = 4 * 1024 * 1024;
/// Room a new message starts with, so that small records are not copied as it grows.
const INITIAL_MESSAGE_BYTES: usize = 16 * 1024;
/// How often a count of dropped records is logged, at most.
const DROP_REPORT_EVERY: Duration = Duration::from_secs(10);

pub fn logs_subject(function: &str) -> String {
    format!("{LOGS_PREFIX}{function}")
}

/// What a record stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    /// One run of the function: an attempt at an event, or a synchronous call.
    Invocation,
    /// An event written to the dead-letter stream.
    DeadLetter,
    /// A synchronous call refused because every slot of the function stayed busy.
    Throttle,
}

/// How the invocation was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Path {
    /// An event from the function's consumer (topics, direct deliveries, replays).
    Event,
    /// A synchronous call: the HTTP gateway, the Lambda Invoke API.
    Sync,
}

/// One record of `SLUICE_LOGS`. Field names are part of the contract (`sluice logs --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub kind: RecordKind,
    pub function: String,
    /// The process that wrote it: host name and process id.
    pub node: String,
    pub path: Path,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    pub event_id: String,
    /// 1 for an event's first attempt (and for every synchronous call).
    pub attempt: u32,
    /// When the invocation started (for other kinds: when it happened).
    #[serde(serialize_with = "rfc3339")]
    pub start: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub end: DateTime<Utc>,
    /// `success`, or the failure kind (`error`, `timeout`, `memory_limit`, ...); for a dead
    /// letter, the last failure's kind; `throttled` for a throttle.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
    pub duration_ms: f64,
    /// The duration rounded up to the millisecond, as Lambda bills it.
    pub billed_duration_ms: u64,
    /// The function's configured memory (what GB-seconds are billed on).
    pub memory_size_mb: u32,
    pub max_memory_used_mb: u64,
    /// Set on a cold start: how long the initialisation took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub init_duration_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub traceparent: String,
    /// The event's sequence in `SLUICE_EVENTS` (events only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_seq: Option<u64>,
    /// The dead letter's sequence in `SLUICE_DLQ` (dead letters only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dlq_seq: Option<u64>,
    /// What the function wrote, line by line.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lines: Vec<String>,
}

/// RFC 3339 as chrono's `Serialize` writes it (UTC as `Z`, as many fraction digits as
/// needed), made into one string first: chrono's own hands the serializer a piece at a time,
/// each escaped on its own, which was half the cost of encoding a record.
fn rfc3339<S: serde::Serializer>(time: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&time.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

/// What [`Record::invocation`] needs besides the result.
pub struct Ran<'a> {
    pub function: &'a crate::config::FunctionConfig,
    pub node: &'a str,
    pub path: Path,
    pub request_id: &'a str,
    pub event: &'a crate::event::Event,
    pub event_seq: Option<u64>,
    pub attempt: u32,
    pub start: DateTime<Utc>,
}

impl Record {
    /// The record of one invocation that ended with `result`.
    pub fn invocation(ran: &Ran<'_>, result: &Result<crate::runtime::Response, crate::runtime::InvokeError>) -> Self {
        let (duration, init, lines, memory_bytes) = match result {
            Ok(r) => (r.duration, r.init, &r.logs, r.memory_bytes),
            Err(e) => (e.duration, e.init, &e.logs, 0),
        };
        let billed = super::cost::billed_ms(duration);
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        Self {
            kind: RecordKind::Invocation,
            function: ran.function.name.clone(),
            node: ran.node.to_owned(),
            path: ran.path,
            request_id: Some(ran.request_id.to_owned()),
            event_id: ran.event.id.clone(),
            attempt: ran.attempt,
            start: ran.start,
            end: ran.start + chrono::TimeDelta::from_std(duration).unwrap_or_default(),
            outcome: match result {
                Ok(_) => "success".to_owned(),
                Err(e) => e.kind.label().to_owned(),
            },
            error: result.as_ref().err().map(|e| e.message.clone()),
            error_type: result.as_ref().err().and_then(|e| e.error_type.clone()),
            duration_ms: ms(duration),
            billed_duration_ms: billed,
            memory_size_mb: ran.function.memory_mb,
            max_memory_used_mb: memory_bytes.div_ceil(1024 * 1024),
            init_duration_ms: init.map(ms),
            traceparent: ran.event.traceparent.clone(),
            event_seq: ran.event_seq,
            dlq_seq: None,
            lines: lines.clone(),
        }
    }

    /// A record of something that happened to an event or call without an invocation
    /// (a dead letter, a throttle), at `at`.
    pub fn note(kind: RecordKind, function: &crate::config::FunctionConfig, node: &str, path: Path, event: &crate::event::Event, at: DateTime<Utc>) -> Self {
        Self {
            kind,
            function: function.name.clone(),
            node: node.to_owned(),
            path,
            request_id: None,
            event_id: event.id.clone(),
            attempt: 0,
            start: at,
            end: at,
            outcome: String::new(),
            error: None,
            error_type: None,
            duration_ms: 0.0,
            billed_duration_ms: 0,
            memory_size_mb: function.memory_mb,
            max_memory_used_mb: 0,
            init_duration_ms: None,
            traceparent: event.traceparent.clone(),
            event_seq: None,
            dlq_seq: None,
            lines: Vec::new(),
        }
    }

    pub fn cold(&self) -> bool {
        self.init_duration_ms.is_some()
    }

    /// GB-seconds billed for this record (0 for records that are not invocations).
    pub fn gb_seconds(&self) -> f64 {
        match self.kind {
            RecordKind::Invocation => super::cost::gb_seconds(u64::from(self.memory_size_mb), self.billed_duration_ms),
            _ => 0.0,
        }
    }

    /// The records of one message: newline-delimited JSON. Lines that are not records are
    /// skipped.
    pub fn parse_all(payload: &[u8]) -> impl Iterator<Item = Record> + '_ {
        payload.split(|b| *b == b'\n').filter(|l| !l.is_empty()).filter_map(|l| serde_json::from_slice(l).ok())
    }
}

/// This process's name in logs and records: host name and process id.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_owned()).unwrap_or_default();
    format!("{host}:{}", std::process::id())
}

/// Where records go: a bounded queue to the publisher task and the metrics, or nowhere
/// ([`LogSink::default`]).
#[derive(Clone)]
pub struct LogSink {
    /// `None`: records are neither stored nor counted.
    queue: Option<mpsc::Sender<Record>>,
    dropped: Arc<AtomicU64>,
    node: Arc<str>,
}

impl Default for LogSink {
    /// Keeps and counts nothing (the benchmark's baseline, tools without a bus).
    fn default() -> Self {
        Self { queue: None, dropped: Arc::default(), node: node_name().into() }
    }
}

impl LogSink {
    /// Starts the publisher; it runs until `shutdown`, then publishes what is queued.
    pub fn start(bus: Bus, shutdown: CancellationToken) -> (Self, tokio::task::JoinHandle<()>) {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let task = tokio::spawn(publish(bus, receiver, dropped.clone(), shutdown));
        (Self { queue: Some(queue), dropped, node: node_name().into() }, task)
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether records are kept (so worth making).
    pub fn enabled(&self) -> bool {
        self.queue.is_some()
    }

    /// Counts an invocation of `function` as running (in the metrics) until the guard drops.
    pub fn in_flight(&self, function: &str) -> super::metrics::InFlight {
        if self.enabled() { super::metrics::in_flight(function) } else { super::metrics::InFlight::none() }
    }

    /// Queues `record` (and counts it in the metrics); never waits.
    pub fn write(&self, record: Record) {
        let Some(queue) = &self.queue else { return };
        super::metrics::record(&record);
        if queue.try_send(record).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

async fn publish(bus: Bus, mut receiver: mpsc::Receiver<Record>, dropped: Arc<AtomicU64>, shutdown: CancellationToken) {
    let mut acks = FuturesUnordered::new();
    let mut last_drop_report = Instant::now();
    let mut failing = false;
    let mut packer = Packer::default();
    loop {
        let first = tokio::select! {
            biased;
            record = receiver.recv() => record,
            Some(result) = acks.next(), if !acks.is_empty() => {
                note_ack(result, &mut failing);
                continue;
            }
            () = shutdown.cancelled() => {
                receiver.close();
                receiver.recv().await
            }
        };
        let Some(first) = first else { break };
        packer.add(&first);
        // The records of the next few milliseconds are taken together once they have
        // waited: listening for each would wake this task (and often a parked worker thread)
        // once per invocation.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => {}
            () = tokio::time::sleep(LINGER) => {}
        }
        let mut records = 1;
        while records < MAX_BATCH && packer.bytes < MAX_BATCH_BYTES {
            let Ok(record) = receiver.try_recv() else { break };
            packer.add(&record);
            records += 1;
            // No long stretch of encoding on a thread that also serves requests.
            if records % YIELD_EVERY == 0 {
                tokio::task::yield_now().await;
            }
        }
        for (subject, payload) in packer.take() {
            while acks.len() >= ACKS_IN_FLIGHT {
                if let Some(result) = acks.next().await {
                    note_ack(result, &mut failing);
                }
            }
            match bus.js.publish(subject, payload).await {
                Ok(ack) => acks.push(std::future::IntoFuture::into_future(ack)),
                Err(error) => note_ack(Err(error), &mut failing),
            }
        }
        let count = dropped.load(Ordering::Relaxed);
        if count > 0 && last_drop_report.elapsed() >= DROP_REPORT_EVERY {
            dropped.fetch_sub(count, Ordering::Relaxed);
            last_drop_report = Instant::now();
            warn!(records = count, "Invocation log records were dropped: SLUICE_LOGS is not keeping up; invocations were not slowed.");
        }
    }
    // Stopping: what was sent is waited for, briefly.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(result) = acks.next().await {
            note_ack(result, &mut failing);
        }
    })
    .await;
}

/// Records of `SLUICE_LOGS` for `function` (every function with `None`) stored since
/// `since`, in stream order, and the stream sequence of the last message read (to follow
/// on from). No stream yet (nothing ran) reads as no records.
pub async fn read(bus: &Bus, function: Option<&str>, since: DateTime<Utc>) -> anyhow::Result<(Vec<Record>, u64)> {
    use async_nats::jetstream::consumer;
    let stream = match bus.js.get_stream(LOGS_STREAM).await {
        Ok(stream) => stream,
        Err(error) if matches!(error.kind(), async_nats::jetstream::context::GetStreamErrorKind::JetStream(e) if e.error_code() == async_nats::jetstream::ErrorCode::STREAM_NOT_FOUND) => {
            return Ok((Vec::new(), 0));
        }
        Err(error) => return Err(anyhow::Error::new(error).context(format!("opening stream {LOGS_STREAM}"))),
    };
    let config = consumer::pull::Config {
        filter_subject: function.map_or_else(|| format!("{LOGS_PREFIX}>"), logs_subject),
        deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time: since },
        ..Default::default()
    };
    let mut records = Vec::new();
    let mut last = 0;
    crate::bus::scan_stream(&stream, config, |message| {
        if let Ok(info) = message.info() {
            last = last.max(info.stream_sequence);
        }
        records.extend(Record::parse_all(&message.payload));
        Ok(())
    })
    .await?;
    Ok((records, last))
}

/// Every record of `SLUICE_LOGS` whose message mentions `needle` (an event id): messages
/// are searched as bytes and only those that hold it are parsed.
pub async fn read_mentioning(bus: &Bus, needle: &str) -> anyhow::Result<Vec<Record>> {
    use async_nats::jetstream::consumer;
    let Ok(stream) = bus.js.get_stream(LOGS_STREAM).await else { return Ok(Vec::new()) };
    let config = consumer::pull::Config { filter_subject: format!("{LOGS_PREFIX}>"), ..Default::default() };
    let finder = memchr::memmem::Finder::new(needle.as_bytes());
    let mut records = Vec::new();
    crate::bus::scan_stream(&stream, config, |message| {
        if finder.find(&message.payload).is_some() {
            records.extend(Record::parse_all(&message.payload));
        }
        Ok(())
    })
    .await?;
    Ok(records)
}

/// New records for `function` (or all) stored after sequence `after`, as they come.
pub async fn follow(bus: &Bus, function: Option<&str>, after: u64) -> anyhow::Result<impl futures::Stream<Item = anyhow::Result<Vec<Record>>>> {
    use anyhow::Context as _;
    use async_nats::jetstream::consumer;
    let stream = bus.js.get_stream(LOGS_STREAM).await.with_context(|| format!("opening stream {LOGS_STREAM}"))?;
    let reader = stream
        .create_consumer(consumer::pull::OrderedConfig {
            filter_subject: function.map_or_else(|| format!("{LOGS_PREFIX}>"), logs_subject),
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: after + 1 },
            ..Default::default()
        })
        .await
        .with_context(|| format!("following {LOGS_STREAM}"))?;
    let messages = reader.messages().await.with_context(|| format!("following {LOGS_STREAM}"))?;
    Ok(messages.map(|message| {
        let message = message.map_err(|e| anyhow::anyhow!("following {LOGS_STREAM}: {e}"))?;
        Ok(Record::parse_all(&message.payload).collect())
    }))
}

/// Logs the first failure to store records and the recovery, not every one.
fn note_ack<E: std::fmt::Display>(result: Result<async_nats::jetstream::publish::PublishAck, E>, failing: &mut bool) {
    match result {
        Ok(_) if *failing => {
            *failing = false;
            tracing::info!(stream = LOGS_STREAM, "Invocation log records are stored again.");
        }
        Ok(_) => {}
        Err(error) if !*failing => {
            *failing = true;
            warn!(stream = LOGS_STREAM, %error, "Cannot store invocation log records; they are dropped until the stream accepts them again.");
        }
        Err(_) => {}
    }
}

/// Records packed into messages of newline-delimited JSON, per function, each message below
/// [`PACK_BYTES`] (one record may be larger).
#[derive(Default)]
struct Packer {
    by_function: HashMap<String, Vec<BytesMut>>,
    /// Bytes packed so far.
    bytes: usize,
}

impl Packer {
    fn add(&mut self, record: &Record) {
        if !self.by_function.contains_key(&record.function) {
            self.by_function.insert(record.function.clone(), Vec::new());
        }
        let Some(messages) = self.by_function.get_mut(&record.function) else { return };
        if messages.is_empty() {
            messages.push(BytesMut::with_capacity(INITIAL_MESSAGE_BYTES));
        }
        let Some(last) = messages.last_mut() else { return };
        // Encoded straight into the message; a record that takes it to the size limit starts
        // the next one instead (the split shares the buffer, nothing is copied).
        let before = last.len();
        if serde_json::to_writer((&mut *last).writer(), record).is_err() {
            last.truncate(before);
            return;
        }
        last.put_u8(b'\n');
        self.bytes += last.len() - before;
        if before > 0 && last.len() >= PACK_BYTES {
            let next = last.split_off(before);
            messages.push(next);
        }
    }

    /// The messages packed so far, with their subjects; the packer is empty after.
    fn take(&mut self) -> Vec<(String, Bytes)> {
        self.bytes = 0;
        self.by_function
            .drain()
            .flat_map(|(function, messages)| {
                let subject = logs_subject(&function);
                messages.into_iter().map(move |m| (subject.clone(), m.freeze()))
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn record(function: &str, n: u32) -> Record {
        let at = Utc::now();
        Record {
            kind: RecordKind::Invocation,
            function: function.to_owned(),
            node: "host:1".to_owned(),
            path: Path::Event,
            request_id: Some(format!("r{n}")),
            event_id: format!("e{n}"),
            attempt: 1,
            start: at,
            end: at,
            outcome: "success".to_owned(),
            error: None,
            error_type: None,
            duration_ms: 1.5,
            billed_duration_ms: 2,
            memory_size_mb: 128,
            max_memory_used_mb: 3,
            init_duration_ms: None,
            traceparent: String::new(),
            event_seq: Some(u64::from(n)),
            dlq_seq: None,
            lines: vec![format!("line {n}"), "with \"quotes\"\tand tabs".to_owned()],
        }
    }

    #[test]
    fn times_are_written_as_chrono_writes_them() {
        let mut record = record("f", 1);
        for (seconds, nanos) in [(1_764_230_400, 0), (1_764_230_400, 123_000_000), (1_764_230_400, 123_456_000), (1_764_230_400, 123_456_789)] {
            let time = DateTime::from_timestamp(seconds, nanos).unwrap();
            record.start = time;
            record.end = time;
            let json: serde_json::Value = serde_json::to_value(&record).unwrap();
            let chrono_writes = serde_json::to_value(time).unwrap();
            assert_eq!(json["start"], chrono_writes);
            assert_eq!(json["end"], chrono_writes);
            let back: Record = serde_json::from_value(json).unwrap();
            assert_eq!(back.start, time);
        }
    }

    #[test]
    fn packed_records_read_back_per_function() {
        let records: Vec<Record> = (0..5).map(|n| record(if n % 2 == 0 { "a" } else { "b" }, n)).collect();
        let expected = records.clone();
        let mut packer = Packer::default();
        records.iter().for_each(|r| packer.add(r));
        let messages = packer.take();
        assert_eq!(messages.len(), 2, "one message per function");
        assert!(packer.take().is_empty() && packer.bytes == 0, "taking empties the packer");
        let mut read: Vec<Record> = Vec::new();
        for (subject, payload) in &messages {
            let here: Vec<Record> = Record::parse_all(payload).collect();
            assert!(here.iter().all(|r| subject == &logs_subject(&r.function)), "{subject}");
            read.extend(here);
        }
        read.sort_by_key(|r| r.event_seq);
        assert_eq!(read, expected);
    }

    #[test]
    fn large_batches_are_split_below_the_pack_size() {
        let mut big = record("a", 1);
        big.lines = vec!["x".repeat(100 * 1024)];
        let mut packer = Packer::default();
        for _ in 0..4 {
            packer.add(&big);
        }
        assert!(packer.bytes > 4 * 100 * 1024);
        let messages = packer.take();
        assert_eq!(messages.len(), 2, "two records of ~100 KiB per message");
        assert!(messages.iter().all(|(_, m)| m.len() < PACK_BYTES));
        assert_eq!(messages.iter().map(|(_, m)| Record::parse_all(m).count()).sum::<usize>(), 4);
    }

    #[test]
    fn gb_seconds_are_billed_on_configured_memory() {
        let mut r = record("a", 1);
        r.memory_size_mb = 512;
        r.billed_duration_ms = 200;
        assert!((r.gb_seconds() - 0.1).abs() < 1e-12);
        r.kind = RecordKind::DeadLetter;
        assert!(r.gb_seconds().abs() < f64::EPSILON);
    }
}
