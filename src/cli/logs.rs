//! `sluice logs FUNCTION`: what a function wrote, on every node, in time order, with Lambda's
//! START / END / REPORT lines around each invocation (like `sam logs -t`). Read from
//! `SLUICE_LOGS`, so it works from any machine that reaches the NATS server.

use std::process::ExitCode;

use chrono::{SecondsFormat, Utc};
use futures::StreamExt as _;
use serde_json::json;

use super::Context;
use crate::bus::{Bus, StreamSetup};
use crate::error::UsageError;
use crate::telemetry::logs::{self, Record, RecordKind};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The function whose logs to show.
    pub function: String,
    /// Keep printing lines as invocations end, until Ctrl-C.
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// Show what was logged within this long (10m, 2h, 7d) or since an RFC 3339 time.
    #[arg(long, default_value = "10m", value_name = "DURATION|TIME")]
    pub since: String,
    /// Only the invocation with this request id.
    #[arg(long, value_name = "ID")]
    pub request_id: Option<String>,
    /// Only invocations of the event with this id (every attempt).
    #[arg(long, value_name = "ID")]
    pub event_id: Option<String>,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    crate::config::validate_name(&args.function).map_err(|m| UsageError::new(format!("FUNCTION: {m}")))?;
    let since = crate::dlq::parse_time(&args.since, Utc::now()).map_err(|m| UsageError::new(format!("--since: {m}")))?;
    let settings = ctx.settings()?;
    let target = ctx.nats_connection(&settings)?;
    let bus = Bus::connect(&target, &settings.bus, StreamSetup::CreateMissing).await?;
    let (mut records, last) = logs::read(&bus, Some(&args.function), since).await?;
    records.retain(|r| wanted(&args, r));
    // Nodes finish invocations in any order: show them by when they started.
    records.sort_by(|a, b| a.start.cmp(&b.start).then(a.end.cmp(&b.end)));
    for record in &records {
        print(ctx.json, record);
    }
    if !args.follow {
        if records.is_empty() && !ctx.json {
            eprintln!("No log records of function {} since {}.", args.function, since.to_rfc3339_opts(SecondsFormat::Secs, true));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut updates = Box::pin(logs::follow(&bus, Some(&args.function), last).await?);
    loop {
        let next = tokio::select! {
            next = updates.next() => next,
            _ = tokio::signal::ctrl_c() => break,
        };
        let Some(batch) = next else { break };
        for record in batch? {
            if wanted(&args, &record) {
                print(ctx.json, &record);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn wanted(args: &Args, record: &Record) -> bool {
    args.request_id.as_ref().is_none_or(|id| record.request_id.as_ref() == Some(id)) && args.event_id.as_ref().is_none_or(|id| &record.event_id == id)
}

fn print(json: bool, record: &Record) {
    let lines = if json { json_lines(record) } else { text_lines(record) };
    for line in lines {
        println!("{line}");
    }
}

/// One JSON object per line: `{"type": "line", ...}` for each line the function wrote, then
/// the record itself without its lines (`"type"` = its kind: `invocation` is the report).
fn json_lines(record: &Record) -> Vec<String> {
    let mut out = Vec::with_capacity(record.lines.len() + 1);
    for line in &record.lines {
        out.push(
            json!({
                "type": "line",
                "time": record.start,
                "function": record.function,
                "node": record.node,
                "request_id": record.request_id,
                "event_id": record.event_id,
                "attempt": record.attempt,
                "message": line,
            })
            .to_string(),
        );
    }
    let mut report = serde_json::to_value(record).unwrap_or_default();
    if let Some(object) = report.as_object_mut() {
        object.remove("lines");
        let kind = object.remove("kind").unwrap_or_default();
        object.insert("type".into(), kind);
    }
    out.push(report.to_string());
    out
}

/// Lambda's shape: `time node message`, with START, END and REPORT around the lines (a
/// Lambda runtime writes its own, which are shown as they are).
fn text_lines(record: &Record) -> Vec<String> {
    let at = |t: &chrono::DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    let (start, end) = (at(&record.start), at(&record.end));
    let node = &record.node;
    let id = record.request_id.as_deref().unwrap_or("-");
    let mut out = Vec::new();
    match record.kind {
        RecordKind::DeadLetter => {
            let error = record.error.as_deref().unwrap_or_default();
            let dlq = record.dlq_seq.map(|s| format!(" DlqId: {s}")).unwrap_or_default();
            out.push(format!("{start} {node} DEAD LETTER EventId: {}\tAttempts: {}\tError: {}: {error}{dlq}", record.event_id, record.attempt, record.outcome));
        }
        RecordKind::Throttle => out.push(format!("{start} {node} THROTTLED RequestId: {id}\tEventId: {}", record.event_id)),
        RecordKind::Invocation => {
            let own = record.lines.iter().any(|l| l.starts_with("REPORT RequestId:"));
            if !own {
                out.push(format!("{start} {node} START RequestId: {id} EventId: {} Attempt: {}", record.event_id, record.attempt));
            }
            for line in &record.lines {
                out.push(format!("{start} {node} {line}"));
            }
            if !own {
                out.push(format!("{end} {node} END RequestId: {id}"));
                let mut report = format!(
                    "{end} {node} REPORT RequestId: {id}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB\tMax Memory Used: {} MB",
                    record.duration_ms, record.billed_duration_ms, record.memory_size_mb, record.max_memory_used_mb
                );
                if let Some(init) = record.init_duration_ms {
                    report.push_str(&format!("\tInit Duration: {init:.2} ms"));
                }
                if record.outcome != "success" {
                    report.push_str(&format!("\tStatus: {}", record.outcome));
                    if let Some(error) = &record.error {
                        report.push_str(&format!("\tError: {error}"));
                    }
                }
                out.push(report);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invocation_reads_like_lambda() {
        let mut record = crate::telemetry::logs::tests::record("hello", 7);
        record.init_duration_ms = Some(3.5);
        let lines = text_lines(&record);
        assert_eq!(lines.len(), 5, "{lines:#?}");
        assert!(lines[0].contains("START RequestId: r7 EventId: e7 Attempt: 1"), "{}", lines[0]);
        assert!(lines[1].ends_with(" line 7"), "{}", lines[1]);
        assert!(lines[3].contains("END RequestId: r7"));
        assert!(lines[4].contains("REPORT RequestId: r7\tDuration: 1.50 ms\tBilled Duration: 2 ms\tMemory Size: 128 MB\tMax Memory Used: 3 MB\tInit Duration: 3.50 ms"), "{}", lines[4]);
    }

    #[test]
    fn a_lambda_runtime_keeps_its_own_report() {
        let mut record = crate::telemetry::logs::tests::record("py", 1);
        record.lines = vec!["START RequestId: r1 Version: $LATEST".into(), "hi".into(), "END RequestId: r1".into(), "REPORT RequestId: r1\tDuration: 1 ms".into()];
        assert_eq!(text_lines(&record).len(), 4);
    }

    #[test]
    fn json_has_the_lines_then_the_report() {
        let record = crate::telemetry::logs::tests::record("hello", 2);
        let lines: Vec<serde_json::Value> = json_lines(&record).iter().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0]["type"], "line");
        assert_eq!(lines[0]["message"], "line 2");
        assert_eq!(lines[0]["request_id"], "r2");
        assert_eq!(lines[2]["type"], "invocation");
        assert_eq!(lines[2]["billed_duration_ms"], 2);
        assert!(lines[2].get("lines").is_none());
    }
}
