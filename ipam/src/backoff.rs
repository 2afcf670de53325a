//! How long to wait before trying again after consecutive failures: one
//! capped exponential rule for every reconciler (routes, ENI capacity, pod
//! allocation), each with its own floor and ceiling.

use std::time::Duration;

/// Doubling from `min` per consecutive failure, never above `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub min: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(min: Duration, max: Duration) -> Self {
        Self { min, max }
    }

    /// The wait after `failures` consecutive failures (1 = the first):
    /// `min`, `2 min`, `4 min`, ... capped at `max`. Zero failures wait
    /// nothing.
    pub fn after(&self, failures: u32) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        // 2^20 x any floor is past every ceiling we use; the shift stays in range.
        let doublings = (failures - 1).min(20);
        self.min.saturating_mul(1u32 << doublings).min(self.max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn doubles_from_the_floor_up_to_the_ceiling() {
        let b = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
        let waits: Vec<u64> = (0..=9).map(|n| b.after(n).as_secs()).collect();
        assert_eq!(waits, [0, 1, 2, 4, 8, 16, 32, 64, 120, 120]);
        assert_eq!(b.after(u32::MAX), Duration::from_secs(120));
    }

    proptest! {
        #[test]
        fn never_shrinks_and_stays_within_bounds(min_ms in 1u64..10_000, extra in 0u64..1_000_000, n in 1u32..10_000) {
            let b = Backoff::new(Duration::from_millis(min_ms), Duration::from_millis(min_ms + extra));
            let now = b.after(n);
            prop_assert!(now >= b.min && now <= b.max);
            prop_assert!(b.after(n + 1) >= now);
        }
    }
}
