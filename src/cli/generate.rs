//! `sluice events generate KIND [--flag value ...]`: the data of a sample event of one
//! trigger kind, like `sam local generate-event`, to feed `sluice invoke FUNCTION --event -`.
//!
//! Each shape is made by the trigger's own code (the function that turns an object change, a
//! tick, a record, a message, a row change or a request into an event), given made-up input:
//! a generated event is what a deployed trigger of that kind sends, and changes with it. Only
//! the input is made up here; no JSON shape is written in this file.
//!
//! What is printed is the event's data, the body a function receives. The CloudEvents
//! attributes (id, subject, ...) are not part of it, so a flag that only reaches those (the
//! MQTT topic, the NATS subject, a Kafka trigger's name) is not offered for that kind.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, Method, Uri};
use bytes::Bytes;
use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use md5::Digest as _;
use pg_walstream::{ChangeEvent, ColumnValue, EventType, Lsn, RelationColumn, ReplicaIdentity, RowData};
use serde_json::{Map, Value};

use crate::error::UsageError;
use crate::event::Event;
use crate::triggers::bucket::record::{self, Origin, Version};
use crate::triggers::bucket::{Change, LOCAL_REGION};
use crate::triggers::cron::{CronConfig, CronTrigger};
use crate::triggers::http::apigw;
use crate::triggers::http::config::RouteKey;
use crate::triggers::http::routes::RouteTable;
use crate::triggers::http::HttpConfig;
use crate::triggers::kafka::KafkaConfig;
use crate::triggers::postgres::decode::{oid, Decoder, Item};
use crate::triggers::postgres::{Operation, PostgresConfig, TableName};
use crate::triggers::{TriggerConfig, TriggerDef};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The trigger kind whose event to generate.
    #[arg(value_enum)]
    pub kind: Kind,
    /// Trigger name (its file, triggers/NAME.toml). Kinds: s3-put, s3-delete
    /// (`configurationId`; default `uploads`), cron (`resources`; default `cleanup`), pg-*
    /// (the slot `sluice_NAME`; default `orders-cdc`), http (`requestContext.apiId`; default `api`).
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
    /// When it happened, RFC 3339 (`2026-11-27T12:00:00Z`). Kinds: cron (the tick; default
    /// the start of the current minute), s3-put, s3-delete (`eventTime`), kafka (the record's
    /// CreateTime), pg-* (`commit_time`), http (`requestContext.time`). Default now.
    #[arg(long, value_name = "RFC3339")]
    pub time: Option<String>,
    /// Message body. Kinds: cron (the `detail`, a JSON object as the trigger file's
    /// `payload` table; default `{}`), mqtt (any bytes: JSON passes as is, anything else
    /// arrives base64-wrapped; default `{"device":"d7","temperature":21.5}`), nats (JSON;
    /// default `{"order_id":7,"status":"created"}`).
    #[arg(long, value_name = "BODY")]
    pub payload: Option<String>,

    /// Bucket name. Kinds: s3-put, s3-delete. Default `uploads`.
    #[arg(long)]
    pub bucket: Option<String>,
    /// Object key, encoded in the record as S3 does (s3-put, s3-delete; default
    /// `images/cat.jpg`); the record key (kafka; default none).
    #[arg(long)]
    pub key: Option<String>,
    /// Object size in bytes. Kinds: s3-put (a delete record has no size). Default 48213.
    #[arg(long, value_name = "BYTES")]
    pub size: Option<u64>,
    /// `awsRegion`: `local` for a local bucket (the records' `eTag` and request id are then
    /// a local file's), any other for an S3 store. Kinds: s3-put, s3-delete. Default `local`.
    #[arg(long)]
    pub region: Option<String>,

    /// Kafka topic. Kinds: kafka. Default `orders`.
    #[arg(long)]
    pub topic: Option<String>,
    /// Kafka partition. Kinds: kafka. Default 0.
    #[arg(long, value_parser = clap::value_parser!(i32).range(0..))]
    pub partition: Option<i32>,
    /// Kafka offset. Kinds: kafka. Default 0.
    #[arg(long, value_parser = clap::value_parser!(i64).range(0..))]
    pub offset: Option<i64>,
    /// The record's value (any text; base64 in the event). Kinds: kafka. Default
    /// `{"order_id":7,"total":19.9}`.
    #[arg(long)]
    pub value: Option<String>,

    /// Table, `schema.table` or `table` (in `public`). Kinds: pg-*. Default `public.orders`.
    #[arg(long, value_name = "SCHEMA.TABLE")]
    pub table: Option<String>,
    /// A row as a JSON object: the new row (pg-insert, pg-update), the deleted row
    /// (pg-delete). Integers become int8 columns, other numbers float8, booleans bool,
    /// strings text, objects and arrays jsonb; a column named `id` is the primary key.
    /// Default: an order (`{"id":7,"customer":"acme","total":19.9,"paid":...,"items":[...]}`).
    #[arg(long, value_name = "JSON")]
    pub row: Option<String>,
    /// The row before an update, a JSON object, or `null` for none (what a table with the
    /// default REPLICA IDENTITY sends). Kinds: pg-update. Default: the unpaid order with the
    /// default --row, none with your own --row.
    #[arg(long, value_name = "JSON")]
    pub old: Option<String>,

    /// Request method. Kinds: http. Default: the --route-key's method, else POST.
    #[arg(long)]
    pub method: Option<String>,
    /// Request path (percent-encoded). Kinds: http. Default: the --route-key's path with `1`
    /// for each parameter, else `/orders`.
    #[arg(long)]
    pub path: Option<String>,
    /// The route that matched, as in the trigger file (`GET /orders/{id}`, `ANY
    /// /files/{proxy+}`, `$default`); --path must be a request it answers, and its parameters
    /// fill `pathParameters`. Kinds: http. Default `METHOD PATH` of the request.
    #[arg(long, value_name = "KEY")]
    pub route_key: Option<String>,
    /// Request body. Kinds: http. Default `{"item":"book","quantity":1}` for POST, PUT and
    /// PATCH, none for other methods.
    #[arg(long)]
    pub body: Option<String>,
    /// Query string without `?` (`status=open&page=2`). Kinds: http. Default none.
    #[arg(long)]
    pub query: Option<String>,
}

/// The kinds of event. The names are part of the command line contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// A `bucket` trigger: an object was created (S3 `ObjectCreated:Put`).
    #[value(name = "s3-put")]
    S3Put,
    /// A `bucket` trigger: an object was deleted (S3 `ObjectRemoved:Delete`).
    #[value(name = "s3-delete")]
    S3Delete,
    /// A `cron` trigger's tick (EventBridge Scheduled Event).
    #[value(name = "cron")]
    Cron,
    /// A `kafka` trigger's record (Lambda SelfManagedKafka event).
    #[value(name = "kafka")]
    Kafka,
    /// An `mqtt` trigger's message.
    #[value(name = "mqtt")]
    Mqtt,
    /// A `nats` trigger's bridged message.
    #[value(name = "nats")]
    Nats,
    /// A `postgres` trigger: a row was inserted.
    #[value(name = "pg-insert")]
    PgInsert,
    /// A `postgres` trigger: a row was updated.
    #[value(name = "pg-update")]
    PgUpdate,
    /// A `postgres` trigger: a row was deleted.
    #[value(name = "pg-delete")]
    PgDelete,
    /// An `http` trigger's request (API Gateway HTTP API, payload format 2.0).
    #[value(name = "http")]
    Http,
}

impl Kind {
    /// The name on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::S3Put => "s3-put",
            Self::S3Delete => "s3-delete",
            Self::Cron => "cron",
            Self::Kafka => "kafka",
            Self::Mqtt => "mqtt",
            Self::Nats => "nats",
            Self::PgInsert => "pg-insert",
            Self::PgUpdate => "pg-update",
            Self::PgDelete => "pg-delete",
            Self::Http => "http",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

const S3: &[Kind] = &[Kind::S3Put, Kind::S3Delete];
const PG: &[Kind] = &[Kind::PgInsert, Kind::PgUpdate, Kind::PgDelete];
/// Brokers in the Kafka event: not a flag, a trigger's `brokers` as written.
const KAFKA_BROKERS: &str = "localhost:9092";
/// The MQTT topic of a generated message: it is not in the data (see the module docs).
const MQTT_TOPIC: &str = "devices/d7/telemetry";
/// The subject of a bridged NATS message: not in the data either.
const NATS_SUBJECT: &str = "legacy.orders.created";
/// `sluice up`'s default listener, as a client would name it in `Host`.
const HTTP_HOST: &str = "localhost:8080";
/// Type OIDs the decoder has no constant for: `text` and `numeric` (`pg_type.oid`).
const TEXT_OID: u32 = 25;
const NUMERIC_OID: u32 = 1700;

/// Prints the data of the event `args` describe as pretty JSON on stdout.
pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let data = generate(args)?;
    super::output::print_json(&data)?;
    Ok(ExitCode::SUCCESS)
}

/// The data (the JSON body a function receives) of the event `args` describe.
pub fn generate(args: &Args) -> Result<Value, UsageError> {
    check_flags(args)?;
    let time = args.time.as_deref().map(parse_time).transpose()?;
    match args.kind {
        Kind::S3Put => s3(args, Change::Created, time),
        Kind::S3Delete => s3(args, Change::Deleted, time),
        Kind::Cron => cron(args, time),
        Kind::Kafka => kafka(args, time),
        Kind::Mqtt => mqtt(args),
        Kind::Nats => nats(args),
        Kind::PgInsert => postgres(args, Operation::Insert, time),
        Kind::PgUpdate => postgres(args, Operation::Update, time),
        Kind::PgDelete => postgres(args, Operation::Delete, time),
        Kind::Http => http(args, time),
    }
}

/// Refuses a flag the kind has no use for: it would change nothing in the output, which
/// users would take for a bug in their function.
fn check_flags(args: &Args) -> Result<(), UsageError> {
    use Kind::{Cron, Http, Kafka, Mqtt, Nats, PgDelete, PgInsert, PgUpdate, S3Delete, S3Put};
    let flags: &[(&str, bool, &[Kind])] = &[
        ("--name", args.name.is_some(), &[S3Put, S3Delete, Cron, PgInsert, PgUpdate, PgDelete, Http]),
        ("--time", args.time.is_some(), &[S3Put, S3Delete, Cron, Kafka, PgInsert, PgUpdate, PgDelete, Http]),
        ("--payload", args.payload.is_some(), &[Cron, Mqtt, Nats]),
        ("--bucket", args.bucket.is_some(), S3),
        ("--key", args.key.is_some(), &[S3Put, S3Delete, Kafka]),
        ("--size", args.size.is_some(), &[S3Put]),
        ("--region", args.region.is_some(), S3),
        ("--topic", args.topic.is_some(), &[Kafka]),
        ("--partition", args.partition.is_some(), &[Kafka]),
        ("--offset", args.offset.is_some(), &[Kafka]),
        ("--value", args.value.is_some(), &[Kafka]),
        ("--table", args.table.is_some(), PG),
        ("--row", args.row.is_some(), PG),
        ("--old", args.old.is_some(), &[PgUpdate]),
        ("--method", args.method.is_some(), &[Http]),
        ("--path", args.path.is_some(), &[Http]),
        ("--route-key", args.route_key.is_some(), &[Http]),
        ("--body", args.body.is_some(), &[Http]),
        ("--query", args.query.is_some(), &[Http]),
    ];
    for &(flag, given, kinds) in flags {
        if given && !kinds.contains(&args.kind) {
            let users: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            return Err(UsageError::new(format!(
                "{flag} does not apply to {kind} events{why}; it is used by {users}. Remove it, or pick one of those kinds",
                kind = args.kind,
                why = unused_because(flag, args.kind),
                users = users.join(", "),
            )));
        }
    }
    Ok(())
}

/// Why a flag that sounds right for a kind is not one of its flags.
fn unused_because(flag: &str, kind: Kind) -> &'static str {
    match (flag, kind) {
        ("--topic", Kind::Mqtt) => {
            ": an mqtt event's data is the message body alone (a deployed function gets the topic as the event's subject, SLUICE_EVENT_SUBJECT)"
        }
        ("--name", Kind::Kafka | Kind::Nats | Kind::Mqtt) => ": its data does not carry the trigger's name",
        ("--time", Kind::Mqtt | Kind::Nats) => ": its data carries no time",
        ("--size", Kind::S3Delete) => ": a delete record has no size",
        _ => "",
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, UsageError> {
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|e| {
        UsageError::new(format!("--time {text:?} is not an RFC 3339 time ({e}); write e.g. 2026-11-27T12:00:00Z"))
    })
}

/// `--name`, checked as `sluice` checks a trigger file's name, or the kind's default.
fn trigger_name<'a>(args: &'a Args, default: &'a str) -> Result<&'a str, UsageError> {
    let name = args.name.as_deref().unwrap_or(default);
    crate::config::validate_name(name).map_err(|_| {
        UsageError::new(format!(
            "--name {name:?} is not a trigger name: use 1 to 64 ASCII letters, digits, `-` or `_` (the file name in triggers/)"
        ))
    })?;
    Ok(name)
}

/// A JSON object given in `flag`.
fn json_object(flag: &str, text: &str) -> Result<Map<String, Value>, UsageError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(object)) => Ok(object),
        Ok(other) => Err(UsageError::new(format!(
            "{flag} {text:?} is JSON but not an object ({}); write an object such as '{{\"id\": 7}}'",
            json_type(&other)
        ))),
        Err(e) => Err(UsageError::new(format!(
            "{flag} {text:?} is not JSON ({e}); write a JSON object such as '{{\"id\": 7}}' (quote it for the shell)"
        ))),
    }
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The event's data as JSON. Every kind here makes JSON data, so a failure is a bug, not bad
/// usage; it is still a [`UsageError`] because that is what [`generate`] returns.
fn data_of(kind: Kind, event: &Event) -> Result<Value, UsageError> {
    serde_json::from_slice(&event.data).map_err(|e| internal(kind, e))
}

fn internal(kind: Kind, error: impl fmt::Display) -> UsageError {
    UsageError::new(format!("cannot generate a {kind} event: {error}. This is a bug in sluice; please report it"))
}

fn s3(args: &Args, change: Change, time: Option<DateTime<Utc>>) -> Result<Value, UsageError> {
    let trigger = trigger_name(args, "uploads")?;
    let bucket = args.bucket.as_deref().unwrap_or("uploads");
    crate::config::validate_bucket(bucket).map_err(|m| UsageError::new(format!("--bucket: {m}")))?;
    let key = args.key.as_deref().unwrap_or("images/cat.jpg");
    // S3's limit; a local bucket's keys are paths relative to its folder.
    if key.is_empty() || key.len() > 1024 || key.starts_with('/') {
        return Err(UsageError::new(format!(
            "--key {key:?}: write an object key of 1 to 1024 bytes without a leading `/`, such as images/cat.jpg"
        )));
    }
    let region = args.region.as_deref().unwrap_or(LOCAL_REGION);
    if region.trim().is_empty() {
        return Err(UsageError::new("--region is empty: write `local` for a local bucket, or the S3 store's region (us-east-1)"));
    }
    let size = args.size.unwrap_or(48_213);
    let at = time.unwrap_or_else(Utc::now);
    // There is no content to hash: the key's MD5 stands in, an etag of the real shape that
    // stays the same for the same key.
    let etag = hex::encode(md5::Md5::digest(key.as_bytes()));
    // Version ids as each watcher makes them: `<size>-<mtime ns>` for a local file, the
    // etag for an S3 listing.
    let id = if region == LOCAL_REGION {
        format!("{size}-{}", at.timestamp_nanos_opt().unwrap_or_default())
    } else {
        etag.clone()
    };
    let version = Version { size, etag, id, modified: at };
    let origin = Origin { trigger, bucket, region };
    data_of(args.kind, &record::event(&origin, change, key, &version, at))
}

fn cron(args: &Args, time: Option<DateTime<Utc>>) -> Result<Value, UsageError> {
    let name = trigger_name(args, "cleanup")?;
    // A tick falls on a schedule's boundary; the minute is the finest common one.
    let tick = match time {
        Some(time) => time,
        None => Utc::now().duration_trunc(TimeDelta::minutes(1)).map_err(|e| internal(Kind::Cron, e))?,
    };
    let mut file = toml::Table::new();
    file.insert("kind".into(), "cron".into());
    // Neither the schedule nor the target is in the event.
    file.insert("schedule".into(), "rate(1 minute)".into());
    file.insert("function".into(), name.into());
    if let Some(text) = &args.payload {
        let detail = json_object("--payload", text)?;
        // The trigger file holds the payload as a TOML table, and the trigger turns it into
        // JSON: going through TOML refuses what a trigger file cannot hold.
        let table: toml::Table = serde_json::from_value(Value::Object(detail)).map_err(|e| {
            UsageError::new(format!(
                "--payload {text:?}: a cron payload is the trigger file's `payload` table, and TOML cannot hold this ({e}); leave out nulls and keep integers within 64-bit signed range"
            ))
        })?;
        file.insert("payload".into(), toml::Value::Table(table));
    }
    let config: CronConfig = file.try_into().map_err(|e| internal(Kind::Cron, e))?;
    let trigger = CronTrigger::new(name, &config).map_err(|e| internal(Kind::Cron, format!("{e:#}")))?;
    data_of(Kind::Cron, &trigger.event(tick, false))
}

fn kafka(args: &Args, time: Option<DateTime<Utc>>) -> Result<Value, UsageError> {
    let topic = args.topic.as_deref().unwrap_or("orders");
    let mut file = toml::Table::new();
    file.insert("kind".into(), "kafka".into());
    file.insert("brokers".into(), KAFKA_BROKERS.into());
    file.insert("topics".into(), toml::Value::Array(vec![topic.into()]));
    file.insert("topic".into(), "orders".into());
    let config: KafkaConfig = file.try_into().map_err(|e| internal(Kind::Kafka, e))?;
    // The trigger's own check of its topic names.
    config.check().map_err(|(_, message)| UsageError::new(format!("--topic: {message}")))?;
    let time = time.unwrap_or_else(Utc::now);
    if time.timestamp_millis() < 0 {
        return Err(UsageError::new(format!(
            "--time {:?}: a Kafka timestamp counts milliseconds from 1970; give a later time",
            args.time.as_deref().unwrap_or_default()
        )));
    }
    let value = args.value.as_deref().unwrap_or(r#"{"order_id":7,"total":19.9}"#);
    let message = rdkafka::message::OwnedMessage::new(
        Some(value.as_bytes().to_vec()),
        args.key.as_ref().map(|k| k.as_bytes().to_vec()),
        topic.to_owned(),
        rdkafka::message::Timestamp::CreateTime(time.timestamp_millis()),
        args.partition.unwrap_or(0),
        args.offset.unwrap_or(0),
        None,
    );
    // The trigger's name only goes into the event id, which is not part of the data.
    data_of(Kind::Kafka, &crate::triggers::kafka::event("kafka", KAFKA_BROKERS, &message))
}

fn mqtt(args: &Args) -> Result<Value, UsageError> {
    let payload = args.payload.as_deref().unwrap_or(r#"{"device":"d7","temperature":21.5}"#);
    let publish = rumqttc::Publish::new(MQTT_TOPIC, rumqttc::QoS::AtLeastOnce, payload.as_bytes().to_vec());
    data_of(Kind::Mqtt, &crate::triggers::mqtt::event(&publish))
}

fn nats(args: &Args) -> Result<Value, UsageError> {
    let payload = args.payload.as_deref().unwrap_or(r#"{"order_id":7,"status":"created"}"#);
    // The bridge passes a body as it is: one that is not JSON reaches the function as
    // those bytes, which this command (JSON out) cannot print.
    if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(payload) {
        return Err(UsageError::new(format!(
            "--payload {payload:?} is not JSON ({e}); a nats event's data is the message body as is, so write JSON \
             ('\"text\"' for a string), or put the bytes in a file for `sluice invoke FUNCTION --event FILE --raw`"
        )));
    }
    let event = crate::triggers::nats::event(None, Bytes::from(payload.to_owned()), NATS_SUBJECT, None);
    data_of(Kind::Nats, &event)
}

/// The default rows: an order before and after its payment.
fn default_order(paid: bool) -> Map<String, Value> {
    let order = serde_json::json!({
        "id": 7,
        "customer": "acme",
        "total": 19.9,
        "paid": paid,
        "items": [{"sku": "book-1", "quantity": 1}],
    });
    match order {
        Value::Object(object) => object,
        _ => Map::new(),
    }
}

fn postgres(args: &Args, op: Operation, time: Option<DateTime<Utc>>) -> Result<Value, UsageError> {
    let kind = args.kind;
    let name = trigger_name(args, "orders-cdc")?;
    let table_text = args.table.as_deref().unwrap_or("public.orders");
    let table = TableName::parse(table_text).map_err(|m| UsageError::new(format!("--table: {m}")))?;
    let row = match &args.row {
        Some(text) => json_object("--row", text)?,
        None => default_order(op != Operation::Insert),
    };
    let old = match (&args.old, &args.row) {
        (Some(text), _) if text.trim() == "null" => None,
        (Some(text), _) => Some(json_object("--old", text)?),
        (None, None) if op == Operation::Update => Some(default_order(false)),
        (None, _) => None,
    };
    let (new_row, old_row) = match op {
        Operation::Delete => (None, Some(&row)),
        _ => (Some(&row), old.as_ref()),
    };
    if row.is_empty() {
        return Err(UsageError::new("--row is an empty object: give the row's columns, such as '{\"id\": 7, \"status\": \"paid\"}'"));
    }

    // The trigger's config, for its slot name.
    let mut file = toml::Table::new();
    file.insert("kind".into(), "postgres".into());
    file.insert("tables".into(), toml::Value::Array(vec![table.to_string().into()]));
    file.insert("operations".into(), toml::Value::Array(vec![op.as_str().into()]));
    file.insert("function".into(), name.into());
    let config: PostgresConfig = file.try_into().map_err(|e| internal(kind, e))?;
    let slot = config.slot_name(name);

    let columns = relation_columns(new_row, old_row)?;
    let key: Vec<String> = columns.iter().filter(|c| c.is_key).map(|c| c.name.to_string()).collect();
    let key_columns: Vec<Arc<str>> = key.iter().map(|k| Arc::from(k.as_str())).collect();
    let identity = if old_row.is_some() { ReplicaIdentity::Full } else { ReplicaIdentity::Default };
    let schema: Arc<str> = Arc::from(table.schema.as_str());
    let relation_name: Arc<str> = Arc::from(table.table.as_str());
    // The first OID of a user table, and positions of a small transaction.
    let relation_id = 16_384;
    let (change_lsn, commit_lsn, end_lsn) = (0x1A2_B3C8, 0x1A2_B4F0, 0x1A2_B520);
    let commit_time = time.unwrap_or_else(Utc::now);
    let change = |event_type: EventType, lsn: u64| ChangeEvent { event_type, lsn: Lsn::new(lsn), metadata: None };
    let data = |row: Option<&Map<String, Value>>| row.map(row_data);

    let row_change = match op {
        Operation::Insert => EventType::Insert {
            schema: schema.clone(),
            table: relation_name.clone(),
            relation_oid: relation_id,
            data: data(new_row).unwrap_or_else(|| RowData::from_pairs(Vec::new())),
        },
        Operation::Update => EventType::Update {
            schema: schema.clone(),
            table: relation_name.clone(),
            relation_oid: relation_id,
            old_data: data(old_row),
            new_data: data(new_row).unwrap_or_else(|| RowData::from_pairs(Vec::new())),
            replica_identity: identity,
            key_columns,
        },
        // No kind generates a TRUNCATE.
        Operation::Delete | Operation::Truncate => EventType::Delete {
            schema: schema.clone(),
            table: relation_name.clone(),
            relation_oid: relation_id,
            old_data: data(old_row).unwrap_or_else(|| RowData::from_pairs(Vec::new())),
            replica_identity: identity,
            key_columns,
        },
    };
    let stream = [
        change(EventType::Relation { relation_id, namespace: schema, relation_name, replica_identity: identity, columns }, change_lsn),
        change(EventType::Begin { transaction_id: 7414, final_lsn: Lsn::new(commit_lsn), commit_timestamp: commit_time }, commit_lsn),
        change(row_change, change_lsn),
        change(
            EventType::Commit { commit_timestamp: commit_time, commit_lsn: Lsn::new(commit_lsn), end_lsn: Lsn::new(end_lsn) },
            end_lsn,
        ),
    ];
    // The trigger passes the table's primary key from the catalog.
    let keys = HashMap::from([(table.clone(), key)]);
    let mut decoder = Decoder::new(&slot, std::slice::from_ref(&table), &[op]).with_keys(keys);
    let mut event = None;
    for message in stream {
        for item in decoder.decode(message).map_err(|e| internal(kind, format!("{e:#}")))? {
            if let Item::Change(change) = item {
                event = Some(change);
            }
        }
    }
    let event = event.ok_or_else(|| internal(kind, "the decoder made no change event"))?;
    data_of(kind, &event)
}

/// The table's columns as pgoutput would describe them: those of the new row, then those
/// only the old row has, typed by their JSON values; `id` is the key.
fn relation_columns(new: Option<&Map<String, Value>>, old: Option<&Map<String, Value>>) -> Result<Vec<RelationColumn>, UsageError> {
    let mut columns: Vec<(String, Option<u32>)> = Vec::new();
    for (flag, row) in [("--row", new), ("--old", old)] {
        for (name, value) in row.into_iter().flatten() {
            let ty = pg_type(value);
            match columns.iter_mut().find(|(n, _)| n == name) {
                None => columns.push((name.clone(), ty)),
                Some((_, known)) => {
                    *known = merge_types(*known, ty).ok_or_else(|| {
                        UsageError::new(format!(
                            "{flag}: column {name:?} is {} here but {} in --row; a column has one type, so give it the same JSON type in both (or null)",
                            type_name(ty),
                            type_name(*known),
                        ))
                    })?;
                }
            }
        }
    }
    Ok(columns
        .into_iter()
        .map(|(name, ty)| RelationColumn {
            is_key: name == "id",
            name: Arc::from(name.as_str()),
            // A column that is null in every row given has no type to learn: text.
            type_id: ty.unwrap_or(TEXT_OID),
            type_modifier: -1,
        })
        .collect())
}

/// The column type of a JSON value; `None` for null, which fits any.
fn pg_type(value: &Value) -> Option<u32> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => oid::BOOL,
        Value::Number(n) if n.is_i64() => oid::INT8,
        // Beyond int8: a numeric column holds it.
        Value::Number(n) if n.is_u64() => NUMERIC_OID,
        Value::Number(_) => oid::FLOAT8,
        Value::String(_) => TEXT_OID,
        Value::Array(_) | Value::Object(_) => oid::JSONB,
    })
}

/// One type for a column seen in two rows: null fits any, and numbers widen (an int8 and a
/// float8 make float8, numeric takes both).
fn merge_types(a: Option<u32>, b: Option<u32>) -> Option<Option<u32>> {
    match (a, b) {
        (None, t) | (t, None) => Some(t),
        (Some(a), Some(b)) if a == b => Some(Some(a)),
        (Some(a), Some(b)) => {
            let numbers = [oid::INT8, oid::FLOAT8, NUMERIC_OID];
            if !numbers.contains(&a) || !numbers.contains(&b) {
                return None;
            }
            Some(Some(if a == NUMERIC_OID || b == NUMERIC_OID { NUMERIC_OID } else { oid::FLOAT8 }))
        }
    }
}

fn type_name(ty: Option<u32>) -> &'static str {
    match ty {
        None => "null",
        Some(oid::BOOL) => "a boolean (bool)",
        Some(oid::INT8) => "an integer (int8)",
        Some(oid::FLOAT8) => "a number (float8)",
        Some(NUMERIC_OID) => "a large integer (numeric)",
        Some(oid::JSONB) => "an object or array (jsonb)",
        Some(_) => "a string (text)",
    }
}

/// A row as pgoutput sends it: every value in PostgreSQL's text form for its column's type.
fn row_data(row: &Map<String, Value>) -> RowData {
    let pairs = row
        .iter()
        .map(|(name, value)| {
            let text = match value {
                Value::Null => return (name.as_str(), ColumnValue::Null),
                Value::Bool(true) => "t".to_owned(),
                Value::Bool(false) => "f".to_owned(),
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Array(_) | Value::Object(_) => value.to_string(),
            };
            (name.as_str(), ColumnValue::text(&text))
        })
        .collect();
    RowData::from_pairs(pairs)
}

fn http(args: &Args, time: Option<DateTime<Utc>>) -> Result<Value, UsageError> {
    let name = trigger_name(args, "api")?;
    let route = match &args.route_key {
        Some(key) => Some(RouteKey::parse(key).map_err(|m| UsageError::new(format!("--route-key: {m}")))?),
        None => None,
    };
    let method = match (&args.method, &route) {
        (Some(text), _) => request_method(text)?,
        (None, Some(RouteKey::Route { method: Some(method), .. })) => request_method(method)?,
        _ => Method::POST,
    };
    let (path, split_query) = match (&args.path, &route) {
        (Some(path), _) => match path.split_once('?') {
            Some((path, query)) => (path.to_owned(), Some(query.to_owned())),
            None => (path.clone(), None),
        },
        (None, Some(RouteKey::Route { path, .. })) => (example_path(path), None),
        (None, _) => ("/orders".to_owned(), None),
    };
    if !path.starts_with('/') {
        return Err(UsageError::new(format!("--path {path:?} must start with `/`, such as /orders/7")));
    }
    let query = match (args.query.as_deref(), split_query) {
        (Some(_), Some(_)) => {
            return Err(UsageError::new("--path has a query (`?...`) and --query gives one too; give the query once"));
        }
        (Some(query), None) => Some(query.strip_prefix('?').unwrap_or(query).to_owned()),
        (None, query) => query,
    };
    let uri: Uri = path.parse().map_err(|e| {
        UsageError::new(format!("--path {path:?} is not a URL path ({e}); percent-encode other characters (%20 for a space)"))
    })?;
    let uri: Uri = match &query {
        Some(query) if !query.is_empty() => format!("{path}?{query}").parse().map_err(|e| {
            UsageError::new(format!("--query {query:?} is not a URL query ({e}); percent-encode other characters (%20 for a space)"))
        })?,
        _ => uri,
    };
    let route_key = match &args.route_key {
        Some(key) => key.clone(),
        None => format!("{method} {}", uri.path()),
    };

    // The gateway's own route table decides whether the route answers the request, and
    // what its path parameters are.
    let mut routes = toml::Table::new();
    let mut target = toml::Table::new();
    target.insert("function".into(), name.into());
    routes.insert(route_key.clone(), toml::Value::Table(target));
    let mut file = toml::Table::new();
    file.insert("kind".into(), "http".into());
    file.insert("routes".into(), toml::Value::Table(routes));
    let text = toml::to_string(&file).map_err(|e| internal(Kind::Http, e))?;
    let file_path = format!("triggers/{name}.toml");
    let config = TriggerConfig::parse(Path::new(&file_path), &text)
        .map_err(|e| UsageError::new(format!("--route-key {route_key:?}: {e}")))?;
    let def = TriggerDef { name: name.to_owned(), path: file_path.into(), config };
    let http_config = def.config.get::<HttpConfig>().ok_or_else(|| internal(Kind::Http, "not an http trigger"))?;
    let table = RouteTable::build(&[(&def, http_config)])
        .map_err(|e| UsageError::new(format!("--route-key {route_key:?}: {e}")))?;
    let found = table.find(method.as_str(), uri.path()).ok_or_else(|| {
        UsageError::new(format!(
            "{method} {} does not match --route-key {route_key:?}: the gateway would not send this request to that route; \
             give a --method and --path it answers, or leave out --path to get one",
            uri.path()
        ))
    })?;

    let with_body = matches!(method, Method::POST | Method::PUT | Method::PATCH);
    let body = match &args.body {
        Some(body) => body.clone(),
        None if with_body => r#"{"item":"book","quantity":1}"#.to_owned(),
        None => String::new(),
    };
    let body = Bytes::from(body);
    // What curl sends.
    let mut headers = HeaderMap::new();
    headers.insert(header::HOST, HeaderValue::from_static(HTTP_HOST));
    headers.insert(header::USER_AGENT, HeaderValue::from_static("curl/8.5.0"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
    if !body.is_empty() {
        let json = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
        let content_type = if json { "application/json" } else { "text/plain; charset=utf-8" };
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let request_id = uuid::Uuid::new_v4().to_string();
    let event = apigw::event(&apigw::Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
        route_key: &route_key,
        path_parameters: &found.params,
        request_id: &request_id,
        source_ip: "127.0.0.1".to_owned(),
        api_id: name,
        time: time.unwrap_or_else(Utc::now),
    });
    serde_json::from_slice(&event).map_err(|e| internal(Kind::Http, e))
}

/// A request's method, in capitals as on the wire.
fn request_method(text: &str) -> Result<Method, UsageError> {
    let upper = text.to_ascii_uppercase();
    if upper == "ANY" {
        return Err(UsageError::new("--method ANY: a request has one method; give GET, POST, PUT, PATCH, DELETE, ..."));
    }
    Method::from_bytes(upper.as_bytes())
        .map_err(|_| UsageError::new(format!("--method {text:?} is not an HTTP method; give GET, POST, PUT, PATCH, DELETE, ...")))
}

/// A request path a route answers: `1` for each `{param}`, `a/b` for a greedy `{proxy+}`.
fn example_path(route_path: &str) -> String {
    route_path
        .split('/')
        .map(|segment| match segment.strip_prefix('{').and_then(|s| s.strip_suffix('}')) {
            Some(name) if name.ends_with('+') => "a/b",
            Some(_) => "1",
            None => segment,
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lambda_events::event::apigw::ApiGatewayV2httpRequest;
    use aws_lambda_events::event::eventbridge::EventBridgeEvent;
    use aws_lambda_events::event::kafka::KafkaEvent;
    use aws_lambda_events::event::s3::S3Event;
    use clap::{CommandFactory as _, Parser as _};
    use serde_json::json;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("generate").chain(argv.iter().copied())).unwrap().args
    }

    fn gen(argv: &[&str]) -> Value {
        generate(&parse(argv)).unwrap()
    }

    fn error(argv: &[&str]) -> String {
        generate(&parse(argv)).unwrap_err().message
    }

    #[test]
    fn the_arguments_are_a_valid_command_and_kind_names_are_the_contract() {
        Cli::command().debug_assert();
        use clap::ValueEnum as _;
        let names: Vec<String> =
            Kind::value_variants().iter().map(|k| k.to_possible_value().unwrap().get_name().to_owned()).collect();
        assert_eq!(names, ["s3-put", "s3-delete", "cron", "kafka", "mqtt", "nats", "pg-insert", "pg-update", "pg-delete", "http"]);
        for kind in Kind::value_variants() {
            assert_eq!(kind.to_possible_value().unwrap().get_name(), kind.as_str());
        }
    }

    #[test]
    fn s3_put_is_a_lambda_s3_event() {
        let data = gen(&["s3-put", "--bucket", "photos", "--key", "2026/red flower.jpg", "--size", "1024", "--time", "2026-11-27T12:00:00Z"]);
        assert_eq!(data.pointer("/Records/0/eventName").unwrap(), "ObjectCreated:Put");
        assert_eq!(data.pointer("/Records/0/s3/bucket/name").unwrap(), "photos");
        assert_eq!(data.pointer("/Records/0/s3/object/key").unwrap(), "2026/red+flower.jpg");
        assert_eq!(data.pointer("/Records/0/s3/object/size").unwrap(), 1024);
        assert_eq!(data.pointer("/Records/0/s3/configurationId").unwrap(), "uploads");
        assert_eq!(data.pointer("/Records/0/awsRegion").unwrap(), "local");
        assert_eq!(data.pointer("/Records/0/eventTime").unwrap(), "2026-11-27T12:00:00Z");
        let etag = data.pointer("/Records/0/s3/object/eTag").unwrap().as_str().unwrap();
        assert!(etag.len() == 32 && etag.bytes().all(|b| b.is_ascii_hexdigit()), "{etag}");
        let parsed: S3Event = serde_json::from_value(data).unwrap();
        assert_eq!(parsed.records[0].s3.object.size, Some(1024));
    }

    #[test]
    fn s3_delete_has_no_size_and_an_s3_region() {
        let data = gen(&["s3-delete", "--region", "eu-west-1", "--name", "on-delete"]);
        assert_eq!(data.pointer("/Records/0/eventName").unwrap(), "ObjectRemoved:Delete");
        assert_eq!(data.pointer("/Records/0/s3/object/key").unwrap(), "images/cat.jpg");
        assert_eq!(data.pointer("/Records/0/awsRegion").unwrap(), "eu-west-1");
        assert_eq!(data.pointer("/Records/0/s3/configurationId").unwrap(), "on-delete");
        assert!(data.pointer("/Records/0/s3/object/size").is_none());
        let _: S3Event = serde_json::from_value(data).unwrap();
        assert!(error(&["s3-delete", "--size", "5"]).contains("a delete record has no size"));
    }

    #[test]
    fn cron_is_a_scheduled_event() {
        let data = gen(&["cron", "--name", "nightly", "--time", "2026-11-27T03:00:00+01:00", "--payload", r#"{"job":"vacuum","days":[1,2]}"#]);
        assert_eq!(data["detail-type"], "Scheduled Event");
        assert_eq!(data["source"], "sluice.cron");
        assert_eq!(data["resources"], json!(["nightly"]));
        assert_eq!(data["detail"], json!({"job": "vacuum", "days": [1, 2]}));
        assert_eq!(data["time"], "2026-11-27T02:00:00Z");
        let parsed: EventBridgeEvent<Value> = serde_json::from_value(data).unwrap();
        assert_eq!(parsed.detail_type, "Scheduled Event");

        let default = gen(&["cron"]);
        assert_eq!(default["detail"], json!({}));
        let tick: DateTime<Utc> = default["time"].as_str().unwrap().parse().unwrap();
        assert_eq!(tick.timestamp() % 60, 0, "a whole minute");
    }

    #[test]
    fn cron_payloads_are_what_a_trigger_file_can_hold() {
        assert!(error(&["cron", "--payload", r#"{"a":null}"#]).starts_with("--payload"));
        assert!(error(&["cron", "--payload", "[1]"]).contains("not an object"));
        assert!(error(&["cron", "--payload", "{oops"]).contains("not JSON"));
    }

    #[test]
    fn kafka_is_a_lambda_kafka_event() {
        let data = gen(&[
            "kafka", "--topic", "payments", "--partition", "3", "--offset", "42", "--value", "hello", "--key", "k1",
            "--time", "2023-11-14T22:13:20Z",
        ]);
        assert_eq!(data["eventSource"], "SelfManagedKafka");
        assert_eq!(data["bootstrapServers"], KAFKA_BROKERS);
        let record = &data["records"]["payments-3"][0];
        assert_eq!(record["topic"], "payments");
        assert_eq!(record["partition"], 3);
        assert_eq!(record["offset"], 42);
        assert_eq!(record["value"], "aGVsbG8=");
        assert_eq!(record["key"], "azE=");
        assert_eq!(record["timestamp"], 1_700_000_000_000i64);
        let parsed: KafkaEvent = serde_json::from_value(data).unwrap();
        assert_eq!(parsed.records["payments-3"][0].offset, 42);

        let default = gen(&["kafka"]);
        assert_eq!(default["records"]["orders-0"][0]["value"], "eyJvcmRlcl9pZCI6NywidG90YWwiOjE5Ljl9");
        assert!(error(&["kafka", "--topic", "bad topic"]).starts_with("--topic"));
    }

    #[test]
    fn mqtt_passes_json_and_wraps_the_rest() {
        assert_eq!(gen(&["mqtt"]), json!({"device": "d7", "temperature": 21.5}));
        assert_eq!(gen(&["mqtt", "--payload", "[1,2]"]), json!([1, 2]));
        let wrapped = gen(&["mqtt", "--payload", "on"]);
        assert_eq!(wrapped, json!({"base64": true, "payload_base64": "b24="}));
        let message = error(&["mqtt", "--topic", "a/b"]);
        assert!(message.contains("--topic does not apply to mqtt") && message.contains("used by kafka"), "{message}");
    }

    #[test]
    fn nats_passes_the_body_as_is() {
        assert_eq!(gen(&["nats"]), json!({"order_id": 7, "status": "created"}));
        assert_eq!(gen(&["nats", "--payload", r#""text""#]), json!("text"));
        assert!(error(&["nats", "--payload", "plain text"]).contains("--raw"));
        assert!(error(&["nats", "--time", "2026-01-01T00:00:00Z"]).contains("carries no time"));
    }

    #[test]
    fn pg_insert_types_the_columns() {
        let row = r#"{"id":7,"name":"Ada","score":1.5,"active":true,"tags":["a"],"meta":{"k":1},"note":null,"big":18446744073709551615}"#;
        let data = gen(&["pg-insert", "--table", "shop.customers", "--row", row, "--name", "Shop-CDC", "--time", "2026-11-27T12:00:00.25Z"]);
        assert_eq!(data["op"], "insert");
        assert_eq!((data["schema"].as_str(), data["table"].as_str()), (Some("shop"), Some("customers")));
        assert_eq!(
            data["new"],
            json!({"id": 7, "name": "Ada", "score": 1.5, "active": true, "tags": ["a"], "meta": {"k": 1}, "note": null,
                   "big": "18446744073709551615"})
        );
        assert_eq!(data["old"], Value::Null);
        assert_eq!(data["key"], json!(["id"]));
        assert_eq!(data["slot"], "sluice_shop_cdc");
        assert_eq!(data["commit_time"], "2026-11-27T12:00:00.250Z");
        assert_eq!(data["position"], 0);
    }

    #[test]
    fn pg_update_and_delete_carry_the_old_row() {
        let data = gen(&["pg-update"]);
        assert_eq!((data["op"].as_str(), data["table"].as_str()), (Some("update"), Some("orders")));
        assert_eq!(data["new"]["paid"], true);
        assert_eq!(data["old"]["paid"], false);
        assert_eq!(data["new"]["items"], json!([{"sku": "book-1", "quantity": 1}]));
        assert_eq!(data["new"]["total"], 19.9);

        let data = gen(&["pg-update", "--row", r#"{"id":1,"total":20}"#, "--old", r#"{"id":1,"total":17.5}"#]);
        assert_eq!(data["new"], json!({"id": 1, "total": 20.0}), "an int8 and a float8 make a float8 column");
        assert_eq!(data["old"], json!({"id": 1, "total": 17.5}));
        let data = gen(&["pg-update", "--row", r#"{"id":1}"#]);
        assert_eq!(data["old"], Value::Null, "own --row without --old: default replica identity");

        let data = gen(&["pg-delete", "--row", r#"{"id":3,"sku":"x"}"#]);
        assert_eq!(data["op"], "delete");
        assert_eq!(data["new"], Value::Null);
        assert_eq!(data["old"], json!({"id": 3, "sku": "x"}));
    }

    #[test]
    fn pg_rows_must_be_json_objects_of_one_type_per_column() {
        let message = error(&["pg-insert", "--row", "{id: 1}"]);
        assert!(message.starts_with("--row \"{id: 1}\" is not JSON"), "{message}");
        assert!(error(&["pg-update", "--row", r#"{"id":1}"#, "--old", r#"{"id":"one"}"#]).contains("column \"id\""));
        assert!(error(&["pg-insert", "--table", "a.b.c"]).starts_with("--table"));
        assert!(error(&["pg-insert", "--old", "{}"]).contains("used by pg-update"));
    }

    #[test]
    fn http_is_an_api_gateway_v2_request() {
        let data = gen(&[
            "http", "--method", "get", "--path", "/users/42", "--route-key", "GET /users/{id}", "--query", "x=1&x=2",
            "--time", "2023-11-14T22:13:20Z",
        ]);
        assert_eq!(data["version"], "2.0");
        assert_eq!(data["routeKey"], "GET /users/{id}");
        assert_eq!(data["rawPath"], "/users/42");
        assert_eq!(data["rawQueryString"], "x=1&x=2");
        assert_eq!(data["queryStringParameters"], json!({"x": "1,2"}));
        assert_eq!(data["pathParameters"], json!({"id": "42"}));
        assert_eq!(data["requestContext"]["http"]["method"], "GET");
        assert_eq!(data["requestContext"]["apiId"], "api");
        assert_eq!(data["requestContext"]["timeEpoch"], 1_700_000_000_000i64);
        assert!(data.get("body").is_none_or(Value::is_null));
        let parsed: ApiGatewayV2httpRequest = serde_json::from_value(data).unwrap();
        assert_eq!(parsed.path_parameters["id"], "42");

        let data = gen(&["http"]);
        assert_eq!(data["routeKey"], "POST /orders");
        assert_eq!(data["body"], r#"{"item":"book","quantity":1}"#);
        assert_eq!(data["headers"]["content-type"], "application/json");
        let data = gen(&["http", "--route-key", "ANY /files/{proxy+}"]);
        assert_eq!((data["rawPath"].as_str(), data["pathParameters"]["proxy"].as_str()), (Some("/files/a/b"), Some("a/b")));
        let _: ApiGatewayV2httpRequest = serde_json::from_value(data).unwrap();
    }

    #[test]
    fn http_requests_must_match_their_route() {
        assert!(error(&["http", "--path", "/other", "--route-key", "GET /users/{id}"]).contains("does not match --route-key"));
        assert!(error(&["http", "--route-key", "GET users"]).starts_with("--route-key"));
        assert!(error(&["http", "--method", "ANY"]).starts_with("--method ANY"));
        assert!(error(&["http", "--path", "orders"]).contains("must start with `/`"));
        assert!(error(&["http", "--path", "/a b"]).contains("percent-encode"));
    }

    #[test]
    fn flags_of_other_kinds_and_bad_values_are_named() {
        let message = error(&["cron", "--bucket", "x"]);
        assert!(message.starts_with("--bucket does not apply to cron events; it is used by s3-put, s3-delete"), "{message}");
        assert!(error(&["kafka", "--name", "k"]).contains("does not carry the trigger's name"));
        let message = error(&["pg-insert", "--time", "yesterday"]);
        assert!(message.starts_with("--time \"yesterday\" is not an RFC 3339 time") && message.contains("2026-11-27T12:00:00Z"), "{message}");
        assert!(error(&["http", "--name", "my api"]).starts_with("--name \"my api\""));
        assert!(error(&["s3-put", "--bucket", "Bad_Bucket!"]).starts_with("--bucket"));
        assert!(Cli::try_parse_from(["generate", "kafka", "--partition", "-1"]).is_err());
        assert!(Cli::try_parse_from(["generate", "sqs"]).is_err());
    }
}
