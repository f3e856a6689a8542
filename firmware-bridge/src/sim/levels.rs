//! The simulated device's output waveforms as a lock-free history, so another thread (the synthetic camera
//! showing an LED wired to an output) can ask what level a channel had at a given device time without
//! touching the device.
//!
//! Each entry is a change the firmware model has committed to: "from `start_us` on, channel c follows this
//! program", or "from `start_us` on, every channel is low" (`AllOff`, the watchdog, a refused frame). Entries
//! are written when a command is *received* (its pin change lies an actuation delay ahead), so the history
//! already holds every change up to the present. Commands are carried out in the order received and take
//! effect in that order; a safety off cancels the commands still waiting and is written after them with an
//! earlier time. Either way the newest entry that concerns a channel and has started by `t` is the one in
//! force at `t` — which is all a reader needs.
//!
//! One writer (the firmware model, behind `&mut`), any number of readers; each slot is a small seqlock, so a
//! reader never blocks the writer and never sees a torn entry (it gives up instead, when the writer lapped
//! it). Allocation happens once, in [`LevelHistory::default`].

use std::sync::atomic::{AtomicU64, Ordering, fence};

use super::Program;

/// Entries kept: far more than the changes between two camera frames on a real protocol.
const CAPACITY: usize = 256;

const KIND_LEVEL: u64 = 0;
const KIND_TRAIN: u64 = 1;
const KIND_ALL_OFF: u64 = 2;

/// What a history entry changes from its start on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Change {
    /// One channel follows a new program.
    Channel { channel: u8, program: Program },
    /// Every channel goes low.
    AllOff,
}

/// One entry: `stamp` is its index + 1 once complete, 0 while being written.
#[derive(Debug, Default)]
struct Slot {
    stamp: AtomicU64,
    start_us: AtomicU64,
    what: AtomicU64,
    timing: AtomicU64,
}

/// A fixed ring of output changes with device-time starts; see the module documentation.
#[derive(Debug)]
pub(super) struct LevelHistory {
    slots: Box<[Slot]>,
    /// Entries written so far.
    written: AtomicU64,
}

impl Default for LevelHistory {
    fn default() -> Self {
        Self {
            slots: (0..CAPACITY).map(|_| Slot::default()).collect(),
            written: AtomicU64::new(0),
        }
    }
}

fn encode(change: Change) -> (u64, u64) {
    let narrow = |v: u64| u64::from(u32::try_from(v).unwrap_or(u32::MAX));
    match change {
        Change::AllOff => (KIND_ALL_OFF, 0),
        Change::Channel {
            channel,
            program: Program::Level(high),
        } => (
            KIND_LEVEL | u64::from(high) << 2 | u64::from(channel) << 8,
            0,
        ),
        Change::Channel {
            channel,
            program:
                Program::Train {
                    period_us,
                    width_us,
                    count,
                },
        } => (
            KIND_TRAIN | u64::from(channel) << 8 | narrow(count) << 32,
            narrow(period_us) | narrow(width_us) << 32,
        ),
    }
}

fn decode(what: u64, timing: u64) -> Change {
    let channel = (what >> 8) as u8;
    match what & 0b11 {
        KIND_LEVEL => Change::Channel {
            channel,
            program: Program::Level(what & 0b100 != 0),
        },
        KIND_TRAIN => Change::Channel {
            channel,
            program: Program::Train {
                period_us: timing & 0xFFFF_FFFF,
                width_us: timing >> 32,
                count: what >> 32,
            },
        },
        _ => Change::AllOff,
    }
}

impl LevelHistory {
    /// Appends a change starting at device time `start_us`. Only the firmware model calls it (one writer).
    pub(super) fn record(&self, start_us: u64, change: Change) {
        let index = self.written.load(Ordering::Relaxed);
        let Some(slot) = self.slots.get(index as usize % CAPACITY) else {
            return;
        };
        let (what, timing) = encode(change);
        slot.stamp.store(0, Ordering::Relaxed);
        fence(Ordering::Release);
        slot.start_us.store(start_us, Ordering::Relaxed);
        slot.what.store(what, Ordering::Relaxed);
        slot.timing.store(timing, Ordering::Relaxed);
        slot.stamp.store(index + 1, Ordering::Release);
        self.written.store(index + 1, Ordering::Release);
    }

    /// The level of `channel` at device time `t_us` as far as the history reaches: `None` when the entry
    /// that decides it was already overwritten (more than [`CAPACITY`] changes since).
    pub(super) fn level_at(&self, channel: u8, t_us: u64) -> Option<bool> {
        let written = self.written.load(Ordering::Acquire);
        for index in (written.saturating_sub(CAPACITY as u64)..written).rev() {
            let slot = self.slots.get(index as usize % CAPACITY)?;
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp != index + 1 {
                return None; // the writer lapped us
            }
            let start_us = slot.start_us.load(Ordering::Relaxed);
            let what = slot.what.load(Ordering::Relaxed);
            let timing = slot.timing.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if slot.stamp.load(Ordering::Relaxed) != stamp {
                return None;
            }
            if start_us > t_us {
                continue;
            }
            match decode(what, timing) {
                Change::AllOff => return Some(false),
                Change::Channel {
                    channel: c,
                    program,
                } if c == channel => {
                    return Some(program.level_after(t_us - start_us));
                }
                Change::Channel { .. } => {}
            }
        }
        // Nothing concerns the channel: the device powers up with every output low.
        (written <= CAPACITY as u64).then_some(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_through_their_encoding() {
        for change in [
            Change::AllOff,
            Change::Channel {
                channel: 31,
                program: Program::Level(true),
            },
            Change::Channel {
                channel: 2,
                program: Program::Level(false),
            },
            Change::Channel {
                channel: 7,
                program: Program::Train {
                    period_us: 50_000,
                    width_us: 10_000,
                    count: 20,
                },
            },
        ] {
            let (what, timing) = encode(change);
            assert_eq!(decode(what, timing), change);
        }
    }

    #[test]
    fn the_newest_started_entry_decides_and_a_safety_off_cancels_later_ones() {
        let h = LevelHistory::default();
        assert_eq!(h.level_at(1, 1_000), Some(false), "powers up low");
        let high = |channel| Change::Channel {
            channel,
            program: Program::Level(true),
        };
        h.record(100, high(1));
        h.record(150, high(2));
        h.record(
            200,
            Change::Channel {
                channel: 1,
                program: Program::Train {
                    period_us: 100,
                    width_us: 10,
                    count: 2,
                },
            },
        );
        assert_eq!(h.level_at(1, 99), Some(false));
        assert_eq!(h.level_at(1, 100), Some(true));
        assert_eq!(h.level_at(1, 199), Some(true));
        assert_eq!(h.level_at(1, 205), Some(true));
        assert_eq!(h.level_at(1, 215), Some(false));
        assert_eq!(h.level_at(1, 300), Some(true));
        assert_eq!(h.level_at(1, 500), Some(false));
        assert_eq!(h.level_at(2, 160), Some(true));
        // Received at 120 for 180, then the watchdog fired at 130: the command never happened.
        h.record(180, high(3));
        h.record(130, Change::AllOff);
        assert_eq!(h.level_at(3, 200), Some(false));
        assert_eq!(
            h.level_at(2, 160),
            Some(false),
            "still waiting at 130: cancelled too"
        );
        assert_eq!(h.level_at(1, 129), Some(true));
        assert_eq!(h.level_at(1, 130), Some(false));
    }

    #[test]
    fn an_overwritten_history_says_it_does_not_know() {
        let h = LevelHistory::default();
        h.record(10, Change::AllOff);
        for i in 0..CAPACITY as u64 {
            h.record(
                100 + i,
                Change::Channel {
                    channel: 0,
                    program: Program::Level(i % 2 == 0),
                },
            );
        }
        assert_eq!(h.level_at(0, 100 + CAPACITY as u64), Some(false));
        assert_eq!(
            h.level_at(1, 100),
            None,
            "the entry before the ring is gone"
        );
    }
}
