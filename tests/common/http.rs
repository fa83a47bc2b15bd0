//! Helpers for the HTTP gateway's tests: a project with the `http-echo` example behind
//! routes, and a real HTTP client.

use std::time::Duration;

use super::{Project, Up};

/// The base URL of a running `sluice up`'s HTTP listener.
pub fn base(up: &Up) -> String {
    up.http.clone().unwrap_or_else(|| panic!("sluice up printed no HTTP address; its log:\n{}", up.log()))
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap()
}

/// Adds function `name` running the `http-echo` example with extra TOML lines.
pub fn echo_function(project: &Project, name: &str, extra: &str) {
    project.function(name, "http-echo", extra);
}

/// The `requestId` of a gateway error body.
pub fn request_id_of(body: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"));
    value["requestId"].as_str().unwrap_or_else(|| panic!("no requestId in {body}")).to_owned()
}
