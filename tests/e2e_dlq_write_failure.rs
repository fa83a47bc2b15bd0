//! A dead letter that cannot be written keeps the event pending, and the redelivery that
//! finally writes it carries the real cause of the failure, not `lost`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn the_real_cause_survives_a_failed_dead_letter_write() {
    let nats = NatsServer::start();
    let project = Project::new();
    project.function("worker", "flaky", "subscribe = [\"jobs\"]\ntimeout = \"1s\"\nenv = { FLAKY_FAIL = \"1\" }\n[retry]\nmax_attempts = 1");
    let up = project.up(Some(&nats.url()));
    let client = nats.client().await;
    let js = jetstream::new(client.clone());

    // No dead-letter stream: the write is refused.
    js.delete_stream("SLUICE_DLQ").await.unwrap();
    publish_event(&js, "sluice.events.jobs", "doomed-1", "{}").await.await.unwrap();
    up.wait_log("Cannot write the dead letter", Duration::from_secs(30));
    assert_eq!(consumer_backlog(&js, "worker").await.1, 1, "the event stays pending");

    js.create_stream(stream::Config { name: "SLUICE_DLQ".into(), subjects: vec!["sluice.dlq.>".into()], ..Default::default() })
        .await
        .unwrap();
    wait_stream_count(&js, "SLUICE_DLQ", 1, Duration::from_secs(60)).await;
    let dead = stream_messages(&js, "SLUICE_DLQ").await;
    assert_eq!(header(&dead[0], "sluice-error-kind"), Some("error"), "{:?}", dead[0].headers);
    assert!(header(&dead[0], "sluice-error").unwrap().contains("status 1"), "{:?}", dead[0].headers);
    assert_eq!(header(&dead[0], "sluice-attempts"), Some("1"));
    wait_idle(&js, "worker", Duration::from_secs(30)).await;
}
