//! Answers an API Gateway format 2.0 event (an `http` trigger's request) with a response
//! describing it, the way a Lambda function behind API Gateway does:
//! - by default the body is the whole event as JSON, with the request's cookies set back;
//! - `?echo=body` answers with the request's own body and content type (binary bodies stay
//!   base64 both ways);
//! - `?status=N` answers that status; `?sleep_ms=N` waits first; `?fail=1` fails (exit
//!   status 1); `?loop=1` never answers (stopped at the function's timeout);
//!   `?print_mb=N` writes N MiB of log lines first (to show the per-invocation log cap).

use std::io::Read;

use serde_json::{json, Value};

fn main() {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let event: Value = match serde_json::from_str(&input) {
        Ok(event) => event,
        Err(error) => {
            eprintln!("the event is not JSON: {error}");
            std::process::exit(1);
        }
    };
    let query = |name: &str| event["queryStringParameters"][name].as_str().map(str::to_owned);
    eprintln!("{} {}", event["requestContext"]["http"]["method"].as_str().unwrap_or("?"), event["rawPath"].as_str().unwrap_or("?"));
    if let Some(mib) = query("print_mb").and_then(|n| n.parse::<usize>().ok()) {
        use std::io::Write as _;
        let line = format!("{}\n", "x".repeat(1023));
        let mut stderr = std::io::stderr().lock();
        for _ in 0..mib * 1024 {
            let _ = stderr.write_all(line.as_bytes());
        }
    }
    if let Some(ms) = query("sleep_ms").and_then(|ms| ms.parse().ok()) {
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    if query("fail").is_some() {
        eprintln!("failing on purpose");
        std::process::exit(1);
    }
    if query("loop").is_some() {
        loop {
            std::hint::spin_loop();
        }
    }
    let status: u16 = query("status").and_then(|s| s.parse().ok()).unwrap_or(200);
    let route = event["routeKey"].clone();
    let response = if query("echo").as_deref() == Some("body") {
        let content_type = event["headers"]["content-type"].as_str().unwrap_or("application/octet-stream").to_owned();
        json!({
            "statusCode": status,
            "headers": {"content-type": content_type, "x-echo-route": route},
            "isBase64Encoded": event["isBase64Encoded"],
            "body": event["body"].as_str().unwrap_or_default(),
        })
    } else {
        json!({
            "statusCode": status,
            "headers": {"content-type": "application/json", "x-echo-route": route},
            "cookies": event["cookies"].as_array().cloned().unwrap_or_default(),
            "body": event.to_string(),
        })
    };
    println!("{response}");
}
