//! Wire format between the reflex host and its output devices (see `SPEC.md` beside this crate).
//!
//! A frame is `COBS(payload ‖ CRC-16/CCITT-FALSE little-endian) ‖ 0x00`; a payload is one
//! message: a type byte, then fixed little-endian fields. The crate is `no_std` and never
//! allocates, so the same logic can be mirrored in C firmware for an ATmega328P.
#![no_std]

pub mod cobs;
pub mod device_to_host;
mod error;
pub mod frame;
pub mod host_to_device;
mod wire;

pub use error::{DecodeError, EncodeError, FrameError};
pub use frame::{FrameDecoder, crc16, encode_frame};

/// Version of this wire format, exchanged in the `Hello` handshake; the device refuses every
/// other command until it has received a `Hello` carrying exactly this version.
pub const PROTOCOL_VERSION: u16 = 1;

/// Longest encoded frame in bytes, COBS overhead and the `0x00` delimiter included; small enough
/// for an AVR to buffer a whole frame.
pub const MAX_FRAME_LEN: usize = 64;

/// Longest payload (message bytes, before CRC and COBS) that fits in [`MAX_FRAME_LEN`]: the
/// frame adds 2 CRC bytes, 1 COBS code byte (payloads this short never need a second one) and
/// the delimiter.
pub const MAX_PAYLOAD_LEN: usize = MAX_FRAME_LEN - 4;

/// Length in bytes of the CRC appended to every payload.
pub const CRC_LEN: usize = 2;

/// Length on the wire of the frame carrying a payload of `payload_len` bytes (at most
/// [`MAX_PAYLOAD_LEN`]): CRC, one COBS code byte and the delimiter added. Every message has a fixed
/// payload length (`host_to_device::payload_len`, `device_to_host::payload_len`), so this is how
/// long each takes on a serial line: the host uses it to correct clock sync for the request and
/// the reply taking different times (SPEC §5).
pub const fn frame_len(payload_len: usize) -> usize {
    payload_len + CRC_LEN + 2
}
