//! The simulated output device: a host-side driver ([`SimulatedDevice`]) and a firmware model
//! ([`SimFirmware`]) joined by byte buffers instead of a serial port, so every command crosses
//! the real wire format (`reflex-protocol` frames) in both directions.
//!
//! The simulator has no thread: device time is computed from the host clock on each call, and
//! everything due by then (pin changes after the actuation delay, pulse ends, the watchdog) is
//! evaluated lazily at that moment, with exact device timestamps.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use reflex_protocol::device_to_host::{self, ErrorCode, Reply};
use reflex_protocol::host_to_device::{self, Command};
use reflex_protocol::{FrameDecoder, FrameError, MAX_FRAME_LEN, PROTOCOL_VERSION};

use crate::{DeviceError, DeviceEvent, DeviceInfo, Output, OutputCommand, OutputError};

mod levels;
use levels::{Change, LevelHistory};

/// Most channels the simulator models (the `Status` levels field is a 32-bit mask).
const MAX_CHANNELS: usize = 32;
/// Output commands waiting for their actuation delay; when full, the oldest takes effect early.
const PENDING_CAPACITY: usize = 32;
/// Bytes of device-to-host frames buffered until the host polls (≥ 300 frames); frames that do
/// not fit are dropped and counted, as a UART with a full buffer would.
const REPLY_BUFFER_LEN: usize = 16 * 1024;
/// Device id the simulator reports ("SIM1" in ASCII).
const SIM_DEVICE_ID: u32 = 0x5349_4D31;
/// Firmware version the simulator reports.
const SIM_FIRMWARE_VERSION: u16 = 1;

/// Settings of the simulated device; the daemon maps its own config onto this.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SimConfig {
    /// Number of output channels (at most 32; more are clamped to 32).
    pub channels: u8,
    /// Device clock offset in µs: device time = host ns / 1000 × (1 + drift) + offset.
    pub device_offset_us: i64,
    /// Device clock drift relative to the host clock in parts per million.
    pub drift_ppm: f64,
    /// Time in µs from receiving an output command to the pin change.
    pub actuation_delay_us: u32,
    /// Outputs go off after this many ms of device time without a valid frame; 0 disables.
    pub watchdog_ms: u32,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            channels: 4,
            device_offset_us: 1_000_000,
            drift_ppm: 0.0,
            actuation_delay_us: 20,
            watchdog_ms: 50,
        }
    }
}

/// Counters shared between the firmware model and its probes.
#[derive(Debug, Default)]
struct ProbeState {
    levels: AtomicU32,
    commands: AtomicU64,
    transitions: AtomicU64,
    watchdog_expiries: AtomicU64,
    frame_errors: AtomicU64,
    dropped_replies: AtomicU64,
    /// Every output change the firmware committed to, with its device time.
    history: LevelHistory,
    /// Device calls between reading the clock and publishing what they received (0 or 1).
    updating: AtomicU32,
    /// The device clock's settings, to map host time to device time ([`device_time_us`]).
    device_offset_us: i64,
    drift_ppm: f64,
}

/// Device time in µs at host time `host_ns`: host µs, plus drift, plus the offset.
fn device_time_us(host_ns: u64, drift_ppm: f64, offset_us: i64) -> u64 {
    let host_us = host_ns / 1000;
    // Float only for the small drift term, so large clock values keep µs precision.
    let drift_us = (host_us as f64 * drift_ppm * 1e-6) as i64;
    let device_us = i128::from(host_us) + i128::from(drift_us) + i128::from(offset_us);
    u64::try_from(device_us.max(0)).unwrap_or(u64::MAX)
}

/// How long [`SimProbe::level_at_host_ns`] waits, at most, for a device call that read its clock but has not
/// published yet (spin iterations: tens of µs).
const UPDATE_SPINS: u32 = 1 << 16;

/// Read-only view of the simulated device's outputs, usable from any thread (atomics only).
/// Values are as of the device's latest call (`send`, `poll`, …), since the simulator has no
/// thread of its own.
#[derive(Debug, Clone)]
pub struct SimProbe(Arc<ProbeState>);

impl SimProbe {
    /// Current output levels, bit n = channel n high.
    pub fn levels(&self) -> u32 {
        self.0.levels.load(Ordering::Acquire)
    }

    /// Whether `channel` is high (`false` for channels the device does not have).
    pub fn level(&self, channel: u8) -> bool {
        1u32.checked_shl(u32::from(channel))
            .is_some_and(|bit| self.levels() & bit != 0)
    }

    /// Whether `channel` was (or will be) high at host time `host_ns`, from the device's record of its own
    /// waveforms: exact to the device's µs for any time up to now plus the actuation delay, since a command
    /// is recorded when it is received. Lock-free and allocation-free, for loop threads (the synthetic
    /// camera's LED). Call it once the host clock has passed `host_ns`: a device call that read its clock
    /// before then but has not yet published is waited for, briefly (bounded spin). Two gaps: a watchdog
    /// expiry is recorded only at the device's next call (lazy, like the rest of the simulator), and after
    /// more than 256 changes on other channels the answer falls back to the current level.
    pub fn level_at_host_ns(&self, channel: u8, host_ns: u64) -> bool {
        let state = &*self.0;
        for _ in 0..UPDATE_SPINS {
            if state.updating.load(Ordering::SeqCst) == 0 {
                break;
            }
            std::hint::spin_loop();
        }
        let t_us = device_time_us(host_ns, state.drift_ppm, state.device_offset_us);
        state
            .history
            .level_at(channel, t_us)
            .unwrap_or_else(|| self.level(channel))
    }

    /// Output commands carried out so far (each acknowledged `SetLevel`, `Pulse`, `PulseTrain`,
    /// `AllOff`).
    pub fn commands_executed(&self) -> u64 {
        self.0.commands.load(Ordering::Acquire)
    }

    /// Level changes on all channels so far (a pulse counts two).
    pub fn transitions(&self) -> u64 {
        self.0.transitions.load(Ordering::Acquire)
    }

    /// Times the watchdog turned the outputs off.
    pub fn watchdog_expiries(&self) -> u64 {
        self.0.watchdog_expiries.load(Ordering::Acquire)
    }

    /// Frames from the host the device refused as malformed (bad CRC, COBS, length, type).
    pub fn frame_errors(&self) -> u64 {
        self.0.frame_errors.load(Ordering::Acquire)
    }

    /// Reply frames dropped because the host did not poll and the reply buffer was full.
    pub fn dropped_replies(&self) -> u64 {
        self.0.dropped_replies.load(Ordering::Acquire)
    }
}

/// What a channel does from `start_us` on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Program {
    /// Hold a level.
    Level(bool),
    /// `count` pulses of `width_us`, rising every `period_us` (`width_us < period_us` or
    /// `count == 1`); low afterwards.
    Train {
        period_us: u64,
        width_us: u64,
        count: u64,
    },
}

/// One output pin as a waveform: `before` until `start_us`, then `program`.
#[derive(Debug, Clone, Copy)]
struct Channel {
    before: bool,
    start_us: u64,
    program: Program,
    /// Level changes of earlier programs (all before `start_us`).
    edges_before: u64,
}

impl Program {
    /// The level `dt_us` after the program started.
    fn level_after(&self, dt_us: u64) -> bool {
        match *self {
            Program::Level(high) => high,
            Program::Train {
                period_us,
                width_us,
                count,
            } => dt_us / period_us.max(1) < count && dt_us % period_us.max(1) < width_us,
        }
    }
}

impl Channel {
    const OFF: Self = Self {
        before: false,
        start_us: 0,
        program: Program::Level(false),
        edges_before: 0,
    };

    fn level_at(&self, t_us: u64) -> bool {
        match t_us.checked_sub(self.start_us) {
            Some(dt) => self.program.level_after(dt),
            None => self.before,
        }
    }

    /// Level changes up to and including `t_us`.
    fn edges_until(&self, t_us: u64) -> u64 {
        let Some(dt) = t_us.checked_sub(self.start_us) else {
            return self.edges_before;
        };
        let own = match self.program {
            Program::Level(high) => u64::from(high != self.before),
            Program::Train {
                period_us,
                width_us,
                count,
            } => {
                let period = period_us.max(1);
                let rises = (dt / period + 1).min(count);
                let falls = dt
                    .checked_sub(width_us)
                    .map_or(0, |d| (d / period + 1).min(count));
                // Already high at the start: the first rise is no change.
                rises.saturating_sub(u64::from(self.before)) + falls
            }
        };
        self.edges_before + own
    }

    /// Starts `program` at `at_us`, keeping the waveform before it.
    fn replace(&mut self, at_us: u64, program: Program) {
        let (before, edges_before) = match at_us.checked_sub(1) {
            Some(prev) => (self.level_at(prev), self.edges_until(prev)),
            None => (self.before, self.edges_before),
        };
        *self = Self {
            before,
            start_us: at_us,
            program,
            edges_before,
        };
    }
}

/// What a queued output command does when its actuation delay has passed.
#[derive(Debug, Clone, Copy)]
enum Action {
    Set { channel: u8, program: Program },
    AllOff,
}

/// An output command received and waiting for its pin-change time.
#[derive(Debug, Clone, Copy)]
struct Pending {
    effect_us: u64,
    seq: u16,
    tag: u32,
    action: Action,
}

/// Pending commands, oldest first (effect times are non-decreasing).
type PendingQueue = crate::fifo::Fifo<Pending, PENDING_CAPACITY>;

/// Model of the reflex firmware: decodes host frames with the same [`FrameDecoder`] a
/// microcontroller would, drives its channels, and writes reply frames into a fixed buffer.
#[derive(Debug)]
pub(crate) struct SimFirmware {
    channel_count: u8,
    actuation_delay_us: u64,
    watchdog_us: u64,
    decoder: FrameDecoder,
    channels: [Channel; MAX_CHANNELS],
    pending: PendingQueue,
    /// A `Hello` with our protocol version has been received.
    handshaken: bool,
    /// Device time of the last valid frame, when the watchdog is armed.
    watchdog_fed_us: Option<u64>,
    now_us: u64,
    device_seq: u16,
    replies: Box<[u8]>,
    replies_len: usize,
    probe: Arc<ProbeState>,
}

/// A host frame as the firmware sees it after framing and decoding.
type Received = Result<host_to_device::Message, ErrorCode>;

impl SimFirmware {
    /// A powered-up device with every output low; allocates its reply buffer here, once.
    pub(crate) fn new(config: &SimConfig) -> Self {
        Self {
            channel_count: config.channels.min(MAX_CHANNELS as u8),
            actuation_delay_us: u64::from(config.actuation_delay_us),
            watchdog_us: u64::from(config.watchdog_ms) * 1000,
            decoder: FrameDecoder::new(),
            channels: [Channel::OFF; MAX_CHANNELS],
            pending: PendingQueue::new(),
            handshaken: false,
            watchdog_fed_us: None,
            now_us: 0,
            device_seq: 0,
            replies: vec![0; REPLY_BUFFER_LEN].into_boxed_slice(),
            replies_len: 0,
            probe: Arc::new(ProbeState {
                device_offset_us: config.device_offset_us,
                drift_ppm: if config.drift_ppm.is_finite() {
                    config.drift_ppm
                } else {
                    0.0
                },
                ..ProbeState::default()
            }),
        }
    }

    /// Bytes arriving on the device's serial line at device time `now_us`.
    pub(crate) fn receive(&mut self, bytes: &[u8], now_us: u64) {
        self.advance(now_us);
        for &byte in bytes {
            let received: Option<Received> = self.decoder.push(byte).map(|frame| match frame {
                Ok(payload) => host_to_device::Message::decode(payload).map_err(|e| match e {
                    reflex_protocol::DecodeError::UnknownType { .. } => ErrorCode::UnknownCommand,
                    _ => ErrorCode::BadFrame,
                }),
                Err(FrameError::BadCrc { .. }) => Err(ErrorCode::BadCrc),
                Err(_) => Err(ErrorCode::BadFrame),
            });
            match received {
                Some(Ok(message)) => self.handle(message),
                Some(Err(code)) => self.refuse_frame(code),
                None => {}
            }
        }
        self.publish();
    }

    /// Carries out everything due by device time `now_us` (pin changes, the watchdog).
    pub(crate) fn advance(&mut self, now_us: u64) {
        let now = now_us.max(self.now_us);
        loop {
            let next_command = self
                .pending
                .front()
                .map(|p| p.effect_us)
                .filter(|&t| t <= now);
            let deadline = self.watchdog_deadline().filter(|&t| t <= now);
            match (next_command, deadline) {
                (Some(command), Some(deadline)) if deadline < command => {
                    self.expire_watchdog(deadline);
                }
                (Some(_), _) => {
                    if let Some(pending) = self.pending.pop_front() {
                        self.apply(pending);
                    }
                }
                (None, Some(deadline)) => self.expire_watchdog(deadline),
                (None, None) => break,
            }
        }
        self.now_us = now;
        self.publish();
    }

    /// Reply bytes not yet read by the host.
    pub(crate) fn replies(&self) -> &[u8] {
        self.replies.get(..self.replies_len).unwrap_or_default()
    }

    /// Marks every reply byte as read.
    pub(crate) fn clear_replies(&mut self) {
        self.replies_len = 0;
    }

    pub(crate) fn probe(&self) -> SimProbe {
        SimProbe(Arc::clone(&self.probe))
    }

    fn handle(&mut self, message: host_to_device::Message) {
        let now = self.now_us;
        let host_to_device::Message { seq, tag, command } = message;
        if let Command::Hello { protocol_version } = command {
            self.handshaken = protocol_version == PROTOCOL_VERSION;
            self.watchdog_fed_us = self.handshaken.then_some(now);
            if !self.handshaken {
                // A host we cannot understand must not inherit outputs left on by another.
                self.outputs_off(now);
            }
            self.reply(
                seq,
                Reply::Hello {
                    protocol_version: PROTOCOL_VERSION,
                    device_id: SIM_DEVICE_ID,
                    firmware_version: SIM_FIRMWARE_VERSION,
                    channels: self.channel_count,
                },
            );
            return;
        }
        if !self.handshaken {
            self.reply(
                seq,
                Reply::Error {
                    code: ErrorCode::VersionMismatch,
                },
            );
            return;
        }
        self.watchdog_fed_us = Some(now);
        let action = match command {
            Command::Hello { .. } | Command::Heartbeat => return,
            Command::QueryStatus => {
                let levels = self.levels_at(now);
                self.reply(
                    seq,
                    Reply::Status {
                        levels,
                        device_time_us: now,
                    },
                );
                return;
            }
            Command::SyncRequest => {
                self.reply(
                    seq,
                    Reply::SyncReply {
                        device_time_us: now,
                    },
                );
                return;
            }
            Command::AllOff => Some(Action::AllOff),
            Command::SetLevel { channel, high } => self.checked(channel, Ok(Program::Level(high))),
            Command::Pulse { channel, width_us } => self.checked(
                channel,
                crate::check_pulse(width_us, width_us, 1).map(|()| Program::Train {
                    period_us: u64::from(width_us),
                    width_us: u64::from(width_us),
                    count: 1,
                }),
            ),
            Command::PulseTrain {
                channel,
                period_us,
                width_us,
                count,
            } => self.checked(
                channel,
                crate::check_pulse(period_us, width_us, count).map(|()| Program::Train {
                    period_us: u64::from(period_us.max(width_us)),
                    width_us: u64::from(width_us),
                    count: u64::from(count),
                }),
            ),
        };
        let Some(action) = action else {
            self.reply(
                seq,
                Reply::Error {
                    code: ErrorCode::BadArgument,
                },
            );
            return;
        };
        if self.pending.is_full()
            && let Some(oldest) = self.pending.pop_front()
        {
            self.apply(oldest);
        }
        let effect_us = now.saturating_add(self.actuation_delay_us);
        self.probe.history.record(
            effect_us,
            match action {
                Action::Set { channel, program } => Change::Channel { channel, program },
                Action::AllOff => Change::AllOff,
            },
        );
        self.pending.push_back(Pending {
            effect_us,
            seq,
            tag,
            action,
        });
    }

    /// The action for `program` on `channel`, or `None` when either is refused.
    fn checked(&self, channel: u8, program: Result<Program, &'static str>) -> Option<Action> {
        let program = program.ok()?;
        (channel < self.channel_count).then_some(Action::Set { channel, program })
    }

    /// A frame that could not be decoded: it may have been an output command the host relies
    /// on, so turn everything off rather than guess.
    fn refuse_frame(&mut self, code: ErrorCode) {
        self.probe.frame_errors.fetch_add(1, Ordering::AcqRel);
        self.outputs_off(self.now_us);
        let seq = self.next_device_seq();
        self.reply(seq, Reply::Error { code });
    }

    fn apply(&mut self, pending: Pending) {
        let at = pending.effect_us;
        match pending.action {
            Action::Set { channel, program } => {
                if let Some(ch) = self.channels.get_mut(usize::from(channel)) {
                    ch.replace(at, program);
                }
            }
            Action::AllOff => self.all_channels_off(at),
        }
        self.probe.commands.fetch_add(1, Ordering::AcqRel);
        self.reply(
            pending.seq,
            Reply::Ack {
                tag: pending.tag,
                device_time_us: at,
            },
        );
    }

    fn watchdog_deadline(&self) -> Option<u64> {
        if self.watchdog_us == 0 {
            return None;
        }
        self.watchdog_fed_us
            .map(|fed| fed.saturating_add(self.watchdog_us))
    }

    fn expire_watchdog(&mut self, at_us: u64) {
        self.watchdog_fed_us = None;
        self.outputs_off(at_us);
        self.probe.watchdog_expiries.fetch_add(1, Ordering::AcqRel);
        let seq = self.next_device_seq();
        self.reply(
            seq,
            Reply::Error {
                code: ErrorCode::WatchdogExpired,
            },
        );
    }

    /// Safety off at `at_us`: cancels pending commands and drives every channel low.
    fn outputs_off(&mut self, at_us: u64) {
        self.pending.clear();
        self.probe.history.record(at_us, Change::AllOff);
        self.all_channels_off(at_us);
    }

    fn all_channels_off(&mut self, at_us: u64) {
        for ch in self.active_channels_mut() {
            ch.replace(at_us, Program::Level(false));
        }
    }

    fn active_channels_mut(&mut self) -> &mut [Channel] {
        let n = usize::from(self.channel_count);
        self.channels.get_mut(..n).unwrap_or_default()
    }

    fn active_channels(&self) -> &[Channel] {
        let n = usize::from(self.channel_count);
        self.channels.get(..n).unwrap_or_default()
    }

    fn levels_at(&self, t_us: u64) -> u32 {
        self.active_channels()
            .iter()
            .enumerate()
            .filter(|(_, ch)| ch.level_at(t_us))
            .fold(0, |mask, (i, _)| {
                mask | 1u32.checked_shl(i as u32).unwrap_or(0)
            })
    }

    fn publish(&self) {
        let now = self.now_us;
        let transitions = self
            .active_channels()
            .iter()
            .map(|ch| ch.edges_until(now))
            .sum();
        self.probe
            .levels
            .store(self.levels_at(now), Ordering::Release);
        self.probe.transitions.store(transitions, Ordering::Release);
    }

    fn next_device_seq(&mut self) -> u16 {
        let seq = self.device_seq;
        self.device_seq = seq.wrapping_add(1);
        seq
    }

    fn reply(&mut self, seq: u16, reply: Reply) {
        let mut frame = [0u8; MAX_FRAME_LEN];
        let written = device_to_host::Message { seq, reply }
            .encode_frame(&mut frame)
            .ok()
            .and_then(|n| frame.get(..n));
        let end = self.replies_len + written.map_or(0, <[u8]>::len);
        match (written, self.replies.get_mut(self.replies_len..end)) {
            (Some(bytes), Some(dst)) => {
                dst.copy_from_slice(bytes);
                self.replies_len = end;
            }
            _ => {
                self.probe.dropped_replies.fetch_add(1, Ordering::AcqRel);
            }
        }
    }
}

/// The in-process simulated output device: the embedded default when there is no hardware.
/// It talks to a firmware model (`SimFirmware`) through real protocol frames, so it exercises
/// the same bytes a serial device would.
pub struct SimulatedDevice {
    info: DeviceInfo,
    host_clock_ns: Arc<dyn Fn() -> u64 + Send + Sync>,
    device_offset_us: i64,
    drift_ppm: f64,
    firmware: SimFirmware,
    decoder: FrameDecoder,
    tx: [u8; MAX_FRAME_LEN],
    next_seq: u16,
}

impl std::fmt::Debug for SimulatedDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimulatedDevice")
            .field("info", &self.info)
            .field("firmware", &self.firmware)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl SimulatedDevice {
    /// Creates the device and its firmware model, allocating every buffer, and performs the
    /// `Hello` handshake through frames; `host_clock_ns` is the host's monotonic clock in ns.
    pub fn new(config: SimConfig, host_clock_ns: Arc<dyn Fn() -> u64 + Send + Sync>) -> Self {
        let firmware = SimFirmware::new(&config);
        let channels = firmware.channel_count;
        let mut device = Self {
            info: DeviceInfo {
                name: "simulated".to_owned(),
                device_id: 0,
                firmware_version: 0,
                protocol_version: 0,
                channels,
            },
            host_clock_ns,
            device_offset_us: config.device_offset_us,
            drift_ppm: if config.drift_ppm.is_finite() {
                config.drift_ppm
            } else {
                0.0
            },
            firmware,
            decoder: FrameDecoder::new(),
            tx: [0; MAX_FRAME_LEN],
            next_seq: 0,
        };
        // The in-process exchange cannot fail; should it ever, `info` keeps protocol version 0
        // and the device answers every command with `VersionMismatch`, visible through `poll`.
        if let Ok((device_id, firmware_version, protocol_version, channels)) = device.handshake() {
            device.info.device_id = device_id;
            device.info.firmware_version = firmware_version;
            device.info.protocol_version = protocol_version;
            device.info.channels = channels;
        }
        device
    }

    /// A probe on the device's outputs that stays valid after the device moves to another thread.
    pub fn probe(&self) -> SimProbe {
        self.firmware.probe()
    }

    /// Feeds raw bytes to the simulated firmware as if they arrived on its serial line, for
    /// fault-injection tests (corrupt frames, garbage, commands the host would refuse to send).
    pub fn inject_bytes(&mut self, bytes: &[u8]) {
        self.begin_update();
        let now = self.device_now_us();
        self.firmware.receive(bytes, now);
        self.end_update();
    }

    /// Current device time in µs: host ns / 1000, plus drift, plus the configured offset.
    pub fn device_now_us(&self) -> u64 {
        device_time_us(
            (self.host_clock_ns)(),
            self.drift_ppm,
            self.device_offset_us,
        )
    }

    /// Tells probes that a call is about to read the clock and change the device
    /// ([`SimProbe::level_at_host_ns`] waits for [`Self::end_update`]).
    fn begin_update(&self) {
        self.firmware.probe.updating.fetch_add(1, Ordering::SeqCst);
    }

    /// What the call received is published.
    fn end_update(&self) {
        self.firmware.probe.updating.fetch_sub(1, Ordering::Release);
    }

    fn handshake(&mut self) -> Result<(u32, u16, u16, u8), OutputError> {
        let seq = self.transmit(
            Command::Hello {
                protocol_version: PROTOCOL_VERSION,
            },
            0,
        )?;
        let mut result = None;
        let mut first_error = None;
        for &byte in self.firmware.replies() {
            match self.decoder.push(byte) {
                Some(Ok(payload)) => match device_to_host::Message::decode(payload) {
                    Ok(device_to_host::Message {
                        seq: reply_seq,
                        reply:
                            Reply::Hello {
                                protocol_version,
                                device_id,
                                firmware_version,
                                channels,
                            },
                    }) if reply_seq == seq => {
                        result = Some((device_id, firmware_version, protocol_version, channels));
                    }
                    Ok(_) => {}
                    Err(e) => first_error = first_error.or(Some(OutputError::from(e))),
                },
                Some(Err(e)) => first_error = first_error.or(Some(OutputError::from(e))),
                None => {}
            }
        }
        self.firmware.clear_replies();
        let info = match (result, first_error) {
            (Some(info), _) => info,
            (None, Some(e)) => return Err(e),
            (None, None) => {
                return Err(OutputError::Device {
                    seq,
                    error: DeviceError::BadFrame,
                });
            }
        };
        if info.2 != PROTOCOL_VERSION {
            return Err(OutputError::VersionMismatch {
                host: PROTOCOL_VERSION,
                device: info.2,
            });
        }
        Ok(info)
    }

    /// Frames `command` with the next sequence number, hands the bytes to the firmware, and
    /// returns the sequence number.
    fn transmit(&mut self, command: Command, tag: u32) -> Result<u16, OutputError> {
        let seq = self.next_seq;
        let message = host_to_device::Message { seq, tag, command };
        let len = message.encode_frame(&mut self.tx)?;
        self.begin_update();
        let now = self.device_now_us();
        let frame = self.tx.get(..len).unwrap_or_default();
        self.firmware.receive(frame, now);
        self.end_update();
        self.next_seq = seq.wrapping_add(1);
        Ok(seq)
    }
}

impl Output for SimulatedDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn send(&mut self, command: OutputCommand, tag: u32) -> Result<u16, OutputError> {
        let command = crate::to_protocol(command, self.info.channels)?;
        self.transmit(command, tag)
    }

    fn heartbeat(&mut self) -> Result<(), OutputError> {
        self.transmit(Command::Heartbeat, 0).map(drop)
    }

    fn request_sync(&mut self) -> Result<u16, OutputError> {
        self.transmit(Command::SyncRequest, 0)
    }

    fn poll(&mut self, sink: &mut dyn FnMut(DeviceEvent)) -> Result<(), OutputError> {
        self.begin_update();
        let now = self.device_now_us();
        self.firmware.advance(now);
        self.end_update();
        let mut first_error: Option<OutputError> = None;
        for &byte in self.firmware.replies() {
            let message = match self.decoder.push(byte) {
                None => continue,
                Some(Err(e)) => Err(OutputError::from(e)),
                Some(Ok(payload)) => {
                    device_to_host::Message::decode(payload).map_err(OutputError::from)
                }
            };
            let event = match message {
                Err(e) => {
                    first_error = first_error.or(Some(e));
                    continue;
                }
                Ok(message) => match crate::to_event(message) {
                    Some(event) => event,
                    // Late handshake replies and status answers are not events of this API.
                    None => continue,
                },
            };
            sink(event);
        }
        self.firmware.clear_replies();
        first_error.map_or(Ok(()), Err)
    }

    fn all_off(&mut self) -> Result<(), OutputError> {
        self.transmit(Command::AllOff, 0).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    const OFFSET_US: u64 = 1_000_000;

    fn device(config: SimConfig) -> (SimulatedDevice, Arc<AtomicU64>) {
        let clock = Arc::new(AtomicU64::new(0));
        let reader = Arc::clone(&clock);
        let device = SimulatedDevice::new(config, Arc::new(move || reader.load(Ordering::SeqCst)));
        (device, clock)
    }

    fn advance_us(clock: &AtomicU64, us: u64) {
        clock.fetch_add(us * 1000, Ordering::SeqCst);
    }

    fn events(device: &mut SimulatedDevice) -> Vec<DeviceEvent> {
        let mut out = Vec::new();
        device.poll(&mut |e| out.push(e)).unwrap();
        out
    }

    fn frame(seq: u16, tag: u32, command: Command) -> Vec<u8> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = host_to_device::Message { seq, tag, command }
            .encode_frame(&mut buf)
            .unwrap();
        buf[..n].to_vec()
    }

    #[test]
    fn handshake_fills_info() {
        let (dev, _) = device(SimConfig::default());
        let info = dev.info();
        assert_eq!(info.name, "simulated");
        assert_eq!(info.protocol_version, PROTOCOL_VERSION);
        assert_eq!(info.device_id, SIM_DEVICE_ID);
        assert_eq!(info.firmware_version, SIM_FIRMWARE_VERSION);
        assert_eq!(info.channels, 4);
    }

    #[test]
    fn set_level_takes_effect_after_the_actuation_delay_and_is_acked() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        advance_us(&clock, 500);
        let seq = dev
            .send(
                OutputCommand::SetLevel {
                    channel: 2,
                    high: true,
                },
                77,
            )
            .unwrap();
        advance_us(&clock, 19);
        assert!(events(&mut dev).is_empty(), "no ack before the pin changed");
        assert_eq!(probe.levels(), 0);
        advance_us(&clock, 1);
        assert_eq!(
            events(&mut dev),
            vec![DeviceEvent::Ack {
                seq,
                tag: 77,
                device_time_us: OFFSET_US + 520,
            }]
        );
        assert_eq!(probe.levels(), 0b100);
        assert!(probe.level(2));
        assert_eq!(probe.commands_executed(), 1);
        assert_eq!(probe.transitions(), 1);
    }

    #[test]
    fn pulse_goes_high_then_low() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        let seq = dev
            .send(
                OutputCommand::Pulse {
                    channel: 0,
                    width_us: 1000,
                },
                5,
            )
            .unwrap();
        advance_us(&clock, 20);
        assert_eq!(
            events(&mut dev),
            vec![DeviceEvent::Ack {
                seq,
                tag: 5,
                device_time_us: OFFSET_US + 20
            }]
        );
        assert_eq!(probe.levels(), 1);
        advance_us(&clock, 999);
        dev.heartbeat().unwrap();
        assert_eq!(probe.levels(), 1);
        advance_us(&clock, 1);
        dev.heartbeat().unwrap();
        assert_eq!(probe.levels(), 0);
        assert_eq!(probe.transitions(), 2);
    }

    #[test]
    fn pulse_train_makes_count_pulses() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        dev.send(
            OutputCommand::PulseTrain {
                channel: 3,
                period_us: 10_000,
                width_us: 2_000,
                count: 3,
            },
            9,
        )
        .unwrap();
        advance_us(&clock, 20 + 10_000 + 500); // inside the second pulse
        dev.heartbeat().unwrap();
        assert!(probe.level(3));
        assert_eq!(probe.transitions(), 3);
        advance_us(&clock, 2_000); // between second and third
        dev.heartbeat().unwrap();
        assert!(!probe.level(3));
        advance_us(&clock, 30_000);
        dev.heartbeat().unwrap();
        assert!(!probe.level(3));
        assert_eq!(probe.transitions(), 6);
        assert_eq!(probe.commands_executed(), 1);
    }

    #[test]
    fn all_off_turns_every_channel_low() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        for channel in 0..4 {
            dev.send(
                OutputCommand::SetLevel {
                    channel,
                    high: true,
                },
                1,
            )
            .unwrap();
        }
        advance_us(&clock, 20);
        events(&mut dev);
        assert_eq!(probe.levels(), 0b1111);
        let seq = dev.send(OutputCommand::AllOff, 2).unwrap();
        advance_us(&clock, 20);
        assert_eq!(
            events(&mut dev),
            vec![DeviceEvent::Ack {
                seq,
                tag: 2,
                device_time_us: OFFSET_US + 40
            }]
        );
        assert_eq!(probe.levels(), 0);
        assert_eq!(probe.commands_executed(), 5);
        assert_eq!(probe.transitions(), 8);
        dev.send(
            OutputCommand::SetLevel {
                channel: 1,
                high: true,
            },
            3,
        )
        .unwrap();
        dev.all_off().unwrap();
        advance_us(&clock, 20);
        dev.poll(&mut |_| {}).unwrap();
        assert_eq!(probe.levels(), 0);
    }

    #[test]
    fn watchdog_turns_outputs_off_after_silence_and_not_before() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        dev.send(
            OutputCommand::SetLevel {
                channel: 1,
                high: true,
            },
            1,
        )
        .unwrap();
        advance_us(&clock, 49_999);
        let before = events(&mut dev);
        assert!(
            matches!(before.as_slice(), [DeviceEvent::Ack { .. }]),
            "{before:?}"
        );
        assert_eq!(probe.levels(), 0b10);
        advance_us(&clock, 1);
        assert_eq!(
            events(&mut dev),
            vec![DeviceEvent::Error {
                seq: 0,
                error: DeviceError::WatchdogExpired
            }]
        );
        assert_eq!(probe.levels(), 0);
        assert_eq!(probe.watchdog_expiries(), 1);
        // Silence goes on: it fires once, and rearms on the next valid frame.
        advance_us(&clock, 200_000);
        assert!(events(&mut dev).is_empty());
        dev.send(
            OutputCommand::SetLevel {
                channel: 1,
                high: true,
            },
            2,
        )
        .unwrap();
        advance_us(&clock, 40_000);
        dev.heartbeat().unwrap();
        advance_us(&clock, 40_000);
        dev.poll(&mut |_| {}).unwrap();
        assert_eq!(probe.levels(), 0b10, "heartbeats keep it fed");
        advance_us(&clock, 10_000);
        dev.poll(&mut |_| {}).unwrap();
        assert_eq!(probe.levels(), 0);
        assert_eq!(probe.watchdog_expiries(), 2);
    }

    #[test]
    fn watchdog_zero_is_off() {
        let (mut dev, clock) = device(SimConfig {
            watchdog_ms: 0,
            ..SimConfig::default()
        });
        let probe = dev.probe();
        dev.send(
            OutputCommand::SetLevel {
                channel: 0,
                high: true,
            },
            1,
        )
        .unwrap();
        advance_us(&clock, 10_000_000);
        dev.poll(&mut |_| {}).unwrap();
        assert_eq!(probe.levels(), 1);
    }

    #[test]
    fn corrupt_bytes_turn_outputs_off_then_the_link_recovers() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        dev.send(
            OutputCommand::SetLevel {
                channel: 0,
                high: true,
            },
            1,
        )
        .unwrap();
        advance_us(&clock, 20);
        events(&mut dev);
        assert_eq!(probe.levels(), 1);
        let mut bad = frame(
            50,
            0,
            Command::SetLevel {
                channel: 1,
                high: true,
            },
        );
        bad[2] ^= 0x01; // a data byte (seq), so only the CRC can tell
        dev.inject_bytes(&bad);
        assert_eq!(probe.levels(), 0);
        dev.inject_bytes(&[0x07, 0x01, 0x00]); // COBS code points past the end
        dev.inject_bytes(&[0x55; 100]); // overlong garbage, closed by the next frame's delimiter
        dev.inject_bytes(&[0x00]);
        assert_eq!(
            events(&mut dev),
            vec![
                DeviceEvent::Error {
                    seq: 0,
                    error: DeviceError::BadCrc
                },
                DeviceEvent::Error {
                    seq: 1,
                    error: DeviceError::BadFrame
                },
                DeviceEvent::Error {
                    seq: 2,
                    error: DeviceError::BadFrame
                },
            ]
        );
        assert_eq!(probe.frame_errors(), 3);
        let seq = dev
            .send(
                OutputCommand::SetLevel {
                    channel: 0,
                    high: true,
                },
                8,
            )
            .unwrap();
        advance_us(&clock, 20);
        let after = events(&mut dev);
        assert!(
            matches!(after.as_slice(), [DeviceEvent::Ack { seq: s, tag: 8, .. }] if *s == seq),
            "{after:?}"
        );
        assert_eq!(probe.levels(), 1);
    }

    #[test]
    fn unknown_command_turns_outputs_off() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        dev.send(
            OutputCommand::SetLevel {
                channel: 0,
                high: true,
            },
            1,
        )
        .unwrap();
        advance_us(&clock, 20);
        events(&mut dev);
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = reflex_protocol::encode_frame(&[0x7E, 1, 0, 0, 0, 0, 0], &mut buf).unwrap();
        dev.inject_bytes(&buf[..n]);
        assert_eq!(probe.levels(), 0);
        assert_eq!(
            events(&mut dev),
            vec![DeviceEvent::Error {
                seq: 0,
                error: DeviceError::UnknownCommand
            }]
        );
    }

    #[test]
    fn bad_channel_is_refused_by_host_and_device() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        let err = dev
            .send(
                OutputCommand::Pulse {
                    channel: 4,
                    width_us: 100,
                },
                1,
            )
            .unwrap_err();
        assert!(matches!(
            err,
            OutputError::BadChannel {
                channel: 4,
                channels: 4
            }
        ));
        assert_eq!(
            err.to_string(),
            "channel 4 is out of range: the device has 4 output channels (0..=3)"
        );
        let err = dev
            .send(
                OutputCommand::Pulse {
                    channel: 0,
                    width_us: 0,
                },
                1,
            )
            .unwrap_err();
        assert_eq!(err.to_string(), "pulse: width_us must be > 0");
        // The device checks too, for hosts that skip the check.
        dev.inject_bytes(&frame(
            40,
            1,
            Command::SetLevel {
                channel: 9,
                high: true,
            },
        ));
        dev.inject_bytes(&frame(
            41,
            1,
            Command::PulseTrain {
                channel: 0,
                period_us: 10,
                width_us: 10,
                count: 2,
            },
        ));
        advance_us(&clock, 100);
        assert_eq!(
            events(&mut dev),
            vec![
                DeviceEvent::Error {
                    seq: 40,
                    error: DeviceError::BadArgument
                },
                DeviceEvent::Error {
                    seq: 41,
                    error: DeviceError::BadArgument
                },
            ]
        );
        assert_eq!(probe.levels(), 0);
        assert_eq!(probe.commands_executed(), 0);
    }

    #[test]
    fn commands_before_a_matching_hello_are_refused() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        dev.send(
            OutputCommand::SetLevel {
                channel: 0,
                high: true,
            },
            1,
        )
        .unwrap();
        advance_us(&clock, 20);
        events(&mut dev);
        dev.inject_bytes(&frame(
            60,
            0,
            Command::Hello {
                protocol_version: 2,
            },
        ));
        assert_eq!(probe.levels(), 0);
        let seq = dev
            .send(
                OutputCommand::SetLevel {
                    channel: 0,
                    high: true,
                },
                1,
            )
            .unwrap();
        advance_us(&clock, 20);
        assert_eq!(
            events(&mut dev),
            vec![DeviceEvent::Error {
                seq,
                error: DeviceError::VersionMismatch
            }]
        );
        assert_eq!(probe.levels(), 0);
    }

    #[test]
    fn sync_reply_carries_device_time_with_offset_and_drift() {
        let config = SimConfig {
            drift_ppm: 100.0,
            watchdog_ms: 0,
            ..SimConfig::default()
        };
        let (mut dev, clock) = device(config);
        advance_us(&clock, 10_000_000);
        let seq = dev.request_sync().unwrap();
        assert_eq!(
            events(&mut dev),
            vec![DeviceEvent::SyncReply {
                seq,
                device_time_us: 10_000_000 + 1_000 + OFFSET_US
            }]
        );
    }

    #[test]
    fn probe_knows_the_level_at_any_host_time_without_a_poll() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        advance_us(&clock, 500);
        let high = OutputCommand::SetLevel {
            channel: 2,
            high: true,
        };
        dev.send(high, 1).unwrap();
        // Not polled: the pin change 20 µs ahead is already known; the past stays as it was.
        assert!(!probe.level_at_host_ns(2, 519_999));
        assert!(probe.level_at_host_ns(2, 520_000));
        assert!(probe.level_at_host_ns(2, 9_000_000));
        assert!(!probe.level_at_host_ns(1, 520_000));
        assert_eq!(
            probe.levels(),
            0,
            "the current levels follow the device's calls"
        );
        advance_us(&clock, 1_000);
        dev.send(
            OutputCommand::Pulse {
                channel: 1,
                width_us: 100,
            },
            2,
        )
        .unwrap();
        assert!(!probe.level_at_host_ns(1, 1_519_999));
        assert!(probe.level_at_host_ns(1, 1_520_000));
        assert!(probe.level_at_host_ns(1, 1_619_999));
        assert!(!probe.level_at_host_ns(1, 1_620_000));
        // Silence: the watchdog (50 ms after the last frame at 1.5 ms) turns channel 2 off at 51.5 ms, as the
        // probe learns at the next device call.
        advance_us(&clock, 60_000);
        dev.poll(&mut |_| {}).unwrap();
        assert!(probe.level_at_host_ns(2, 51_499_999));
        assert!(!probe.level_at_host_ns(2, 51_500_000));
        assert!(
            probe.level_at_host_ns(2, 40_000_000),
            "history before the expiry stays"
        );
    }

    #[test]
    fn probe_reads_from_another_thread() {
        let (mut dev, clock) = device(SimConfig::default());
        let probe = dev.probe();
        let worker = std::thread::spawn(move || {
            dev.send(
                OutputCommand::SetLevel {
                    channel: 3,
                    high: true,
                },
                1,
            )
            .unwrap();
            advance_us(&clock, 20);
            dev.poll(&mut |_| {}).unwrap();
            dev
        });
        let _dev = worker.join().unwrap();
        assert_eq!(probe.levels(), 0b1000);
        assert_eq!(probe.commands_executed(), 1);
        assert_eq!(probe.transitions(), 1);
    }

    #[test]
    fn extreme_clock_settings_do_not_panic() {
        let config = SimConfig {
            device_offset_us: i64::MAX,
            drift_ppm: 1e15,
            channels: 255,
            ..SimConfig::default()
        };
        let (mut dev, clock) = device(config);
        assert_eq!(dev.info().channels, 32);
        clock.store(u64::MAX, Ordering::SeqCst);
        dev.send(
            OutputCommand::SetLevel {
                channel: 31,
                high: true,
            },
            1,
        )
        .unwrap();
        dev.poll(&mut |_| {}).unwrap();
        let config = SimConfig {
            device_offset_us: i64::MIN,
            drift_ppm: f64::NAN,
            ..SimConfig::default()
        };
        let (mut dev, _) = device(config);
        assert_eq!(dev.device_now_us(), 0);
        dev.request_sync().unwrap();
        dev.poll(&mut |_| {}).unwrap();
    }

    #[test]
    fn replacing_a_pulse_mid_way_counts_edges_once() {
        let mut ch = Channel::OFF;
        ch.replace(
            100,
            Program::Train {
                period_us: 50,
                width_us: 50,
                count: 1,
            },
        );
        assert!(!ch.level_at(99));
        assert!(ch.level_at(100));
        ch.replace(120, Program::Level(true));
        assert!(ch.level_at(200), "the pulse's fall is cancelled");
        assert_eq!(ch.edges_until(1_000), 1);
        ch.replace(
            300,
            Program::Train {
                period_us: 100,
                width_us: 10,
                count: 2,
            },
        );
        // Already high at 300: falls at 310, rises at 400, falls at 410.
        assert!(!ch.level_at(305 + 10));
        assert!(ch.level_at(400));
        assert_eq!(ch.edges_until(1_000), 4);
    }
}
