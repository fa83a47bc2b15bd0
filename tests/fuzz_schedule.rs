//! Property tests of cron trigger schedules: any text parses or is refused without a panic,
//! and every schedule that parses, in any timezone, fires strictly forward in time.
//! `scripts/fuzz.sh` runs these with many more cases (`PROPTEST_CASES`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use common::fuzz::config;
use proptest::prelude::*;
use sluice::triggers::cron::schedule::Schedule;


fn any_timezone() -> impl Strategy<Value = Tz> {
    prop_oneof![
        3 => proptest::sample::select(chrono_tz::TZ_VARIANTS.to_vec()),
        // Zones with DST transitions, half-hour offsets and a skipped day.
        1 => proptest::sample::select(vec![
            chrono_tz::Europe::Berlin,
            chrono_tz::America::New_York,
            chrono_tz::Australia::Lord_Howe,
            chrono_tz::Asia::Kolkata,
            chrono_tz::Pacific::Apia,
            chrono_tz::America::Santiago,
        ]),
    ]
}

/// An instant: mostly within the years cron expressions cover (1970-2100), around DST
/// changes, sometimes at the edges of what chrono represents.
fn any_instant() -> impl Strategy<Value = DateTime<Utc>> {
    prop_oneof![
        8 => (0i64..4_102_444_800, 0u32..1_000_000_000).prop_map(|(s, n)| DateTime::from_timestamp(s, n).unwrap()),
        1 => (-62_135_596_800i64..253_402_300_799).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap()),
        1 => proptest::sample::select(vec![
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MAX_UTC,
            DateTime::from_timestamp(4_102_444_799, 0).unwrap(), // 2099-12-31T23:59:59Z
            DateTime::from_timestamp(-1, 0).unwrap(),
            DateTime::from_timestamp(1_774_746_000, 0).unwrap(), // 2026-03-29T01:00:00Z, Berlin springs forward
            DateTime::from_timestamp(1_792_890_000, 0).unwrap(), // 2026-10-25T01:00:00Z, Berlin falls back
        ]),
    ]
}

/// One cron field: wildcards, values, ranges, steps and lists, in and out of range.
fn cron_field(max: u32) -> impl Strategy<Value = String> {
    let value = prop_oneof![4 => 0..=max, 1 => 0u32..100];
    let atom = prop_oneof![
        3 => Just("*".to_owned()),
        3 => value.clone().prop_map(|v| v.to_string()),
        2 => (value.clone(), value.clone()).prop_map(|(a, b)| format!("{a}-{b}")),
        2 => (1..=max.max(1)).prop_map(|k| format!("*/{k}")),
        1 => (value.clone(), 1..=max.max(1)).prop_map(|(a, k)| format!("{a}/{k}")),
        1 => Just("?".to_owned()),
        1 => proptest::sample::select(vec!["MON", "Fri", "JAN", "dec", "L", "mon-fri"]).prop_map(str::to_owned),
    ];
    proptest::collection::vec(atom, 1..3).prop_map(|atoms| atoms.join(","))
}

/// Six or seven fields (seconds first, year last), or a shorthand.
fn cron_text() -> impl Strategy<Value = String> {
    let fields = (
        cron_field(59),
        cron_field(59),
        cron_field(23),
        cron_field(31),
        cron_field(12),
        cron_field(7),
        proptest::option::of(prop_oneof![Just("*".to_owned()), (1960u32..2200).prop_map(|y| y.to_string()), (1960u32..2110, 0u32..50).prop_map(|(y, n)| format!("{y}-{}", y + n))]),
    )
        .prop_map(|(s, m, h, dom, mon, dow, year)| {
            let mut text = format!("{s} {m} {h} {dom} {mon} {dow}");
            if let Some(year) = year {
                text.push(' ');
                text.push_str(&year);
            }
            text
        });
    prop_oneof![
        6 => fields,
        1 => proptest::sample::select(vec!["@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight"]).prop_map(str::to_owned),
    ]
}

/// `@every <duration>` and `rate(<n> <unit>)`, valid or not.
fn interval_text() -> impl Strategy<Value = String> {
    prop_oneof![
        (any::<u64>(), proptest::sample::select(vec!["ms", "s", "m", "h", "d", "w", "y", "ns", "us"])).prop_map(|(n, u)| format!("@every {n}{u}")),
        (0u64..100_000, proptest::sample::select(vec!["ms", "s", "m", "h"])).prop_map(|(n, u)| format!("@every {n}{u}")),
        (any::<u64>(), proptest::sample::select(vec!["second", "seconds", "minute", "minutes", "hour", "hours", "day", "days", "weeks"]))
            .prop_map(|(n, u)| format!("rate({n} {u})")),
        (0u64..10_000, proptest::sample::select(vec!["seconds", "minutes", "hours", "days"])).prop_map(|(n, u)| format!("rate({n} {u})")),
    ]
}

/// A schedule that parses.
fn any_schedule() -> impl Strategy<Value = (String, Schedule)> {
    (prop_oneof![3 => cron_text(), 1 => interval_text()], any_timezone())
        .prop_filter_map("does not parse", |(text, tz)| Schedule::parse(&text, tz).ok().map(|s| (text, s)))
}

proptest! {
    #![proptest_config(config(128))]

    /// Arbitrary text: parsed or refused with a message, never a panic.
    #[test]
    fn any_text_parses_or_is_refused(text in prop_oneof![
        "\\PC{0,40}",
        "[0-9*/,?LW# -]{0,40}",
        cron_text(),
        interval_text(),
        "(@every|rate\\() ?\\PC{0,12}\\)?",
    ], tz in any_timezone()) {
        if let Err(message) = Schedule::parse(&text, tz) {
            prop_assert!(!message.is_empty());
        }
    }

    /// The next tick after any instant is later than it; the ticks after it, one by one,
    /// keep moving forward.
    #[test]
    fn ticks_move_forward((text, schedule) in any_schedule(), start in any_instant()) {
        let mut t = start;
        for _ in 0..4 {
            let Some(next) = schedule.next_after(t) else { break };
            prop_assert!(next > t, "{text:?} in {}: next_after({t}) = {next}", schedule.timezone());
            t = next;
        }
    }

    /// `ticks_between(after, until, limit)`: strictly increasing, inside `(after, until]`, at
    /// most `limit`, the newest kept, and nothing missed before `until`.
    #[test]
    fn ticks_between_is_bounded_and_sorted(
        (text, schedule) in any_schedule(),
        after in any_instant(),
        // Short: every tick of a per-second schedule costs a scan of three hours of seconds.
        span_ms in 0i64..20_000,
        limit in 1usize..20,
    ) {
        let Some(until) = after.checked_add_signed(chrono::Duration::milliseconds(span_ms)) else { return Ok(()) };
        let ticks = schedule.ticks_between(after, until, limit);
        prop_assert!(ticks.len() <= limit);
        prop_assert!(ticks.windows(2).all(|w| w[0] < w[1]), "{text:?}: not strictly increasing: {ticks:?}");
        prop_assert!(ticks.iter().all(|t| *t > after && *t <= until), "{text:?}: outside ({after}, {until}]: {ticks:?}");
        if let Some(last) = ticks.last() {
            // The newest: no tick between the last one kept and `until`.
            prop_assert!(schedule.next_after(*last).is_none_or(|n| n > until), "{text:?}: a tick after {last} was dropped");
            if ticks.len() < limit {
                prop_assert_eq!(schedule.next_after(after), Some(ticks[0]), "{:?}: the first tick is missing", text);
            }
        } else {
            prop_assert!(schedule.next_after(after).is_none_or(|n| n > until), "{text:?}: a tick in ({after}, {until}] is missing");
        }
    }

    /// Interval schedules tick on multiples of the interval since the epoch, at most one
    /// interval after `t`.
    #[test]
    fn intervals_tick_on_the_epoch_grid(secs in 1u64..1_000_000, t in any_instant(), tz in any_timezone()) {
        let schedule = Schedule::parse(&format!("@every {secs}s"), tz).unwrap();
        if let Some(next) = schedule.next_after(t) {
            prop_assert!(next > t);
            prop_assert!(next - t <= chrono::Duration::from_std(Duration::from_secs(secs)).unwrap());
            prop_assert_eq!(next.timestamp_millis().rem_euclid(i64::try_from(secs).unwrap() * 1000), 0);
        }
    }
}
