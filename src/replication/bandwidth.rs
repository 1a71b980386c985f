//! Byte-rate limits for moving object bytes: one for sync transfers, one for
//! re-verification reads, each shared by every worker of its kind on the site, so the
//! limit is the site's total rate however many transfers run (like `rsync --bwlimit`, but
//! for the site rather than one transfer).
//!
//! The pacing is `governor`'s GCRA in units of 1 KiB (a byte-sized unit would make the
//! replenish interval a few nanoseconds, which the limiter cannot time exactly at high
//! rates), with a burst of a tenth of a second's worth (at least 64 KiB): a transfer that
//! starts after an idle spell gets that much at once and then runs at the rate, so over
//! seconds the rate holds within a percent or so. A request larger than the burst is
//! taken in burst-sized pieces.
//!
//! The limit can change while transfers run ([`Bandwidth::set`], driven by the per-site
//! setting from the primary): the next piece any worker takes is paced by the new limit.

use std::num::NonZeroU32;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// The unit the limiter counts in.
const UNIT: u64 = 1024;
/// The smallest burst, in units: one verification read or a few sync chunks.
const MIN_BURST_UNITS: u64 = 64;

struct Limiter {
    rate: u64,
    burst: u64,
    governor: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

impl Limiter {
    fn new(rate: u64) -> Limiter {
        let rate = rate.max(UNIT);
        let burst = (rate / UNIT / 10).clamp(MIN_BURST_UNITS, u64::from(u32::MAX));
        let period = Duration::from_nanos(
            (UNIT as u128 * 1_000_000_000 / rate as u128).clamp(1, u64::MAX as u128) as u64,
        );
        // `with_period` refuses only a zero period, which the clamp above rules out.
        let quota = Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(burst as u32).unwrap_or(NonZeroU32::MIN));
        let clock = DefaultClock::default();
        Limiter {
            rate,
            burst,
            governor: RateLimiter::direct_with_clock(quota, clock.clone()),
            clock,
        }
    }

    /// How long to wait before `units` (at most the burst) may pass; `None` once taken.
    fn try_take(&self, units: u64) -> Option<Duration> {
        let n = NonZeroU32::new(units.clamp(1, self.burst) as u32).unwrap_or(NonZeroU32::MIN);
        match self.governor.check_n(n) {
            Ok(Ok(())) => None,
            Ok(Err(not_until)) => Some(not_until.wait_time_from(self.clock.now())),
            // Never more than the burst is asked for; should it happen, pass.
            Err(_) => None,
        }
    }
}

/// One limit, shared by the workers it paces; unlimited when no rate is set.
#[derive(Default)]
pub struct Bandwidth {
    current: RwLock<Option<Arc<Limiter>>>,
}

impl Bandwidth {
    /// A limit of `rate` bytes per second (`None`: unlimited).
    pub fn new(rate: Option<u64>) -> Bandwidth {
        let b = Bandwidth::default();
        b.set(rate);
        b
    }

    /// The limit in force, in bytes per second (`None`: unlimited).
    pub fn rate(&self) -> Option<u64> {
        self.limiter().map(|l| l.rate)
    }

    /// Changes the limit; transfers under way are paced by it from their next piece.
    pub fn set(&self, rate: Option<u64>) {
        if self.rate() == rate {
            return;
        }
        *self.current.write().unwrap_or_else(|p| p.into_inner()) =
            rate.map(|r| Arc::new(Limiter::new(r)));
    }

    fn limiter(&self) -> Option<Arc<Limiter>> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until `bytes` may pass.
    pub async fn take(&self, bytes: usize) {
        let mut units = (bytes as u64).div_ceil(UNIT);
        while let Some(wait) = self.pass(&mut units) {
            tokio::time::sleep(wait).await;
        }
    }

    /// [`Bandwidth::take`] for a blocking thread (verification reads).
    pub fn take_blocking(&self, bytes: usize) {
        let mut units = (bytes as u64).div_ceil(UNIT);
        while let Some(wait) = self.pass(&mut units) {
            std::thread::sleep(wait);
        }
    }

    /// Lets through what of `units` may pass now, and says how long to wait before the rest
    /// may (`None`: all passed, or no limit is in force). The limit is looked up per piece,
    /// so a changed limit applies from the next piece.
    fn pass(&self, units: &mut u64) -> Option<Duration> {
        while *units > 0 {
            let limiter = self.limiter()?;
            let piece = (*units).min(limiter.burst);
            match limiter.try_take(piece) {
                None => *units -= piece,
                Some(wait) => return Some(wait),
            }
        }
        None
    }
}

impl std::fmt::Debug for Bandwidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.rate() {
            Some(r) => write!(f, "Bandwidth({})", crate::types::format_rate(r)),
            None => f.write_str("Bandwidth(unlimited)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_take_never_waits_and_limits_change_in_place() {
        let b = Bandwidth::new(None);
        b.take_blocking(usize::MAX / 2);
        assert_eq!(b.rate(), None);
        b.set(Some(1 << 20));
        assert_eq!(b.rate(), Some(1 << 20));
        b.set(None);
        assert_eq!(b.rate(), None);
    }

    #[test]
    fn a_burst_is_a_tenth_of_a_second_and_at_least_64_kib() {
        assert_eq!(Limiter::new(1 << 30).burst, (1 << 20) / 10);
        assert_eq!(Limiter::new(256 << 10).burst, MIN_BURST_UNITS);
    }
}
