//! Property tests of the CloudEvents <-> NATS headers codec: any headers a NATS message can
//! carry decode without a panic, and every event the platform builds survives the round trip.
//! `scripts/fuzz.sh` runs these with many more cases (`PROPTEST_CASES`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use async_nats::{HeaderMap, HeaderName, HeaderValue};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use common::fuzz::config;
use proptest::prelude::*;
use sluice::event::{self, Event};


/// The headers `from_message` treats as the event's own attributes.
const OWN: &[&str] = &[
    event::CE_SPECVERSION,
    event::CE_ID,
    event::CE_SOURCE,
    event::CE_TYPE,
    event::CE_TIME,
    event::CE_SUBJECT,
    event::CONTENT_TYPE,
    event::TRACEPARENT,
    event::NATS_MSG_ID,
];

fn is_own(name: &str) -> bool {
    OWN.iter().any(|own| own.eq_ignore_ascii_case(name))
}

/// Any name async-nats accepts: visible ASCII except `:` (the empty name included).
fn any_header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[!-9;-~]{0,24}",
        2 => proptest::sample::select(vec![
            "ce-id", "ce-source", "ce-type", "ce-time", "ce-subject", "ce-specversion", "content-type",
            "traceparent", "Nats-Msg-Id", "CE-ID", "Ce-Time", "TRACEPARENT", "Content-Type", "Nats-Stream",
            "Nats-Sequence", "sluice-function", "sluice-error", "x-user",
        ])
        .prop_map(str::to_owned),
    ]
}

fn traceparent() -> impl Strategy<Value = String> {
    ("[0-9a-f]{2}", "[0-9a-f]{32}", "[0-9a-f]{16}", "[0-9a-f]{2}").prop_map(|(v, t, s, f)| format!("{v}-{t}-{s}-{f}"))
}

/// An RFC 3339 time, sometimes in a zone and with odd precision, sometimes at the edges.
fn time_text() -> impl Strategy<Value = String> {
    let zone = prop_oneof![Just("Z".to_owned()), (0u32..24, 0u32..60, any::<bool>())
        .prop_map(|(h, m, east)| format!("{}{h:02}:{m:02}", if east { '+' } else { '-' }))];
    let year = prop_oneof![8 => 0u32..=9999, 1 => Just(0u32), 1 => Just(9999u32)];
    (year, 1u32..=12, 1u32..=31, 0u32..=23, 0u32..=59, 0u32..=60, "(\\.[0-9]{1,12})?", zone)
        .prop_map(|(y, mo, d, h, mi, s, frac, zone)| format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{zone}"))
}

/// Any value a header can carry (no line breaks), often one shaped like what it should be.
fn any_header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[^\r\n]{0,40}",
        1 => traceparent(),
        1 => time_text(),
        1 => Just(String::new()),
        1 => Just("application/json".to_owned()),
    ]
}

fn any_headers() -> impl Strategy<Value = Option<Vec<(String, String)>>> {
    proptest::option::weighted(0.9, proptest::collection::vec((any_header_name(), any_header_value()), 0..12))
}

fn header_map(pairs: &[(String, String)]) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in pairs {
        let name: HeaderName = name.parse().unwrap();
        let value: HeaderValue = value.parse().unwrap();
        headers.append(name, value);
    }
    headers
}

fn any_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..64),
        Just(b"{\"a\":1}".to_vec()),
        Just(b"[]".to_vec()),
        "[ -~]{0,32}".prop_map(String::into_bytes),
    ]
}

/// JetStream's timestamp of a message: any instant from 1970 to 2200, to the nanosecond.
fn published() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..7_258_118_400, 0u32..1_000_000_000).prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

/// Times written as `ce-time` keep their microseconds.
fn same_time(a: DateTime<Utc>, b: DateTime<Utc>) -> bool {
    a.timestamp_micros() == b.timestamp_micros()
}

/// `event` after it went out as headers and came back.
fn through_headers(event: &Event) -> Event {
    let headers = event.to_headers();
    Event::from_message(Some(&headers), event.data.clone(), "sluice.events.x", "SLUICE_EVENTS", 1, Utc::now())
}

/// The attribute strings of an event the platform builds: anything on one line, not empty.
fn attribute() -> impl Strategy<Value = String> {
    "[^\r\n]{1,40}"
}

/// Extension names that are not the event's own attributes, with values on one line.
fn extensions() -> impl Strategy<Value = Vec<(String, String)>> {
    proptest::collection::vec(("[!-9;-~]{1,24}".prop_filter("own header", |n| !is_own(n)), "[^\r\n]{0,30}"), 0..6)
}

/// Any instant whose RFC 3339 form has a four-digit year (what `ce-time` can carry).
fn event_time() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000_000).prop_map(|(secs, nanos)| DateTime::from_timestamp(secs, nanos).unwrap())
}

prop_compose! {
    fn any_event()(
        id in attribute(),
        source in attribute(),
        ty in attribute(),
        time in event_time(),
        subject in proptest::option::of(attribute()),
        content_type in proptest::option::of(attribute()),
        traceparent in traceparent().prop_filter("valid", |t| event::valid_traceparent(t)),
        extensions in extensions(),
        data in any_body(),
    ) -> Event {
        Event { id, source, ty, time, subject, content_type, traceparent, extensions, data: Bytes::from(data) }
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Whatever headers a message carries: no panic, an identity, a valid trace, no own
    /// header among the extensions, and decoding what it encodes to gives the same event.
    #[test]
    fn any_message_decodes_and_re_encodes_stably(
        pairs in any_headers(),
        body in any_body(),
        seq in any::<u64>(),
        published in published(),
    ) {
        let headers = pairs.as_deref().map(header_map);
        let event = Event::from_message(headers.as_ref(), Bytes::from(body), "sluice.events.x", "SLUICE_EVENTS", seq, published);
        prop_assert!(!event.id.is_empty() && !event.source.is_empty() && !event.ty.is_empty());
        prop_assert!(event::valid_traceparent(&event.traceparent), "{:?}", event.traceparent);
        let sent_id = pairs.iter().flatten().find(|(n, _)| n == event::CE_ID).map(|(_, v)| v.as_str()).filter(|v| !v.is_empty());
        match sent_id {
            Some(id) => prop_assert_eq!(&event.id, id),
            None => prop_assert_eq!(&event.id, &format!("SLUICE_EVENTS-{seq}")),
        }
        for (name, _) in &event.extensions {
            prop_assert!(!is_own(name), "own header {name:?} among the extensions");
        }
        prop_assert!(event.extensions.windows(2).all(|w| w[0] <= w[1]), "extensions sorted");

        let again = through_headers(&event);
        prop_assert!(same_time(again.time, event.time), "time {} became {}", event.time, again.time);
        prop_assert_eq!(Event { time: event.time, ..again }, event);
    }

    /// Events built from any one-line attributes come back unchanged from their headers.
    #[test]
    fn events_round_trip_through_headers(event in any_event()) {
        let mut expected = event.clone();
        expected.extensions.sort();
        let back = through_headers(&event);
        prop_assert!(same_time(back.time, event.time), "time {} became {}", event.time.to_rfc3339_opts(SecondsFormat::Nanos, true), back.time);
        prop_assert_eq!(Event { time: event.time, ..back }, expected);
    }

    /// Attributes with line breaks (a subject from an MQTT topic, a `--subject` flag) do not
    /// panic the encoder: each break travels as a space.
    #[test]
    fn line_breaks_in_attributes_do_not_panic(
        mut event in any_event(),
        subject in "[^\u{0}]{0,20}[\r\n][^\u{0}]{0,20}",
        id in "[^\u{0}]{0,10}[\r\n][^\u{0}]{0,10}",
        value in "[^\u{0}]{0,10}[\r\n][^\u{0}]{0,10}",
    ) {
        event.subject = Some(subject.clone());
        event.id = id.clone();
        event.extensions = vec![("x-note".to_owned(), value.clone())];
        let back = through_headers(&event);
        prop_assert_eq!(back.subject.clone(), Some(subject.replace(['\r', '\n'], " ")).filter(|s| !s.is_empty()));
        let note = value.replace(['\r', '\n'], " ");
        prop_assert_eq!(back.extension("x-note"), Some(note.as_str()));
        prop_assert!(!back.id.contains(['\r', '\n']));
    }

    /// What `validate_header` accepts (a `--header K=V` of `sluice publish`) can be sent and
    /// comes back as an extension; it never panics on anything.
    #[test]
    fn validated_headers_travel(name in "\\PC{0,16}|[!-9;-~]{1,16}", value in "\\PC{0,16}|[^\r\n]{0,16}") {
        if event::validate_header(&name, &value).is_ok() {
            let mut event = Event::new("test", "t", Bytes::new());
            event.set_extension(&name, value.clone());
            let back = through_headers(&event);
            if !is_own(&name) {
                prop_assert_eq!(back.extension(&name), Some(value.as_str()));
            }
        }
    }

    /// The NATS bridge: any headers and payload become an event that can be published.
    #[test]
    fn bridged_nats_messages_become_events(
        pairs in any_headers(),
        body in any_body(),
        subject in "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,3}",
        msg_id in proptest::option::of("[^\r\n]{1,20}"),
    ) {
        let headers = pairs.as_deref().map(header_map);
        let event = sluice::triggers::nats::event(headers.as_ref(), Bytes::from(body), &subject, msg_id);
        prop_assert_eq!(event.extension(sluice::triggers::nats::SUBJECT_HEADER), Some(subject.as_str()));
        prop_assert!(event.extensions.iter().all(|(n, _)| !n.to_ascii_lowercase().starts_with("nats-")));
        let back = through_headers(&event);
        prop_assert_eq!(back.id, event.id);
    }
}

/// Found by `line_breaks_in_attributes_do_not_panic`: async-nats panics on a header value
/// with a line break, and `to_headers` passed attributes through unchecked.
#[test]
fn regression_subject_with_a_newline() {
    let mut event = Event::new("test", "t", Bytes::new());
    event.subject = Some("devices/a\nb".to_owned());
    let back = through_headers(&event);
    assert_eq!(back.subject.as_deref(), Some("devices/a b"));
}
