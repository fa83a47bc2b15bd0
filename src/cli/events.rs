//! `sluice events`: sample events for every trigger kind (`generate`), and one event's life
//! across the bus (`trace`).

use std::collections::HashSet;
use std::process::ExitCode;

use anyhow::Context as _;
use async_nats::jetstream::consumer;

use super::output::print_json;
use super::Context;
use crate::bus::{Bus, StreamSetup};
use crate::error::UsageError;
use crate::event::{CE_ID, CE_SOURCE, CE_TYPE};
use crate::telemetry::{logs, trace};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Print a sample event of a trigger kind, as the trigger would send it (like `sam local
    /// generate-event`), to feed `sluice invoke FUNCTION --event -`.
    Generate(Box<super::generate::Args>),
    /// Show one event's life in order: stored (by which trigger or publisher), each attempt
    /// on each node, its dead letter, replays and their attempts, the events it chained.
    Trace {
        /// The event id (`ce-id`).
        event_id: String,
    },
}

pub async fn run(ctx: &Context, command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Generate(args) => super::generate::run(&args),
        Command::Trace { event_id } => trace_event(ctx, &event_id).await,
    }
}

async fn trace_event(ctx: &Context, id: &str) -> anyhow::Result<ExitCode> {
    if id.trim().is_empty() {
        return Err(UsageError::new("EVENT_ID is empty: give the event's id (ce-id), as `sluice dlq list` or `sluice logs --json` show it").into());
    }
    let settings = ctx.settings()?;
    let target = ctx.nats_connection(&settings)?;
    let bus = Bus::connect(&target, &settings.bus, StreamSetup::CreateMissing).await?;
    let stored = stored_messages(&bus, id).await?;
    let records = logs::read_mentioning(&bus, id).await?;
    let mut in_dlq = HashSet::new();
    let dlq = bus.js.get_stream(crate::bus::DLQ_STREAM).await.context("opening stream SLUICE_DLQ")?;
    for dlq_id in records.iter().filter_map(|r| r.dlq_seq) {
        if dlq.direct_get(dlq_id).await.is_ok() {
            in_dlq.insert(dlq_id);
        }
    }
    let trace = trace::assemble(id, &stored, &records, &in_dlq);
    if trace.steps.is_empty() {
        eprintln!(
            "No trace of event {id}: it is not in SLUICE_EVENTS (kept {}) nor in the invocation logs (kept {}).",
            humantime::format_duration(settings.bus.events_max_age),
            humantime::format_duration(settings.bus.logs_max_age)
        );
        return Ok(ExitCode::from(1));
    }
    if ctx.json {
        print_json(&trace)?;
    } else {
        println!("{}", trace::render(&trace));
    }
    Ok(ExitCode::SUCCESS)
}

/// The messages of `SLUICE_EVENTS` that are event `id` (its first store and replays) or
/// that it chained, read by their headers only.
async fn stored_messages(bus: &Bus, id: &str) -> anyhow::Result<Vec<trace::Stored>> {
    let mut stream = bus.js.get_stream(crate::bus::EVENTS_STREAM).await.context("opening stream SLUICE_EVENTS")?;
    let messages = stream.info().await.map(|i| i.state.messages).unwrap_or(0);
    if messages > 200_000 {
        eprintln!("Reading the headers of {messages} events in SLUICE_EVENTS…");
    }
    let config = consumer::pull::Config { headers_only: true, ..Default::default() };
    let mut found = Vec::new();
    crate::bus::scan_stream(&stream, config, |message| {
        let header = |name: &str| message.headers.as_ref().and_then(|h| h.get(name)).map(|v| v.as_str().to_owned());
        let Some(event_id) = header(CE_ID) else { return Ok(()) };
        if !trace::related(id, &event_id) {
            return Ok(());
        }
        let Ok(info) = message.info() else { return Ok(()) };
        found.push(trace::Stored {
            seq: info.stream_sequence,
            at: info.published,
            subject: message.subject.to_string(),
            event_id,
            source: header(CE_SOURCE).unwrap_or_default(),
            ty: header(CE_TYPE).unwrap_or_default(),
            replay_of: header(crate::dlq::REPLAY_OF).and_then(|v| v.parse().ok()),
        });
        Ok(())
    })
    .await?;
    Ok(found)
}
