//! Reads the objects of an S3 event notification from the buckets mounted at
//! `/buckets/<name>`, counts lines, words and bytes, and writes a JSON summary per object to
//! `/buckets/$REPORTS_BUCKET/<key>.json`. Answers with the summaries.
//!
//! The same handler shape as a Lambda S3 handler: `Records[].s3.bucket.name` and
//! `Records[].s3.object.key` (URL-encoded, `+` for a space).

use std::io::Read;

use serde_json::{json, Value};

fn main() {
    let mut input = String::new();
    if let Err(error) = std::io::stdin().read_to_string(&mut input) {
        fail(&format!("cannot read the event: {error}"));
    }
    let event: Value = serde_json::from_str(&input).unwrap_or_else(|e| fail(&format!("the event is not JSON: {e}")));
    let records = event.get("Records").and_then(Value::as_array).unwrap_or_else(|| fail("no Records: not an S3 event"));
    let reports_bucket = std::env::var("REPORTS_BUCKET").unwrap_or_else(|_| "reports".to_owned());
    let mut summaries = Vec::new();
    for record in records {
        let name = record.get("eventName").and_then(Value::as_str).unwrap_or_default();
        if !name.starts_with("ObjectCreated:") {
            continue;
        }
        let bucket = record.pointer("/s3/bucket/name").and_then(Value::as_str).unwrap_or_else(|| fail("no s3.bucket.name"));
        let key = record.pointer("/s3/object/key").and_then(Value::as_str).unwrap_or_else(|| fail("no s3.object.key"));
        let key = decode_key(key);
        let path = format!("/buckets/{bucket}/{key}");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| fail(&format!("cannot read {path}: {e}")));
        let text = String::from_utf8_lossy(&bytes);
        let summary = json!({
            "bucket": bucket,
            "key": key,
            "bytes": bytes.len(),
            "lines": text.lines().count(),
            "words": text.split_whitespace().count(),
            "etag": record.pointer("/s3/object/eTag"),
        });
        let report = format!("/buckets/{reports_bucket}/{key}.json");
        if let Some(folder) = std::path::Path::new(&report).parent() {
            let _ = std::fs::create_dir_all(folder);
        }
        if let Err(error) = std::fs::write(&report, format!("{summary:#}\n")) {
            fail(&format!("cannot write {report}: {error}"));
        }
        eprintln!("{key}: {} lines, {} words, {} bytes -> {report}", summary["lines"], summary["words"], summary["bytes"]);
        summaries.push(summary);
    }
    println!("{}", json!({ "reports": summaries }));
}

/// S3 notification keys are form-encoded: `+` is a space, `%XX` a byte.
fn decode_key(key: &str) -> String {
    let plus_decoded = key.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_decoded).decode_utf8_lossy().into_owned()
}

fn fail(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(1);
}
