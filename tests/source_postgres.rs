//! The `postgres` trigger against the real local PostgreSQL (wal_level = logical, set by
//! scripts/setup-test.sh): 1,000 inserts, 200 updates and 100 deletes in mixed transactions
//! arrive exactly once and in commit order with typed old and new rows, through a kill of
//! `sluice up` mid-burst; while JetStream is down the slot's confirmed position stays put
//! and nothing is lost; a second node stands by and takes the slot over; a rolled-back
//! transaction fires nothing; the handler gets the documented record; set-up mistakes name
//! their fix; `triggers list` shows the slot's lag.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::postgres::PgFixture;
use common::*;
use serde_json::{json, Value};

const COLUMNS: &str = "id int PRIMARY KEY, name text NOT NULL, qty bigint, price numeric(12,2), paid boolean, \
                       at timestamptz, day date, data jsonb, blob bytea, tags text[], ratio double precision, note text";

async fn create_table(pg: &PgFixture) {
    let n = &pg.name;
    pg.client
        .batch_execute(&format!("CREATE TABLE {n} ({COLUMNS}); ALTER TABLE {n} REPLICA IDENTITY FULL;"))
        .await
        .unwrap();
}

/// The row `id` as inserted, in SQL.
fn insert_sql(table: &str, id: i64) -> String {
    let note = if id % 2 == 0 { format!("'note {id}'") } else { "NULL".to_owned() };
    format!(
        "INSERT INTO {table} VALUES ({id}, 'item-{id}', {qty}, {id}.25, {paid}, \
         timestamptz '2026-11-27 12:00:00.5+00' + interval '{id} seconds', date '2026-01-01' + {day}, \
         '{{\"id\": {id}, \"tags\": [\"a\"]}}', '\\x{b:02x}00ff', ARRAY['x', 'y z'], {id}.0 / 4, {note});",
        qty = id * 1_000_000_007,
        paid = id % 2 == 0,
        day = id % 365,
        b = id % 256,
    )
}

/// The same row as the event's JSON should type it.
fn inserted(id: i64) -> Value {
    let at = chrono::DateTime::parse_from_rfc3339("2026-11-27T12:00:00.5Z").unwrap() + chrono::Duration::seconds(id);
    let day = chrono::NaiveDate::from_ymd_opt(2026, 1, 1).unwrap() + chrono::Duration::days(id % 365);
    let blob = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [(id % 256) as u8, 0, 255]);
    json!({
        "id": id, "name": format!("item-{id}"), "qty": id * 1_000_000_007, "price": format!("{id}.25"),
        "paid": id % 2 == 0, "at": at.to_utc().to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        "day": day.to_string(), "data": {"id": id, "tags": ["a"]}, "blob": blob, "tags": ["x", "y z"],
        "ratio": id as f64 / 4.0, "note": if id % 2 == 0 { json!(format!("note {id}")) } else { Value::Null },
    })
}

fn update_sql(table: &str, id: i64) -> String {
    format!("UPDATE {table} SET name = name || '-v2', qty = qty + 1, paid = true WHERE id = {id};")
}

/// `row` after [`update_sql`].
fn updated(row: &Value) -> Value {
    let mut row = row.clone();
    row["name"] = json!(format!("{}-v2", row["name"].as_str().unwrap()));
    row["qty"] = json!(row["qty"].as_i64().unwrap() + 1);
    row["paid"] = json!(true);
    row
}

/// The project: `function` echoes its event (FLAKY_ECHO), and the trigger feeds it.
fn project_for(pg: &PgFixture, extra: &str) -> Project {
    let project = Project::new();
    project.function("rows", "flaky", "concurrency = 32\nenv = { FLAKY_ECHO = \"1\" }\n");
    project.trigger("rows-in", pg.trigger("rows", extra));
    project
}

async fn wait_streaming(project: &Project, nats: &NatsServer) -> Value {
    wait_for_trigger_status(project, &nats.url(), "healthy").await
}

/// What one event of the burst must be: (op, id).
fn burst_plan(transactions: i64) -> (Vec<String>, Vec<(String, i64)>) {
    // Each transaction: 10 inserts, 2 updates (one of a row of this transaction, one of the
    // previous one), 1 delete (of the previous transaction's row), interleaved.
    let mut sql = Vec::new();
    let mut expected = Vec::new();
    for t in 0..transactions {
        let base = t * 10;
        let mut statements = String::from("BEGIN;");
        let mut step = |statement: String, op: &str, id: i64| {
            statements.push_str(&statement);
            expected.push((op.to_owned(), id));
        };
        for id in base..base + 5 {
            step(insert_sql("{t}", id), "insert", id);
        }
        step(update_sql("{t}", base), "update", base);
        for id in base + 5..base + 10 {
            step(insert_sql("{t}", id), "insert", id);
        }
        let earlier = if t == 0 { base + 1 } else { base - 9 };
        step(update_sql("{t}", earlier), "update", earlier);
        let gone = if t == 0 { base + 8 } else { base - 1 };
        step(format!("DELETE FROM {{t}} WHERE id = {gone};"), "delete", gone);
        statements.push_str("COMMIT;");
        sql.push(statements);
    }
    (sql, expected)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_burst_arrives_exactly_once_in_commit_order_through_a_crash() {
    let pg = PgFixture::new().await;
    create_table(&pg).await;
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    let project = project_for(&pg, "");
    project.function("rows", "flaky", "concurrency = 64\n");
    let mut up = project.up(Some(&nats.url()));
    wait_streaming(&project, &nats).await;

    let (transactions, expected) = burst_plan(100);
    assert_eq!(expected.iter().filter(|(op, _)| op == "insert").count(), 1000);
    assert_eq!(expected.iter().filter(|(op, _)| op == "update").count(), 200);
    assert_eq!(expected.iter().filter(|(op, _)| op == "delete").count(), 100);
    let table = pg.name.clone();
    let writer = tokio::spawn(async move {
        let client = common::postgres::connect().await;
        for statements in transactions {
            client.batch_execute(&statements.replace("{t}", &table)).await.unwrap();
            // Part of the scenario: spread the burst so the kill lands in its middle.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    // Kill `sluice up` in the middle of the burst, while the writer goes on.
    wait_events(&js, 300, &up).await;
    up.kill();
    let at_crash = stream_count(&js, "SLUICE_EVENTS").await;
    writer.await.unwrap();
    let before_restart = stream_count(&js, "SLUICE_EVENTS").await;
    let mut up = project.up(Some(&nats.url()));
    wait_events(&js, expected.len(), &up).await;
    wait_idle(&js, "rows", Duration::from_secs(60)).await;
    wait_confirmed(&js, &pg).await;
    assert!((1..expected.len() as u64).contains(&at_crash), "killed in the middle ({at_crash} stored)");
    // The restarted stream's figures, logged when it stops: what it published less what
    // JetStream already had (changes re-read from the slot's confirmed position) is what
    // the crash left unstored.
    assert!(up.terminate().success());
    let log = up.log();
    let stopped = log.lines().find(|line| line.contains("PostgreSQL change stream stopped.")).unwrap_or_else(|| panic!("{log}"));
    let figure = |name: &str| -> u64 {
        let word = stopped.split_whitespace().find_map(|word| word.strip_prefix(&format!("{name}="))).unwrap_or_else(|| panic!("{stopped}"));
        word.parse().unwrap()
    };
    let (published, duplicates) = (figure("published"), figure("duplicates"));
    eprintln!("restarted stream: published {published}, of which {duplicates} duplicates");
    assert_eq!(published - duplicates, expected.len() as u64 - before_restart, "{stopped}");

    assert_changes(&js, &pg, &expected).await;
    // Every event ran the function once: the consumer acknowledged them all, none twice.
    let info = js.get_stream("SLUICE_EVENTS").await.unwrap().consumer_info("rows").await.unwrap();
    assert_eq!(info.ack_floor.stream_sequence, expected.len() as u64);
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.num_redelivered, 0);
}

/// `SLUICE_EVENTS` holds exactly the `expected` changes, in commit order, each once, with
/// the documented ids and the right old and new rows; the slot is confirmed past the last.
async fn assert_changes(js: &async_nats::jetstream::Context, pg: &PgFixture, expected: &[(String, i64)]) {
    let stored = stream_messages(js, "SLUICE_EVENTS").await;
    assert_eq!(stored.len(), expected.len(), "every change once, none twice");
    let mut ids = BTreeSet::new();
    let mut last_commit = (0u64, 0u64);
    let mut alive = std::collections::BTreeMap::new();
    for (message, (op, id)) in stored.iter().zip(expected) {
        let record: Value = serde_json::from_slice(&message.payload).unwrap();
        assert_eq!((record["op"].as_str().unwrap(), record["new"]["id"].as_i64().or(record["old"]["id"].as_i64()).unwrap()), (op.as_str(), *id), "commit order: {record}");
        assert_eq!(record["table"], pg.name.as_str());
        assert_eq!(record["schema"], "public");
        let ce_id = header(message, "ce-id").unwrap();
        assert!(ids.insert(ce_id.to_owned()), "{ce_id} stored twice");
        let commit_lsn = pg_lsn(record["commit_lsn"].as_str().unwrap());
        let position = record["position"].as_u64().unwrap();
        assert_eq!(ce_id, format!("postgres:{}:{}:{position}", pg.name, record["commit_lsn"].as_str().unwrap()));
        assert!((commit_lsn, position) > last_commit, "commit LSN and position only grow: {record}");
        last_commit = (commit_lsn, position);
        assert_eq!(header(message, "ce-type").unwrap(), format!("sluice.postgres.{op}"));
        match op.as_str() {
            "insert" => {
                assert_eq!(record["new"], inserted(*id));
                assert_eq!(record["old"], Value::Null);
                alive.insert(*id, inserted(*id));
            }
            "update" => {
                assert_eq!(record["old"], alive[id], "the old row, whole (REPLICA IDENTITY FULL)");
                assert_eq!(record["new"], updated(&alive[id]));
                alive.insert(*id, updated(&alive[id]));
            }
            _ => {
                assert_eq!(record["old"], alive.remove(id).unwrap());
                assert_eq!(record["new"], Value::Null);
            }
        }
    }
    // The slot is confirmed past the last transaction: nothing is left to send again.
    assert!(confirmed_lsn(pg).await > last_commit.0, "slot confirmed past the last commit");
}

async fn confirmed_lsn(pg: &PgFixture) -> u64 {
    let confirmed: String = pg
        .client
        .query_one("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = $1", &[&pg.name])
        .await
        .unwrap()
        .get(0);
    pg_lsn(&confirmed)
}

/// Runs transactions of [`burst_plan`], one after the other.
async fn write(pg: &PgFixture, transactions: &[String]) {
    for statements in transactions {
        pg.client.batch_execute(&statements.replace("{t}", &pg.name)).await.unwrap();
    }
}

/// Waits (up to 30 s) until the slot's confirmed position is past the commit of the last
/// event in `SLUICE_EVENTS`: what was stored is confirmed to PostgreSQL.
async fn wait_confirmed(js: &async_nats::jetstream::Context, pg: &PgFixture) -> u64 {
    let stored = stream_messages(js, "SLUICE_EVENTS").await;
    let last = stored.last().expect("events stored");
    let record: Value = serde_json::from_slice(&last.payload).unwrap();
    let commit = pg_lsn(record["commit_lsn"].as_str().unwrap());
    let started = std::time::Instant::now();
    loop {
        let confirmed = confirmed_lsn(pg).await;
        if confirmed > commit {
            return confirmed;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "slot confirmed at {confirmed:X}, not past {commit:X}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 45 s; the bursts here arrive within seconds) until `SLUICE_EVENTS`
/// holds `count` events.
async fn wait_events(js: &async_nats::jetstream::Context, count: usize, up: &Up) {
    let started = std::time::Instant::now();
    while started.elapsed() < Duration::from_secs(45) {
        if stream_count(js, "SLUICE_EVENTS").await >= count as u64 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} of {count} events stored; log:\n{}", stream_count(js, "SLUICE_EVENTS").await, up.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn while_jetstream_is_down_the_slot_is_held_back_and_nothing_is_lost() {
    let pg = PgFixture::new().await;
    create_table(&pg).await;
    let mut nats = NatsServer::start();
    let project = project_for(&pg, "");
    project.function("rows", "flaky", "concurrency = 64\n");
    let up = project.up(Some(&nats.url()));
    wait_streaming(&project, &nats).await;
    let (transactions, expected) = burst_plan(40);
    let per_transaction = expected.len() / 40;

    write(&pg, &transactions[..10]).await;
    let js = async_nats::jetstream::new(nats.client().await);
    wait_events(&js, 10 * per_transaction, &up).await;
    let before = wait_confirmed(&js, &pg).await;

    // JetStream goes away (killed) and PostgreSQL goes on committing, until a change written
    // meanwhile has failed to be stored (a publish waits 5 s for its ack) and the change
    // stream failed for it.
    nats.stop();
    write(&pg, &transactions[10..30]).await;
    up.wait_log("JetStream did not acknowledge", Duration::from_secs(60));
    assert_eq!(confirmed_lsn(&pg).await, before, "nothing stored, nothing confirmed; log:\n{}", up.log());

    nats.spawn();
    write(&pg, &transactions[30..]).await;
    let js = async_nats::jetstream::new(nats.client().await);
    wait_events(&js, expected.len(), &up).await;
    wait_confirmed(&js, &pg).await;
    assert_changes(&js, &pg, &expected).await;
}

/// The replication connection cut by the server (the walsender terminated): the trigger
/// reports the failure, connects again and streams what was committed meanwhile.
#[tokio::test(flavor = "multi_thread")]
async fn a_cut_replication_connection_is_opened_again() {
    let pg = PgFixture::new().await;
    create_table(&pg).await;
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    let project = project_for(&pg, "");
    let up = project.up(Some(&nats.url()));
    wait_streaming(&project, &nats).await;
    let (transactions, expected) = burst_plan(20);
    write(&pg, &transactions[..10]).await;
    wait_events(&js, expected.len() / 2, &up).await;

    let row = pg.client.query_one("SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = $1", &[&pg.name]).await.unwrap();
    assert!(row.get::<_, bool>(0), "the walsender was terminated");
    write(&pg, &transactions[10..]).await;
    wait_events(&js, expected.len(), &up).await;
    wait_confirmed(&js, &pg).await;
    assert_changes(&js, &pg, &expected).await;
    assert!(up.log().contains("reading the change stream"), "the cut was reported: {}", up.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_node_stands_by_and_takes_over_the_slot() {
    let pg = PgFixture::new().await;
    create_table(&pg).await;
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    let first = project_for(&pg, "");
    let second = project_for(&pg, "");
    let mut up_first = first.up(Some(&nats.url()));
    wait_streaming(&first, &nats).await;
    let up_second = second.up(Some(&nats.url()));
    let (transactions, expected) = burst_plan(20);

    write(&pg, &transactions[..10]).await;
    wait_events(&js, expected.len() / 2, &up_first).await;
    for _ in 0..100 {
        if up_second.log().contains("standing by") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(up_second.log().contains("The slot is streamed by another process"), "{}", up_second.log());

    up_first.kill();
    write(&pg, &transactions[10..]).await;
    wait_events(&js, expected.len(), &up_second).await;
    wait_confirmed(&js, &pg).await;
    assert_changes(&js, &pg, &expected).await;
}

fn pg_lsn(text: &str) -> u64 {
    let (hi, lo) = text.split_once('/').unwrap();
    (u64::from_str_radix(hi, 16).unwrap() << 32) | u64::from_str_radix(lo, 16).unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_handler_gets_the_documented_record_and_a_rollback_fires_nothing() {
    let pg = PgFixture::new().await;
    create_table(&pg).await;
    let nats = NatsServer::start();
    let client = nats.client().await;
    let js = async_nats::jetstream::new(client.clone());
    let project = project_for(&pg, "");
    let mut results = Results::subscribe(&client, "rows").await;
    let _up = project.up(Some(&nats.url()));
    wait_streaming(&project, &nats).await;

    let n = &pg.name;
    pg.client.batch_execute(&format!("BEGIN; {} ROLLBACK;", insert_sql(n, 1))).await.unwrap();
    pg.client.batch_execute(&insert_sql(n, 2)).await.unwrap();
    pg.client.batch_execute(&format!("BEGIN; {} DELETE FROM {n} WHERE id = 2; COMMIT;", update_sql(n, 2))).await.unwrap();
    results.wait_for(3, Duration::from_secs(30)).await;
    results.drain(Duration::from_millis(500)).await;
    assert_eq!(results.received.len(), 3, "the rolled-back insert fired nothing: {:?}", results.received);
    assert_eq!(stream_count(&js, "SLUICE_EVENTS").await, 3);

    // Invocations run concurrently; put the results back in commit order.
    results.received.sort_by_key(|(_, r)| (pg_lsn(r["commit_lsn"].as_str().unwrap()), r["position"].as_u64().unwrap()));
    let (id, insert) = &results.received[0];
    let xid: i64 = insert["xid"].as_i64().unwrap();
    let commit_lsn = insert["commit_lsn"].as_str().unwrap();
    assert_eq!(id, &format!("postgres:{n}:{commit_lsn}:0"));
    assert!(chrono::DateTime::parse_from_rfc3339(insert["commit_time"].as_str().unwrap()).is_ok());
    assert!(insert["commit_time"].as_str().unwrap().ends_with('Z'));
    assert!(pg_lsn(insert["lsn"].as_str().unwrap()) <= pg_lsn(commit_lsn));
    assert_eq!(
        insert,
        &json!({
            "schema": "public", "table": n, "op": "insert", "new": inserted(2), "old": null, "key": ["id"],
            "lsn": insert["lsn"], "commit_lsn": commit_lsn, "position": 0, "xid": xid,
            "commit_time": insert["commit_time"], "slot": n,
        })
    );
    let (_, update) = &results.received[1];
    let (_, delete) = &results.received[2];
    assert_eq!((update["op"].as_str(), delete["op"].as_str()), (Some("update"), Some("delete")));
    assert_eq!(update["xid"], delete["xid"], "one transaction");
    assert_eq!(update["commit_lsn"], delete["commit_lsn"]);
    assert_eq!((update["position"].as_u64(), delete["position"].as_u64()), (Some(0), Some(1)));
    assert_eq!((&update["key"], &delete["key"]), (&json!(["id"]), &json!(["id"])), "the primary key");
    assert_eq!(update["old"], inserted(2));
    assert_eq!(update["new"], updated(&inserted(2)));
    assert_eq!(delete["old"], updated(&inserted(2)));
    assert_eq!(delete["new"], Value::Null);
    assert!(xid < update["xid"].as_i64().unwrap());

    // A row larger than NATS takes (1 MiB by default) still fires, without its largest value.
    pg.client.batch_execute(&format!("{} UPDATE {n} SET note = repeat('x', 2000000) WHERE id = 4;", insert_sql(n, 4))).await.unwrap();
    results.wait_for(5, Duration::from_secs(30)).await;
    results.received.sort_by_key(|(_, r)| (pg_lsn(r["commit_lsn"].as_str().unwrap()), r["position"].as_u64().unwrap()));
    let (_, big) = &results.received[4];
    assert_eq!(big["op"], "update");
    assert_eq!(big["new"]["id"], 4);
    assert_eq!(big["new"]["note"], Value::Null);
    assert_eq!(big["old"]["note"], "note 4", "the small old value stays");
    assert_eq!(big["omitted"], json!(["new.note"]));

    // Under max_payload itself, but over it less the 8 KiB kept for headers: also cut.
    pg.client.batch_execute(&format!("{} UPDATE {n} SET note = repeat('y', 1045000) WHERE id = 6;", insert_sql(n, 6))).await.unwrap();
    results.wait_for(7, Duration::from_secs(30)).await;
    let (_, near) = results
        .received
        .iter()
        .find(|(_, r)| r["op"] == "update" && r["new"]["id"] == 6)
        .unwrap_or_else(|| panic!("no result for the update of row 6 (cut to fit): {:?}", results.received.iter().map(|(id, _)| id).collect::<Vec<_>>()));
    assert_eq!(near["new"]["note"], Value::Null, "a row of 1,045,000 bytes is cut");
    assert_eq!(near["omitted"], json!(["new.note"]));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_partitioned_table_fires_under_its_own_name() {
    let pg = PgFixture::new().await;
    let n = &pg.name;
    pg.client
        .batch_execute(&format!(
            "CREATE TABLE {n} (id int PRIMARY KEY, region text) PARTITION BY RANGE (id); \
             CREATE TABLE {n}_low PARTITION OF {n} FOR VALUES FROM (0) TO (100); \
             CREATE TABLE {n}_high PARTITION OF {n} FOR VALUES FROM (100) TO (1000);"
        ))
        .await
        .unwrap();
    let nats = NatsServer::start();
    let client = nats.client().await;
    let project = project_for(&pg, "");
    let mut results = Results::subscribe(&client, "rows").await;
    let _up = project.up(Some(&nats.url()));
    wait_streaming(&project, &nats).await;
    pg.client.batch_execute(&format!("INSERT INTO {n} VALUES (5, 'low'), (500, 'high'); UPDATE {n} SET region = 'moved' WHERE id = 5;")).await.unwrap();
    results.wait_for(3, Duration::from_secs(30)).await;
    results.received.sort_by_key(|(_, r)| (pg_lsn(r["commit_lsn"].as_str().unwrap()), r["position"].as_u64().unwrap()));
    let seen: Vec<(&str, &str, &Value)> =
        results.received.iter().map(|(_, r)| (r["table"].as_str().unwrap(), r["op"].as_str().unwrap(), &r["new"])).collect();
    assert_eq!(
        seen,
        [
            (n.as_str(), "insert", &json!({"id": 5, "region": "low"})),
            (n.as_str(), "insert", &json!({"id": 500, "region": "high"})),
            (n.as_str(), "update", &json!({"id": 5, "region": "moved"})),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn set_up_mistakes_name_the_fix_and_the_slot_lag_shows() {
    let mut pg = PgFixture::new().await;
    let nats = NatsServer::start();

    // The table does not exist (yet).
    let project = project_for(&pg, "");
    let up = project.up(Some(&nats.url()));
    let listed = wait_for_trigger_status(&project, &nats.url(), "unhealthy").await;
    let message = listed["message"].as_str().unwrap();
    assert!(message.contains(&format!("table public.{} does not exist", pg.name)) && message.contains("`tables`"), "{listed}");
    assert!(up.log().contains("trigger=rows-in"), "{}", up.log());
    drop(up);

    // A role without REPLICATION.
    let role = pg.role_without_replication().await;
    create_table(&pg).await;
    let dsn = common::postgres::dsn().replace("postgres@", &format!("{role}@"));
    project.trigger(
        "rows-in",
        pg.trigger("rows", "").replace(&common::postgres::dsn(), &dsn),
    );
    let up = project.up(Some(&nats.url()));
    let listed = wait_for_trigger(&project, &nats.url(), "named REPLICATION", |t| {
        t["message"].as_str().is_some_and(|m| m.contains("REPLICATION"))
    })
    .await;
    assert_eq!(listed["status"], "unhealthy");
    let message = listed["message"].as_str().unwrap();
    assert!(message.contains("REPLICATION") && message.contains(&format!("ALTER ROLE \"{role}\" WITH REPLICATION")), "{listed}");
    drop(up);

    // Streaming, then stopped: the slot holds the WAL written since, and the listing says so.
    project.trigger("rows-in", pg.trigger("rows", ""));
    let mut up = project.up(Some(&nats.url()));
    wait_streaming(&project, &nats).await;
    up.terminate();
    for id in 0..200 {
        pg.client.batch_execute(&insert_sql(&pg.name, id)).await.unwrap();
    }
    let out = project.sluice(&["--nats", &nats.url(), "--json", "triggers", "list"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let details = &listed[0]["details"];
    assert_eq!(details["slot"], pg.name.as_str(), "{listed}");
    assert_eq!(details["slot_active"], false, "{listed}");
    assert!(details["slot_lag_bytes"].as_i64().unwrap() > 20_000, "200 rows of WAL kept: {listed}");
    let out = project.sluice(&["--nats", &nats.url(), "triggers", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains(&format!("slot {} lag", pg.name)) && text.contains("inactive"), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_server_without_logical_decoding_names_the_setting() {
    let cluster = common::postgres::PrivateCluster::start(&["wal_level=replica"]);
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("rows", "flaky", "");
    project.trigger("rows-in", cluster.trigger("rows"));
    let _up = project.up(Some(&nats.url()));
    let listed = wait_for_trigger_status(&project, &nats.url(), "unhealthy").await;
    let message = listed["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("127.0.0.1:{}/postgres has wal_level = replica", cluster.port))
            && message.contains("ALTER SYSTEM SET wal_level = logical")
            && message.contains("restart PostgreSQL"),
        "{listed}"
    );
    assert_eq!(listed["details"]["slot"], "sluice_rows_in", "{listed}");
    assert!(listed["details"]["slot_error"].as_str().unwrap().contains("does not exist yet"), "{listed}");
}

/// The replication connection is opened once per try of the trigger (pg_walstream's own
/// retries are off), so a server that takes the catalog connection but refuses replication
/// (its only WAL sender taken) is reported at each refusal, not after minutes of hidden
/// retries; once the WAL sender is free, the changes stream.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_replication_connection_is_reported_at_each_refusal() {
    const FAILED: &str = "PostgreSQL change stream failed; starting it again with backoff.";
    const REFUSED: &str = "number of requested standby connections exceeds max_wal_senders";
    let cluster = common::postgres::PrivateCluster::start(&["wal_level=logical", "max_wal_senders=1"]);
    cluster.connect().await.batch_execute("CREATE TABLE orders (id int PRIMARY KEY, note text)").await.unwrap();
    let mut holder = cluster.take_the_wal_sender().await;
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);
    let project = Project::new();
    project.function("rows", "flaky", "env = { FLAKY_ECHO = \"1\" }\n");
    project.trigger("rows-in", cluster.trigger("rows"));
    let up = project.up_with_env(Some(&nats.url()), &[("SLUICE_LOG_FORMAT", "json")]);

    up.wait_line("two failed tries", Duration::from_secs(60), |_| up_failures(&up, FAILED) >= 2);
    // Sluice's log first, then the server's: a try may start between the two reads.
    let reported = up_failures(&up, FAILED);
    let refused = cluster.log().matches(REFUSED).count();
    assert!(
        (reported..=reported + 1).contains(&refused),
        "{reported} failures reported for {refused} refused replication connections\n{}\n{}",
        up.log(),
        cluster.log()
    );
    let listed = wait_for_trigger_status(&project, &nats.url(), "unhealthy").await;
    let message = listed["message"].as_str().unwrap();
    assert!(message.contains("opening a replication connection") && message.contains(REFUSED), "{listed}");

    holder.kill().unwrap();
    holder.wait().unwrap();
    wait_for_trigger_status(&project, &nats.url(), "healthy").await;
    cluster.connect().await.batch_execute("INSERT INTO orders VALUES (1, 'after the refusals')").await.unwrap();
    wait_stream_count(&js, "SLUICE_EVENTS", 1, Duration::from_secs(30)).await;
}

/// How many times `sluice up` logged `message` for the trigger `rows-in`.
fn up_failures(up: &Up, message: &str) -> usize {
    up.log_lines(message).iter().filter(|fields| fields["trigger"] == "rows-in").count()
}
