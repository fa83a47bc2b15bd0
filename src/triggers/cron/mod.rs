//! The `cron` trigger: publishes an EventBridge "Scheduled Event" at every tick of its
//! schedule.
//!
//! - The event id is `cron:<trigger>:<scheduled time>` and is the `Nats-Msg-Id`: every
//!   `sluice up` on the same NATS fires every tick at the same instant, and JetStream keeps
//!   one copy (they all publish within the duplicate window, whatever the interval).
//! - The last fired tick is kept in KV `sluice_state` (key `cron.<trigger>`), written only
//!   after JetStream acknowledged the tick and only ever moved forward. On start, ticks
//!   after it that already passed are missed ones: `missed` decides whether none, the most
//!   recent, or all of them (up to `max_catchup`) fire. A catch-up tick carries
//!   `sluice-cron-catchup: true`.

mod config;
pub mod schedule;

use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use aws_lambda_events::event::eventbridge::EventBridgeEvent;
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::future::BoxFuture;
use tracing::{info, warn};

pub use self::config::{CronConfig, Missed};
use self::schedule::Schedule;
use super::{Target, Trigger, TriggerContext};

/// `source` of the Scheduled Events (EventBridge uses `aws.events`).
pub const SOURCE: &str = "sluice.cron";
/// CloudEvents `type` of a tick.
pub const EVENT_TYPE: &str = "sluice.cron.scheduled";
/// Extension header on a tick fired late, after downtime.
pub const CATCHUP: &str = "sluice-cron-catchup";
/// Publishes of one tick before it counts as missed, and the pause between them.
const PUBLISH_TRIES: u32 = 3;
const PUBLISH_RETRY_DELAY: Duration = Duration::from_millis(200);

pub struct CronTrigger {
    name: String,
    schedule: Schedule,
    target: Target,
    payload: serde_json::Value,
    missed: Missed,
    max_catchup: usize,
}

impl CronTrigger {
    pub fn new(name: &str, config: &CronConfig) -> anyhow::Result<Self> {
        let schedule = config.check().map_err(|(field, message)| anyhow::anyhow!("trigger {name}: {field}: {message}"))?;
        let payload = match &config.payload {
            Some(table) => serde_json::to_value(table).context("converting the payload to JSON")?,
            None => serde_json::Value::Object(serde_json::Map::new()),
        };
        Ok(Self {
            name: name.to_owned(),
            schedule,
            target: config.target(),
            payload,
            missed: config.missed,
            max_catchup: config.max_catchup,
        })
    }

    /// The event for one tick.
    pub fn event(&self, tick: DateTime<Utc>, catchup: bool) -> crate::event::Event {
        let id = format!("cron:{}:{}", self.name, tick.to_rfc3339_opts(SecondsFormat::Millis, true));
        let mut detail = EventBridgeEvent::<serde_json::Value>::default();
        detail.version = Some("0".to_owned());
        detail.id = Some(id.clone());
        detail.detail_type = "Scheduled Event".to_owned();
        detail.source = SOURCE.to_owned();
        detail.account = Some(String::new());
        detail.time = Some(tick);
        detail.region = Some(String::new());
        detail.resources = Some(vec![self.name.clone()]);
        detail.detail = self.payload.clone();
        let data = serde_json::to_vec(&detail).unwrap_or_default();
        let mut event = crate::event::Event::new(SOURCE, EVENT_TYPE, Bytes::from(data));
        event.id = id;
        event.time = tick;
        event.subject = Some(self.name.clone());
        if catchup {
            event.set_extension(CATCHUP, "true");
        }
        event
    }

    async fn run_loop(self, ctx: TriggerContext) -> anyhow::Result<()> {
        let state = ctx.bus.state().await?;
        let key = format!("cron.{}", self.name);
        let now = Utc::now();
        if let Some(last) = read_last(&state, &key).await? {
            let missed = self.schedule.ticks_between(last, now, self.max_catchup);
            let fire: Vec<DateTime<Utc>> = match self.missed {
                Missed::Skip => Vec::new(),
                Missed::FireOnce => missed.last().copied().into_iter().collect(),
                Missed::FireAll => missed.clone(),
            };
            if !missed.is_empty() {
                info!(trigger = %self.name, missed = missed.len(), firing = fire.len(), policy = self.missed.as_str(), "Ticks were missed while no worker ran.");
            }
            for tick in fire {
                self.fire(&ctx, &state, &key, tick, true).await;
            }
        }
        let mut cursor = now;
        loop {
            let Some(next) = self.schedule.next_after(cursor) else {
                warn!(trigger = %self.name, "The schedule has no further ticks.");
                ctx.shutdown.cancelled().await;
                return Ok(());
            };
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = ctx.shutdown.cancelled() => return Ok(()),
            }
            self.fire(&ctx, &state, &key, next, false).await;
            cursor = next;
        }
    }

    async fn fire(&self, ctx: &TriggerContext, state: &kv::Store, key: &str, tick: DateTime<Utc>, catchup: bool) {
        let event = self.event(tick, catchup);
        let tick_text = tick.to_rfc3339_opts(SecondsFormat::Millis, true);
        let mut tries = 0;
        let published = loop {
            tries += 1;
            match ctx.bus.publish_event(self.target.subject(), &event).await {
                Ok(published) => break Some(published),
                Err(error) if tries < PUBLISH_TRIES => {
                    warn!(trigger = %self.name, tick = %tick_text, tries, error = %format!("{error:#}"), "Cannot publish a tick; trying again.");
                    tokio::time::sleep(PUBLISH_RETRY_DELAY).await;
                }
                Err(error) => {
                    warn!(trigger = %self.name, tick = %tick_text, tries, error = %format!("{error:#}"), "Tick not published; it counts as missed.");
                    break None;
                }
            }
        };
        let Some(published) = published else { return };
        let delay_ms = (Utc::now() - tick).num_microseconds().unwrap_or(0) as f64 / 1000.0;
        info!(
            trigger = %self.name,
            tick = %tick_text,
            delay_ms = format!("{delay_ms:.2}"),
            seq = published.seq,
            duplicate = published.duplicate,
            catchup,
            "Tick fired."
        );
        if let Err(error) = record_last(state, key, tick).await {
            warn!(trigger = %self.name, error = %format!("{error:#}"), "Cannot record the last fired tick.");
        }
    }
}

impl Trigger for CronTrigger {
    fn run(self: Box<Self>, ctx: TriggerContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move { self.run_loop(ctx).await })
    }
}

async fn read_last(state: &kv::Store, key: &str) -> anyhow::Result<Option<DateTime<Utc>>> {
    let value = state.get(key).await.with_context(|| format!("reading {key} from sluice_state"))?;
    Ok(value.and_then(|v| DateTime::parse_from_rfc3339(std::str::from_utf8(&v).ok()?).ok()).map(|t| t.with_timezone(&Utc)))
}

/// Moves `key` forward to `tick` (never back), safe against other processes doing the same.
async fn record_last(state: &kv::Store, key: &str, tick: DateTime<Utc>) -> anyhow::Result<()> {
    let value = Bytes::from(tick.to_rfc3339_opts(SecondsFormat::Millis, true));
    for _ in 0..10 {
        match state.entry(key).await.context("reading the last tick")? {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let current = std::str::from_utf8(&entry.value).ok().and_then(|v| DateTime::parse_from_rfc3339(v).ok());
                if current.is_some_and(|c| c >= tick) {
                    return Ok(());
                }
                if state.update(key, value.clone(), entry.revision).await.is_ok() {
                    return Ok(());
                }
            }
            _ => {
                if state.create(key, value.clone()).await.is_ok() {
                    return Ok(());
                }
            }
        }
    }
    anyhow::bail!("{key} kept changing under concurrent updates")
}

crate::triggers::spec!(CronConfig, |config, name, _project| CronTrigger::new(name, config));
