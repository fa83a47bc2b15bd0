//! Event encode (attributes → NATS headers) and decode (stored message → event).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // benchmarks fail loudly

use bytes::Bytes;
use chrono::Utc;
use criterion::{criterion_group, criterion_main, Criterion};
use sluice::event::Event;

fn codec(c: &mut Criterion) {
    let mut event = Event::new("bench", "orders.created", Bytes::from_static(br#"{"order":42,"items":[1,2,3]}"#));
    event.set_extension("tenant", "acme");
    let headers = event.to_headers();
    let mut group = c.benchmark_group("event");
    group.bench_function("encode", |b| b.iter(|| event.to_headers()));
    group.bench_function("decode", |b| {
        b.iter(|| Event::from_message(Some(&headers), event.data.clone(), "sluice.events.orders.created", "SLUICE_EVENTS", 1, Utc::now()))
    });
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
