//! Messages the device sends to the host. Layout: `type u8, seq u16`, then the reply's fields,
//! all little-endian (see `SPEC.md`). Device times are µs on the device's free-running clock.

use core::fmt;

use crate::error::{DecodeError, EncodeError};
use crate::wire::{Reader, Writer};
use crate::{MAX_PAYLOAD_LEN, frame};

/// Length in bytes of the header every device message starts with (type, seq).
pub const HEADER_LEN: usize = 3;

/// One message from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// The `seq` of the host command this answers, or the device's own wrapping counter for
    /// unsolicited messages (`InputEdge`, watchdog and framing errors).
    pub seq: u16,
    /// What the device reports.
    pub reply: Reply,
}

/// What the device reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Handshake answer: who the device is and which protocol version it speaks.
    Hello {
        /// Protocol version the device speaks.
        protocol_version: u16,
        /// Device serial number / id.
        device_id: u32,
        /// Firmware version.
        firmware_version: u16,
        /// Number of output channels (0..channels are valid).
        channels: u8,
    },
    /// An output command was carried out.
    Ack {
        /// The command's `tag` (camera frame id).
        tag: u32,
        /// Device time in µs at which the output actually changed.
        device_time_us: u64,
    },
    /// Answer to `SyncRequest`.
    SyncReply {
        /// Device time in µs at which the request was received.
        device_time_us: u64,
    },
    /// Answer to `QueryStatus`.
    Status {
        /// Channel levels, bit n = channel n high.
        levels: u32,
        /// Device time in µs the levels were sampled.
        device_time_us: u64,
    },
    /// An input channel changed level (unsolicited).
    InputEdge {
        /// Input channel.
        channel: u8,
        /// New level, `true` for high.
        high: bool,
        /// Device time of the edge in µs.
        device_time_us: u64,
    },
    /// A command was refused, a frame was bad, or the watchdog fired.
    Error {
        /// What went wrong.
        code: ErrorCode,
    },
}

/// Why the device refused something; the byte values are part of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ErrorCode {
    /// A frame failed its CRC check (outputs were turned off).
    BadCrc = 1,
    /// A frame was malformed: bad COBS, overlong, or a wrong length (outputs were turned off).
    BadFrame = 2,
    /// A message type the device does not know (outputs were turned off).
    UnknownCommand = 3,
    /// An argument is out of range (channel, zero width, width ≥ period, zero count).
    BadArgument = 4,
    /// No `Hello` with the device's protocol version has been received.
    VersionMismatch = 5,
    /// No valid frame arrived within the watchdog time; outputs were turned off.
    WatchdogExpired = 6,
}

impl ErrorCode {
    /// The code for wire byte `value`, if known.
    pub const fn from_u8(value: u8) -> Option<Self> {
        match value {
            1 => Some(Self::BadCrc),
            2 => Some(Self::BadFrame),
            3 => Some(Self::UnknownCommand),
            4 => Some(Self::BadArgument),
            5 => Some(Self::VersionMismatch),
            6 => Some(Self::WatchdogExpired),
            _ => None,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::BadCrc => "frame failed its CRC check",
            Self::BadFrame => "malformed frame",
            Self::UnknownCommand => "unknown command",
            Self::BadArgument => "argument out of range",
            Self::VersionMismatch => "protocol version mismatch (no matching Hello)",
            Self::WatchdogExpired => "watchdog expired, outputs turned off",
        })
    }
}

/// Message-type bytes of the device-to-host direction (0x80..=0xFF).
pub mod msg_type {
    /// [`super::Reply::Hello`].
    pub const HELLO: u8 = 0x81;
    /// [`super::Reply::Ack`].
    pub const ACK: u8 = 0x82;
    /// [`super::Reply::SyncReply`].
    pub const SYNC_REPLY: u8 = 0x83;
    /// [`super::Reply::Status`].
    pub const STATUS: u8 = 0x84;
    /// [`super::Reply::InputEdge`].
    pub const INPUT_EDGE: u8 = 0x85;
    /// [`super::Reply::Error`].
    pub const ERROR: u8 = 0x86;
}

impl Reply {
    /// The message-type byte this reply is sent with.
    pub const fn msg_type(&self) -> u8 {
        match self {
            Self::Hello { .. } => msg_type::HELLO,
            Self::Ack { .. } => msg_type::ACK,
            Self::SyncReply { .. } => msg_type::SYNC_REPLY,
            Self::Status { .. } => msg_type::STATUS,
            Self::InputEdge { .. } => msg_type::INPUT_EDGE,
            Self::Error { .. } => msg_type::ERROR,
        }
    }
}

/// Payload length in bytes of a message of type `msg_type`, header included; `None` when unknown.
pub const fn payload_len(msg_type: u8) -> Option<usize> {
    match msg_type {
        msg_type::HELLO => Some(HEADER_LEN + 9),
        msg_type::ACK | msg_type::STATUS => Some(HEADER_LEN + 12),
        msg_type::SYNC_REPLY => Some(HEADER_LEN + 8),
        msg_type::INPUT_EDGE => Some(HEADER_LEN + 10),
        msg_type::ERROR => Some(HEADER_LEN + 1),
        _ => None,
    }
}

impl Message {
    /// Writes the payload (no CRC, no COBS) into `out` and returns its length in bytes.
    pub fn encode_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(out);
        w.u8(self.reply.msg_type())?;
        w.u16(self.seq)?;
        match self.reply {
            Reply::Hello {
                protocol_version,
                device_id,
                firmware_version,
                channels,
            } => {
                w.u16(protocol_version)?;
                w.u32(device_id)?;
                w.u16(firmware_version)?;
                w.u8(channels)?;
            }
            Reply::Ack {
                tag,
                device_time_us,
            } => {
                w.u32(tag)?;
                w.u64(device_time_us)?;
            }
            Reply::SyncReply { device_time_us } => w.u64(device_time_us)?,
            Reply::Status {
                levels,
                device_time_us,
            } => {
                w.u32(levels)?;
                w.u64(device_time_us)?;
            }
            Reply::InputEdge {
                channel,
                high,
                device_time_us,
            } => {
                w.u8(channel)?;
                w.bool(high)?;
                w.u64(device_time_us)?;
            }
            Reply::Error { code } => w.u8(code as u8)?,
        }
        Ok(w.len())
    }

    /// Writes the complete frame (payload, CRC, COBS, `0x00` delimiter) into `out` and returns
    /// its length in bytes; `out` of [`crate::MAX_FRAME_LEN`] bytes always suffices.
    pub fn encode_frame(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut payload = [0u8; MAX_PAYLOAD_LEN];
        let len = self.encode_payload(&mut payload)?;
        frame::encode_frame(payload.get(..len).unwrap_or_default(), out)
    }

    /// Decodes a payload as returned by [`crate::FrameDecoder::push`] (CRC already checked and
    /// removed there). Unknown types, wrong lengths and out-of-range fields are errors.
    pub fn decode(payload: &[u8]) -> Result<Self, DecodeError> {
        let &msg_type = payload.first().ok_or(DecodeError::Empty)?;
        let expected = payload_len(msg_type).ok_or(DecodeError::UnknownType { msg_type })?;
        let mut r = Reader::exact(payload, msg_type, expected)?;
        let seq = r.u16()?;
        let reply = match msg_type {
            msg_type::HELLO => Reply::Hello {
                protocol_version: r.u16()?,
                device_id: r.u32()?,
                firmware_version: r.u16()?,
                channels: r.u8()?,
            },
            msg_type::ACK => Reply::Ack {
                tag: r.u32()?,
                device_time_us: r.u64()?,
            },
            msg_type::SYNC_REPLY => Reply::SyncReply {
                device_time_us: r.u64()?,
            },
            msg_type::STATUS => Reply::Status {
                levels: r.u32()?,
                device_time_us: r.u64()?,
            },
            msg_type::INPUT_EDGE => Reply::InputEdge {
                channel: r.u8()?,
                high: r.bool("high")?,
                device_time_us: r.u64()?,
            },
            msg_type::ERROR => {
                let value = r.u8()?;
                let code = ErrorCode::from_u8(value).ok_or(DecodeError::BadField {
                    field: "code",
                    value,
                })?;
                Reply::Error { code }
            }
            _ => return Err(DecodeError::UnknownType { msg_type }),
        };
        Ok(Self { seq, reply })
    }
}
