//! When a subnet runs out of addresses, at the pace it has been losing them:
//! from samples (time, free IPs) over an observation window, the consumption
//! rate (first to last sample of the window) and the time until the free
//! count reaches zero. `None` when free IPs are not falling, or when the
//! window cannot say (fewer than two samples, no time between them).
//!
//! A straight line through two points of a window: it is what happened in
//! that window, not a model of what comes next. A burst just before the
//! window ends, or a release, moves it a lot; callers say so.

use std::collections::VecDeque;
use std::time::Duration;

/// One observation of a subnet's free addresses. `at` is the time since any
/// fixed origin the caller keeps (a monotonic clock's start, the epoch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at: Duration,
    pub free: u32,
}

/// What a window of samples says about a subnet.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    /// Addresses consumed per hour over the window (negative: freed).
    pub consumed_per_hour: f64,
    /// How long until no address is left at that rate; `None` when the
    /// free count is not falling.
    pub exhausted_in: Option<Duration>,
}

/// The longest time to exhaustion a forecast gives (a century): a slower
/// trickle says this.
pub const HORIZON: Duration = Duration::from_secs(100 * 365 * 86_400);

/// Addresses consumed per second between the first and the last sample
/// (in time order); `None` with fewer than two samples or no time between
/// the first and the last.
pub fn consumption_rate(samples: &[Sample]) -> Option<f64> {
    let first = samples.iter().min_by_key(|s| s.at)?;
    let last = samples.iter().max_by_key(|s| s.at)?;
    let span = last.at.checked_sub(first.at)?.as_secs_f64();
    if span <= 0.0 {
        return None;
    }
    Some((f64::from(first.free) - f64::from(last.free)) / span)
}

/// The forecast of a window: the rate, and when the subnet runs out if the
/// free count is falling. `None` when the window cannot give a rate.
pub fn forecast(samples: &[Sample]) -> Option<Forecast> {
    let rate = consumption_rate(samples)?;
    let last = samples.iter().max_by_key(|s| s.at)?;
    let exhausted_in = if rate > 0.0 {
        let secs = f64::from(last.free) / rate;
        // Bounded: a trickle must not overflow a Duration.
        Some(Duration::from_secs_f64(secs.min(HORIZON.as_secs_f64())))
    } else {
        None
    };
    Some(Forecast {
        consumed_per_hour: rate * 3600.0,
        exhausted_in,
    })
}

/// A rolling window of one subnet's samples: the newest sample and those
/// no older than `span` before it, plus the newest one older than that
/// (so a subnet described less often than `span` still has two points).
#[derive(Clone, Debug)]
pub struct Window {
    span: Duration,
    samples: VecDeque<Sample>,
}

impl Window {
    pub fn new(span: Duration) -> Self {
        Self {
            span,
            samples: VecDeque::new(),
        }
    }

    /// Add a sample; samples that arrive out of order are dropped.
    pub fn push(&mut self, sample: Sample) {
        if self.samples.back().is_some_and(|b| b.at > sample.at) {
            return;
        }
        self.samples.push_back(sample);
        let cutoff = sample.at.saturating_sub(self.span);
        // Keep at most one sample before the cutoff: the window's start.
        while self.samples.len() > 2 && self.samples[1].at <= cutoff {
            self.samples.pop_front();
        }
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.iter().copied().collect()
    }

    pub fn forecast(&self) -> Option<Forecast> {
        forecast(&self.samples())
    }
}

/// A duration as an operator reads it: `45s`, `12m`, `3h05m`, `4d07h`.
pub fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m", s / 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(secs: u64, free: u32) -> Sample {
        Sample {
            at: Duration::from_secs(secs),
            free,
        }
    }

    #[test]
    fn falling_free_ips_give_a_rate_and_a_time_to_exhaustion() {
        // 60 addresses gone in an hour, 120 left: two hours.
        let f = forecast(&[at(0, 180), at(1800, 150), at(3600, 120)]).unwrap();
        assert!((f.consumed_per_hour - 60.0).abs() < 1e-9);
        assert_eq!(f.exhausted_in, Some(Duration::from_secs(7200)));
    }

    #[test]
    fn flat_or_rising_free_ips_never_run_out() {
        let flat = forecast(&[at(0, 50), at(600, 50)]).unwrap();
        assert_eq!(flat.consumed_per_hour, 0.0);
        assert_eq!(flat.exhausted_in, None);
        let rising = forecast(&[at(0, 50), at(600, 60)]).unwrap();
        assert!(rising.consumed_per_hour < 0.0);
        assert_eq!(rising.exhausted_in, None);
    }

    #[test]
    fn one_sample_or_no_time_between_samples_gives_no_forecast() {
        assert_eq!(forecast(&[]), None);
        assert_eq!(forecast(&[at(10, 5)]), None);
        assert_eq!(forecast(&[at(10, 5), at(10, 3)]), None);
    }

    #[test]
    fn an_exhausted_subnet_that_is_still_asked_runs_out_now() {
        let f = forecast(&[at(0, 4), at(60, 0)]).unwrap();
        assert_eq!(f.exhausted_in, Some(Duration::ZERO));
    }

    #[test]
    fn samples_out_of_order_are_read_in_time_order() {
        let f = forecast(&[at(3600, 120), at(0, 180)]).unwrap();
        assert_eq!(f.exhausted_in, Some(Duration::from_secs(7200)));
    }

    #[test]
    fn a_trickle_is_bounded_not_overflowed() {
        let f = forecast(&[at(0, u32::MAX), at(u64::MAX / 4, u32::MAX - 1)]).unwrap();
        assert_eq!(f.exhausted_in, Some(HORIZON));
    }

    #[test]
    fn the_window_keeps_the_last_span_and_one_sample_before_it() {
        let mut w = Window::new(Duration::from_secs(3600));
        for (t, free) in [(0, 100), (1000, 95), (3000, 90), (5000, 80)] {
            w.push(at(t, free));
        }
        // 1000 is the newest sample at or before 5000 - 3600 = 1400.
        assert_eq!(w.samples(), vec![at(1000, 95), at(3000, 90), at(5000, 80)]);
        w.push(at(4000, 1));
        assert_eq!(w.samples().len(), 3, "an out-of-order sample is dropped");
        let f = w.forecast().unwrap();
        assert!((f.consumed_per_hour - 15.0 * 3600.0 / 4000.0).abs() < 1e-9);
    }

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_secs(45)), "45s");
        assert_eq!(human(Duration::from_secs(720)), "12m");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 300)), "3h05m");
        assert_eq!(human(Duration::from_secs(4 * 86_400 + 7 * 3600)), "4d07h");
    }

    proptest! {
        /// When free IPs fall, the subnet runs out: rate x time left = free
        /// left; when they do not, it never does.
        #[test]
        fn exhaustion_matches_the_rate(
            start in 0u32..10_000,
            end in 0u32..10_000,
            t0 in 0u64..1_000_000,
            span in 1u64..1_000_000,
        ) {
            let f = forecast(&[at(t0, start), at(t0 + span, end)]).unwrap();
            match f.exhausted_in {
                Some(left) => {
                    prop_assert!(end < start);
                    let per_sec = f.consumed_per_hour / 3600.0;
                    let uncapped = f64::from(end) / per_sec;
                    if uncapped >= HORIZON.as_secs_f64() {
                        prop_assert_eq!(left, HORIZON);
                    } else {
                        prop_assert!((per_sec * left.as_secs_f64() - f64::from(end)).abs() < 1e-3 * f64::from(end).max(1.0));
                    }
                }
                None => prop_assert!(end >= start),
            }
        }

        /// A window never holds a sample older than the span before the
        /// newest, except the one that starts it.
        #[test]
        fn the_window_is_bounded(times in proptest::collection::vec(0u64..100_000, 1..50)) {
            let mut sorted = times.clone();
            sorted.sort_unstable();
            let mut w = Window::new(Duration::from_secs(3600));
            for t in &sorted {
                w.push(at(*t, 1));
            }
            let s = w.samples();
            let newest = s.last().unwrap().at;
            let old = s.iter().filter(|x| x.at + Duration::from_secs(3600) < newest).count();
            prop_assert!(old <= 1);
        }
    }
}
