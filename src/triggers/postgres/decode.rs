//! From pgoutput's decoded messages to Sluice events: one event per row change, its column
//! values typed as JSON by the column's PostgreSQL type.
//!
//! The data of an event (see docs/triggers.md):
//!
//! ```json
//! {"schema": "public", "table": "orders", "op": "update",
//!  "new": {"id": 7, "total": "19.90", "paid": true},
//!  "old": {"id": 7, "total": "17.50", "paid": false},
//!  "key": ["id"], "lsn": "0/1A2B3C8", "commit_lsn": "0/1A2B4F0", "position": 2,
//!  "xid": 7414, "commit_time": "2026-11-27T12:00:00.123456Z", "slot": "sluice_orders"}
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use pg_walstream::{format_lsn, ChangeEvent, ColumnValue, EventType, RowData};
use serde_json::{Map, Value};

use super::config::{Operation, TableName};
use crate::event::Event;

pub const SOURCE: &str = "sluice.postgres";
/// Event types: `sluice.postgres.insert`, `.update`, `.delete`, `.truncate`.
pub const TYPE_PREFIX: &str = "sluice.postgres";

/// What the decoder hands on, in commit order.
#[derive(Debug)]
pub enum Item {
    /// One row change (or one truncated table) as an event.
    Change(Box<Event>),
    /// The end of a transaction: once every change before it is stored, the slot may be
    /// confirmed up to this LSN.
    Commit(u64),
}

struct Transaction {
    xid: u32,
    commit_lsn: u64,
    commit_time: DateTime<Utc>,
    /// Row changes seen so far in this transaction, filtered out or not: the position of
    /// the next one, stable however often the transaction is decoded again.
    position: u64,
}

/// Turns the stream of one slot into [`Item`]s. Keeps the column types of each relation,
/// which pgoutput sends before a relation's first change on a connection and again when it
/// changes.
pub struct Decoder {
    slot: String,
    tables: BTreeSet<TableName>,
    operations: BTreeSet<Operation>,
    relations: HashMap<u32, Relation>,
    transaction: Option<Transaction>,
    /// The largest event data the bus takes (NATS `max_payload` less room for headers).
    max_data: usize,
    /// Primary key columns per table, for `key`.
    keys: HashMap<TableName, Vec<String>>,
}

impl Decoder {
    pub fn new(slot: &str, tables: &[TableName], operations: &[Operation]) -> Self {
        Self {
            slot: slot.to_owned(),
            tables: tables.iter().cloned().collect(),
            operations: operations.iter().copied().collect(),
            relations: HashMap::new(),
            transaction: None,
            max_data: usize::MAX,
            keys: HashMap::new(),
        }
    }

    /// Each table's primary key columns: an event's `key`. A table without one has the
    /// replica identity columns pgoutput names.
    pub fn with_keys(mut self, keys: HashMap<TableName, Vec<String>>) -> Self {
        self.keys = keys;
        self
    }

    /// Events at most `bytes` of data: larger rows lose their largest values (see
    /// [`fit`]).
    pub fn with_max_data(mut self, bytes: usize) -> Self {
        self.max_data = bytes;
        self
    }

    /// The items for one message: none for most, one per change, several for a TRUNCATE of
    /// several tables.
    pub fn decode(&mut self, change: ChangeEvent) -> anyhow::Result<Vec<Item>> {
        let lsn = change.lsn.value();
        match change.event_type {
            EventType::Relation { relation_id, columns, .. } => {
                let types = columns.iter().map(|c| (c.name.clone(), c.type_id)).collect();
                let names = columns.into_iter().map(|c| c.name).collect();
                self.relations.insert(relation_id, Relation { names, types });
                Ok(Vec::new())
            }
            EventType::Begin { transaction_id, final_lsn, commit_timestamp } => {
                self.transaction = Some(Transaction {
                    xid: transaction_id,
                    commit_lsn: final_lsn.value(),
                    commit_time: commit_timestamp,
                    position: 0,
                });
                Ok(Vec::new())
            }
            EventType::Commit { end_lsn, .. } => {
                self.transaction = None;
                Ok(vec![Item::Commit(end_lsn.value())])
            }
            EventType::Insert { schema, table, relation_oid, data } => {
                let row = Row { schema, table, relation_oid, op: Operation::Insert, new: Some(data), old: None, key: Vec::new() };
                self.row(row, lsn)
            }
            EventType::Update { schema, table, relation_oid, old_data, new_data, key_columns, .. } => {
                let row = Row { schema, table, relation_oid, op: Operation::Update, new: Some(new_data), old: old_data, key: key_columns };
                self.row(row, lsn)
            }
            EventType::Delete { schema, table, relation_oid, old_data, key_columns, .. } => {
                let row = Row { schema, table, relation_oid, op: Operation::Delete, new: None, old: Some(old_data), key: key_columns };
                self.row(row, lsn)
            }
            EventType::Truncate { tables, cascade, restart_identity } => {
                let mut items = Vec::new();
                for name in tables {
                    let position = self.next_position()?;
                    let Ok(table) = TableName::parse(&name) else { continue };
                    if !self.wanted(&table, Operation::Truncate) {
                        continue;
                    }
                    let mut record = self.record(&table, Operation::Truncate, lsn, position)?;
                    record.insert("cascade".into(), Value::Bool(cascade));
                    record.insert("restart_identity".into(), Value::Bool(restart_identity));
                    items.push(self.event(&table, Operation::Truncate, position, record)?);
                }
                Ok(items)
            }
            _ => Ok(Vec::new()),
        }
    }

    fn wanted(&self, table: &TableName, op: Operation) -> bool {
        self.operations.contains(&op) && self.tables.contains(table)
    }

    fn next_position(&mut self) -> anyhow::Result<u64> {
        let transaction = self
            .transaction
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("a row change arrived outside a transaction (no BEGIN before it)"))?;
        let position = transaction.position;
        transaction.position += 1;
        Ok(position)
    }

    fn row(&mut self, row: Row, lsn: u64) -> anyhow::Result<Vec<Item>> {
        let position = self.next_position()?;
        let table = TableName { schema: row.schema.to_string(), table: row.table.to_string() };
        if !self.wanted(&table, row.op) {
            return Ok(Vec::new());
        }
        let relation = self.relations.get(&row.relation_oid).ok_or_else(|| {
            anyhow::anyhow!("a change of {table} arrived before its relation (column types); the stream is out of step")
        })?;
        let type_of = |name: &str| relation.types.get(name).copied().unwrap_or(0);
        let typed_row = |data: &RowData| -> Map<String, Value> {
            data.iter().map(|(name, value)| (name.to_string(), typed(type_of(name), value))).collect()
        };
        let old = row.old.as_ref().map(typed_row);
        let mut new = row.new.as_ref().map(typed_row);
        // pgoutput leaves out TOASTed values an UPDATE did not change. Take them from the
        // old row when it has them (REPLICA IDENTITY FULL); name the others.
        let mut unchanged = Vec::new();
        if let Some(new) = new.as_mut() {
            let missing: Vec<&Arc<str>> = relation.names.iter().filter(|name| !new.contains_key(name.as_ref())).collect();
            for name in missing {
                match old.as_ref().and_then(|old| old.get(name.as_ref())) {
                    Some(value) => {
                        new.insert(name.to_string(), value.clone());
                    }
                    None => unchanged.push(Value::String(name.to_string())),
                }
            }
        }
        let mut record = self.record(&table, row.op, lsn, position)?;
        record.insert("new".into(), new.map_or(Value::Null, Value::Object));
        record.insert("old".into(), old.map_or(Value::Null, Value::Object));
        let key: Vec<Value> = match self.keys.get(&table).filter(|k| !k.is_empty()) {
            Some(key) => key.iter().map(|k| Value::String(k.clone())).collect(),
            None => row.key.iter().map(|k| Value::String(k.to_string())).collect(),
        };
        record.insert("key".into(), Value::Array(key));
        if !unchanged.is_empty() {
            record.insert("unchanged_toast".into(), Value::Array(unchanged));
        }
        Ok(vec![self.event(&table, row.op, position, record)?])
    }

    fn record(&self, table: &TableName, op: Operation, lsn: u64, position: u64) -> anyhow::Result<Map<String, Value>> {
        let transaction = self.transaction.as_ref().ok_or_else(|| anyhow::anyhow!("no open transaction"))?;
        let mut record = Map::new();
        record.insert("schema".into(), Value::String(table.schema.clone()));
        record.insert("table".into(), Value::String(table.table.clone()));
        record.insert("op".into(), Value::String(op.as_str().to_owned()));
        record.insert("lsn".into(), Value::String(format_lsn(lsn)));
        record.insert("commit_lsn".into(), Value::String(format_lsn(transaction.commit_lsn)));
        record.insert("position".into(), Value::from(position));
        record.insert("xid".into(), Value::from(transaction.xid));
        record.insert("commit_time".into(), Value::String(timestamp(transaction.commit_time)));
        record.insert("slot".into(), Value::String(self.slot.clone()));
        Ok(record)
    }

    fn event(&self, table: &TableName, op: Operation, position: u64, mut record: Map<String, Value>) -> anyhow::Result<Item> {
        let transaction = self.transaction.as_ref().ok_or_else(|| anyhow::anyhow!("no open transaction"))?;
        for key in ["new", "old"] {
            record.entry(key).or_insert(Value::Null);
        }
        let mut data = serde_json::to_vec(&record)?;
        if data.len() > self.max_data {
            fit(&mut record, self.max_data);
            data = serde_json::to_vec(&record)?;
        }
        let mut event = Event::new(SOURCE, format!("{TYPE_PREFIX}.{}", op.as_str()), Bytes::from(data));
        event.id = event_id(&self.slot, transaction.commit_lsn, position);
        event.time = transaction.commit_time;
        event.subject = Some(table.to_string());
        Ok(Item::Change(Box::new(event)))
    }
}

/// A relation's columns as pgoutput last described them.
struct Relation {
    /// In table order.
    names: Vec<Arc<str>>,
    /// Type OID of each column.
    types: HashMap<Arc<str>, u32>,
}

struct Row {
    schema: Arc<str>,
    table: Arc<str>,
    relation_oid: u32,
    op: Operation,
    new: Option<RowData>,
    old: Option<RowData>,
    key: Vec<Arc<str>>,
}

/// Makes a record at most `max` bytes of JSON: while it is larger, its largest column value
/// (of `new` or `old`) becomes `null` and is named in `omitted` (`"new.body"`), so a row too
/// large for the bus still fires, with its key and small columns, instead of stopping the
/// stream. The function can read the rest from the table.
fn fit(record: &mut Map<String, Value>, max: usize) {
    let size = |record: &Map<String, Value>| serde_json::to_vec(record).map_or(0, |v| v.len());
    let mut current = size(record);
    if current <= max {
        return;
    }
    let mut omitted = Vec::new();
    while current > max {
        let largest = ["new", "old"]
            .iter()
            .filter_map(|row| record.get(*row).and_then(Value::as_object).map(|columns| (*row, columns)))
            .flat_map(|(row, columns)| {
                columns
                    .iter()
                    .filter(|(_, value)| !value.is_null())
                    .map(move |(column, value)| (serde_json::to_vec(value).map_or(0, |v| v.len()), row, column.clone()))
            })
            .max();
        let Some((_, row, column)) = largest else { break };
        if let Some(value) = record.get_mut(row).and_then(|r| r.get_mut(&column)) {
            *value = Value::Null;
        }
        omitted.push(Value::String(format!("{row}.{column}")));
        record.insert("omitted".into(), Value::Array(omitted.clone()));
        current = size(record);
    }
}

/// `postgres:<slot>:<commit LSN>:<position in the transaction>`: the same change decoded
/// again after a restart gets the same id, which JetStream's duplicate window drops.
pub fn event_id(slot: &str, commit_lsn: u64, position: u64) -> String {
    format!("postgres:{slot}:{}:{position}", format_lsn(commit_lsn))
}

fn timestamp(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// Type OIDs (`pg_type.oid`) this module gives JSON types to.
pub(crate) mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const JSONB: u32 = 3802;
}

/// The element type of the array types with JSON-typed elements.
fn array_element(type_oid: u32) -> Option<u32> {
    Some(match type_oid {
        1000 => oid::BOOL,
        1001 => oid::BYTEA,
        1005 => oid::INT2,
        1007 => oid::INT4,
        1016 => oid::INT8,
        1021 => oid::FLOAT4,
        1022 => oid::FLOAT8,
        199 => oid::JSON,
        3807 => oid::JSONB,
        1115 => oid::TIMESTAMP,
        1185 => oid::TIMESTAMPTZ,
        // text[], varchar[], bpchar[], name[], uuid[], numeric[], date[]: strings.
        1009 | 1015 | 1014 | 1003 | 2951 | 1231 | 1182 => 25,
        _ => return None,
    })
}

/// One column value as JSON: integers and floats as numbers, booleans, `json`/`jsonb` as
/// their JSON, `bytea` in base64, `timestamptz` as RFC 3339 in UTC, `timestamp` as ISO 8601
/// without zone, arrays of those as arrays, and everything else (numeric, money, date,
/// interval, uuid, text, ...) as the text PostgreSQL prints.
pub fn typed(type_oid: u32, value: &ColumnValue) -> Value {
    match value {
        ColumnValue::Null => Value::Null,
        ColumnValue::Binary(bytes) => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
        ColumnValue::Text(bytes) => {
            let text = String::from_utf8_lossy(bytes);
            match array_element(type_oid) {
                Some(element) => parse_array(&text, element).unwrap_or_else(|| Value::String(text.into_owned())),
                None => scalar(type_oid, &text),
            }
        }
    }
}

fn scalar(type_oid: u32, text: &str) -> Value {
    let string = || Value::String(text.to_owned());
    match type_oid {
        oid::BOOL => match text {
            "t" => Value::Bool(true),
            "f" => Value::Bool(false),
            _ => string(),
        },
        oid::INT2 | oid::INT4 | oid::INT8 | oid::OID => text.parse::<i64>().map_or_else(|_| string(), Value::from),
        oid::FLOAT4 | oid::FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map_or_else(string, Value::Number),
        oid::JSON | oid::JSONB => serde_json::from_str(text).unwrap_or_else(|_| string()),
        oid::BYTEA => match text.strip_prefix("\\x").map(hex::decode) {
            Some(Ok(bytes)) => Value::String(base64::engine::general_purpose::STANDARD.encode(bytes)),
            _ => string(),
        },
        // DateStyle ISO: `2026-11-27 12:00:00.123456`; `infinity` and BC dates stay text.
        oid::TIMESTAMP if text.len() > 10 && text.as_bytes().get(10) == Some(&b' ') && !text.ends_with(" BC") => {
            Value::String(format!("{}T{}", &text[..10], &text[11..]))
        }
        oid::TIMESTAMPTZ => DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z")
            .map_or_else(|_| string(), |t| Value::String(timestamp(t.with_timezone(&Utc)))),
        _ => string(),
    }
}

/// PostgreSQL's limit on array dimensions (`MAXDIM`). Deeper nesting is not an array it
/// printed, and would otherwise recurse once per `{`.
const MAX_DIMENSIONS: usize = 6;

/// An array in PostgreSQL's text form (`{1,2,NULL}`, `{{"a b","c"},{d,e}}`,
/// `[0:1]={1,2}`) as nested JSON arrays of typed elements; `None` if it is not one.
fn parse_array(text: &str, element: u32) -> Option<Value> {
    let body = match text.strip_prefix('[') {
        Some(_) => &text[text.find('=')? + 1..],
        None => text,
    };
    let mut chars = body.chars().peekable();
    let value = parse_array_level(&mut chars, element, 1)?;
    chars.next().is_none().then_some(value)
}

fn parse_array_level(chars: &mut std::iter::Peekable<std::str::Chars<'_>>, element: u32, depth: usize) -> Option<Value> {
    if depth > MAX_DIMENSIONS || chars.next()? != '{' {
        return None;
    }
    let mut items = Vec::new();
    if chars.peek() == Some(&'}') {
        chars.next();
        return Some(Value::Array(items));
    }
    loop {
        match chars.peek()? {
            '{' => items.push(parse_array_level(chars, element, depth + 1)?),
            '"' => {
                chars.next();
                let mut item = String::new();
                loop {
                    match chars.next()? {
                        '\\' => item.push(chars.next()?),
                        '"' => break,
                        c => item.push(c),
                    }
                }
                items.push(scalar(element, &item));
            }
            _ => {
                let mut item = String::new();
                while let Some(&c) = chars.peek() {
                    if c == ',' || c == '}' {
                        break;
                    }
                    item.push(c);
                    chars.next();
                }
                let item = item.trim();
                items.push(if item.eq_ignore_ascii_case("NULL") { Value::Null } else { scalar(element, item) });
            }
        }
        match chars.next()? {
            ',' => {}
            '}' => return Some(Value::Array(items)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pg_walstream::{Lsn, RelationColumn, ReplicaIdentity};
    use serde_json::json;

    fn text(s: &str) -> ColumnValue {
        ColumnValue::text(s)
    }

    #[test]
    fn scalars_get_json_types() {
        assert_eq!(typed(oid::BOOL, &text("t")), json!(true));
        assert_eq!(typed(oid::INT8, &text("-9007199254740993")), json!(-9_007_199_254_740_993i64));
        assert_eq!(typed(oid::FLOAT8, &text("1.5")), json!(1.5));
        assert_eq!(typed(oid::FLOAT8, &text("NaN")), json!("NaN"));
        assert_eq!(typed(1700, &text("12345678901234567890.12")), json!("12345678901234567890.12"));
        assert_eq!(typed(oid::JSONB, &text("{\"a\": [1, 2]}")), json!({"a": [1, 2]}));
        assert_eq!(typed(oid::BYTEA, &text("\\x00ff10")), json!("AP8Q"));
        assert_eq!(typed(oid::TIMESTAMP, &text("2026-11-27 12:00:00.5")), json!("2026-11-27T12:00:00.5"));
        assert_eq!(typed(oid::TIMESTAMP, &text("infinity")), json!("infinity"));
        assert_eq!(typed(oid::TIMESTAMPTZ, &text("2026-11-27 12:00:00.123456+00")), json!("2026-11-27T12:00:00.123456Z"));
        assert_eq!(typed(oid::TIMESTAMPTZ, &text("2026-11-27 14:30:00+02:30")), json!("2026-11-27T12:00:00Z"));
        assert_eq!(typed(1082, &text("2026-11-27")), json!("2026-11-27"));
        assert_eq!(typed(25, &text("t")), json!("t"), "text stays text");
        assert_eq!(typed(oid::INT4, &ColumnValue::Null), Value::Null);
    }

    #[test]
    fn arrays_become_arrays() {
        assert_eq!(typed(1007, &text("{1,2,NULL}")), json!([1, 2, null]));
        assert_eq!(typed(1009, &text("{\"a b\",\"c\\\"d\",NULL,\"NULL\"}")), json!(["a b", "c\"d", null, "NULL"]));
        assert_eq!(typed(1007, &text("{{1,2},{3,4}}")), json!([[1, 2], [3, 4]]));
        assert_eq!(typed(1007, &text("[0:1]={5,6}")), json!([5, 6]));
        assert_eq!(typed(1000, &text("{}")), json!([]));
        assert_eq!(typed(1001, &text("{\"\\\\x0102\"}")), json!(["AQI="]));
        assert_eq!(typed(1007, &text("{1,2")), json!("{1,2"), "malformed stays text");
        assert_eq!(typed(1007, &text("{{{{{{1}}}}}}")), json!([[[[[[1]]]]]]), "six dimensions, PostgreSQL's most");
        let deep = format!("{}{}", "{".repeat(100_000), "}".repeat(100_000));
        assert_eq!(typed(1007, &text(&deep)), json!(deep), "deeper is text, without recursing once per brace");
    }

    fn change(event_type: EventType, lsn: u64) -> ChangeEvent {
        ChangeEvent { event_type, lsn: Lsn::new(lsn), metadata: None }
    }

    fn relation() -> ChangeEvent {
        let column = |name: &str, type_id: u32, is_key: bool| RelationColumn { name: name.into(), type_id, type_modifier: -1, is_key };
        change(
            EventType::Relation {
                relation_id: 42,
                namespace: "public".into(),
                relation_name: "orders".into(),
                replica_identity: ReplicaIdentity::Full,
                columns: vec![column("id", oid::INT4, true), column("note", 25, false), column("paid", oid::BOOL, false)],
            },
            0,
        )
    }

    fn begin(xid: u32, commit_lsn: u64) -> ChangeEvent {
        let commit_timestamp = DateTime::parse_from_rfc3339("2026-11-27T12:00:00.25Z").unwrap().with_timezone(&Utc);
        change(EventType::Begin { transaction_id: xid, final_lsn: Lsn::new(commit_lsn), commit_timestamp }, commit_lsn)
    }

    fn row(pairs: &[(&str, &str)]) -> RowData {
        RowData::from_pairs(pairs.iter().map(|(k, v)| (*k, text(v))).collect())
    }

    fn record(item: &Item) -> (Event, Value) {
        match item {
            Item::Change(event) => ((**event).clone(), serde_json::from_slice(&event.data).unwrap()),
            Item::Commit(_) => panic!("expected a change"),
        }
    }

    #[test]
    fn a_transaction_becomes_typed_records_then_its_commit() {
        let tables = [TableName::parse("public.orders").unwrap()];
        let keys = HashMap::from([(tables[0].clone(), vec!["id".to_owned()])]);
        let mut decoder = Decoder::new("sluice_orders", &tables, &[Operation::Insert, Operation::Update]).with_keys(keys);
        assert!(decoder.decode(relation()).unwrap().is_empty());
        assert!(decoder.decode(begin(900, 0x1_0000_0200)).unwrap().is_empty());
        let insert = EventType::Insert { schema: "public".into(), table: "orders".into(), relation_oid: 42, data: row(&[("id", "7"), ("note", "hi"), ("paid", "f")]) };
        let items = decoder.decode(change(insert, 0x1_0000_0100)).unwrap();
        let (event, data) = record(&items[0]);
        assert_eq!(event.id, "postgres:sluice_orders:1/200:0");
        assert_eq!(event.ty, "sluice.postgres.insert");
        assert_eq!(event.subject.as_deref(), Some("public.orders"));
        assert_eq!(
            data,
            json!({"schema": "public", "table": "orders", "op": "insert", "new": {"id": 7, "note": "hi", "paid": false},
                   "old": null, "key": ["id"], "lsn": "1/100", "commit_lsn": "1/200", "position": 0, "xid": 900,
                   "commit_time": "2026-11-27T12:00:00.250Z", "slot": "sluice_orders"})
        );
        // A delete is filtered out but still takes its position.
        let delete = EventType::Delete {
            schema: "public".into(), table: "orders".into(), relation_oid: 42, old_data: row(&[("id", "7")]),
            replica_identity: ReplicaIdentity::Full, key_columns: vec!["id".into()],
        };
        assert!(decoder.decode(change(delete, 0x1_0000_0140)).unwrap().is_empty());
        // An update whose new row lacks an unchanged TOASTed column takes it from the old row.
        let update = EventType::Update {
            schema: "public".into(), table: "orders".into(), relation_oid: 42,
            old_data: Some(row(&[("id", "7"), ("note", "long"), ("paid", "f")])),
            new_data: row(&[("id", "7"), ("paid", "t")]),
            replica_identity: ReplicaIdentity::Full, key_columns: vec!["id".into(), "note".into(), "paid".into()],
        };
        let items = decoder.decode(change(update, 0x1_0000_0180)).unwrap();
        let (event, data) = record(&items[0]);
        assert_eq!(event.id, "postgres:sluice_orders:1/200:2");
        assert_eq!(data["new"], json!({"id": 7, "note": "long", "paid": true}));
        assert_eq!(data["old"]["paid"], json!(false));
        assert_eq!(data["key"], json!(["id"]));
        let commit = EventType::Commit { commit_timestamp: Utc::now(), commit_lsn: Lsn::new(0x1_0000_0200), end_lsn: Lsn::new(0x1_0000_0230) };
        assert!(matches!(decoder.decode(change(commit, 0x1_0000_0230)).unwrap()[..], [Item::Commit(0x1_0000_0230)]));
    }

    #[test]
    fn a_record_too_large_for_the_bus_loses_its_largest_values() {
        let big = "x".repeat(5000);
        let mut record = json!({"op": "update", "new": {"id": 7, "body": big, "title": "t"}, "old": {"id": 7, "body": big, "title": "s"}})
            .as_object()
            .cloned()
            .unwrap();
        let untouched = record.clone();
        fit(&mut record, 20_000);
        assert_eq!(record, untouched, "small enough: unchanged");
        fit(&mut record, 1000);
        assert_eq!(record["new"], json!({"id": 7, "body": null, "title": "t"}));
        assert_eq!(record["old"], json!({"id": 7, "body": null, "title": "s"}));
        assert_eq!(record["omitted"].as_array().unwrap().len(), 2);
        assert!(serde_json::to_vec(&record).unwrap().len() <= 1000);
    }

    #[test]
    fn other_tables_and_changes_outside_a_transaction() {
        let mut decoder = Decoder::new("s", &[TableName::parse("public.other").unwrap()], &[Operation::Insert]);
        decoder.decode(relation()).unwrap();
        let insert = || EventType::Insert { schema: "public".into(), table: "orders".into(), relation_oid: 42, data: row(&[("id", "1")]) };
        assert!(decoder.decode(change(insert(), 1)).is_err(), "no BEGIN");
        decoder.decode(begin(1, 10)).unwrap();
        assert!(decoder.decode(change(insert(), 2)).unwrap().is_empty(), "not a watched table");
    }
}
