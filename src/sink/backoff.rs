//! Exponential backoff with full jitter, and the AIMD rate every AWS sink paces with.
//!
//! Backoff: the n-th retry waits a uniformly random time in `[0, min(cap, base·2ⁿ)]`
//! ("full jitter"), so that nodes throttled together do not retry together.
//!
//! AIMD: throttling (a whole call, or records refused inside a 200 response) halves
//! this node's rate; success adds back toward the ceiling a step in proportion to the
//! time passed. Many nodes sharing one quota and doing this converge on fair shares
//! without talking to each other — the same argument as TCP congestion control.

use std::time::Duration;

/// A seed for jitter that differs between nodes started together (time and pid).
pub fn seed() -> u64 {
    let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
}

/// Why a backoff could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BackoffError {
    #[error("backoff base must be greater than 0")]
    ZeroBase,
    #[error("backoff cap ({cap:?}) must be at least the base ({base:?})")]
    CapBelowBase { base: Duration, cap: Duration },
}

/// Exponential backoff with full jitter.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    attempt: u32,
    rng: u64,
}

impl Backoff {
    pub fn try_new(base: Duration, cap: Duration, seed: u64) -> Result<Self, BackoffError> {
        if base.is_zero() {
            return Err(BackoffError::ZeroBase);
        }
        if cap < base {
            return Err(BackoffError::CapBelowBase { base, cap });
        }
        Ok(Self { base, cap, attempt: 0, rng: seed | 1 })
    }

    /// The wait before the next retry.
    pub fn next_wait(&mut self) -> Duration {
        let ceiling = self.base.saturating_mul(1u32 << self.attempt.min(30)).min(self.cap);
        self.attempt = self.attempt.saturating_add(1);
        let fraction = self.next_random() as f64 / u64::MAX as f64;
        ceiling.mul_f64(fraction)
    }

    /// A uniformly random wait in `[0, max]` (jitter without growth).
    pub fn jitter(&mut self, max: Duration) -> Duration {
        let fraction = self.next_random() as f64 / u64::MAX as f64;
        max.mul_f64(fraction)
    }

    /// A success: the next failure starts from the base again.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    /// xorshift64*: plenty for jitter, no dependency.
    fn next_random(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// A rate (units per second) adjusted by additive increase, multiplicative decrease.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Aimd {
    rate: f64,
    floor: f64,
    ceiling: f64,
}

impl Aimd {
    /// Starts at the ceiling; never goes below `floor`.
    pub fn new(ceiling: f64, floor: f64) -> Self {
        let floor = floor.clamp(f64::MIN_POSITIVE, ceiling);
        Self { rate: ceiling, floor, ceiling }
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// Throttled: halve.
    pub fn throttled(&mut self) {
        self.rate = (self.rate / 2.0).max(self.floor);
    }

    /// Accepted: step `by` back up toward the ceiling (the pacer steps by the time
    /// that passed, so that every node climbs at the same speed).
    pub fn raise(&mut self, by: f64) {
        self.rate = (self.rate + by.max(0.0)).min(self.ceiling);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn inputs_are_validated() {
        assert_eq!(Backoff::try_new(Duration::ZERO, Duration::from_secs(1), 1).unwrap_err(), BackoffError::ZeroBase);
        assert!(Backoff::try_new(Duration::from_secs(2), Duration::from_secs(1), 1).is_err());
    }

    proptest! {
        #[test]
        fn waits_stay_under_the_growing_ceiling_and_the_cap(seed in any::<u64>(), base_ms in 1u64..1000, cap_ms in 1000u64..60_000) {
            let (base, cap) = (Duration::from_millis(base_ms), Duration::from_millis(cap_ms));
            let mut b = Backoff::try_new(base, cap, seed).unwrap();
            for n in 0..40u32 {
                let w = b.next_wait();
                prop_assert!(w <= base.saturating_mul(1 << n.min(30)).min(cap));
            }
            b.reset();
            prop_assert!(b.next_wait() <= base);
        }
    }

    #[test]
    fn aimd_halves_and_recovers() {
        let mut a = Aimd::new(1000.0, 10.0);
        a.throttled();
        a.throttled();
        assert_eq!(a.rate(), 250.0);
        (0..100).for_each(|_| a.raise(50.0));
        assert_eq!(a.rate(), 1000.0);
        (0..20).for_each(|_| a.throttled());
        assert_eq!(a.rate(), 10.0, "never below the floor");
    }

    /// Two senders sharing a quota, one starting far ahead: AIMD brings them together.
    #[test]
    fn aimd_converges_on_fair_shares() {
        let quota = 1000.0;
        let (mut a, mut b) = (Aimd::new(1000.0, 1.0), Aimd::new(1000.0, 1.0));
        b.throttled();
        b.throttled();
        b.throttled();
        for _ in 0..5000 {
            if a.rate() + b.rate() > quota {
                a.throttled();
                b.throttled();
            } else {
                a.raise(5.0);
                b.raise(5.0);
            }
        }
        let (ra, rb) = (a.rate(), b.rate());
        assert!((ra - rb).abs() / ((ra + rb) / 2.0) < 0.2, "{ra} vs {rb}");
    }
}
