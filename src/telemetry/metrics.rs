//! Prometheus metrics, served as `/metrics` on the HTTP listener of `sluice up` (the
//! `metrics` facade with `metrics-exporter-prometheus`). Labels are low-cardinality:
//! `function`, `outcome`, `path`, `trigger`, `route`, `status`; never ids.
//!
//! Counters come from the invocation records ([`record`]), so they count what `sluice stats`
//! counts, for this node since it started. Gauges of the bus (consumer backlog) and of the
//! triggers (health, lag) are read when scraped.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use metrics::{counter, gauge, histogram, Counter, Gauge, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::logs::{Path, Record, RecordKind};

/// Histogram buckets of durations, in seconds: from a fast wasm call to a long Lambda handler.
const DURATION_BUCKETS: &[f64] = &[0.000_25, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0];
/// How often histogram samples are folded into their buckets between scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder (once) and returns its handle; `None` when another
/// recorder was installed first.
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new().set_buckets_for_metric(Matcher::Suffix("_seconds".into()), DURATION_BUCKETS);
            let handle = match builder.and_then(PrometheusBuilder::install_recorder) {
                Ok(handle) => handle,
                Err(error) => {
                    tracing::warn!(%error, "Cannot install the metrics recorder; /metrics will be empty.");
                    return None;
                }
            };
            describe();
            let upkeep = handle.clone();
            // Histogram samples wait in memory until folded in; fold them between scrapes.
            let spawned = std::thread::Builder::new().name("sluice-metrics".into()).spawn(move || loop {
                std::thread::sleep(UPKEEP);
                upkeep.run_upkeep();
            });
            if let Err(error) = spawned {
                tracing::warn!(%error, "Cannot start the metrics upkeep thread.");
            }
            Some(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!("sluice_invocations_total", "Invocations by function, outcome (success or failure kind) and path (event or sync).");
    describe_histogram!("sluice_invocation_duration_seconds", Unit::Seconds, "How long invocations ran, by function.");
    describe_counter!("sluice_cold_starts_total", "Invocations that started cold (a freshly loaded module, a new execution environment).");
    describe_gauge!("sluice_invocations_in_flight", "Invocations running now on this node, by function (Lambda's ConcurrentExecutions).");
    describe_counter!("sluice_retries_total", "Invocations that were a retry (attempt 2 or later).");
    describe_counter!("sluice_dead_letters_total", "Events written to the dead-letter stream, by function.");
    describe_counter!("sluice_throttles_total", "Synchronous calls refused because every slot of the function stayed busy.");
    describe_gauge!("sluice_gb_seconds_total", "Billed GB-seconds (configured memory × duration rounded up to 1 ms), by function.");
    describe_gauge!("sluice_consumer_pending", "Events stored for the function and not yet delivered.");
    describe_gauge!("sluice_consumer_ack_pending", "Events delivered to the function's workers and not yet finished.");
    describe_gauge!("sluice_trigger_up", "1 while the trigger's source is healthy, else 0.");
    describe_gauge!("sluice_trigger_lag", "How far the trigger is behind its source: Kafka records not read yet (this node's partitions), bytes of WAL a replication slot has not confirmed.");
    describe_counter!("sluice_http_requests_total", "Requests the HTTP gateway answered, by route and status.");
    describe_histogram!("sluice_http_request_duration_seconds", Unit::Seconds, "How long the HTTP gateway took to answer, by route.");
}

/// One function's metric handles. Each `counter!`/`gauge!` call builds and hashes its labels
/// and looks the series up in the recorder; on the event path that is done once per function.
struct FunctionMetrics {
    /// `sluice_invocations_total` with `outcome = "success"`, per path (event, sync).
    succeeded: [Counter; 2],
    duration: Histogram,
    gb_seconds: Gauge,
    cold_starts: Counter,
    retries: Counter,
    in_flight: Gauge,
}

impl FunctionMetrics {
    fn new(function: &str) -> Self {
        let succeeded = |path: &'static str| counter!("sluice_invocations_total", "function" => function.to_owned(), "outcome" => "success", "path" => path);
        Self {
            succeeded: [succeeded(path_label(Path::Event)), succeeded(path_label(Path::Sync))],
            duration: histogram!("sluice_invocation_duration_seconds", "function" => function.to_owned()),
            gb_seconds: gauge!("sluice_gb_seconds_total", "function" => function.to_owned()),
            cold_starts: counter!("sluice_cold_starts_total", "function" => function.to_owned()),
            retries: counter!("sluice_retries_total", "function" => function.to_owned()),
            in_flight: gauge!("sluice_invocations_in_flight", "function" => function.to_owned()),
        }
    }
}

/// The handles of every function seen, once the recorder is [`installed`].
fn function_metrics(function: &str) -> Option<Arc<FunctionMetrics>> {
    static FUNCTIONS: OnceLock<RwLock<HashMap<String, Arc<FunctionMetrics>>>> = OnceLock::new();
    if !installed() {
        return None;
    }
    let functions = FUNCTIONS.get_or_init(RwLock::default);
    if let Some(found) = functions.read().unwrap_or_else(PoisonError::into_inner).get(function) {
        return Some(found.clone());
    }
    let mut functions = functions.write().unwrap_or_else(PoisonError::into_inner);
    Some(functions.entry(function.to_owned()).or_insert_with(|| Arc::new(FunctionMetrics::new(function))).clone())
}

/// Whether this process's recorder is installed: before, every metric is a no-op, and a
/// handle taken then would stay one.
fn installed() -> bool {
    matches!(HANDLE.get(), Some(Some(_)))
}

const fn path_label(path: Path) -> &'static str {
    match path {
        Path::Event => "event",
        Path::Sync => "sync",
    }
}

/// Counts one invocation record.
pub fn record(record: &Record) {
    let Some(metrics) = function_metrics(&record.function) else { return };
    let function = || record.function.clone();
    match record.kind {
        RecordKind::Invocation => {
            if record.outcome == "success" {
                metrics.succeeded[usize::from(record.path == Path::Sync)].increment(1);
            } else {
                counter!("sluice_invocations_total", "function" => function(), "outcome" => record.outcome.clone(), "path" => path_label(record.path)).increment(1);
            }
            metrics.duration.record(record.duration_ms / 1000.0);
            metrics.gb_seconds.increment(record.gb_seconds());
            if record.cold() {
                metrics.cold_starts.increment(1);
            }
            if record.attempt > 1 {
                metrics.retries.increment(1);
            }
        }
        RecordKind::DeadLetter => counter!("sluice_dead_letters_total", "function" => function()).increment(1),
        RecordKind::Throttle => counter!("sluice_throttles_total", "function" => function()).increment(1),
    }
}

/// Counts an invocation of `function` as running until the guard drops.
pub fn in_flight(function: &str) -> InFlight {
    let gauge = function_metrics(function).map(|m| m.in_flight.clone());
    if let Some(gauge) = &gauge {
        gauge.increment(1.0);
    }
    InFlight(gauge)
}

/// See [`in_flight`].
pub struct InFlight(Option<Gauge>);

impl InFlight {
    /// Counts nothing.
    pub const fn none() -> Self {
        Self(None)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(gauge) = &self.0 {
            gauge.decrement(1.0);
        }
    }
}

/// Counts one answer of the HTTP gateway.
pub fn http_request(route: &str, status: u16, took: Duration) {
    type Series = (Counter, Histogram);
    /// Per route, the series of each status answered so far.
    type Routes = HashMap<String, Vec<(u16, Series)>>;
    static ROUTES: OnceLock<RwLock<Routes>> = OnceLock::new();
    if !installed() {
        return;
    }
    let routes = ROUTES.get_or_init(RwLock::default);
    let lookup = |routes: &Routes| routes.get(route).and_then(|s| s.iter().find(|(code, _)| *code == status)).map(|(_, series)| series.clone());
    let found = lookup(&routes.read().unwrap_or_else(PoisonError::into_inner));
    let (requests, duration) = found.unwrap_or_else(|| {
        let mut routes = routes.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = lookup(&routes) {
            return series;
        }
        let series = (
            counter!("sluice_http_requests_total", "route" => route.to_owned(), "status" => status.to_string()),
            histogram!("sluice_http_request_duration_seconds", "route" => route.to_owned()),
        );
        routes.entry(route.to_owned()).or_default().push((status, series.clone()));
        series
    });
    requests.increment(1);
    duration.record(took.as_secs_f64());
}

/// A function's consumer backlog, as read at scrape time.
pub fn consumer(function: &str, pending: u64, ack_pending: usize) {
    #[allow(clippy::cast_precision_loss)]
    let (pending, ack_pending) = (pending as f64, ack_pending as f64);
    gauge!("sluice_consumer_pending", "function" => function.to_owned()).set(pending);
    gauge!("sluice_consumer_ack_pending", "function" => function.to_owned()).set(ack_pending);
}

/// A trigger's health, as read at scrape time.
pub fn trigger(trigger: &str, healthy: bool) {
    gauge!("sluice_trigger_up", "trigger" => trigger.to_owned()).set(if healthy { 1.0 } else { 0.0 });
}

/// How far a trigger is behind its source: a Kafka group's records not yet read, a
/// replication slot's bytes of WAL not yet confirmed.
pub fn trigger_lag(trigger: &str, lag: f64) {
    gauge!("sluice_trigger_lag", "trigger" => trigger.to_owned()).set(lag);
}

/// The text of `/metrics`: the counters, with the gauges of the bus (each function's
/// consumer), of the triggers (their health in KV `sluice_state`) and of replication slots
/// (their lag, from PostgreSQL) read now. A source that does not answer within a second
/// leaves its gauges at their last values.
pub async fn scrape(handle: &PrometheusHandle, bus: &crate::bus::Bus, functions: &[String], triggers: &[crate::triggers::TriggerDef]) -> String {
    let read = async {
        if let Ok(stream) = bus.js.get_stream(crate::bus::EVENTS_STREAM).await {
            for function in functions {
                if let Ok(info) = stream.consumer_info(function).await {
                    consumer(function, info.num_pending, info.num_ack_pending);
                }
            }
        }
        if let Ok(store) = bus.state().await {
            for def in triggers {
                if let Some(report) = crate::triggers::health::read(&store, &def.name).await {
                    trigger(&def.name, report.status == crate::triggers::health::Status::Healthy);
                }
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), read).await;
    let slots = tokio::task::spawn_blocking({
        let triggers: Vec<_> = triggers.iter().filter_map(|d| d.config.get::<crate::triggers::postgres::PostgresConfig>().map(|c| (d.name.clone(), c.clone()))).collect();
        move || slot_lags(&triggers)
    });
    if let Ok(Ok(lags)) = tokio::time::timeout(Duration::from_secs(1), slots).await {
        for (name, lag) in lags {
            trigger_lag(&name, lag);
        }
    }
    handle.render()
}

/// Each postgres trigger's slot lag in bytes, where PostgreSQL answers.
fn slot_lags(triggers: &[(String, crate::triggers::postgres::PostgresConfig)]) -> Vec<(String, f64)> {
    use crate::triggers::postgres::{catalog, config};
    let mut lags = Vec::new();
    for (name, postgres) in triggers {
        let slot = postgres.slot_name(name);
        let state = postgres.resolve_dsn(name).and_then(|dsn| {
            let server = config::describe_dsn(&dsn).map_err(anyhow::Error::msg)?;
            catalog::slot_state(&dsn, &server, &slot)
        });
        if let Ok(Some(catalog::SlotState { lag_bytes: Some(lag), .. })) = state {
            #[allow(clippy::cast_precision_loss)]
            lags.push((name.clone(), lag as f64));
        }
    }
    lags
}
