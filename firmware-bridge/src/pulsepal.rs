//! Bridge to a Sanworks **Pulse Pal** (model 2, and model 1 with its 8-bit voltages) over its
//! USB serial protocol.
//!
//! Protocol as implemented by the device firmware, read in `sanworks/PulsePal` at commit
//! `ecdbcf4bb81e65fd67a52f332d56bb013a6ac40e` (`Firmware/PulsePal_2_0_1/PulsePal_2_0_1.ino`,
//! firmware version 21; `Firmware/PulsePal_1_1/PulsePal_1_1.pde`; host side
//! `Python/Python3/PulsePal.py`):
//!
//! - every command starts with the op-menu byte `213`, then an opcode;
//! - handshake `213 72` → `75` and the firmware version as a little-endian `u32`; firmware
//!   < 20 is a Pulse Pal 1 (8-bit DAC), ≥ 20 a Pulse Pal 2 (16-bit DAC);
//! - program one parameter `213 74 param channel(1–4) value` → confirm byte `1`; time
//!   parameters (4–11) are little-endian `u32` counts of the **50 µs hardware cycle** (20 kHz
//!   on both models; comments in the firmware still say 100 µs, the code says
//!   `CycleDuration = 50`), voltages (2, 3, 17) are DAC codes, `u16` on model 2 and `u8` on
//!   model 1, mapping −10 V…+10 V onto `0…max` as `ceil((V + 10) / 20 · max)`;
//! - soft trigger `213 77 mask` (bit n = channel n + 1), no reply;
//! - fixed voltage `213 79 channel(1–4) code` → confirm byte `1`;
//! - abort all trains `213 80`, no reply (channels go to their resting voltage);
//! - disconnect `213 81`, no reply; client name `213 89` and six ASCII bytes.
//!
//! How reflex's commands map:
//!
//! | [`OutputCommand`] | bytes |
//! |---|---|
//! | `Pulse { channel, width_us }` | (re)program phase-1 duration and train duration to `width_us` when they changed, then soft-trigger the channel |
//! | `PulseTrain { channel, period_us, width_us, count }` | phase 1 = `width_us`, inter-pulse interval = `period_us − width_us`, train duration = `(count − 1)·period_us + width_us`, then soft-trigger |
//! | `SetLevel { channel, high }` | fixed voltage: [`PulsePalConfig::high_level_mv`] or 0 V |
//! | `AllOff` | abort (`213 80`): every channel back to its resting voltage, which `connect` programs to 0 V |
//!
//! Times are rounded to the nearest 50 µs cycle; a width that rounds to 0 cycles is refused.
//! A fixed voltage and a train on the same channel do not mix: a running train keeps writing
//! its own voltages over a `SetLevel`, and a train's end returns the channel to 0 V (send
//! `AllOff` between them when switching).
//! Parameters already on the device are not sent again, so a repeated pulse is 3 bytes.
//!
//! **No device timestamps.** Pulse Pal reports nothing when an output changes and has no clock
//! the host can read, so this bridge never emits [`DeviceEvent::Ack`] or
//! [`DeviceEvent::SyncReply`], and [`Output::request_sync`] fails with
//! [`OutputError::InvalidArgument`]. Its [`DeviceInfo::name`] says so. The confirm bytes the
//! device sends for parameter and voltage writes are checked in [`Output::poll`] (an
//! unexpected byte is an error), but they only say the bytes arrived, not when a pin moved.

use std::io;
use std::time::Duration;

use crate::transport::{BadReply, Transport, read_exact_timeout};
use crate::{DeviceEvent, DeviceInfo, Output, OutputCommand, OutputError};

/// First byte of every Pulse Pal command ("op menu").
pub const OP_MENU: u8 = 213;
/// Opcode: handshake; the device answers [`HANDSHAKE_REPLY`] and its firmware version.
pub const OP_HANDSHAKE: u8 = 72;
/// Opcode: program one parameter of one channel; answered by [`CONFIRM`].
pub const OP_PROGRAM_PARAM: u8 = 74;
/// Opcode: soft-trigger the channels in a bit mask; no answer.
pub const OP_SOFT_TRIGGER: u8 = 77;
/// Opcode: set a fixed voltage on one channel; answered by [`CONFIRM`].
pub const OP_SET_VOLTAGE: u8 = 79;
/// Opcode: abort every pulse train; no answer.
pub const OP_ABORT: u8 = 80;
/// Opcode: end the session (the device aborts and returns to its menu); no answer.
pub const OP_DISCONNECT: u8 = 81;
/// Opcode: client name shown on the device's screen (six ASCII bytes follow); no answer.
pub const OP_CLIENT_NAME: u8 = 89;
/// The device's answer to [`OP_HANDSHAKE`] (`'K'`).
pub const HANDSHAKE_REPLY: u8 = 75;
/// The byte the device sends after a parameter or voltage write.
pub const CONFIRM: u8 = 1;
/// Length of one hardware cycle in µs (20 kHz on both models).
pub const CYCLE_US: u32 = 50;
/// Output channels on a Pulse Pal.
pub const CHANNELS: u8 = 4;
/// Firmware versions below this are a Pulse Pal 1 (8-bit DAC).
pub const FIRST_MODEL_2_FIRMWARE: u32 = 20;
/// Name shown on the device's screen while reflex is connected ("REFLEX connected").
const CLIENT_NAME: &[u8; 6] = b"REFLEX";

/// Parameter codes of opcode [`OP_PROGRAM_PARAM`] (1-based, as the firmware numbers them).
pub mod param {
    /// Biphasic pulses (`u8`, 0 = monophasic).
    pub const IS_BIPHASIC: u8 = 1;
    /// Voltage of the pulse's first phase (DAC code).
    pub const PHASE1_VOLTAGE: u8 = 2;
    /// Duration of the pulse's first phase (`u32` cycles).
    pub const PHASE1_DURATION: u8 = 4;
    /// Time from the end of one pulse to the start of the next (`u32` cycles).
    pub const INTER_PULSE_INTERVAL: u8 = 7;
    /// Burst duration (`u32` cycles, 0 = no bursts).
    pub const BURST_DURATION: u8 = 8;
    /// Duration of the whole train (`u32` cycles).
    pub const PULSE_TRAIN_DURATION: u8 = 10;
    /// Delay from trigger to the first pulse (`u32` cycles).
    pub const PULSE_TRAIN_DELAY: u8 = 11;
    /// Custom train in use (`u8`, 0 = the parametric train).
    pub const CUSTOM_TRAIN_ID: u8 = 14;
    /// Voltage between pulses and when idle (DAC code).
    pub const RESTING_VOLTAGE: u8 = 17;
}

/// Name for errors and [`BadReply`].
const DEVICE: &str = "Pulse Pal";
/// Largest batch of commands written at once (connect's 38 bytes per channel; `send` writes
/// at most 3 timing parameters and a trigger, 27 bytes).
const TX_LEN: usize = 64;

/// Settings of the Pulse Pal bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PulsePalConfig {
    /// Voltage in mV for "high" (pulse phase 1 and `SetLevel { high: true }`), −10000…10000.
    pub high_level_mv: i16,
    /// Longest wait for each answer while connecting.
    pub reply_timeout: Duration,
}

impl Default for PulsePalConfig {
    fn default() -> Self {
        Self {
            high_level_mv: 5_000,
            reply_timeout: Duration::from_millis(500),
        }
    }
}

/// The DAC code for `mv` millivolts on a DAC whose largest code is `max_code`, rounding up as
/// Sanworks' host libraries do (`ceil((V + 10) / 20 · max)`), in integers so it is exact.
pub fn volts_to_code(mv: i16, max_code: u16) -> u16 {
    let mv = i64::from(mv).clamp(-10_000, 10_000);
    let num = (mv + 10_000) * i64::from(max_code);
    let code = (num + 19_999) / 20_000;
    u16::try_from(code).unwrap_or(max_code)
}

/// Timing parameters last written to one channel (`None` = unknown, must be written).
#[derive(Debug, Clone, Copy, Default)]
struct Timing {
    phase1_cycles: Option<u32>,
    inter_pulse_cycles: Option<u32>,
    train_cycles: Option<u32>,
}

/// A fixed command buffer filled by `send`, written in one `write_all`.
#[derive(Debug)]
struct Tx {
    buf: [u8; TX_LEN],
    len: usize,
}

impl Tx {
    fn push(&mut self, bytes: &[u8]) {
        debug_assert!(
            self.len + bytes.len() <= TX_LEN,
            "Pulse Pal command buffer too small"
        );
        if let Some(dst) = self.buf.get_mut(self.len..self.len + bytes.len()) {
            dst.copy_from_slice(bytes);
            self.len += bytes.len();
        }
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// The DAC encoding of one model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dac {
    /// Pulse Pal 1: one byte, 0…255.
    Bits8,
    /// Pulse Pal 2: little-endian `u16`, 0…65535.
    Bits16,
}

impl Dac {
    fn max_code(self) -> u16 {
        match self {
            Self::Bits8 => 255,
            Self::Bits16 => u16::MAX,
        }
    }
}

/// A Pulse Pal driven through its USB serial protocol; see the [module docs](self).
pub struct PulsePal<T: Transport> {
    transport: T,
    info: DeviceInfo,
    dac: Dac,
    high_code: u16,
    zero_code: u16,
    timing: [Timing; CHANNELS as usize],
    /// Confirm bytes the device still owes for parameter and voltage writes.
    confirms_owed: u32,
    next_seq: u16,
}

impl<T: Transport> std::fmt::Debug for PulsePal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PulsePal")
            .field("info", &self.info)
            .field("confirms_owed", &self.confirms_owed)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> PulsePal<T> {
    /// Handshakes with the device, shows "REFLEX" on its screen, and programs every channel
    /// for reflex's pulses: monophasic, no delay, no bursts, no custom train, phase-1 voltage
    /// [`PulsePalConfig::high_level_mv`], resting voltage 0 V; then aborts anything running.
    /// Waits (up to `reply_timeout` per answer) for each confirm byte: connect-time only.
    pub fn connect(mut transport: T, config: PulsePalConfig) -> Result<Self, OutputError> {
        transport.write_all(&[OP_MENU, OP_HANDSHAKE])?;
        let mut reply = [0u8; 1];
        read_exact_timeout(
            &mut transport,
            &mut reply,
            config.reply_timeout,
            DEVICE,
            "the handshake reply (75)",
        )?;
        if reply != [HANDSHAKE_REPLY] {
            return Err(BadReply::io(
                io::ErrorKind::InvalidData,
                DEVICE,
                format!(
                    "handshake answered {} instead of {HANDSHAKE_REPLY}: is this a Pulse Pal?",
                    reply[0]
                ),
            )
            .into());
        }
        let mut version = [0u8; 4];
        read_exact_timeout(
            &mut transport,
            &mut version,
            config.reply_timeout,
            DEVICE,
            "the firmware version",
        )?;
        let firmware = u32::from_le_bytes(version);
        let (dac, model) = if firmware < FIRST_MODEL_2_FIRMWARE {
            (Dac::Bits8, "Pulse Pal 1")
        } else {
            (Dac::Bits16, "Pulse Pal 2")
        };
        let mut device = Self {
            transport,
            info: DeviceInfo {
                name: format!("{model} (no device timestamps)"),
                device_id: 0,
                firmware_version: u16::try_from(firmware).unwrap_or(u16::MAX),
                protocol_version: 0,
                channels: CHANNELS,
            },
            dac,
            high_code: volts_to_code(config.high_level_mv, dac.max_code()),
            zero_code: volts_to_code(0, dac.max_code()),
            timing: [Timing::default(); CHANNELS as usize],
            confirms_owed: 0,
            next_seq: 0,
        };
        let mut name = [OP_MENU, OP_CLIENT_NAME, 0, 0, 0, 0, 0, 0];
        if let Some(dst) = name.get_mut(2..) {
            dst.copy_from_slice(CLIENT_NAME);
        }
        device.transport.write_all(&name)?;
        for channel in 0..CHANNELS {
            let mut tx = device.tx();
            device.push_u8_param(&mut tx, param::IS_BIPHASIC, channel, 0);
            device.push_voltage_param(&mut tx, param::PHASE1_VOLTAGE, channel, device.high_code);
            device.push_voltage_param(&mut tx, param::RESTING_VOLTAGE, channel, device.zero_code);
            device.push_u32_param(&mut tx, param::PULSE_TRAIN_DELAY, channel, 0);
            device.push_u32_param(&mut tx, param::BURST_DURATION, channel, 0);
            device.push_u8_param(&mut tx, param::CUSTOM_TRAIN_ID, channel, 0);
            device.transport.write_all(tx.bytes())?;
            device.confirms_owed += 6;
        }
        device.transport.write_all(&[OP_MENU, OP_ABORT])?;
        while device.confirms_owed > 0 {
            let mut byte = [0u8; 1];
            read_exact_timeout(
                &mut device.transport,
                &mut byte,
                config.reply_timeout,
                DEVICE,
                "a parameter confirm byte",
            )?;
            device.take_reply_byte(byte[0])?;
        }
        Ok(device)
    }

    /// DAC codes the bridge writes for high and for 0 V (`(high, zero)`), for tests and logs.
    pub fn voltage_codes(&self) -> (u16, u16) {
        (self.high_code, self.zero_code)
    }

    fn tx(&self) -> Tx {
        Tx {
            buf: [0; TX_LEN],
            len: 0,
        }
    }

    fn push_u8_param(&self, tx: &mut Tx, code: u8, channel: u8, value: u8) {
        tx.push(&[OP_MENU, OP_PROGRAM_PARAM, code, channel + 1, value]);
    }

    fn push_u32_param(&self, tx: &mut Tx, code: u8, channel: u8, value: u32) {
        tx.push(&[OP_MENU, OP_PROGRAM_PARAM, code, channel + 1]);
        tx.push(&value.to_le_bytes());
    }

    fn push_voltage_param(&self, tx: &mut Tx, code: u8, channel: u8, dac_code: u16) {
        tx.push(&[OP_MENU, OP_PROGRAM_PARAM, code, channel + 1]);
        self.push_dac(tx, dac_code);
    }

    fn push_dac(&self, tx: &mut Tx, dac_code: u16) {
        match self.dac {
            Dac::Bits8 => tx.push(&[u8::try_from(dac_code).unwrap_or(u8::MAX)]),
            Dac::Bits16 => tx.push(&dac_code.to_le_bytes()),
        }
    }

    /// Writes a timing parameter unless the device already has `value`; returns whether a
    /// confirm byte is now owed.
    fn push_timing(&mut self, tx: &mut Tx, code: u8, channel: u8, value: u32) -> bool {
        let Some(timing) = self.timing.get_mut(usize::from(channel)) else {
            return false;
        };
        let slot = match code {
            param::PHASE1_DURATION => &mut timing.phase1_cycles,
            param::INTER_PULSE_INTERVAL => &mut timing.inter_pulse_cycles,
            _ => &mut timing.train_cycles,
        };
        if *slot == Some(value) {
            return false;
        }
        *slot = Some(value);
        tx.push(&[OP_MENU, OP_PROGRAM_PARAM, code, channel + 1]);
        tx.push(&value.to_le_bytes());
        true
    }

    fn take_reply_byte(&mut self, byte: u8) -> Result<(), OutputError> {
        if byte == CONFIRM && self.confirms_owed > 0 {
            self.confirms_owed -= 1;
            return Ok(());
        }
        Err(BadReply::io(
            io::ErrorKind::InvalidData,
            DEVICE,
            format!(
                "unexpected byte {byte} from the device ({} confirm bytes were owed)",
                self.confirms_owed
            ),
        )
        .into())
    }

    fn next_seq(&mut self) -> u16 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        seq
    }
}

/// `us` in 50 µs cycles, rounded to nearest; refuses 0 cycles and values past `u32`.
fn cycles(us: u64, command: &'static str, what: &'static str) -> Result<u32, OutputError> {
    let cycles = (us + u64::from(CYCLE_US / 2)) / u64::from(CYCLE_US);
    if cycles == 0 {
        return Err(OutputError::InvalidArgument {
            command,
            reason: what,
        });
    }
    u32::try_from(cycles).map_err(|_| OutputError::InvalidArgument {
        command,
        reason: "Pulse Pal: longer than u32::MAX cycles of 50 µs",
    })
}

impl<T: Transport> Output for PulsePal<T> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn send(&mut self, command: OutputCommand, _tag: u32) -> Result<u16, OutputError> {
        command.check_arguments()?;
        if let Some(channel) = command.channel()
            && channel >= CHANNELS
        {
            return Err(OutputError::BadChannel {
                channel,
                channels: CHANNELS,
            });
        }
        let mut tx = self.tx();
        let mut owed = 0;
        match command {
            OutputCommand::Pulse { channel, width_us } => {
                let width = cycles(
                    u64::from(width_us),
                    "pulse",
                    "Pulse Pal: width_us rounds to 0 cycles of 50 µs",
                )?;
                owed +=
                    u32::from(self.push_timing(&mut tx, param::PHASE1_DURATION, channel, width));
                owed += u32::from(self.push_timing(
                    &mut tx,
                    param::PULSE_TRAIN_DURATION,
                    channel,
                    width,
                ));
                tx.push(&[OP_MENU, OP_SOFT_TRIGGER, 1 << channel]);
            }
            OutputCommand::PulseTrain {
                channel,
                period_us,
                width_us,
                count,
            } => {
                const WHAT: &str = "pulse train";
                let width = cycles(
                    u64::from(width_us),
                    WHAT,
                    "Pulse Pal: width_us rounds to 0 cycles of 50 µs",
                )?;
                let period = cycles(
                    u64::from(period_us),
                    WHAT,
                    "Pulse Pal: period_us rounds to 0 cycles of 50 µs",
                )?;
                let gap = match period.checked_sub(width) {
                    Some(gap) if gap > 0 => gap,
                    _ if count == 1 => 1,
                    _ => {
                        return Err(OutputError::InvalidArgument {
                            command: WHAT,
                            reason: "Pulse Pal: width and period round to the same 50 µs cycle",
                        });
                    }
                };
                let train = u64::from(count - 1) * u64::from(period) + u64::from(width);
                let train = u32::try_from(train).map_err(|_| OutputError::InvalidArgument {
                    command: WHAT,
                    reason: "Pulse Pal: train longer than u32::MAX cycles of 50 µs",
                })?;
                owed +=
                    u32::from(self.push_timing(&mut tx, param::PHASE1_DURATION, channel, width));
                owed +=
                    u32::from(self.push_timing(&mut tx, param::INTER_PULSE_INTERVAL, channel, gap));
                owed += u32::from(self.push_timing(
                    &mut tx,
                    param::PULSE_TRAIN_DURATION,
                    channel,
                    train,
                ));
                tx.push(&[OP_MENU, OP_SOFT_TRIGGER, 1 << channel]);
            }
            OutputCommand::SetLevel { channel, high } => {
                tx.push(&[OP_MENU, OP_SET_VOLTAGE, channel + 1]);
                self.push_dac(&mut tx, if high { self.high_code } else { self.zero_code });
                owed += 1;
            }
            OutputCommand::AllOff => tx.push(&[OP_MENU, OP_ABORT]),
        }
        self.transport.write_all(tx.bytes())?;
        self.confirms_owed += owed;
        Ok(self.next_seq())
    }

    /// Pulse Pal has no watchdog: nothing to send.
    fn heartbeat(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    /// Always fails: Pulse Pal has no clock the host can read.
    fn request_sync(&mut self) -> Result<u16, OutputError> {
        Err(OutputError::InvalidArgument {
            command: "request_sync",
            reason: "Pulse Pal has no device clock: it reports no timestamps",
        })
    }

    /// Reads and checks confirm bytes; never delivers an event (see the module docs).
    fn poll(&mut self, _sink: &mut dyn FnMut(DeviceEvent)) -> Result<(), OutputError> {
        let mut first_error = None;
        loop {
            let mut rx = [0u8; 64];
            let n = self.transport.read_available(&mut rx)?;
            if n == 0 {
                break;
            }
            for &byte in rx.get(..n).unwrap_or_default() {
                if let Err(e) = self.take_reply_byte(byte) {
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    fn all_off(&mut self) -> Result<(), OutputError> {
        self.transport.write_all(&[OP_MENU, OP_ABORT])?;
        Ok(())
    }
}

impl<T: Transport> Drop for PulsePal<T> {
    /// Ends the session (`213 81`): the device aborts every train and shows its own menu.
    fn drop(&mut self) {
        let _ = self.transport.write_all(&[OP_MENU, OP_DISCONNECT]);
    }
}
