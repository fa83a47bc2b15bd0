//! `sluice dlq list | show | replay | purge | stats`: inspect and redrive dead letters.

use std::io::{IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use super::output::{print_json, Table};
use super::Context;
use crate::bus::{Bus, StreamSetup};
use crate::dlq::{self, Dlq, Entry, Filter};
use crate::error::UsageError;

#[derive(Debug, Subcommand)]
pub enum Command {
    /// One row per dead letter, newest last.
    List {
        #[command(flatten)]
        filter: FilterArgs,
        /// Show at most this many (the newest).
        #[arg(long, default_value_t = 50)]
        limit: usize,
    },
    /// Everything about one dead letter: attributes, failure headers, trace, body.
    Show {
        /// DLQ id (the SLUICE_DLQ sequence, first column of `list`).
        id: u64,
    },
    /// Re-deliver dead letters to the function that failed (or to their topic) and remove
    /// them from the DLQ once the re-delivery is stored.
    Replay {
        /// DLQ ids.
        ids: Vec<u64>,
        /// Every entry matching the filters.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        #[command(flatten)]
        filter: FilterArgs,
        /// Re-publish to the original topic (every subscriber) instead of only the function.
        #[arg(long)]
        to_topic: bool,
        /// List what would be replayed; change nothing.
        #[arg(long)]
        dry_run: bool,
        /// At most this many re-deliveries per second.
        #[arg(long, value_name = "N")]
        rate: Option<f64>,
    },
    /// Remove dead letters for good.
    Purge {
        /// DLQ ids.
        ids: Vec<u64>,
        /// Every entry matching --function / --older-than.
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// Only this function's entries.
        #[arg(long)]
        function: Option<String>,
        /// Only entries that failed longer ago than this (7d, 12h) or before an RFC 3339 time.
        #[arg(long, value_name = "AGE")]
        older_than: Option<String>,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
    },
    /// Per function: entries, oldest age, top errors.
    Stats,
}

#[derive(Debug, Clone, clap::Args)]
pub struct FilterArgs {
    /// Only this function's entries.
    #[arg(long)]
    pub function: Option<String>,
    /// Only entries whose error contains this text (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub error: Option<String>,
    /// Only entries that failed within this long (10m, 2h) or since an RFC 3339 time.
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,
}

impl FilterArgs {
    fn is_set(&self) -> bool {
        self.function.is_some() || self.error.is_some() || self.since.is_some()
    }

    fn filter(&self, now: DateTime<Utc>) -> anyhow::Result<Filter> {
        check_function(self.function.as_deref())?;
        let since = match &self.since {
            Some(text) => Some(dlq::parse_time(text, now).map_err(|m| UsageError::new(format!("--since: {m}")))?),
            None => None,
        };
        Ok(Filter { function: self.function.clone(), error: self.error.clone(), since, before: None })
    }
}

fn check_function(function: Option<&str>) -> anyhow::Result<()> {
    if let Some(function) = function {
        crate::config::validate_name(function).map_err(|m| UsageError::new(format!("--function: {m}")))?;
    }
    Ok(())
}

pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    // Usage errors first, before anything connects.
    match &command {
        Command::Replay { ids, filter, .. } if !ids.is_empty() && filter.is_set() => {
            return Err(UsageError::new("--function, --error and --since select entries for --all; with ids, name only the ids").into());
        }
        Command::Purge { ids, function, older_than, .. } if !ids.is_empty() && (function.is_some() || older_than.is_some()) => {
            return Err(UsageError::new("--function and --older-than select entries for --all; with ids, name only the ids").into());
        }
        Command::Purge { function, .. } => check_function(function.as_deref())?,
        Command::List { filter, .. } | Command::Replay { filter, .. } => {
            filter.filter(Utc::now())?;
        }
        _ => {}
    }
    let settings = ctx.settings()?;
    let target = ctx.nats_connection(&settings)?;
    let bus = Bus::connect(&target, &settings.bus, StreamSetup::CreateMissing).await?;
    let dlq = Dlq::open(&bus).await?;
    let now = Utc::now();
    match command {
        Command::List { filter, limit } => list(ctx, &dlq, &filter.filter(now)?, limit, now).await,
        Command::Show { id } => show(ctx, &dlq, id).await,
        Command::Replay { ids, all, filter, to_topic, dry_run, rate } => {
            let selected = select(&dlq, &ids, all, &filter.filter(now)?).await?;
            replay(ctx, &dlq, selected, to_topic, dry_run, rate).await
        }
        Command::Purge { ids, all, function, older_than, yes } => {
            let before = match &older_than {
                Some(text) => Some(dlq::parse_time(text, now).map_err(|m| UsageError::new(format!("--older-than: {m}")))?),
                None => None,
            };
            let filter = Filter { function, error: None, since: None, before };
            purge(ctx, &dlq, &ids, all, &filter, yes).await
        }
        Command::Stats => stats(ctx, &dlq, now).await,
    }
}

/// One row of `list --json`.
#[derive(Debug, Serialize)]
struct Row<'a> {
    id: u64,
    function: &'a str,
    topic: Option<&'a str>,
    event_id: &'a str,
    attempts: u32,
    replays: u32,
    error_kind: &'a str,
    /// Lambda runtimes: the handler's `errorType` (null for others).
    error_type: Option<&'a str>,
    error: &'a str,
    failed_at: DateTime<Utc>,
    age_secs: i64,
}

#[derive(Debug, Serialize)]
struct ListOutput<'a> {
    entries: Vec<Row<'a>>,
    /// Matching entries not shown (older than those listed).
    more: usize,
}

async fn list(ctx: &Context, dlq: &Dlq, filter: &Filter, limit: usize, now: DateTime<Utc>) -> anyhow::Result<ExitCode> {
    let entries = dlq.entries(filter).await?;
    let skip = entries.len().saturating_sub(limit);
    let shown = &entries[skip..];
    let rows: Vec<Row> = shown
        .iter()
        .map(|e| Row {
            id: e.id,
            function: &e.function,
            topic: e.topic.as_deref(),
            event_id: &e.event_id,
            attempts: e.attempts,
            replays: e.replays,
            error_kind: &e.error_kind,
            error_type: e.error_type.as_deref(),
            error: e.error_line(),
            failed_at: e.failed_at,
            age_secs: (now - e.failed_at).num_seconds().max(0),
        })
        .collect();
    if ctx.json {
        print_json(&ListOutput { entries: rows, more: skip })?;
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("The dead-letter queue has no matching entries.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec!["ID", "FUNCTION", "TOPIC", "EVENT", "ATTEMPTS", "AGE", "ERROR"]);
    for row in &rows {
        let mut error = format!("{}: {}", row.error_kind, row.error);
        if error.chars().count() > 100 {
            error = error.chars().take(99).collect::<String>() + "…";
        }
        table.row(vec![
            row.id.to_string(),
            row.function.to_owned(),
            row.topic.unwrap_or("(direct)").to_owned(),
            row.event_id.to_owned(),
            if row.replays > 0 { format!("{} (replay {})", row.attempts, row.replays) } else { row.attempts.to_string() },
            age(row.age_secs),
            error,
        ]);
    }
    println!("{}", table.render());
    if skip > 0 {
        println!("{skip} older matching entries not shown; raise --limit or narrow with --function/--error/--since.");
    }
    Ok(ExitCode::SUCCESS)
}

fn age(secs: i64) -> String {
    let secs = u64::try_from(secs).unwrap_or(0);
    let rounded = if secs >= 3600 { secs - secs % 60 } else { secs };
    humantime::format_duration(Duration::from_secs(rounded)).to_string()
}

/// `show --json`.
#[derive(Debug, Serialize)]
struct ShowOutput<'a> {
    #[serde(flatten)]
    entry: &'a Entry,
    body_encoding: &'static str,
    body: serde_json::Value,
}

async fn show(ctx: &Context, dlq: &Dlq, id: u64) -> anyhow::Result<ExitCode> {
    let Some(entry) = dlq.entry(id).await? else {
        return Err(UsageError::new(format!("no DLQ entry with id {id}; `sluice dlq list` shows the ids")).into());
    };
    if ctx.json {
        let (body_encoding, body) = dlq::json_body(&entry.body);
        print_json(&ShowOutput { entry: &entry, body_encoding, body })?;
        return Ok(ExitCode::SUCCESS);
    }
    println!("DLQ entry {} — function {}", entry.id, entry.function);
    println!("  topic:             {}", entry.topic.as_deref().unwrap_or("(direct delivery)"));
    println!("  delivered on:      {}", entry.original_subject);
    println!("\nEvent");
    for (name, value) in dlq::attributes(&entry) {
        println!("  {name:<18} {value}");
    }
    println!("  trace id:          {}", entry.trace_id);
    println!("\nFailure");
    for (name, values) in &entry.headers {
        if name.starts_with("sluice-") {
            for value in values {
                println!("  {:<24} {value}", format!("{name}:"));
            }
        }
    }
    let others: Vec<_> = entry
        .headers
        .iter()
        .filter(|(n, _)| !n.starts_with("sluice-") && !n.starts_with("ce-") && !n.eq_ignore_ascii_case("nats-msg-id") && *n != "content-type")
        .collect();
    if !others.is_empty() {
        println!("\nOther headers");
        for (name, values) in others {
            for value in values {
                println!("  {name}: {value}");
            }
        }
    }
    let (kind, body) = dlq::render_body(&entry.body);
    println!("\nBody ({kind}, {} bytes)", entry.body.len());
    println!("{body}");
    Ok(ExitCode::SUCCESS)
}

async fn select(dlq: &Dlq, ids: &[u64], all: bool, filter: &Filter) -> anyhow::Result<Vec<Entry>> {
    if all {
        return dlq.entries(filter).await;
    }
    if ids.is_empty() {
        return Err(UsageError::new("name the DLQ ids to work on, or pass --all (with --function/--error/--since to narrow)").into());
    }
    let mut entries = Vec::with_capacity(ids.len());
    for &id in ids {
        match dlq.entry(id).await? {
            Some(entry) => entries.push(entry),
            None => return Err(UsageError::new(format!("no DLQ entry with id {id}; `sluice dlq list` shows the ids")).into()),
        }
    }
    Ok(entries)
}

#[derive(Debug, Serialize)]
struct ReplayOutput {
    dry_run: bool,
    to_topic: bool,
    /// Entries re-delivered (or, with --dry-run, that would be).
    replayed: Vec<dlq::Replayed>,
    failed: Vec<Failure>,
}

#[derive(Debug, Serialize)]
struct Failure {
    id: u64,
    error: String,
}

async fn replay(ctx: &Context, dlq: &Dlq, entries: Vec<Entry>, to_topic: bool, dry_run: bool, rate: Option<f64>) -> anyhow::Result<ExitCode> {
    if let Some(rate) = rate {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(UsageError::new(format!("--rate {rate}: give a positive number of events per second")).into());
        }
    }
    let mut output = ReplayOutput { dry_run, to_topic, replayed: Vec::new(), failed: Vec::new() };
    if dry_run {
        for entry in &entries {
            let subject = match (&entry.topic, to_topic) {
                (Some(topic), true) => crate::bus::topic_subject(topic),
                (None, true) => {
                    output.failed.push(Failure { id: entry.id, error: "a direct delivery has no topic to re-publish to".into() });
                    continue;
                }
                _ => crate::bus::direct_subject(&entry.function),
            };
            output.replayed.push(dlq::Replayed { id: entry.id, subject, seq: 0, duplicate: false, removed: false });
        }
    } else {
        let bar = progress(entries.len());
        let interval = rate.map(|r| Duration::from_secs_f64(1.0 / r));
        let started = tokio::time::Instant::now();
        for (i, entry) in entries.iter().enumerate() {
            if let Some(interval) = interval {
                tokio::time::sleep_until(started + interval.mul_f64(i as f64)).await;
            }
            match dlq.replay(entry, to_topic).await {
                Ok(replayed) => output.replayed.push(replayed),
                Err(error) => output.failed.push(Failure { id: entry.id, error: format!("{error:#}") }),
            }
            bar.inc(1);
        }
        bar.finish_and_clear();
    }
    if ctx.json {
        print_json(&output)?;
    } else {
        for replayed in &output.replayed {
            if dry_run {
                println!("would replay {} → {}", replayed.id, replayed.subject);
            }
        }
        for failure in &output.failed {
            eprintln!("entry {}: {}", failure.id, failure.error);
        }
        let verb = if dry_run { "Would replay" } else { "Replayed" };
        let target = if to_topic { "their topics" } else { "the failed functions" };
        println!("{verb} {} of {} entries to {target}.", output.replayed.len(), entries.len());
    }
    Ok(if output.failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn progress(len: usize) -> ProgressBar {
    if len <= 5 || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    if let Ok(style) = ProgressStyle::with_template("replaying [{bar:30}] {pos}/{len} {per_sec} eta {eta}") {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

#[derive(Debug, Serialize)]
struct PurgeOutput {
    removed: u64,
}

async fn purge(ctx: &Context, dlq: &Dlq, ids: &[u64], all: bool, filter: &Filter, yes: bool) -> anyhow::Result<ExitCode> {
    if !all && ids.is_empty() {
        return Err(UsageError::new("name the DLQ ids to purge, or pass --all (with --function/--older-than to narrow)").into());
    }
    let whole = all && filter.before.is_none();
    let targets: Vec<u64> = if all {
        if whole { Vec::new() } else { dlq.entries(filter).await?.iter().map(|e| e.id).collect() }
    } else {
        for &id in ids {
            if dlq.entry(id).await?.is_none() {
                return Err(UsageError::new(format!("no DLQ entry with id {id}; `sluice dlq list` shows the ids")).into());
            }
        }
        ids.to_vec()
    };
    let what = if whole {
        match &filter.function {
            Some(function) => format!("every DLQ entry of function {function}"),
            None => "every DLQ entry".to_owned(),
        }
    } else {
        format!("{} DLQ entries", targets.len())
    };
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(UsageError::new(format!("refusing to remove {what} without confirmation: pass --yes")).into());
        }
        eprint!("Remove {what} for good? [y/N] ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes" | "YES") {
            println!("Nothing removed.");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let removed = if whole {
        dlq.purge_all(filter.function.as_deref()).await?
    } else {
        let mut removed = 0;
        for id in targets {
            if dlq.remove(id).await? {
                removed += 1;
            }
        }
        removed
    };
    if ctx.json {
        print_json(&PurgeOutput { removed })?;
    } else {
        println!("Removed {removed} entries.");
    }
    Ok(ExitCode::SUCCESS)
}

async fn stats(ctx: &Context, dlq: &Dlq, now: DateTime<Utc>) -> anyhow::Result<ExitCode> {
    let entries = dlq.entries(&Filter::default()).await?;
    let stats = dlq::stats(&entries, now);
    if ctx.json {
        print_json(&stats)?;
        return Ok(ExitCode::SUCCESS);
    }
    if stats.is_empty() {
        println!("The dead-letter queue is empty.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut table = Table::new(vec!["FUNCTION", "ENTRIES", "OLDEST", "TOP ERRORS"]);
    for s in &stats {
        let errors: Vec<String> = s.top_errors.iter().map(|e| format!("{}× {}", e.count, e.error)).collect();
        table.row(vec![s.function.clone(), s.entries.to_string(), age(s.oldest_age_secs), errors.join(" | ")]);
    }
    println!("{}", table.render());
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_round_to_minutes_from_an_hour() {
        assert_eq!(age(59), "59s");
        assert_eq!(age(3599), "59m 59s");
        assert_eq!(age(3600), "1h");
        assert_eq!(age(3661), "1h 1m");
        assert_eq!(age(-5), "0s", "a clock running behind shows no negative age");
    }

    #[test]
    fn filter_flags_become_a_filter() {
        let now = DateTime::parse_from_rfc3339("2026-01-10T00:00:00Z").unwrap().with_timezone(&Utc);
        let none = FilterArgs { function: None, error: None, since: None };
        assert!(!none.is_set());
        for set in [
            FilterArgs { function: Some("f".into()), error: None, since: None },
            FilterArgs { function: None, error: Some("boom".into()), since: None },
            FilterArgs { function: None, error: None, since: Some("1h".into()) },
        ] {
            assert!(set.is_set(), "{set:?}");
        }
        let args = FilterArgs { function: Some("orders".into()), error: Some("boom".into()), since: Some("2h".into()) };
        let filter = args.filter(now).unwrap();
        assert_eq!(filter.function.as_deref(), Some("orders"));
        assert_eq!(filter.error.as_deref(), Some("boom"));
        assert_eq!(filter.since, Some(now - chrono::Duration::hours(2)));
        assert_eq!(filter.before, None);
        let bad = FilterArgs { function: Some("no spaces".into()), error: None, since: None };
        assert!(bad.filter(now).unwrap_err().to_string().contains("--function"));
        let bad = FilterArgs { function: None, error: None, since: Some("yesterday".into()) };
        assert!(bad.filter(now).unwrap_err().to_string().contains("--since"));
    }
}
