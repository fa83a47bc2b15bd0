//! `sluice triggers list | next NAME`.

use std::process::ExitCode;

use chrono::Utc;
use clap::Subcommand;
use serde::Serialize;

use super::output::{print_json, Table};
use super::Context;
use crate::error::UsageError;
use crate::triggers::cron::CronConfig;
use crate::triggers::{Target, TriggerDef};

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Every trigger with its kind, target, source and (for schedules) the next fire times.
    List,
    /// The next fire times of one scheduled trigger, in its timezone.
    Next {
        name: String,
        #[arg(long, default_value_t = 10)]
        count: usize,
    },
}

#[derive(Debug, Serialize)]
struct Row {
    name: String,
    kind: &'static str,
    /// Where its events go; the first route's target for an `http` trigger.
    target: Option<Target>,
    /// Every target (one per route for an `http` trigger).
    targets: Vec<Target>,
    /// What it watches: the schedule, the bucket.
    source: String,
    schedule: Option<String>,
    timezone: Option<String>,
    /// RFC 3339 in the trigger's timezone.
    next: Vec<String>,
    /// Health last reported by a running `sluice up`: starting, healthy, unhealthy, stopped;
    /// none when no report exists, `unknown` when the reports could not be read (no NATS
    /// server reachable; a note on stderr says why).
    status: Option<String>,
    /// What is wrong, or what it consumes.
    message: Option<String>,
    /// When the status last changed.
    since: Option<String>,
    /// Source-specific figures (a replication slot's lag).
    #[serde(skip_serializing_if = "Option::is_none")]
    details: Option<serde_json::Map<String, serde_json::Value>>,
}

fn next_fires(def: &TriggerDef, count: usize) -> anyhow::Result<Vec<String>> {
    let Some(cron) = def.config.get::<CronConfig>() else { return Ok(Vec::new()) };
    let schedule = cron.check().map_err(|(f, m)| anyhow::anyhow!("{f}: {m}"))?;
    let tz = schedule.timezone();
    let mut out = Vec::with_capacity(count);
    let mut cursor = Utc::now();
    for _ in 0..count {
        let Some(next) = schedule.next_after(cursor) else { break };
        out.push(next.with_timezone(&tz).to_rfc3339());
        cursor = next;
    }
    Ok(out)
}

fn row(def: &TriggerDef, count: usize) -> anyhow::Result<Row> {
    let cron = def.config.get::<CronConfig>();
    Ok(Row {
        name: def.name.clone(),
        kind: def.config.kind(),
        target: def.config.targets().into_iter().next(),
        targets: def.config.targets(),
        source: def.config.source(),
        schedule: cron.map(|c| c.schedule.clone()),
        timezone: cron.map(|c| c.timezone.clone()),
        next: next_fires(def, count)?,
        status: None,
        message: None,
        since: None,
        details: None,
    })
}

/// The health each trigger last reported in `sluice_state`. When the reports cannot be read,
/// every row's status is `unknown` and the returned note says why and what to do.
async fn add_health(ctx: &Context, project: &crate::config::Project, rows: &mut [Row]) -> Result<(), String> {
    let result = read_health(ctx, project, rows).await;
    if result.is_err() {
        for row in rows.iter_mut() {
            row.status = Some(UNKNOWN.to_owned());
        }
    }
    result
}

/// The status of every trigger when `sluice_state` could not be read.
const UNKNOWN: &str = "unknown";

async fn read_health(ctx: &Context, project: &crate::config::Project, rows: &mut [Row]) -> Result<(), String> {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);
    let bucket = crate::bus::STATE_BUCKET;
    let not_shown = format!("trigger health from {bucket} is not shown (status {UNKNOWN}); start `sluice up` or pass --nats URL");
    if ctx.configured_nats(&project.settings).is_none() && crate::bus::embedded::discover(&ctx.dir).is_none() {
        return Err(format!(
            "note: cannot reach NATS (none is configured with --nats, SLUICE_NATS_URL or [nats] url, and no `sluice up` \
             is running in {}): {not_shown}",
            project.dir.display()
        ));
    }
    let target = ctx.nats_connection(&project.settings).map_err(|error| format!("note: {error:#}: {not_shown}"))?;
    let url = target.shown();
    let addrs = target.addrs().map_err(|error| format!("note: {error}: {not_shown}"))?;
    let options = target.apply(async_nats::ConnectOptions::new().connection_timeout(TIMEOUT)).map_err(|error| format!("note: {error}: {not_shown}"))?;
    let connect = tokio::time::timeout(TIMEOUT + std::time::Duration::from_secs(1), options.connect(addrs));
    let client = match connect.await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) => return Err(format!("note: {:#}: {not_shown}", target.explain(error))),
        Err(_) => return Err(format!("note: cannot reach NATS at {url} (no answer within 3s): {not_shown}")),
    };
    let js = async_nats::jetstream::new(client);
    let store = js.get_key_value(bucket).await.map_err(|error| {
        format!(
            "note: NATS at {url} has no KV bucket {bucket} ({error}): no `sluice up` has run against this server, so no \
             trigger has reported its health (status {UNKNOWN})"
        )
    })?;
    for row in rows {
        if let Some(report) = crate::triggers::health::read(&store, &row.name).await {
            row.status = Some(report.status.to_string());
            row.message = Some(report.message);
            row.since = Some(report.since);
            row.details = (!report.details.is_empty()).then_some(report.details);
        }
    }
    Ok(())
}

/// The replication slot of each postgres trigger, read from PostgreSQL itself: a slot that
/// nothing consumes keeps WAL without bound, and this shows it whether or not a worker runs.
fn add_slots(triggers: &[TriggerDef], rows: &mut [Row]) {
    use crate::triggers::postgres::{catalog, config};
    for (def, row) in triggers.iter().zip(rows.iter_mut()) {
        let Some(postgres) = def.config.get::<crate::triggers::postgres::PostgresConfig>() else { continue };
        let slot = postgres.slot_name(&def.name);
        let state = postgres.resolve_dsn(&def.name).and_then(|dsn| {
            let server = config::describe_dsn(&dsn).map_err(anyhow::Error::msg)?;
            catalog::slot_state(&dsn, &server, &slot)
        });
        let details = row.details.get_or_insert_with(Default::default);
        details.insert("slot".into(), slot.clone().into());
        match state {
            Ok(Some(state)) => {
                details.insert("slot_lag_bytes".into(), state.lag_bytes.into());
                details.insert("slot_active".into(), state.active_pid.is_some().into());
                details.insert("confirmed_lsn".into(), state.confirmed_lsn.into());
            }
            Ok(None) => {
                details.insert("slot_lag_bytes".into(), serde_json::Value::Null);
                details.insert("slot_error".into(), format!("slot {slot} does not exist yet (sluice up creates it)").into());
            }
            Err(error) => {
                details.insert("slot_lag_bytes".into(), serde_json::Value::Null);
                details.insert("slot_error".into(), format!("{error:#}").into());
            }
        }
    }
}

/// `slot sluice_orders lag 1.5 MiB (active)`, for the table.
fn slot_summary(details: &serde_json::Map<String, serde_json::Value>) -> Option<String> {
    let slot = details.get("slot")?.as_str()?;
    if let Some(error) = details.get("slot_error").and_then(|e| e.as_str()) {
        return Some(format!("slot {slot}: {error}"));
    }
    let lag = details.get("slot_lag_bytes")?.as_i64()?;
    let active = details.get("slot_active").and_then(serde_json::Value::as_bool) == Some(true);
    Some(format!("slot {slot} lag {} ({})", human_bytes(lag), if active { "active" } else { "inactive: WAL is kept for it" }))
}

fn human_bytes(bytes: i64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value.abs() >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    let project = ctx.project()?;
    let rows: Vec<Row> = match &command {
        Command::List => {
            let mut rows = project.triggers.iter().map(|t| row(t, 3)).collect::<anyhow::Result<Vec<_>>>()?;
            if !rows.is_empty() {
                if let Err(note) = add_health(ctx, &project, &mut rows).await {
                    eprintln!("{note}");
                }
            }
            add_slots(&project.triggers, &mut rows);
            rows
        }
        Command::Next { name, count } => {
            let def = project.triggers.iter().find(|t| &t.name == name).ok_or_else(|| {
                let names: Vec<&str> = project.triggers.iter().map(|t| t.name.as_str()).collect();
                UsageError::new(format!("no trigger named {name:?}; triggers: {}", if names.is_empty() { "none".into() } else { names.join(", ") }))
            })?;
            if def.config.get::<CronConfig>().is_none() {
                return Err(UsageError::new(format!("trigger {name:?} is a {} trigger; only schedules have fire times", def.config.kind())).into());
            }
            vec![row(def, *count)?]
        }
    };
    if ctx.json {
        print_json(&rows)?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Next { .. } = command {
        for time in rows.iter().flat_map(|r| &r.next) {
            println!("{time}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No triggers in {}: add triggers/<name>.toml.", project.dir.join("triggers").display());
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec!["NAME", "KIND", "TARGET", "SOURCE", "STATUS", "NEXT / DETAIL"]);
    for r in &rows {
        let status = match (&r.status, &r.since) {
            (Some(status), Some(since)) => format!("{status} ({})", crate::triggers::health::ago(since)),
            (Some(status), None) => status.clone(),
            _ => "-".to_owned(),
        };
        let slot = r.details.as_ref().and_then(slot_summary);
        let detail = match (&slot, r.message.as_deref().filter(|m| !m.is_empty())) {
            _ if !r.next.is_empty() => r.next.join(", "),
            (Some(slot), Some(message)) => format!("{slot}; {message}"),
            (Some(slot), None) => slot.clone(),
            (None, message) => message.unwrap_or_default().to_owned(),
        };
        table.row(vec![r.name.clone(), r.kind.to_owned(), r.targets.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "), r.source.clone(), status, detail]);
    }
    println!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_lag_reads_for_people() {
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        let details = |v: serde_json::Value| v.as_object().cloned().unwrap_or_default();
        assert_eq!(
            slot_summary(&details(serde_json::json!({"slot": "s", "slot_lag_bytes": 2048, "slot_active": false}))).as_deref(),
            Some("slot s lag 2.0 KiB (inactive: WAL is kept for it)")
        );
        assert_eq!(
            slot_summary(&details(serde_json::json!({"slot": "s", "slot_lag_bytes": null, "slot_error": "no server"}))).as_deref(),
            Some("slot s: no server")
        );
        assert_eq!(slot_summary(&details(serde_json::json!({"status": "x"}))), None);
    }
}
