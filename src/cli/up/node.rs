//! What one `sluice up` node runs, and how it changes while it runs: functions (dispatcher
//! and synchronous server per function, the `workers` role) and trigger adapters (the
//! `triggers` role), started from the project's folders or from the cluster's registry.
//!
//! With `--registry` the node follows the registry: a new version is fetched and loaded
//! completely before its dispatcher starts; only then is the old version's dispatcher told
//! to stop, and it finishes and acknowledges the events it already took (no event is run by
//! a half-loaded function, none is dropped). An undeployed function stops the same way.
//! A trigger is stopped before its new version starts, so two versions never read one
//! source at once; its cursor is in KV `sluice_state`, so the new one continues from it.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt as _;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::bus::Bus;
use crate::config::{FunctionConfig, FunctionDef, Project};
use crate::dispatch::Dispatcher;
use crate::registry::{self, Kind, Manifest, Registry};
use crate::runtime::Hosts;
use crate::telemetry::logs::LogSink;
use crate::triggers::TriggerDef;

/// What a node does; `sluice up --roles` (default all three).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// Run functions: dispatchers and synchronous invocations.
    Workers,
    /// Run trigger adapters (cron, bucket, kafka, nats, mqtt, postgres).
    Triggers,
    /// Serve HTTP: `http` triggers' routes, the Lambda Invoke API, /metrics.
    Gateway,
}

/// The roles a node has.
#[derive(Debug, Clone, Copy)]
pub struct Roles {
    pub workers: bool,
    pub triggers: bool,
    pub gateway: bool,
}

impl Roles {
    pub fn of(roles: &[Role]) -> Self {
        Self { workers: roles.contains(&Role::Workers), triggers: roles.contains(&Role::Triggers), gateway: roles.contains(&Role::Gateway) }
    }

    pub fn names(self) -> String {
        let names: Vec<&str> = [(self.workers, "workers"), (self.triggers, "triggers"), (self.gateway, "gateway")]
            .into_iter()
            .filter_map(|(on, name)| on.then_some(name))
            .collect();
        names.join(",")
    }
}

/// A function running on this node.
struct RunningFunction {
    /// The registry version and digest it runs (`None` for a project's folder).
    version: Option<(u64, String)>,
    stop: CancellationToken,
}

/// A trigger running on this node.
struct RunningTrigger {
    sha256: Option<String>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// The functions and triggers a node runs, and the tasks running them.
pub struct Node {
    pub bus: Bus,
    pub roles: Roles,
    /// The node's project: its folder and settings (and, without --registry, its functions
    /// and triggers). With --registry, functions and triggers are the deployed ones.
    pub project: Project,
    hosts: Arc<Hosts>,
    pub local: crate::dispatch::sync::Local,
    logs: Option<LogSink>,
    /// Parent of every function's and trigger's stop token.
    shutdown: CancellationToken,
    /// Dispatchers and synchronous servers, including old versions still draining.
    pub dispatchers: TaskTracker,
    pub trigger_tasks: TaskTracker,
    functions: HashMap<String, RunningFunction>,
    triggers: HashMap<String, RunningTrigger>,
    /// Versions that failed to load, so each failure is logged once.
    failed: HashSet<(Kind, String, u64)>,
    /// Function versions already fetched and checked, by name, version and digest: the
    /// resync every [`RESYNC`] reads the registry, not every module again.
    prepared: HashMap<(String, u64, String), FunctionDef>,
}

/// How long a trigger being replaced gets to stop before its new version starts anyway.
const TRIGGER_STOP_BOUND: Duration = Duration::from_secs(15);
/// How often a node following the registry reads all of it, besides reacting to changes
/// (a change missed while reconnecting, a version that failed to load).
const RESYNC: Duration = Duration::from_secs(30);

impl Node {
    pub fn new(bus: Bus, roles: Roles, project: Project, hosts: Hosts, logs: Option<LogSink>, shutdown: CancellationToken) -> Self {
        Self {
            bus,
            roles,
            project,
            hosts: Arc::new(hosts),
            local: crate::dispatch::sync::Local::default(),
            logs,
            shutdown,
            dispatchers: TaskTracker::new(),
            trigger_tasks: TaskTracker::new(),
            functions: HashMap::new(),
            triggers: HashMap::new(),
            failed: HashSet::new(),
            prepared: HashMap::new(),
        }
    }

    /// Starts a loaded function: its dispatcher and its synchronous server.
    pub fn start_function(&mut self, config: FunctionConfig, consumer: async_nats::jetstream::consumer::PullConsumer, function: Arc<dyn crate::runtime::Runtime>, version: Option<(u64, String)>) {
        let Some(logs) = self.logs.clone() else { return };
        let stop = self.shutdown.child_token();
        let config = Arc::new(config);
        let name = config.name.clone();
        self.dispatchers.spawn(crate::dispatch::sync::serve(self.bus.clone(), self.local.clone(), logs.clone(), config.clone(), function.clone(), stop.clone()));
        let dispatcher = Dispatcher::new(self.bus.clone(), config, function, logs);
        self.dispatchers.spawn(dispatcher.run(consumer, stop.clone()));
        // The old version stops only now that the new one runs; it finishes what it took.
        if let Some(old) = self.functions.insert(name, RunningFunction { version, stop }) {
            old.stop.cancel();
        }
    }

    /// Starts a trigger's adapter (none for `http`, which the gateway serves).
    pub fn start_trigger(&mut self, def: &TriggerDef, project: &Project, sha256: Option<String>) -> anyhow::Result<()> {
        let Some(trigger) = crate::triggers::build(def, project)? else { return Ok(()) };
        let stop = self.shutdown.child_token();
        let ctx = crate::triggers::TriggerContext { name: def.name.clone(), bus: self.bus.clone(), shutdown: stop.clone() };
        let name = def.name.clone();
        let task = self.trigger_tasks.spawn(async move {
            if let Err(error) = trigger.run(ctx).await {
                warn!(trigger = %name, error = %format!("{error:#}"), "Trigger stopped.");
            }
        });
        self.triggers.insert(def.name.clone(), RunningTrigger { sha256, stop, task });
        Ok(())
    }

    /// Stops a trigger and waits (bounded) until it has.
    async fn stop_trigger(&mut self, name: &str) {
        if let Some(running) = self.triggers.remove(name) {
            running.stop.cancel();
            if tokio::time::timeout(TRIGGER_STOP_BOUND, running.task).await.is_err() {
                warn!(trigger = %name, "The trigger did not stop in time; starting its new version anyway.");
            }
        }
    }

    /// Brings the node to what the registry holds: new versions loaded and started, old ones
    /// drained, undeployed ones stopped. Returns the project as deployed (for the gateway).
    pub async fn reconcile(&mut self, registry: &Registry) -> anyhow::Result<Project> {
        let deployed_functions = registry.deployed(Kind::Function).await?;
        let deployed_triggers = registry.deployed(Kind::Trigger).await?;
        let mut defs: Vec<FunctionDef> = Vec::new();
        for deployed in &deployed_functions {
            let manifest = &deployed.manifest;
            let key = (Kind::Function, manifest.name.clone(), manifest.version);
            let prepared = (manifest.name.clone(), manifest.version, manifest.sha256.clone());
            if let Some(def) = self.prepared.get(&prepared) {
                defs.push(def.clone());
                continue;
            }
            match self.prepare_function(registry, manifest).await {
                Ok(def) => {
                    self.failed.remove(&key);
                    self.prepared.insert(prepared, def.clone());
                    defs.push(def);
                }
                Err(failure) => {
                    if self.failed.insert(key) {
                        error!(function = %manifest.name, version = manifest.version, error = %format!("{failure:#}"), "Cannot load the deployed version; the node keeps running what it ran before.");
                    }
                }
            }
        }
        self.prepared.retain(|(name, version, sha256), _| {
            deployed_functions.iter().any(|d| &d.manifest.name == name && d.manifest.version == *version && &d.manifest.sha256 == sha256)
        });
        if self.roles.workers {
            for def in &defs {
                let manifest = deployed_functions.iter().map(|d| &d.manifest).find(|m| m.name == def.config.name);
                let Some(manifest) = manifest else { continue };
                let wanted = Some((manifest.version, manifest.sha256.clone()));
                if self.functions.get(&def.config.name).is_some_and(|r| r.version == wanted) {
                    continue;
                }
                let key = (Kind::Function, manifest.name.clone(), manifest.version);
                match self.load(def, true).await {
                    Ok((consumer, function)) => {
                        self.failed.remove(&key);
                        let previous = self.functions.get(&def.config.name).and_then(|r| r.version.as_ref().map(|v| v.0));
                        self.start_function(def.config.clone(), consumer, function, wanted);
                        match previous {
                            Some(previous) => info!(function = %def.config.name, version = manifest.version, previous, "Switched to the deployed version; the previous one finishes its in-flight events."),
                            None => info!(function = %def.config.name, version = manifest.version, "Started the deployed function."),
                        }
                    }
                    Err(failure) => {
                        if self.failed.insert(key) {
                            error!(function = %manifest.name, version = manifest.version, error = %format!("{failure:#}"), "Cannot load the deployed version; the node keeps running what it ran before.");
                        }
                    }
                }
            }
            let deployed_names: HashSet<&str> = deployed_functions.iter().map(|d| d.manifest.name.as_str()).collect();
            let gone: Vec<String> = self.functions.keys().filter(|n| !deployed_names.contains(n.as_str())).cloned().collect();
            for name in gone {
                if let Some(running) = self.functions.remove(&name) {
                    running.stop.cancel();
                    info!(function = %name, "Stopped the undeployed function; it finishes its in-flight events.");
                }
            }
        }

        let mut triggers = Vec::new();
        for deployed in &deployed_triggers {
            let manifest = &deployed.manifest;
            match self.prepare_trigger(manifest, &defs) {
                Ok(def) => triggers.push((def, manifest.sha256.clone())),
                Err(failure) => {
                    if self.failed.insert((Kind::Trigger, manifest.name.clone(), manifest.version)) {
                        error!(trigger = %manifest.name, version = manifest.version, error = %format!("{failure:#}"), "Cannot start the deployed trigger version.");
                    }
                }
            }
        }
        let deployed = Project {
            dir: self.project.dir.clone(),
            settings: self.project.settings.clone(),
            functions: defs,
            triggers: triggers.iter().map(|(def, _)| def.clone()).collect(),
        };
        if self.roles.triggers {
            for (def, sha256) in &triggers {
                if self.triggers.get(&def.name).is_some_and(|r| r.sha256.as_deref() == Some(sha256)) {
                    continue;
                }
                let replacing = self.triggers.contains_key(&def.name);
                self.stop_trigger(&def.name).await;
                match self.start_trigger(def, &deployed, Some(sha256.clone())) {
                    Ok(()) if replacing => info!(trigger = %def.name, "Restarted the trigger with its deployed version."),
                    Ok(()) => info!(trigger = %def.name, kind = def.config.kind(), "Started the deployed trigger."),
                    Err(failure) => error!(trigger = %def.name, error = %format!("{failure:#}"), "Cannot start the deployed trigger."),
                }
            }
            let names: HashSet<&str> = triggers.iter().map(|(def, _)| def.name.as_str()).collect();
            let gone: Vec<String> = self.triggers.keys().filter(|n| !names.contains(n.as_str())).cloned().collect();
            for name in gone {
                self.stop_trigger(&name).await;
                info!(trigger = %name, "Stopped the undeployed trigger.");
            }
        }
        Ok(deployed)
    }

    /// The function's definition from its deployed version: unpacked into the node's
    /// registry folder (fetched once per version) on worker nodes, only its configuration
    /// elsewhere.
    async fn prepare_function(&self, registry: &Registry, manifest: &Manifest) -> anyhow::Result<FunctionDef> {
        let dir = registry::version_dir(&self.project.dir, manifest);
        if !self.roles.workers {
            let config: FunctionConfig = toml::from_str(&manifest.config).with_context(|| format!("version {} of function {}'s function.toml", manifest.version, manifest.name))?;
            return Ok(FunctionDef { config, path: dir.join("function.toml"), module_path: None, dir });
        }
        if !dir.is_dir() {
            let bytes = registry.artifact(manifest).await?;
            let dest = dir.clone();
            tokio::task::spawn_blocking(move || registry::pack::unpack(&bytes, &dest)).await.context("unpacking")??;
            info!(function = %manifest.name, version = manifest.version, dir = %dir.display(), "Fetched the deployed version.");
        }
        let path = dir.join("function.toml");
        let def = crate::config::load_function(&path, true)?;
        if def.config.name != manifest.name {
            anyhow::bail!("{} names function {:?}, but it was deployed as {:?}", path.display(), def.config.name, manifest.name);
        }
        Ok(def)
    }

    /// The trigger's definition from its deployed version, written to the node's registry
    /// folder (its file name is its name).
    fn prepare_trigger(&self, manifest: &Manifest, functions: &[FunctionDef]) -> anyhow::Result<TriggerDef> {
        let dir = registry::version_dir(&self.project.dir, manifest);
        let path = dir.join(format!("{}.toml", manifest.name));
        if !path.is_file() {
            registry::pack::write_atomic(&path, manifest.config.as_bytes())?;
        }
        let def = crate::config::load_trigger(&path)?;
        for function in def.config.required_functions() {
            if !functions.iter().any(|f| f.config.name == function) {
                anyhow::bail!("it sends events to function {function:?}, which is not deployed (or did not load)");
            }
        }
        Ok(def)
    }

    /// Loads a function into its runtime (compiling it if needed, off the async threads)
    /// and creates or updates its consumer. With `install_client`, a Lambda runtime's
    /// client is installed when missing (a deployed function was built on another machine).
    pub async fn load(&self, def: &FunctionDef, install_client: bool) -> anyhow::Result<(async_nats::jetstream::consumer::PullConsumer, Arc<dyn crate::runtime::Runtime>)> {
        let hosts = self.hosts.clone();
        let owned = def.clone();
        let project = self.project.clone();
        let function = tokio::task::spawn_blocking(move || {
            // A deployed function was built elsewhere: this node may lack its runtime client.
            if install_client && owned.config.runtime.is_lambda() {
                crate::cli::build::ensure_lambda_client(&project, owned.config.runtime)?;
            }
            anyhow::Ok(hosts.load(&owned)?)
        })
        .await
        .context("loading")??;
        let consumer = self.bus.function_consumer(&def.config).await?;
        Ok((consumer, function))
    }

    /// Follows the registry until shutdown: reacts to every deploy, rollback and undeploy,
    /// and reads it all again every [`RESYNC`]. `deployed` receives the project as deployed
    /// after each change (the gateway's routes).
    pub async fn follow(mut self, registry: Registry, deployed: tokio::sync::watch::Sender<Arc<Project>>) -> Self {
        let mut watch = None;
        loop {
            if watch.is_none() {
                match registry.watch().await {
                    Ok(stream) => watch = Some(stream),
                    Err(failure) => warn!(error = %format!("{failure:#}"), "Cannot watch the registry; reading it again in a while."),
                }
            }
            match self.reconcile(&registry).await {
                Ok(project) => {
                    let changed = routes_of(&project) != routes_of(&deployed.borrow());
                    if changed {
                        deployed.send_replace(Arc::new(project));
                    }
                }
                Err(failure) => warn!(error = %format!("{failure:#}"), "Cannot read the registry; trying again."),
            }
            let resync = tokio::time::sleep(RESYNC);
            tokio::select! {
                () = self.shutdown.cancelled() => return self,
                () = resync => {}
                changed = next_change(watch.as_mut()) => {
                    if !changed {
                        watch = None;
                        tokio::select! {
                            () = self.shutdown.cancelled() => return self,
                            () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        }
                    }
                }
            }
        }
    }
}

/// Waits for the next registry change (then takes every change already queued); false
/// when the watch ended.
async fn next_change(watch: Option<&mut async_nats::jetstream::kv::Watch>) -> bool {
    let Some(watch) = watch else {
        return std::future::pending().await;
    };
    match watch.next().await {
        Some(Ok(_)) => {
            // Several keys change in one deploy: read them all, then reconcile once.
            while let Some(Some(Ok(_))) = futures::FutureExt::now_or_never(watch.next()) {}
            true
        }
        Some(Err(failure)) => {
            warn!(error = %failure, "The registry watch failed; watching again.");
            false
        }
        None => false,
    }
}

/// What the gateway serves of a project: the http triggers' files and the functions' timeouts.
type Routes<'a> = (Vec<(String, &'a Path)>, Vec<(String, Duration)>);

fn routes_of(project: &Project) -> Routes<'_> {
    let triggers = project.triggers.iter().filter(|t| t.config.kind() == "http").map(|t| (t.name.clone(), t.path.as_path())).collect();
    let functions = project.functions.iter().map(|f| (f.config.name.clone(), f.config.timeout)).collect();
    (triggers, functions)
}
