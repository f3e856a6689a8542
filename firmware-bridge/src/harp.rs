//! Bridge to a **Harp** device (harp-tech) with digital outputs, by default the Harp Behavior
//! board, speaking the Harp binary protocol.
//!
//! Protocol, read in `harp-tech/protocol` at commit `302d3871889c090929b7566d33980041d5511b4f`
//! (`BinaryProtocol-8bit.md`, `Device.md`):
//!
//! - a message is `[MessageType, Length, Address, Port, PayloadType, (Timestamp), Payload,
//!   Checksum]`, little-endian; `Length` counts the bytes after it (checksum included);
//!   `Port` is `0xFF` for the device itself; the checksum is the sum of all other bytes mod 256;
//! - `MessageType`: 1 Read, 2 Write, 3 Event, bit 3 (`0x08`) = error;
//! - `PayloadType`: bits 0–3 the word size in bytes, `0x10` has-timestamp, `0x40` float,
//!   `0x80` signed; a timestamp is `u32` seconds then `u16` ticks of 32 µs;
//! - every Read/Write request gets exactly one reply of the same type and address, timestamped
//!   with the device time at which it was processed ("for requests triggering a fast action, the
//!   time at which the action is finished"); an error reply has the error bit set;
//! - core registers: `WHO_AM_I` 0 (U16), `FW_VERSION_H`/`_L` 6/7 (U8), `TIMESTAMP_SECOND` 8
//!   (U32), `TIMESTAMP_MICRO` 9 (U16), `SERIAL_NUMBER` 13 (U16).
//!
//! Harp Behavior registers, read in `harp-tech/device.behavior` at commit
//! `aeb6f8b8c166487417f9d151bc7affe1e3ccc9be` (`device.yml`, `Firmware/Behavior/app_funcs.c`):
//! `WHO_AM_I` = 1216; `OutputSet` 34 and `OutputClear` 35 (U16 bit masks of the
//! `DigitalOutputs` lines: bit 0 `DOPort0` … bit 13 `DO3`); `OutputPulseEnable` 45 (U16 mask,
//! written whole); `PulseDOPort0` 46 … `PulseDO3` 59 (U16 pulse width in ms, ≥ 1, one register
//! per output bit, in bit order). With a line's pulse bit enabled, `OutputSet` starts a pulse of
//! that register's width; otherwise it holds the line high.
//!
//! How reflex's commands map (channel n = output bit n, see [`HarpConfig`]):
//!
//! | [`OutputCommand`] | messages |
//! |---|---|
//! | `SetLevel { high: true }` | clear the channel's pulse bit if set, then Write `OutputSet` |
//! | `SetLevel { high: false }` | Write `OutputClear` |
//! | `Pulse { width_us }` | set the pulse bit and the width (whole ms, rounded) if they changed, then Write `OutputSet` |
//! | `PulseTrain` | refused ([`OutputError::InvalidArgument`]): the board has no train register |
//! | `AllOff` | Write `OutputClear` with every mapped line |
//!
//! **Device timestamps.** The reply to the `OutputSet`/`OutputClear` write becomes
//! [`DeviceEvent::Ack`] with `device_time_us` = seconds · 10⁶ + ticks · 32 on the Harp clock;
//! [`Output::request_sync`] reads `TIMESTAMP_SECOND` and answers with the reply's timestamp. An
//! error reply becomes [`DeviceEvent::Error`] with [`DeviceError::BadArgument`]. Event messages
//! (inputs, heartbeats) are read and skipped. [`DeviceInfo::firmware_version`] is
//! `FW_VERSION_H << 8 | FW_VERSION_L`, [`DeviceInfo::device_id`] the serial number.

use std::io;
use std::time::Duration;

use crate::transport::{BadReply, Transport};
use crate::{DeviceError, DeviceEvent, DeviceInfo, Output, OutputCommand, OutputError};

/// `MessageType` of a read request or reply.
pub const MSG_READ: u8 = 1;
/// `MessageType` of a write request or reply.
pub const MSG_WRITE: u8 = 2;
/// `MessageType` of an event from the device.
pub const MSG_EVENT: u8 = 3;
/// Error bit of `MessageType`.
pub const MSG_ERROR_FLAG: u8 = 0x08;
/// `PayloadType` flag: a timestamp precedes the payload.
pub const PAYLOAD_HAS_TIMESTAMP: u8 = 0x10;
/// `PayloadType` of an unsigned byte.
pub const PAYLOAD_U8: u8 = 0x01;
/// `PayloadType` of an unsigned 16-bit word.
pub const PAYLOAD_U16: u8 = 0x02;
/// `PayloadType` of an unsigned 32-bit word.
pub const PAYLOAD_U32: u8 = 0x04;
/// `Port` of the device itself (no hub).
pub const PORT_SELF: u8 = 0xFF;
/// µs per tick of the timestamp's fractional part.
pub const TIMESTAMP_TICK_US: u64 = 32;
/// Longest message: the 2 header bytes and a `Length` of up to 255.
pub const MAX_MESSAGE_LEN: usize = 257;

/// Core register addresses (`Device.md`).
pub mod core_reg {
    /// Device identity class (U16).
    pub const WHO_AM_I: u8 = 0;
    /// Major firmware version (U8).
    pub const FW_VERSION_H: u8 = 6;
    /// Minor firmware version (U8).
    pub const FW_VERSION_L: u8 = 7;
    /// Whole seconds of the Harp clock (U32).
    pub const TIMESTAMP_SECOND: u8 = 8;
    /// Fraction of the second in 32 µs ticks (U16).
    pub const TIMESTAMP_MICRO: u8 = 9;
    /// Serial number (U16; deprecated, 0 when not implemented).
    pub const SERIAL_NUMBER: u8 = 13;
}

/// Harp Behavior application registers (`device.yml`).
pub mod behavior {
    /// `WHO_AM_I` of the Harp Behavior board.
    pub const WHO_AM_I: u16 = 1216;
    /// Sets the output lines in the U16 mask.
    pub const OUTPUT_SET: u8 = 34;
    /// Clears the output lines in the U16 mask.
    pub const OUTPUT_CLEAR: u8 = 35;
    /// Output lines whose `OutputSet` starts a pulse (U16 mask, written whole).
    pub const OUTPUT_PULSE_ENABLE: u8 = 45;
    /// Pulse width in ms (U16) of output bit 0 (`DOPort0`); bit n uses this + n, up to 59.
    pub const PULSE_WIDTH_FIRST: u8 = 46;
    /// Output lines in `DigitalOutputs` (`DOPort0` … `DO3`).
    pub const OUTPUT_LINES: u8 = 14;
}

/// Name for errors and [`BadReply`].
const DEVICE: &str = "Harp";
/// Requests awaiting a reply; more are refused (a device that never answers).
const PENDING_CAPACITY: usize = 256;
/// Bytes one `send` writes at most (three short write messages).
const TX_LEN: usize = 64;

/// Which registers drive the outputs; [`HarpConfig::behavior`] for the Harp Behavior board.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HarpConfig {
    /// `WHO_AM_I` the device must report, `None` to accept any.
    pub who_am_i: Option<u16>,
    /// Register that sets the lines of a U16 mask.
    pub output_set: u8,
    /// Register that clears the lines of a U16 mask.
    pub output_clear: u8,
    /// Register of the pulse-enable mask, `None` when the device cannot time pulses (then
    /// `Pulse` is refused).
    pub pulse_enable: Option<u8>,
    /// Pulse-width register (U16 ms) of channel 0; channel n uses this + n.
    pub pulse_width_first: u8,
    /// Output channels: channel n is bit n of the masks (at most 16).
    pub channels: u8,
    /// Longest wait for each reply while connecting.
    pub reply_timeout: Duration,
}

impl HarpConfig {
    /// The Harp Behavior board: 14 output lines, channel n = `DigitalOutputs` bit n.
    pub fn behavior() -> Self {
        Self {
            who_am_i: Some(behavior::WHO_AM_I),
            output_set: behavior::OUTPUT_SET,
            output_clear: behavior::OUTPUT_CLEAR,
            pulse_enable: Some(behavior::OUTPUT_PULSE_ENABLE),
            pulse_width_first: behavior::PULSE_WIDTH_FIRST,
            channels: behavior::OUTPUT_LINES,
            reply_timeout: Duration::from_millis(500),
        }
    }
}

/// Writes one host-to-device Harp message (no timestamp, port `0xFF`) into `out` and returns
/// its length; `None` when `out` is too short or the payload longer than 251 bytes.
pub fn encode_request(
    message_type: u8,
    address: u8,
    payload_type: u8,
    payload: &[u8],
    out: &mut [u8],
) -> Option<usize> {
    let length = u8::try_from(payload.len() + 4).ok()?;
    let total = usize::from(length) + 2;
    let frame = out.get_mut(..total)?;
    let (header, rest) = frame.split_at_mut(5);
    header.copy_from_slice(&[message_type, length, address, PORT_SELF, payload_type]);
    let (body, checksum) = rest.split_at_mut(payload.len());
    body.copy_from_slice(payload);
    let sum = header
        .iter()
        .chain(body.iter())
        .fold(0u8, |acc, &b| acc.wrapping_add(b));
    if let Some(c) = checksum.first_mut() {
        *c = sum;
    }
    Some(total)
}

/// One message from the device, borrowed from the parser's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// `MessageType` without the error bit (1 Read, 2 Write, 3 Event).
    pub message_type: u8,
    /// The error bit was set.
    pub is_error: bool,
    /// Register address.
    pub address: u8,
    /// `PayloadType` as sent (with the timestamp flag).
    pub payload_type: u8,
    /// Device time in µs (seconds · 10⁶ + ticks · 32), when the message carries one.
    pub device_time_us: Option<u64>,
    /// Payload bytes.
    pub payload: &'a [u8],
}

/// Why bytes from the device were not a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// The checksum byte does not match the sum of the others.
    #[error(
        "checksum {received:#04x} of a type {message_type} message from register {address} \
         does not match the computed {computed:#04x}"
    )]
    Checksum {
        /// `MessageType` of the damaged message, without the error bit (as far as it can be
        /// trusted).
        message_type: u8,
        /// Register address of the damaged message (as far as it can be trusted).
        address: u8,
        /// Checksum computed over the message.
        computed: u8,
        /// Checksum received.
        received: u8,
    },
    /// The header is impossible (unknown message type, length too short for its fields).
    #[error("invalid header: message type {message_type:#04x}, length {length}")]
    Header {
        /// `MessageType` byte received.
        message_type: u8,
        /// `Length` byte received.
        length: u8,
    },
}

/// Splits a byte stream into Harp messages with a fixed buffer; after a bad checksum or
/// header it drops one byte and looks again, so it resynchronises on the next message.
#[derive(Debug)]
pub struct Parser {
    buf: [u8; MAX_MESSAGE_LEN],
    len: usize,
}

impl Default for Parser {
    fn default() -> Self {
        Self::new()
    }
}

impl Parser {
    /// An empty parser.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_MESSAGE_LEN],
            len: 0,
        }
    }

    /// Feeds bytes; calls `on_message` for each complete message or error, in order.
    pub fn push(
        &mut self,
        bytes: &[u8],
        on_message: &mut dyn FnMut(Result<Message<'_>, ParseError>),
    ) {
        for &byte in bytes {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = byte;
                self.len += 1;
            }
            self.drain(on_message);
        }
    }

    /// Takes every complete message at the front of the buffer.
    fn drain(&mut self, on_message: &mut dyn FnMut(Result<Message<'_>, ParseError>)) {
        loop {
            if self.len < 2 {
                return;
            }
            let [message_type, length, ..] = self.buf;
            let kind = message_type & !MSG_ERROR_FLAG;
            if !(MSG_READ..=MSG_EVENT).contains(&kind) || message_type & 0xF4 != 0 || length < 4 {
                on_message(Err(ParseError::Header {
                    message_type,
                    length,
                }));
                self.discard(1);
                continue;
            }
            let total = usize::from(length) + 2;
            if self.len < total {
                return;
            }
            match decode(self.buf.get(..total).unwrap_or_default()) {
                Ok(message) => {
                    on_message(Ok(message));
                    self.discard(total);
                }
                Err(e) => {
                    on_message(Err(e));
                    self.discard(1);
                }
            }
        }
    }

    fn discard(&mut self, n: usize) {
        let n = n.min(self.len);
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

/// Decodes one complete message (`frame.len()` = `Length` + 2).
pub fn decode(frame: &[u8]) -> Result<Message<'_>, ParseError> {
    let (&received, body) = frame.split_last().ok_or(ParseError::Header {
        message_type: 0,
        length: 0,
    })?;
    let computed = body.iter().fold(0u8, |acc, &b| acc.wrapping_add(b));
    if computed != received {
        return Err(ParseError::Checksum {
            message_type: body.first().map_or(0, |t| t & !MSG_ERROR_FLAG),
            address: body.get(2).copied().unwrap_or(0),
            computed,
            received,
        });
    }
    let header_error = || ParseError::Header {
        message_type: body.first().copied().unwrap_or(0),
        length: body.get(1).copied().unwrap_or(0),
    };
    let &[
        message_type,
        _length,
        address,
        _port,
        payload_type,
        ref rest @ ..,
    ] = body
    else {
        return Err(header_error());
    };
    let (device_time_us, payload) = if payload_type & PAYLOAD_HAS_TIMESTAMP != 0 {
        let Some((&[s0, s1, s2, s3, t0, t1], payload)) = rest.split_first_chunk::<6>() else {
            return Err(header_error());
        };
        let seconds = u64::from(u32::from_le_bytes([s0, s1, s2, s3]));
        let ticks = u64::from(u16::from_le_bytes([t0, t1]));
        (
            Some(seconds * 1_000_000 + ticks * TIMESTAMP_TICK_US),
            payload,
        )
    } else {
        (None, rest)
    };
    Ok(Message {
        message_type: message_type & !MSG_ERROR_FLAG,
        is_error: message_type & MSG_ERROR_FLAG != 0,
        address,
        payload_type,
        device_time_us,
        payload,
    })
}

/// What the reply to a request means to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// An output command: its reply is the ack.
    Ack { seq: u16, tag: u32 },
    /// A clock read: its reply is the sync reply.
    Sync { seq: u16 },
    /// Configuration written on the way to an output command (pulse width, pulse enable).
    Config { seq: u16 },
}

/// A request written and not yet answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    message_type: u8,
    address: u8,
    purpose: Purpose,
}

/// Requests awaiting replies, oldest first (Harp devices answer in order).
type PendingQueue = crate::fifo::Fifo<Pending, PENDING_CAPACITY>;

/// The bytes and pending replies of one `send`, committed together.
#[derive(Debug)]
struct Batch {
    buf: [u8; TX_LEN],
    len: usize,
    pending: [Option<Pending>; 3],
}

impl Batch {
    fn new() -> Self {
        Self {
            buf: [0; TX_LEN],
            len: 0,
            pending: [None; 3],
        }
    }

    fn write(&mut self, address: u8, payload_type: u8, payload: &[u8], purpose: Purpose) {
        let Some(out) = self.buf.get_mut(self.len..) else {
            return;
        };
        if let Some(n) = encode_request(MSG_WRITE, address, payload_type, payload, out)
            && let Some(slot) = self.pending.iter_mut().find(|p| p.is_none())
        {
            self.len += n;
            *slot = Some(Pending {
                message_type: MSG_WRITE,
                address,
                purpose,
            });
        }
    }
}

/// A Harp device driven through its binary protocol; see the [module docs](self).
pub struct Harp<T: Transport> {
    transport: T,
    config: HarpConfig,
    info: DeviceInfo,
    parser: Parser,
    pending: PendingQueue,
    /// The pulse-enable mask last written.
    pulse_enabled: u16,
    /// Pulse widths in ms last written, per channel (0 = unknown).
    pulse_ms: [u16; 16],
    next_seq: u16,
}

impl<T: Transport> std::fmt::Debug for Harp<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harp")
            .field("info", &self.info)
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

/// Reads of the handshake, answered in order.
const HANDSHAKE_READS: [(u8, u8); 4] = [
    (core_reg::WHO_AM_I, PAYLOAD_U16),
    (core_reg::FW_VERSION_H, PAYLOAD_U8),
    (core_reg::FW_VERSION_L, PAYLOAD_U8),
    (core_reg::SERIAL_NUMBER, PAYLOAD_U16),
];

impl<T: Transport> Harp<T> {
    /// Reads `WHO_AM_I` (checked against [`HarpConfig::who_am_i`]), the firmware version and
    /// serial number, then turns pulse mode off and clears every mapped output line. Waits up
    /// to `reply_timeout` for each reply: connect-time only.
    pub fn connect(mut transport: T, config: HarpConfig) -> Result<Self, OutputError> {
        let channels = config.channels.min(16);
        let mut values = [0u16; HANDSHAKE_READS.len()];
        let mut parser = Parser::new();
        for ((address, payload_type), value) in HANDSHAKE_READS.into_iter().zip(values.iter_mut()) {
            let mut out = [0u8; 8];
            let n = encode_request(MSG_READ, address, payload_type, &[], &mut out).unwrap_or(0);
            transport.write_all(out.get(..n).unwrap_or_default())?;
            let reply = wait_reply(&mut transport, &mut parser, &config, MSG_READ, address)?;
            *value = reply;
        }
        let [who_am_i, fw_h, fw_l, serial] = values;
        if let Some(expected) = config.who_am_i
            && expected != who_am_i
        {
            return Err(BadReply::io(
                io::ErrorKind::InvalidData,
                DEVICE,
                format!("WHO_AM_I is {who_am_i}, expected {expected}: wrong device on this port?"),
            )
            .into());
        }
        let mut device = Self {
            transport,
            config: HarpConfig { channels, ..config },
            info: DeviceInfo {
                name: format!("Harp (WHO_AM_I {who_am_i}, device timestamps)"),
                device_id: u32::from(serial),
                firmware_version: ((fw_h & 0xFF) << 8) | (fw_l & 0xFF),
                protocol_version: 0,
                channels,
            },
            parser,
            pending: PendingQueue::new(),
            pulse_enabled: 0,
            pulse_ms: [0; 16],
            next_seq: 0,
        };
        // Pulse mode off first (so nothing is left to pulse), then every line low.
        let all = device.all_mask();
        let pulse_off = device.config.pulse_enable.map(|enable| (enable, 0u16));
        let setup = pulse_off
            .into_iter()
            .chain([(device.config.output_clear, all)]);
        for (address, value) in setup {
            let mut out = [0u8; 16];
            let n = encode_request(
                MSG_WRITE,
                address,
                PAYLOAD_U16,
                &value.to_le_bytes(),
                &mut out,
            )
            .unwrap_or(0);
            device
                .transport
                .write_all(out.get(..n).unwrap_or_default())?;
            wait_reply(
                &mut device.transport,
                &mut device.parser,
                &device.config,
                MSG_WRITE,
                address,
            )?;
        }
        Ok(device)
    }

    fn all_mask(&self) -> u16 {
        match self.config.channels {
            16.. => u16::MAX,
            n => (1u16 << n) - 1,
        }
    }

    fn next_seq(&mut self) -> u16 {
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        seq
    }

    fn commit(&mut self, batch: &Batch) -> Result<(), OutputError> {
        if batch.pending.iter().flatten().count() > self.pending.room() {
            return Err(BadReply::io(
                io::ErrorKind::Other,
                DEVICE,
                format!(
                    "{PENDING_CAPACITY} requests without a reply: is the device answering \
                     (MUTE_RPL set, or not polled)?"
                ),
            )
            .into());
        }
        self.transport
            .write_all(batch.buf.get(..batch.len).unwrap_or_default())?;
        for pending in batch.pending.iter().flatten() {
            self.pending.push_back(*pending);
        }
        Ok(())
    }

    fn handle(
        &mut self,
        message: Message<'_>,
        sink: &mut dyn FnMut(DeviceEvent),
    ) -> Result<(), OutputError> {
        if message.message_type == MSG_EVENT {
            return Ok(());
        }
        let Some(lost) = self
            .pending
            .position(|p| p.address == message.address && p.message_type == message.message_type)
        else {
            return Err(BadReply::io(
                io::ErrorKind::InvalidData,
                DEVICE,
                format!(
                    "a type {} reply from register {} that no request is waiting for",
                    message.message_type, message.address
                ),
            )
            .into());
        };
        // Devices answer in order, so requests before the match lost their replies (a
        // corrupt message was dropped): forget them, and say so after handling this one.
        let mut lost_error = None;
        for _ in 0..lost {
            if let Some(p) = self.pending.pop_front() {
                lost_error.get_or_insert_with(|| {
                    OutputError::from(BadReply::io(
                        io::ErrorKind::InvalidData,
                        DEVICE,
                        format!(
                            "the reply to request {} (register {}) never came",
                            purpose_seq(p.purpose),
                            p.address
                        ),
                    ))
                });
            }
        }
        let Some(pending) = self.pending.pop_front() else {
            return Ok(());
        };
        self.deliver(pending, message, sink)?;
        lost_error.map_or(Ok(()), Err)
    }

    /// A message failed its checksum: if its header names the request answered next, that
    /// reply is what was damaged, so forget the request (its seq gets no event). Otherwise the
    /// bytes were noise and every request keeps waiting. Harp has no frame delimiter, so this
    /// is a best guess; a later reply out of order is caught in [`Self::handle`].
    fn drop_damaged_reply(&mut self, error: ParseError) {
        if let ParseError::Checksum {
            message_type,
            address,
            ..
        } = error
            && self
                .pending
                .front()
                .is_some_and(|p| p.message_type == message_type && p.address == address)
        {
            self.pending.pop_front();
        }
    }

    fn deliver(
        &mut self,
        pending: Pending,
        message: Message<'_>,
        sink: &mut dyn FnMut(DeviceEvent),
    ) -> Result<(), OutputError> {
        let seq = purpose_seq(pending.purpose);
        if message.is_error {
            sink(DeviceEvent::Error {
                seq,
                error: DeviceError::BadArgument,
            });
            return Ok(());
        }
        let Some(device_time_us) = message.device_time_us else {
            return Err(BadReply::io(
                io::ErrorKind::InvalidData,
                DEVICE,
                format!(
                    "reply from register {} without a timestamp",
                    message.address
                ),
            )
            .into());
        };
        match pending.purpose {
            Purpose::Ack { seq, tag } => sink(DeviceEvent::Ack {
                seq,
                tag,
                device_time_us,
            }),
            Purpose::Sync { seq } => sink(DeviceEvent::SyncReply {
                seq,
                device_time_us,
            }),
            Purpose::Config { .. } => {}
        }
        Ok(())
    }
}

/// The sequence number a request belongs to.
fn purpose_seq(purpose: Purpose) -> u16 {
    match purpose {
        Purpose::Ack { seq, .. } | Purpose::Sync { seq } | Purpose::Config { seq } => seq,
    }
}

/// Connect-time: waits for the reply to a request and returns its first word (U8 or U16).
fn wait_reply(
    transport: &mut dyn Transport,
    parser: &mut Parser,
    config: &HarpConfig,
    message_type: u8,
    address: u8,
) -> Result<u16, OutputError> {
    loop {
        let mut rx = [0u8; 64];
        let n = transport.read_timeout(&mut rx, config.reply_timeout)?;
        if n == 0 {
            return Err(BadReply::io(
                io::ErrorKind::TimedOut,
                DEVICE,
                format!(
                    "no reply from register {address} within {} ms",
                    config.reply_timeout.as_millis()
                ),
            )
            .into());
        }
        let mut result: Option<Result<u16, OutputError>> = None;
        parser.push(rx.get(..n).unwrap_or_default(), &mut |message| {
            if result.is_some() {
                return;
            }
            match message {
                Ok(m) if m.message_type == MSG_EVENT => {}
                Ok(m) if m.address == address && m.message_type == message_type => {
                    result = Some(if m.is_error {
                        Err(BadReply::io(
                            io::ErrorKind::InvalidData,
                            DEVICE,
                            format!("error reply from register {address}"),
                        )
                        .into())
                    } else {
                        let value = match *m.payload {
                            [lo, hi, ..] if m.payload_type & 0x0F >= 2 => {
                                u16::from_le_bytes([lo, hi])
                            }
                            [b, ..] => u16::from(b),
                            [] => 0,
                        };
                        Ok(value)
                    });
                }
                Ok(m) => {
                    result = Some(Err(BadReply::io(
                        io::ErrorKind::InvalidData,
                        DEVICE,
                        format!(
                            "reply type {} from register {} while waiting for register {address}",
                            m.message_type, m.address
                        ),
                    )
                    .into()));
                }
                Err(e) => {
                    result = Some(Err(BadReply::io(
                        io::ErrorKind::InvalidData,
                        DEVICE,
                        e.to_string(),
                    )
                    .into()));
                }
            }
        });
        if let Some(result) = result {
            return result;
        }
    }
}

impl<T: Transport> Output for Harp<T> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn send(&mut self, command: OutputCommand, tag: u32) -> Result<u16, OutputError> {
        command.check_arguments()?;
        let channels = self.config.channels;
        if let Some(channel) = command.channel()
            && channel >= channels
        {
            return Err(OutputError::BadChannel { channel, channels });
        }
        let seq = self.next_seq;
        let ack = Purpose::Ack { seq, tag };
        let config = Purpose::Config { seq };
        let mut batch = Batch::new();
        let mut pulse_enabled = self.pulse_enabled;
        let mut pulse_ms = None;
        match command {
            OutputCommand::SetLevel { channel, high } => {
                let bit = 1u16 << channel;
                if high {
                    if let Some(enable) = self.config.pulse_enable
                        && pulse_enabled & bit != 0
                    {
                        pulse_enabled &= !bit;
                        batch.write(enable, PAYLOAD_U16, &pulse_enabled.to_le_bytes(), config);
                    }
                    batch.write(self.config.output_set, PAYLOAD_U16, &bit.to_le_bytes(), ack);
                } else {
                    batch.write(
                        self.config.output_clear,
                        PAYLOAD_U16,
                        &bit.to_le_bytes(),
                        ack,
                    );
                }
            }
            OutputCommand::Pulse { channel, width_us } => {
                let Some(enable) = self.config.pulse_enable else {
                    return Err(OutputError::InvalidArgument {
                        command: "pulse",
                        reason: "Harp: this device configuration has no pulse registers",
                    });
                };
                let ms = (u64::from(width_us) + 500) / 1000;
                let ms = u16::try_from(ms).ok().filter(|&ms| ms >= 1).ok_or(
                    OutputError::InvalidArgument {
                        command: "pulse",
                        reason: "Harp Behavior: pulse widths are whole ms, 1..=65535",
                    },
                )?;
                let bit = 1u16 << channel;
                if pulse_enabled & bit == 0 {
                    pulse_enabled |= bit;
                    batch.write(enable, PAYLOAD_U16, &pulse_enabled.to_le_bytes(), config);
                }
                if self.pulse_ms.get(usize::from(channel)) != Some(&ms) {
                    let register = self.config.pulse_width_first.wrapping_add(channel);
                    batch.write(register, PAYLOAD_U16, &ms.to_le_bytes(), config);
                    pulse_ms = Some((channel, ms));
                }
                batch.write(self.config.output_set, PAYLOAD_U16, &bit.to_le_bytes(), ack);
            }
            OutputCommand::PulseTrain { .. } => {
                return Err(OutputError::InvalidArgument {
                    command: "pulse train",
                    reason: "Harp Behavior: no pulse-train registers; send Pulse commands instead",
                });
            }
            OutputCommand::AllOff => {
                let all = self.all_mask();
                batch.write(
                    self.config.output_clear,
                    PAYLOAD_U16,
                    &all.to_le_bytes(),
                    ack,
                );
            }
        }
        self.commit(&batch)?;
        self.pulse_enabled = pulse_enabled;
        if let Some((channel, ms)) = pulse_ms
            && let Some(slot) = self.pulse_ms.get_mut(usize::from(channel))
        {
            *slot = ms;
        }
        Ok(self.next_seq())
    }

    /// Harp devices have no host watchdog: nothing to send.
    fn heartbeat(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    /// Reads `TIMESTAMP_SECOND`; the reply's timestamp is the device time of the read.
    fn request_sync(&mut self) -> Result<u16, OutputError> {
        let seq = self.next_seq;
        let mut batch = Batch::new();
        if let Some(n) = encode_request(
            MSG_READ,
            core_reg::TIMESTAMP_SECOND,
            PAYLOAD_U32,
            &[],
            &mut batch.buf,
        ) {
            batch.len = n;
            batch.pending[0] = Some(Pending {
                message_type: MSG_READ,
                address: core_reg::TIMESTAMP_SECOND,
                purpose: Purpose::Sync { seq },
            });
        }
        self.commit(&batch)?;
        Ok(self.next_seq())
    }

    fn poll(&mut self, sink: &mut dyn FnMut(DeviceEvent)) -> Result<(), OutputError> {
        let mut first_error: Option<OutputError> = None;
        loop {
            let mut rx = [0u8; 128];
            let n = self.transport.read_available(&mut rx)?;
            if n == 0 {
                break;
            }
            // The parser lends messages from its own buffer; copy each out (fixed size) so
            // `handle` may borrow `self` mutably.
            let mut parser = std::mem::take(&mut self.parser);
            parser.push(rx.get(..n).unwrap_or_default(), &mut |message| {
                let result = match message {
                    Ok(m) => self.handle(m, sink),
                    Err(e) => {
                        self.drop_damaged_reply(e);
                        Err(BadReply::io(io::ErrorKind::InvalidData, DEVICE, e.to_string()).into())
                    }
                };
                if let Err(e) = result {
                    first_error.get_or_insert(e);
                }
            });
            self.parser = parser;
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Clears every mapped line. Never refused for want of room: if the device stopped
    /// answering, the requests still waiting are forgotten first.
    fn all_off(&mut self) -> Result<(), OutputError> {
        if self.pending.room() == 0 {
            self.pending.clear();
        }
        let mut batch = Batch::new();
        let all = self.all_mask();
        let seq = self.next_seq;
        batch.write(
            self.config.output_clear,
            PAYLOAD_U16,
            &all.to_le_bytes(),
            Purpose::Config { seq },
        );
        self.commit(&batch)?;
        self.next_seq();
        Ok(())
    }
}
