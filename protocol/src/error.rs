//! Error types of the codec; `Display` and `core::error::Error` are written by hand (no_std).

use core::fmt;

/// Why a frame could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EncodeError {
    /// The output buffer is shorter than the frame.
    BufferTooSmall {
        /// Bytes the frame needs.
        needed: usize,
        /// Bytes the buffer has.
        available: usize,
    },
    /// The payload is longer than [`crate::MAX_PAYLOAD_LEN`].
    PayloadTooLong {
        /// Payload length in bytes.
        len: usize,
    },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::BufferTooSmall { needed, available } => write!(
                f,
                "output buffer too small: the frame needs {needed} bytes, the buffer has {available}"
            ),
            Self::PayloadTooLong { len } => write!(
                f,
                "payload of {len} bytes is longer than the maximum of {} bytes",
                crate::MAX_PAYLOAD_LEN
            ),
        }
    }
}

impl core::error::Error for EncodeError {}

/// Why the bytes between two delimiters are not a valid frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// More than `MAX_FRAME_LEN - 1` bytes arrived before a delimiter; they were discarded.
    Overlong,
    /// The bytes are not valid COBS (a code byte points past the end of the frame).
    Cobs,
    /// The decoded frame is too short to hold one payload byte and the CRC.
    TooShort {
        /// Decoded length in bytes (payload and CRC).
        len: usize,
    },
    /// The CRC does not match the payload.
    BadCrc {
        /// CRC computed over the received payload.
        computed: u16,
        /// CRC carried by the frame.
        received: u16,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Overlong => write!(
                f,
                "frame longer than {} bytes before a delimiter; discarded",
                crate::MAX_FRAME_LEN
            ),
            Self::Cobs => write!(f, "malformed COBS encoding"),
            Self::TooShort { len } => write!(
                f,
                "frame of {len} decoded bytes is too short for a message byte and a 2-byte CRC"
            ),
            Self::BadCrc { computed, received } => write!(
                f,
                "CRC mismatch: frame carries {received:#06x}, payload gives {computed:#06x}"
            ),
        }
    }
}

impl core::error::Error for FrameError {}

/// Why a payload is not a valid message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// The payload is empty, so it has no message-type byte.
    Empty,
    /// The message-type byte is not one this direction knows.
    UnknownType {
        /// The type byte received.
        msg_type: u8,
    },
    /// The payload length does not match the fixed layout of its message type.
    Length {
        /// The type byte received.
        msg_type: u8,
        /// Length in bytes that type has.
        expected: usize,
        /// Length in bytes received.
        actual: usize,
    },
    /// A field holds a value outside its range (a bool other than 0/1, an unknown error code).
    BadField {
        /// Name of the field.
        field: &'static str,
        /// The byte received.
        value: u8,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Empty => write!(f, "empty payload: no message-type byte"),
            Self::UnknownType { msg_type } => write!(f, "unknown message type {msg_type:#04x}"),
            Self::Length {
                msg_type,
                expected,
                actual,
            } => write!(
                f,
                "message type {msg_type:#04x} is {expected} bytes long, received {actual}"
            ),
            Self::BadField { field, value } => {
                write!(f, "field `{field}` has invalid value {value:#04x}")
            }
        }
    }
}

impl core::error::Error for DecodeError {}
