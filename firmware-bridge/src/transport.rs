//! The byte pipe under the third-party bridges ([`crate::pulsepal`], [`crate::harp`],
//! [`crate::bpod`]): a serial port in production, an in-memory fake device in tests.
//!
//! The bridges only ever call [`Transport::write_all`] and [`Transport::read_available`] from
//! `send`/`poll`, so the loop never waits on the device; [`Transport::read_timeout`] is used
//! only while connecting (handshakes), before the loop starts.

use std::io::{self, Read, Write};
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

/// A serial port (USB CDC or UART) as a [`Transport`], for the third-party bridges. Errors name
/// the port; after one, the port is considered lost and every later call says so.
pub struct SerialTransport {
    port: Box<dyn serialport::SerialPort>,
    name: String,
    write_timeout: Duration,
    failed: Option<io::ErrorKind>,
}

impl std::fmt::Debug for SerialTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialTransport")
            .field("name", &self.name)
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl SerialTransport {
    /// Opens `port` at `baud_rate` (8N1). Writes give up after `write_timeout`.
    pub fn open(
        port: &str,
        baud_rate: u32,
        write_timeout: Duration,
    ) -> Result<Self, crate::SerialError> {
        let serial = serialport::new(port, baud_rate)
            .timeout(Duration::ZERO)
            .open()
            .map_err(|source| crate::SerialError::Open {
                port: port.to_owned(),
                source,
            })?;
        Ok(Self {
            port: serial,
            name: port.to_owned(),
            write_timeout,
            failed: None,
        })
    }

    /// The port's path, as given to [`SerialTransport::open`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the port has failed (the device is gone); every call then reports it.
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Drops whatever the device sent that was not read yet (bootloader chatter, replies to a
    /// previous session). Best effort: connect time only.
    pub fn clear_input(&mut self) {
        let _ = self.port.clear(serialport::ClearBuffer::Input);
    }

    fn check(&self) -> io::Result<()> {
        match self.failed {
            None => Ok(()),
            Some(kind) => Err(io::Error::new(
                kind,
                format!(
                    "serial port {} failed earlier; reopen the device",
                    self.name
                ),
            )),
        }
    }

    /// Records that the port failed and returns the error, naming the port (allocates once,
    /// when the device is lost).
    fn fail(&mut self, e: io::Error) -> io::Error {
        self.failed = Some(e.kind());
        io::Error::new(
            e.kind(),
            format!(
                "serial port {} failed (device disconnected?): {e}",
                self.name
            ),
        )
    }

    fn set_timeout(&mut self, timeout: Duration) -> io::Result<()> {
        if self.port.timeout() != timeout {
            let r = self.port.set_timeout(timeout);
            r.map_err(|e| self.fail(e.into()))?;
        }
        Ok(())
    }

    fn read_with(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.check()?;
        self.set_timeout(timeout)?;
        loop {
            return match self.port.read(buf) {
                Ok(0) if !buf.is_empty() => Err(self.fail(io::ErrorKind::UnexpectedEof.into())),
                Ok(n) => Ok(n),
                Err(e) if e.kind() == io::ErrorKind::TimedOut => Ok(0),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => Err(self.fail(e)),
            };
        }
    }
}

impl Transport for SerialTransport {
    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        self.check()?;
        self.set_timeout(self.write_timeout)?;
        while !bytes.is_empty() {
            match self.port.write(bytes) {
                Ok(0) => return Err(self.fail(io::ErrorKind::WriteZero.into())),
                Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(self.fail(e)),
            }
        }
        Ok(())
    }

    fn read_available(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(buf, Duration::ZERO)
    }

    fn read_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> io::Result<usize> {
        self.read_with(buf, timeout)
    }
}
