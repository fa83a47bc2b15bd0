//! Several `sluice up` nodes on one 3-node NATS cluster (JetStream R3), for the tests that a
//! trigger produces each source message as exactly one event on N nodes: start them, find
//! the holder of a trigger's lease, SIGKILL one, wait for a takeover with a deadline, and
//! read what the trigger stored in `SLUICE_EVENTS`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use async_nats::jetstream;

use super::cluster::{chaos_jetstream, log_excerpt, Finished, NatsCluster};
use super::{stream_messages, Project, Up};

/// The longest a single-reader source may go unread after its holder died.
pub const TAKEOVER: Duration = Duration::from_secs(10);

/// A project whose bus is replicated on 3 nodes, with the function `worker` (example
/// `flaky`, echoing) subscribed to `topic` and chaining to `done`, so the test can see what
/// it handled through [`Finished`].
pub fn project_r3(topic: &str) -> Project {
    let project = Project::new();
    project.settings("[bus]\nreplicas = 3\n");
    project.function(
        "worker",
        "flaky",
        &format!(
            "subscribe = [{topic:?}]\non_success = \"done\"\ntimeout = \"5s\"\nconcurrency = 8\n\
             [retry]\nmax_attempts = 20\nbackoff = {{ initial = \"100ms\", factor = 2.0, max = \"1s\", jitter = true }}"
        ),
    );
    project
}

/// A 3-node NATS cluster and `sluice up` nodes on it.
pub struct Nodes {
    pub cluster: NatsCluster,
    pub ups: Vec<Up>,
    /// Whether each node still runs.
    pub alive: Vec<bool>,
    /// The pid of each node, also after it was killed.
    pub pids: Vec<u32>,
    pub js: jetstream::Context,
    pub client: async_nats::Client,
}

impl Nodes {
    /// Starts the NATS cluster and `count` nodes of `project` on it (JSON logs).
    pub async fn start(project: &Project, count: usize) -> Self {
        Self::start_with_env(project, count, &[]).await
    }

    /// [`Nodes::start`] with extra environment variables for the nodes.
    pub async fn start_with_env(project: &Project, count: usize, env: &[(&str, &str)]) -> Self {
        let cluster = NatsCluster::start(3).await;
        Self::on(cluster, project, count, env).await
    }

    /// `count` nodes of `project` on a cluster the test prepared.
    pub async fn on(cluster: NatsCluster, project: &Project, count: usize, env: &[(&str, &str)]) -> Self {
        let client = cluster.client().await;
        let js = chaos_jetstream(client.clone());
        let mut ups = Vec::new();
        for _ in 0..count {
            let mut vars = vec![("SLUICE_LOG_FORMAT", "json")];
            vars.extend_from_slice(env);
            ups.push(project.up_with_env(Some(&cluster.urls()), &vars));
        }
        let pids = ups.iter().map(Up::pid).collect();
        Self { cluster, alive: vec![true; count], ups, pids, js, client }
    }

    /// SIGKILLs node `index`; returns when it died.
    pub fn kill(&mut self, index: usize) -> Instant {
        assert!(self.alive[index], "node {index} was already killed");
        let at = Instant::now();
        self.ups[index].kill();
        self.alive[index] = false;
        at
    }

    /// The index of the node whose pid is in `holder` (`host:pid:random`).
    fn node_of(&self, holder: &str) -> Option<usize> {
        let pid: u32 = holder.split(':').nth(1)?.parse().ok()?;
        self.pids.iter().position(|p| *p == pid)
    }

    /// The node named in the lease of `trigger`, if any (it may be dead: the record stays
    /// until another node takes over).
    pub async fn lease_holder(&self, trigger: &str) -> Option<usize> {
        let kv = self.js.get_key_value("sluice_state").await.ok()?;
        let value = kv.get(format!("lease.{trigger}")).await.ok()??;
        let record: serde_json::Value = serde_json::from_slice(&value).ok()?;
        self.node_of(record["holder"].as_str()?)
    }

    /// Waits until a living node other than `not` holds the lease of `trigger`; fails when
    /// `limit` has passed since `since`, saying who held it. Returns the node and the time
    /// since `since`.
    pub async fn wait_holder(&self, trigger: &str, not: Option<usize>, since: Instant, limit: Duration, what: &str) -> (usize, Duration) {
        let started = since;
        loop {
            let holder = self.lease_holder(trigger).await;
            if let Some(index) = holder.filter(|i| Some(*i) != not && self.alive[*i]) {
                return (index, started.elapsed());
            }
            assert!(
                started.elapsed() < limit,
                "{what}: no living node held the lease of {trigger} within {limit:?} (record names node {holder:?}); logs:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Excerpts of every node's log, for failure messages.
    pub fn logs(&self) -> String {
        self.ups
            .iter()
            .enumerate()
            .map(|(i, u)| format!("--- node {i}{} ---\n{}", if self.alive[i] { "" } else { " (killed)" }, log_excerpt(&u.log(), 30)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The JSON log lines with `message` of every node, as `(node, fields)`.
    pub fn log_lines(&self, message: &str) -> Vec<(usize, serde_json::Value)> {
        self.ups.iter().enumerate().flat_map(|(i, u)| u.log_lines(message).into_iter().map(move |f| (i, f))).collect()
    }

    /// `(ce-id, data)` of every event stored on `sluice.events.<topic>`.
    pub async fn stored(&self, topic: &str) -> Vec<(String, serde_json::Value)> {
        let subject = format!("sluice.events.{topic}");
        stream_messages(&self.js, "SLUICE_EVENTS")
            .await
            .into_iter()
            .filter(|m| m.subject.as_str() == subject)
            .map(|m| {
                let id = m.headers.get("ce-id").map(|v| v.as_str().to_owned()).unwrap_or_default();
                (id, serde_json::from_slice(&m.payload).unwrap_or(serde_json::Value::Null))
            })
            .collect()
    }

    /// Waits until `topic` holds events for `expected` source keys (`key` maps an event's
    /// data to its source key), then checks that each key is exactly one stored event with
    /// its own id; returns the ids. Fails after `limit` naming the missing keys.
    pub async fn wait_exactly_once(
        &self,
        topic: &str,
        expected: &BTreeSet<String>,
        limit: Duration,
        key: impl Fn(&serde_json::Value) -> String,
    ) -> BTreeSet<String> {
        let started = Instant::now();
        let stored = loop {
            let stored = self.stored(topic).await;
            let keys: BTreeSet<String> = stored.iter().map(|(_, data)| key(data)).collect();
            let missing: Vec<&String> = expected.iter().filter(|k| !keys.contains(*k)).collect();
            if missing.is_empty() {
                break stored;
            }
            assert!(
                started.elapsed() < limit,
                "{} of {} source messages never became events within {limit:?}, e.g. {:?}; logs:\n{}",
                missing.len(),
                expected.len(),
                &missing[..missing.len().min(10)],
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let mut per_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (id, data) in &stored {
            per_key.entry(key(data)).or_default().push(id.clone());
        }
        let doubled: BTreeMap<&String, &Vec<String>> = per_key.iter().filter(|(_, ids)| ids.len() > 1).collect();
        assert!(doubled.is_empty(), "source messages stored more than once (key: ids): {doubled:?}");
        let unexpected: Vec<&String> = per_key.keys().filter(|k| !expected.contains(*k)).collect();
        assert!(unexpected.is_empty(), "events for no source message: {unexpected:?}");
        let ids: BTreeSet<String> = stored.iter().map(|(id, _)| id.clone()).collect();
        assert_eq!(ids.len(), stored.len(), "distinct ce-ids = stored events");
        assert_eq!(stored.len(), expected.len(), "one stored event per source message");
        ids
    }

    /// Waits until the function `worker` finished every event of `ids` (read from `done`);
    /// returns how many finished more than once (redeliveries after the kill).
    pub async fn wait_handled(&self, finished: &mut Finished, ids: &BTreeSet<String>, limit: Duration) -> usize {
        finished.wait_all(ids, limit, || self.logs()).await;
        ids.iter().filter(|id| finished.ids.get(*id).copied().unwrap_or(0) > 1).count()
    }
}
