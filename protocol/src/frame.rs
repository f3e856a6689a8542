//! Framing: `COBS(payload ‖ CRC16 LE) ‖ 0x00`, and the streaming [`FrameDecoder`].
//!
//! The CRC is CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, not reflected, xorout 0; check value
//! 0x29B1 for `"123456789"`): two bytes keep frames short, it detects every error of up to 3 bits
//! and every burst of up to 16 bits in frames this size, and on an AVR it is avr-libc's
//! `_crc_xmodem_update` started at 0xFFFF, with no table.

use crate::error::{EncodeError, FrameError};
use crate::{CRC_LEN, MAX_FRAME_LEN, MAX_PAYLOAD_LEN, cobs};

const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_IBM_3740);

/// CRC-16/CCITT-FALSE of `bytes` (the catalog's CRC-16/IBM-3740), as carried by every frame.
pub fn crc16(bytes: &[u8]) -> u16 {
    CRC16.checksum(bytes)
}

/// Writes the complete frame for `payload` (CRC, COBS, delimiter) into `out` and returns its
/// length in bytes (at most [`MAX_FRAME_LEN`]).
pub fn encode_frame(payload: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let len = payload.len();
    if len > MAX_PAYLOAD_LEN {
        return Err(EncodeError::PayloadTooLong { len });
    }
    // Payloads this short always take exactly one COBS code byte.
    let needed = crate::frame_len(len);
    if out.len() < needed {
        return Err(EncodeError::BufferTooSmall {
            needed,
            available: out.len(),
        });
    }
    let mut raw = [0u8; MAX_PAYLOAD_LEN + CRC_LEN];
    let (body, rest) = raw.split_at_mut(len);
    body.copy_from_slice(payload);
    let (crc, _) = rest.split_at_mut(CRC_LEN);
    crc.copy_from_slice(&crc16(payload).to_le_bytes());
    let written = cobs::encode(&raw[..len + CRC_LEN], out).ok_or(EncodeError::BufferTooSmall {
        needed,
        available: out.len(),
    })?;
    let delimiter = out.get_mut(written).ok_or(EncodeError::BufferTooSmall {
        needed,
        available: written,
    })?;
    *delimiter = 0;
    Ok(written + 1)
}

/// Streaming frame accumulator with a fixed buffer: feed it received bytes one at a time; on each
/// delimiter it hands back the CRC-checked payload (CRC stripped) or why the frame was bad.
///
/// It resynchronises on every `0x00`: garbage, overlong frames and bad CRCs cost only the frame
/// they are in. Empty frames (two delimiters in a row) are skipped silently, so a sender may
/// start with a delimiter to flush a half-received frame.
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    buf: [u8; MAX_FRAME_LEN - 1],
    len: usize,
    overlong: bool,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl FrameDecoder {
    /// An empty decoder, waiting for the first byte of a frame.
    pub const fn new() -> Self {
        Self {
            buf: [0; MAX_FRAME_LEN - 1],
            len: 0,
            overlong: false,
        }
    }

    /// Drops a partly received frame (e.g. after reopening the port).
    pub fn reset(&mut self) {
        self.len = 0;
        self.overlong = false;
    }

    /// Feeds one received byte. Returns `None` until a delimiter ends a non-empty frame, then the
    /// frame's payload (CRC checked and removed; valid until the next call) or its error.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], FrameError>> {
        if byte != 0 {
            if let Some(slot) = self.buf.get_mut(self.len) {
                *slot = byte;
                self.len += 1;
            } else {
                self.overlong = true;
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overlong) {
            return Some(Err(FrameError::Overlong));
        }
        if len == 0 {
            return None;
        }
        Some(self.finish(len))
    }

    fn finish(&mut self, len: usize) -> Result<&[u8], FrameError> {
        let encoded = self.buf.get_mut(..len).ok_or(FrameError::Overlong)?;
        let decoded_len = cobs::decode_in_place(encoded).ok_or(FrameError::Cobs)?;
        if decoded_len <= CRC_LEN {
            return Err(FrameError::TooShort { len: decoded_len });
        }
        let payload_len = decoded_len - CRC_LEN;
        let decoded = self.buf.get(..decoded_len).ok_or(FrameError::Cobs)?;
        let (payload, crc) = decoded.split_at(payload_len);
        let received = match *crc {
            [lo, hi] => u16::from_le_bytes([lo, hi]),
            _ => return Err(FrameError::TooShort { len: decoded_len }),
        };
        let computed = crc16(payload);
        if computed != received {
            return Err(FrameError::BadCrc { computed, received });
        }
        Ok(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed<'a>(dec: &'a mut FrameDecoder, bytes: &[u8]) -> Option<Result<&'a [u8], FrameError>> {
        let (last, init) = bytes.split_last().unwrap();
        for &b in init {
            assert!(dec.push(b).is_none());
        }
        dec.push(*last)
    }

    #[test]
    fn crc_check_value() {
        assert_eq!(crc16(b"123456789"), 0x29B1);
    }

    #[test]
    fn frame_round_trip() {
        let mut out = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(&[1, 0, 2, 0, 0], &mut out).unwrap();
        assert_eq!(out[n - 1], 0);
        let mut dec = FrameDecoder::new();
        assert_eq!(feed(&mut dec, &out[..n]), Some(Ok(&[1u8, 0, 2, 0, 0][..])));
    }

    #[test]
    fn max_payload_fits_max_frame() {
        let payload = [0xAAu8; MAX_PAYLOAD_LEN];
        let mut out = [0u8; MAX_FRAME_LEN];
        assert_eq!(encode_frame(&payload, &mut out), Ok(MAX_FRAME_LEN));
        let mut dec = FrameDecoder::new();
        assert_eq!(feed(&mut dec, &out), Some(Ok(&payload[..])));
        assert_eq!(
            encode_frame(&[0u8; MAX_PAYLOAD_LEN + 1], &mut out),
            Err(EncodeError::PayloadTooLong {
                len: MAX_PAYLOAD_LEN + 1
            })
        );
        assert!(matches!(
            encode_frame(&[1, 2, 3], &mut out[..6]),
            Err(EncodeError::BufferTooSmall { needed: 7, .. })
        ));
    }

    #[test]
    fn bad_crc_then_resync() {
        let mut out = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(&[7, 8, 9], &mut out).unwrap();
        let mut bad = out;
        bad[2] ^= 0x40;
        let mut dec = FrameDecoder::new();
        assert!(matches!(
            feed(&mut dec, &bad[..n]),
            Some(Err(FrameError::BadCrc { .. }))
        ));
        assert_eq!(feed(&mut dec, &out[..n]), Some(Ok(&[7u8, 8, 9][..])));
    }

    #[test]
    fn overlong_then_resync() {
        let mut dec = FrameDecoder::new();
        for _ in 0..200 {
            assert!(dec.push(0x55).is_none());
        }
        assert_eq!(dec.push(0), Some(Err(FrameError::Overlong)));
        assert_eq!(dec.push(0), None);
        let mut out = [0u8; MAX_FRAME_LEN];
        let n = encode_frame(&[3], &mut out).unwrap();
        assert_eq!(feed(&mut dec, &out[..n]), Some(Ok(&[3u8][..])));
    }

    #[test]
    fn short_frames_are_errors() {
        let mut dec = FrameDecoder::new();
        assert_eq!(
            feed(&mut dec, &[0x03, 0x11, 0x22, 0x00]),
            Some(Err(FrameError::TooShort { len: 2 }))
        );
        assert_eq!(
            feed(&mut dec, &[0x09, 0x11, 0x00]),
            Some(Err(FrameError::Cobs))
        );
    }
}
