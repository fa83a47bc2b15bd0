//! The gateway's round trip with a real HTTP client: path parameters, query strings,
//! cookies, headers and binary bodies reach the function as API Gateway's format 2.0 event
//! and its answer comes back as API Gateway maps it; and the error statuses (404, 413, 502,
//! 504), each naming the request id. Guards the event shape handlers written for API
//! Gateway depend on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // tests fail loudly

mod common;

use common::http::{base, client, echo_function, request_id_of};
use common::*;

const ROUTES: &str = r#"kind = "http"
[routes."ANY /echo/{proxy+}"]
function = "echo"
[routes."GET /users/{id}"]
function = "echo"
[routes."GET /slow"]
function = "slow"
"#;

#[tokio::test(flavor = "multi_thread")]
async fn requests_and_answers_round_trip_like_api_gateway() {
    let nats = NatsServer::start();
    let project = Project::new();
    echo_function(&project, "echo", "");
    echo_function(&project, "slow", "timeout = \"1s\"");
    project.trigger("api", ROUTES);
    let up = project.up(Some(&nats.url()));
    let url = base(&up);
    let http = client();

    // Path parameters (decoded), repeated query parameters, cookies and headers.
    let response = http
        .get(format!("{url}/users/a%20b?tag=x&tag=y&q=1"))
        .header("cookie", "session=s1; theme=dark")
        .header("x-custom", "one")
        .header("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let request_id = response.headers()["apigw-requestid"].to_str().unwrap().to_owned();
    assert_eq!(response.headers()["x-echo-route"], "GET /users/{id}");
    let cookies: Vec<&str> = response.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap()).collect();
    assert_eq!(cookies, ["session=s1", "theme=dark"], "cookies come back as Set-Cookie");
    let event: serde_json::Value = response.json().await.unwrap();
    assert_eq!(event["version"], "2.0");
    assert_eq!(event["routeKey"], "GET /users/{id}");
    assert_eq!(event["rawPath"], "/users/a%20b");
    assert_eq!(event["rawQueryString"], "tag=x&tag=y&q=1");
    assert_eq!(event["pathParameters"], serde_json::json!({"id": "a b"}));
    assert_eq!(event["queryStringParameters"], serde_json::json!({"tag": "x,y", "q": "1"}));
    assert_eq!(event["cookies"], serde_json::json!(["session=s1", "theme=dark"]));
    assert_eq!(event["headers"]["x-custom"], "one");
    assert_eq!(event["requestContext"]["requestId"], request_id.as_str());
    assert_eq!(event["requestContext"]["http"]["method"], "GET");
    assert_eq!(event["requestContext"]["http"]["sourceIp"], "127.0.0.1");
    assert_eq!(event["requestContext"]["routeKey"], "GET /users/{id}");
    assert!(event["requestContext"]["timeEpoch"].as_i64().unwrap() > 1_700_000_000_000);
    assert_eq!(event["isBase64Encoded"], false);
    assert!(up.log().contains(&request_id), "the function's log names the request id");

    // A text body arrives as text; a binary body as base64, and comes back as the same bytes.
    let response = http.post(format!("{url}/echo/text")).header("content-type", "application/json").body(r#"{"k":1}"#).send().await.unwrap();
    let event: serde_json::Value = response.json().await.unwrap();
    assert_eq!((event["body"].as_str(), event["isBase64Encoded"].as_bool()), (Some(r#"{"k":1}"#), Some(false)));
    assert_eq!(event["routeKey"], "ANY /echo/{proxy+}");
    assert_eq!(event["pathParameters"]["proxy"], "text");
    let binary: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
    let response = http
        .put(format!("{url}/echo/deep/path.bin?echo=body"))
        .header("content-type", "application/octet-stream")
        .body(binary.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/octet-stream");
    assert_eq!(response.bytes().await.unwrap().to_vec(), binary, "binary bodies survive base64 both ways");
    let response = http.put(format!("{url}/echo/x")).header("content-type", "image/png").body(vec![0x89u8, b'P', b'N', b'G']).send().await.unwrap();
    let event: serde_json::Value = response.json().await.unwrap();
    assert_eq!((event["body"].as_str(), event["isBase64Encoded"].as_bool()), (Some("iVBORw=="), Some(true)));

    // The function chooses the status.
    let response = http.get(format!("{url}/echo/made?status=201")).send().await.unwrap();
    assert_eq!(response.status(), 201);

    // Errors: each a JSON body naming the request id, the same as the header.
    let cases = [
        (http.get(format!("{url}/nowhere")), 404),
        (http.post(format!("{url}/users/1")), 404),
        (http.get(format!("{url}/echo/x?fail=1")), 502),
        (http.get(format!("{url}/slow?loop=1")), 504),
        (http.post(format!("{url}/echo/big")).body(vec![b'x'; 6 * 1024 * 1024 + 1]), 413),
    ];
    for (request, status) in cases {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), status);
        let header = response.headers()["apigw-requestid"].to_str().unwrap().to_owned();
        let body = response.text().await.unwrap();
        assert_eq!(request_id_of(&body), header, "status {status}: {body}");
    }
    // A body just under the limit is accepted.
    let response = http.post(format!("{url}/echo/big?echo=body")).body(vec![b'x'; 1024 * 1024]).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().len(), 1024 * 1024);
}
