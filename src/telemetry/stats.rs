//! `sluice stats`: figures per function from the invocation records of every node (so they
//! survive restarts, within `SLUICE_LOGS`' limits), and what the same use would cost on
//! Lambda. The JSON shape is a contract: scripts read it.

use std::collections::BTreeMap;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use super::cost::Cost;
use super::logs::{Record, RecordKind};

#[derive(Debug, Serialize)]
pub struct Stats {
    /// Records from this time on (RFC 3339).
    pub since: String,
    pub functions: Vec<FunctionStats>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionStats {
    pub function: String,
    pub invocations: u64,
    /// Failed invocations by kind (`error`, `timeout`, `memory_limit`, ...).
    pub errors: BTreeMap<String, u64>,
    /// Synchronous calls refused because every slot stayed busy.
    pub throttles: u64,
    /// Invocations that were a retry (attempt 2 or later).
    pub retries: u64,
    pub dead_letters: u64,
    pub cold_starts: u64,
    pub duration_ms: Percentiles,
    /// Configured memory × billed duration, summed.
    pub gb_seconds: f64,
    pub cost_usd: Cost,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
}

/// Figures of `records` per function, sorted by name; `wanted` adds functions with no
/// records (all zeros), so a named function is always reported.
pub fn compute(records: &[Record], since: DateTime<Utc>, wanted: &[String]) -> Stats {
    let mut by_function: BTreeMap<&str, Vec<&Record>> = BTreeMap::new();
    for name in wanted {
        by_function.entry(name.as_str()).or_default();
    }
    for record in records {
        by_function.entry(record.function.as_str()).or_default().push(record);
    }
    let functions = by_function.into_iter().map(|(name, records)| function_stats(name, &records)).collect();
    Stats { since: since.to_rfc3339_opts(SecondsFormat::Secs, true), functions }
}

fn function_stats(name: &str, records: &[&Record]) -> FunctionStats {
    let mut stats = FunctionStats {
        function: name.to_owned(),
        invocations: 0,
        errors: BTreeMap::new(),
        throttles: 0,
        retries: 0,
        dead_letters: 0,
        cold_starts: 0,
        duration_ms: Percentiles { p50: 0.0, p95: 0.0, p99: 0.0 },
        gb_seconds: 0.0,
        cost_usd: Cost::of(0, 0.0),
    };
    let mut durations = Vec::new();
    for record in records {
        match record.kind {
            RecordKind::Invocation => {
                stats.invocations += 1;
                if record.outcome != "success" {
                    *stats.errors.entry(record.outcome.clone()).or_default() += 1;
                }
                if record.attempt > 1 {
                    stats.retries += 1;
                }
                if record.cold() {
                    stats.cold_starts += 1;
                }
                stats.gb_seconds += record.gb_seconds();
                durations.push(record.duration_ms);
            }
            RecordKind::DeadLetter => stats.dead_letters += 1,
            RecordKind::Throttle => stats.throttles += 1,
        }
    }
    durations.sort_by(f64::total_cmp);
    stats.duration_ms = Percentiles { p50: percentile(&durations, 0.50), p95: percentile(&durations, 0.95), p99: percentile(&durations, 0.99) };
    stats.cost_usd = Cost::of(stats.invocations, stats.gb_seconds);
    stats
}

/// Nearest-rank percentile of sorted values, rounded to the microsecond; 0 for none.
fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // In range: q is at most 1.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    (sorted[rank - 1] * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::super::logs::tests::record;
    use super::*;

    #[test]
    fn a_known_mix_is_counted_exactly() {
        let mut records = Vec::new();
        for n in 0..10 {
            let mut r = record("f", n);
            r.duration_ms = f64::from(n + 1);
            r.billed_duration_ms = u64::from(n + 1);
            r.memory_size_mb = 1024;
            records.push(r);
        }
        records[0].init_duration_ms = Some(12.0);
        records[1].outcome = "error".into();
        records[2].outcome = "error".into();
        records[2].attempt = 2;
        records[3].outcome = "timeout".into();
        let mut dead = record("f", 99);
        dead.kind = RecordKind::DeadLetter;
        records.push(dead);
        let mut throttle = record("g", 100);
        throttle.kind = RecordKind::Throttle;
        records.push(throttle);

        let stats = compute(&records, Utc::now(), &["h".to_owned()]);
        let names: Vec<&str> = stats.functions.iter().map(|f| f.function.as_str()).collect();
        assert_eq!(names, ["f", "g", "h"]);
        let f = &stats.functions[0];
        assert_eq!(f.invocations, 10);
        assert_eq!(f.errors, BTreeMap::from([("error".to_owned(), 2), ("timeout".to_owned(), 1)]));
        assert_eq!((f.retries, f.dead_letters, f.cold_starts, f.throttles), (1, 1, 1, 0));
        // 1 GB × (1 + 2 + ... + 10) ms.
        assert!((f.gb_seconds - 0.055).abs() < 1e-12, "{}", f.gb_seconds);
        assert_eq!(f.duration_ms, Percentiles { p50: 5.0, p95: 10.0, p99: 10.0 });
        assert_eq!(f.cost_usd, Cost::of(10, 0.055));
        let g = &stats.functions[1];
        assert_eq!((g.invocations, g.throttles), (0, 1));
        assert_eq!(stats.functions[2].invocations, 0);
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert!((percentile(&values, 0.5) - 50.0).abs() < f64::EPSILON);
        assert!((percentile(&values, 0.99) - 99.0).abs() < f64::EPSILON);
        assert!(percentile(&[], 0.5).abs() < f64::EPSILON);
    }
}
