//! The dead-letter workbench: read, replay and purge entries of `SLUICE_DLQ`.
//!
//! Guarantees:
//! - Replay removes an entry only after JetStream acknowledged its re-delivery, so a replay
//!   interrupted at any point leaves every entry either still in the DLQ or re-delivered
//!   (possibly both, never neither).
//! - A re-delivery's `Nats-Msg-Id` is derived from the entry (`<event id>:replay:<DLQ id>`),
//!   so running the same replay again within the duplicate window does not deliver twice.
//! - A replayed event keeps its event id and attributes, carries `sluice-replay-of` and
//!   `sluice-replays`, and starts with a fresh attempt budget (it is a new stream message).

use std::collections::BTreeMap;

use anyhow::Context as _;
use async_nats::jetstream::{consumer, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::bus::{self, Bus};
use crate::dispatch::dlq as record;
use crate::event::{self, Event, NATS_MSG_ID};

/// Header on a re-delivered event: the DLQ id it came from.
pub const REPLAY_OF: &str = "sluice-replay-of";
/// Header on a re-delivered event: how many times it has been replayed.
pub const REPLAYS: &str = "sluice-replays";
/// Header on a re-delivered event: the topic subject it was first published to, so a later
/// `--to-topic` replay of a direct re-delivery still knows it.
pub const TOPIC_SUBJECT: &str = "sluice-topic-subject";

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    /// The `SLUICE_DLQ` sequence.
    pub id: u64,
    pub function: String,
    /// The topic the event was published to; `None` for a direct delivery.
    pub topic: Option<String>,
    /// The subject it was delivered on (`sluice.events.<topic>` or `sluice.direct.<function>`).
    pub original_subject: String,
    pub event_id: String,
    pub event_type: String,
    pub event_source: String,
    pub event_time: DateTime<Utc>,
    pub event_subject: Option<String>,
    pub content_type: Option<String>,
    pub error: String,
    pub error_kind: String,
    /// Lambda runtimes: the handler's `errorType`; `error` is then `errorType: errorMessage`.
    pub error_type: Option<String>,
    pub attempts: u32,
    pub first_attempt: Option<DateTime<Utc>>,
    pub failed_at: DateTime<Utc>,
    /// How many times this event was replayed before it failed this time.
    pub replays: u32,
    /// The DLQ id of the entry whose replay produced this one.
    pub replay_of: Option<u64>,
    pub trace_id: String,
    /// Every header, as stored.
    pub headers: BTreeMap<String, Vec<String>>,
    #[serde(skip)]
    pub body: Bytes,
    #[serde(skip)]
    event: Event,
}

impl Entry {
    fn from_stored(id: u64, subject: &str, headers: Option<&HeaderMap>, body: Bytes, stored: DateTime<Utc>) -> Self {
        let event = Event::from_message(headers, body.clone(), subject, bus::DLQ_STREAM, id, stored);
        let ext = |name: &str| event.extension(name).map(str::to_owned);
        let time = |name: &str| ext(name).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.with_timezone(&Utc));
        let original_subject = ext(record::ORIGINAL_SUBJECT).unwrap_or_default();
        let function = ext(record::FUNCTION)
            .unwrap_or_else(|| subject.strip_prefix(bus::DLQ_PREFIX).unwrap_or(subject).to_owned());
        let topic_subject = ext(TOPIC_SUBJECT).unwrap_or_else(|| original_subject.clone());
        let mut all = BTreeMap::new();
        if let Some(headers) = headers {
            for (name, values) in headers.iter() {
                let name: &str = name.as_ref();
                all.insert(name.to_owned(), values.iter().map(|v| v.as_str().to_owned()).collect());
            }
        }
        Self {
            id,
            function,
            topic: bus::subject_topic(&topic_subject).map(str::to_owned),
            original_subject,
            event_id: event.id.clone(),
            event_type: event.ty.clone(),
            event_source: event.source.clone(),
            event_time: event.time,
            event_subject: event.subject.clone(),
            content_type: event.content_type.clone(),
            error: ext(record::ERROR).unwrap_or_default(),
            error_kind: ext(record::ERROR_KIND).unwrap_or_default(),
            error_type: ext(record::ERROR_TYPE),
            attempts: ext(record::ATTEMPTS).and_then(|a| a.parse().ok()).unwrap_or(0),
            first_attempt: time(record::FIRST_ATTEMPT),
            failed_at: time(record::FAILED_AT).unwrap_or(stored),
            replays: ext(REPLAYS).and_then(|r| r.parse().ok()).unwrap_or(0),
            replay_of: ext(REPLAY_OF).and_then(|r| r.parse().ok()),
            trace_id: event.trace_id().to_owned(),
            headers: all,
            body,
            event,
        }
    }

    /// The entry with its body fetched from the object store, when it was stored there.
    async fn resolved(mut self, bus: &Bus) -> Self {
        let Some(headers) = self.stored_headers() else { return self };
        match bus.resolve_payload(Some(&headers), self.body.clone()).await {
            Ok(body) => {
                self.body = body.clone();
                self.event.data = body;
                self.event.extensions.retain(|(name, _)| !bus::payload::is_payload_header(name));
            }
            Err(error) => {
                tracing::warn!(dlq_id = self.id, %error, "Cannot read the stored body of a dead letter; showing it empty.");
            }
        }
        self
    }

    /// The stored headers as a map, when the body is in the object store.
    fn stored_headers(&self) -> Option<HeaderMap> {
        let name = self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(bus::payload::PAYLOAD_REF))?;
        let mut headers = HeaderMap::new();
        headers.insert(bus::payload::PAYLOAD_REF, name.1.first()?.as_str());
        Some(headers)
    }

    /// The first line of the error.
    pub fn error_line(&self) -> &str {
        self.error.lines().next().unwrap_or_default()
    }

    /// The event to re-deliver: the original attributes and body, without the failure
    /// headers, with the replay bookkeeping.
    fn replay_event(&self) -> Event {
        let mut event = self.event.clone();
        event.extensions.retain(|(name, _)| !record::is_failure_header(name));
        event.set_extension(REPLAY_OF, self.id.to_string());
        event.set_extension(REPLAYS, (self.replays + 1).to_string());
        if bus::subject_topic(&self.original_subject).is_some() {
            event.set_extension(TOPIC_SUBJECT, self.original_subject.clone());
        }
        event
    }
}

/// Which entries a command works on.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub function: Option<String>,
    /// Case-insensitive substring of the error.
    pub error: Option<String>,
    /// Entries that failed at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Entries that failed before this time.
    pub before: Option<DateTime<Utc>>,
}

impl Filter {
    fn matches(&self, entry: &Entry) -> bool {
        self.function.as_deref().is_none_or(|f| entry.function == f)
            && self.error.as_deref().is_none_or(|e| entry.error.to_lowercase().contains(&e.to_lowercase()))
            && self.since.is_none_or(|t| entry.failed_at >= t)
            && self.before.is_none_or(|t| entry.failed_at < t)
    }
}

/// The dead-letter stream.
pub struct Dlq {
    bus: Bus,
    stream: stream::Stream,
}

impl Dlq {
    pub async fn open(bus: &Bus) -> anyhow::Result<Self> {
        let stream = bus.js.get_stream(bus::DLQ_STREAM).await.context("opening stream SLUICE_DLQ")?;
        Ok(Self { bus: bus.clone(), stream })
    }

    /// Every entry matching `filter`, oldest first.
    pub async fn entries(&self, filter: &Filter) -> anyhow::Result<Vec<Entry>> {
        let deliver_policy = match filter.since {
            // Stored no earlier than it failed: a safe lower bound for the scan.
            Some(since) => consumer::DeliverPolicy::ByStartTime { start_time: since },
            None => consumer::DeliverPolicy::All,
        };
        let filter_subject = filter.function.as_deref().map(bus::dlq_subject).unwrap_or_default();
        let mut entries = Vec::new();
        let config = consumer::pull::Config { deliver_policy, filter_subject, ..Default::default() };
        bus::scan_stream(&self.stream, config, |message| {
            let info = message.info().map_err(|e| anyhow::anyhow!("reading SLUICE_DLQ: {e}"))?;
            let (seq, stored) = (info.stream_sequence, info.published);
            let entry = Entry::from_stored(seq, &message.subject, message.headers.as_ref(), message.payload.clone(), stored);
            // Bodies in the object store are fetched by `entry` and `replay`, not for a
            // listing.
            if filter.matches(&entry) {
                entries.push(entry);
            }
            Ok(())
        })
        .await?;
        entries.sort_by_key(|e| e.id);
        Ok(entries)
    }

    /// One entry by id; `None` when there is none.
    pub async fn entry(&self, id: u64) -> anyhow::Result<Option<Entry>> {
        match self.stream.get_raw_message(id).await {
            Ok(message) => Ok(Some(
                Entry::from_stored(id, &message.subject, Some(&message.headers), message.payload, message.time)
                    .resolved(&self.bus)
                    .await,
            )),
            Err(error) => {
                use async_nats::jetstream::stream::RawMessageErrorKind;
                if matches!(error.kind(), RawMessageErrorKind::NoMessageFound) {
                    Ok(None)
                } else {
                    Err(anyhow::anyhow!("reading DLQ entry {id}: {error}"))
                }
            }
        }
    }

    /// Re-delivers one entry (to its function, or to its topic) and, once that is
    /// acknowledged, removes it. Returns where it went.
    pub async fn replay(&self, entry: &Entry, to_topic: bool) -> anyhow::Result<Replayed> {
        let subject = if to_topic {
            match &entry.topic {
                Some(topic) => bus::topic_subject(topic),
                None => anyhow::bail!(
                    "DLQ entry {} was a direct delivery to {}; it has no topic to re-publish to (replay it without --to-topic)",
                    entry.id,
                    entry.function
                ),
            }
        } else {
            bus::direct_subject(&entry.function)
        };
        let event = if entry.stored_headers().is_some() && entry.body.is_empty() {
            entry.clone().resolved(&self.bus).await.replay_event()
        } else {
            entry.replay_event()
        };
        let mut headers = event.to_headers();
        headers.insert(NATS_MSG_ID, format!("{}:replay:{}", entry.event_id, entry.id).as_str());
        let published = self.bus.publish_raw(subject.clone(), headers, event.data.clone()).await?;
        let removed = self
            .stream
            .delete_message(entry.id)
            .await
            .map_err(|e| anyhow::anyhow!("DLQ entry {} was re-delivered but could not be removed: {e}", entry.id))?;
        if let Some(headers) = entry.stored_headers() {
            self.bus.remove_payload(&headers).await;
        }
        Ok(Replayed { id: entry.id, subject, seq: published.seq, duplicate: published.duplicate, removed })
    }

    /// Removes one entry; false when it was already gone.
    pub async fn remove(&self, id: u64) -> anyhow::Result<bool> {
        match self.stream.delete_message(id).await {
            Ok(removed) => Ok(removed),
            Err(error) if error.to_string().contains("no message found") => Ok(false),
            Err(error) => Err(anyhow::anyhow!("removing DLQ entry {id}: {error}")),
        }
    }

    /// Removes every entry of one function (or of all) at once.
    pub async fn purge_all(&self, function: Option<&str>) -> anyhow::Result<u64> {
        let response = match function {
            Some(function) => self.stream.purge().filter(bus::dlq_subject(function)).await,
            None => self.stream.purge().await,
        }
        .map_err(|e| anyhow::anyhow!("purging SLUICE_DLQ: {e}"))?;
        Ok(response.purged)
    }
}

/// Where a replayed entry went.
#[derive(Debug, Clone, Serialize)]
pub struct Replayed {
    pub id: u64,
    pub subject: String,
    /// Its sequence in `SLUICE_EVENTS`.
    pub seq: u64,
    /// JetStream already had this re-delivery (an earlier, interrupted replay).
    pub duplicate: bool,
    pub removed: bool,
}

/// Per-function summary for `sluice dlq stats`.
#[derive(Debug, Clone, Serialize)]
pub struct FunctionStats {
    pub function: String,
    pub entries: usize,
    pub oldest_failed_at: DateTime<Utc>,
    pub oldest_age_secs: i64,
    /// The most frequent errors (first line), most frequent first, at most three.
    pub top_errors: Vec<ErrorCount>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ErrorCount {
    pub error: String,
    pub count: usize,
}

pub fn stats(entries: &[Entry], now: DateTime<Utc>) -> Vec<FunctionStats> {
    let mut by_function: BTreeMap<&str, Vec<&Entry>> = BTreeMap::new();
    for entry in entries {
        by_function.entry(&entry.function).or_default().push(entry);
    }
    by_function
        .into_iter()
        .map(|(function, entries)| {
            let oldest = entries.iter().map(|e| e.failed_at).min().unwrap_or(now);
            let mut errors: BTreeMap<(&str, &str), usize> = BTreeMap::new();
            for entry in &entries {
                *errors.entry((entry.error_kind.as_str(), entry.error_line())).or_default() += 1;
            }
            let mut top: Vec<ErrorCount> = errors
                .into_iter()
                .map(|((kind, error), count)| ErrorCount {
                    error: if kind.is_empty() { error.to_owned() } else { format!("{kind}: {error}") },
                    count,
                })
                .collect();
            top.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.error.cmp(&b.error)));
            top.truncate(3);
            FunctionStats {
                function: function.to_owned(),
                entries: entries.len(),
                oldest_failed_at: oldest,
                oldest_age_secs: (now - oldest).num_seconds().max(0),
                top_errors: top,
            }
        })
        .collect()
}

/// Parses `--since`/`--older-than` style times: a duration back from now ("10m", "7d") or
/// an RFC 3339 timestamp.
pub fn parse_time(text: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, String> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let duration = humantime::parse_duration(text)
        .map_err(|_| format!("{text:?} is neither a duration (10m, 2h, 7d) nor an RFC 3339 time"))?;
    let duration = chrono::Duration::from_std(duration).map_err(|_| format!("{text:?} is too long"))?;
    now.checked_sub_signed(duration).ok_or_else(|| format!("{text:?} is too long"))
}

/// The body for people: pretty JSON, text, or a hex dump of bytes that are neither.
pub fn render_body(body: &[u8]) -> (&'static str, String) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        return ("json", serde_json::to_string_pretty(&value).unwrap_or_default());
    }
    match std::str::from_utf8(body) {
        Ok(text) => ("text", text.to_owned()),
        Err(_) => ("binary", hex_dump(body)),
    }
}

fn hex_dump(bytes: &[u8]) -> String {
    let mut out = String::new();
    for (i, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk.iter().map(|&b| if b.is_ascii_graphic() || b == b' ' { b as char } else { '.' }).collect();
        out.push_str(&format!("{:08x}  {:<48} {ascii}\n", i * 16, hex.join(" ")));
    }
    out
}

/// The body for scripts: parsed JSON, a string, or base64.
pub fn json_body(body: &[u8]) -> (&'static str, serde_json::Value) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        return ("json", value);
    }
    match std::str::from_utf8(body) {
        Ok(text) => ("text", serde_json::Value::String(text.to_owned())),
        Err(_) => ("base64", serde_json::Value::String(base64(body))),
    }
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The event attributes of an entry, for display.
pub fn attributes(entry: &Entry) -> Vec<(&'static str, String)> {
    let mut out = vec![
        (event::CE_ID, entry.event_id.clone()),
        (event::CE_TYPE, entry.event_type.clone()),
        (event::CE_SOURCE, entry.event_source.clone()),
        (event::CE_TIME, entry.event_time.to_rfc3339()),
    ];
    if let Some(subject) = &entry.event_subject {
        out.push((event::CE_SUBJECT, subject.clone()));
    }
    if let Some(content_type) = &entry.content_type {
        out.push((event::CONTENT_TYPE, content_type.clone()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_parse_as_durations_or_timestamps() {
        let now = DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(parse_time("1d", now).unwrap().to_rfc3339(), "2026-01-09T00:00:00+00:00");
        assert_eq!(parse_time("2026-01-01T00:00:00Z", now).unwrap().to_rfc3339(), "2026-01-01T00:00:00+00:00");
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn bodies_render_safely() {
        assert_eq!(render_body(br#"{"a":1}"#).0, "json");
        assert_eq!(render_body(b"plain").0, "text");
        let (kind, dump) = render_body(&[0xff, 0x00, b'a']);
        assert_eq!(kind, "binary");
        assert!(dump.starts_with("00000000  ff 00 61"), "{dump}");
        assert_eq!(json_body(&[0xff, 0x00, b'a']), ("base64", serde_json::Value::String("/wBh".into())));
        assert_eq!(base64(b"hello"), "aGVsbG8=");
    }

    #[test]
    fn base64_is_standard_and_padded() {
        // RFC 4648 section 10 vectors: every padding case (none, one `=`, two `=`).
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), encoded, "{plain:?}");
        }
        // The standard alphabet's last two characters (`+`, `/`), not the URL-safe ones.
        assert_eq!(base64(&[0xfb, 0xff, 0xbf]), "+/+/");
        assert_eq!(base64(&[0xff, 0x00, b'a']), "/wBh");
    }

    #[test]
    fn stats_rank_errors() {
        let now = Utc::now();
        let mk = |id: u64, function: &str, error: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(record::FUNCTION, function);
            headers.insert(record::ERROR, error);
            headers.insert(record::FAILED_AT, (now - chrono::Duration::seconds(id as i64 * 10)).to_rfc3339().as_str());
            Entry::from_stored(id, "sluice.dlq.x", Some(&headers), Bytes::new(), now)
        };
        let entries = vec![mk(1, "a", "boom"), mk(2, "a", "boom"), mk(3, "a", "bang"), mk(4, "b", "x")];
        let stats = stats(&entries, now);
        assert_eq!(stats.len(), 2);
        assert_eq!(stats[0].function, "a");
        assert_eq!(stats[0].entries, 3);
        assert_eq!(stats[0].top_errors[0].error, "boom");
        assert_eq!(stats[0].top_errors[0].count, 2);
        assert_eq!(stats[0].oldest_age_secs, 30);
    }

    fn entry_at(id: u64, function: &str, error: &str, failed_at: DateTime<Utc>) -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert(event::CE_ID, format!("e-{id}").as_str());
        headers.insert(record::FUNCTION, function);
        headers.insert(record::ERROR, error);
        headers.insert(record::ERROR_KIND, "error");
        headers.insert(record::ATTEMPTS, "3");
        headers.insert(record::ORIGINAL_SUBJECT, "sluice.events.orders.created");
        headers.insert(record::FAILED_AT, failed_at.to_rfc3339().as_str());
        headers.insert("tenant", "acme");
        Entry::from_stored(id, &bus::dlq_subject(function), Some(&headers), Bytes::from_static(b"{}"), failed_at)
    }

    #[test]
    fn filters_select_by_function_error_and_time_bounds() {
        let at = DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z").unwrap().with_timezone(&Utc);
        let entry = entry_at(1, "orders", "Exited With Status 1", at);
        let second = chrono::Duration::seconds(1);
        let matches = |filter: Filter| filter.matches(&entry);
        assert!(matches(Filter::default()));
        assert!(matches(Filter { function: Some("orders".into()), ..Filter::default() }));
        assert!(!matches(Filter { function: Some("order".into()), ..Filter::default() }), "function names match whole");
        assert!(matches(Filter { error: Some("with status".into()), ..Filter::default() }), "errors match in any case");
        assert!(!matches(Filter { error: Some("timeout".into()), ..Filter::default() }));
        // --since includes its instant, --older-than (before) excludes it.
        assert!(matches(Filter { since: Some(at), ..Filter::default() }));
        assert!(!matches(Filter { since: Some(at + second), ..Filter::default() }));
        assert!(matches(Filter { since: Some(at - second), ..Filter::default() }));
        assert!(!matches(Filter { before: Some(at), ..Filter::default() }));
        assert!(matches(Filter { before: Some(at + second), ..Filter::default() }));
        assert!(!matches(Filter { before: Some(at - second), ..Filter::default() }));
        assert!(!matches(Filter { function: Some("orders".into()), error: Some("timeout".into()), ..Filter::default() }), "all conditions hold");
        assert!(!matches(Filter { function: Some("other".into()), since: Some(at), ..Filter::default() }));
        assert!(!matches(Filter { since: Some(at), before: Some(at), ..Filter::default() }));
    }

    #[test]
    fn entries_read_the_dead_letter_headers() {
        let at = DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z").unwrap().with_timezone(&Utc);
        let entry = entry_at(7, "orders", "boom", at);
        assert_eq!(entry.function, "orders");
        assert_eq!(entry.topic.as_deref(), Some("orders.created"));
        assert_eq!(entry.event_id, "e-7");
        assert_eq!(entry.attempts, 3);
        assert_eq!(entry.error_kind, "error");
        assert_eq!(entry.error_line(), "boom");
        assert_eq!(entry.failed_at, at);
        assert_eq!(entry.replays, 0);
        assert_eq!(entry.replay_of, None);
        assert!(entry.stored_headers().is_none(), "the body is inline");
        // Without a function header the subject names it.
        let bare = Entry::from_stored(2, "sluice.dlq.billing", None, Bytes::new(), at);
        assert_eq!(bare.function, "billing");
        assert_eq!(bare.failed_at, at);
    }

    #[test]
    fn a_replayed_event_drops_the_failure_and_counts_replays() {
        let at = Utc::now();
        let entry = entry_at(7, "orders", "boom", at);
        let replay = entry.replay_event();
        assert_eq!(replay.id, "e-7");
        assert_eq!(replay.extension(REPLAY_OF), Some("7"));
        assert_eq!(replay.extension(REPLAYS), Some("1"));
        assert_eq!(replay.extension(TOPIC_SUBJECT), Some("sluice.events.orders.created"));
        assert_eq!(replay.extension("tenant"), Some("acme"), "user headers travel");
        for failure in [record::ERROR, record::ERROR_KIND, record::ATTEMPTS, record::FUNCTION, record::FAILED_AT] {
            assert_eq!(replay.extension(failure), None, "{failure}");
        }
        // A replay of a replay counts on.
        let mut headers = replay.to_headers();
        headers.insert(record::FUNCTION, "orders");
        let again = Entry::from_stored(9, "sluice.dlq.orders", Some(&headers), Bytes::new(), at);
        assert_eq!(again.replays, 1);
        assert_eq!(again.replay_of, Some(7));
        assert_eq!(again.replay_event().extension(REPLAYS), Some("2"));
        // A direct delivery has no topic to go back to.
        let mut headers = HeaderMap::new();
        headers.insert(record::ORIGINAL_SUBJECT, "sluice.direct.orders");
        let direct = Entry::from_stored(3, "sluice.dlq.orders", Some(&headers), Bytes::new(), at);
        assert_eq!(direct.topic, None);
        assert_eq!(direct.replay_event().extension(TOPIC_SUBJECT), None);
    }

    #[test]
    fn hex_dumps_number_their_lines() {
        let bytes: Vec<u8> = (0u8..20).collect();
        let dump = hex_dump(&bytes);
        let lines: Vec<&str> = dump.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("00000000  00 01 02"), "{dump}");
        assert!(lines[1].starts_with("00000010  10 11 12 13"), "{dump}");
        // Printable characters and spaces show as themselves, the rest as dots.
        assert!(hex_dump(b"a b\x00~").ends_with(" a b.~\n"), "{}", hex_dump(b"a b\x00~"));
        let attributes = attributes(&entry_at(1, "f", "e", Utc::now()));
        assert!(attributes.iter().any(|(name, value)| *name == event::CE_ID && value == "e-1"));
    }
}
