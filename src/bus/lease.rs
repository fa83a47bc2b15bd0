//! A lease in KV `sluice_state`: at most one node at a time reads a single-reader source
//! (an S3 listing, an MQTT session) when several `sluice up` share one NATS cluster.
//!
//! - One key per source (`lease.<trigger>`). Its value names the holder (this node's
//!   [`node_id`]); what counts is the key's revision, which every write changes.
//! - **Acquire**: KV `create` when the key is absent, else compare-and-set (`update`
//!   expecting the revision read) once the lease is free: deleted (released), or its
//!   revision has not changed for [`Timing::ttl`] as measured on the observer's own
//!   monotonic clock. No timestamp from another machine is trusted, so clock skew between
//!   nodes does not matter; only clock *rates* must roughly agree.
//! - **Renew**: the holder rewrites the key every [`Timing::renew_every`], expecting its
//!   last revision. A renewal refused because the revision moved means another node took
//!   over: the lease is lost at once. A renewal that fails for another reason (a NATS
//!   leader election, a timeout) is tried again, but the lease counts as lost when no
//!   renewal succeeded for [`Timing::hold_for`] after the start of the last good one,
//!   whether or not NATS answers: an observer cannot take over before `ttl` after it first
//!   saw that revision, which is later than that start, and `hold_for < ttl`.
//! - **Lost**: the holder's token is cancelled; its source must stop reading at once.
//! - **Release** (clean shutdown): the key is deleted expecting the holder's revision, so
//!   another node takes over within one poll instead of a whole `ttl`.
//!
//! With the default [`TIMING`] a node that dies (SIGKILL, power loss) is replaced within
//! about `renew_every + poll_every + ttl` = 6.5 s.

use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Context as _;
use async_nats::jetstream::kv;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// The timing of a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// A lease whose revision did not change for this long (observer's clock) is free.
    pub ttl: Duration,
    /// How often the holder renews.
    pub renew_every: Duration,
    /// The holder stops once no renewal succeeded for this long; less than `ttl`.
    pub hold_for: Duration,
    /// How often a node that does not hold the lease reads it.
    pub poll_every: Duration,
}

/// Takeover of a dead holder within about 6.5 s (under the 10 s promised in
/// docs/triggers.md), and three renewals may fail before a holder gives up.
pub const TIMING: Timing = Timing {
    ttl: Duration::from_secs(5),
    renew_every: Duration::from_secs(1),
    hold_for: Duration::from_secs(4),
    poll_every: Duration::from_millis(500),
};

/// This process's identity among the nodes: `hostname:pid:random`.
pub fn node_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("{host}:{}:{:08x}", std::process::id(), rand::random::<u32>())
    })
}

/// The value of a lease key.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    /// The holder's [`node_id`].
    pub holder: String,
    /// When it acquired the lease, on its own clock; for people, never for decisions.
    pub since: String,
}

/// What a read of the lease key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No such key (never written, or purged).
    Absent,
    /// A delete marker at `revision`: released by its last holder.
    Released { revision: u64 },
    /// Held by `holder` as of `revision`.
    Held { revision: u64, holder: String },
}

/// What a node that does not hold the lease does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Create the key (it is absent).
    Create,
    /// Write the key expecting `revision`: the lease is free, or the key already names
    /// this node (its own earlier write, whose acknowledgement was lost).
    Claim { revision: u64 },
    /// Someone holds it; read again after `poll_every`.
    Wait,
}

/// The observer's side of the state machine: decides, from successive reads and its own
/// clock, when a lease is free. Pure, so the rules are tested without a server.
#[derive(Debug, Clone)]
pub struct Observer {
    me: String,
    ttl: Duration,
    /// The revision last seen and when it was first seen, on this node's clock.
    last: Option<(u64, Instant)>,
}

impl Observer {
    pub fn new(me: &str, ttl: Duration) -> Self {
        Self { me: me.to_owned(), ttl, last: None }
    }

    /// The next step after reading `seen` at `now`.
    pub fn step(&mut self, now: Instant, seen: &Seen) -> Step {
        match seen {
            Seen::Absent => Step::Create,
            Seen::Released { revision } => Step::Claim { revision: *revision },
            Seen::Held { revision, holder } if *holder == self.me => Step::Claim { revision: *revision },
            Seen::Held { revision, .. } => match self.last {
                Some((last, first_seen)) if last == *revision => {
                    if now.saturating_duration_since(first_seen) >= self.ttl {
                        Step::Claim { revision: *revision }
                    } else {
                        Step::Wait
                    }
                }
                _ => {
                    self.last = Some((*revision, now));
                    Step::Wait
                }
            },
        }
    }

    /// A claim or create failed: start counting again from the next read.
    pub fn reset(&mut self) {
        self.last = None;
    }
}

/// The holder's side: whether it may still act as the holder.
#[derive(Debug, Clone, Copy)]
pub struct Holding {
    pub revision: u64,
    /// When the last successful write (acquire or renewal) was *started*.
    pub renewed_at: Instant,
    hold_for: Duration,
}

impl Holding {
    pub fn new(revision: u64, started: Instant, hold_for: Duration) -> Self {
        Self { revision, renewed_at: started, hold_for }
    }

    /// The instant the holder must have stopped by, unless it renews.
    pub fn deadline(&self) -> Instant {
        self.renewed_at + self.hold_for
    }

    pub fn valid(&self, now: Instant) -> bool {
        now < self.deadline()
    }

    /// A renewal started at `started` was stored as `revision`.
    pub fn renewed(&mut self, started: Instant, revision: u64) {
        self.revision = revision;
        self.renewed_at = self.renewed_at.max(started);
    }
}

/// A lease key and the node contending for it.
#[derive(Clone)]
pub struct Lease {
    store: kv::Store,
    key: String,
    /// What it guards, for the logs (a trigger's name).
    what: String,
    me: String,
    timing: Timing,
}

/// A lease this node holds. `lost` is cancelled the moment it is lost (or at shutdown);
/// drop it or call [`Held::release`] when done.
pub struct Held {
    pub lost: CancellationToken,
    stop: CancellationToken,
    renewer: tokio::task::JoinHandle<Option<u64>>,
    lease: Lease,
}

impl Lease {
    /// The lease `key` of `store`, contended for by this process ([`node_id`]).
    pub fn new(store: kv::Store, key: &str, what: &str) -> Self {
        Self::with(store, key, what, node_id(), TIMING)
    }

    /// A lease with a chosen identity and timing (tests run several "nodes" in one process).
    pub fn with(store: kv::Store, key: &str, what: &str, me: &str, timing: Timing) -> Self {
        Self { store, key: key.to_owned(), what: what.to_owned(), me: me.to_owned(), timing }
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    pub fn node(&self) -> &str {
        &self.me
    }

    async fn read(&self) -> anyhow::Result<Seen> {
        let entry = self.store.entry(self.key.clone()).await.with_context(|| format!("reading lease {} from sluice_state", self.key))?;
        Ok(match entry {
            None => Seen::Absent,
            Some(entry) if entry.operation != kv::Operation::Put => Seen::Released { revision: entry.revision },
            Some(entry) => {
                let holder = serde_json::from_slice::<Record>(&entry.value).map(|r| r.holder).unwrap_or_default();
                Seen::Held { revision: entry.revision, holder }
            }
        })
    }

    fn value(&self) -> Bytes {
        let record = Record { holder: self.me.clone(), since: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true) };
        Bytes::from(serde_json::to_vec(&record).unwrap_or_default())
    }

    /// Waits until this node holds the lease; `None` when `shutdown` comes first. Logs who
    /// holds it while waiting, and the acquisition or takeover.
    pub async fn acquire(&self, shutdown: &CancellationToken) -> Option<Held> {
        let mut observer = Observer::new(&self.me, self.timing.ttl);
        let mut reported: Option<String> = None;
        loop {
            let started = Instant::now();
            match self.read().await {
                Ok(seen) => {
                    let step = observer.step(started, &seen);
                    let previous = match &seen {
                        Seen::Held { holder, .. } => Some(holder.clone()),
                        Seen::Absent | Seen::Released { .. } => None,
                    };
                    let written = match step {
                        Step::Wait => {
                            if reported != previous {
                                if let Some(holder) = &previous {
                                    info!(lease = %self.key, trigger = %self.what, node = %self.me, %holder, "Another node holds the lease; standing by.");
                                }
                                reported = previous.clone();
                            }
                            None
                        }
                        Step::Create => Some(self.store.create(&self.key, self.value()).await.map_err(anyhow::Error::from)),
                        Step::Claim { revision } => Some(self.store.update(&self.key, self.value(), revision).await.map_err(anyhow::Error::from)),
                    };
                    match written {
                        None => {}
                        Some(Ok(revision)) => {
                            match previous.filter(|p| *p != self.me) {
                                Some(previous) => {
                                    info!(lease = %self.key, trigger = %self.what, node = %self.me, %previous, revision, "Took over the lease from a node that stopped renewing it.");
                                }
                                None => info!(lease = %self.key, trigger = %self.what, node = %self.me, revision, "Acquired the lease."),
                            }
                            return Some(self.hold(Holding::new(revision, started, self.timing.hold_for), shutdown));
                        }
                        Some(Err(error)) => {
                            // Another node won the race (or NATS did not answer): read again.
                            observer.reset();
                            tracing::debug!(lease = %self.key, node = %self.me, error = %format!("{error:#}"), "Lease claim failed.");
                        }
                    }
                }
                Err(error) => {
                    observer.reset();
                    warn!(lease = %self.key, trigger = %self.what, node = %self.me, error = %format!("{error:#}"), "Cannot read the lease; trying again.");
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => return None,
                () = tokio::time::sleep(self.timing.poll_every) => {}
            }
        }
    }

    /// Starts renewing a lease just acquired.
    fn hold(&self, holding: Holding, shutdown: &CancellationToken) -> Held {
        let lost = shutdown.child_token();
        let stop = CancellationToken::new();
        let renewer = tokio::spawn(self.clone().renew(holding, lost.clone(), stop.clone()));
        Held { lost, stop, renewer, lease: self.clone() }
    }

    /// Renews until `stop` (returns the revision still held) or until the lease is lost
    /// (cancels `lost`, returns `None`).
    async fn renew(self, mut holding: Holding, lost: CancellationToken, stop: CancellationToken) -> Option<u64> {
        loop {
            let next = (Instant::now() + self.timing.renew_every).min(holding.deadline());
            tokio::select! {
                () = stop.cancelled() => return Some(holding.revision),
                () = lost.cancelled() => return Some(holding.revision),
                () = tokio::time::sleep_until(next) => {}
            }
            if !holding.valid(Instant::now()) {
                warn!(lease = %self.key, trigger = %self.what, node = %self.me, hold_for = ?self.timing.hold_for, "Lost the lease: no renewal succeeded in time; stopping the source.");
                lost.cancel();
                return None;
            }
            let started = Instant::now();
            let written = tokio::time::timeout_at(holding.deadline(), self.store.update(&self.key, self.value(), holding.revision)).await;
            match written {
                Ok(Ok(revision)) => holding.renewed(started, revision),
                Ok(Err(error)) if error.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                    // Our own write may have been stored with its acknowledgement lost.
                    match self.read().await {
                        Ok(Seen::Held { revision, holder }) if holder == self.me => holding.revision = revision,
                        seen => {
                            let holder = match seen {
                                Ok(Seen::Held { holder, .. }) => holder,
                                _ => String::new(),
                            };
                            warn!(lease = %self.key, trigger = %self.what, node = %self.me, %holder, "Lost the lease: another node took it over; stopping the source.");
                            lost.cancel();
                            return None;
                        }
                    }
                }
                Ok(Err(error)) => {
                    warn!(lease = %self.key, trigger = %self.what, node = %self.me, error = %format!("{error:#}"), "Cannot renew the lease; trying again.");
                }
                Err(_) => {}
            }
        }
    }
}

impl Held {
    /// Stops renewing and deletes the key (if still ours), so another node takes over at
    /// its next read rather than after the whole ttl.
    pub async fn release(mut self) {
        self.stop.cancel();
        let revision = (&mut self.renewer).await.ok().flatten();
        self.lost.cancel();
        if let Some(revision) = revision {
            match self.lease.store.delete_expect_revision(&self.lease.key, Some(revision)).await {
                Ok(()) => info!(lease = %self.lease.key, trigger = %self.lease.what, node = %self.lease.me, "Released the lease."),
                Err(error) => {
                    warn!(lease = %self.lease.key, node = %self.lease.me, error = %format!("{error:#}"), "Cannot release the lease; another node takes over once it expires.");
                }
            }
        }
    }

    /// Whether the lease is still held.
    pub fn is_held(&self) -> bool {
        !self.lost.is_cancelled()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        // Without release: stop renewing; the lease expires after its ttl.
        self.renewer.abort();
        self.lost.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TTL: Duration = Duration::from_secs(5);

    fn held(revision: u64, holder: &str) -> Seen {
        Seen::Held { revision, holder: holder.to_owned() }
    }

    #[test]
    fn absent_is_created_released_is_claimed_own_is_reclaimed() {
        let now = Instant::now();
        let mut o = Observer::new("me", TTL);
        assert_eq!(o.step(now, &Seen::Absent), Step::Create);
        assert_eq!(o.step(now, &Seen::Released { revision: 4 }), Step::Claim { revision: 4 });
        assert_eq!(o.step(now, &held(9, "me")), Step::Claim { revision: 9 });
    }

    #[test]
    fn a_silent_holder_is_taken_over_after_the_ttl_on_our_clock() {
        let t0 = Instant::now();
        let mut o = Observer::new("me", TTL);
        assert_eq!(o.step(t0, &held(3, "other")), Step::Wait);
        assert_eq!(o.step(t0 + TTL - Duration::from_millis(1), &held(3, "other")), Step::Wait);
        assert_eq!(o.step(t0 + TTL, &held(3, "other")), Step::Claim { revision: 3 });
    }

    #[test]
    fn the_holder_stops_before_any_observer_can_claim() {
        // The holder's write starts at t0 and is stored at some point after; an observer
        // sees it no earlier than it was stored.
        let t0 = Instant::now();
        let holding = Holding::new(7, t0, TIMING.hold_for);
        let mut o = Observer::new("me", TIMING.ttl);
        assert_eq!(o.step(t0, &held(7, "other")), Step::Wait);
        let claim_at = t0 + TIMING.ttl;
        assert_eq!(o.step(claim_at, &held(7, "other")), Step::Claim { revision: 7 });
        assert!(!holding.valid(claim_at));
        assert!(TIMING.hold_for < TIMING.ttl && TIMING.renew_every < TIMING.hold_for);
        // Takeover of a dead holder: its last renewal, plus a poll to notice, plus the ttl.
        assert!(TIMING.renew_every + TIMING.poll_every * 2 + TIMING.ttl < Duration::from_secs(10));
    }

    proptest! {
        /// However reads of a renewing holder are spaced and delayed, an observer never
        /// claims while the holder is valid, and claims only a revision unchanged for a
        /// whole ttl of its own clock.
        #[test]
        fn never_claims_from_a_valid_holder(
            renew_gaps in proptest::collection::vec(1u64..6_000, 1..30),
            read_gaps in proptest::collection::vec(1u64..2_000, 1..200),
            store_delay in 0u64..500,
        ) {
            let t0 = Instant::now();
            let ms = Duration::from_millis;
            // The holder's renewals: (start, stored) with increasing revisions; it stops
            // being valid hold_for after a start unless the next one starts before that.
            let mut writes = Vec::new();
            let mut at = 0u64;
            for gap in &renew_gaps {
                writes.push((at, at + store_delay));
                at += gap;
            }
            let mut observer = Observer::new("me", TIMING.ttl);
            let mut now = 0u64;
            for gap in read_gaps {
                now += gap;
                // The newest write stored by `now`.
                let Some(index) = writes.iter().rposition(|(_, stored)| *stored <= now) else { continue };
                let revision = index as u64 + 1;
                let step = observer.step(t0 + ms(now), &held(revision, "holder"));
                // Was the holder still valid at `now`, judged by its own rule?
                let mut holding = Holding::new(1, t0 + ms(writes[0].0), TIMING.hold_for);
                for (i, (start, stored)) in writes.iter().enumerate().take(index + 1) {
                    if *stored <= now {
                        holding.renewed(t0 + ms(*start), i as u64 + 1);
                    }
                }
                if let Step::Claim { revision: claimed } = step {
                    prop_assert_eq!(claimed, revision);
                    prop_assert!(!holding.valid(t0 + ms(now)), "claimed revision {} at {} ms while the holder was valid", revision, now);
                }
            }
        }
    }
}
