//! Time for every host timestamp: one monotonic clock in nanoseconds.
//!
//! All stages read time through [`Clock`], so tests can run the loop on an accelerated or a manual clock
//! without sleeping. This is the only module allowed to read `Instant::now` or to sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// A monotonic clock in nanoseconds since an arbitrary origin (the start of the session).
pub trait Clock: Send + Sync {
    /// The current time, ns since the clock's origin.
    fn now_ns(&self) -> u64;
    /// Block the calling thread until `now_ns() >= t_ns`. Used only to pace sources (a camera's exposure
    /// clock); loop stages never call it.
    fn sleep_until(&self, t_ns: u64);
}

/// A shared clock handle, cheap to clone into every thread.
pub type SharedClock = Arc<dyn Clock>;

/// The host's monotonic clock (CLOCK_MONOTONIC), optionally running faster than real time.
///
/// `speed` 1.0 is real time; 4.0 makes one clock second pass in 0.25 s of real time, which lets tests run a
/// 120 fps session quickly while every stage still sees consistent timestamps.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Instant,
    speed: f64,
}

impl MonotonicClock {
    /// A real-time clock whose origin is now.
    #[allow(clippy::disallowed_methods)] // reason: this is the clock module
    pub fn new() -> Self {
        Self::with_speed(1.0)
    }

    /// A clock running `speed` times faster than real time (`speed` > 0), origin now.
    #[allow(clippy::disallowed_methods)] // reason: this is the clock module
    pub fn with_speed(speed: f64) -> Self {
        assert!(speed > 0.0 && speed.is_finite(), "clock speed must be > 0");
        Self {
            origin: Instant::now(),
            speed,
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    #[allow(clippy::disallowed_methods)] // reason: this is the clock module
    fn now_ns(&self) -> u64 {
        let real = self.origin.elapsed().as_nanos() as f64;
        (real * self.speed) as u64
    }

    #[allow(clippy::disallowed_methods)] // reason: pacing a source is the one place that sleeps
    fn sleep_until(&self, t_ns: u64) {
        // Sleep most of the way, then yield-spin the last stretch: thread::sleep overshoots by ~50–100 µs,
        // which would show up as camera jitter.
        const SPIN_NS: u64 = 200_000;
        loop {
            let now = self.now_ns();
            if now >= t_ns {
                return;
            }
            let real_left_ns = ((t_ns - now) as f64 / self.speed) as u64;
            if real_left_ns > SPIN_NS {
                std::thread::sleep(Duration::from_nanos(real_left_ns - SPIN_NS));
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// A clock that only moves when told to: unit tests of timing logic, no sleeping.
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now_ns: Arc<AtomicU64>,
}

impl ManualClock {
    /// A manual clock at time 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Set the time (ns). Time never goes backwards: an earlier value is ignored.
    pub fn set_ns(&self, t_ns: u64) {
        self.now_ns.fetch_max(t_ns, Ordering::SeqCst);
    }

    /// Advance the time by `dt_ns`.
    pub fn advance_ns(&self, dt_ns: u64) {
        self.now_ns.fetch_add(dt_ns, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ns(&self) -> u64 {
        self.now_ns.load(Ordering::SeqCst)
    }

    /// A manual clock jumps to the requested time instead of waiting.
    fn sleep_until(&self, t_ns: u64) {
        self.set_ns(t_ns);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_never_goes_back() {
        let c = ManualClock::new();
        c.set_ns(100);
        c.set_ns(50);
        assert_eq!(c.now_ns(), 100);
        c.advance_ns(5);
        c.sleep_until(200);
        assert_eq!(c.now_ns(), 200);
    }

    #[test]
    fn monotonic_clock_is_monotonic_and_sleep_until_reaches_target() {
        let c = MonotonicClock::with_speed(1000.0);
        let a = c.now_ns();
        c.sleep_until(a + 2_000_000);
        assert!(c.now_ns() >= a + 2_000_000);
    }
}
