//! The `postgres` trigger: row changes of PostgreSQL tables become events, through a logical
//! replication slot and the built-in `pgoutput` plugin (no server extension to install).
//!
//! - The stream is read with `pg_walstream` (the streaming replication protocol, decoded
//!   pgoutput messages). Only committed transactions arrive, whole and in commit order; each
//!   row change becomes one event, published in that order.
//! - The slot's confirmed position advances only to the end of a transaction whose every
//!   event JetStream acknowledged. After a crash PostgreSQL sends again what was not
//!   confirmed; the event id (slot, commit LSN, position in the transaction) is the same, so
//!   JetStream's duplicate window drops the copies.
//! - One process streams a slot at a time; PostgreSQL refuses a second. Other `sluice up`
//!   nodes wait as standbys and take over when the slot is free.

pub mod catalog;
pub mod config;
pub mod decode;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt as _};
use futures::stream::{FuturesOrdered, StreamExt as _};
use pg_walstream::{CancellationToken, LogicalReplicationStream, ReplicationStreamConfig, RetryConfig, StreamingMode};
use tokio::sync::mpsc;
use tracing::{info, warn};

use self::catalog::{with_params, Catalog};
pub use self::config::{Operation, PostgresConfig, TableName};
use self::decode::{Decoder, Item};
use super::health::{Health, Status};
use super::{Trigger, TriggerContext};

/// Events decoded ahead of JetStream's acknowledgements, at most: bounds memory and the
/// number of events published again after a crash.
const WINDOW: usize = 512;
/// How often the confirmed position is reported to PostgreSQL while it changes.
const FEEDBACK_INTERVAL: Duration = Duration::from_millis(500);
/// How often a standby looks whether the slot became free.
const STANDBY_POLL: Duration = Duration::from_secs(5);

pub struct PostgresTrigger {
    config: PostgresConfig,
    slot: String,
    publication: String,
    tables: Vec<TableName>,
}

impl PostgresTrigger {
    pub fn new(name: &str, config: &PostgresConfig) -> anyhow::Result<Self> {
        config.check().map_err(|(field, message)| anyhow::anyhow!("trigger {name}: {field}: {message}"))?;
        Ok(Self {
            config: config.clone(),
            slot: config.slot_name(name),
            publication: config.publication_name(name),
            tables: config.table_names(),
        })
    }
}

impl Trigger for PostgresTrigger {
    fn run(self: Box<Self>, ctx: TriggerContext) -> BoxFuture<'static, anyhow::Result<()>> {
        Box::pin(async move {
            super::run_restarting(&ctx, "PostgreSQL change stream", || async {
                let mut health = Health::new(&ctx.name, &ctx.bus).await;
                self.stream(&ctx, &mut health).await
            })
            .await;
            Ok(())
        })
    }
}

impl PostgresTrigger {
    /// Checks and sets up the server, then streams until shutdown or a failure.
    async fn stream(&self, ctx: &TriggerContext, health: &mut Health) -> anyhow::Result<()> {
        let dsn = self.config.resolve_dsn(&ctx.name)?;
        let server = config::describe_dsn(&dsn).map_err(|m| anyhow::anyhow!("trigger {}: dsn: {m}", ctx.name))?;
        let mut catalog = Catalog::connect(&dsn, &server, 10)?;
        catalog.check_server()?;
        let mut waiting = false;
        let resume = loop {
            let state = catalog.check_slot(&self.slot)?;
            let Some(pid) = state.as_ref().and_then(|s| s.active_pid) else {
                break state.map_or_else(|| "a new slot".to_owned(), |s| s.confirmed_lsn);
            };
            if !waiting {
                info!(trigger = %ctx.name, slot = %self.slot, pid, "The slot is streamed by another process (another sluice node?); standing by.");
                waiting = true;
            }
            tokio::select! {
                () = ctx.shutdown.cancelled() => return Ok(()),
                () = tokio::time::sleep(STANDBY_POLL) => {}
            }
        };
        health.set(Status::Starting, format!("setting up slot {} on {server}", self.slot)).await;
        let tables = catalog.check_tables(&self.tables, &self.config.operations)?;
        catalog.ensure_publication(&self.publication, &tables, &self.config.operations)?;
        drop(catalog);

        let conninfo = with_params(&dsn, &[("replication", "database"), ("connect_timeout", "10")])?;
        let settings = ReplicationStreamConfig::builder(self.slot.clone(), self.publication.clone())
            .with_protocol_version(1)
            .with_streaming_mode(StreamingMode::Off)
            .with_feedback_interval(FEEDBACK_INTERVAL)
            .with_connection_timeout(Duration::from_secs(15))
            // Failures end the stream; `run_restarting` reconnects with its backoff and
            // reports them.
            .with_retry_config(RetryConfig { max_attempts: 1, ..RetryConfig::default() });
        let mut stream = LogicalReplicationStream::new(&conninfo, settings)
            .await
            .map_err(|e| anyhow::anyhow!("opening a replication connection to {server}: {e}"))?;
        stream.start(None).await.map_err(|e| anyhow::anyhow!("starting replication from slot {} on {server}: {e}", self.slot))?;
        let mut details = serde_json::Map::new();
        details.insert("slot".into(), self.slot.clone().into());
        details.insert("publication".into(), self.publication.clone().into());
        health
            .set_with(Status::Healthy, format!("streaming slot {} from {server}", self.slot), details)
            .await;
        info!(trigger = %ctx.name, slot = %self.slot, publication = %self.publication, %server, from = %resume, "Streaming changes.");

        let feedback = stream.shared_lsn_feedback.clone();
        // Room for the CloudEvents headers beside the data.
        let max_data = ctx.bus.client.server_info().max_payload.saturating_sub(8 * 1024);
        let keys = tables.into_iter().map(|t| (t.table, t.primary_key)).collect();
        let decoder = Decoder::new(&self.slot, &self.tables, &self.config.operations).with_max_data(max_data).with_keys(keys);
        let (items, mut decoded) = mpsc::channel(WINDOW);
        let stop = CancellationToken::new();
        let reader = tokio::spawn(read(stream, decoder, items, stop.clone()));

        let subject = self.config.target().subject();
        let mut inflight = FuturesOrdered::new();
        let mut progress = Progress::default();
        let result: anyhow::Result<()> = loop {
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => break Ok(()),
                Some(done) = inflight.next(), if !inflight.is_empty() => match done {
                    Ok(done) => progress.record(done, &feedback),
                    Err(error) => break Err(error),
                },
                item = decoded.recv(), if inflight.len() < WINDOW => match item {
                    Some(Item::Change(event)) => {
                        let ack = match ctx.bus.send_event(subject.clone(), &event).await {
                            Ok(ack) => ack,
                            Err(error) => break Err(error),
                        };
                        let id = event.id.clone();
                        inflight.push_back(async move {
                            ack.await
                                .map(|ack| Done::Stored { duplicate: ack.duplicate })
                                .map_err(|e| anyhow::anyhow!("JetStream did not acknowledge {id}: {e}"))
                        }.boxed());
                    }
                    Some(Item::Commit(lsn)) => inflight.push_back(futures::future::ready(Ok(Done::Committed(lsn))).boxed()),
                    None => break Err(anyhow::anyhow!("the change stream from {server} ended")),
                },
            }
        };
        // What JetStream acknowledged still counts: confirm it before the stream closes.
        while let Some(Ok(done)) = inflight.next().await {
            progress.record(done, &feedback);
        }
        stop.cancel();
        drop(decoded);
        let read_result = match reader.await {
            Ok(result) => result,
            Err(error) => Err(anyhow::anyhow!("the change stream reader failed: {error}")),
        };
        info!(
            trigger = %ctx.name,
            published = progress.published,
            duplicates = progress.duplicates,
            confirmed = %pg_walstream::format_lsn(progress.confirmed),
            "PostgreSQL change stream stopped."
        );
        match (result, read_result) {
            (Ok(()), Ok(())) => Ok(()),
            // The reader's error says why the stream ended.
            (_, Err(error)) => Err(error),
            (Err(error), Ok(())) => Err(error),
        }
    }
}

/// What came back from JetStream, in order.
enum Done {
    /// An event is stored; `duplicate` when it already was (sent again after a restart).
    Stored { duplicate: bool },
    /// Every event of the transaction ending at this LSN, and before it, is stored.
    Committed(u64),
}

#[derive(Default)]
struct Progress {
    published: u64,
    duplicates: u64,
    confirmed: u64,
}

impl Progress {
    /// Counts an event, or lets the slot's confirmed position move to a finished
    /// transaction's end (reported to PostgreSQL by the reader).
    fn record(&mut self, done: Done, feedback: &pg_walstream::SharedLsnFeedback) {
        match done {
            Done::Stored { duplicate } => {
                self.published += 1;
                self.duplicates += u64::from(duplicate);
            }
            Done::Committed(lsn) => {
                feedback.update_applied_lsn(lsn);
                self.confirmed = lsn;
            }
        }
    }
}

/// Reads the replication stream, decodes it and hands the items on, until `stop`. Every
/// [`FEEDBACK_INTERVAL`] it stops waiting for a moment to report the confirmed position,
/// so PostgreSQL learns it even while no change arrives.
async fn read(
    mut stream: LogicalReplicationStream,
    mut decoder: Decoder,
    items: mpsc::Sender<Item>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // The token `next_event` waits with; a ticker cancels it every interval. Cancellation
    // is the stream's own way out of a wait, so no frame is ever half read or half written.
    let current = Arc::new(Mutex::new(stop.child_token()));
    let ticker = {
        let current = current.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(FEEDBACK_INTERVAL).await;
                if let Ok(token) = current.lock() {
                    token.cancel();
                }
            }
        })
    };
    let result = async {
        loop {
            let token = {
                let mut token = current.lock().map_err(|_| anyhow::anyhow!("feedback ticker poisoned"))?;
                if token.is_cancelled() {
                    *token = stop.child_token();
                }
                token.clone()
            };
            match stream.next_event(&token).await {
                Ok(change) => {
                    for item in decoder.decode(change)? {
                        tokio::select! {
                            sent = items.send(item) => if sent.is_err() { return Ok(()) },
                            () = stop.cancelled() => return Ok(()),
                        }
                    }
                }
                Err(error) if error.is_cancelled() => {
                    if stop.is_cancelled() {
                        return Ok(());
                    }
                    stream.maybe_send_feedback().await;
                }
                Err(error) => return Err(anyhow::anyhow!("reading the change stream: {error}")),
            }
        }
    }
    .await;
    ticker.abort();
    if result.is_ok() {
        if let Err(error) = stream.send_feedback().await {
            warn!(%error, "Cannot report the last confirmed position; PostgreSQL sends those changes again (they are deduplicated).");
        }
    }
    result
}

crate::triggers::spec!(PostgresConfig, |config, name, _project| PostgresTrigger::new(name, config));
