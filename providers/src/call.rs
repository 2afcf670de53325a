//! The one call wrapper every backend sends its wire calls through: a
//! per-API rate limit (governor, configured in calls per minute), jittered
//! exponential backoff on `Throttled` / `Transient` / `Conflict` with a bounded
//! number of tries, the same idempotency token on every retry of one logical
//! call, and per-API counters that the controller exports as metrics.

use crate::error::{CloudError, CloudResult, ErrorKind};
use governor::clock::{Clock, Reference};
use governor::middleware::NoOpMiddleware;
use governor::nanos::Nanos;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use ipam::ids::IdempotencyToken;
use parking_lot::Mutex;
use rand::Rng;
use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// Retry and rate-limit settings of one provider client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallPolicy {
    /// Tries per logical call, the first included.
    pub max_tries: u32,
    /// Backoff before the first retry; doubles per retry up to `max_backoff`.
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    /// Rate limit of any API not named in `per_api_per_minute`.
    pub default_per_minute: u32,
    /// Rate limit per API name (e.g. `CreateNetworkInterface`), calls per minute.
    pub per_api_per_minute: BTreeMap<String, u32>,
}

impl Default for CallPolicy {
    fn default() -> Self {
        Self {
            max_tries: 6,
            base_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
            default_per_minute: 600,
            per_api_per_minute: BTreeMap::new(),
        }
    }
}

impl CallPolicy {
    /// Calls per minute allowed for one API.
    pub fn per_minute(&self, api: &str) -> u32 {
        self.per_api_per_minute
            .get(api)
            .copied()
            .unwrap_or(self.default_per_minute)
    }

    /// Backoff before retry number `retry` (1-based): exponential, capped, with
    /// jitter in [half, full] so that many clients do not retry in lockstep.
    pub fn backoff(&self, retry: u32, rng: &mut impl Rng) -> Duration {
        let exp = self
            .base_backoff
            .saturating_mul(1u32 << retry.saturating_sub(1).min(20));
        let full = exp.min(self.max_backoff);
        let half = full / 2;
        let jitter_ns =
            rng.random_range(0..=full.as_nanos().saturating_sub(half.as_nanos()) as u64);
        half + Duration::from_nanos(jitter_ns)
    }
}

/// Upper bounds (seconds) of the latency histogram buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Counters of one API.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApiCounters {
    /// Attempts sent to the cloud (each retry counts).
    pub calls: u64,
    /// Attempts that failed, whatever the kind.
    pub errors: u64,
    /// Attempts the cloud answered with `Throttled`.
    pub throttles: u64,
    /// Retries made after a retryable error.
    pub retries: u64,
    /// Times our own rate limiter held a call back.
    pub rate_limited: u64,
    /// Failed attempts by error kind label.
    pub errors_by_kind: BTreeMap<&'static str, u64>,
    /// Cumulative histogram counts per `LATENCY_BUCKETS` bound (+Inf last).
    pub latency_buckets: [u64; LATENCY_BUCKETS.len() + 1],
    pub latency_sum_seconds: f64,
}

impl ApiCounters {
    fn observe_latency(&mut self, seconds: f64) {
        self.latency_sum_seconds += seconds;
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.latency_buckets[slot] += 1;
    }
}

/// Per-API counters, shared between a client and whoever exports metrics.
#[derive(Debug, Default)]
pub struct ApiStats {
    apis: Mutex<BTreeMap<String, ApiCounters>>,
}

impl ApiStats {
    pub fn snapshot(&self) -> BTreeMap<String, ApiCounters> {
        self.apis.lock().clone()
    }

    pub fn get(&self, api: &str) -> ApiCounters {
        self.apis.lock().get(api).cloned().unwrap_or_default()
    }

    /// Sum of `calls` over the APIs for which `filter` holds.
    pub fn total_calls(&self, filter: impl Fn(&str) -> bool) -> u64 {
        self.apis
            .lock()
            .iter()
            .filter(|(api, _)| filter(api))
            .map(|(_, c)| c.calls)
            .sum()
    }

    fn update(&self, api: &str, f: impl FnOnce(&mut ApiCounters)) {
        let mut apis = self.apis.lock();
        match apis.get_mut(api) {
            Some(counters) => f(counters),
            None => f(apis.entry(api.to_owned()).or_default()),
        }
    }
}

/// A governor clock on tokio's time, so rate limits follow `tokio::time::pause`
/// in tests and the simulation.
#[derive(Clone, Debug)]
pub struct TokioClock {
    start: tokio::time::Instant,
}

impl Default for TokioClock {
    fn default() -> Self {
        Self {
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    type Instant = Nanos;
    fn now(&self) -> Nanos {
        Nanos::from(self.start.elapsed())
    }
}

type Limiter = RateLimiter<NotKeyed, InMemoryState, TokioClock, NoOpMiddleware<Nanos>>;

/// What one attempt of a logical call gets to see.
#[derive(Clone, Debug)]
pub struct Attempt {
    /// 1 for the first try.
    pub number: u32,
    /// The same token on every attempt of one logical call.
    pub token: IdempotencyToken,
}

/// The rate-limited, retrying, counting wrapper. Cheap to clone.
#[derive(Clone)]
pub struct Caller {
    policy: Arc<CallPolicy>,
    limiters: Arc<Mutex<HashMap<String, Arc<Limiter>>>>,
    stats: Arc<ApiStats>,
    clock: TokioClock,
}

impl Caller {
    pub fn new(policy: CallPolicy) -> Self {
        Self {
            policy: Arc::new(policy),
            limiters: Arc::default(),
            stats: Arc::default(),
            clock: TokioClock::default(),
        }
    }

    pub fn policy(&self) -> &CallPolicy {
        &self.policy
    }

    pub fn stats(&self) -> Arc<ApiStats> {
        self.stats.clone()
    }

    fn limiter(&self, api: &str) -> Arc<Limiter> {
        let mut limiters = self.limiters.lock();
        if let Some(limiter) = limiters.get(api) {
            return limiter.clone();
        }
        let per_minute = NonZeroU32::new(self.policy.per_minute(api)).unwrap_or(NonZeroU32::MIN);
        // Burst of one second's worth (at least 1) so a quiet client can send a
        // small batch at once without exceeding the per-minute rate over time.
        let burst = NonZeroU32::new(per_minute.get().div_ceil(60)).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_minute(per_minute).allow_burst(burst);
        let limiter = Arc::new(RateLimiter::direct_with_clock(quota, self.clock.clone()));
        limiters.insert(api.to_owned(), limiter.clone());
        limiter
    }

    /// Wait until the API's rate limit lets one more call through.
    async fn acquire(&self, api: &str) {
        let limiter = self.limiter(api);
        let mut counted = false;
        loop {
            match limiter.check() {
                Ok(()) => return,
                Err(not_until) => {
                    if !counted {
                        self.stats.update(api, |c| c.rate_limited += 1);
                        counted = true;
                    }
                    let wait = not_until
                        .earliest_possible()
                        .duration_since(self.clock.now());
                    tokio::time::sleep(Duration::from(wait).max(Duration::from_millis(1))).await;
                }
            }
        }
    }

    /// Run one logical call: rate-limit each attempt, retry retryable kinds with
    /// backoff up to `max_tries`, pass the same token to every attempt, count
    /// everything. `token` is generated when the caller has none of its own.
    pub async fn call<T, F, Fut>(
        &self,
        api: &str,
        token: Option<&IdempotencyToken>,
        mut attempt: F,
    ) -> CloudResult<T>
    where
        F: FnMut(Attempt) -> Fut,
        Fut: Future<Output = CloudResult<T>>,
    {
        let token = token
            .cloned()
            .unwrap_or_else(|| IdempotencyToken::new(uuid::Uuid::new_v4().to_string()));
        let mut number = 1;
        loop {
            self.acquire(api).await;
            let started = tokio::time::Instant::now();
            let result = attempt(Attempt {
                number,
                token: token.clone(),
            })
            .await;
            let seconds = started.elapsed().as_secs_f64();
            let outcome = result.as_ref().err().map(|e| e.kind.clone());
            self.stats.update(api, |c| {
                c.calls += 1;
                c.observe_latency(seconds);
                if let Some(kind) = &outcome {
                    c.errors += 1;
                    *c.errors_by_kind.entry(kind.label()).or_default() += 1;
                    if *kind == ErrorKind::Throttled {
                        c.throttles += 1;
                    }
                }
            });
            let err: CloudError = match result {
                Ok(value) => return Ok(value),
                Err(err) => err,
            };
            if !err.kind.is_retryable() || number >= self.policy.max_tries {
                if err.kind.is_retryable() {
                    tracing::warn!(api, tries = number, error = %err, "giving up after retries");
                }
                return Err(err);
            }
            let delay = self.policy.backoff(number, &mut rand::rng());
            tracing::debug!(api, try_number = number, ?delay, kind = %err.kind, "retrying cloud call");
            self.stats.update(api, |c| c.retries += 1);
            tokio::time::sleep(delay).await;
            number += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::LimitKind;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn err(kind: ErrorKind) -> CloudError {
        CloudError::new(kind, "Test", "Code", "message")
    }

    #[tokio::test(start_paused = true)]
    async fn throttled_call_is_retried_with_the_same_token_and_counted() {
        let caller = Caller::new(CallPolicy::default());
        let seen = Mutex::new(Vec::new());
        let token = IdempotencyToken::new("pod-uid-1");
        let result = caller
            .call("CreateNetworkInterface", Some(&token), |a| {
                seen.lock().push((a.number, a.token.clone()));
                async move {
                    if a.number < 3 {
                        Err(err(ErrorKind::Throttled))
                    } else {
                        Ok("eni-1")
                    }
                }
            })
            .await;
        assert_eq!(result, Ok("eni-1"));
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 3);
        assert!(seen.iter().all(|(_, t)| *t == token));
        let c = caller.stats().get("CreateNetworkInterface");
        assert_eq!((c.calls, c.errors, c.throttles, c.retries), (3, 2, 2, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn generated_token_is_stable_across_retries() {
        let caller = Caller::new(CallPolicy::default());
        let seen = Mutex::new(Vec::new());
        let _ = caller
            .call("X", None, |a| {
                seen.lock().push(a.token.clone());
                async move {
                    if a.number < 2 {
                        Err::<(), _>(err(ErrorKind::Transient))
                    } else {
                        Ok(())
                    }
                }
            })
            .await;
        let seen = seen.into_inner();
        assert_eq!(seen.len(), 2);
        assert_eq!(seen[0], seen[1]);
    }

    #[tokio::test(start_paused = true)]
    async fn non_retryable_errors_fail_at_once() {
        let caller = Caller::new(CallPolicy::default());
        let tries = AtomicU32::new(0);
        let result = caller
            .call("AttachNetworkInterface", None, |_| {
                tries.fetch_add(1, Ordering::SeqCst);
                async {
                    Err::<(), _>(err(ErrorKind::LimitExceeded {
                        what: LimitKind::EnisPerInstance,
                    }))
                }
            })
            .await;
        assert!(matches!(
            result.unwrap_err().kind,
            ErrorKind::LimitExceeded { .. }
        ));
        assert_eq!(tries.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded() {
        let policy = CallPolicy {
            max_tries: 4,
            ..CallPolicy::default()
        };
        let caller = Caller::new(policy);
        let tries = AtomicU32::new(0);
        let result = caller
            .call("DescribeVSwitches", None, |_| {
                tries.fetch_add(1, Ordering::SeqCst);
                async { Err::<(), _>(err(ErrorKind::Conflict)) }
            })
            .await;
        assert_eq!(result.unwrap_err().kind, ErrorKind::Conflict);
        assert_eq!(tries.load(Ordering::SeqCst), 4);
        assert_eq!(caller.stats().get("DescribeVSwitches").retries, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_spaces_calls_per_api() {
        let mut policy = CallPolicy::default();
        policy
            .per_api_per_minute
            .insert("CreateRouteEntry".into(), 60);
        let caller = Caller::new(policy);
        let start = tokio::time::Instant::now();
        for _ in 0..5 {
            caller
                .call("CreateRouteEntry", None, |_| async {
                    Ok::<_, CloudError>(())
                })
                .await
                .unwrap();
        }
        // 60/min with a burst of 1: the 5th call goes out 4 s after the first.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_secs(4), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
        // A different API is not held back by that limiter.
        let other = tokio::time::Instant::now();
        caller
            .call("DescribeRouteEntryList", None, |_| async {
                Ok::<_, CloudError>(())
            })
            .await
            .unwrap();
        assert!(other.elapsed() < Duration::from_millis(10));
        assert!(caller.stats().get("CreateRouteEntry").rate_limited >= 4);
    }

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let policy = CallPolicy::default();
        let mut rng = rand::rng();
        for retry in 1..12 {
            let d = policy.backoff(retry, &mut rng);
            let full = (policy.base_backoff * (1 << (retry - 1))).min(policy.max_backoff);
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?}");
        }
    }
}
