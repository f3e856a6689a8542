//! Device time → host time: the mapping that puts the device's own timestamps of its output changes on the
//! host's monotonic clock (protocol/SPEC.md §5).
//!
//! The actuation thread asks the device for its clock every [`SYNC_EVERY_NS`] and feeds each answered
//! exchange to [`DeviceClock::add`]. Each exchange says the device read its clock somewhere between sending
//! the request and receiving the reply; the shorter that round trip, the tighter the bound. So, as NTP does:
//!
//! - **least delay**: the mapping is anchored on the exchange with the shortest round trip among the last
//!   [`WINDOW`] (about a quarter of a second), not on the latest one;
//! - **wire time**: on a serial line the request and the reply take known, different times on the wire
//!   ([`SyncTiming`]); the device stamps the request when its last byte arrived, so the moment is placed at
//!   `sent + request wire time + half of what is left of the round trip`, not at its middle;
//! - **drift**: the rate of the device clock against the host's comes from least-delay anchors a few seconds
//!   apart, so a crystal off by tens of ppm is followed between exchanges;
//! - **steps**: an exchange that disagrees with the mapping by more than its own uncertainty plus
//!   [`STEP_NS`] means the device clock jumped (a reset, a reconnect): the history is dropped and the mapping
//!   starts again from that exchange, instead of averaging across the jump.
//!
//! Fixed-size state, no allocation: it lives on the actuation thread.

use std::time::Duration;

use reflex_firmware_bridge::{DeviceEvent, Output, SyncTiming};

use crate::clock::Clock;

/// How often the actuation thread asks for the device clock (host ns).
pub const SYNC_EVERY_NS: u64 = 31_250_000;
/// Exchanges the least-delay anchor is chosen from (× [`SYNC_EVERY_NS`] ≈ 250 ms).
pub const WINDOW: usize = 8;
/// Least-delay anchors kept for the rate, one per [`WINDOW`] exchanges (≈ 4 s of history).
const ANCHORS: usize = 16;
/// The rate is measured over anchors at least this far apart (device ns); below, the device clock is taken to
/// run at the host's rate.
const MIN_RATE_SPAN_NS: i128 = 1_000_000_000;
/// An exchange off the mapping by more than its half round trip plus this is a clock step.
pub const STEP_NS: i128 = 1_000_000;
/// An exchange whose round trip took longer than this says too little to use.
pub const MAX_RTT_NS: u64 = 5_000_000;

/// One answered clock-sync exchange: the device's clock and the best host estimate of the same moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Sample {
    /// Device time (ns).
    device_ns: i128,
    /// Host time of the same moment (ns).
    host_ns: i128,
    /// Round trip minus the time on the wire (ns): the uncertainty of `host_ns` is half of it.
    delay_ns: u64,
}

/// What the mapping knows now, for the session summary.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ClockSyncStats {
    /// Exchanges used.
    pub exchanges: u64,
    /// Steps of the device clock detected (history dropped).
    pub steps: u64,
    /// Round trip minus wire time of the current anchor (ns): twice the worst-case error of the mapping.
    pub anchor_delay_ns: u64,
    /// Device clock rate against the host's, in parts per million (+: the device runs fast).
    pub drift_ppm: f64,
}

/// Maps device µs to host ns from clock-sync exchanges. See the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct DeviceClock {
    recent: [Sample; WINDOW],
    /// Exchanges in `recent` (up to [`WINDOW`]); the next one goes to `next`.
    recent_len: usize,
    next: usize,
    /// Exchanges since the last anchor was pushed.
    since_anchor: usize,
    anchors: [Sample; ANCHORS],
    anchors_len: usize,
    anchors_next: usize,
    /// The mapping: anchor point and rate (host ns per device ns).
    anchor: Option<Sample>,
    rate: f64,
    stats: ClockSyncStats,
}

impl Default for DeviceClock {
    fn default() -> Self {
        Self {
            recent: [Sample::default(); WINDOW],
            recent_len: 0,
            next: 0,
            since_anchor: 0,
            anchors: [Sample::default(); ANCHORS],
            anchors_len: 0,
            anchors_next: 0,
            anchor: None,
            rate: 1.0,
            stats: ClockSyncStats::default(),
        }
    }
}

impl DeviceClock {
    /// Adds an exchange: the request went out at host `sent_ns`, the reply carrying `device_us` was read at
    /// `received_ns`, and `wire` is what the link itself takes. Returns whether it was used (a round trip over
    /// [`MAX_RTT_NS`] is not).
    pub fn add(
        &mut self,
        device_us: u64,
        sent_ns: u64,
        received_ns: u64,
        wire: SyncTiming,
    ) -> bool {
        let rtt = received_ns.saturating_sub(sent_ns);
        if rtt > MAX_RTT_NS {
            return false;
        }
        let on_wire = wire.request_ns + wire.reply_ns;
        let delay_ns = rtt.saturating_sub(on_wire);
        let host_ns =
            i128::from(sent_ns) + i128::from(wire.request_ns.min(rtt)) + i128::from(delay_ns / 2);
        let sample = Sample {
            device_ns: i128::from(device_us) * 1000,
            host_ns,
            delay_ns,
        };
        if let Some(expected) = self.map(sample.device_ns) {
            let slack =
                i128::from(delay_ns / 2) + i128::from(self.stats.anchor_delay_ns / 2) + STEP_NS;
            if (expected - host_ns).abs() > slack {
                let kept = self.stats;
                *self = Self::default();
                self.stats = ClockSyncStats {
                    steps: kept.steps + 1,
                    ..kept
                };
            }
        }
        self.recent[self.next] = sample;
        self.next = (self.next + 1) % WINDOW;
        self.recent_len = (self.recent_len + 1).min(WINDOW);
        let best = self.recent[..self.recent_len]
            .iter()
            .copied()
            .min_by_key(|s| s.delay_ns)
            .unwrap_or(sample);
        self.since_anchor += 1;
        if self.anchors_len == 0 || self.since_anchor >= WINDOW {
            // One anchor per window: the window's least-delay exchange.
            self.anchors[self.anchors_next] = best;
            self.anchors_next = (self.anchors_next + 1) % ANCHORS;
            self.anchors_len = (self.anchors_len + 1).min(ANCHORS);
            self.since_anchor = 0;
            let oldest = self.anchors[(self.anchors_next + ANCHORS - self.anchors_len) % ANCHORS];
            if best.device_ns - oldest.device_ns >= MIN_RATE_SPAN_NS {
                self.rate = (best.host_ns - oldest.host_ns) as f64
                    / (best.device_ns - oldest.device_ns) as f64;
            }
        }
        self.anchor = Some(best);
        self.stats.exchanges += 1;
        self.stats.anchor_delay_ns = best.delay_ns;
        self.stats.drift_ppm = (1.0 / self.rate - 1.0) * 1e6;
        true
    }

    /// Host time (ns) of device time `device_us`; `None` before the first exchange.
    pub fn host_ns(&self, device_us: u64) -> Option<u64> {
        self.map(i128::from(device_us) * 1000)
            .map(|h| h.clamp(0, i128::from(u64::MAX)) as u64)
    }

    /// What the mapping knows now.
    pub fn stats(&self) -> ClockSyncStats {
        self.stats
    }

    fn map(&self, device_ns: i128) -> Option<i128> {
        let a = self.anchor?;
        Some(a.host_ns + ((device_ns - a.device_ns) as f64 * self.rate) as i128)
    }
}

/// How often a clock-sync reply that is due is looked for (ns): the time it waits unread counts as round trip.
pub const SYNC_POLL_NS: u64 = 50_000;

/// [`WINDOW`] clock-sync exchanges one after the other, each fed to `device_clock`, so the least-delay mapping
/// starts from the best of them: the loop's first sync before any frame, and `reflex lightloop`'s before each
/// trial. Each reply is waited for up to [`MAX_RTT_NS`] (parked between looks, not a loop thread's business
/// once frames flow); other events that arrive meanwhile go to `other`. Returns the exchanges used.
pub fn sync_burst(
    output: &mut dyn Output,
    clock: &dyn Clock,
    device_clock: &mut DeviceClock,
    other: &mut dyn FnMut(DeviceEvent),
) -> usize {
    let wire = output.sync_timing();
    let mut used = 0;
    for _ in 0..WINDOW {
        let t0 = clock.now_ns();
        let Ok(want) = output.request_sync() else {
            return used;
        };
        let mut reply = None;
        let give_up_ns = t0 + MAX_RTT_NS;
        while reply.is_none() && clock.now_ns() < give_up_ns {
            let _ = output.poll(&mut |ev| match ev {
                DeviceEvent::SyncReply {
                    seq,
                    device_time_us,
                } if seq == want => reply = Some(device_time_us),
                DeviceEvent::SyncReply { .. } => {}
                ev => other(ev),
            });
            if reply.is_none() {
                std::thread::park_timeout(Duration::from_nanos(SYNC_POLL_NS));
            }
        }
        if let Some(device_us) = reply
            && device_clock.add(device_us, t0, clock.now_ns(), wire)
        {
            used += 1;
        }
    }
    used
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_WIRE: SyncTiming = SyncTiming {
        request_ns: 0,
        reply_ns: 0,
    };

    /// A device whose clock reads `offset_us + host_ns·(1 + ppm·1e-6)/1000`, answered with the given
    /// one-way delays (request side, reply side) in ns.
    fn exchange(
        c: &mut DeviceClock,
        host_ns: u64,
        ppm: f64,
        offset_us: u64,
        to_dev: u64,
        back: u64,
    ) -> bool {
        let at_device = host_ns + to_dev;
        let device_us = offset_us + (at_device as f64 * (1.0 + ppm * 1e-6) / 1000.0) as u64;
        c.add(device_us, host_ns, at_device + back, NO_WIRE)
    }

    fn device_us_at(host_ns: u64, ppm: f64, offset_us: u64) -> u64 {
        offset_us + (host_ns as f64 * (1.0 + ppm * 1e-6) / 1000.0) as u64
    }

    #[test]
    fn nothing_before_the_first_exchange_and_slow_answers_are_ignored() {
        let mut c = DeviceClock::default();
        assert_eq!(c.host_ns(5), None);
        assert!(!c.add(1, 0, MAX_RTT_NS + 1, NO_WIRE));
        assert_eq!(c.host_ns(5), None);
        assert!(c.add(1_000, 10_000_000, 10_000_100, NO_WIRE));
        // One exchange: the device read its clock at the middle of the round trip.
        assert_eq!(c.host_ns(1_000), Some(10_000_050));
        assert_eq!(c.host_ns(1_010), Some(10_010_050));
    }

    #[test]
    fn the_least_delay_exchange_wins_over_later_slower_ones() {
        let mut c = DeviceClock::default();
        let offset = 5_000_000;
        // A quick exchange (20 µs each way), then slow ones whose reply waited 2 ms on the host side: their
        // middles are 1 ms late, which the least-delay anchor ignores.
        assert!(exchange(&mut c, 1_000_000_000, 0.0, offset, 20_000, 20_000));
        for k in 1..WINDOW as u64 {
            assert!(exchange(
                &mut c,
                1_000_000_000 + k * SYNC_EVERY_NS,
                0.0,
                offset,
                20_000,
                2_000_000
            ));
        }
        let t = 1_200_000_000;
        let err = c.host_ns(device_us_at(t, 0.0, offset)).unwrap() as i64 - t as i64;
        assert!(err.abs() <= 1_000, "error {err} ns");
        assert_eq!(c.stats().anchor_delay_ns, 40_000);
    }

    #[test]
    fn wire_time_moves_the_estimate_to_when_the_request_arrived() {
        // 11 request bytes and 15 reply bytes at 500 kbaud: 220 µs and 300 µs on the wire, no other delay.
        let wire = SyncTiming {
            request_ns: 220_000,
            reply_ns: 300_000,
        };
        let mut c = DeviceClock::default();
        let sent = 2_000_000_000u64;
        let device_us = 7_000 + (sent + 220_000) / 1000;
        assert!(c.add(device_us, sent, sent + 520_000, wire));
        assert_eq!(c.host_ns(device_us), Some(sent + 220_000));
    }

    #[test]
    fn drift_is_followed_between_exchanges() {
        // The device runs 100 ppm fast; 20 µs each way. After a few seconds of exchanges, a time 200 ms past
        // the last one maps within 2 µs (without the rate it would be 20 µs off).
        let mut c = DeviceClock::default();
        let (ppm, offset) = (100.0, 123_456);
        let mut t = 1_000_000_000;
        for _ in 0..(4 * WINDOW * 4) {
            assert!(exchange(&mut c, t, ppm, offset, 20_000, 20_000));
            t += SYNC_EVERY_NS;
        }
        let later = t + 200_000_000;
        let err = c.host_ns(device_us_at(later, ppm, offset)).unwrap() as i64 - later as i64;
        assert!(err.abs() <= 2_000, "error {err} ns");
        assert!((c.stats().drift_ppm - ppm).abs() < 1.0, "{:?}", c.stats());
    }

    #[test]
    fn a_clock_step_restarts_the_mapping() {
        let mut c = DeviceClock::default();
        let mut t = 1_000_000_000;
        for _ in 0..WINDOW {
            assert!(exchange(&mut c, t, 0.0, 1_000_000, 20_000, 20_000));
            t += SYNC_EVERY_NS;
        }
        // The device reset: its clock starts again near 0. The first exchange after it takes over at once.
        assert!(exchange(&mut c, t, 0.0, 0, 20_000, 20_000));
        let probe = t + 1_000_000;
        let err = c.host_ns(device_us_at(probe, 0.0, 0)).unwrap() as i64 - probe as i64;
        assert!(err.abs() <= 1_000, "error {err} ns");
        assert_eq!(c.stats().steps, 1);
    }
}
