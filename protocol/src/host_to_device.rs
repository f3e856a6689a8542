//! Messages the host sends to the device. Layout: `type u8, seq u16, tag u32`, then the
//! command's fields, all little-endian (see `SPEC.md`).

use crate::error::{DecodeError, EncodeError};
use crate::wire::{Reader, Writer};
use crate::{MAX_PAYLOAD_LEN, frame};

/// Length in bytes of the header every host message starts with (type, seq, tag).
pub const HEADER_LEN: usize = 7;

/// One command from the host, with the sequence number its reply will carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message {
    /// Host sequence number (wrapping); the device's reply carries the same value.
    pub seq: u16,
    /// Id of the camera frame that caused the command (0 when none); echoed in the `Ack`.
    pub tag: u32,
    /// What the device should do.
    pub command: Command,
}

/// What the host asks of the device; channels count from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Handshake: the host's protocol version; answered by `Reply::Hello`.
    Hello {
        /// Protocol version the host speaks ([`crate::PROTOCOL_VERSION`]).
        protocol_version: u16,
    },
    /// Feeds the device's watchdog; no reply.
    Heartbeat,
    /// Drives a channel high or low until told otherwise; answered by `Ack`.
    SetLevel {
        /// Output channel.
        channel: u8,
        /// `true` for high.
        high: bool,
    },
    /// One pulse of `width_us` µs (high, then low); answered by `Ack` at the rising edge.
    Pulse {
        /// Output channel.
        channel: u8,
        /// Pulse width in µs (> 0).
        width_us: u32,
    },
    /// `count` pulses of `width_us` µs starting every `period_us` µs; answered by `Ack` at the
    /// first rising edge.
    PulseTrain {
        /// Output channel.
        channel: u8,
        /// Time from one rising edge to the next in µs (> `width_us`).
        period_us: u32,
        /// Pulse width in µs (> 0).
        width_us: u32,
        /// Number of pulses (> 0).
        count: u32,
    },
    /// Drives every channel low and cancels pulses; answered by `Ack`.
    AllOff,
    /// Asks for the channel levels; answered by `Reply::Status`.
    QueryStatus,
    /// Asks for the device clock; answered by `Reply::SyncReply`.
    SyncRequest,
}

/// Message-type bytes of the host-to-device direction (0x01..=0x7F; replies use 0x80..).
pub mod msg_type {
    /// [`super::Command::Hello`].
    pub const HELLO: u8 = 0x01;
    /// [`super::Command::Heartbeat`].
    pub const HEARTBEAT: u8 = 0x02;
    /// [`super::Command::SetLevel`].
    pub const SET_LEVEL: u8 = 0x03;
    /// [`super::Command::Pulse`].
    pub const PULSE: u8 = 0x04;
    /// [`super::Command::PulseTrain`].
    pub const PULSE_TRAIN: u8 = 0x05;
    /// [`super::Command::AllOff`].
    pub const ALL_OFF: u8 = 0x06;
    /// [`super::Command::QueryStatus`].
    pub const QUERY_STATUS: u8 = 0x07;
    /// [`super::Command::SyncRequest`].
    pub const SYNC_REQUEST: u8 = 0x08;
}

impl Command {
    /// The message-type byte this command is sent with.
    pub const fn msg_type(&self) -> u8 {
        match self {
            Self::Hello { .. } => msg_type::HELLO,
            Self::Heartbeat => msg_type::HEARTBEAT,
            Self::SetLevel { .. } => msg_type::SET_LEVEL,
            Self::Pulse { .. } => msg_type::PULSE,
            Self::PulseTrain { .. } => msg_type::PULSE_TRAIN,
            Self::AllOff => msg_type::ALL_OFF,
            Self::QueryStatus => msg_type::QUERY_STATUS,
            Self::SyncRequest => msg_type::SYNC_REQUEST,
        }
    }

    /// Whether the command changes outputs (and is answered by an `Ack`).
    pub const fn is_output(&self) -> bool {
        matches!(
            self,
            Self::SetLevel { .. } | Self::Pulse { .. } | Self::PulseTrain { .. } | Self::AllOff
        )
    }
}

/// Payload length in bytes of a message of type `msg_type`, header included; `None` when unknown.
pub const fn payload_len(msg_type: u8) -> Option<usize> {
    match msg_type {
        msg_type::HELLO | msg_type::SET_LEVEL => Some(HEADER_LEN + 2),
        msg_type::PULSE => Some(HEADER_LEN + 5),
        msg_type::PULSE_TRAIN => Some(HEADER_LEN + 13),
        msg_type::HEARTBEAT
        | msg_type::ALL_OFF
        | msg_type::QUERY_STATUS
        | msg_type::SYNC_REQUEST => Some(HEADER_LEN),
        _ => None,
    }
}

impl Message {
    /// Writes the payload (no CRC, no COBS) into `out` and returns its length in bytes.
    pub fn encode_payload(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let mut w = Writer::new(out);
        w.u8(self.command.msg_type())?;
        w.u16(self.seq)?;
        w.u32(self.tag)?;
        match self.command {
            Command::Hello { protocol_version } => w.u16(protocol_version)?,
            Command::SetLevel { channel, high } => {
                w.u8(channel)?;
                w.bool(high)?;
            }
            Command::Pulse { channel, width_us } => {
                w.u8(channel)?;
                w.u32(width_us)?;
            }
            Command::PulseTrain {
                channel,
                period_us,
                width_us,
                count,
            } => {
                w.u8(channel)?;
                w.u32(period_us)?;
                w.u32(width_us)?;
                w.u32(count)?;
            }
            Command::Heartbeat | Command::AllOff | Command::QueryStatus | Command::SyncRequest => {}
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
        let tag = r.u32()?;
        let command = match msg_type {
            msg_type::HELLO => Command::Hello {
                protocol_version: r.u16()?,
            },
            msg_type::HEARTBEAT => Command::Heartbeat,
            msg_type::SET_LEVEL => Command::SetLevel {
                channel: r.u8()?,
                high: r.bool("high")?,
            },
            msg_type::PULSE => Command::Pulse {
                channel: r.u8()?,
                width_us: r.u32()?,
            },
            msg_type::PULSE_TRAIN => Command::PulseTrain {
                channel: r.u8()?,
                period_us: r.u32()?,
                width_us: r.u32()?,
                count: r.u32()?,
            },
            msg_type::ALL_OFF => Command::AllOff,
            msg_type::QUERY_STATUS => Command::QueryStatus,
            msg_type::SYNC_REQUEST => Command::SyncRequest,
            _ => return Err(DecodeError::UnknownType { msg_type }),
        };
        Ok(Self { seq, tag, command })
    }
}
