//! What the same use would cost on AWS Lambda, with its published price model (x86, on-demand):
//! $0.20 per million requests plus $0.0000166667 per GB-second, where a GB-second is the
//! function's configured memory in GB times its billed duration (the duration rounded up to
//! the next millisecond). The monthly free tier covers 1M requests and 400,000 GB-seconds.

use std::time::Duration;

use serde::Serialize;

/// USD per request.
pub const PER_REQUEST_USD: f64 = 0.20 / 1_000_000.0;
/// USD per GB-second of billed duration.
pub const PER_GB_SECOND_USD: f64 = 0.000_016_666_7;
/// Requests the free tier covers each month.
pub const FREE_REQUESTS: f64 = 1_000_000.0;
/// GB-seconds the free tier covers each month.
pub const FREE_GB_SECONDS: f64 = 400_000.0;

/// A duration as Lambda bills it: whole milliseconds, rounded up (at least 1 ms).
pub fn billed_ms(duration: Duration) -> u64 {
    let micros = duration.as_micros();
    u64::try_from(micros.div_ceil(1000)).unwrap_or(u64::MAX).max(1)
}

/// GB-seconds of one invocation: configured memory (MB, 1024 to a GB) × billed duration.
pub fn gb_seconds(memory_mb: u64, billed_ms: u64) -> f64 {
    // Exact below 2^53, far beyond any memory size or duration.
    #[allow(clippy::cast_precision_loss)]
    let (memory_mb, billed_ms) = (memory_mb as f64, billed_ms as f64);
    memory_mb / 1024.0 * billed_ms / 1000.0
}

/// What a number of requests and GB-seconds would cost on Lambda, in USD.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Cost {
    pub requests: f64,
    pub duration: f64,
    pub total: f64,
    /// The total with the monthly free tier taken off (as if this were the month's whole use).
    pub total_after_free_tier: f64,
}

impl Cost {
    pub fn of(requests: u64, gb_seconds: f64) -> Self {
        #[allow(clippy::cast_precision_loss)]
        let requests = requests as f64;
        let request_cost = requests * PER_REQUEST_USD;
        let duration_cost = gb_seconds * PER_GB_SECOND_USD;
        let after_free = (requests - FREE_REQUESTS).max(0.0) * PER_REQUEST_USD + (gb_seconds - FREE_GB_SECONDS).max(0.0) * PER_GB_SECOND_USD;
        Self { requests: request_cost, duration: duration_cost, total: request_cost + duration_cost, total_after_free_tier: after_free }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cents(usd: f64) -> i64 {
        #[allow(clippy::cast_possible_truncation)]
        let cents = (usd * 100.0).round() as i64;
        cents
    }

    /// Lambda's own worked example: 1M requests of 200 ms at 512 MB in a month.
    #[test]
    fn the_classic_example_costs_a_dollar_eighty_seven() {
        let per_invocation = gb_seconds(512, billed_ms(Duration::from_millis(200)));
        let total_gb_seconds = per_invocation * 1_000_000.0;
        assert!((total_gb_seconds - 100_000.0).abs() < 1e-6, "{total_gb_seconds}");
        let cost = Cost::of(1_000_000, total_gb_seconds);
        assert_eq!(cents(cost.requests), 20);
        assert_eq!(cents(cost.duration), 167);
        assert_eq!(cents(cost.total), 187);
        // The free tier covers all of it.
        assert_eq!(cents(cost.total_after_free_tier), 0);
    }

    #[test]
    fn the_free_tier_is_taken_off_what_exceeds_it() {
        let cost = Cost::of(3_000_000, 500_000.0);
        assert_eq!(cents(cost.total), 60 + 833);
        // 2M requests and 100,000 GB-s past the free tier.
        assert_eq!(cents(cost.total_after_free_tier), 40 + 167);
    }

    #[test]
    fn billed_duration_rounds_up_to_the_millisecond() {
        assert_eq!(billed_ms(Duration::from_micros(1)), 1);
        assert_eq!(billed_ms(Duration::ZERO), 1);
        assert_eq!(billed_ms(Duration::from_micros(1000)), 1);
        assert_eq!(billed_ms(Duration::from_micros(1001)), 2);
        assert_eq!(billed_ms(Duration::from_millis(200)), 200);
    }
}
