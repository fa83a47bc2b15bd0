//! When a cron trigger fires: cron expressions (with seconds) in an IANA timezone, or fixed
//! intervals (`@every 30s`, `rate(5 minutes)`).
//!
//! Daylight-saving transitions behave as in Vixie cron:
//! - A job whose hour field names specific hours ("0 30 2 * * *") runs once per day: a
//!   wall-clock time that does not exist (spring forward) fires at the transition, one that
//!   occurs twice (fall back) fires at its first occurrence only.
//! - A job that runs every hour ("0 */15 * * * *") follows real time: times in the skipped
//!   hour do not exist, and the repeated hour runs twice.
//!
//! Interval schedules are aligned to the Unix epoch, so every process agrees on the ticks.

use std::str::FromStr as _;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDateTime, Offset as _, TimeZone, Utc};
use chrono_tz::Tz;

/// Shortest interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub enum Schedule {
    Cron { expression: Box<cron::Schedule>, timezone: Tz, every_hour: bool },
    Interval(Duration),
}

impl Schedule {
    /// Parses `schedule` in `timezone` (ignored by interval schedules).
    pub fn parse(schedule: &str, timezone: Tz) -> Result<Self, String> {
        let text = schedule.trim();
        if let Some(every) = text.strip_prefix("@every") {
            let every = every.trim();
            let interval = humantime::parse_duration(every)
                .map_err(|e| format!("{every:?} after @every is not a duration ({e}); write e.g. \"@every 30s\""))?;
            return Self::interval(interval);
        }
        if let Some(rate) = text.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            return Self::interval(parse_rate(rate)?);
        }
        let expression = cron::Schedule::from_str(text).map_err(|e| {
            format!(
                "{text:?} is not a cron expression ({e}); use six or seven fields with seconds first \
                 (\"0 */5 * * * *\"), @hourly/@daily/@weekly/@monthly/@yearly, \"@every 30s\" or \"rate(5 minutes)\""
            )
        })?;
        let every_hour = (0..24).all(|h| cron::TimeUnitSpec::includes(expression.hours(), h));
        Ok(Schedule::Cron { expression: Box::new(expression), timezone, every_hour })
    }

    fn interval(interval: Duration) -> Result<Self, String> {
        if interval < MIN_INTERVAL {
            return Err(format!("{interval:?} is shorter than the shortest interval, 1s"));
        }
        Ok(Schedule::Interval(interval))
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Schedule::Interval(interval) => {
                let step = i64::try_from(interval.as_millis()).ok()?.max(1);
                let now = after.timestamp_millis();
                let next = (now.div_euclid(step) + 1).checked_mul(step)?;
                DateTime::from_timestamp_millis(next)
            }
            Schedule::Cron { expression, timezone, every_hour } => next_cron(expression, *timezone, *every_hour, after),
        }
    }

    /// The ticks in `(after, until]`, oldest first, at most `limit` (the newest kept).
    pub fn ticks_between(&self, after: DateTime<Utc>, until: DateTime<Utc>, limit: usize) -> Vec<DateTime<Utc>> {
        let mut ticks = std::collections::VecDeque::new();
        let mut cursor = after;
        while let Some(next) = self.next_after(cursor) {
            if next > until {
                break;
            }
            ticks.push_back(next);
            if ticks.len() > limit {
                ticks.pop_front();
            }
            cursor = next;
        }
        ticks.into()
    }

    /// The timezone ticks are shown in.
    pub fn timezone(&self) -> Tz {
        match self {
            Schedule::Cron { timezone, .. } => *timezone,
            Schedule::Interval(_) => Tz::UTC,
        }
    }
}

/// `rate(5 minutes)` as EventBridge writes it (seconds accepted too).
fn parse_rate(rate: &str) -> Result<Duration, String> {
    let mut parts = rate.split_whitespace();
    let (Some(value), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err(format!("rate({rate}) should be \"rate(VALUE UNIT)\", e.g. rate(5 minutes)"));
    };
    let value: u64 = value.parse().map_err(|_| format!("rate({rate}): {value:?} is not a whole number"))?;
    let unit_secs = match unit {
        "second" | "seconds" => 1,
        "minute" | "minutes" => 60,
        "hour" | "hours" => 3600,
        "day" | "days" => 86_400,
        other => return Err(format!("rate({rate}): unknown unit {other:?}; use seconds, minutes, hours or days")),
    };
    Ok(Duration::from_secs(value.saturating_mul(unit_secs)))
}

/// Scans the expression's wall-clock times (as if the zone had no transitions) around
/// `after` and maps each to real instants with the DST rules above; returns the earliest
/// instant after `after`. Fall-back repeats make the mapped instants slightly out of
/// order, so the scan continues three hours of wall-clock time past the first candidate.
fn next_cron(expression: &cron::Schedule, tz: Tz, every_hour: bool, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    next_cron_fixed_offset(expression, tz, after).or_else(|| next_cron_scan(expression, tz, every_hour, after))
}

/// The next tick when the zone keeps one offset from three hours before `after` to six
/// hours after (no transition near: the common case): wall-clock times then map one to one
/// onto instants, and the first one after `after` is the answer. `None` when a transition
/// is near or the tick is farther away, for the scan to decide. Without this, a schedule
/// that fires every second scanned hours of seconds for each tick.
fn next_cron_fixed_offset(expression: &cron::Schedule, tz: Tz, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let window = chrono::Duration::hours(3);
    let (from, to) = (after.checked_sub_signed(window)?, after.checked_add_signed(window * 2)?);
    let offset = tz.offset_from_utc_datetime(&from.naive_utc()).fix();
    if offset != tz.offset_from_utc_datetime(&to.naive_utc()).fix() || offset != tz.offset_from_utc_datetime(&after.naive_utc()).fix() {
        return None;
    }
    let local = after.naive_utc().checked_add_offset(offset)?;
    let next = expression.after(&Utc.from_utc_datetime(&local)).next()?;
    let instant = next.naive_utc().checked_sub_offset(offset)?.and_utc();
    (instant > after && instant <= to).then_some(instant)
}

fn next_cron_scan(expression: &cron::Schedule, tz: Tz, every_hour: bool, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let window = chrono::Duration::hours(3);
    // Checked: near the ends of chrono's range (years ±262143) the zone's offset or the
    // window would overflow; cron's years end at 2100, so there is nothing to find there.
    let offset = tz.offset_from_utc_datetime(&after.naive_utc()).fix();
    let start = after.naive_utc().checked_add_offset(offset)?.checked_sub_signed(window)?;
    let mut best: Option<DateTime<Utc>> = None;
    let mut scan_until: Option<NaiveDateTime> = None;
    for naive in expression.after(&Utc.from_utc_datetime(&start)).map(|t| t.naive_utc()).take(100_000) {
        if scan_until.is_some_and(|limit| naive > limit) {
            break;
        }
        for instant in instants(tz, naive, every_hour) {
            if instant > after && best.is_none_or(|b| instant < b) {
                best = Some(instant);
                scan_until.get_or_insert(naive + window);
            }
        }
    }
    best
}

/// The real instants a wall-clock time stands for.
fn instants(tz: Tz, naive: NaiveDateTime, every_hour: bool) -> Vec<DateTime<Utc>> {
    match tz.from_local_datetime(&naive) {
        LocalResult::Single(t) => vec![t.with_timezone(&Utc)],
        LocalResult::Ambiguous(first, second) if every_hour => vec![first.with_timezone(&Utc), second.with_timezone(&Utc)],
        LocalResult::Ambiguous(first, _) => vec![first.with_timezone(&Utc)],
        LocalResult::None if every_hour => Vec::new(),
        LocalResult::None => {
            // The first wall-clock minute after the gap: the transition instant.
            (1..=180)
                .map(|m| naive + chrono::Duration::minutes(m))
                .find_map(|later| tz.from_local_datetime(&later).earliest())
                .map(|t| t.with_timezone(&Utc))
                .map(|t| t - chrono::Duration::seconds(i64::from(chrono::Timelike::second(&t.with_timezone(&tz)))))
                .into_iter()
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next_n(schedule: &Schedule, from: &str, n: usize) -> Vec<String> {
        let mut out = Vec::new();
        let mut t = utc(from);
        for _ in 0..n {
            t = schedule.next_after(t).unwrap();
            out.push(t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
        }
        out
    }

    const BERLIN: Tz = chrono_tz::Europe::Berlin;

    #[test]
    fn the_fixed_offset_shortcut_agrees_with_the_scan() {
        let schedules = ["* * * * * *", "0 */15 * * * *", "0 30 2 * * *", "*/7 * 1-3 * * *", "0 0 0 * * Sun"];
        let zones = [BERLIN, chrono_tz::America::New_York, chrono_tz::Australia::Lord_Howe, Tz::UTC];
        // Plain days and the hours around both 2026 transitions of each zone.
        let mut times = vec![utc("2026-06-01T10:00:00.250Z"), utc("2026-01-15T23:59:59Z")];
        for day in ["2026-03-08", "2026-03-29", "2026-04-05", "2026-10-04", "2026-10-25", "2026-11-01"] {
            for hour in 0..24 {
                times.push(utc(&format!("{day}T{hour:02}:17:00Z")));
            }
        }
        for text in schedules {
            for tz in zones {
                let Schedule::Cron { expression, every_hour, .. } = Schedule::parse(text, tz).unwrap() else { unreachable!() };
                // The scan of a per-second schedule is slow: a sample of the times.
                let step = if text.starts_with("* ") { 7 } else { 1 };
                for &after in times.iter().step_by(step) {
                    assert_eq!(
                        next_cron(&expression, tz, every_hour, after),
                        next_cron_scan(&expression, tz, every_hour, after),
                        "{text} in {tz} after {after}"
                    );
                }
            }
        }
    }

    #[test]
    fn fixed_time_jobs_run_once_across_dst() {
        let s = Schedule::parse("0 30 2 * * *", BERLIN).unwrap();
        // Spring forward, 2026-03-29: 02:30 does not exist; it fires at the transition
        // (03:00 CEST = 01:00Z), then at 02:30 CEST the day after.
        assert_eq!(
            next_n(&s, "2026-03-28T12:00:00Z", 3),
            ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]
        );
        // Fall back, 2026-10-25: 02:30 happens twice; it fires once, at the first (CEST).
        assert_eq!(
            next_n(&s, "2026-10-24T12:00:00Z", 3),
            ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z", "2026-10-27T01:30:00Z"]
        );
    }

    #[test]
    fn hourly_jobs_follow_real_time_across_dst() {
        let s = Schedule::parse("0 */30 * * * *", BERLIN).unwrap();
        // Spring forward: 01:30 CET, then 03:00 CEST; the skipped hour has no ticks.
        assert_eq!(
            next_n(&s, "2026-03-29T00:15:00Z", 3),
            ["2026-03-29T00:30:00Z", "2026-03-29T01:00:00Z", "2026-03-29T01:30:00Z"]
        );
        // Fall back: the repeated hour runs twice, every 30 minutes of real time.
        assert_eq!(
            next_n(&s, "2026-10-24T23:45:00Z", 5),
            [
                "2026-10-25T00:00:00Z",
                "2026-10-25T00:30:00Z",
                "2026-10-25T01:00:00Z",
                "2026-10-25T01:30:00Z",
                "2026-10-25T02:00:00Z"
            ]
        );
    }

    #[test]
    fn timezones_shift_fire_times() {
        let s = Schedule::parse("0 0 9 * * *", chrono_tz::America::New_York).unwrap();
        assert_eq!(next_n(&s, "2026-01-05T00:00:00Z", 1), ["2026-01-05T14:00:00Z"]);
        assert_eq!(next_n(&s, "2026-07-05T00:00:00Z", 1), ["2026-07-05T13:00:00Z"]);
    }

    #[test]
    fn intervals_align_to_the_epoch() {
        let s = Schedule::parse("@every 30s", BERLIN).unwrap();
        assert_eq!(next_n(&s, "2026-01-01T00:00:10Z", 2), ["2026-01-01T00:00:30Z", "2026-01-01T00:01:00Z"]);
        let s = Schedule::parse("rate(5 minutes)", Tz::UTC).unwrap();
        assert_eq!(next_n(&s, "2026-01-01T00:03:00Z", 1), ["2026-01-01T00:05:00Z"]);
        let s = Schedule::parse("rate(1 hour)", Tz::UTC).unwrap();
        assert_eq!(next_n(&s, "2026-01-01T00:03:00Z", 1), ["2026-01-01T01:00:00Z"]);
        let s = Schedule::parse("@hourly", Tz::UTC).unwrap();
        assert_eq!(next_n(&s, "2026-01-01T00:03:00Z", 1), ["2026-01-01T01:00:00Z"]);
    }

    #[test]
    fn bad_schedules_say_what_is_accepted() {
        for bad in ["every day", "@every soon", "rate(5 fortnights)", "rate(five minutes)", "@every 10ms", "61 * * * * *"] {
            assert!(Schedule::parse(bad, Tz::UTC).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_ends_of_time_have_no_tick_and_no_panic() {
        // Found by tests/fuzz_schedule.rs: the local time or the scan window overflowed.
        let s = Schedule::parse("0 * * * * *", chrono_tz::Asia::Tokyo).unwrap();
        assert_eq!(s.next_after(DateTime::<Utc>::MAX_UTC), None);
        let s = Schedule::parse("0 * * * * *", chrono_tz::America::New_York).unwrap();
        assert!(s.next_after(DateTime::<Utc>::MIN_UTC).is_none_or(|t| t > DateTime::<Utc>::MIN_UTC));
    }

    #[test]
    fn ticks_between_keeps_the_newest() {
        let s = Schedule::parse("* * * * * *", Tz::UTC).unwrap();
        let ticks = s.ticks_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:00:10Z"), 3);
        assert_eq!(ticks.len(), 3);
        assert_eq!(ticks[2], utc("2026-01-01T00:00:10Z"));
        assert_eq!(s.ticks_between(utc("2026-01-01T00:00:00Z"), utc("2026-01-01T00:00:00.5Z"), 10).len(), 0);
    }
}
