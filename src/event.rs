//! The normalized event: CloudEvents 1.0 in binary mode over NATS.
//!
//! Attributes travel in headers (`ce-id`, `ce-source`, ...), the data is the message body.
//! `Nats-Msg-Id` carries the event id, so JetStream drops a second publish of the same event
//! within the stream's duplicate window. A message published by a plain NATS client with no
//! `ce-*` headers is still an event: its id comes from its stream position and its type is
//! [`RAW_TYPE`].

use std::borrow::Cow;

use async_nats::HeaderMap;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use rand::RngCore;

pub const CE_SPECVERSION: &str = "ce-specversion";
pub const CE_ID: &str = "ce-id";
pub const CE_SOURCE: &str = "ce-source";
pub const CE_TYPE: &str = "ce-type";
pub const CE_TIME: &str = "ce-time";
pub const CE_SUBJECT: &str = "ce-subject";
pub const CONTENT_TYPE: &str = "content-type";
pub const TRACEPARENT: &str = "traceparent";
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
pub const SPEC_VERSION: &str = "1.0";
/// Type given to messages that arrived without CloudEvents attributes.
pub const RAW_TYPE: &str = "sluice.raw";
pub const JSON: &str = "application/json";

/// The names above as header names, made once: a name given as `&str` is validated, looked
/// up among the standard names and copied at every insert and lookup, on every event.
mod name {
    use async_nats::HeaderName;

    pub static CE_SPECVERSION: HeaderName = HeaderName::from_static(super::CE_SPECVERSION);
    pub static CE_ID: HeaderName = HeaderName::from_static(super::CE_ID);
    pub static CE_SOURCE: HeaderName = HeaderName::from_static(super::CE_SOURCE);
    pub static CE_TYPE: HeaderName = HeaderName::from_static(super::CE_TYPE);
    pub static CE_TIME: HeaderName = HeaderName::from_static(super::CE_TIME);
    pub static CE_SUBJECT: HeaderName = HeaderName::from_static(super::CE_SUBJECT);
    pub static CONTENT_TYPE: HeaderName = HeaderName::from_static(super::CONTENT_TYPE);
    pub static TRACEPARENT: HeaderName = HeaderName::from_static(super::TRACEPARENT);
    pub static NATS_MSG_ID: HeaderName = HeaderName::from_static(super::NATS_MSG_ID);
}

/// Headers that describe the event itself; everything else is carried as an extension.
const OWN_HEADERS: &[&str] =
    &[CE_SPECVERSION, CE_ID, CE_SOURCE, CE_TYPE, CE_TIME, CE_SUBJECT, CONTENT_TYPE, TRACEPARENT, NATS_MSG_ID];

/// One event, as published and as handed to a function.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub id: String,
    pub source: String,
    pub ty: String,
    pub time: DateTime<Utc>,
    pub subject: Option<String>,
    pub content_type: Option<String>,
    /// W3C trace context; generated when the publisher sent none.
    pub traceparent: String,
    /// Other headers (CloudEvents extensions, user headers, `sluice-*` bookkeeping), in order.
    pub extensions: Vec<(String, String)>,
    pub data: Bytes,
}

impl Event {
    /// A new JSON event with a fresh id, the current time and a new trace.
    pub fn new(source: impl Into<String>, ty: impl Into<String>, data: Bytes) -> Self {
        Self {
            id: uuid_text(uuid::Uuid::now_v7()),
            source: source.into(),
            ty: ty.into(),
            time: Utc::now(),
            subject: None,
            content_type: Some(JSON.to_owned()),
            traceparent: new_traceparent(),
            extensions: Vec::new(),
            data,
        }
    }

    /// The headers of this event in CloudEvents binary mode, with `Nats-Msg-Id` = id.
    ///
    /// A header value cannot hold a line break: one in an attribute or extension (an MQTT
    /// topic, a `--subject` flag) is sent as a space.
    pub fn to_headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(name::CE_SPECVERSION.clone(), SPEC_VERSION);
        headers.insert(name::CE_ID.clone(), one_line(&self.id).as_ref());
        headers.insert(name::CE_SOURCE.clone(), one_line(&self.source).as_ref());
        headers.insert(name::CE_TYPE.clone(), one_line(&self.ty).as_ref());
        headers.insert(name::CE_TIME.clone(), self.time.to_rfc3339_opts(SecondsFormat::Micros, true));
        if let Some(subject) = &self.subject {
            headers.insert(name::CE_SUBJECT.clone(), one_line(subject).as_ref());
        }
        if let Some(content_type) = &self.content_type {
            headers.insert(name::CONTENT_TYPE.clone(), one_line(content_type).as_ref());
        }
        headers.insert(name::TRACEPARENT.clone(), one_line(&self.traceparent).as_ref());
        headers.insert(name::NATS_MSG_ID.clone(), one_line(&self.id).as_ref());
        for (name, value) in &self.extensions {
            // Names were validated when the event was built or came off the wire.
            if let Ok(name) = name.parse::<async_nats::HeaderName>() {
                headers.append(name, one_line(value).as_ref());
            }
        }
        headers
    }

    /// Rebuilds the event from a stored message. `stream`/`sequence`/`published` identify a
    /// message that carries no `ce-id` (a plain NATS publish).
    pub fn from_message(
        headers: Option<&HeaderMap>,
        data: Bytes,
        nats_subject: &str,
        stream: &str,
        sequence: u64,
        published: DateTime<Utc>,
    ) -> Self {
        // One pass over the headers: each looked up by name would hash it (SipHash) once
        // per lookup, for every event delivered.
        let looked_up = [&name::CE_ID, &name::CE_TYPE, &name::CE_SOURCE, &name::CE_TIME, &name::CONTENT_TYPE, &name::TRACEPARENT, &name::CE_SUBJECT];
        let mut found: [Option<&str>; 7] = [None; 7];
        let mut extensions = Vec::new();
        for (name, values) in headers.into_iter().flat_map(HeaderMap::iter) {
            if let Some(at) = looked_up.iter().position(|own| *own == name) {
                found[at] = values.first().map(|v| v.as_str()).filter(|v| !v.is_empty());
                continue;
            }
            let name: &str = name.as_ref();
            if OWN_HEADERS.iter().any(|own| own.eq_ignore_ascii_case(name)) {
                continue;
            }
            for value in values {
                extensions.push((name.to_owned(), value.as_str().to_owned()));
            }
        }
        extensions.sort();
        let [id, ty, source, time, content_type, traceparent, subject] = found;
        let id = id.map(str::to_owned);
        let raw = id.is_none();
        let id = id.unwrap_or_else(|| format!("{stream}-{sequence}"));
        let ty = ty.map_or_else(|| RAW_TYPE.to_owned(), str::to_owned);
        let source = source.map_or_else(|| format!("nats:{nats_subject}"), str::to_owned);
        let time = time.and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map_or(published, |t| t.with_timezone(&Utc));
        let content_type = content_type.map(str::to_owned).or_else(|| {
            (raw && serde_json::from_slice::<serde::de::IgnoredAny>(&data).is_ok()).then(|| JSON.to_owned())
        });
        let traceparent = traceparent.filter(|t| valid_traceparent(t)).map_or_else(new_traceparent, str::to_owned);
        Self { id, source, ty, time, subject: subject.map(str::to_owned), content_type, traceparent, extensions, data }
    }

    /// The value of an extension header.
    pub fn extension(&self, name: &str) -> Option<&str> {
        self.extensions.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Sets (replaces) an extension header.
    pub fn set_extension(&mut self, name: &str, value: impl Into<String>) {
        self.extensions.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.extensions.push((name.to_owned(), value.into()));
    }

    /// The 32-hex-digit trace id inside `traceparent`.
    pub fn trace_id(&self) -> &str {
        self.traceparent.split('-').nth(1).unwrap_or_default()
    }
}

/// `value` with each line break replaced by a space: async-nats panics on a header value
/// holding one.
fn one_line(value: &str) -> Cow<'_, str> {
    // Bytes, not chars: every header value of every publish passes here.
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        Cow::Owned(value.replace(['\r', '\n'], " "))
    } else {
        Cow::Borrowed(value)
    }
}

/// A UUID in its hyphenated lower-case form, written straight into the string (`to_string`
/// goes through `format!`; every event and every invocation makes one).
pub fn uuid_text(id: uuid::Uuid) -> String {
    id.hyphenated().encode_lower(&mut uuid::Uuid::encode_buffer()).to_owned()
}

/// A new W3C `traceparent`: version 00, random trace and span ids, sampled.
pub fn new_traceparent() -> String {
    let mut rng = rand::rng();
    // An all-zero id is invalid.
    let trace = (u128::from(rng.next_u64()) << 64 | u128::from(rng.next_u64())) | 1;
    let span = rng.next_u64() | 1;
    let mut buffer = [0u8; 32];
    traceparent(hex_text(&trace.to_be_bytes(), &mut buffer), span, "01")
}

/// A `traceparent` for work caused by `parent`: the same trace, a new span.
pub fn child_traceparent(parent: &str) -> String {
    let Some([_, trace, _, flags]) = traceparent_parts(parent) else { return new_traceparent() };
    traceparent(trace, rand::rng().next_u64() | 1, flags)
}

/// `00-<trace id>-<span id>-<flags>`: hex written straight into the string, not through
/// `format!` (a new event makes one for every publish).
fn traceparent(trace: &str, span: u64, flags: &str) -> String {
    let mut value = String::with_capacity(TRACEPARENT_LEN);
    value.push_str("00-");
    value.push_str(trace);
    value.push('-');
    let mut buffer = [0u8; 32];
    value.push_str(hex_text(&span.to_be_bytes(), &mut buffer));
    value.push('-');
    value.push_str(flags);
    value
}

const TRACEPARENT_LEN: usize = 55;

/// `bytes` (at most 16) in lower-case hex, written into `buffer`.
fn hex_text<'a>(bytes: &[u8], buffer: &'a mut [u8; 32]) -> &'a str {
    let hex = &mut buffer[..bytes.len() * 2];
    match hex::encode_to_slice(bytes, hex) {
        Ok(()) => std::str::from_utf8(hex).unwrap_or_default(),
        Err(_) => "",
    }
}

/// The four parts of a `traceparent` of the W3C shape `00-<32 hex>-<16 hex>-<2 hex>`.
fn traceparent_parts(value: &str) -> Option<[&str; 4]> {
    let mut parts = value.split('-');
    let found = [parts.next()?, parts.next()?, parts.next()?, parts.next()?];
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    let [version, trace, span, flags] = found;
    (parts.next().is_none()
        && hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(span, 16)
        && span.bytes().any(|b| b != b'0')
        && hex(flags, 2))
    .then_some(found)
}

/// Whether a `traceparent` has the W3C shape `00-<32 hex>-<16 hex>-<2 hex>`.
pub fn valid_traceparent(value: &str) -> bool {
    traceparent_parts(value).is_some()
}

/// Checks a user-supplied header (`--header K=V`) so it can travel in NATS headers.
pub fn validate_header(name: &str, value: &str) -> Result<(), String> {
    if name.parse::<async_nats::HeaderName>().is_err() || name.is_empty() {
        return Err(format!("{name:?} is not a valid header name: use ASCII without spaces, control characters or ':'"));
    }
    if value.contains(['\r', '\n']) {
        return Err(format!("the value of header {name:?} contains a line break"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip() {
        let mut event = Event::new("test", "t.created", Bytes::from_static(b"{\"a\":1}"));
        event.subject = Some("s".into());
        event.set_extension("x-user", "42");
        let headers = event.to_headers();
        assert_eq!(headers.get(NATS_MSG_ID).map(|v| v.as_str()), Some(event.id.as_str()));
        let back = Event::from_message(Some(&headers), event.data.clone(), "sluice.events.t", "S", 7, Utc::now());
        // ce-time is written with microsecond precision
        assert_eq!(back.time.timestamp_micros(), event.time.timestamp_micros());
        let mut back = back;
        back.time = event.time;
        assert_eq!(back, event);
    }

    #[test]
    fn plain_messages_get_an_identity() {
        let published = Utc::now();
        let event = Event::from_message(None, Bytes::from_static(b"{}"), "sluice.events.a", "SLUICE_EVENTS", 9, published);
        assert_eq!(event.id, "SLUICE_EVENTS-9");
        assert_eq!(event.ty, RAW_TYPE);
        assert_eq!(event.source, "nats:sluice.events.a");
        assert_eq!(event.time, published);
        assert_eq!(event.content_type.as_deref(), Some(JSON));
        assert!(valid_traceparent(&event.traceparent));
        let text = Event::from_message(None, Bytes::from_static(b"hi"), "x", "S", 1, published);
        assert_eq!(text.content_type, None);
    }

    #[test]
    fn uuids_are_written_as_to_string_writes_them() {
        let id = uuid::Uuid::now_v7();
        assert_eq!(uuid_text(id), id.to_string());
    }

    #[test]
    fn traceparents_are_written_in_hex() {
        let hex = |trace: u128| hex_text(&trace.to_be_bytes(), &mut [0u8; 32]).to_owned();
        let trace = hex(0x0af7_6519_16cd_43dd_8448_eb21_1c80_319c_u128);
        assert_eq!(traceparent(&trace, 0xb7ad_6b71_6920_3331, "01"), "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01");
        assert_eq!(traceparent(&hex(1), 1, "00"), "00-00000000000000000000000000000001-0000000000000001-00");
        assert!(!valid_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-00"), "five parts");
    }

    #[test]
    fn traceparents_are_checked() {
        assert!(valid_traceparent(&new_traceparent()));
        let parent = new_traceparent();
        let child = child_traceparent(&parent);
        assert!(valid_traceparent(&child));
        assert_eq!(child[3..35], parent[3..35], "same trace id");
        assert_ne!(child[36..52], parent[36..52], "new span id");
        assert!(!valid_traceparent("00-00000000000000000000000000000000-0000000000000001-01"));
        assert!(!valid_traceparent("garbage"));
    }

    #[test]
    fn traceparent_shapes() {
        let good = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert!(valid_traceparent(good));
        for bad in [
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", // version ff is invalid
            "0-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-1",
            "00-0af7651916cd43dd8448eb211c80319g-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333z-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-0z",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-00",
        ] {
            assert!(!valid_traceparent(bad), "{bad}");
        }
        // An invalid parent starts a new trace.
        assert!(valid_traceparent(&child_traceparent("garbage")));
        let mut event = Event::new("s", "t", Bytes::new());
        event.traceparent = good.to_owned();
        assert_eq!(event.trace_id(), "0af7651916cd43dd8448eb211c80319c");
    }

    #[test]
    fn trace_and_span_ids_are_random_in_every_byte() {
        let parents: Vec<String> = (0..64).map(|_| new_traceparent()).collect();
        let children: Vec<String> = parents.iter().map(|p| child_traceparent(p)).collect();
        for ids in [&parents, &children] {
            let distinct: std::collections::HashSet<&String> = ids.iter().collect();
            assert_eq!(distinct.len(), ids.len());
            // The first byte of each id is random too (only its low bit is forced on).
            for range in [3..5, 36..38] {
                let first_bytes: std::collections::HashSet<&str> = ids.iter().map(|id| &id[range.clone()]).collect();
                assert!(first_bytes.len() > 4, "{range:?}: {first_bytes:?}");
            }
        }
    }

    #[test]
    fn empty_and_missing_attributes() {
        let mut headers = HeaderMap::new();
        headers.insert(CE_ID, "");
        headers.insert(CE_TYPE, "t");
        let event = Event::from_message(Some(&headers), Bytes::from_static(b"{}"), "x", "S", 3, Utc::now());
        assert_eq!(event.id, "S-3", "an empty ce-id counts as none");
        // Only plain messages (no ce-id) get a content type guessed from the body.
        let mut headers = HeaderMap::new();
        headers.insert(CE_ID, "e-1");
        let event = Event::from_message(Some(&headers), Bytes::from_static(b"{}"), "x", "S", 3, Utc::now());
        assert_eq!(event.content_type, None);
    }

    #[test]
    fn extensions_are_set_and_read_by_name() {
        let mut event = Event::new("s", "t", Bytes::new());
        event.set_extension("x-a", "1");
        event.set_extension("x-b", "2");
        event.set_extension("X-A", "3");
        assert_eq!(event.extension("x-a"), Some("3"));
        assert_eq!(event.extension("x-b"), Some("2"));
        assert_eq!(event.extension("x-c"), None);
        assert_eq!(event.extensions.len(), 2);
    }

    #[test]
    fn bad_user_headers_are_refused() {
        assert!(validate_header("x-a", "1").is_ok());
        assert!(validate_header("x a", "1").is_err());
        assert!(validate_header("x:a", "1").is_err());
        assert!(validate_header("x-a", "1\r\n2").is_err());
    }
}
