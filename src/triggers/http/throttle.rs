//! Throttling as API Gateway's usage plans: a token bucket per route and per API key (per
//! client address on routes without keys), refilled at `rate` requests a second, holding
//! `burst`. An empty bucket answers `429 Too Many Requests` with `Retry-After`.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::config;
use super::keys::KeyName;
use super::{error_response, RequestId};

/// Keys (clients) a route's limiter remembers before it forgets the full buckets.
const FORGET_ABOVE: usize = 10_000;

pub struct Limiter {
    limiter: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

impl Limiter {
    pub fn new(settings: config::Throttle) -> Self {
        let period = Duration::from_secs_f64(1.0 / settings.rate).max(Duration::from_nanos(1));
        let burst = NonZeroU32::new(settings.burst()).unwrap_or(NonZeroU32::MIN);
        // with_period is None only for a zero period, excluded above.
        let quota = Quota::with_period(period).unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN)).allow_burst(burst);
        Self { limiter: RateLimiter::keyed(quota), clock: DefaultClock::default() }
    }

    /// `Ok`, or how long until `key` may send again.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        if self.limiter.len() > FORGET_ABOVE {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&key.to_owned()).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

pub async fn limit(State(limiter): State<Arc<Limiter>>, request: Request, next: Next) -> Response {
    let key = match request.extensions().get::<KeyName>() {
        Some(KeyName(name)) => format!("key:{name}"),
        None => request.extensions().get::<ConnectInfo<SocketAddr>>().map_or_else(|| "client:unknown".to_owned(), |c| format!("client:{}", c.0.ip())),
    };
    match limiter.check(&key) {
        Ok(()) => next.run(request).await,
        Err(wait) => {
            let id = request.extensions().get::<RequestId>().cloned().unwrap_or_default();
            let mut response = error_response(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests", &id.0);
            // Whole seconds, rounded up: a client waiting that long finds a token.
            let seconds = wait.as_secs().saturating_add(u64::from(wait.subsec_nanos() > 0)).max(1);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds));
            response
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_each_key_alone() {
        let limiter = Limiter::new(config::Throttle { rate: 1.0, burst: Some(3) });
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(wait > Duration::ZERO && wait <= Duration::from_secs(1), "{wait:?}");
        assert!(limiter.check("b").is_ok(), "another key has its own bucket");
    }
}
