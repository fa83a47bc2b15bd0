//! API Gateway's own features in front of functions, with a real HTTP client: API keys
//! (401/403 before the function runs), throttling per key at the configured rate (429 with
//! Retry-After), CORS preflights, request validation (400, nothing stored) and the response
//! cache (hit within the TTL, miss after). Guards each layer against being skipped.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use std::time::{Duration, Instant};

use common::http::{base, client, echo_function, request_id_of};
use common::*;

const ROUTES: &str = r#"kind = "http"
[routes."GET /private"]
function = "echo"
api_key = true
[routes."POST /orders"]
topic = "orders"
api_key = true
schema = "schemas/order.json"
[routes."GET /limited"]
function = "echo"
api_key = true
throttle = { rate = 5, burst = 5 }
[routes."GET /cached/{id}"]
function = "echo"
cache_ttl = "1s"
[routes."ANY /web/{proxy+}"]
function = "echo"
cors = { origins = ["https://app.example.com"], max_age = "10m" }
"#;

#[tokio::test(flavor = "multi_thread")]
async fn keys_throttling_cors_validation_and_cache() {
    let nats = NatsServer::start();
    let project = Project::new();
    echo_function(&project, "echo", "");
    project.trigger("api", ROUTES);
    std::fs::create_dir_all(project.path().join("schemas")).unwrap();
    std::fs::write(
        project.path().join("schemas/order.json"),
        r#"{"type": "object", "required": ["item"], "properties": {"item": {"type": "string"}, "qty": {"type": "integer", "minimum": 1}}}"#,
    )
    .unwrap();
    std::fs::write(project.path().join("keys.txt"), "# partners\npartner:partner-secret\n").unwrap();
    let settings = std::fs::read_to_string(project.path().join("sluice.toml")).unwrap();
    std::fs::write(project.path().join("sluice.toml"), format!("{settings}[http]\napi_keys_file = \"keys.txt\"\n")).unwrap();
    let up = project.up_with_env(Some(&nats.url()), &[("SLUICE_API_KEYS", "alice:alice-secret,bob:bob-secret")]);
    let url = base(&up);
    let http = client();
    let js = async_nats::jetstream::new(nats.client().await);

    // API keys: none 401, wrong 403 (the function never runs), right ones (env and file) 200.
    let missing = http.get(format!("{url}/private")).send().await.unwrap();
    assert_eq!(missing.status(), 401);
    let missing_id = request_id_of(&missing.text().await.unwrap());
    let wrong = http.get(format!("{url}/private")).header("x-api-key", "alice-secreT").send().await.unwrap();
    assert_eq!(wrong.status(), 403);
    let wrong_id = request_id_of(&wrong.text().await.unwrap());
    for key in ["alice-secret", "partner-secret"] {
        let ok = http.get(format!("{url}/private")).header("x-api-key", key).send().await.unwrap();
        assert_eq!(ok.status(), 200, "key {key}");
    }
    let log = up.log();
    assert!(!log.contains(&missing_id) && !log.contains(&wrong_id), "a refused request reached the function:\n{log}");
    assert!(!log.contains("alice-secret") && !log.contains("partner-secret"), "keys are never logged");

    // Validation: a body that breaks the schema is 400 with the violation, and not stored;
    // a good one is 202 and stored once.
    let bad = http.post(format!("{url}/orders")).header("x-api-key", "bob-secret").body(r#"{"item": "book", "qty": 0}"#).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let text = bad.text().await.unwrap();
    assert!(text.contains("/qty"), "the first violation is named: {text}");
    let not_json = http.post(format!("{url}/orders")).header("x-api-key", "bob-secret").body("item=book").send().await.unwrap();
    assert_eq!(not_json.status(), 400);
    let good = http.post(format!("{url}/orders")).header("x-api-key", "bob-secret").body(r#"{"item": "book", "qty": 2}"#).send().await.unwrap();
    assert_eq!(good.status(), 202);
    wait_stream_count(&js, "SLUICE_EVENTS", 1, Duration::from_secs(10)).await;
    assert_eq!(stream_count(&js, "SLUICE_EVENTS").await, 1, "only the valid order was stored");

    // Throttling: rate 5/s, burst 5, per key. Sent as fast as possible for about 2 s, a key
    // gets its burst plus the rate over the time taken, and 429s with Retry-After for the rest;
    // another key has a bucket of its own.
    let started = Instant::now();
    let (mut passed, mut throttled) = (0u32, 0u32);
    while started.elapsed() < Duration::from_secs(2) {
        let response = http.get(format!("{url}/limited")).header("x-api-key", "alice-secret").send().await.unwrap();
        match response.status().as_u16() {
            200 => passed += 1,
            429 => {
                throttled += 1;
                let retry: u64 = response.headers()["retry-after"].to_str().unwrap().parse().unwrap();
                assert!((1..=1).contains(&retry), "Retry-After {retry}");
            }
            other => panic!("status {other}"),
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let allowed = 5 + (5.0 * elapsed).ceil() as u32;
    assert!(passed >= 5 && passed <= allowed, "{passed} passed in {elapsed:.2} s; at most {allowed} allowed");
    assert!(throttled > 0, "nothing was throttled ({passed} passed)");
    let other = http.get(format!("{url}/limited")).header("x-api-key", "bob-secret").send().await.unwrap();
    assert_eq!(other.status(), 200, "another key is not throttled by alice's use");

    // CORS: the preflight is answered by the gateway (no function run, no key needed), and
    // responses carry the allow-origin header for an allowed origin only.
    let preflight = http
        .request(reqwest::Method::OPTIONS, format!("{url}/web/page"))
        .header("origin", "https://app.example.com")
        .header("access-control-request-method", "PUT")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(preflight.headers()["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(preflight.headers()["access-control-max-age"], "600");
    assert!(preflight.headers()["access-control-allow-methods"].to_str().unwrap().contains("PUT"));
    let preflight_id = preflight.headers()["apigw-requestid"].to_str().unwrap().to_owned();
    assert!(!up.log().contains(&preflight_id), "the preflight reached the function");
    let allowed = http.get(format!("{url}/web/page")).header("origin", "https://app.example.com").send().await.unwrap();
    assert_eq!(allowed.headers()["access-control-allow-origin"], "https://app.example.com");
    let foreign = http.get(format!("{url}/web/page")).header("origin", "https://evil.example").send().await.unwrap();
    assert!(foreign.headers().get("access-control-allow-origin").is_none());

    // Cache: the second identical GET within the TTL is a hit with the first answer (which
    // names the first request's id); other queries and other paths are misses; after the TTL
    // it is a miss again.
    let first = http.get(format!("{url}/cached/1?v=1")).send().await.unwrap();
    assert_eq!(first.headers()["x-sluice-cache"], "miss");
    let first_id = first.headers()["apigw-requestid"].to_str().unwrap().to_owned();
    let first_body = first.text().await.unwrap();
    let second = http.get(format!("{url}/cached/1?v=1")).send().await.unwrap();
    assert_eq!(second.headers()["x-sluice-cache"], "hit");
    assert_ne!(second.headers()["apigw-requestid"].to_str().unwrap(), first_id, "each response has its own request id");
    assert_eq!(second.text().await.unwrap(), first_body, "a hit is the cached answer");
    let other_query = http.get(format!("{url}/cached/1?v=2")).send().await.unwrap();
    assert_eq!(other_query.headers()["x-sluice-cache"], "miss");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let again = http.get(format!("{url}/cached/1?v=1")).send().await.unwrap();
        if again.headers()["x-sluice-cache"] == "miss" {
            assert_ne!(again.text().await.unwrap(), first_body, "a miss runs the function again");
            break;
        }
        assert!(Instant::now() < deadline, "the cached answer outlived its 1 s TTL");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
