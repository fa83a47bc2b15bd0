//! Fixtures for the chaos tests: nats-server nodes started from a config file (alone or as a
//! 3-node JetStream cluster) that can be killed with SIGKILL and restarted on their store, a
//! publisher that retries until JetStream acknowledges every event, and an observer that
//! reads which events a function finished from its `on_success` topic (stored in
//! `SLUICE_EVENTS`, so it survives disconnections that lose core NATS results).

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt as _;

use super::nats_server_binary;

/// A free TCP port on `host`.
pub fn free_port_on(host: &str) -> u16 {
    TcpListener::bind((host, 0)).unwrap().local_addr().unwrap().port()
}

/// One nats-server with JetStream, run from a config file in its own temporary folder
/// (config, log, store); SIGKILLed on drop and when the test process dies.
pub struct NatsNode {
    pub name: String,
    pub host: String,
    pub port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsNode {
    /// A standalone server listening on `host` (an address of this machine).
    pub fn standalone(name: &str, host: &str) -> Self {
        let mut node = Self::configured(name, host, free_port_on(host), "");
        node.spawn();
        node
    }

    /// Writes the node's config; `extra` is appended (e.g. a `cluster { }` block).
    fn configured(name: &str, host: &str, port: u16, extra: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "server_name: {name:?}\nlisten: \"{host}:{port}\"\nlogfile: {:?}\njetstream {{\n  store_dir: {:?}\n}}\n{extra}",
            dir.path().join("nats.log").display().to_string(),
            dir.path().join("store").display().to_string(),
        );
        std::fs::write(dir.path().join("nats.conf"), config).unwrap();
        Self { name: name.to_owned(), host: host.to_owned(), port, dir, child: None }
    }

    /// A node run from a whole config file, which `config` writes given the node's own
    /// temporary folder (for its store and its log, `nats.log`). Not started yet: see
    /// [`NatsNode::spawn`].
    pub fn from_config(name: &str, host: &str, port: u16, config: impl FnOnce(&std::path::Path) -> String) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let text = config(dir.path());
        std::fs::write(dir.path().join("nats.conf"), text).unwrap();
        Self { name: name.to_owned(), host: host.to_owned(), port, dir, child: None }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("nats.conf")
    }

    /// Starts the server (again, after [`NatsNode::kill`]) on its port and store, and waits
    /// until it accepts connections.
    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.name);
        let mut command = Command::new(nats_server_binary());
        command.arg("-c").arg(self.config_path()).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt as _;
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command.spawn().expect("nats-server runs (scripts/setup.sh installs it; or set SLUICE_NATS_SERVER)");
        self.child = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect((self.host.as_str(), self.port)).is_err() {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("nats-server {} exited with {status}; its log:\n{}", self.name, self.log());
            }
            assert!(started.elapsed() < Duration::from_secs(10), "nats-server {} did not start; its log:\n{}", self.name, self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (kill -9), and reaps the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    pub fn url(&self) -> String {
        format!("nats://{}:{}", self.host, self.port)
    }

    /// The server's log file.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("nats.log")).unwrap_or_default()
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A JetStream cluster of nodes `n1`, `n2`, ... on loopback, each with its own client port,
/// cluster port and store.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream has a meta leader and every peer (an
    /// R`size` stream can be created).
    pub async fn start(size: usize) -> Self {
        // A port found free can be taken by another test's server before ours binds it: a
        // node that dies of it is no cluster failure, so the cluster starts again on others.
        const ATTEMPTS: usize = 5;
        for attempt in 1..=ATTEMPTS {
            let cluster = Self::spawn_all(size);
            match cluster.ready(Duration::from_secs(60)).await {
                Ok(()) => return cluster,
                Err(Failure::NodeDied(node)) if attempt < ATTEMPTS => {
                    eprintln!("node {node} of the NATS cluster died while starting (port taken?); starting the cluster again on other ports");
                }
                Err(failure) => panic!("the NATS cluster did not form ({failure:?}); logs:\n{}", cluster.logs()),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    fn spawn_all(size: usize) -> Self {
        let host = "127.0.0.1";
        let cluster_ports: Vec<u16> = (0..size).map(|_| free_port_on(host)).collect();
        let mut nodes = Vec::new();
        for (i, own) in cluster_ports.iter().enumerate() {
            let routes: Vec<String> = cluster_ports
                .iter()
                .filter(|port| *port != own)
                .map(|port| format!("\"nats-route://{host}:{port}\""))
                .collect();
            let block = format!(
                "cluster {{\n  name: \"sluice-chaos\"\n  listen: \"{host}:{own}\"\n  routes: [{}]\n}}\n",
                routes.join(", ")
            );
            nodes.push(NatsNode::configured(&format!("n{}", i + 1), host, free_port_on(host), &block));
        }
        for node in &mut nodes {
            node.spawn();
        }
        Self { nodes }
    }

    /// Every node's URL.
    pub fn url_list(&self) -> Vec<String> {
        self.nodes.iter().map(NatsNode::url).collect()
    }

    /// Every node's URL, comma-separated (the `--nats` seed list).
    pub fn urls(&self) -> String {
        self.url_list().join(",")
    }

    /// A client that knows every node, so it outlives the loss of any one.
    pub async fn client(&self) -> async_nats::Client {
        chaos_client(self.url_list()).await
    }

    /// The index of the node named `name`.
    pub fn node_index(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .unwrap_or_else(|| panic!("no node named {name:?} in the cluster"))
    }

    /// The logs of every node, for failure messages.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("--- {} ---\n{}", n.name, tail(&n.log(), 40))).collect::<Vec<_>>().join("\n")
    }

    /// Waits until a replicated stream across all nodes can be created (meta leader elected,
    /// every peer known), then deletes it.
    pub async fn wait_ready(&self, limit: Duration) {
        if let Err(failure) = self.ready(limit).await {
            panic!("the NATS cluster did not form ({failure:?}); logs:\n{}", self.logs());
        }
    }

    async fn ready(&self, limit: Duration) -> Result<(), Failure> {
        let started = Instant::now();
        let client = self.client().await;
        // A request sent before the JetStream API is up gets no answer: do not wait long.
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_millis(500));
        let config = stream::Config {
            name: "CHAOS_READY".into(),
            subjects: vec!["chaos.ready".into()],
            storage: stream::StorageType::Memory,
            num_replicas: self.nodes.len(),
            ..Default::default()
        };
        loop {
            let last_error = match js.create_stream(config.clone()).await {
                Ok(mut created) => {
                    let peers = created.info().await.ok().and_then(|i| i.cluster.clone()).map_or(0, |c| c.replicas.len() + 1);
                    if peers == self.nodes.len() {
                        js.delete_stream("CHAOS_READY").await.unwrap();
                        return Ok(());
                    }
                    format!("stream placed on {peers} peers")
                }
                Err(error) => error.to_string(),
            };
            if let Some(node) = self.nodes.iter().find(|n| n.log().contains("[FTL]")) {
                return Err(Failure::NodeDied(node.name.clone()));
            }
            if started.elapsed() > limit {
                return Err(Failure::NotFormed(last_error));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

/// Why a cluster is not ready.
#[derive(Debug)]
enum Failure {
    /// A node exited with a fatal error (its log has `[FTL]`).
    NodeDied(String),
    /// No R-all stream could be created in time; the last error.
    NotFormed(String),
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A test client that keeps reconnecting (to any of `urls`) through outages.
pub async fn chaos_client(urls: Vec<String>) -> async_nats::Client {
    let started = Instant::now();
    loop {
        let connected = async_nats::ConnectOptions::new()
            .name("sluice-chaos-test")
            .connection_timeout(Duration::from_secs(2))
            .ping_interval(Duration::from_secs(2))
            .max_reconnects(None)
            .connect(urls.clone())
            .await;
        match connected {
            Ok(client) => return client,
            Err(error) => {
                assert!(started.elapsed() < Duration::from_secs(30), "cannot connect to {urls:?}: {error}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A JetStream context whose acknowledgements time out quickly, so publishers retry soon
/// after a fault.
pub fn chaos_jetstream(client: async_nats::Client) -> jetstream::Context {
    let mut js = jetstream::new(client);
    js.set_timeout(Duration::from_secs(2));
    js
}

/// Info of `stream`, retried through a fault (leader elections, reconnects) until `limit`.
pub async fn stream_info(js: &jetstream::Context, name: &str, limit: Duration) -> stream::Info {
    let started = Instant::now();
    loop {
        let info = match js.get_stream(name).await {
            Ok(mut s) => s.info().await.cloned().map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match info {
            Ok(info) => return info,
            Err(error) => assert!(started.elapsed() < limit, "no info of stream {name} within {limit:?}: {error}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a [`Load`] did.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Event ids JetStream acknowledged, in publishing order.
    pub accepted: Vec<String>,
    /// Publishes that failed (no ack in time, no server, no leader) and were sent again
    /// with the same id.
    pub retries: u64,
}

/// Publishes `count` small events with ids `{prefix}-{i}` to a subject, about `per_second` of
/// them, one at a time; each is sent again with the same id (deduplicated by JetStream)
/// until it is acknowledged, so every id in the report was accepted.
pub struct Load {
    /// How many events were accepted so far.
    pub progress: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<LoadReport>,
}

impl Load {
    pub fn start(js: jetstream::Context, subject: &str, prefix: &str, count: usize, per_second: u32) -> Self {
        let progress = Arc::new(AtomicUsize::new(0));
        let counter = progress.clone();
        let subject = subject.to_owned();
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut report = LoadReport::default();
            let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(per_second.max(1))));
            for i in 0..count {
                pace.tick().await;
                let id = format!("{prefix}-{i}");
                report.retries += publish_until_acked(&js, &subject, &id, Duration::from_secs(120)).await;
                report.accepted.push(id);
                counter.fetch_add(1, Ordering::SeqCst);
            }
            report
        });
        Self { progress, task }
    }

    pub fn accepted(&self) -> usize {
        self.progress.load(Ordering::SeqCst)
    }

    /// Waits until at least `count` events were accepted.
    pub async fn wait_accepted(&self, count: usize, limit: Duration) {
        let started = Instant::now();
        while self.accepted() < count {
            assert!(started.elapsed() < limit, "only {} events accepted after {limit:?}", self.accepted());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits for the publisher to finish.
    pub async fn finish(self, limit: Duration) -> LoadReport {
        match tokio::time::timeout(limit, self.task).await {
            Ok(report) => report.unwrap(),
            Err(_) => panic!("the publisher did not finish within {limit:?}"),
        }
    }
}

/// Publishes one CloudEvents-headed event with id `id` and waits for JetStream's ack,
/// sending it again (same `Nats-Msg-Id`) after each failure; returns how many retries it
/// took. Panics after `limit`.
pub async fn publish_until_acked(js: &jetstream::Context, subject: &str, id: &str, limit: Duration) -> u64 {
    let started = Instant::now();
    let mut retries = 0;
    loop {
        let outcome = match js.publish_with_headers(subject.to_owned(), super::event_headers(id), "{}".into()).await {
            Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
            Err(error) => Err(error.to_string()),
        };
        match outcome {
            Ok(()) => return retries,
            Err(error) => {
                assert!(started.elapsed() < limit, "event {id} not accepted within {limit:?}: {error}");
                retries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Reads the events a function published to its `on_success` topic (ce-id
/// `<cause>:<function>`, header `sluice-caused-by`), through a durable consumer of the
/// test's own, and records which causing events were finished. Tolerates faults: a failed
/// fetch is tried again, an unacked message comes back.
pub struct Finished {
    consumer: consumer::PullConsumer,
    /// Causing event id → how many chained events were read for it (more than one only if
    /// a chained publish outlived the duplicate window, or the observer's consumer
    /// redelivered).
    pub ids: BTreeMap<String, u32>,
    /// Every chained event read: its causing event id and its body (the function's answer).
    pub bodies: Vec<(String, bytes::Bytes)>,
}

impl Finished {
    /// Creates the observer on `topic` (the streams must exist: call after `sluice up`).
    pub async fn observe(js: &jetstream::Context, topic: &str) -> Self {
        let stream = js.get_stream("SLUICE_EVENTS").await.unwrap();
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some("chaos_observer".into()),
                filter_subject: format!("sluice.events.{topic}"),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_secs(5),
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .unwrap();
        Self { consumer, ids: BTreeMap::new(), bodies: Vec::new() }
    }

    /// Reads what is available now (at most about half a second).
    pub async fn poll(&mut self) {
        let Ok(mut batch) = self.consumer.fetch().max_messages(1000).expires(Duration::from_millis(500)).messages().await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            return;
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(2);
        while let Ok(Some(Ok(message))) = tokio::time::timeout_at(deadline, batch.next()).await {
            let headers = message.headers.as_ref();
            let cause = headers
                .and_then(|h| h.get("sluice-caused-by"))
                .map(|v| v.as_str().to_owned())
                .or_else(|| {
                    let id = headers.and_then(|h| h.get("ce-id"))?.as_str();
                    id.rsplit_once(':').map(|(cause, _)| cause.to_owned())
                })
                .unwrap_or_default();
            *self.ids.entry(cause.clone()).or_default() += 1;
            self.bodies.push((cause, message.payload.clone()));
            let _ = message.ack().await;
        }
    }

    /// Polls until every id in `expected` was finished; panics after `limit` naming the
    /// missing ones (`context` adds what the failure message should show, e.g. a log).
    pub async fn wait_all(&mut self, expected: &BTreeSet<String>, limit: Duration, context: impl Fn() -> String) {
        let started = Instant::now();
        loop {
            let missing: Vec<&String> = expected.iter().filter(|id| !self.ids.contains_key(*id)).collect();
            if missing.is_empty() {
                return;
            }
            if started.elapsed() > limit {
                panic!(
                    "{} of {} accepted events never finished within {limit:?}, e.g. {:?}\n{}",
                    missing.len(),
                    expected.len(),
                    &missing[..missing.len().min(10)],
                    context()
                );
            }
            self.poll().await;
        }
    }
}

/// Results (`sluice.results.<function>`) grouped by event id: the attempts that produced
/// each; the ids with more than one result are the duplicates.
pub fn attempts_by_id(received: &[(String, serde_json::Value)]) -> BTreeMap<String, Vec<u64>> {
    let mut by_id: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (id, body) in received {
        by_id.entry(id.clone()).or_default().push(body["attempt"].as_u64().unwrap_or(0));
    }
    by_id
}

/// The duplicates among `received`, each with its attempts, for printing.
pub fn duplicates(received: &[(String, serde_json::Value)]) -> BTreeMap<String, Vec<u64>> {
    attempts_by_id(received).into_iter().filter(|(_, attempts)| attempts.len() > 1).collect()
}

/// The last `lines` lines of a `sluice up` log without the per-invocation lines, for
/// failure messages.
pub fn log_excerpt(log: &str, lines: usize) -> String {
    let notable: Vec<&str> = log.lines().filter(|l| !l.contains("Invocation succeeded.")).collect();
    notable[notable.len().saturating_sub(lines)..].join("\n")
}

/// The value of `field=` on the first log line that contains `message` (compact format).
pub fn log_field(log: &str, message: &str, field: &str) -> Option<String> {
    let line = log.lines().find(|l| l.contains(message))?;
    let start = line.find(&format!("{field}="))? + field.len() + 1;
    Some(line[start..].split_whitespace().next().unwrap_or_default().trim_matches('"').to_owned())
}
