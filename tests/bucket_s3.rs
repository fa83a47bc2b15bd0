//! The bucket trigger against a real S3-compatible store (SeaweedFS, signed requests):
//! objects put and deleted with an S3 client fire S3 records with the right bucket, key,
//! size and eTag; objects already there at the first start are the baseline; a restart
//! fires only what changed while down.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::s3::S3Server;
use common::*;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, PutPayload};

/// (eventName, key, size, eTag) of every bucket event in SLUICE_EVENTS, in order.
async fn records(js: &async_nats::jetstream::Context) -> Vec<(String, String, Option<u64>, Option<String>)> {
    stream_messages(js, "SLUICE_EVENTS")
        .await
        .into_iter()
        .map(|m| {
            assert_eq!(m.subject.as_str(), "sluice.events.store.changes");
            let data: serde_json::Value = serde_json::from_slice(&m.payload).unwrap();
            let record = &data["Records"][0];
            assert_eq!(record["eventSource"], "aws:s3");
            assert_eq!(record["awsRegion"], "us-east-1");
            assert_eq!(record["s3"]["bucket"]["name"], "photos");
            assert_eq!(record["s3"]["bucket"]["arn"], "arn:aws:s3:::photos");
            (
                record["eventName"].as_str().unwrap().to_owned(),
                record["s3"]["object"]["key"].as_str().unwrap().to_owned(),
                record["s3"]["object"]["size"].as_u64(),
                record["s3"]["object"]["eTag"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

/// Waits for `count` events; on a timeout shows the log of `sluice up`.
async fn wait_records(js: &async_nats::jetstream::Context, count: u64, up: &Up) {
    for _ in 0..300 {
        let stream = js.get_stream("SLUICE_EVENTS").await;
        if let Ok(mut stream) = stream {
            if stream.info().await.unwrap().state.messages >= count {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("fewer than {count} events after 30s; sluice up logged:\n{}", up.log());
}

async fn put(store: &object_store::aws::AmazonS3, key: &str, body: &'static str) -> String {
    let result = store.put(&ObjectPath::from(key), PutPayload::from_static(body.as_bytes())).await.unwrap();
    result.e_tag.unwrap().trim_matches('"').to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_puts_and_deletes_fire_s3_records() {
    let s3 = S3Server::start();
    s3.create_bucket("photos").await;
    let store = s3.client("photos");
    let nats = NatsServer::start();
    let js = async_nats::jetstream::new(nats.client().await);

    // Credentials come from the environment variables the trigger names.
    let env = [("PHOTOS_KEY_ID", S3Server::ACCESS_KEY), ("PHOTOS_SECRET", S3Server::SECRET_KEY)];
    let project = Project::new();
    project.trigger(
        "photos",
        format!(
            "kind = \"bucket\"\nbucket = \"photos\"\nendpoint = \"{}\"\nevents = [\"created\", \"deleted\"]\n\
             suffix = \".jpg\"\npoll_interval = \"200ms\"\ntopic = \"store.changes\"\n\
             [credentials]\naccess_key_id_env = \"PHOTOS_KEY_ID\"\nsecret_access_key_env = \"PHOTOS_SECRET\"\n",
            s3.endpoint()
        ),
    );

    // Already there at the first start: the baseline, not news.
    put(&store, "old.jpg", "from before").await;
    let mut up = project.up_with_env(Some(&nats.url()), &env);
    up.wait_log("First listing taken as the baseline", Duration::from_secs(30));
    assert!(up.log().contains("objects=1"), "the baseline holds old.jpg: {}", up.log());

    let etag_a = put(&store, "albums/summer/beach day.jpg", "sand and sea").await;
    put(&store, "notes.txt", "not a jpg").await;
    wait_records(&js, 1, &up).await;
    // The baseline is recorded in sluice_state (key: base64url of "old.jpg"); a deleted object
    // is forgotten there, or every later restart would fire its delete again.
    let state = js.get_key_value("sluice_state").await.unwrap();
    let old_entry = "bucket.photos.o.b2xkLmpwZw";
    assert!(state.get(old_entry).await.unwrap().is_some(), "old.jpg recorded in sluice_state");
    store.delete(&ObjectPath::from("old.jpg")).await.unwrap();
    wait_records(&js, 2, &up).await;
    let started = Instant::now();
    while state.get(old_entry).await.unwrap().is_some() {
        assert!(started.elapsed() < Duration::from_secs(10), "the deleted old.jpg is still recorded in sluice_state");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let etag_b = put(&store, "albums/summer/beach day.jpg", "sand, sea and a new version").await;
    wait_records(&js, 3, &up).await;

    // Changes while down fire at the next start; unchanged objects stay quiet.
    up.kill();
    let etag_c = put(&store, "while-down.jpg", "dropped while down").await;
    store.delete(&ObjectPath::from("albums/summer/beach day.jpg")).await.unwrap();
    let up = project.up_with_env(Some(&nats.url()), &env);
    wait_records(&js, 5, &up).await;
    // A short quiet period of five listings (poll_interval 200ms): an unchanged object fired
    // again after the restart would arrive within it and fail the count below.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let key = "albums/summer/beach+day.jpg".to_owned();
    let records = records(&js).await;
    assert_eq!(records.len(), 5, "{records:#?}");
    assert_eq!(records[0], ("ObjectCreated:Put".into(), key.clone(), Some(12), Some(etag_a.clone())));
    assert_eq!(records[1], ("ObjectRemoved:Delete".into(), "old.jpg".into(), None, None));
    assert_eq!(records[2], ("ObjectCreated:Put".into(), key.clone(), Some(27), Some(etag_b.clone())));
    assert_ne!(etag_a, etag_b);
    let mut after_restart = records[3..].to_vec();
    after_restart.sort();
    assert_eq!(
        after_restart,
        vec![
            ("ObjectCreated:Put".into(), "while-down.jpg".into(), Some(18), Some(etag_c)),
            ("ObjectRemoved:Delete".into(), key, None, None),
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_credentials_are_reported_with_the_trigger_name() {
    let s3 = S3Server::start();
    s3.create_bucket("locked").await;
    let nats = NatsServer::start();
    let project = Project::new();
    project.trigger(
        "locked",
        format!(
            "kind = \"bucket\"\nbucket = \"locked\"\nendpoint = \"{}\"\npoll_interval = \"200ms\"\ntopic = \"t\"\n\
             [credentials]\naccess_key_id_env = \"LOCKED_KEY_ID\"\nsecret_access_key_env = \"LOCKED_SECRET\"\n",
            s3.endpoint()
        ),
    );
    let up = project.up_with_env(Some(&nats.url()), &[("LOCKED_KEY_ID", S3Server::ACCESS_KEY), ("LOCKED_SECRET", "not-the-secret")]);
    let mut log = String::new();
    for _ in 0..100 {
        log = up.log();
        if log.contains("Cannot list the S3 bucket") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(log.contains("Cannot list the S3 bucket"), "{log}");
    assert!(log.contains("trigger=locked"), "{log}");
}
