//! API Gateway's HTTP API payload format 2.0: a request becomes the event a Lambda handler
//! behind API Gateway receives, and the handler's answer becomes the response the way API
//! Gateway maps it.

use std::collections::HashMap;

use aws_lambda_events::apigw::{ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext, ApiGatewayV2httpRequestContextHttpDescription, ApiGatewayV2httpResponse};
use aws_lambda_events::encodings::Body as LambdaBody;
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode, Uri};
use base64::Engine as _;
use bytes::Bytes;
use chrono::{DateTime, Utc};

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

/// Fields of the crate's type that belong to other payloads (custom authorizers, REST
/// APIs), never sent by an HTTP API.
const NOT_IN_V2: &[&str] = &["type", "methodArn", "httpMethod", "identitySource", "authorizationToken", "resource"];

/// The format 2.0 event of a request, as JSON.
pub fn event(request: &Request<'_>) -> serde_json::Value {
    let mut headers = HeaderMap::new();
    let mut cookies = Vec::new();
    for (name, value) in request.headers {
        if name == header::COOKIE {
            cookies.extend(String::from_utf8_lossy(value.as_bytes()).split(';').map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned));
            continue;
        }
        // Repeated headers are joined with commas, as API Gateway does.
        match headers.get_mut(name) {
            Some(existing) => {
                let joined = [existing.as_bytes(), b",", value.as_bytes()].concat();
                if let Ok(joined) = HeaderValue::from_bytes(&joined) {
                    *existing = joined;
                }
            }
            None => {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    let raw_query = request.uri.query().unwrap_or_default();
    let mut query: Vec<(String, Vec<String>)> = Vec::new();
    for (name, value) in form_urlencoded::parse(raw_query.as_bytes()) {
        match query.iter_mut().find(|(n, _)| *n == name) {
            Some((_, values)) => values.push(value.into_owned()),
            None => query.push((name.into_owned(), vec![value.into_owned()])),
        }
    }
    let (body, is_base64_encoded) = if request.body.is_empty() {
        (None, false)
    } else if is_text(request.headers, request.body) {
        (Some(String::from_utf8_lossy(request.body).into_owned()), false)
    } else {
        (Some(base64::engine::general_purpose::STANDARD.encode(request.body)), true)
    };

    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = request.method.clone();
    http.path = Some(request.uri.path().to_owned());
    http.protocol = Some("HTTP/1.1".to_owned());
    http.source_ip = Some(request.source_ip.clone());
    http.user_agent = request.headers.get(header::USER_AGENT).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some(request.route_key.to_owned());
    context.account_id = Some(crate::runtime::lambda::ACCOUNT_ID.to_owned());
    context.stage = Some("$default".to_owned());
    context.request_id = Some(request.request_id.to_owned());
    context.apiid = Some(request.api_id.to_owned());
    let host = request.headers.get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("localhost");
    context.domain_name = Some(host.to_owned());
    context.domain_prefix = Some(host.split('.').next().unwrap_or(host).to_owned());
    context.time = Some(request.time.format("%d/%b/%Y:%H:%M:%S %z").to_string());
    context.time_epoch = request.time.timestamp_millis();
    context.http = http;

    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".to_owned());
    event.route_key = Some(request.route_key.to_owned());
    event.raw_path = Some(request.uri.path().to_owned());
    event.raw_query_string = Some(raw_query.to_owned());
    event.cookies = (!cookies.is_empty()).then_some(cookies);
    event.headers = headers;
    event.path_parameters = request.path_parameters.iter().cloned().collect::<HashMap<_, _>>();
    event.request_context = context;
    event.body = body;
    event.is_base64_encoded = is_base64_encoded;
    let mut value = serde_json::to_value(&event).unwrap_or_default();
    if let Some(object) = value.as_object_mut() {
        for field in NOT_IN_V2 {
            object.remove(*field);
        }
        // Comma-joined like API Gateway (the crate's query map would pick one value).
        if query.is_empty() {
            object.remove("queryStringParameters");
        } else {
            let joined: serde_json::Map<String, serde_json::Value> =
                query.into_iter().map(|(name, values)| (name, serde_json::Value::String(values.join(",")))).collect();
            object.insert("queryStringParameters".to_owned(), serde_json::Value::Object(joined));
        }
        if object.get("stageVariables").is_some_and(|v| v.as_object().is_some_and(serde_json::Map::is_empty)) {
            object.remove("stageVariables");
        }
    }
    value
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
        let event = event(&Request {
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
