//! 1,000 requests at once through the gateway: every one is answered, and each answer is the
//! one for its own request (no replies mixed up between concurrent calls).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::http::{base, client, echo_function};
use common::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_thousand_concurrent_requests_each_get_their_own_answer() {
    let nats = NatsServer::start();
    let project = Project::new();
    echo_function(&project, "echo", "concurrency = 16\ntimeout = \"30s\"");
    project.trigger("api", "kind = \"http\"\n[routes.\"POST /echo/{n}\"]\nfunction = \"echo\"\n");
    let up = project.up(Some(&nats.url()));
    let url = base(&up);
    let http = client();
    let calls = (0..1000).map(|n| {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            let response = http.post(format!("{url}/echo/{n}?n={n}")).body(format!("{{\"n\": {n}}}")).send().await.unwrap();
            let status = response.status().as_u16();
            let id = response.headers().get("apigw-requestid").map(|v| v.to_str().unwrap().to_owned());
            let text = response.text().await.unwrap();
            (n, status, id, text)
        })
    });
    let answers = futures::future::join_all(calls).await;
    assert_eq!(answers.len(), 1000);
    for answer in answers {
        let (n, status, id, text) = answer.unwrap();
        assert_eq!(status, 200, "request {n}: {text}");
        let event: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(event["pathParameters"]["n"], n.to_string(), "request {n} got another's answer");
        assert_eq!(event["queryStringParameters"]["n"], n.to_string());
        assert_eq!(event["body"], format!("{{\"n\": {n}}}"));
        assert_eq!(event["requestContext"]["requestId"].as_str(), id.as_deref(), "request {n}");
    }
}
