//! An S3 bucket trigger on 3 `sluice up` nodes over a 3-node NATS cluster (R3): only the
//! lease holder lists; SIGKILLing it while objects keep arriving hands the listing to
//! another node within 10 s, which continues from the state the holder left in
//! `sluice_state`: every object put becomes exactly one stored event, and the function
//! handles each (the taker publishes again at most the object in flight at the kill).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::cluster::Finished;
use common::nodes::*;
use common::s3::S3Server;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore as _, PutPayload};

const OBJECTS: usize = 80;

fn key_of(data: &serde_json::Value) -> String {
    data["Records"][0]["s3"]["object"]["key"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_listing_moves_to_another_node_and_loses_nothing() {
    let started = Instant::now();
    let s3 = S3Server::start();
    s3.create_bucket("photos").await;
    let store = s3.client("photos");
    let project = project_r3("photos");
    project.trigger(
        "photos",
        format!(
            "kind = \"bucket\"\nbucket = \"photos\"\nendpoint = \"{}\"\nexisting = \"fire\"\npoll_interval = \"200ms\"\ntopic = \"photos\"\n\
             [credentials]\naccess_key_id_env = \"PHOTOS_KEY_ID\"\nsecret_access_key_env = \"PHOTOS_SECRET\"\n",
            s3.endpoint()
        ),
    );
    let env = [("PHOTOS_KEY_ID", S3Server::ACCESS_KEY), ("PHOTOS_SECRET", S3Server::SECRET_KEY)];
    let mut nodes = Nodes::start_with_env(&project, 3, &env).await;
    let mut finished = Finished::observe(&nodes.js, "done").await;
    let put = |key: String| {
        let store = store.clone();
        async move { store.put(&ObjectPath::from(key), PutPayload::from(format!("body of {}", OBJECTS))).await.unwrap() }
    };
    let keys: Vec<String> = (0..OBJECTS).map(|i| format!("in/{i:03}.jpg")).collect();
    for key in &keys[..OBJECTS / 2] {
        put(key.clone()).await;
    }
    // Once some fired, kill the holder while the rest arrive.
    let deadline = Instant::now() + Duration::from_secs(30);
    while nodes.stored("photos").await.len() < OBJECTS / 4 {
        assert!(Instant::now() < deadline, "the holder fired nothing; logs:\n{}", nodes.logs());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One node lists, and it is the one the lease names.
    let listers: BTreeSet<usize> = nodes.log_lines("Polling the S3 bucket.").into_iter().map(|(i, _)| i).collect();
    assert_eq!(listers.len(), 1, "one node lists the bucket, not {listers:?}; logs:\n{}", nodes.logs());
    let (holder, _) = nodes.wait_holder("photos", None, Instant::now(), Duration::from_secs(5), "while listing").await;
    assert_eq!(listers, BTreeSet::from([holder]), "only the lease holder lists");
    let killed = nodes.kill(holder);
    for key in &keys[OBJECTS / 2..] {
        put(key.clone()).await;
    }
    let (taker, takeover) = nodes.wait_holder("photos", Some(holder), killed, TAKEOVER, "after the holder was killed").await;

    let expected: BTreeSet<String> = keys.iter().cloned().collect();
    let ids = nodes.wait_exactly_once("photos", &expected, Duration::from_secs(60), key_of).await;
    let redelivered = nodes.wait_handled(&mut finished, &ids, Duration::from_secs(60)).await;
    // The taker listed, nobody else did, and it continued from the holder's state: it
    // published again at most what the holder published but had not yet recorded.
    let listers: BTreeSet<usize> = nodes.log_lines("Polling the S3 bucket.").into_iter().map(|(i, _)| i).collect();
    assert_eq!(listers, BTreeSet::from([holder, taker]), "only the holder, then the taker, list");
    let again: Vec<String> = nodes
        .ups[taker]
        .log_lines("Object change published.")
        .into_iter()
        .filter(|f| f["duplicate"].as_bool() == Some(true))
        .map(|f| f["key"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(again.len() <= 2, "the taker published again {} objects the holder had fired and recorded: {again:?}", again.len());
    println!(
        "{OBJECTS} objects, {} events; node {holder} killed, node {taker} took the lease after {:.1} s; \
         {redelivered} handled more than once; test took {:.1} s",
        ids.len(),
        takeover.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}
