//! `sluice stats [FUNCTION]`: invocations, errors by kind, throttles, retries, dead letters,
//! duration percentiles, cold starts, GB-seconds and the Lambda price of the same use, from
//! the invocation records of every node (`SLUICE_LOGS`).

use std::process::ExitCode;

use chrono::Utc;

use super::output::{print_json, Table};
use super::Context;
use crate::bus::{Bus, StreamSetup};
use crate::error::UsageError;
use crate::telemetry::{logs, stats};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// One function (default: every function with records).
    pub function: Option<String>,
    /// Count what happened within this long (10m, 2h, 7d) or since an RFC 3339 time.
    #[arg(long, default_value = "1h", value_name = "DURATION|TIME")]
    pub since: String,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(function) = &args.function {
        crate::config::validate_name(function).map_err(|m| UsageError::new(format!("FUNCTION: {m}")))?;
    }
    let since = crate::dlq::parse_time(&args.since, Utc::now()).map_err(|m| UsageError::new(format!("--since: {m}")))?;
    let settings = ctx.settings()?;
    let target = ctx.nats_connection(&settings)?;
    let bus = Bus::connect(&target, &settings.bus, StreamSetup::CreateMissing).await?;
    let (mut records, _) = logs::read(&bus, args.function.as_deref(), since).await?;
    // A batch holds records from just before `since` too.
    records.retain(|r| r.end >= since);
    let wanted: Vec<String> = args.function.into_iter().collect();
    let stats = stats::compute(&records, since, &wanted);
    if ctx.json {
        print_json(&stats)?;
    } else {
        println!("{}", render(&stats));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(stats: &stats::Stats) -> String {
    if stats.functions.is_empty() {
        return format!("No invocations since {}.", stats.since);
    }
    let mut table = Table::new(vec!["FUNCTION", "INVOCATIONS", "ERRORS", "THROTTLES", "RETRIES", "DLQ", "COLD", "P50 MS", "P95 MS", "P99 MS", "GB-S", "LAMBDA $", "AFTER FREE TIER $"]);
    for f in &stats.functions {
        let errors = if f.errors.is_empty() {
            "0".to_owned()
        } else {
            f.errors.iter().map(|(kind, n)| format!("{n} {kind}")).collect::<Vec<_>>().join(", ")
        };
        table.row(vec![
            f.function.clone(),
            f.invocations.to_string(),
            errors,
            f.throttles.to_string(),
            f.retries.to_string(),
            f.dead_letters.to_string(),
            f.cold_starts.to_string(),
            format!("{:.2}", f.duration_ms.p50),
            format!("{:.2}", f.duration_ms.p95),
            format!("{:.2}", f.duration_ms.p99),
            format!("{:.3}", f.gb_seconds),
            format!("{:.6}", f.cost_usd.total),
            format!("{:.6}", f.cost_usd.total_after_free_tier),
        ]);
    }
    format!(
        "{}\n\nSince {}. Lambda's prices: $0.20 per 1M requests + $0.0000166667 per GB-second (billed duration rounded up to 1 ms); \
         the free tier (1M requests and 400,000 GB-s a month) is taken off as if this were the whole month.",
        table.render(),
        stats.since
    )
}
