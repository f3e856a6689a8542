//! Little-endian field writer and reader over fixed slices; never panic, never allocate.

use crate::error::{DecodeError, EncodeError};

/// Appends little-endian fields to a borrowed buffer.
pub(crate) struct Writer<'a> {
    buf: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    pub(crate) fn new(buf: &'a mut [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub(crate) fn bytes(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let end = self.pos + bytes.len();
        let available = self.buf.len();
        let dst = self
            .buf
            .get_mut(self.pos..end)
            .ok_or(EncodeError::BufferTooSmall {
                needed: end,
                available,
            })?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.bytes(&[v])
    }

    pub(crate) fn bool(&mut self, v: bool) -> Result<(), EncodeError> {
        self.u8(u8::from(v))
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result<(), EncodeError> {
        self.bytes(&v.to_le_bytes())
    }

    pub(crate) fn len(&self) -> usize {
        self.pos
    }
}

/// Reads little-endian fields from a payload whose length was already checked.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    msg_type: u8,
    expected: usize,
}

impl<'a> Reader<'a> {
    /// Checks that `payload` (type byte included) is exactly `expected` bytes long and returns a
    /// reader positioned after the type byte.
    pub(crate) fn exact(
        payload: &'a [u8],
        msg_type: u8,
        expected: usize,
    ) -> Result<Self, DecodeError> {
        if payload.len() != expected {
            return Err(DecodeError::Length {
                msg_type,
                expected,
                actual: payload.len(),
            });
        }
        Ok(Self {
            buf: payload.get(1..).unwrap_or_default(),
            msg_type,
            expected,
        })
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let Some((head, rest)) = self.buf.split_first_chunk::<N>() else {
            return Err(DecodeError::Length {
                msg_type: self.msg_type,
                expected: self.expected,
                actual: 0,
            });
        };
        self.buf = rest;
        Ok(*head)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take::<1>()?[0])
    }

    pub(crate) fn bool(&mut self, field: &'static str) -> Result<bool, DecodeError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            value => Err(DecodeError::BadField { field, value }),
        }
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.take().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.take().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.take().map(u64::from_le_bytes)
    }
}
