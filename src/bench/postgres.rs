//! The `postgres` trigger against its physical floor (`sluice bench --postgres DSN`): the same
//! committed rows read twice, side by side, from two slots made at the same WAL position.
//!
//! - **slot only**: `pg_walstream` reads and decodes the slot, nothing else.
//! - **Sluice**: the `postgres` trigger as `sluice up` runs it: decode, type the columns as
//!   JSON, publish to JetStream, wait for the acks, confirm the slot.
//!
//! Both phases start with the rows already committed, so each measures how fast it catches
//! up: rows per second from the first change to the last (connecting and setting up are
//! left out of both).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures::StreamExt as _;
use pg_walstream::{CancellationToken, EventType, LogicalReplicationStream, ReplicationStreamConfig, RetryConfig, StreamingMode};
use serde::Serialize;

use crate::bus::Bus;
use crate::triggers::postgres::catalog::{with_params, Catalog};
use crate::triggers::postgres::config::{describe_dsn, Operation, PostgresConfig};
use crate::triggers::postgres::PostgresTrigger;
use crate::triggers::{Trigger as _, TriggerContext};

/// Rows per transaction of the load.
const ROWS_PER_TRANSACTION: usize = 100;
/// Single-row transactions of the latency phase, one at a time.
const LATENCY_ROWS: usize = 200;
/// Longest wait for one phase.
const LIMIT: Duration = Duration::from_secs(300);

#[derive(Debug, Serialize)]
pub struct PostgresReport {
    pub server: String,
    pub rows: usize,
    pub rows_per_transaction: usize,
    /// Reading and decoding the slot, nothing else.
    pub slot_only_rows_per_sec: f64,
    /// The trigger: decoded, typed, stored in JetStream, slot confirmed.
    pub sluice_rows_per_sec: f64,
    pub sluice_vs_slot_only: f64,
    /// One-row transactions one after the other, from sending the INSERT (autocommit) to
    /// the slot-only reader decoding it.
    pub latency_slot_only: super::Percentiles,
    /// The same, to the trigger's event arriving on the bus.
    pub latency_sluice: super::Percentiles,
}

/// Creates a table, a publication and two slots named `sluice_bench_<run>`, commits `rows`
/// inserts, runs both phases, and drops it all again.
pub async fn run(dsn: &str, bus: &Bus, rows: usize, run_id: &str) -> anyhow::Result<PostgresReport> {
    let server = describe_dsn(dsn).map_err(anyhow::Error::msg).context("--postgres")?;
    let name = format!("sluice_bench_{run_id}");
    let mut catalog = Catalog::connect(dsn, &server, 10)?;
    catalog.check_server()?;
    let result = measure(dsn, bus, rows, &name, &server, &mut catalog).await;
    // The slots may stay active for a moment after their connections closed.
    for slot in [format!("{name}_floor"), format!("{name}_sluice")] {
        for _ in 0..50 {
            let dropped = catalog.execute(&format!(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '{slot}'"
            ));
            if dropped.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let _ = catalog.execute(&format!("DROP PUBLICATION IF EXISTS {name}"));
    let _ = catalog.execute(&format!("DROP TABLE IF EXISTS {name}"));
    result
}

async fn measure(
    dsn: &str,
    bus: &Bus,
    rows: usize,
    name: &str,
    server: &str,
    catalog: &mut Catalog,
) -> anyhow::Result<PostgresReport> {
    let (floor_slot, sluice_slot) = (format!("{name}_floor"), format!("{name}_sluice"));
    catalog.execute(&format!(
        "CREATE TABLE {name} (id int PRIMARY KEY, customer text NOT NULL, total numeric(12,2), paid boolean, \
         placed_at timestamptz, items jsonb); ALTER TABLE {name} REPLICA IDENTITY FULL; CREATE PUBLICATION {name} FOR TABLE {name}"
    ))?;
    for slot in [&floor_slot, &sluice_slot] {
        catalog.execute(&format!("SELECT pg_create_logical_replication_slot('{slot}', 'pgoutput')"))?;
    }
    for start in (0..rows).step_by(ROWS_PER_TRANSACTION) {
        let end = (start + ROWS_PER_TRANSACTION).min(rows);
        catalog.execute(&format!(
            "INSERT INTO {name} SELECT g, 'customer-' || g, g * 1.25, g % 2 = 0, now(), \
             jsonb_build_object('sku', 'sku-' || (g % 97), 'qty', g % 5 + 1) FROM generate_series({start}, {}) g",
            end - 1
        ))?;
    }

    // Slot only.
    let started = Instant::now();
    let conninfo = with_params(dsn, &[("replication", "database")])?;
    let settings = ReplicationStreamConfig::builder(floor_slot, name.to_owned())
        .with_protocol_version(1)
        .with_streaming_mode(StreamingMode::Off)
        .with_retry_config(RetryConfig { max_attempts: 1, ..RetryConfig::default() });
    let mut stream = LogicalReplicationStream::new(&conninfo, settings).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    stream.start(None).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let cancel = CancellationToken::new();
    let mut seen = 0;
    let mut first = None;
    while seen < rows {
        anyhow::ensure!(started.elapsed() < LIMIT, "slot only: {seen} of {rows} changes after {LIMIT:?}");
        let change = stream.next_event(&cancel).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        match change.event_type {
            EventType::Insert { .. } => {
                seen += 1;
                first.get_or_insert_with(Instant::now);
            }
            EventType::Commit { end_lsn, .. } => stream.shared_lsn_feedback.update_applied_lsn(end_lsn),
            _ => {}
        }
    }
    let floor = first.map_or(Duration::ZERO, |first| first.elapsed());

    // Sluice: the trigger, publishing to a topic of its own.
    let topic = format!("bench.{name}");
    let subject = crate::bus::topic_subject(&topic);
    let mut events = bus.js.get_stream(crate::bus::EVENTS_STREAM).await?;
    let before = events.info().await?.state.messages;
    let config = PostgresConfig {
        kind: "postgres".to_owned(),
        dsn: Some(dsn.to_owned()),
        slot: Some(sluice_slot),
        publication: Some(name.to_owned()),
        tables: vec![format!("public.{name}")],
        operations: vec![Operation::Insert, Operation::Update, Operation::Delete],
        topic: Some(topic),
        function: None,
    };
    let trigger = Box::new(PostgresTrigger::new(name, &config)?);
    let shutdown = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(trigger.run(TriggerContext { name: name.to_owned(), bus: bus.clone(), shutdown: shutdown.clone() }));
    let mut first = None;
    let stored = loop {
        let stored = events.info().await?.state.messages.saturating_sub(before);
        if stored > 0 {
            first.get_or_insert_with(Instant::now);
        }
        if stored >= rows as u64 || started.elapsed() > LIMIT {
            break stored;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let sluice = first.map_or(Duration::ZERO, |first| first.elapsed());
    anyhow::ensure!(stored == rows as u64, "Sluice: {stored} of {rows} events on {subject} after {LIMIT:?}");

    // Latency: both readers caught up; one row at a time, each awaited by both.
    let mut events_on_bus = bus.client.subscribe(subject.clone()).await?;
    bus.client.flush().await?;
    let (mut floor_latency, mut sluice_latency) = (Vec::new(), Vec::new());
    let steal = super::HostSteal::start();
    let started = Instant::now();
    for id in rows..rows + LATENCY_ROWS {
        let sent = Instant::now();
        catalog.execute(&format!("INSERT INTO {name} VALUES ({id}, 'customer-{id}', 1.25, true, now(), '{{}}')"))?;
        let decoded = async {
            loop {
                let change = stream.next_event(&cancel).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                match change.event_type {
                    EventType::Insert { .. } => return anyhow::Ok(sent.elapsed()),
                    EventType::Commit { end_lsn, .. } => stream.shared_lsn_feedback.update_applied_lsn(end_lsn),
                    _ => {}
                }
            }
        };
        let published = async { events_on_bus.next().await.map(|_| sent.elapsed()) };
        let (decoded, published) = tokio::join!(tokio::time::timeout(LIMIT, decoded), tokio::time::timeout(LIMIT, published));
        floor_latency.push(decoded.context("slot only: no change")??);
        sluice_latency.push(published.context("Sluice: no event")?.context("Sluice: the subscription ended")?);
    }
    let rate = super::round3(LATENCY_ROWS as f64 / started.elapsed().as_secs_f64().max(1e-6));
    let steal = steal.share();
    drop(stream);
    shutdown.cancel();
    let _ = running.await;

    // From the first change to the last: rows - 1 intervals.
    let per_sec = |elapsed: Duration| super::round3((rows.max(2) - 1) as f64 / elapsed.as_secs_f64().max(1e-6));
    let (slot_only, sluice) = (per_sec(floor), per_sec(sluice));
    Ok(PostgresReport {
        server: server.to_owned(),
        rows,
        rows_per_transaction: ROWS_PER_TRANSACTION,
        slot_only_rows_per_sec: slot_only,
        sluice_rows_per_sec: sluice,
        sluice_vs_slot_only: super::ratio(sluice, slot_only),
        latency_slot_only: super::percentiles(rate, floor_latency, steal),
        latency_sluice: super::percentiles(rate, sluice_latency, steal),
    })
}
