//! Pacing: stay inside the destination's quotas before it has to say no.
//!
//! Three token buckets (governor's GCRA), one each for requests, records and bytes per
//! second, set to the configured ceilings. On top, one AIMD factor `f` in
//! `[FLOOR, 1]` scales all three: a request costs `n / f` cells, so the effective
//! rate is `f · ceiling`. Throttling halves `f`, at most once per `CUT_INTERVAL`:
//! answers to requests sent before, or within a second after, the last cut still
//! reflect the old rate (quotas are measured per second) and do not cut again. Time
//! spent sending without throttling raises `f` by `elapsed / recovery`.
//! Many nodes sharing one stream's quota converge on fair shares this way (see
//! `backoff::Aimd`).

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use governor::clock::{Clock, DefaultClock};
use governor::{Quota, RateLimiter};

use crate::sink::backoff::Aimd;
use crate::config::Pacing;

/// The lowest factor: a node throttled again and again still sends something.
const FLOOR: f64 = 1.0 / 1024.0;
/// Growth is credited for at most this much time per success (a long idle spell
/// is not a licence to jump to the ceiling; a slow node sending every few seconds
/// still climbs as fast as the others).
const MAX_GROWTH_STEP: Duration = Duration::from_secs(5);
/// After a cut, throttling of requests sent within this long does not cut again:
/// AWS measures quotas per second, so for about a second its answers still reflect
/// the rate before the cut (TCP's "once per round trip", with the quota's window as
/// the round trip).
const CUT_INTERVAL: Duration = Duration::from_secs(1);
/// Requests are counted in thousandths, so that `1 / f` rounds finely.
const REQUEST_CELLS: u64 = 1000;

type Limiter = RateLimiter<governor::state::NotKeyed, governor::state::InMemoryState, DefaultClock>;

/// One token bucket: `per_second` cells a second, a burst of one second's worth.
struct Bucket {
    limiter: Limiter,
    burst: u64,
}

impl Bucket {
    fn new(per_second: u64) -> Self {
        let per_second = per_second.clamp(1, u64::from(u32::MAX));
        let n = NonZeroU32::new(per_second as u32).expect("clamped to at least 1");
        Self { limiter: RateLimiter::direct(Quota::per_second(n)), burst: per_second }
    }

    /// How long until `cells` may pass, taking them if now; `cells` larger than the
    /// burst are taken one burst at a time.
    fn take(&self, cells: &mut u64) -> Option<Duration> {
        while *cells > 0 {
            let chunk = (*cells).min(self.burst) as u32;
            let n = NonZeroU32::new(chunk).expect("chunk is at least 1");
            match self.limiter.check_n(n) {
                Ok(Ok(())) => *cells -= u64::from(chunk),
                Ok(Err(not_until)) => return Some(not_until.wait_time_from(DefaultClock::default().now())),
                Err(_) => unreachable!("a chunk never exceeds the burst"),
            }
        }
        None
    }
}

/// The pace of one sink.
pub struct Pacer {
    requests: Bucket,
    records: Bucket,
    bytes: Bucket,
    ceilings: Pacing,
    aimd: Aimd,
    /// When the factor was last cut: answers to requests sent before this do not cut.
    last_cut: Option<Instant>,
    last_growth: Instant,
}

impl Pacer {
    pub fn new(ceilings: Pacing) -> Self {
        Self {
            requests: Bucket::new(u64::from(ceilings.requests_per_second) * REQUEST_CELLS),
            records: Bucket::new(u64::from(ceilings.records_per_second)),
            bytes: Bucket::new(ceilings.bytes_per_second),
            ceilings,
            aimd: Aimd::new(1.0, FLOOR),
            last_cut: None,
            last_growth: Instant::now(),
        }
    }

    /// Waits until a request of `records` records and `bytes` bytes may go.
    pub async fn admit(&self, records: u64, bytes: u64) {
        let f = self.aimd.rate();
        let scale = |n: u64| ((n as f64) / f).ceil() as u64;
        let mut want = [scale(REQUEST_CELLS), scale(records.max(1)), scale(bytes.max(1))];
        for (bucket, cells) in [&self.requests, &self.records, &self.bytes].into_iter().zip(want.iter_mut()) {
            while let Some(wait) = bucket.take(cells) {
                tokio::time::sleep(wait).await;
            }
        }
    }

    /// The destination throttled a request sent at `sent`.
    pub fn throttled(&mut self, sent: Instant) {
        if self.last_cut.is_some_and(|cut| sent < cut + CUT_INTERVAL) {
            return;
        }
        self.aimd.throttled();
        let now = Instant::now();
        self.last_cut = Some(now);
        self.last_growth = now;
    }

    /// A request went through unthrottled.
    pub fn succeeded(&mut self) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last_growth).min(MAX_GROWTH_STEP);
        self.last_growth = now;
        self.aimd.raise(elapsed.as_secs_f64() / self.ceilings.recovery.as_secs_f64());
    }

    /// The current factor of the ceilings, in `(0, 1]`.
    pub fn factor(&self) -> f64 {
        self.aimd.rate()
    }

    /// The current byte rate this node allows itself.
    pub fn bytes_per_second(&self) -> f64 {
        self.aimd.rate() * self.ceilings.bytes_per_second as f64
    }

    /// The current request rate this node allows itself.
    pub fn requests_per_second(&self) -> f64 {
        self.aimd.rate() * f64::from(self.ceilings.requests_per_second)
    }

    /// The current record rate this node allows itself.
    pub fn records_per_second(&self) -> f64 {
        self.aimd.rate() * f64::from(self.ceilings.records_per_second)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacing(bytes: u64) -> Pacing {
        Pacing { requests_per_second: 1000, records_per_second: 100_000, bytes_per_second: bytes, recovery: Duration::from_secs(10) }
    }

    #[test]
    fn throttling_halves_once_per_round_trip_and_success_climbs_back() {
        let mut p = Pacer::new(pacing(1 << 20));
        let sent = Instant::now();
        p.throttled(sent);
        assert_eq!(p.factor(), 0.5);
        // Three more answers to requests sent before the cut: no further cut.
        (0..3).for_each(|_| p.throttled(sent));
        assert_eq!(p.factor(), 0.5);
        // Nor for one sent within a second after it.
        p.throttled(Instant::now());
        assert_eq!(p.factor(), 0.5);
        p.last_cut = Some(Instant::now() - CUT_INTERVAL);
        p.throttled(Instant::now());
        assert_eq!(p.factor(), 0.25);
        assert_eq!(p.bytes_per_second(), 262_144.0);
        std::thread::sleep(Duration::from_millis(300));
        p.succeeded();
        let f = p.factor();
        assert!(f > 0.25 + 0.02 && f < 0.25 + 0.1, "{f}");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn admission_follows_the_scaled_rate() {
        let mut p = Pacer::new(pacing(100_000));
        p.throttled(Instant::now()); // 50,000 B/s
        let start = tokio::time::Instant::now();
        // The first second's burst, then 25,000 more bytes: about half a second.
        p.admit(1, 200_000).await;
        p.admit(1, 25_000).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
    }
}
