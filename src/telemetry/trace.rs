//! `sluice events trace EVENT_ID`: one event's life in time order, put together from what
//! the bus keeps: its messages in `SLUICE_EVENTS` (the first store, each replay, the events
//! it chained), the invocation records in `SLUICE_LOGS` (every attempt on every node, dead
//! letters) and `SLUICE_DLQ` (whether a dead letter is still there).
//!
//! The JSON shape is a contract: `{"event_id", "steps": [{"at", "step", ...}]}`, `step` one of
//! `stored`, `attempt`, `dead_letter`, `replay`, `chained`.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;
use serde_json::{json, Map, Value};

use super::logs::{Record, RecordKind};

/// An event's message in `SLUICE_EVENTS`.
#[derive(Debug, Clone)]
pub struct Stored {
    pub seq: u64,
    pub at: DateTime<Utc>,
    pub subject: String,
    pub event_id: String,
    pub source: String,
    pub ty: String,
    /// `sluice-replay-of`: the dead letter a replay came from.
    pub replay_of: Option<u64>,
}

#[derive(Debug, Serialize)]
pub struct Trace {
    pub event_id: String,
    pub steps: Vec<Step>,
}

#[derive(Debug, Serialize)]
pub struct Step {
    pub at: DateTime<Utc>,
    pub step: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    #[serde(flatten)]
    pub detail: Map<String, Value>,
}

/// Whether `candidate` is `id` itself or an event chained from it (`<id>:<function>`, and so
/// on down the chain).
pub fn related(id: &str, candidate: &str) -> bool {
    candidate == id || candidate.strip_prefix(id).is_some_and(|rest| rest.starts_with(':'))
}

/// The steps of `id`'s life from its messages, records and the dead letters still in the
/// DLQ (`in_dlq`), in time order.
pub fn assemble(id: &str, stored: &[Stored], records: &[Record], in_dlq: &HashSet<u64>) -> Trace {
    let mut steps = Vec::new();
    for message in stored.iter().filter(|m| related(id, &m.event_id)) {
        let topic = crate::bus::subject_topic(&message.subject);
        let direct = message.subject.strip_prefix(crate::bus::DIRECT_PREFIX);
        let mut detail = Map::new();
        detail.insert("seq".into(), json!(message.seq));
        detail.insert("subject".into(), json!(message.subject));
        if let Some(topic) = topic {
            detail.insert("topic".into(), json!(topic));
        }
        detail.insert("source".into(), json!(message.source));
        detail.insert("type".into(), json!(message.ty));
        let (step, function) = if message.event_id != id {
            detail.insert("event_id".into(), json!(message.event_id));
            // `<cause>:<function>`: the function whose success published it.
            ("chained", message.event_id.rsplit(':').next().map(str::to_owned))
        } else if let Some(dlq_id) = message.replay_of {
            detail.insert("dlq_id".into(), json!(dlq_id));
            ("replay", direct.map(str::to_owned))
        } else {
            ("stored", direct.map(str::to_owned))
        };
        steps.push(Step { at: message.at, step, function, detail });
    }
    for record in records.iter().filter(|r| related(id, &r.event_id)) {
        let mut detail = Map::new();
        if record.event_id != id {
            detail.insert("event_id".into(), json!(record.event_id));
        }
        let step = match record.kind {
            RecordKind::Invocation => {
                detail.insert("attempt".into(), json!(record.attempt));
                detail.insert("node".into(), json!(record.node));
                detail.insert("request_id".into(), json!(record.request_id));
                detail.insert("duration_ms".into(), json!(record.duration_ms));
                detail.insert("outcome".into(), json!(record.outcome));
                if let Some(error) = &record.error {
                    detail.insert("error".into(), json!(error));
                }
                if record.cold() {
                    detail.insert("cold_start".into(), json!(true));
                }
                if let Some(seq) = record.event_seq {
                    detail.insert("seq".into(), json!(seq));
                }
                "attempt"
            }
            RecordKind::DeadLetter => {
                detail.insert("attempts".into(), json!(record.attempt));
                detail.insert("error_kind".into(), json!(record.outcome));
                detail.insert("error".into(), json!(record.error));
                detail.insert("node".into(), json!(record.node));
                if let Some(dlq_id) = record.dlq_seq {
                    detail.insert("dlq_id".into(), json!(dlq_id));
                    detail.insert("in_dlq".into(), json!(in_dlq.contains(&dlq_id)));
                }
                "dead_letter"
            }
            RecordKind::Throttle => continue,
        };
        steps.push(Step { at: record.start, step, function: Some(record.function.clone()), detail });
    }
    // Same instant: a store comes before what it caused.
    let order = |step: &str| match step {
        "stored" | "replay" | "chained" => 0,
        "attempt" => 1,
        _ => 2,
    };
    steps.sort_by(|a, b| a.at.cmp(&b.at).then(order(a.step).cmp(&order(b.step))));
    Trace { event_id: id.to_owned(), steps }
}

/// The trace for people: one line per step.
pub fn render(trace: &Trace) -> String {
    let mut out = format!("Event {}", trace.event_id);
    let text = |d: &Map<String, Value>, key: &str| d.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let number = |d: &Map<String, Value>, key: &str| d.get(key).map(ToString::to_string).unwrap_or_default();
    for step in &trace.steps {
        let d = &step.detail;
        let function = step.function.as_deref().unwrap_or("-");
        let line = match step.step {
            "stored" => match d.get("topic").and_then(Value::as_str) {
                Some(topic) => format!("stored       on topic {topic} by {} (type {}, seq {})", text(d, "source"), text(d, "type"), number(d, "seq")),
                None => format!("stored       for {function} by {} (type {}, seq {})", text(d, "source"), text(d, "type"), number(d, "seq")),
            },
            "replay" => format!("replay       of DLQ entry {} to {function} (seq {})", number(d, "dlq_id"), number(d, "seq")),
            "chained" => format!("chained      event {} by {function} on topic {}", text(d, "event_id"), text(d, "topic")),
            "attempt" => {
                let outcome = text(d, "outcome");
                let duration = d.get("duration_ms").and_then(Value::as_f64).unwrap_or_default();
                let error = d.get("error").and_then(Value::as_str).map(|e| format!(": {e}")).unwrap_or_default();
                let cold = if d.contains_key("cold_start") { ", cold start" } else { "" };
                let of = d.get("event_id").and_then(Value::as_str).map(|e| format!(" of {e}")).unwrap_or_default();
                format!(
                    "attempt {:<4} {function}{of} on {}: {outcome} in {duration:.2} ms{cold}{error} (request {})",
                    number(d, "attempt"),
                    text(d, "node"),
                    text(d, "request_id")
                )
            }
            "dead_letter" => {
                let still = match d.get("in_dlq").and_then(Value::as_bool) {
                    Some(true) => "still in the DLQ",
                    Some(false) => "since replayed or purged",
                    None => "",
                };
                format!(
                    "dead letter  {function} after {} attempt(s): {}: {} (DLQ entry {}, {still})",
                    number(d, "attempts"),
                    text(d, "error_kind"),
                    text(d, "error"),
                    number(d, "dlq_id")
                )
            }
            other => other.to_owned(),
        };
        out.push_str(&format!("\n  {}  {line}", step.at.to_rfc3339_opts(SecondsFormat::Millis, true)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::logs::tests::record;
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    #[test]
    fn a_failed_then_replayed_event_reads_in_order() {
        let stored = vec![
            Stored { seq: 10, at: at(0), subject: "sluice.events.orders".into(), event_id: "e1".into(), source: "sluice:cli".into(), ty: "t".into(), replay_of: None },
            Stored { seq: 30, at: at(5000), subject: "sluice.direct.f".into(), event_id: "e1".into(), source: "sluice:cli".into(), ty: "t".into(), replay_of: Some(7) },
            Stored { seq: 31, at: at(5002), subject: "sluice.events.done".into(), event_id: "e1:f".into(), source: "sluice:function:f".into(), ty: "r".into(), replay_of: None },
            Stored { seq: 40, at: at(1), subject: "sluice.events.orders".into(), event_id: "e10".into(), source: "x".into(), ty: "t".into(), replay_of: None },
        ];
        let attempt = |n: u32, ms: i64, outcome: &str| {
            let mut r = record("f", n);
            r.event_id = "e1".into();
            r.attempt = n;
            r.start = at(ms);
            r.outcome = outcome.into();
            r
        };
        let mut dead = attempt(2, 2000, "error");
        dead.kind = RecordKind::DeadLetter;
        dead.dlq_seq = Some(7);
        let mut unrelated = record("f", 3);
        unrelated.event_id = "e10".into();
        let records = vec![attempt(2, 1000, "error"), attempt(1, 10, "error"), dead, attempt(1, 5001, "success"), unrelated];
        let trace = assemble("e1", &stored, &records, &HashSet::new());
        let steps: Vec<&str> = trace.steps.iter().map(|s| s.step).collect();
        assert_eq!(steps, ["stored", "attempt", "attempt", "dead_letter", "replay", "attempt", "chained"]);
        assert_eq!(trace.steps[1].detail["attempt"], 1);
        assert_eq!(trace.steps[3].detail["in_dlq"], false);
        assert_eq!(trace.steps[4].detail["dlq_id"], 7);
        assert_eq!(trace.steps[4].function.as_deref(), Some("f"));
        assert_eq!(trace.steps[6].function.as_deref(), Some("f"));
        let json = serde_json::to_value(&trace).unwrap();
        assert_eq!(json["event_id"], "e1");
        assert_eq!(json["steps"][0]["step"], "stored");
        assert_eq!(json["steps"][0]["topic"], "orders");
        let text = render(&trace);
        assert_eq!(text.lines().count(), 8, "{text}");
        assert!(text.contains("dead letter  f after 2 attempt(s): error"), "{text}");
    }

    #[test]
    fn related_ids_are_the_event_and_its_chain() {
        assert!(related("a", "a"));
        assert!(related("a", "a:f"));
        assert!(related("a", "a:f:g"));
        assert!(!related("a", "ab"));
        assert!(!related("a:f", "a"));
    }
}
