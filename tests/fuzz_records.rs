//! Property tests of the record decoders of the triggers: S3 keys and notifications,
//! PostgreSQL change streams and column values, Kafka records and MQTT messages. Any input:
//! no panic, valid JSON a Lambda-style handler parses, an event that can be published.
//! `scripts/fuzz.sh` runs these with many more cases (`PROPTEST_CASES`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use aws_lambda_events::event::kafka::KafkaEvent;
use aws_lambda_events::event::s3::S3Event;
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use pg_walstream::{ChangeEvent, ColumnValue, EventType, Lsn, RelationColumn, ReplicaIdentity, RowData};
use common::fuzz::config;
use proptest::prelude::*;
use serde_json::{json, Value};
use sluice::event::Event;
use sluice::triggers::bucket::record::{self, Origin, Version};
use sluice::triggers::bucket::Change;
use sluice::triggers::postgres::decode::{self, Decoder, Item};
use sluice::triggers::postgres::{Operation, TableName};


fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// `event` after it went out as headers and came back: publishing must not panic.
fn through_headers(event: &Event) -> Event {
    let headers = event.to_headers();
    Event::from_message(Some(&headers), event.data.clone(), "sluice.events.x", "SLUICE_EVENTS", 1, Utc::now())
}

fn one_line(text: &str) -> String {
    text.replace(['\r', '\n'], " ")
}

/// Any instant with a four-digit year (file times, S3 `LastModified`).
fn any_time() -> impl Strategy<Value = DateTime<Utc>> {
    (-62_135_596_800i64..253_402_300_799, 0u32..1_000_000_000).prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap())
}

// ---------------------------------------------------------------------------------------
// S3 / bucket records

fn any_key() -> impl Strategy<Value = String> {
    prop_oneof!["\\PC{0,40}", ".{0,40}", "[a-z/ +%=&?#.]{0,30}", Just("%2F".to_owned()), Just("a%2Fb/c+d e".to_owned())]
}

prop_compose! {
    fn any_version()(size in any::<u64>(), etag in ".{0,40}", id in ".{0,40}", modified in any_time()) -> Version {
        Version { size, etag, id, modified }
    }
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

/// Type OIDs: the ones given JSON types, their arrays, some printed as text, and any.
fn any_oid() -> impl Strategy<Value = u32> {
    prop_oneof![
        4 => proptest::sample::select(vec![
            16u32, 17, 20, 21, 23, 26, 114, 700, 701, 1114, 1184, 3802, 25, 1043, 1082, 1700, 2950, // scalars
            1000, 1001, 1005, 1007, 1016, 1021, 1022, 199, 3807, 1115, 1185, 1009, 1015, 1014, 1003, 2951, 1231, 1182, // arrays
        ]),
        1 => any::<u32>(),
    ]
}

/// Text in the shapes PostgreSQL prints, and garbage.
fn any_text() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::collection::vec(any::<u8>(), 0..48),
        2 => "\\PC{0,32}".prop_map(String::into_bytes),
        1 => proptest::sample::select(vec!["t", "f", "NaN", "-Infinity", "1e308", "1e309", "-0", "9223372036854775808", "infinity", "-infinity"])
            .prop_map(|s| s.as_bytes().to_vec()),
        1 => any::<i64>().prop_map(|n| n.to_string().into_bytes()),
        1 => any::<f64>().prop_map(|n| n.to_string().into_bytes()),
        1 => "\\\\x[0-9a-fA-F]{0,12}".prop_map(String::into_bytes),
        1 => "[0-9]{4}-[0-9]{2}-[0-9]{2}[ T][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?([+-][0-9]{2}(:[0-9]{2})?)?( BC)?".prop_map(String::into_bytes),
        1 => "(\\[[0-9]:[0-9]\\]=)?[{}\",\\\\ a-zNUL0-9]{0,32}".prop_map(String::into_bytes),
        1 => "\\{?[\\[\\]{}:,\"0-9a-z ]{0,24}\\}?".prop_map(String::into_bytes),
    ]
}

fn any_column_value() -> impl Strategy<Value = ColumnValue> {
    prop_oneof![
        1 => Just(ColumnValue::Null),
        6 => any_text().prop_map(|t| ColumnValue::Text(Bytes::from(t))),
        1 => proptest::collection::vec(any::<u8>(), 0..32).prop_map(|b| ColumnValue::Binary(Bytes::from(b))),
    ]
}

/// An array of integers up to three dimensions deep, and its PostgreSQL text form.
fn int_array(depth: u32) -> BoxedStrategy<(String, Value)> {
    let element = prop_oneof![
        4 => any::<i64>().prop_map(|n| (n.to_string(), json!(n))),
        1 => Just(("NULL".to_owned(), Value::Null)),
    ];
    let leaf = proptest::collection::vec(element, 0..5)
        .prop_map(|items| {
            let text = items.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>().join(",");
            (format!("{{{text}}}"), Value::Array(items.into_iter().map(|(_, v)| v).collect()))
        })
        .boxed();
    if depth <= 1 {
        return leaf;
    }
    // PostgreSQL's arrays are rectangular and never hold an empty sub-array.
    (1usize..4, 1usize..4, any::<i32>())
        .prop_map(|(rows, cols, seed)| {
            let mut text = Vec::new();
            let mut value = Vec::new();
            for r in 0..rows {
                let cells: Vec<i64> = (0..cols).map(|c| i64::from(seed).wrapping_mul(31).wrapping_add((r * 7 + c) as i64)).collect();
                text.push(format!("{{{}}}", cells.iter().map(i64::to_string).collect::<Vec<_>>().join(",")));
                value.push(json!(cells));
            }
            (format!("{{{}}}", text.join(",")), Value::Array(value))
        })
        .boxed()
}

/// An array of strings as PostgreSQL prints `text[]`: elements quoted when they need it.
fn text_array() -> impl Strategy<Value = (String, Value)> {
    proptest::collection::vec(proptest::option::weighted(0.9, "\\PC{0,12}"), 0..6).prop_map(|items| {
        let text = items
            .iter()
            .map(|item| match item {
                None => "NULL".to_owned(),
                Some(s) => format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\"")),
            })
            .collect::<Vec<_>>()
            .join(",");
        (format!("{{{text}}}"), Value::Array(items.into_iter().map(|i| i.map_or(Value::Null, Value::String)).collect()))
    })
}

const RELATIONS: &[u32] = &[1, 2, 42];
const COLUMNS: &[&str] = &["id", "note", "paid", "body", "at", "tags", "doc"];

fn watched() -> Vec<TableName> {
    vec![TableName::parse("public.orders").unwrap(), TableName::parse("s.t").unwrap()]
}

/// A pgoutput message, in the shapes `pg_walstream` decodes them to.
#[derive(Debug, Clone)]
enum Msg {
    Relation { id: u32, columns: Vec<(String, u32)> },
    Begin { xid: u32, final_lsn: u64, time: DateTime<Utc> },
    Commit { end_lsn: u64 },
    Insert { table: (String, String), relation: u32, new: Vec<(String, ColumnValue)> },
    Update { table: (String, String), relation: u32, old: Option<Vec<(String, ColumnValue)>>, new: Vec<(String, ColumnValue)>, key: Vec<String> },
    Delete { table: (String, String), relation: u32, old: Vec<(String, ColumnValue)>, key: Vec<String> },
    Truncate { tables: Vec<String>, cascade: bool },
    Other,
}

fn any_table() -> impl Strategy<Value = (String, String)> {
    prop_oneof![
        3 => proptest::sample::select(vec![("public", "orders"), ("s", "t"), ("public", "other")]).prop_map(|(s, t)| (s.to_owned(), t.to_owned())),
        1 => ("\\PC{0,8}", "\\PC{0,8}"),
    ]
}

fn any_row() -> impl Strategy<Value = Vec<(String, ColumnValue)>> {
    proptest::collection::vec((proptest::sample::select(COLUMNS.to_vec()).prop_map(str::to_owned), any_column_value()), 0..6)
}

fn any_msg() -> impl Strategy<Value = Msg> {
    let relation = proptest::sample::select(RELATIONS.to_vec());
    let key = proptest::collection::vec(proptest::sample::select(COLUMNS.to_vec()).prop_map(str::to_owned), 0..3);
    prop_oneof![
        2 => (relation.clone(), proptest::collection::vec((proptest::sample::select(COLUMNS.to_vec()).prop_map(str::to_owned), any_oid()), 0..7))
            .prop_map(|(id, columns)| Msg::Relation { id, columns }),
        2 => (any::<u32>(), any::<u64>(), any_time()).prop_map(|(xid, final_lsn, time)| Msg::Begin { xid, final_lsn, time }),
        1 => any::<u64>().prop_map(|end_lsn| Msg::Commit { end_lsn }),
        3 => (any_table(), relation.clone(), any_row()).prop_map(|(table, relation, new)| Msg::Insert { table, relation, new }),
        2 => (any_table(), relation.clone(), proptest::option::of(any_row()), any_row(), key.clone())
            .prop_map(|(table, relation, old, new, key)| Msg::Update { table, relation, old, new, key }),
        2 => (any_table(), relation, any_row(), key).prop_map(|(table, relation, old, key)| Msg::Delete { table, relation, old, key }),
        1 => (proptest::collection::vec(prop_oneof![Just("public.orders".to_owned()), Just("s.t".to_owned()), Just("orders".to_owned()), "\\PC{0,10}"], 0..3), any::<bool>())
            .prop_map(|(tables, cascade)| Msg::Truncate { tables, cascade }),
        1 => Just(Msg::Other),
    ]
}

fn row_data(row: &[(String, ColumnValue)]) -> RowData {
    RowData::from_pairs(row.iter().map(|(k, v)| (k.as_str(), v.clone())).collect())
}

fn change(msg: &Msg, lsn: u64) -> ChangeEvent {
    let names = |key: &[String]| key.iter().map(|k| Arc::from(k.as_str())).collect();
    let event_type = match msg.clone() {
        Msg::Relation { id, columns } => EventType::Relation {
            relation_id: id,
            namespace: "public".into(),
            relation_name: "orders".into(),
            replica_identity: ReplicaIdentity::Full,
            columns: columns
                .into_iter()
                .map(|(name, type_id)| RelationColumn { name: name.as_str().into(), type_id, type_modifier: -1, is_key: name == "id" })
                .collect(),
        },
        Msg::Begin { xid, final_lsn, time } => EventType::Begin { transaction_id: xid, final_lsn: Lsn::new(final_lsn), commit_timestamp: time },
        Msg::Commit { end_lsn } => EventType::Commit { commit_timestamp: Utc::now(), commit_lsn: Lsn::new(end_lsn), end_lsn: Lsn::new(end_lsn) },
        Msg::Insert { table, relation, new } => {
            EventType::Insert { schema: table.0.as_str().into(), table: table.1.as_str().into(), relation_oid: relation, data: row_data(&new) }
        }
        Msg::Update { table, relation, old, new, key } => EventType::Update {
            schema: table.0.as_str().into(),
            table: table.1.as_str().into(),
            relation_oid: relation,
            old_data: old.as_deref().map(row_data),
            new_data: row_data(&new),
            replica_identity: ReplicaIdentity::Full,
            key_columns: names(&key),
        },
        Msg::Delete { table, relation, old, key } => EventType::Delete {
            schema: table.0.as_str().into(),
            table: table.1.as_str().into(),
            relation_oid: relation,
            old_data: row_data(&old),
            replica_identity: ReplicaIdentity::Full,
            key_columns: names(&key),
        },
        Msg::Truncate { tables, cascade } => {
            EventType::Truncate { tables: tables.iter().map(|t| Arc::from(t.as_str())).collect(), cascade, restart_identity: false }
        }
        Msg::Other => EventType::StreamStop,
    };
    ChangeEvent { event_type, lsn: Lsn::new(lsn), metadata: None }
}

fn any_operations() -> impl Strategy<Value = Vec<Operation>> {
    proptest::sample::subsequence(vec![Operation::Insert, Operation::Update, Operation::Delete, Operation::Truncate], 0..=4)
}

/// Whether every column value of the record's `new` and `old` rows is null.
fn all_values_null(record: &Value) -> bool {
    ["new", "old"].iter().all(|row| record[row].as_object().is_none_or(|columns| columns.values().all(Value::is_null)))
}

proptest! {
    #![proptest_config(config(256))]

    /// S3 encodes keys for notifications with form encoding; decoding gives the key back,
    /// and what is left is plain ASCII.
    #[test]
    fn keys_encode_and_decode(key in any_key()) {
        let encoded = record::encode_key(&key);
        prop_assert!(encoded.chars().all(|c| c.is_ascii_alphanumeric() || "*-._/+%".contains(c)), "{encoded:?}");
        let decoded: Vec<(String, String)> = form_urlencoded::parse(format!("k={encoded}").as_bytes()).into_owned().collect();
        prop_assert_eq!(decoded, vec![("k".to_owned(), key)]);
    }

    /// Any change of any key: a notification a Lambda S3 handler parses, naming the
    /// encoded key, and an event that can be published.
    #[test]
    fn bucket_changes_become_s3_notifications(
        key in any_key(),
        version in any_version(),
        trigger in "[a-zA-Z0-9_-]{1,16}",
        bucket in ".{0,20}",
        region in ".{0,12}",
        deleted in any::<bool>(),
        at in any_time(),
    ) {
        let change = if deleted { Change::Deleted } else { Change::Created };
        let origin = Origin { trigger: &trigger, bucket: &bucket, region: &region };
        let event = record::event(&origin, change, &key, &version, at);
        prop_assert_eq!(&event.id, &record::event_id(&trigger, change, &key, &version));
        let parsed: S3Event = serde_json::from_slice(&event.data).unwrap();
        let record = &parsed.records[0];
        // The crate reads an empty string as none.
        prop_assert_eq!(record.s3.object.key.clone().unwrap_or_default(), record::encode_key(&key));
        prop_assert_eq!(record.s3.bucket.name.clone().unwrap_or_default(), bucket.clone());
        prop_assert_eq!(record.event_time, at);
        match change {
            Change::Created => {
                prop_assert_eq!(record.s3.object.size, i64::try_from(version.size).ok());
                prop_assert_eq!(record.s3.object.e_tag.clone().unwrap_or_default(), version.etag.clone());
            }
            Change::Deleted => prop_assert_eq!(record.s3.object.size, None),
        }
        let back = through_headers(&event);
        prop_assert_eq!(back.id, one_line(&event.id));
        prop_assert_eq!(back.subject, Some(record::encode_key(&key)).filter(|k| !k.is_empty()));
    }

    /// Any column value of any type: JSON, with no panic; nulls stay null, binary values are
    /// base64, integers and booleans get their JSON types.
    #[test]
    fn column_values_become_json(oid in any_oid(), value in any_column_value()) {
        let typed = decode::typed(oid, &value);
        let text = serde_json::to_string(&typed).unwrap();
        prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{text}");
        match &value {
            ColumnValue::Null => prop_assert_eq!(typed, Value::Null),
            ColumnValue::Binary(bytes) => prop_assert_eq!(typed, Value::String(b64(bytes))),
            ColumnValue::Text(bytes) => {
                let text = String::from_utf8_lossy(bytes);
                match oid {
                    20 | 21 | 23 | 26 => {
                        if let Ok(n) = text.parse::<i64>() {
                            prop_assert_eq!(typed, json!(n));
                        }
                    }
                    16 if text == "t" || text == "f" => prop_assert_eq!(typed, json!(text == "t")),
                    25 | 1043 | 1082 | 1700 | 2950 => prop_assert_eq!(typed, Value::String(text.into_owned())),
                    _ => {}
                }
            }
        }
    }

    /// Arrays as PostgreSQL prints them come back as JSON arrays of their elements.
    #[test]
    fn arrays_become_json_arrays((text, expected) in prop_oneof![int_array(1), int_array(2)], oid in proptest::sample::select(vec![1016u32, 1007])) {
        // int4[] elements beyond i32 still parse as numbers: the decoder does not check ranges.
        prop_assert_eq!(decode::typed(oid, &ColumnValue::text(&text)), expected);
    }

    #[test]
    fn text_arrays_keep_their_strings((text, expected) in text_array()) {
        prop_assert_eq!(decode::typed(1009, &ColumnValue::text(&text)), expected);
    }

    /// Deeply nested brackets in an array column (no real server sends more than six
    /// dimensions): text or nested arrays, never a crash.
    #[test]
    fn deeply_nested_arrays_do_not_overflow(depth in 1usize..100_000, oid in proptest::sample::select(vec![1007u32, 1009, 3807])) {
        let text = format!("{}{}", "{".repeat(depth), "}".repeat(depth));
        let typed = decode::typed(oid, &ColumnValue::text(&text));
        prop_assert!(typed.is_array() || typed == Value::String(text));
    }

    /// Any stream of pgoutput messages: errors exactly when a row change arrives outside a
    /// transaction or before its relation, events only for watched tables and operations,
    /// ids and positions as documented, data within the size limit unless every value was
    /// dropped, each event publishable.
    #[test]
    fn change_streams_decode_as_documented(
        messages in proptest::collection::vec(any_msg(), 0..24),
        operations in any_operations(),
        max_data in prop_oneof![Just(usize::MAX), 0usize..2048],
        keyed in any::<bool>(),
    ) {
        let tables = watched();
        let mut decoder = Decoder::new("slot_1", &tables, &operations).with_max_data(max_data);
        if keyed {
            decoder = decoder.with_keys(HashMap::from([(tables[0].clone(), vec!["id".to_owned()])]));
        }
        let mut in_transaction = false;
        let mut relations = std::collections::HashSet::new();
        let mut last_position: Option<u64> = None;
        for (i, msg) in messages.iter().enumerate() {
            let result = decoder.decode(change(msg, i as u64 * 16));
            let row = match msg {
                Msg::Insert { table, relation, .. } | Msg::Update { table, relation, .. } | Msg::Delete { table, relation, .. } => Some((table, relation)),
                _ => None,
            };
            let expect_error = match (msg, row) {
                (_, Some(((schema, table), relation))) => {
                    let op = match msg { Msg::Insert { .. } => Operation::Insert, Msg::Update { .. } => Operation::Update, _ => Operation::Delete };
                    let wanted = operations.contains(&op) && tables.contains(&TableName { schema: schema.clone(), table: table.clone() });
                    !in_transaction || (wanted && !relations.contains(relation))
                }
                (Msg::Truncate { tables, .. }, None) => !in_transaction && !tables.is_empty(),
                _ => false,
            };
            prop_assert_eq!(result.is_err(), expect_error, "message {} {:?}: {:?}", i, msg, result);
            match msg {
                Msg::Relation { id, .. } => { relations.insert(*id); }
                Msg::Begin { .. } => { in_transaction = true; last_position = None; }
                Msg::Commit { .. } => in_transaction = false,
                _ => {}
            }
            for item in result.unwrap_or_default() {
                match item {
                    Item::Commit(lsn) => {
                        let Msg::Commit { end_lsn } = msg else { panic!("a commit item for {msg:?}") };
                        prop_assert_eq!(lsn, *end_lsn);
                    }
                    Item::Change(event) => {
                        let data: Value = serde_json::from_slice(&event.data).unwrap();
                        let op = data["op"].as_str().unwrap();
                        let table = TableName { schema: data["schema"].as_str().unwrap().to_owned(), table: data["table"].as_str().unwrap().to_owned() };
                        prop_assert!(tables.contains(&table), "an event for unwatched {table}");
                        prop_assert!(operations.iter().any(|o| o.as_str() == op), "an event for unwanted {op}");
                        prop_assert_eq!(&event.ty, &format!("{}.{op}", decode::TYPE_PREFIX));
                        let position = data["position"].as_u64().unwrap();
                        prop_assert!(last_position.is_none_or(|p| position > p), "positions go back: {position} after {last_position:?}");
                        last_position = Some(position);
                        prop_assert_eq!(&event.id, &format!("postgres:slot_1:{}:{position}", data["commit_lsn"].as_str().unwrap()));
                        prop_assert!(event.data.len() <= max_data || all_values_null(&data), "{} bytes over {max_data}", event.data.len());
                        through_headers(&event);
                    }
                }
            }
        }
    }

    /// Any Kafka record: a Lambda Kafka event holding its key, value and headers.
    #[test]
    fn kafka_records_become_lambda_events(
        payload in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..48)),
        key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
        topic in "[a-zA-Z0-9._-]{1,40}",
        timestamp in prop_oneof![
            any::<i64>().prop_map(rdkafka::message::Timestamp::CreateTime),
            (0i64..4_102_444_800_000).prop_map(rdkafka::message::Timestamp::LogAppendTime),
            Just(rdkafka::message::Timestamp::NotAvailable),
        ],
        partition in any::<i32>(),
        offset in any::<i64>(),
        headers in proptest::collection::vec((".{0,10}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8))), 0..4),
    ) {
        use rdkafka::message::{Header, OwnedHeaders, OwnedMessage};
        let mut owned = OwnedHeaders::new();
        for (name, value) in &headers {
            owned = owned.insert(Header { key: name, value: value.as_deref() });
        }
        let message = OwnedMessage::new(payload.clone(), key.clone(), topic.clone(), timestamp, partition, offset, Some(owned));
        let event = sluice::triggers::kafka::event("orders-in", "127.0.0.1:9092", &message);
        prop_assert_eq!(&event.id, &format!("kafka:orders-in:{topic}/{partition}/{offset}"));
        let parsed: Result<KafkaEvent, _> = serde_json::from_slice(&event.data);
        prop_assert!(parsed.is_ok(), "a Lambda handler cannot parse it: {:?}\n{}", parsed.err(), String::from_utf8_lossy(&event.data));
        let parsed = parsed.unwrap();
        let record = &parsed.records[&format!("{topic}-{partition}")][0];
        prop_assert_eq!(record.value.clone(), payload.as_deref().map(b64));
        prop_assert_eq!(record.key.clone(), key.as_deref().map(b64));
        prop_assert_eq!(record.headers.len(), headers.len());
        through_headers(&event);
    }

    /// Any MQTT message on any topic: JSON data and a publishable event whose subject is
    /// the topic.
    #[test]
    fn mqtt_messages_become_events(topic in prop_oneof!["[a-z0-9/+#]{1,20}", "\\PC{1,20}", ".{1,20}"], payload in proptest::collection::vec(any::<u8>(), 0..48)) {
        let publish = rumqttc::Publish::new(topic.clone(), rumqttc::QoS::AtLeastOnce, payload.clone());
        let event = sluice::triggers::mqtt::event(&publish);
        let data: Value = serde_json::from_slice(&event.data).unwrap();
        if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_ok() {
            prop_assert_eq!(&event.data[..], &payload[..]);
        } else {
            let encoded = b64(&payload);
            prop_assert_eq!(data["payload_base64"].as_str(), Some(encoded.as_str()));
            prop_assert_eq!(&data["base64"], &Value::Bool(true));
        }
        prop_assert_eq!(event.subject.as_deref(), Some(topic.as_str()));
        let back = through_headers(&event);
        prop_assert_eq!(back.subject, Some(one_line(&topic)));
    }
}

/// Found by `mqtt_messages_become_events`: an MQTT topic with a line break panicked the
/// publish (async-nats refuses line breaks in header values).
#[test]
fn regression_mqtt_topic_with_a_line_break() {
    let publish = rumqttc::Publish::new("devices/7\r\nx", rumqttc::QoS::AtLeastOnce, b"{}".to_vec());
    let back = through_headers(&sluice::triggers::mqtt::event(&publish));
    assert_eq!(back.subject.as_deref(), Some("devices/7  x"));
}

/// Found by `deeply_nested_arrays_do_not_overflow`: the array parser recursed once per `{`
/// and overflowed the stack (an abort, not a panic) on a deeply nested value.
#[test]
fn regression_deeply_nested_array_text() {
    let text = format!("{}{}", "{".repeat(100_000), "}".repeat(100_000));
    assert_eq!(decode::typed(1007, &ColumnValue::text(&text)), Value::String(text));
}

/// Found by `kafka_records_become_lambda_events`: a record whose timestamp is not a time
/// (the event falls back to now) carried the raw number, and one before 1970 a negative
/// number; a Lambda handler refuses both.
#[test]
fn regression_kafka_timestamp_out_of_range() {
    for timestamp in [8_210_266_876_800_000, -1, -1_000] {
        let message = rdkafka::message::OwnedMessage::new(
            None,
            None,
            "a".into(),
            rdkafka::message::Timestamp::CreateTime(timestamp),
            0,
            0,
            None,
        );
        let event = sluice::triggers::kafka::event("t", "127.0.0.1:9092", &message);
        assert!(serde_json::from_slice::<KafkaEvent>(&event.data).is_ok(), "{timestamp}");
        let json: Value = serde_json::from_slice(&event.data).unwrap();
        assert_eq!(json["records"]["a-0"][0]["timestamp"], json!(event.time.timestamp_millis()));
    }
}
