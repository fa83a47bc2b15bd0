//! `[bus] replicas` against a real 3-node NATS cluster: 3 is accepted and every stream, KV
//! bucket and object store `sluice up` and `sluice deploy` create is R3; 5 is refused at
//! start with the cluster's size named, before anything is created. Guards the count of
//! the cluster's servers (read from the server's INFO) against real servers, not only
//! hand-made INFO.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::Duration;

use common::cluster::*;
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn replicas_follow_the_cluster_size() {
    let cluster = NatsCluster::start(3).await;
    let urls = cluster.urls();

    let too_many = Project::new();
    too_many.settings("[bus]\nreplicas = 5\n");
    let out = too_many.sluice(&["--nats", &urls, "up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[bus] replicas = 5") && stderr.contains("has 3 JetStream server(s)"), "{stderr}");

    let project = Project::new();
    project.settings("[bus]\nreplicas = 3\n");
    std::fs::create_dir_all(project.path().join("functions/f")).unwrap();
    std::fs::copy(example_module("hello"), project.path().join("functions/f/f.wasm")).unwrap();
    std::fs::write(project.path().join("functions/f/function.toml"), "name = \"f\"\nruntime = \"wasm\"\nmodule = \"f.wasm\"\n").unwrap();
    let deployed = project.sluice(&["--nats", &urls, "deploy"]);
    assert!(deployed.status.success(), "{}", String::from_utf8_lossy(&deployed.stderr));
    let mut up = project.up(Some(&urls));
    let js = chaos_jetstream(cluster.client().await);
    for stream in ["SLUICE_EVENTS", "SLUICE_DLQ", "SLUICE_LOGS", "KV_sluice_state", "KV_sluice_functions", "OBJ_sluice_artifacts", "OBJ_sluice_payloads"] {
        let info = stream_info(&js, stream, Duration::from_secs(30)).await;
        assert_eq!(info.config.num_replicas, 3, "{stream}");
    }
    assert!(up.terminate().success(), "{}", up.log());
}
