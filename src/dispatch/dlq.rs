//! The dead-letter record: the original event (attributes and body) plus why it failed.

use chrono::{DateTime, SecondsFormat, Utc};

use crate::bus::{self, Bus, Published};
use crate::event::{Event, NATS_MSG_ID};

pub const FUNCTION: &str = "sluice-function";
pub const ERROR: &str = "sluice-error";
pub const ERROR_KIND: &str = "sluice-error-kind";
/// Lambda runtimes: the handler's `errorType` (`ValueError`, `Runtime.ImportModuleError`...).
pub const ERROR_TYPE: &str = "sluice-error-type";
pub const ATTEMPTS: &str = "sluice-attempts";
pub const ORIGINAL_SUBJECT: &str = "sluice-original-subject";
pub const ORIGINAL_SEQ: &str = "sluice-original-seq";
pub const FIRST_ATTEMPT: &str = "sluice-first-attempt";
pub const FAILED_AT: &str = "sluice-failed-at";
pub const REQUEST_ID: &str = "sluice-request-id";

/// Headers this module owns; stale copies from an earlier failure are replaced.
const FAILURE_HEADERS: &[&str] =
    &[FUNCTION, ERROR, ERROR_KIND, ERROR_TYPE, ATTEMPTS, ORIGINAL_SUBJECT, ORIGINAL_SEQ, FIRST_ATTEMPT, FAILED_AT, REQUEST_ID];

/// Whether a header is one of the failure headers a dead letter carries.
pub fn is_failure_header(name: &str) -> bool {
    FAILURE_HEADERS.iter().any(|h| h.eq_ignore_ascii_case(name))
}

/// Why an event is dead.
#[derive(Debug)]
pub struct DeadLetter<'a> {
    pub function: &'a str,
    pub error: &'a str,
    /// `error`, `trap`, `timeout`, `memory_limit`, `invalid_response`, `platform_error`, `lost`.
    pub error_kind: &'a str,
    /// Lambda's `errorType`, when a Lambda runtime reported one.
    pub error_type: Option<&'a str>,
    pub attempts: u32,
    pub original_subject: &'a str,
    pub original_stream: &'a str,
    pub original_seq: u64,
    pub first_attempt: DateTime<Utc>,
    pub failed_at: DateTime<Utc>,
    /// The request id of the last attempt, when it ran.
    pub request_id: Option<&'a str>,
}

/// Writes the dead letter to `sluice.dlq.<function>` and waits for JetStream's ack.
/// The id `<function>:<stream>:<seq>` makes a second write of the same delivery a duplicate.
pub async fn write(bus: &Bus, event: &Event, record: &DeadLetter<'_>) -> anyhow::Result<Published> {
    let mut event = event.clone();
    event.extensions.retain(|(name, _)| !is_failure_header(name));
    let time = |t: DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::Millis, true);
    event.set_extension(FUNCTION, record.function);
    event.set_extension(ERROR, one_line(record.error));
    event.set_extension(ERROR_KIND, record.error_kind);
    if let Some(error_type) = record.error_type {
        event.set_extension(ERROR_TYPE, one_line(error_type));
    }
    event.set_extension(ATTEMPTS, record.attempts.to_string());
    event.set_extension(ORIGINAL_SUBJECT, record.original_subject);
    event.set_extension(ORIGINAL_SEQ, record.original_seq.to_string());
    event.set_extension(FIRST_ATTEMPT, time(record.first_attempt));
    event.set_extension(FAILED_AT, time(record.failed_at));
    if let Some(request_id) = record.request_id {
        event.set_extension(REQUEST_ID, request_id);
    }
    let mut headers = event.to_headers();
    headers.insert(NATS_MSG_ID, format!("{}:{}:{}", record.function, record.original_stream, record.original_seq).as_str());
    bus.publish_raw(bus::dlq_subject(record.function), headers, event.data.clone()).await
}

/// Header values cannot hold line breaks; keep the error on one line, bounded in size.
fn one_line(text: &str) -> String {
    let flat: String = text.chars().map(|c| if c == '\r' || c == '\n' { ' ' } else { c }).collect();
    if flat.len() > 2048 {
        let cut = (0..=2048).rev().find(|&i| flat.is_char_boundary(i)).unwrap_or(0);
        format!("{}…", &flat[..cut])
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn errors_fit_in_a_header() {
        assert_eq!(super::one_line("a\nb\r\nc"), "a b  c");
        assert!(super::one_line(&"é".repeat(5000)).len() <= 2048 + 4);
        // The cut starts past 2048 bytes, not at them.
        assert_eq!(super::one_line(&"a".repeat(2048)), "a".repeat(2048));
        assert_eq!(super::one_line(&"a".repeat(2049)), format!("{}…", "a".repeat(2048)));
    }
}
