//! `sluice bench`: the report has every documented figure, every event of the end-to-end
//! phase ran exactly once, and the scale-out runs drained their whole backlog on worker
//! processes pinned apart. No timing assertions: only structure and counts.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::*;

#[test]
fn the_report_is_complete_and_every_event_ran_once() {
    let project = Project::new();
    // The Lambda phase uses the project's runtime clients (the repository's, here).
    project.lambda_function("unused", "runtime = \"python3.11\"\nhandler = \"app.handler\"", &[("app.py", "def handler(e, c):\n    return e\n")]);
    // The HTTP and scale-out phases run the `hello` example.
    project.function("hello", "hello", "");
    let dsn = common::postgres::dsn();
    let out = project.sluice_within(
        &["--json", "bench", "--events", "1500", "--size", "256", "--concurrency", "32", "--postgres", &dsn, "--http", "--scale-out", "--functions", "20", "--idle-window", "3"],
        std::time::Duration::from_secs(600),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();

    let number = |path: &str| -> f64 {
        let value = path.split('.').fold(&report, |v, key| &v[key]);
        value.as_f64().unwrap_or_else(|| panic!("{path} is missing or not a number: {report:#}"))
    };
    for path in [
        "raw_jetstream.publish_msgs_per_sec",
        "raw_jetstream.consume_msgs_per_sec",
        "raw_jetstream.overlapped_msgs_per_sec",
        "raw_jetstream.as_events.overlapped_msgs_per_sec",
        "raw_jetstream.as_events.cpu.bench_process_us",
        "ratios.as_events_vs_raw_jetstream",
        "ratios.end_to_end_vs_as_events",
        "bare_wasmtime.p50_us",
        "bare_wasmtime.p99_us",
        "bare_wasmtime.cpu_us_per_invocation",
        "sluice_runtime.p50_us",
        "sluice_runtime.cpu_us_per_invocation",
        "sluice.events_per_sec",
        "sluice.cpu.bench_process_us",
        "raw_jetstream.overlapped_cpu.bench_process_us",
        "latency.publish_to_handler.p50_ms",
        "latency.publish_to_handler.p99_ms",
        "latency.publish_to_handler.p999_ms",
        "latency.slowest.events",
        "latency.raw_jetstream_publish_to_delivery.p50_ms",
        "latency.raw_jetstream_publish_to_delivery.p99_ms",
        "cold_start.precompiled.p50_ms",
        "cold_start.precompiled.p99_ms",
        "cold_start.from_source.p50_ms",
        "cold_start.from_source.p99_ms",
        "ratios.end_to_end_vs_raw_jetstream",
        "ratios.invoke_cpu_vs_bare_wasmtime",
        "postgres.slot_only_rows_per_sec",
        "postgres.sluice_rows_per_sec",
        "postgres.sluice_vs_slot_only",
        "postgres.latency_slot_only.p50_ms",
        "postgres.latency_slot_only.p99_ms",
        "postgres.latency_sluice.p50_ms",
        "postgres.latency_sluice.p99_ms",
        "http.plain_axum.requests_per_sec",
        "http.plain_axum.p50_ms",
        "http.plain_axum.p99_ms",
        "http.gateway.requests_per_sec",
        "http.gateway.p50_ms",
        "http.gateway.p99_ms",
        "http.half_load.rate_per_sec",
        "http.half_load.plain_axum.p99_ms",
        "http.half_load.gateway.p99_ms",
        "http.gateway_vs_plain_axum",
        "http.gateway_via_nats.requests_per_sec",
        "http.gateway_via_nats.p99_ms",
        "http.gateway_via_nats_vs_plain_axum",
        "http.axum_bare_wasmtime.requests_per_sec",
        "http.axum_bare_wasmtime_vs_plain_axum",
        "http.gateway_vs_axum_bare_wasmtime",
        "logs_and_metrics.with_per_sec",
        "logs_and_metrics.without_per_sec",
    ] {
        assert!(number(path) > 0.0, "{path} should be positive: {report:#}");
    }
    // The contract's floor splits the end-to-end ratio in two: each part is its quotient.
    let quotient = |a: &str, b: &str| (number(a) / number(b) * 1000.0).round() / 1000.0;
    assert_eq!(number("ratios.as_events_vs_raw_jetstream"), quotient("raw_jetstream.as_events.overlapped_msgs_per_sec", "raw_jetstream.overlapped_msgs_per_sec"), "{report:#}");
    assert_eq!(number("ratios.end_to_end_vs_as_events"), quotient("sluice.events_per_sec", "raw_jetstream.as_events.overlapped_msgs_per_sec"), "{report:#}");
    assert!(number("raw_jetstream.as_events.cpu.nats_server_us") >= 0.0);
    // The steps from raw JetStream to the contract's floor, in order, each against raw.
    let steps = report["raw_jetstream"]["contract_steps"].as_array().unwrap_or_else(|| panic!("no contract_steps: {report:#}"));
    let names: Vec<&str> = steps.iter().filter_map(|s| s["step"].as_str()).collect();
    assert_eq!(names, ["headers", "msg_id", "two_filters"], "{report:#}");
    for step in steps {
        let rate = step["overlapped_msgs_per_sec"].as_f64().unwrap_or(0.0);
        assert!(rate > 0.0, "{step:#}");
        assert!(step["adds"].as_str().is_some_and(|a| !a.is_empty()), "{step:#}");
        assert!(step["cpu"]["bench_process_us"].as_f64().is_some_and(|us| us > 0.0), "{step:#}");
        let expected = (rate / number("raw_jetstream.overlapped_msgs_per_sec") * 1000.0).round() / 1000.0;
        assert_eq!(step["vs_raw"].as_f64(), Some(expected), "{step:#}");
    }
    // The tail split: both parts of the slowest events are measured.
    assert!(number("latency.slowest.publish_to_stored_p50_ms") >= 0.0);
    assert!(number("latency.slowest.stored_to_handler_p50_ms") >= 0.0);
    // The bench's own server is measured (its clock ticks may show no CPU in a short phase).
    assert!(number("sluice.cpu.nats_server_us") >= 0.0);
    assert!(number("raw_jetstream.overlapped_cpu.nats_server_us") >= 0.0);
    // The host's steal over each window, where the kernel reports it (Linux: /proc/stat).
    if std::fs::read_to_string("/proc/stat").is_ok_and(|stat| stat.lines().next().is_some_and(|l| l.split_whitespace().count() >= 9)) {
        for path in ["sluice.cpu.host_steal", "raw_jetstream.overlapped_cpu.host_steal", "latency.publish_to_handler.host_steal", "latency.raw_jetstream_publish_to_delivery.host_steal", "postgres.latency_sluice.host_steal"] {
            let steal = number(path);
            assert!((0.0..=1.0).contains(&steal), "{path} is a share of CPU time: {report:#}");
        }
    }
    assert!(number("bare_wasmtime.p99_us") >= number("bare_wasmtime.p50_us"));
    assert!(number("latency.publish_to_handler.p999_ms") >= number("latency.publish_to_handler.p50_ms"));
    assert_eq!(number("cold_start.functions"), 50.0);
    assert_eq!(number("machine.cores") as usize, std::thread::available_parallelism().unwrap().get());
    assert!(report["machine"]["nats_server_version"].as_str().unwrap().starts_with('2'));
    assert_eq!(number("options.events"), 1500.0);
    for path in ["http.plain_axum.errors", "http.axum_bare_wasmtime.errors", "http.gateway.errors", "http.gateway_via_nats.errors", "http.half_load.plain_axum.errors", "http.half_load.gateway.errors"] {
        assert_eq!(number(path), 0.0, "{path}: every request is answered 200: {report:#}");
    }
    // The p99 overhead at half load: five rounds, each gateway p99 − plain p99, and their median.
    let rounds = report["http"]["half_load"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 5, "{report:#}");
    let mut overheads: Vec<f64> = rounds
        .iter()
        .map(|r| {
            let (plain, gateway) = (r["plain_axum_p99_ms"].as_f64().unwrap(), r["gateway_p99_ms"].as_f64().unwrap());
            assert!(plain > 0.0 && gateway > 0.0, "{r}");
            let overhead = r["p99_overhead_ms"].as_f64().unwrap();
            assert!((overhead - (gateway - plain)).abs() < 0.002, "{r}");
            overhead
        })
        .collect();
    overheads.sort_by(f64::total_cmp);
    assert_eq!(number("http.p99_overhead_ms_at_half_load"), overheads[2], "the median round's overhead: {report:#}");
    // The cost of records and metrics: five rounds, each with both runs, and their medians.
    let rounds = report["logs_and_metrics"]["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 5, "{report:#}");
    let mut costs: Vec<f64> = rounds
        .iter()
        .map(|r| {
            assert!(r["with_per_sec"].as_f64().unwrap() > 0.0 && r["without_per_sec"].as_f64().unwrap() > 0.0, "{r}");
            r["cost"].as_f64().unwrap()
        })
        .collect();
    costs.sort_by(f64::total_cmp);
    assert_eq!(number("logs_and_metrics.throughput_cost"), costs[2], "the median round's cost: {report:#}");
    assert_eq!(number("options.size"), 256.0);
    // The postgres phase read as many rows as events, and left no slot behind.
    assert_eq!(number("postgres.rows"), 1500.0);
    assert_eq!(number("postgres.latency_sluice.events"), 200.0);
    assert!(number("postgres.latency_sluice.p99_ms") >= number("postgres.latency_sluice.p50_ms"));
    let slots = std::process::Command::new("psql")
        .args([dsn.as_str(), "-X", "-A", "-t", "-c", "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'sluice\\_bench\\_%'"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&slots.stdout).trim(), "0", "bench slots dropped");

    // Exactly once: the throughput events plus the latency events, each invoked once.
    let latency_events = number("latency.publish_to_handler.events") as u64;
    assert!(latency_events > 0);
    assert_eq!(number("latency.raw_jetstream_publish_to_delivery.events") as u64, latency_events, "the baseline runs as many");
    assert_eq!(report["sluice"]["events"], 1500);
    assert_eq!(report["sluice"]["duplicates"], 0, "{report:#}");
    assert_eq!(report["sluice"]["missing"], 0, "{report:#}");
    assert_eq!(report["sluice"]["invoked_once"].as_u64().unwrap(), 1500 + latency_events);
    assert_eq!(report["sluice"]["exactly_once"], true);
    // Nobody listens on `sluice.results.*` during the throughput phase: nothing is published.
    assert_eq!(report["sluice"]["results_published"], false);
    assert!(report["noop"].as_str().unwrap().contains("stdin"));

    // The cost curves: each point beside raw JetStream, each function ran each event once.
    let curves = &report["curves"];
    let fan_out = curves["fan_out"].as_array().unwrap();
    assert_eq!(fan_out.iter().map(|p| p["functions"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 10, 100], "{curves:#}");
    for point in fan_out {
        let (functions, events) = (point["functions"].as_u64().unwrap(), point["events"].as_u64().unwrap());
        assert_eq!(events, (1500 / functions).max(10), "{point}");
        assert_eq!(point["deliveries"].as_u64().unwrap(), events * functions, "every function ran every event: {point}");
        assert_eq!(point["exactly_once"], true, "{point}");
        assert!(point["deliveries_per_sec"].as_f64().unwrap() > 0.0 && point["raw_deliveries_per_sec"].as_f64().unwrap() > 0.0, "{point}");
    }
    let sizes = curves["event_size"].as_array().unwrap();
    assert_eq!(sizes.iter().map(|p| p["size_bytes"].as_u64().unwrap()).collect::<Vec<_>>(), [128, 4096, 65536, 1048576], "{curves:#}");
    for point in sizes {
        assert_eq!(point["exactly_once"], true, "{point}");
        let size = point["size_bytes"].as_f64().unwrap();
        for (events, mb) in [("events_per_sec", "mb_per_sec"), ("raw_events_per_sec", "raw_mb_per_sec")] {
            let (events, mb) = (point[events].as_f64().unwrap(), point[mb].as_f64().unwrap());
            assert!(events > 0.0, "{point}");
            assert!((mb - events * size / 1e6).abs() <= 0.01 * mb + 0.01, "MB/s is events/s × size: {point}");
        }
    }
    assert_eq!(sizes[0]["events"], 1500);
    assert_eq!(sizes[3]["events"], 93, "1 MiB events within the byte budget: {curves:#}");
    let guest = &curves["real_guest"];
    assert_eq!(guest["function"], "hello", "{guest:#}");
    assert_eq!(guest["events"], 1500);
    assert_eq!(guest["exactly_once"], true, "{guest:#}");
    assert!(guest["events_per_sec"].as_f64().unwrap() > 0.0 && guest["noop_events_per_sec"].as_f64().unwrap() > 0.0, "{guest:#}");

    // Many functions: 1, 2 and 20 copies of hello in a `sluice up` process, each measured
    // over its window, and one event picked up after it.
    let many = &report["many_functions"];
    assert_eq!(many["nats_server_measured"], true, "{many:#}");
    let runs = many["runs"].as_array().unwrap();
    assert_eq!(runs.iter().map(|r| r["functions"].as_u64().unwrap()).collect::<Vec<_>>(), [1, 2, 20], "{many:#}");
    for run in runs {
        for key in ["up_after_s", "window_s", "rss_mb", "nats_server_rss_mb", "nats_server_rss_before_mb", "pickup_ms"] {
            assert!(run[key].as_f64().unwrap() > 0.0, "{key}: {run:#}");
        }
        assert!(run["window_s"].as_f64().unwrap() >= 3.0, "{run:#}");
        for key in ["cpu_busy", "nats_server_cpu_busy"] {
            assert!(run[key].as_f64().unwrap() >= 0.0, "{key}: {run:#}");
        }
        let delta = run["nats_server_rss_mb"].as_f64().unwrap() - run["nats_server_rss_before_mb"].as_f64().unwrap();
        assert!((run["nats_server_rss_delta_mb"].as_f64().unwrap() - delta).abs() < 0.01, "{run:#}");
        let last = run["functions"].as_u64().unwrap() - 1;
        assert!(run["pickup_function"].as_str().unwrap().ends_with(&format!("-{last}")), "the last function: {run:#}");
        let pid = run["pid"].as_u64().unwrap();
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "sluice up {pid} is still running");
    }

    // Scale-out: one node, then two, for three rounds; each run drained its whole backlog,
    // each node on a CPU of its own; the ratio is the median round's two ÷ one.
    let scale = &report["scale_out"];
    assert_eq!(scale["events"], 1500, "{scale:#}");
    let runs = scale["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 6, "{scale:#}");
    for (i, run) in runs.iter().enumerate() {
        assert_eq!(run["nodes"].as_u64().unwrap() as usize, 1 + i % 2, "one node, then two: {scale:#}");
        assert_eq!(run["round"].as_u64().unwrap() as usize, 1 + i / 2, "{scale:#}");
        assert_eq!(run["events"], 1500, "every event of the backlog was done: {run:#}");
        assert!(run["events_per_sec"].as_f64().unwrap() > 0.0 && run["timed_events"].as_u64().unwrap() > 0, "{run:#}");
        let processes = run["processes"].as_array().unwrap();
        let nodes: Vec<&serde_json::Value> = processes.iter().filter(|p| p["name"].as_str().unwrap().starts_with("node-")).collect();
        assert_eq!(nodes.len(), 1 + i % 2, "{run:#}");
        for (k, node) in nodes.iter().enumerate() {
            assert_eq!(node["name"], format!("node-{}", k + 1));
            assert_eq!(node["cpus"], scale["placement"][format!("node_{}", k + 1)], "each node on its own CPU: {run:#}");
        }
        assert!(processes.iter().any(|p| p["name"] == "nats-server") && processes.iter().any(|p| p["name"] == "bench"), "{run:#}");
        assert!(processes.iter().all(|p| !p["cpus"].as_str().unwrap().is_empty()), "{run:#}");
    }
    assert_ne!(scale["placement"]["node_1"], scale["placement"]["node_2"]);
    let rounds = scale["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3, "{scale:#}");
    let mut ratios: Vec<f64> = rounds
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (one, two) = (r["one_node_per_sec"].as_f64().unwrap(), r["two_nodes_per_sec"].as_f64().unwrap());
            assert_eq!(one, runs[2 * i]["events_per_sec"].as_f64().unwrap(), "{scale:#}");
            assert_eq!(two, runs[2 * i + 1]["events_per_sec"].as_f64().unwrap(), "{scale:#}");
            let ratio = r["ratio"].as_f64().unwrap();
            assert!((ratio - two / one).abs() < 0.001, "{r}");
            ratio
        })
        .collect();
    ratios.sort_by(f64::total_cmp);
    assert_eq!(number("scale_out.two_workers_vs_one"), ratios[1], "the median round's ratio: {scale:#}");
    assert_eq!(number("ratios.two_workers_vs_one"), ratios[1]);
    // No worker is left behind.
    let pids: Vec<u64> = runs.iter().flat_map(|r| r["processes"].as_array().unwrap().iter()).filter(|p| p["name"].as_str().unwrap().starts_with("node-")).map(|p| p["pid"].as_u64().unwrap()).collect();
    for pid in pids {
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "worker {pid} is still running");
    }

    // The Lambda runtimes, beside the wasm figures: both clients are installed here.
    let lambda = report["lambda"]["runtimes"].as_array().unwrap();
    let runtimes: Vec<&str> = lambda.iter().map(|r| r["runtime"].as_str().unwrap()).collect();
    assert!(runtimes.iter().any(|r| r.starts_with("python3.")) && runtimes.iter().any(|r| r.starts_with("nodejs")), "{report:#}");
    assert_eq!(report["lambda"]["skipped"], serde_json::json!([]));
    for runtime in lambda {
        for key in ["cold_start", "init"] {
            let (p50, p99) = (runtime[key]["p50_ms"].as_f64().unwrap(), runtime[key]["p99_ms"].as_f64().unwrap());
            assert!(p50 > 0.0 && p99 >= p50, "{key}: {runtime}");
        }
        assert!(runtime["warm_p50_ms"].as_f64().unwrap() > 0.0 && runtime["warm_p99_ms"].as_f64().unwrap() >= runtime["warm_p50_ms"].as_f64().unwrap());
        assert_eq!(runtime["warm_invocations"], 1000);
    }
}

#[test]
fn bad_arguments_exit_2() {
    let project = Project::new();
    for args in [["bench", "--events", "0"], ["bench", "--size", "4"], ["bench", "--concurrency", "0"], ["bench", "--functions", "0"], ["bench", "--idle-window", "0"]] {
        let out = project.sluice(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}
