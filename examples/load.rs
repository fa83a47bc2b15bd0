//! Throughput through a running `sluice up`: publishes N events to a topic (async publish,
//! acks awaited in windows) and waits for N results of one subscribed function.
//!
//! cargo run --release --example load -- nats://127.0.0.1:PORT greetings hello 10000

use std::time::Instant;

use futures::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let url = args.get(1).cloned().unwrap_or_else(|| "nats://127.0.0.1:4222".into());
    let topic = args.get(2).cloned().unwrap_or_else(|| "greetings".into());
    let function = args.get(3).cloned().unwrap_or_else(|| "hello".into());
    let count: usize = args.get(4).and_then(|n| n.parse().ok()).unwrap_or(10_000);

    let client = async_nats::connect(&url).await?;
    let js = async_nats::jetstream::new(client.clone());
    let mut results = client.subscribe(format!("sluice.results.{function}")).await?;
    client.flush().await?;

    let started = Instant::now();
    let consumer = tokio::spawn(async move {
        let mut n = 0;
        while n < count {
            if results.next().await.is_none() {
                break;
            }
            n += 1;
        }
        (n, Instant::now())
    });
    let mut acks = Vec::with_capacity(1024);
    for i in 0..count {
        let mut headers = async_nats::HeaderMap::new();
        let id = format!("load-{}-{i}", std::process::id());
        headers.insert("ce-specversion", "1.0");
        headers.insert("ce-id", id.as_str());
        headers.insert("ce-source", "load");
        headers.insert("ce-type", "load");
        headers.insert("content-type", "application/json");
        headers.insert("Nats-Msg-Id", id.as_str());
        acks.push(js.publish_with_headers(format!("sluice.events.{topic}"), headers, r#"{"name":"load"}"#.into()).await?);
        if acks.len() == 1024 {
            for ack in acks.drain(..) {
                ack.await?;
            }
        }
    }
    for ack in acks.drain(..) {
        ack.await?;
    }
    let published = started.elapsed();
    let (received, finished) = consumer.await?;
    let total = finished - started;
    println!(
        "published {count} in {:.3}s ({:.0}/s); {received} results in {:.3}s: {:.0} events/s end to end",
        published.as_secs_f64(),
        count as f64 / published.as_secs_f64(),
        total.as_secs_f64(),
        received as f64 / total.as_secs_f64()
    );
    Ok(())
}
