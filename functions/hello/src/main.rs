//! Greets `event.name`, or, for an HTTP request (API Gateway's format 2.0 event), the `name`
//! path parameter or the `name` of its JSON body. The event arrives on stdin, the response
//! goes to stdout as JSON, logs go to stderr; the invocation context is in `SLUICE_*`
//! environment variables.

use std::io::Read;

fn main() {
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        eprintln!("cannot read the event: {error}");
        std::process::exit(1);
    }
    let event: serde_json::Value = match serde_json::from_str(&input) {
        Ok(event) => event,
        Err(error) => {
            eprintln!("the event is not JSON: {error}");
            std::process::exit(1);
        }
    };
    let body: serde_json::Value = event.get("body").and_then(|b| b.as_str()).and_then(|b| serde_json::from_str(b).ok()).unwrap_or_default();
    let name = event
        .get("name")
        .or_else(|| event.get("pathParameters").and_then(|p| p.get("name")))
        .or_else(|| body.get("name"))
        .and_then(|n| n.as_str())
        .unwrap_or("world");
    let request_id = std::env::var("SLUICE_REQUEST_ID").unwrap_or_default();
    let attempt: u32 = std::env::var("SLUICE_ATTEMPT").ok().and_then(|a| a.parse().ok()).unwrap_or(1);
    eprintln!("greeting {name}");
    let response = serde_json::json!({
        "message": format!("Hello, {name}!"),
        "request_id": request_id,
        "event_id": std::env::var("SLUICE_EVENT_ID").unwrap_or_default(),
        "attempt": attempt,
    });
    println!("{response}");
}
