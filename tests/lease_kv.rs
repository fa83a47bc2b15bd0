//! The lease of `src/bus/lease.rs` against a real nats-server's KV: of three contenders
//! exactly one holds it; nobody takes it while the holder renews (longer than the ttl); a
//! holder that stops renewing (a dead node) is replaced within 10 s; a holder whose key
//! another node overwrote loses it at once; a released lease is taken at the next read.
//! Guards the takeover rules: never take over, or take over a live holder.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, kv};
use common::*;
use sluice::bus::lease::{Held, Lease, TIMING};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

async fn store(nats: &NatsServer) -> kv::Store {
    let js = jetstream::new(nats.client().await);
    js.create_key_value(kv::Config { bucket: "sluice_state".into(), history: 1, ..Default::default() }).await.unwrap()
}

/// Starts a contender that acquires once and reports its name and lease.
fn contend(store: &kv::Store, name: &str, shutdown: &CancellationToken, won: &mpsc::UnboundedSender<(String, Held)>) {
    let lease = Lease::with(store.clone(), "lease.t", "t", name, TIMING);
    let (name, shutdown, won) = (name.to_owned(), shutdown.clone(), won.clone());
    tokio::spawn(async move {
        if let Some(held) = lease.acquire(&shutdown).await {
            let _ = won.send((name, held));
        }
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn one_holder_at_a_time_and_a_takeover_within_ten_seconds() {
    let nats = NatsServer::start();
    let store = store(&nats).await;
    let shutdown = CancellationToken::new();
    let (won, mut winners) = mpsc::unbounded_channel();
    for name in ["a", "b", "c"] {
        contend(&store, name, &shutdown, &won);
    }

    let (first, held) = tokio::time::timeout(Duration::from_secs(5), winners.recv()).await.expect("a contender acquires the free lease").unwrap();
    // Longer than the ttl: the holder renews, so nobody else may take it.
    let quiet = TIMING.ttl + Duration::from_secs(3);
    if let Ok(Some((second, _))) = tokio::time::timeout(quiet, winners.recv()).await {
        panic!("{second} acquired the lease while {first} held and renewed it");
    }
    assert!(held.is_held(), "{first} still holds the lease");

    // The holder dies: no release, no more renewals.
    let died = Instant::now();
    drop(held);
    let (second, held) = match tokio::time::timeout(Duration::from_secs(10), winners.recv()).await {
        Ok(Some(won)) => won,
        _ => panic!("no contender took over within 10 s of {first} stopping renewing"),
    };
    let takeover = died.elapsed();
    assert_ne!(second, first);
    assert!(takeover + Duration::from_millis(100) >= TIMING.ttl - TIMING.renew_every, "{second} took over after {takeover:?}, before the ttl");
    // The third still waits for the new holder.
    if let Ok(Some((third, _))) = tokio::time::timeout(TIMING.ttl + Duration::from_secs(1), winners.recv()).await {
        panic!("{third} acquired the lease while {second} held it");
    }

    // Released: the last contender takes it at its next read.
    let released = Instant::now();
    held.release().await;
    let (third, held) = match tokio::time::timeout(Duration::from_secs(3), winners.recv()).await {
        Ok(Some(won)) => won,
        _ => panic!("nobody took a released lease within 3 s"),
    };
    assert!(third != first && third != second, "{third}");
    println!("{first} held, {second} took over after {takeover:?}, {third} took the released lease after {:?}", released.elapsed());

    // Another node overwrites the key: the holder learns at its next renewal.
    store.put("lease.t", "{\"holder\":\"intruder\",\"since\":\"\"}".into()).await.unwrap();
    let lost = tokio::time::timeout(TIMING.renew_every * 3, held.lost.cancelled()).await;
    assert!(lost.is_ok(), "{third} did not notice within {:?} that another node took its lease", TIMING.renew_every * 3);
    shutdown.cancel();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_holder_that_cannot_renew_stops_before_anyone_may_take_over() {
    let mut nats = NatsServer::start();
    let store = store(&nats).await;
    let shutdown = CancellationToken::new();
    let lease = Lease::with(store.clone(), "lease.t", "t", "a", TIMING);
    let held = tokio::time::timeout(Duration::from_secs(5), lease.acquire(&shutdown)).await.unwrap().unwrap();
    let acquired = Instant::now();
    // NATS goes away: no renewal can succeed, and the holder must give up by itself.
    nats.stop();
    let lost = tokio::time::timeout(TIMING.ttl, held.lost.cancelled()).await;
    assert!(lost.is_ok(), "the holder still believed it held the lease {:?} after NATS went away", TIMING.ttl);
    assert!(acquired.elapsed() < TIMING.ttl, "it gave up before an observer could take over");
    shutdown.cancel();
}
