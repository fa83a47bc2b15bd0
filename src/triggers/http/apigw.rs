//! API Gateway's HTTP API payload format 2.0: a request becomes the event a Lambda handler
//! behind API Gateway receives, and the handler's answer becomes the response the way API
//! Gateway maps it.

use std::borrow::Cow;

use aws_lambda_events::apigw::ApiGatewayV2httpResponse;
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::ser::SerializeMap as _;
use serde::Serialize;

/// What the gateway knows about one request.
pub struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a Bytes,
    /// The matched route key (`GET /users/{id}`, `$default`).
    pub route_key: &'a str,
    pub path_parameters: &'a [(String, String)],
    pub request_id: &'a str,
    pub source_ip: String,
    /// The trigger's name, as the API's id.
    pub api_id: &'a str,
    pub time: DateTime<Utc>,
}

/// The format 2.0 event of a request, as the JSON API Gateway sends: the fields of
/// `aws_lambda_events`' `ApiGatewayV2httpRequest` that an HTTP API fills (a test reads it
/// back with that type), written straight from the request with no tree in between.
pub fn event(request: &Request<'_>) -> Bytes {
    let raw_query = request.uri.query().unwrap_or_default();
    // Repeated parameters are joined with commas, as API Gateway does.
    let mut query: Vec<(Cow<'_, str>, Cow<'_, str>)> = Vec::new();
    for (name, value) in form_urlencoded::parse(raw_query.as_bytes()) {
        match query.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => {
                let values = values.to_mut();
                values.push(',');
                values.push_str(&value);
            }
            None => query.push((name, value)),
        }
    }
    let (body, is_base64_encoded) = if request.body.is_empty() {
        (None, false)
    } else if is_text(request.headers, request.body) {
        (Some(String::from_utf8_lossy(request.body)), false)
    } else {
        (Some(Cow::Owned(base64::engine::general_purpose::STANDARD.encode(request.body))), true)
    };
    let host = request.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    let path = request.uri.path();
    let event = EventV2 {
        version: "2.0",
        route_key: request.route_key,
        raw_path: path,
        raw_query_string: raw_query,
        cookies: cookies(request.headers),
        headers: Headers(request.headers),
        query_string_parameters: Pairs(&query),
        path_parameters: Pairs(request.path_parameters),
        request_context: ContextV2 {
            route_key: request.route_key,
            account_id: crate::runtime::lambda::ACCOUNT_ID,
            stage: "$default",
            request_id: request.request_id,
            api_id: request.api_id,
            domain_name: host,
            domain_prefix: host.split('.').next().unwrap_or(host),
            time: request.time.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            time_epoch: request.time.timestamp_millis(),
            http: HttpV2 {
                method: request.method.as_str(),
                path,
                protocol: "HTTP/1.1",
                source_ip: &request.source_ip,
                user_agent: request.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()),
            },
        },
        body,
        is_base64_encoded,
    };
    let mut out = Vec::with_capacity(512 + request.body.len() * 4 / 3);
    // Writing into a Vec fails only if serializing fails, which these types never do.
    match serde_json::to_writer(&mut out, &event) {
        Ok(()) => Bytes::from(out),
        Err(_) => Bytes::from_static(b"{}"),
    }
}

/// Format 2.0 as API Gateway writes it for an HTTP API (no `stageVariables`, no fields of
/// the authorizer and REST payloads; `cookies`, `queryStringParameters`, `pathParameters`
/// and `body` only when there are some).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventV2<'a> {
    version: &'static str,
    route_key: &'a str,
    raw_path: &'a str,
    raw_query_string: &'a str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    cookies: Vec<String>,
    headers: Headers<'a>,
    #[serde(skip_serializing_if = "Pairs::is_empty")]
    query_string_parameters: Pairs<'a, Cow<'a, str>, Cow<'a, str>>,
    #[serde(skip_serializing_if = "Pairs::is_empty")]
    path_parameters: Pairs<'a, String, String>,
    request_context: ContextV2<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<Cow<'a, str>>,
    is_base64_encoded: bool,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContextV2<'a> {
    route_key: &'a str,
    account_id: &'a str,
    stage: &'a str,
    request_id: &'a str,
    api_id: &'a str,
    domain_name: &'a str,
    domain_prefix: &'a str,
    time: String,
    time_epoch: i64,
    http: HttpV2<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HttpV2<'a> {
    method: &'a str,
    path: &'a str,
    protocol: &'a str,
    source_ip: &'a str,
    user_agent: Option<&'a str>,
}

/// The cookies of the `Cookie` headers, one string each.
fn cookies(headers: &HeaderMap) -> Vec<String> {
    let mut cookies = Vec::new();
    for value in headers.get_all(header::COOKIE) {
        let text = String::from_utf8_lossy(value.as_bytes());
        cookies.extend(text.split(';').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned));
    }
    cookies
}

/// Headers by lower-case name, repeated ones joined with commas as API Gateway does; the
/// cookies are in `cookies` instead.
struct Headers<'a>(&'a HeaderMap);

impl Serialize for Headers<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        for name in self.0.keys() {
            if name == header::COOKIE {
                continue;
            }
            let mut values = self.0.get_all(name).iter();
            let first = values.next().map(|v| String::from_utf8_lossy(v.as_bytes()));
            let joined = values.fold(first.unwrap_or_default(), |mut joined, value| {
                let joined_mut = joined.to_mut();
                joined_mut.push(',');
                joined_mut.push_str(&String::from_utf8_lossy(value.as_bytes()));
                joined
            });
            map.serialize_entry(name.as_str(), &joined)?;
        }
        map.end()
    }
}

/// Name-value pairs as a JSON object (query and path parameters), in their order.
struct Pairs<'a, K, V>(&'a [(K, V)]);

impl<K, V> Pairs<'_, K, V> {
    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Serialize, V: Serialize> Serialize for Pairs<'_, K, V> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, value)| (name, value)))
    }
}

/// Whether API Gateway would pass the body as text: it is UTF-8 and its content type is
/// textual (or not given).
fn is_text(headers: &HeaderMap, body: &[u8]) -> bool {
    if std::str::from_utf8(body).is_err() {
        return false;
    }
    let Some(content_type) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else { return true };
    let essence = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    essence.starts_with("text/")
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
        || matches!(
            essence.as_str(),
            "application/json" | "application/xml" | "application/x-www-form-urlencoded" | "application/javascript" | "application/graphql" | "application/x-ndjson"
        )
}

/// The HTTP response for a function's answer, as API Gateway maps format 2.0: an object
/// with `statusCode` is a response description; any other JSON is a `200` JSON body (a JSON
/// string is the body's text). An answer that is not JSON is passed through.
pub fn response(answer: &Bytes) -> Result<Response<Body>, String> {
    /// Whether the answer is an object with `statusCode`, read without building it.
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "statusCode")]
        status_code: Option<serde::de::IgnoredAny>,
    }
    let trimmed = answer.slice_ref(answer.trim_ascii());
    let described = match serde_json::from_slice::<Probe>(&trimmed) {
        Ok(probe) => probe.status_code.is_some(),
        // Not an object: a JSON string is the body's text; other JSON (and an answer that is
        // not JSON) is passed through as it is.
        Err(_) => {
            let body = match serde_json::from_slice::<String>(&trimmed) {
                Ok(text) => Bytes::from(text),
                Err(_) => trimmed,
            };
            return Ok(plain(StatusCode::OK, "application/json", Body::from(body)));
        }
    };
    if !described {
        return Ok(plain(StatusCode::OK, "application/json", Body::from(trimmed)));
    }
    let mut value: serde_json::Value = serde_json::from_slice(&trimmed).map_err(|e| format!("the function's answer is not JSON: {e}"))?;
    if let Some(object) = value.as_object_mut() {
        // The crate wants every field; API Gateway treats missing ones as empty.
        object.entry("cookies").or_insert_with(|| serde_json::Value::Array(Vec::new()));
        for field in ["headers", "multiValueHeaders"] {
            if object.get(field).is_some_and(serde_json::Value::is_null) {
                object.remove(field);
            }
        }
        // Header values may be numbers or booleans in hand-written answers.
        for field in ["headers"] {
            if let Some(serde_json::Value::Object(headers)) = object.get_mut(field) {
                for value in headers.values_mut() {
                    if !value.is_string() {
                        *value = serde_json::Value::String(value.to_string());
                    }
                }
            }
        }
    }
    let described: ApiGatewayV2httpResponse = serde_json::from_value(value).map_err(|e| format!("the function's answer has statusCode but is not a valid response: {e}"))?;
    let status = u16::try_from(described.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .ok_or_else(|| format!("the function answered statusCode {}, not an HTTP status", described.status_code))?;
    let body = match described.body {
        None | Some(LambdaBody::Empty) => Bytes::new(),
        Some(LambdaBody::Text(text)) if described.is_base64_encoded => base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .map(Bytes::from)
            .map_err(|e| format!("the function's answer says isBase64Encoded but its body is not base64: {e}"))?,
        Some(LambdaBody::Text(text)) => Bytes::from(text),
        Some(LambdaBody::Binary(bytes)) => Bytes::from(bytes),
        Some(_) => Bytes::new(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    for (name, value) in &described.multi_value_headers {
        headers.append(name.clone(), value.clone());
    }
    for (name, value) in &described.headers {
        headers.insert(name.clone(), value.clone());
    }
    for cookie in &described.cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    if !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    Ok(response)
}

fn plain(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response<Body>) -> Bytes {
        axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap()
    }

    #[test]
    fn a_request_becomes_the_format_2_event() {
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("1"));
        headers.append("x-a", HeaderValue::from_static("2"));
        headers.insert(header::COOKIE, HeaderValue::from_static("a=1; b=2"));
        headers.insert(header::HOST, HeaderValue::from_static("api.example.com"));
        let uri: Uri = "/users/42?x=1&x=2&y=%20z".parse().unwrap();
        let body = Bytes::from_static(b"{\"k\":1}");
        let params = vec![("id".to_owned(), "42".to_owned())];
        let json = event(&Request {
            method: &Method::GET,
            uri: &uri,
            headers: &headers,
            body: &body,
            route_key: "GET /users/{id}",
            path_parameters: &params,
            request_id: "rid",
            source_ip: "127.0.0.1".into(),
            api_id: "api",
            time: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
        });
        let event: serde_json::Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(event["version"], "2.0");
        assert_eq!(event["routeKey"], "GET /users/{id}");
        assert_eq!(event["rawPath"], "/users/42");
        assert_eq!(event["rawQueryString"], "x=1&x=2&y=%20z");
        assert_eq!(event["cookies"], serde_json::json!(["a=1", "b=2"]));
        assert_eq!(event["headers"]["x-a"], "1,2");
        assert!(event["headers"].get("cookie").is_none());
        assert_eq!(event["queryStringParameters"], serde_json::json!({"x": "1,2", "y": " z"}));
        assert_eq!(event["pathParameters"], serde_json::json!({"id": "42"}));
        assert_eq!(event["requestContext"]["requestId"], "rid");
        assert_eq!(event["requestContext"]["http"]["method"], "GET");
        assert_eq!(event["requestContext"]["timeEpoch"], 1_700_000_000_000_i64);
        assert_eq!(event["requestContext"]["time"], "14/Nov/2023:22:13:20 +0000");
        assert_eq!(event["body"], "{\"k\":1}");
        assert_eq!(event["isBase64Encoded"], false);
        assert!(event.get("httpMethod").is_none() && event.get("type").is_none());
        assert!(event.get("stageVariables").is_none());
        assert_eq!(event["requestContext"]["domainPrefix"], "api");

        // What a Rust handler reads with aws_lambda_events' own type.
        let typed: aws_lambda_events::apigw::ApiGatewayV2httpRequest = serde_json::from_slice(&json).unwrap();
        assert_eq!(typed.raw_path.as_deref(), Some("/users/42"));
        assert_eq!(typed.cookies, Some(vec!["a=1".to_owned(), "b=2".to_owned()]));
        assert_eq!(typed.headers["x-a"], "1,2");
        assert_eq!(typed.query_string_parameters.first("y"), Some(" z"));
        assert_eq!(typed.path_parameters["id"], "42");
        assert_eq!(typed.request_context.http.method, Method::GET);
        assert_eq!(typed.request_context.http.source_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(typed.request_context.request_id.as_deref(), Some("rid"));
        assert_eq!(typed.body.as_deref(), Some("{\"k\":1}"));
    }

    #[test]
    fn a_bare_request_leaves_out_what_it_lacks() {
        let uri: Uri = "/".parse().unwrap();
        let json = event(&Request {
            method: &Method::POST,
            uri: &uri,
            headers: &HeaderMap::new(),
            body: &Bytes::new(),
            route_key: "$default",
            path_parameters: &[],
            request_id: "rid",
            source_ip: "::1".into(),
            api_id: "api",
            time: DateTime::from_timestamp(0, 0).unwrap(),
        });
        let event: serde_json::Value = serde_json::from_slice(&json).unwrap();
        for absent in ["cookies", "queryStringParameters", "pathParameters", "body"] {
            assert!(event.get(absent).is_none(), "{absent} in {event}");
        }
        assert_eq!(event["headers"], serde_json::json!({}));
        assert_eq!(event["rawQueryString"], "");
        assert_eq!(event["requestContext"]["domainName"], "localhost");
        assert_eq!(event["requestContext"]["http"]["userAgent"], serde_json::Value::Null);
        assert_eq!(event["isBase64Encoded"], false);
    }

    #[test]
    fn binary_bodies_are_base64() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
        assert!(!is_text(&headers, b"abc"));
        assert!(is_text(&HeaderMap::new(), b"abc"));
        assert!(!is_text(&HeaderMap::new(), &[0xff, 0xfe]));
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/vnd.api+json; charset=utf-8"));
        assert!(is_text(&headers, b"{}"));
    }

    #[tokio::test]
    async fn answers_map_back_like_api_gateway() {
        let r = response(&Bytes::from_static(br#"{"statusCode": 201, "headers": {"x-n": 5}, "cookies": ["a=1", "b=2"], "body": "made"}"#)).unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        assert_eq!(r.headers()["x-n"], "5");
        assert_eq!(r.headers().get_all(header::SET_COOKIE).iter().count(), 2);
        assert_eq!(body_of(r).await, "made");

        let r = response(&Bytes::from_static(br#"{"statusCode": 200, "isBase64Encoded": true, "body": "AAEC"}"#)).unwrap();
        assert_eq!(body_of(r).await.as_ref(), &[0u8, 1, 2]);

        let r = response(&Bytes::from_static(br#"{"statusCode": 204, "multiValueHeaders": {"x-m": ["1", "2"]}}"#)).unwrap();
        assert_eq!(r.headers().get_all("x-m").iter().count(), 2);

        // Any other JSON is the body as the function wrote it.
        let r = response(&Bytes::from_static(b" {\"hello\": \"world\"}\n")).unwrap();
        assert_eq!((r.status(), r.headers()[header::CONTENT_TYPE].clone()), (StatusCode::OK, HeaderValue::from_static("application/json")));
        assert_eq!(body_of(r).await, r#"{"hello": "world"}"#);
        assert_eq!(body_of(response(&Bytes::from_static(b"[1, 2]")).unwrap()).await, "[1, 2]");

        assert_eq!(body_of(response(&Bytes::from_static(br#""text""#)).unwrap()).await, "text");
        assert!(response(&Bytes::from_static(br#"{"statusCode": 99999}"#)).is_err());
        assert!(response(&Bytes::from_static(br#"{"statusCode": 200, "isBase64Encoded": true, "body": "!!"}"#)).is_err());
    }
}
