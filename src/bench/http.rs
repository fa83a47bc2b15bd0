//! `sluice bench --http`: the HTTP gateway against a plain axum handler, side by side in one
//! run. An HTTP/1.1 load generator (hyper's client over real loopback TCP, keep-alive
//! connections) drives each server:
//! - closed loop at a fixed concurrency: requests per second and latency;
//! - open loop at half the gateway's measured rate, the same rate for both, on a fixed set of
//!   connections, after a warm-up: latency of each request from the moment it was due (no
//!   coordinated omission), so the p99 difference is the gateway's overhead at half load.
//!
//! The gateway serves `GET /hello` from the `hello` example (wasm) through the whole path a
//! request takes on a node that runs the function: route table, API Gateway event, the
//! sandbox, the response mapping. The plain handler answers the same body. Between the two,
//! a plain handler that runs `hello` in a bare wasmtime sandbox per request shows what a
//! fresh sandbox costs by itself. A second gateway that does not run the function itself
//! measures the path across nodes: NATS request/reply to the function's queue group (closed
//! loop only).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::http::{header, Request, StatusCode};
use axum::response::IntoResponse as _;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::config::{FunctionConfig, FunctionDef, Project, Settings};
use crate::runtime::wasm::WasmHost;
use crate::triggers::{TriggerConfig, TriggerDef};

/// Connections (requests in flight) of the closed-loop phase.
pub const CONCURRENCY: usize = 32;
/// Connections of the open-loop phase: twice the closed loop's, so that at half its rate
/// they are rarely all busy.
const OPEN_LOOP_CONNECTIONS: usize = 2 * CONCURRENCY;
/// How long each closed-loop measurement runs.
const PERIOD: Duration = Duration::from_secs(3);
/// Rounds of the half-load comparison, each an open loop on plain axum and one on the
/// gateway, back to back (which goes first alternates): a slow spell of a shared machine
/// then spoils one round's comparison rather than the figure.
pub const HALF_LOAD_ROUNDS: usize = 5;
/// How long each open loop of a round runs (after its warm-up).
const HALF_LOAD_PERIOD: Duration = Duration::from_secs(2);
/// Unmeasured warm-up before each closed-loop measurement.
const WARM_UP: Duration = Duration::from_millis(500);

#[derive(Debug, Serialize)]
pub struct HttpReport {
    pub concurrency: usize,
    /// The same body from a plain axum handler (no gateway, no function).
    pub plain_axum: Load,
    /// `GET /hello` through the gateway to the wasm `hello` function.
    pub gateway: Load,
    /// The same through a gateway that reaches the function over NATS request/reply, as one
    /// on another node does.
    pub gateway_via_nats: Load,
    /// A plain axum handler that runs `hello` in a bare wasmtime sandbox per request, with the
    /// event the gateway makes for `GET /hello`: the floor of any gateway that runs a fresh
    /// sandbox per request (no route table, event mapping, limits, logs or records).
    pub axum_bare_wasmtime: Load,
    /// Both at half the gateway's closed-loop rate.
    pub half_load: HalfLoad,
    /// gateway req/s ÷ plain axum req/s (goal ≥ 0.5).
    pub gateway_vs_plain_axum: f64,
    /// gateway over NATS req/s ÷ plain axum req/s.
    pub gateway_via_nats_vs_plain_axum: f64,
    /// axum + bare wasmtime req/s ÷ plain axum req/s: the most a fresh sandbox per request
    /// leaves of plain axum's rate.
    pub axum_bare_wasmtime_vs_plain_axum: f64,
    /// gateway req/s ÷ axum + bare wasmtime req/s: what the gateway's own work leaves.
    pub gateway_vs_axum_bare_wasmtime: f64,
    /// Median over the half-load rounds of gateway p99 − plain axum p99, in ms (goal ≤ 1).
    pub p99_overhead_ms_at_half_load: f64,
}

#[derive(Debug, Serialize)]
pub struct Load {
    pub requests: usize,
    pub requests_per_sec: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Answers that were not 200.
    pub errors: usize,
}

#[derive(Debug, Serialize)]
pub struct HalfLoad {
    pub rate_per_sec: f64,
    /// Every round's requests together.
    pub plain_axum: Load,
    pub gateway: Load,
    pub rounds: Vec<HalfLoadRound>,
}

#[derive(Debug, Serialize)]
pub struct HalfLoadRound {
    pub plain_axum_p99_ms: f64,
    pub gateway_p99_ms: f64,
    /// gateway p99 − plain axum p99 in this round.
    pub p99_overhead_ms: f64,
}

/// Runs the phase with `hello_module` (the `hello` example's compiled module).
pub async fn run(bus: &Bus, host: &WasmHost, hello_module: &Path, work_dir: &Path) -> anyhow::Result<HttpReport> {
    let shutdown = CancellationToken::new();
    // Each call leaves its record in SLUICE_LOGS, as under `sluice up`.
    let (logs, logs_task) = crate::telemetry::logs::LogSink::start(bus.clone(), shutdown.clone());
    let result = measure(bus, host, hello_module, work_dir, logs, &shutdown).await;
    shutdown.cancel();
    // Its last records are stored before the bench closes the connection.
    let _ = logs_task.await;
    result
}

async fn measure(bus: &Bus, host: &WasmHost, hello_module: &Path, work_dir: &Path, logs: crate::telemetry::logs::LogSink, shutdown: &CancellationToken) -> anyhow::Result<HttpReport> {
    // A project of one function and one route, as `sluice up` would load it.
    let dir = work_dir.join("http");
    std::fs::create_dir_all(&dir)?;
    let mut config: FunctionConfig = toml::from_str(&format!(
        "name = \"bench-hello\"\nruntime = \"wasm\"\nmodule = {:?}\nconcurrency = {CONCURRENCY}\ntimeout = \"10s\"\n",
        hello_module.display().to_string()
    ))
    .context("the bench function's settings")?;
    config.memory_mb = 64;
    let trigger_path = dir.join("triggers/bench.toml");
    let trigger = TriggerConfig::parse(&trigger_path, "kind = \"http\"\n[routes.\"GET /hello\"]\nfunction = \"bench-hello\"\n")?;
    let project = Project {
        dir: dir.clone(),
        settings: Settings::default(),
        functions: vec![FunctionDef { config: config.clone(), path: dir.join("functions/bench-hello/function.toml"), dir: dir.clone(), module_path: Some(hello_module.to_owned()) }],
        triggers: vec![TriggerDef { name: "bench".to_owned(), path: trigger_path, config: trigger }],
    };
    let function = Arc::new(host.load(&config, hello_module).context("loading the hello example")?);
    let local = crate::dispatch::sync::Local::default();
    tokio::spawn(crate::dispatch::sync::serve(bus.clone(), local.clone(), logs, Arc::new(config), function, shutdown.clone()));
    let gateway = crate::triggers::http::Gateway::bind("127.0.0.1:0", &project, bus.clone(), local, None).await?;
    let gateway_addr = gateway.addr;
    // The routes never change here: the sender goes at once.
    tokio::spawn(gateway.serve(shutdown.clone(), tokio::sync::watch::channel(Arc::new(project.clone())).1));
    // Serves no function itself: every call crosses NATS.
    let remote = crate::triggers::http::Gateway::bind("127.0.0.1:0", &project, bus.clone(), crate::dispatch::sync::Local::default(), None).await?;
    let remote_url = format!("http://{}/hello", remote.addr);
    tokio::spawn(remote.serve(shutdown.clone(), tokio::sync::watch::channel(Arc::new(project.clone())).1));

    // The load generator runs on its own threads, as a separate process would: its timers
    // and connections do not wait in the servers' run queues (nor theirs in its).
    let generator = Generator::start()?;
    let client: HttpClient = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(OPEN_LOOP_CONNECTIONS).build_http();
    let gateway_url = format!("http://{gateway_addr}/hello");
    // The body the function answers, served as is by the plain handler.
    let body = generator.run(wait_for_answer(client.clone(), gateway_url.clone())).await?;
    let plain_addr = plain_server(body, shutdown.clone()).await?;
    let plain_url = format!("http://{plain_addr}/hello");
    let bare_addr = bare_server(host, hello_module, gateway_addr, shutdown.clone()).await?;
    let bare_url = format!("http://{bare_addr}/hello");

    generator.run(wait_for_answer(client.clone(), remote_url.clone())).await?;
    generator.run(wait_for_answer(client.clone(), bare_url.clone())).await?;
    let plain_axum = generator.run(closed_loop(client.clone(), plain_url.clone())).await?;
    let axum_bare_wasmtime = generator.run(closed_loop(client.clone(), bare_url)).await?;
    let gateway = generator.run(closed_loop(client.clone(), gateway_url.clone())).await?;
    let gateway_via_nats = generator.run(closed_loop(client.clone(), remote_url)).await?;
    let rate = (gateway.requests_per_sec / 2.0).max(1.0);
    let half_load = half_load(&generator, &client, &plain_url, &gateway_url, rate).await?;
    let p99_overhead = super::median(half_load.rounds.iter().map(|r| r.p99_overhead_ms));
    Ok(HttpReport {
        concurrency: CONCURRENCY,
        gateway_vs_plain_axum: super::ratio(gateway.requests_per_sec, plain_axum.requests_per_sec),
        gateway_via_nats_vs_plain_axum: super::ratio(gateway_via_nats.requests_per_sec, plain_axum.requests_per_sec),
        axum_bare_wasmtime_vs_plain_axum: super::ratio(axum_bare_wasmtime.requests_per_sec, plain_axum.requests_per_sec),
        gateway_vs_axum_bare_wasmtime: super::ratio(gateway.requests_per_sec, axum_bare_wasmtime.requests_per_sec),
        plain_axum,
        axum_bare_wasmtime,
        gateway,
        gateway_via_nats,
        half_load,
        p99_overhead_ms_at_half_load: super::round3(p99_overhead),
    })
}

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// The load generator's runtime: two threads of its own, stopped when dropped.
struct Generator(Option<tokio::runtime::Runtime>);

impl Generator {
    fn start() -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).thread_name("sluice-bench-load").enable_all().build()?;
        Ok(Self(Some(runtime)))
    }

    /// Runs `work` on the generator's threads.
    async fn run<T: Send + 'static>(&self, work: impl std::future::Future<Output = anyhow::Result<T>> + Send + 'static) -> anyhow::Result<T> {
        let runtime = self.0.as_ref().context("the load generator has stopped")?;
        runtime.spawn(work).await.context("the load generator failed")?
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

async fn get(client: &HttpClient, url: &str) -> anyhow::Result<(StatusCode, Bytes)> {
    let request = Request::get(url).header(header::ACCEPT, "application/json").body(Empty::new())?;
    let response = client.request(request).await?;
    let status = response.status();
    let body = response.into_body().collect().await?.to_bytes();
    Ok((status, body))
}

/// The function's first answer, once its worker serves requests.
async fn wait_for_answer(client: HttpClient, url: String) -> anyhow::Result<Bytes> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match get(&client, &url).await {
            Ok((StatusCode::OK, body)) => return Ok(body),
            Ok((status, body)) if Instant::now() > deadline => anyhow::bail!("the gateway answered {status}: {}", String::from_utf8_lossy(&body)),
            Err(error) if Instant::now() > deadline => return Err(error.context("calling the gateway")),
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn plain_server(body: Bytes, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(move || {
            let body = body.clone();
            async move { ([(header::CONTENT_TYPE, "application/json")], body) }
        }),
    );
    serve(app, shutdown).await
}

/// Serves `app` on a new loopback port (TCP_NODELAY, as the gateway) until `shutdown`.
async fn serve(app: axum::Router, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    use axum::serve::ListenerExt as _;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let listener = listener.tap_io(|stream| {
        let _ = stream.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await;
    });
    Ok(addr)
}

/// Serves `GET /hello` by running the module in a bare sandbox with the event the gateway
/// at `gateway_addr` makes for that request, built once.
async fn bare_server(host: &WasmHost, module: &Path, gateway_addr: SocketAddr, shutdown: CancellationToken) -> anyhow::Result<SocketAddr> {
    let bare = Arc::new(super::Bare::new(host, &std::fs::read(module).context("reading the hello example")?)?);
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(header::ACCEPT, axum::http::HeaderValue::from_static("application/json"));
    if let Ok(host) = axum::http::HeaderValue::from_str(&gateway_addr.to_string()) {
        headers.insert(header::HOST, host);
    }
    let event = crate::triggers::http::apigw::event(&crate::triggers::http::apigw::Request {
        method: &axum::http::Method::GET,
        uri: &axum::http::Uri::from_static("/hello"),
        headers: &headers,
        body: &Bytes::new(),
        route_key: "GET /hello",
        path_parameters: &[],
        request_id: &uuid::Uuid::new_v4().to_string(),
        source_ip: "127.0.0.1".to_owned(),
        api_id: "bench",
        time: chrono::Utc::now(),
    });
    let app = axum::Router::new().route(
        "/hello",
        axum::routing::get(move || {
            let (bare, event) = (bare.clone(), event.clone());
            async move {
                match bare.run(event).await {
                    Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
                    Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}")).into_response(),
                }
            }
        }),
    );
    serve(app, shutdown).await
}

/// [`HALF_LOAD_ROUNDS`] rounds of an open loop at `rate` on plain axum and on the gateway.
async fn half_load(generator: &Generator, client: &HttpClient, plain_url: &str, gateway_url: &str, rate: f64) -> anyhow::Result<HalfLoad> {
    let mut plain_all = Samples::default();
    let mut gateway_all = Samples::default();
    let mut rounds = Vec::with_capacity(HALF_LOAD_ROUNDS);
    for round in 0..HALF_LOAD_ROUNDS {
        let mut plain = Samples::default();
        let mut gateway = Samples::default();
        for on_gateway in [round % 2 == 1, round % 2 == 0] {
            let url = if on_gateway { gateway_url } else { plain_url };
            let samples = generator.run(open_loop(client.clone(), url.to_owned(), rate)).await?;
            if on_gateway { gateway = samples } else { plain = samples }
        }
        let (plain_p99, gateway_p99) = (plain.load().p99_ms, gateway.load().p99_ms);
        rounds.push(HalfLoadRound { plain_axum_p99_ms: plain_p99, gateway_p99_ms: gateway_p99, p99_overhead_ms: super::round3(gateway_p99 - plain_p99) });
        plain_all.extend(plain);
        gateway_all.extend(gateway);
    }
    Ok(HalfLoad { rate_per_sec: rate.round(), plain_axum: plain_all.load(), gateway: gateway_all.load(), rounds })
}

/// [`CONCURRENCY`] connections, each sending its next request when the last is answered.
async fn closed_loop(client: HttpClient, url: String) -> anyhow::Result<Load> {
    let (client, url) = (&client, url.as_str());
    let run = |period: Duration| async move {
        let started = Instant::now();
        let workers = (0..CONCURRENCY).map(|_| {
            let (client, url) = (client.clone(), url.to_owned());
            tokio::spawn(async move {
                let mut samples = Vec::new();
                let mut errors = 0;
                while started.elapsed() < period {
                    let sent = Instant::now();
                    match get(&client, &url).await {
                        Ok((StatusCode::OK, _)) => samples.push(sent.elapsed()),
                        _ => errors += 1,
                    }
                }
                (samples, errors)
            })
        });
        let mut samples = Vec::new();
        let mut errors = 0;
        for worker in futures::future::join_all(workers).await {
            let (s, e) = worker.context("a load generator task failed")?;
            samples.extend(s);
            errors += e;
        }
        anyhow::Ok(load(samples, errors, started.elapsed()))
    };
    run(WARM_UP).await?;
    run(PERIOD).await
}

/// Requests due at a fixed `rate` for [`HALF_LOAD_PERIOD`] after [`WARM_UP`], each timed
/// from when it was due, over [`OPEN_LOOP_CONNECTIONS`] connections (as wrk2 does): a request due while every
/// connection is busy waits for one, and that wait counts in its latency (no coordinated
/// omission), but a slow spell of the server does not make the client open connections by
/// the thousand, which would measure the kernel's accept queue rather than the server.
async fn open_loop(client: HttpClient, url: String, rate: f64) -> anyhow::Result<Samples> {
    let interval = Duration::from_secs_f64(1.0 / rate);
    // In range: at most rate × 2.5 s requests.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let count = (rate * (WARM_UP + HALF_LOAD_PERIOD).as_secs_f64()).ceil() as u64;
    let begun = tokio::time::Instant::now();
    // Requests due before this are sent but not counted: the connections are opened and
    // the servers reach their steady state (as the closed loop's warm-up).
    let started = begun + WARM_UP;
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let workers = (0..OPEN_LOOP_CONNECTIONS).map(|_| {
        let (client, url, next) = (client.clone(), url.to_owned(), next.clone());
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut errors = 0;
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= count {
                    break;
                }
                #[allow(clippy::cast_precision_loss)]
                let due = begun + interval.mul_f64(i as f64);
                tokio::time::sleep_until(due).await;
                let answer = get(&client, &url).await;
                if due < started {
                    continue;
                }
                match answer {
                    Ok((StatusCode::OK, _)) => samples.push(due.elapsed()),
                    _ => errors += 1,
                }
            }
            (samples, errors)
        })
    });
    let mut samples = Samples::default();
    for worker in futures::future::join_all(workers).await {
        let (latencies, errors) = worker.context("a load generator task failed")?;
        samples.latencies.extend(latencies);
        samples.errors += errors;
    }
    samples.elapsed = started.elapsed();
    Ok(samples)
}

/// What one or more open loops measured.
#[derive(Default)]
struct Samples {
    latencies: Vec<Duration>,
    errors: usize,
    elapsed: Duration,
}

impl Samples {
    fn extend(&mut self, other: Samples) {
        self.latencies.extend(other.latencies);
        self.errors += other.errors;
        self.elapsed += other.elapsed;
    }

    fn load(&self) -> Load {
        load(self.latencies.clone(), self.errors, self.elapsed)
    }
}

fn load(mut samples: Vec<Duration>, errors: usize, elapsed: Duration) -> Load {
    samples.sort_unstable();
    let at = |q: f64| -> f64 {
        if samples.is_empty() {
            return 0.0;
        }
        // In range: q is at most 1.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]
        let index = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        super::round3(samples[index].as_secs_f64() * 1000.0)
    };
    #[allow(clippy::cast_precision_loss)]
    let rate = samples.len() as f64 / elapsed.as_secs_f64();
    Load { requests: samples.len(), requests_per_sec: rate.round(), p50_ms: at(0.5), p99_ms: at(0.99), errors }
}
