//! The retry policy: what to do with an event after a failed attempt.

use std::time::Duration;

use rand::Rng;

use crate::config::RetryConfig;

/// The decision after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Redeliver after this delay.
    Retry(Duration),
    /// No attempts left: write the dead letter.
    DeadLetter,
}

/// Decides after failed attempt number `attempt` (1-based).
pub fn decide(policy: &RetryConfig, attempt: u32, rng: &mut impl Rng) -> Decision {
    if attempt >= policy.max_attempts {
        return Decision::DeadLetter;
    }
    let cap = backoff_cap(policy, attempt);
    if policy.backoff.jitter {
        // Full jitter: spreads retries of events that failed together.
        let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX);
        Decision::Retry(Duration::from_nanos(rng.random_range(0..=nanos)))
    } else {
        Decision::Retry(cap)
    }
}

/// `initial * factor^(attempt-1)`, capped at `max`.
pub fn backoff_cap(policy: &RetryConfig, attempt: u32) -> Duration {
    let backoff = &policy.backoff;
    let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    let secs = backoff.initial.as_secs_f64() * backoff.factor.powi(exponent);
    if !secs.is_finite() || secs >= backoff.max.as_secs_f64() {
        backoff.max
    } else {
        Duration::from_secs_f64(secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackoffConfig;
    use rand::SeedableRng;

    fn policy(max_attempts: u32, jitter: bool) -> RetryConfig {
        RetryConfig {
            max_attempts,
            backoff: BackoffConfig {
                initial: Duration::from_millis(100),
                factor: 2.0,
                max: Duration::from_secs(1),
                jitter,
            },
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let p = policy(10, false);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let delays: Vec<_> = (1..=6).map(|a| decide(&p, a, &mut rng)).collect();
        assert_eq!(
            delays,
            [100, 200, 400, 800, 1000, 1000].map(|ms| Decision::Retry(Duration::from_millis(ms)))
        );
    }

    #[test]
    fn the_last_attempt_dead_letters() {
        let p = policy(3, false);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!(matches!(decide(&p, 2, &mut rng), Decision::Retry(_)));
        assert_eq!(decide(&p, 3, &mut rng), Decision::DeadLetter);
        // An attempt past the budget (a worker died on the last one) also dead-letters.
        assert_eq!(decide(&p, 4, &mut rng), Decision::DeadLetter);
        assert_eq!(decide(&policy(1, true), 1, &mut rng), Decision::DeadLetter);
    }

    #[test]
    fn jitter_stays_within_the_cap() {
        let p = policy(100, true);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut distinct = std::collections::BTreeSet::new();
        for attempt in 1..=99 {
            for _ in 0..20 {
                match decide(&p, attempt, &mut rng) {
                    Decision::Retry(d) => {
                        assert!(d <= backoff_cap(&p, attempt), "attempt {attempt}: {d:?}");
                        distinct.insert(d);
                    }
                    Decision::DeadLetter => panic!("attempt {attempt} should retry"),
                }
            }
        }
        assert!(distinct.len() > 100, "jitter should spread delays");
    }

    #[test]
    fn huge_factors_do_not_overflow() {
        let mut p = policy(100, false);
        p.backoff.factor = 1e300;
        assert_eq!(backoff_cap(&p, 99), Duration::from_secs(1));
    }
}
