//! How the cost grows with the work, each point beside raw JetStream doing the same in the
//! same run: functions subscribed to one topic (fan-out), the event size, and a real guest
//! (the `hello` example) in place of the no-op. Every point runs as `sluice up` runs its
//! functions by default (dispatchers, an invocation record in `SLUICE_LOGS` and the metrics
//! per invocation), and checks that each function ran each event exactly once.

use std::time::Instant;

use anyhow::Context as _;
use bytes::Bytes;
use indicatif::ProgressBar;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::{
    create_raw_stream, event_data, progress, raw_consumer, raw_publish, raw_receive, ratio, round3, wait_seen, Functions, Options,
    Running,
};
use crate::bus::Bus;
use crate::runtime::wasm::WasmHost;
use crate::telemetry::logs::LogSink;

/// Functions subscribed to one topic, for the fan-out curve.
pub const FAN_OUT: [usize; 3] = [1, 10, 100];
/// Event body sizes of the size curve: 128 B, 4 KiB, 64 KiB, 1 MiB.
pub const SIZES: [usize; 4] = [128, 4 * 1024, 64 * 1024, 1024 * 1024];
/// Bytes of event bodies one point of the size curve publishes at most (fewer events of the
/// larger sizes); at most `--events` × 64 KiB.
const SIZE_BUDGET: usize = 256 * 1024 * 1024;
/// Events of a fan-out point at least, however many functions share them.
const MIN_FAN_OUT_EVENTS: usize = 10;

#[derive(Debug, Serialize)]
pub struct Curves {
    pub fan_out: Vec<FanOutPoint>,
    pub event_size: Vec<SizePoint>,
    pub real_guest: RealGuest,
}

/// `functions` functions subscribed to one topic, each running every event; against raw
/// JetStream with as many durable pull consumers on one stream, each receiving every message.
#[derive(Debug, Serialize)]
pub struct FanOutPoint {
    pub functions: usize,
    /// Events published (about `--events` deliveries in all).
    pub events: usize,
    /// Invocations counted from the records: events × functions when exactly once.
    pub deliveries: usize,
    pub deliveries_per_sec: f64,
    pub raw_deliveries_per_sec: f64,
    /// deliveries_per_sec ÷ raw_deliveries_per_sec.
    pub vs_raw: f64,
    pub exactly_once: bool,
}

/// Events of `size_bytes` through one function; against raw JetStream publishing and
/// consuming bodies of the same size (overlapped). Bodies over the server's `max_payload`
/// travel through the claim check (object store `sluice_payloads`), as any event's would.
#[derive(Debug, Serialize)]
pub struct SizePoint {
    pub size_bytes: usize,
    pub events: usize,
    pub events_per_sec: f64,
    pub mb_per_sec: f64,
    pub raw_events_per_sec: f64,
    pub raw_mb_per_sec: f64,
    /// events_per_sec ÷ raw_events_per_sec.
    pub vs_raw: f64,
    pub exactly_once: bool,
}

/// The `hello` example (parses the event as JSON, logs a line to stderr, answers JSON)
/// against the no-op, back to back, both end to end at the bench's event size.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum RealGuest {
    Measured {
        function: &'static str,
        events: usize,
        events_per_sec: f64,
        noop_events_per_sec: f64,
        /// events_per_sec ÷ noop_events_per_sec.
        vs_noop: f64,
        exactly_once: bool,
    },
    Skipped { skipped: String },
}

pub async fn run(load: &Bus, platform: &Bus, host: &WasmHost, noop: &[u8], options: &Options, run_id: &str) -> anyhow::Result<Curves> {
    let shutdown = CancellationToken::new();
    let (logs, logs_task) = LogSink::start(platform.clone(), shutdown.clone());
    let curves = async {
        let mut fan_out = Vec::with_capacity(FAN_OUT.len());
        for functions in FAN_OUT {
            fan_out.push(fan_out_point(load, platform, host, noop, options, run_id, &logs, functions).await?);
        }
        let mut event_size = Vec::with_capacity(SIZES.len());
        for size in SIZES {
            event_size.push(size_point(load, platform, host, noop, options, run_id, &logs, size).await?);
        }
        let real_guest = real_guest(load, platform, host, noop, options, run_id, &logs).await?;
        anyhow::Ok(Curves { fan_out, event_size, real_guest })
    }
    .await;
    shutdown.cancel();
    let _ = logs_task.await;
    curves
}

/// One run of `events` events of `data` through `count` functions running `module`: events
/// per second (publish of the first to the last acknowledgement of every function) and
/// whether each function ran each event exactly once (counted from the records).
#[allow(clippy::too_many_arguments)] // one point's inputs, each used once
async fn through_functions(
    load: &Bus,
    platform: &Bus,
    host: &WasmHost,
    options: &Options,
    logs: &LogSink,
    (prefix, count, module): (String, usize, &[u8]),
    events: usize,
    data: &Bytes,
    phase: &str,
) -> anyhow::Result<(f64, usize, bool)> {
    let functions = Functions { prefix: prefix.clone(), count, module, logs: logs.clone(), capacity: events };
    let mut running = Running::start(load, platform, host, options, functions).await?;
    let rate = running.max_rate(load, &prefix, data, options, 0..events, phase).await;
    let rate = match rate {
        Ok(rate) => rate,
        Err(error) => {
            let _ = running.stop(load).await;
            return Err(error);
        }
    };
    // Every record, then a moment for a duplicate to show.
    let waited = wait_seen(&running.seen, |seen| seen.records, events * count, &ProgressBar::hidden()).await;
    if waited.is_ok() {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let seen = running.stop(load).await?;
    waited?;
    let seen = seen.lock().map_err(|_| anyhow::anyhow!("the record collector failed"))?;
    let want = u32::try_from(count).unwrap_or(u32::MAX);
    let exactly_once = seen.counts[..events].iter().all(|c| *c == want);
    Ok((rate, seen.records, exactly_once))
}

#[allow(clippy::too_many_arguments)] // one point's inputs, each used once
async fn fan_out_point(
    load: &Bus,
    platform: &Bus,
    host: &WasmHost,
    noop: &[u8],
    options: &Options,
    run_id: &str,
    logs: &LogSink,
    functions: usize,
) -> anyhow::Result<FanOutPoint> {
    let events = (options.events / functions).max(MIN_FAN_OUT_EVENTS);
    let data = event_data(options.size);
    let prefix = format!("bench-{run_id}-fan{functions}");
    let phase = format!("fan-out {functions}");
    let (rate, deliveries, exactly_once) =
        through_functions(load, platform, host, options, logs, (prefix, functions, noop), events, &data, &phase).await?;
    let deliveries_per_sec = (rate * functions as f64).round();

    // Raw: one stream, as many durable consumers, each receiving every message.
    let (name, subject) = (format!("BENCH_FAN{functions}_{run_id}"), format!("bench.fan{functions}.{run_id}"));
    let stream = create_raw_stream(&load.js, &name, &subject).await?;
    let mut consumers = Vec::with_capacity(functions);
    for i in 0..functions {
        consumers.push(raw_consumer(&stream, &format!("bench-{i}")).await?);
    }
    let bar = progress(options, events * functions, &format!("raw fan-out {functions}"));
    let started = Instant::now();
    let receiving: Vec<_> = consumers
        .into_iter()
        .map(|consumer| {
            let (bar, size) = (bar.clone(), options.size);
            tokio::spawn(async move { raw_receive(consumer, events, size, &bar).await })
        })
        .collect();
    let payload = Bytes::from(vec![b'x'; options.size]);
    raw_publish(&load.js, &subject, &payload, events, &ProgressBar::hidden()).await?;
    for receiving in receiving {
        receiving.await.context("a raw consumer task failed")??;
    }
    let raw_deliveries_per_sec = ((events * functions) as f64 / started.elapsed().as_secs_f64()).round();
    bar.finish_and_clear();
    load.js.delete_stream(&name).await.context("deleting the bench stream")?;

    Ok(FanOutPoint {
        functions,
        events,
        deliveries,
        deliveries_per_sec,
        raw_deliveries_per_sec,
        vs_raw: ratio(deliveries_per_sec, raw_deliveries_per_sec),
        exactly_once,
    })
}

/// Events of one size point: `--events`, or fewer where the bodies would pass the budget.
fn size_events(events: usize, size: usize) -> usize {
    let budget = events.saturating_mul(64 * 1024).min(SIZE_BUDGET);
    (budget / size).clamp(1, events)
}

#[allow(clippy::too_many_arguments)] // one point's inputs, each used once
async fn size_point(
    load: &Bus,
    platform: &Bus,
    host: &WasmHost,
    noop: &[u8],
    options: &Options,
    run_id: &str,
    logs: &LogSink,
    size: usize,
) -> anyhow::Result<SizePoint> {
    let events = size_events(options.events, size);
    let data = event_data(size);
    let prefix = format!("bench-{run_id}-size{size}");
    let phase = format!("{size} B events");
    let (rate, _, exactly_once) = through_functions(load, platform, host, options, logs, (prefix, 1, noop), events, &data, &phase).await?;

    // Raw: bodies of the same size, published and consumed at once.
    let (name, subject) = (format!("BENCH_SIZE{size}_{run_id}"), format!("bench.size{size}.{run_id}"));
    let stream = create_raw_stream(&load.js, &name, &subject).await?;
    let consumer = raw_consumer(&stream, "bench").await?;
    let bar = progress(options, events, &format!("raw {size} B"));
    let started = Instant::now();
    let receiving = {
        let bar = bar.clone();
        tokio::spawn(async move { raw_receive(consumer, events, size, &bar).await })
    };
    let payload = Bytes::from(vec![b'x'; size]);
    raw_publish(&load.js, &subject, &payload, events, &ProgressBar::hidden())
        .await
        .with_context(|| format!("raw JetStream with {size}-byte messages (the server's max_payload must allow them)"))?;
    receiving.await.context("the raw consumer task failed")??;
    let raw = events as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    load.js.delete_stream(&name).await.context("deleting the bench stream")?;

    let mb = |per_sec: f64| round3(per_sec * size as f64 / 1e6);
    Ok(SizePoint {
        size_bytes: size,
        events,
        events_per_sec: rate.round(),
        mb_per_sec: mb(rate),
        raw_events_per_sec: raw.round(),
        raw_mb_per_sec: mb(raw),
        vs_raw: ratio(rate, raw),
        exactly_once,
    })
}

async fn real_guest(load: &Bus, platform: &Bus, host: &WasmHost, noop: &[u8], options: &Options, run_id: &str, logs: &LogSink) -> anyhow::Result<RealGuest> {
    let module = match &options.hello {
        Ok(path) => std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        Err(why) => return Ok(RealGuest::Skipped { skipped: why.clone() }),
    };
    let events = options.events;
    let data = event_data(options.size);
    let noop_prefix = format!("bench-{run_id}-guest-noop");
    let (noop_rate, _, noop_once) =
        through_functions(load, platform, host, options, logs, (noop_prefix, 1, noop), events, &data, "no-op").await?;
    let prefix = format!("bench-{run_id}-guest-hello");
    let (rate, _, once) = through_functions(load, platform, host, options, logs, (prefix, 1, &module), events, &data, "hello").await?;
    Ok(RealGuest::Measured {
        function: "hello",
        events,
        events_per_sec: rate.round(),
        noop_events_per_sec: noop_rate.round(),
        vs_noop: ratio(rate, noop_rate),
        exactly_once: once && noop_once,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_points_stay_within_the_budget() {
        assert_eq!(size_events(20_000, 128), 20_000);
        assert_eq!(size_events(20_000, 4096), 20_000);
        assert_eq!(size_events(20_000, 64 * 1024), 4096);
        assert_eq!(size_events(20_000, 1024 * 1024), 256);
        assert_eq!(size_events(1500, 1024 * 1024), 93);
        assert_eq!(size_events(1, 1024 * 1024), 1);
    }
}
