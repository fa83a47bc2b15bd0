//! `sluice publish TOPIC --data JSON | --file PATH`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use bytes::Bytes;
use clap::ArgGroup;
use serde::Serialize;

use super::output::print_json;
use super::Context;
use crate::bus::{self, Bus, StreamSetup};
use crate::config::validate_topic;
use crate::error::UsageError;
use crate::event::{validate_header, Event, JSON};

#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("body").required(true).args(["data", "file"])))]
pub struct Args {
    /// Topic, e.g. `orders.created` (stored on subject `sluice.events.orders.created`).
    pub topic: String,
    /// Event data, JSON unless --raw.
    #[arg(long, value_name = "JSON")]
    pub data: Option<String>,
    /// Read the event data from a file (`-` for stdin).
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// CloudEvents `type`. Default: the topic.
    #[arg(long = "type", value_name = "TYPE")]
    pub ty: Option<String>,
    /// CloudEvents `source`.
    #[arg(long, default_value = "sluice.cli")]
    pub source: String,
    /// CloudEvents `subject` (what the event is about).
    #[arg(long)]
    pub subject: Option<String>,
    /// Event id; publishing the same id twice within the duplicate window delivers it once.
    /// Default: a new UUID.
    #[arg(long)]
    pub id: Option<String>,
    /// Extra header, repeatable: `--header tenant=acme`.
    #[arg(long = "header", value_name = "K=V")]
    pub headers: Vec<String>,
    /// Send the data as is, without checking that it is JSON.
    #[arg(long)]
    pub raw: bool,
    /// Content type. Default: application/json, or application/octet-stream with --raw.
    #[arg(long)]
    pub content_type: Option<String>,
}

/// What `--json` prints.
#[derive(Debug, Serialize)]
struct Output {
    id: String,
    topic: String,
    subject: String,
    stream: String,
    seq: u64,
    duplicate: bool,
}

pub async fn run(ctx: &Context, args: Args) -> anyhow::Result<ExitCode> {
    let event = build_event(&args)?;
    let settings = ctx.settings()?;
    let target = ctx.nats_connection(&settings)?;
    let bus = Bus::connect(&target, &settings.bus, StreamSetup::CreateMissing).await?;
    let subject = bus::topic_subject(&args.topic);
    let published = bus.publish_event(subject.clone(), &event).await?;
    if ctx.json {
        print_json(&Output {
            id: event.id,
            topic: args.topic,
            subject,
            stream: published.stream,
            seq: published.seq,
            duplicate: published.duplicate,
        })?;
    } else if published.duplicate {
        println!(
            "Event {} was already published (stream {}, seq {}): this copy was dropped as a duplicate.",
            event.id, published.stream, published.seq
        );
    } else {
        println!("Published event {} to {} (stream {}, seq {}).", event.id, args.topic, published.stream, published.seq);
    }
    Ok(ExitCode::SUCCESS)
}

fn build_event(args: &Args) -> anyhow::Result<Event> {
    validate_topic(&args.topic, false).map_err(|m| UsageError::new(format!("TOPIC: {m}")))?;
    let data: Vec<u8> = match (&args.data, &args.file) {
        (Some(data), _) => data.clone().into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf).context("reading the event data from stdin")?;
            buf
        }
        (None, Some(path)) => std::fs::read(path)
            .map_err(|e| UsageError::new(format!("--file {}: cannot read it: {e}", path.display())))?,
        (None, None) => return Err(UsageError::new("give the event data with --data JSON or --file PATH").into()),
    };
    if data.len() > crate::bus::payload::MAX_PAYLOAD_BYTES {
        let origin = if args.data.is_some() { "--data".to_owned() } else { format!("--file {}", args.file.as_deref().unwrap_or(std::path::Path::new("-")).display()) };
        return Err(UsageError::new(format!(
            "{origin}: the event data is {} bytes, over the limit of {} bytes (6 MiB); store large content elsewhere \
             (a bucket) and publish a reference to it",
            data.len(),
            crate::bus::payload::MAX_PAYLOAD_BYTES
        ))
        .into());
    }
    if !args.raw {
        if let Err(error) = serde_json::from_slice::<serde_json::Value>(&data) {
            let origin = if args.data.is_some() { "--data" } else { "--file" };
            return Err(UsageError::new(format!(
                "{origin} is not valid JSON ({error}); fix it, or pass --raw to send the bytes as they are"
            ))
            .into());
        }
    }
    let mut event = Event::new(args.source.clone(), args.ty.clone().unwrap_or_else(|| args.topic.clone()), Bytes::from(data));
    event.content_type = Some(args.content_type.clone().unwrap_or_else(|| {
        if args.raw { "application/octet-stream".to_owned() } else { JSON.to_owned() }
    }));
    event.subject = args.subject.clone();
    if let Some(id) = &args.id {
        if id.trim().is_empty() || id.contains(['\r', '\n']) {
            return Err(UsageError::new(format!("--id {id:?}: an event id must be non-empty and on one line")).into());
        }
        event.id = id.clone();
    }
    for attr in [("--type", &event.ty), ("--source", &event.source)] {
        if attr.1.trim().is_empty() || attr.1.contains(['\r', '\n']) {
            return Err(UsageError::new(format!("{} must be non-empty and on one line", attr.0)).into());
        }
    }
    for header in &args.headers {
        let (name, value) = header
            .split_once('=')
            .ok_or_else(|| UsageError::new(format!("--header {header:?}: write it as NAME=VALUE")))?;
        let name = name.trim();
        validate_header(name, value).map_err(|m| UsageError::new(format!("--header {header:?}: {m}")))?;
        if name.to_ascii_lowercase().starts_with("ce-") || name.eq_ignore_ascii_case("nats-msg-id") {
            return Err(UsageError::new(format!(
                "--header {header:?}: set CloudEvents attributes with --id, --type, --source, --subject"
            ))
            .into());
        }
        if name.eq_ignore_ascii_case(crate::event::TRACEPARENT) {
            if !crate::event::valid_traceparent(value) {
                return Err(UsageError::new(format!("--header {header:?}: not a W3C traceparent")).into());
            }
            event.traceparent = value.to_owned();
            continue;
        }
        event.extensions.push((name.to_owned(), value.to_owned()));
    }
    Ok(event)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        args: Args,
    }

    fn args(list: &[&str]) -> Args {
        T::try_parse_from(std::iter::once("t").chain(list.iter().copied())).unwrap().args
    }

    #[test]
    fn builds_a_cloudevent() {
        let e = build_event(&args(&["orders.created", "--data", "{\"a\":1}", "--id", "x1", "--header", "tenant=acme"])).unwrap();
        assert_eq!(e.id, "x1");
        assert_eq!(e.ty, "orders.created");
        assert_eq!(e.extension("tenant"), Some("acme"));
        assert_eq!(e.content_type.as_deref(), Some(JSON));
    }

    #[test]
    fn rejects_bad_input_with_usage_errors() {
        for bad in [
            vec!["orders..x", "--data", "{}"],
            vec!["orders", "--data", "{not json"],
            vec!["orders", "--data", "{}", "--header", "novalue"],
            vec!["orders", "--data", "{}", "--header", "ce-id=3"],
            vec!["orders.*", "--data", "{}"],
        ] {
            let err = build_event(&args(&bad)).unwrap_err();
            assert!(err.is::<UsageError>(), "{bad:?}: {err}");
        }
        assert!(build_event(&args(&["orders", "--data", "{not json", "--raw"])).is_ok());
    }
}
