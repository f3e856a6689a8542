//! Time for every host timestamp: one monotonic clock in nanoseconds.
//!
//! All stages read time through [`Clock`], so tests can run the loop on an accelerated or a manual clock
//! without sleeping. This is the only module allowed to read the OS clock or to sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A monotonic clock in nanoseconds.
pub trait Clock: Send + Sync {
    /// The current time in ns. For [`MonotonicClock`] at speed 1 this is the host's `CLOCK_MONOTONIC`, the
    /// clock V4L2 driver timestamps and other programs on the machine use, so stamps line up across tools.
    fn now_ns(&self) -> u64;
    /// Block the calling thread until `now_ns() >= t_ns`. Used only to pace sources (a camera's exposure
    /// clock); loop stages never call it.
    fn sleep_until(&self, t_ns: u64);
}

/// A shared clock handle, cheap to clone into every thread.
pub type SharedClock = Arc<dyn Clock>;

/// The host's `CLOCK_MONOTONIC` in ns, optionally running faster than real time from the moment it is made.
///
/// `speed` 1.0 is real time (the raw `CLOCK_MONOTONIC`); 4.0 makes one clock second pass in 0.25 s of real
/// time, which lets tests run a 120 fps session quickly while every stage sees consistent timestamps.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin_ns: u64,
    speed: f64,
}

/// `CLOCK_MONOTONIC` in ns.
fn monotonic_raw_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // reason for allowing unsafe: FFI to clock_gettime, the one way to read CLOCK_MONOTONIC's value.
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_REALTIME` in ns.
fn realtime_raw_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // reason for allowing unsafe: FFI to clock_gettime, the one way to read CLOCK_REALTIME's value.
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_REALTIME always exists on Linux.
    #[allow(unsafe_code)]
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `CLOCK_REALTIME` − `CLOCK_MONOTONIC` now (ns): subtracted from a wall-clock stamp that a library took (Aravis
/// stamps a frame's arrival with `g_get_real_time`), it gives the same moment on the host clock. It changes
/// when the wall clock is stepped or slewed (NTP), so read it next to the stamp it converts. Two reads of the
/// wall clock around the monotonic one, averaged: off by at most half their gap (~20 ns).
pub fn realtime_minus_monotonic_ns() -> i64 {
    let before = realtime_raw_ns();
    let monotonic = monotonic_raw_ns();
    let after = realtime_raw_ns();
    let realtime = before / 2 + after / 2 + (before % 2 + after % 2) / 2;
    realtime as i64 - monotonic as i64
}

impl MonotonicClock {
    /// The real-time clock: `CLOCK_MONOTONIC` itself.
    pub fn new() -> Self {
        Self::with_speed(1.0)
    }

    /// A clock running `speed` times faster than real time (`speed` > 0), origin now.
    pub fn with_speed(speed: f64) -> Self {
        assert!(speed > 0.0 && speed.is_finite(), "clock speed must be > 0");
        Self {
            origin_ns: monotonic_raw_ns(),
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
    fn now_ns(&self) -> u64 {
        let raw = monotonic_raw_ns();
        if self.speed == 1.0 {
            raw
        } else {
            self.origin_ns + (raw.saturating_sub(self.origin_ns) as f64 * self.speed) as u64
        }
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
    fn real_time_clock_is_clock_monotonic() {
        let c = MonotonicClock::new();
        let (a, b, d) = (monotonic_raw_ns(), c.now_ns(), monotonic_raw_ns());
        assert!(a <= b && b <= d);
    }

    #[test]
    fn monotonic_clock_is_monotonic_and_sleep_until_reaches_target() {
        let c = MonotonicClock::with_speed(1000.0);
        let a = c.now_ns();
        c.sleep_until(a + 2_000_000);
        assert!(c.now_ns() >= a + 2_000_000);
    }
}
