//! [`SerialDevice`]: the driver for the reflex firmware (`firmware/`, an ATmega328P) over a
//! serial port, speaking `reflex-protocol` frames.
//!
//! Opening the port performs the `Hello` handshake (repeated until the board answers, since
//! opening an Arduino's port resets it into its bootloader for ~1.5 s). After that, `send`,
//! `heartbeat`, `request_sync` and `poll` never block on the device: frames are written into the
//! kernel's buffer and replies are read without waiting, with fixed buffers, so they allocate
//! nothing. A vanished port (USB unplugged, simulator gone) turns every later call into an
//! [`OutputError::Io`] that names the port, so the loop can stop cleanly.

use std::time::{Duration, Instant};

use reflex_protocol::device_to_host::{self, Reply};
use reflex_protocol::host_to_device::{self, Command};
use reflex_protocol::{FrameDecoder, MAX_FRAME_LEN, PROTOCOL_VERSION};

use crate::transport::{SerialTransport, Transport};
use crate::{DeviceEvent, DeviceInfo, Output, OutputCommand, OutputError, SyncTiming};

/// Baud rate of the reflex firmware: 500 000 baud is exact at 16 MHz (UBRR 3 with U2X) and
/// supported by the Uno's 16U2 and the Nano's CH340/FT232 USB bridges.
pub const DEFAULT_BAUD_RATE: u32 = 500_000;

/// Bytes read from the port per `read` call in [`Output::poll`].
const READ_CHUNK_LEN: usize = 256;

/// How to open a [`SerialDevice`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SerialConfig {
    /// Line speed in baud (the firmware's is [`DEFAULT_BAUD_RATE`]).
    pub baud_rate: u32,
    /// Give up the handshake after this many ms without a `Hello` reply. The default, 3000 ms,
    /// covers an Arduino's bootloader, which runs for ~1.5 s after opening the port resets it.
    pub handshake_timeout_ms: u64,
    /// Interval in ms between repeated `Hello`s during the handshake.
    pub hello_interval_ms: u64,
    /// A write waits at most this many ms for room in the kernel's buffer; longer means the
    /// device stopped reading, reported as an error.
    pub write_timeout_ms: u64,
}

impl Default for SerialConfig {
    fn default() -> Self {
        Self {
            baud_rate: DEFAULT_BAUD_RATE,
            handshake_timeout_ms: 3000,
            hello_interval_ms: 250,
            write_timeout_ms: 50,
        }
    }
}

/// Why a [`SerialDevice`] could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SerialError {
    /// The port could not be opened or configured.
    #[error("cannot open serial port {port}")]
    Open {
        /// The port's path.
        port: String,
        /// What the OS said.
        #[source]
        source: serialport::Error,
    },
    /// The device never answered the handshake.
    #[error(
        "no handshake reply from {port} within {timeout_ms} ms at {baud_rate} baud: is it a \
         board running the reflex firmware (firmware-bridge/firmware)?"
    )]
    HandshakeTimeout {
        /// The port's path.
        port: String,
        /// How long the driver waited, in ms.
        timeout_ms: u64,
        /// The line speed tried.
        baud_rate: u32,
    },
    /// The handshake failed (I/O error, protocol version mismatch).
    #[error("handshake with the device on {port}")]
    Handshake {
        /// The port's path.
        port: String,
        /// What went wrong.
        #[source]
        source: OutputError,
    },
}

/// A serial port the OS knows, as listed by [`available_ports`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortDescription {
    /// Path to open (e.g. `/dev/ttyACM0`).
    pub name: String,
    /// USB identity when the port is a USB serial bridge.
    pub usb: Option<UsbDescription>,
}

/// USB identity of a serial port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsbDescription {
    /// USB vendor id.
    pub vid: u16,
    /// USB product id.
    pub pid: u16,
    /// The device's USB serial number, if it has one.
    pub serial_number: Option<String>,
    /// Manufacturer string, if any.
    pub manufacturer: Option<String>,
    /// Product string, if any.
    pub product: Option<String>,
}

/// Lists the machine's serial ports, with USB vendor/product/serial where known (on Linux read
/// from sysfs, so no libudev is needed).
pub fn available_ports() -> Result<Vec<PortDescription>, serialport::Error> {
    Ok(serialport::available_ports()?
        .into_iter()
        .map(|port| PortDescription {
            name: port.port_name,
            usb: match port.port_type {
                serialport::SerialPortType::UsbPort(usb) => Some(UsbDescription {
                    vid: usb.vid,
                    pid: usb.pid,
                    serial_number: usb.serial_number,
                    manufacturer: usb.manufacturer,
                    product: usb.product,
                }),
                _ => None,
            },
        })
        .collect())
}

/// The reflex firmware on a serial port, as an [`Output`].
pub struct SerialDevice {
    /// The port; it remembers a failure, and names itself in errors.
    port: SerialTransport,
    info: DeviceInfo,
    decoder: FrameDecoder,
    tx: [u8; MAX_FRAME_LEN],
    rx: [u8; READ_CHUNK_LEN],
    next_seq: u16,
    /// Wire times of a sync exchange at the port's baud rate.
    sync_timing: SyncTiming,
}

impl std::fmt::Debug for SerialDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SerialDevice")
            .field("port", &self.port)
            .field("info", &self.info)
            .field("next_seq", &self.next_seq)
            .finish_non_exhaustive()
    }
}

impl SerialDevice {
    /// Opens `port` and performs the `Hello` handshake; every buffer is allocated here.
    pub fn open(port: &str, config: &SerialConfig) -> Result<Self, SerialError> {
        let mut device = Self {
            port: SerialTransport::open(
                port,
                config.baud_rate,
                Duration::from_millis(config.write_timeout_ms),
            )?,
            info: DeviceInfo {
                name: "reflex firmware".to_owned(),
                device_id: 0,
                firmware_version: 0,
                protocol_version: 0,
                channels: 0,
            },
            decoder: FrameDecoder::new(),
            tx: [0; MAX_FRAME_LEN],
            rx: [0; READ_CHUNK_LEN],
            next_seq: 0,
            sync_timing: SyncTiming::serial(config.baud_rate),
        };
        device.handshake(config)?;
        Ok(device)
    }

    /// The port's path, as given to [`SerialDevice::open`].
    pub fn port_name(&self) -> &str {
        self.port.name()
    }

    /// Writes raw bytes to the device, bypassing framing: for fault-injection tests (corrupt
    /// frames, garbage) and tools. Not for normal use.
    pub fn write_raw(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        self.write_all(bytes)
    }

    #[allow(clippy::disallowed_methods)] // reason: the handshake's timeout is measured once, at open, off the loop
    fn handshake(&mut self, config: &SerialConfig) -> Result<(), SerialError> {
        let port = self.port.name().to_owned();
        let fail = |source| SerialError::Handshake {
            port: port.clone(),
            source,
        };
        let start = Instant::now();
        let timeout = Duration::from_millis(config.handshake_timeout_ms);
        let interval = Duration::from_millis(config.hello_interval_ms.max(1));
        // Drop whatever the device sent before we were listening (bootloader chatter, errors
        // from a previous session).
        self.port.clear_input();
        let mut next_hello = start;
        let mut hello_seq = None;
        let mut first_error = None;
        loop {
            let now = Instant::now();
            if now >= next_hello {
                // A leading delimiter flushes any half frame the device holds.
                self.write_all(&[0]).map_err(fail)?;
                hello_seq = Some(
                    self.transmit(
                        Command::Hello {
                            protocol_version: PROTOCOL_VERSION,
                        },
                        0,
                    )
                    .map_err(fail)?,
                );
                next_hello = now + interval;
            }
            let mut hello = None;
            self.read_available(&mut |message| match message {
                Ok(device_to_host::Message {
                    seq,
                    reply:
                        Reply::Hello {
                            protocol_version,
                            device_id,
                            firmware_version,
                            channels,
                        },
                }) if Some(seq) == hello_seq => {
                    hello = Some((protocol_version, device_id, firmware_version, channels));
                }
                Ok(_) => {}
                Err(e) => first_error = first_error.take().or(Some(e)),
            })
            .map_err(fail)?;
            if let Some((protocol_version, device_id, firmware_version, channels)) = hello {
                if protocol_version != PROTOCOL_VERSION {
                    return Err(fail(OutputError::VersionMismatch {
                        host: PROTOCOL_VERSION,
                        device: protocol_version,
                    }));
                }
                self.info.protocol_version = protocol_version;
                self.info.device_id = device_id;
                self.info.firmware_version = firmware_version;
                self.info.channels = channels;
                return Ok(());
            }
            if now.duration_since(start) >= timeout {
                return Err(match first_error {
                    // Bytes came, but nothing valid: more useful than "no reply".
                    Some(source) => fail(source),
                    None => SerialError::HandshakeTimeout {
                        port: self.port.name().to_owned(),
                        timeout_ms: config.handshake_timeout_ms,
                        baud_rate: config.baud_rate,
                    },
                });
            }
            // Pace the wait for the reply (open time only, never on the loop).
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Frames `command` with the next sequence number and writes it; returns the number.
    fn transmit(&mut self, command: Command, tag: u32) -> Result<u16, OutputError> {
        let seq = self.next_seq;
        let len = host_to_device::Message { seq, tag, command }.encode_frame(&mut self.tx)?;
        let frame = self.tx;
        self.write_all(frame.get(..len).unwrap_or_default())?;
        self.next_seq = seq.wrapping_add(1);
        Ok(seq)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), OutputError> {
        Ok(self.port.write_all(bytes)?)
    }

    /// Reads every byte waiting on the port and hands each complete frame's message (or why it
    /// was not one) to `sink`.
    fn read_available(
        &mut self,
        sink: &mut dyn FnMut(Result<device_to_host::Message, OutputError>),
    ) -> Result<(), OutputError> {
        loop {
            let n = self.port.read_available(&mut self.rx)?;
            if n == 0 {
                return Ok(());
            }
            for &byte in self.rx.get(..n).unwrap_or_default() {
                match self.decoder.push(byte) {
                    None => {}
                    Some(Err(e)) => sink(Err(e.into())),
                    Some(Ok(payload)) => {
                        sink(device_to_host::Message::decode(payload).map_err(Into::into));
                    }
                }
            }
        }
    }
}

impl Output for SerialDevice {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn send(&mut self, command: OutputCommand, tag: u32) -> Result<u16, OutputError> {
        let command = crate::to_protocol(command, self.info.channels)?;
        self.transmit(command, tag)
    }

    fn heartbeat(&mut self) -> Result<(), OutputError> {
        self.transmit(Command::Heartbeat, 0).map(drop)
    }

    fn request_sync(&mut self) -> Result<u16, OutputError> {
        self.transmit(Command::SyncRequest, 0)
    }

    fn sync_timing(&self) -> SyncTiming {
        self.sync_timing
    }

    fn poll(&mut self, sink: &mut dyn FnMut(DeviceEvent)) -> Result<(), OutputError> {
        let mut first_error: Option<OutputError> = None;
        self.read_available(&mut |message| {
            let event = match message {
                Err(e) => {
                    first_error = first_error.take().or(Some(e));
                    return;
                }
                Ok(message) => match crate::to_event(message) {
                    Some(event) => event,
                    // Late handshake replies and status answers are not events of this API.
                    None => return,
                },
            };
            sink(event);
        })?;
        first_error.map_or(Ok(()), Err)
    }

    fn all_off(&mut self) -> Result<(), OutputError> {
        self.transmit(Command::AllOff, 0).map(drop)
    }
}

impl Drop for SerialDevice {
    /// Leaves the outputs off when the driver goes away (the firmware's watchdog would do it
    /// within its watchdog time anyway).
    fn drop(&mut self) {
        if !self.port.has_failed() {
            let _ = self.all_off();
        }
    }
}
