//! Consistent Overhead Byte Stuffing: rewrites bytes so they contain no `0x00`, which is then free
//! to delimit frames. Written here (a few lines) so the C firmware can mirror it line by line.

/// Worst-case COBS-encoded length in bytes of `len` input bytes (delimiter not included).
pub const fn max_encoded_len(len: usize) -> usize {
    len + len / 254 + 1
}

/// Encodes `input` into `out` and returns the number of bytes written, or `None` when `out` is
/// too short (see [`max_encoded_len`]). The output contains no zero byte.
pub fn encode(input: &[u8], out: &mut [u8]) -> Option<usize> {
    let mut code_idx = 0;
    let mut write = 1;
    let mut code: u8 = 1;
    for &byte in input {
        if byte != 0 {
            *out.get_mut(write)? = byte;
            write += 1;
            code += 1;
        }
        if byte == 0 || code == 0xFF {
            *out.get_mut(code_idx)? = code;
            code = 1;
            code_idx = write;
            write += 1;
        }
    }
    *out.get_mut(code_idx)? = code;
    Some(write)
}

/// Decodes COBS bytes (without the delimiter) in place and returns the decoded length, or `None`
/// when the bytes are not valid COBS. The decoded bytes are `buf[..len]`.
pub fn decode_in_place(buf: &mut [u8]) -> Option<usize> {
    let len = buf.len();
    let mut read = 0;
    let mut write = 0;
    while read < len {
        let code = usize::from(*buf.get(read)?);
        if code == 0 {
            return None;
        }
        read += 1;
        let end = read + code - 1;
        if end > len {
            return None;
        }
        buf.copy_within(read..end, write);
        write += code - 1;
        read = end;
        // A block shorter than 254 data bytes stands for its data followed by a zero, except
        // the last one: the zero there is the frame's end.
        if code != 0xFF && read < len {
            *buf.get_mut(write)? = 0;
            write += 1;
        }
    }
    Some(write)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(input: &[u8]) {
        let mut enc = [0u8; 600];
        let n = encode(input, &mut enc).unwrap();
        assert!(n <= max_encoded_len(input.len()));
        assert!(!enc[..n].contains(&0));
        let d = decode_in_place(&mut enc[..n]).unwrap();
        assert_eq!(&enc[..d], input);
    }

    #[test]
    fn known_vectors() {
        let mut out = [0u8; 16];
        assert_eq!(encode(&[0x00], &mut out), Some(2));
        assert_eq!(&out[..2], &[0x01, 0x01]);
        assert_eq!(encode(&[0x11, 0x22, 0x00, 0x33], &mut out), Some(5));
        assert_eq!(&out[..5], &[0x03, 0x11, 0x22, 0x02, 0x33]);
        assert_eq!(encode(&[], &mut out), Some(1));
        assert_eq!(out[0], 0x01);
    }

    #[test]
    fn long_runs_round_trip() {
        let ones = [1u8; 520];
        round_trip(&ones[..253]);
        round_trip(&ones[..254]);
        round_trip(&ones[..255]);
        round_trip(&ones);
        round_trip(&[0u8; 300]);
    }

    #[test]
    fn short_output_is_refused() {
        let mut out = [0u8; 3];
        assert_eq!(encode(&[1, 2, 3], &mut out), None);
    }

    #[test]
    fn code_past_end_is_refused() {
        assert_eq!(decode_in_place(&mut [0x05, 0x01]), None);
        assert_eq!(decode_in_place(&mut [0x01, 0x00]), None);
    }
}
