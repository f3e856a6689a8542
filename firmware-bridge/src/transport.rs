//! The byte pipe under the third-party bridges ([`crate::pulsepal`], [`crate::harp`],
//! [`crate::bpod`]): a serial port in production, an in-memory fake device in tests.
//!
//! The bridges only ever call [`Transport::write_all`] and [`Transport::read_available`] from
//! `send`/`poll`, so the loop never waits on the device; [`Transport::read_timeout`] is used
//! only while connecting (handshakes), before the loop starts.

use std::io;
use std::time::Duration;

/// A bidirectional byte stream to one device (USB serial, or an in-memory fake in tests).
pub trait Transport: Send {
    /// Queues all of `bytes` for the device. Serial ports buffer in the OS, so this returns as
    /// soon as the bytes are handed over; it must not wait for the device to answer.
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()>;

    /// Copies bytes already received into `buf` and returns how many (0 when none are waiting).
    /// Never blocks.
    fn read_available(&mut self, buf: &mut [u8]) -> io::Result<usize>;

    /// Like [`Transport::read_available`], but waits up to `timeout` for the first byte;
    /// returns 0 when none came. Only called while connecting, never from `send` or `poll`.
    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize>;
}

impl<T: Transport + ?Sized> Transport for Box<T> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        (**self).write_all(bytes)
    }

    fn read_available(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (**self).read_available(buf)
    }

    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        (**self).read_timeout(buf, timeout)
    }
}

/// A reply from a third-party device that breaks its published protocol (wrong handshake byte,
/// bad checksum, a reply nobody asked for). Carried inside [`crate::OutputError::Io`] with
/// [`io::ErrorKind::InvalidData`] (or [`io::ErrorKind::TimedOut`] for silence), so it reaches
/// callers through the device-independent error type; `downcast_ref::<BadReply>()` on the
/// inner error recovers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{device}: {what}")]
pub struct BadReply {
    /// Which bridge saw it ("Pulse Pal", "Harp", "Bpod").
    pub device: &'static str,
    /// What was wrong.
    pub what: String,
}

impl BadReply {
    /// An [`io::Error`] of kind `kind` carrying a `BadReply` (allocates: error paths only).
    pub(crate) fn io(
        kind: io::ErrorKind,
        device: &'static str,
        what: impl Into<String>,
    ) -> io::Error {
        io::Error::new(
            kind,
            Self {
                device,
                what: what.into(),
            },
        )
    }
}

/// Fills `buf` from `transport`, waiting at most `timeout_per_read` for each chunk; a
/// [`io::ErrorKind::TimedOut`] error names `device` and `what` was awaited. Connect-time only.
pub(crate) fn read_exact_timeout(
    transport: &mut dyn Transport,
    buf: &mut [u8],
    timeout_per_read: Duration,
    device: &'static str,
    what: &str,
) -> io::Result<()> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        let n = transport.read_timeout(rest, timeout_per_read)?;
        if n == 0 {
            return Err(BadReply::io(
                io::ErrorKind::TimedOut,
                device,
                format!(
                    "no answer within {} ms while waiting for {what} ({filled} of {} bytes came)",
                    timeout_per_read.as_millis(),
                    buf.len()
                ),
            ));
        }
        filled += n.min(rest.len());
    }
    Ok(())
}
