//! The output side of reflex: the device-independent [`Output`] trait the daemon drives, and
//! [`SimulatedDevice`], an in-process device that speaks the reflex wire protocol byte for byte.
//!
//! The trait carries no wire-format types, so Pulse Pal, Harp or Bpod drivers can implement it
//! with their own protocols; our own firmware's driver and the simulator use `reflex-protocol`.

pub mod bpod;
mod fifo;
pub mod harp;
pub mod pulsepal;
pub mod serial;
mod sim;
pub mod transport;

pub use serial::{SerialConfig, SerialDevice, SerialError};
pub use sim::{SimConfig, SimProbe, SimulatedDevice};

/// What an output device should do; channels count from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputCommand {
    /// Drive `channel` high or low until told otherwise.
    SetLevel {
        /// Output channel.
        channel: u8,
        /// `true` for high.
        high: bool,
    },
    /// One pulse of `width_us` µs on `channel`.
    Pulse {
        /// Output channel.
        channel: u8,
        /// Pulse width in µs (> 0).
        width_us: u32,
    },
    /// `count` pulses of `width_us` µs, one rising edge every `period_us` µs.
    PulseTrain {
        /// Output channel.
        channel: u8,
        /// Time between rising edges in µs (> `width_us` when `count` > 1).
        period_us: u32,
        /// Pulse width in µs (> 0).
        width_us: u32,
        /// Number of pulses (> 0).
        count: u32,
    },
    /// Drive every channel low and cancel pulses in progress.
    AllOff,
}

impl OutputCommand {
    /// The channel the command addresses, `None` for [`OutputCommand::AllOff`].
    pub const fn channel(&self) -> Option<u8> {
        match *self {
            Self::SetLevel { channel, .. }
            | Self::Pulse { channel, .. }
            | Self::PulseTrain { channel, .. } => Some(channel),
            Self::AllOff => None,
        }
    }

    /// Checks the pulse arguments (not the channel, which depends on the device): widths and
    /// counts must be > 0 and a train's pulses must not overlap.
    pub fn check_arguments(&self) -> Result<(), OutputError> {
        let (command, check) = match *self {
            Self::Pulse { width_us, .. } => ("pulse", check_pulse(width_us, width_us, 1)),
            Self::PulseTrain {
                period_us,
                width_us,
                count,
                ..
            } => ("pulse train", check_pulse(period_us, width_us, count)),
            Self::SetLevel { .. } | Self::AllOff => return Ok(()),
        };
        check.map_err(|reason| OutputError::InvalidArgument { command, reason })
    }
}

/// The rules a pulse or pulse train must follow, shared by host-side checks and the simulated
/// firmware (which answers `BadArgument` when they fail).
pub(crate) fn check_pulse(period_us: u32, width_us: u32, count: u32) -> Result<(), &'static str> {
    if width_us == 0 {
        Err("width_us must be > 0")
    } else if count == 0 {
        Err("count must be > 0")
    } else if count > 1 && width_us >= period_us {
        Err("width_us must be shorter than period_us when count > 1")
    } else {
        Ok(())
    }
}

/// How long a clock-sync request and its reply spend on the link itself (ns): on a serial line,
/// their frame lengths at the line's baud rate. The device stamps a request when its last byte has
/// arrived, so the host places that moment `request_ns` after sending, plus half of what is left of
/// the round trip (protocol/SPEC.md §5). Zero for an in-process device.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SyncTiming {
    /// Time of the `SyncRequest` frame on the wire.
    pub request_ns: u64,
    /// Time of the `SyncReply` frame on the wire.
    pub reply_ns: u64,
}

impl SyncTiming {
    /// The wire times of the reflex protocol's sync request and reply at `baud_rate` (8N1: 10 bits
    /// a byte).
    pub fn serial(baud_rate: u32) -> Self {
        use reflex_protocol::{device_to_host, frame_len, host_to_device};
        let byte_ns = 10_000_000_000 / u64::from(baud_rate.max(1));
        let bytes = |payload: Option<usize>| frame_len(payload.unwrap_or(0)) as u64;
        Self {
            request_ns: bytes(host_to_device::payload_len(
                host_to_device::msg_type::SYNC_REQUEST,
            )) * byte_ns,
            reply_ns: bytes(device_to_host::payload_len(
                device_to_host::msg_type::SYNC_REPLY,
            )) * byte_ns,
        }
    }
}

/// Who the connected device is, as learned in the handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Human-readable kind of device (e.g. "simulated").
    pub name: String,
    /// Device serial number / id.
    pub device_id: u32,
    /// Firmware version reported by the device.
    pub firmware_version: u16,
    /// Wire-protocol version the device speaks.
    pub protocol_version: u16,
    /// Number of output channels; valid channels are `0..channels`.
    pub channels: u8,
}

/// Why a device refused something or reported a fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// A frame from the host failed its CRC check; the device turned outputs off.
    #[error("a frame failed the device's CRC check; outputs turned off")]
    BadCrc,
    /// A frame from the host was malformed; the device turned outputs off.
    #[error("the device received a malformed frame; outputs turned off")]
    BadFrame,
    /// The device does not know the command; it turned outputs off.
    #[error("the device does not know the command; outputs turned off")]
    UnknownCommand,
    /// An argument was out of range (channel, width, period, count).
    #[error("the device refused an argument as out of range")]
    BadArgument,
    /// The device has not received a handshake with its protocol version.
    #[error("protocol version mismatch: the device refuses commands until a matching handshake")]
    VersionMismatch,
    /// The device heard nothing for its watchdog time and turned outputs off.
    #[error("the device's watchdog expired; outputs turned off")]
    WatchdogExpired,
}

/// Something the device reported, handed out by [`Output::poll`]; device times are µs on the
/// device clock (map them to host time with [`Output::request_sync`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceEvent {
    /// A command took effect.
    Ack {
        /// Sequence number returned by [`Output::send`].
        seq: u16,
        /// The tag (camera frame id) the command was sent with.
        tag: u32,
        /// Device time in µs at which the output actually changed.
        device_time_us: u64,
    },
    /// Answer to [`Output::request_sync`].
    SyncReply {
        /// Sequence number returned by [`Output::request_sync`].
        seq: u16,
        /// Device time in µs at which the request arrived.
        device_time_us: u64,
    },
    /// An input line changed level.
    InputEdge {
        /// Input channel.
        channel: u8,
        /// New level, `true` for high.
        high: bool,
        /// Device time of the edge in µs.
        device_time_us: u64,
    },
    /// The device refused a command or reported a fault.
    Error {
        /// Sequence number of the refused command, or a device counter for faults not tied to
        /// a command (watchdog, undecodable frames).
        seq: u16,
        /// What went wrong.
        error: DeviceError,
    },
}

/// Why an [`Output`] call failed.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    /// The command addresses a channel the device does not have.
    #[error(
        "channel {channel} is out of range: the device has {channels} output channels (0..={last})",
        last = .channels.saturating_sub(1)
    )]
    BadChannel {
        /// The channel asked for.
        channel: u8,
        /// The device's channel count.
        channels: u8,
    },
    /// A pulse argument breaks the rules (see [`OutputCommand::check_arguments`]).
    #[error("{command}: {reason}")]
    InvalidArgument {
        /// The kind of command ("pulse", "pulse train").
        command: &'static str,
        /// The rule broken.
        reason: &'static str,
    },
    /// The device speaks another protocol version than the host.
    #[error(
        "protocol version mismatch: the host speaks version {host}, the device version {device}"
    )]
    VersionMismatch {
        /// Version the host speaks.
        host: u16,
        /// Version the device reported.
        device: u16,
    },
    /// The device answered a command with an error where the driver needed success.
    #[error("the device refused command {seq}: {error}")]
    Device {
        /// Sequence number of the refused command.
        seq: u16,
        /// What the device reported.
        error: DeviceError,
    },
    /// A command could not be framed (a driver bug, not a device fault).
    #[error("encoding a frame for the device")]
    Encode(#[from] reflex_protocol::EncodeError),
    /// Bytes from the device did not form a valid frame.
    #[error("corrupt frame from the device")]
    Frame(#[from] reflex_protocol::FrameError),
    /// A frame from the device held no valid message.
    #[error("invalid message from the device")]
    Decode(#[from] reflex_protocol::DecodeError),
    /// Reading or writing the device's port failed.
    #[error("I/O error talking to the device")]
    Io(#[from] std::io::Error),
}

/// A device that turns commands into output changes: the seam between the daemon and hardware.
/// Implementations never block and never allocate in `send` and `poll`.
pub trait Output: Send {
    /// Who the device is (from the handshake).
    fn info(&self) -> &DeviceInfo;

    /// Sends one command, tagged with the camera frame id that caused it, and returns its
    /// sequence number. Never waits for the reply. No allocation.
    fn send(&mut self, command: OutputCommand, tag: u32) -> Result<u16, OutputError>;

    /// Keeps the device's watchdog fed; call more often than its watchdog time when idle.
    fn heartbeat(&mut self) -> Result<(), OutputError>;

    /// Asks for the device clock (clock sync); the answer arrives through [`Output::poll`] as
    /// [`DeviceEvent::SyncReply`] with the returned sequence number.
    fn request_sync(&mut self) -> Result<u16, OutputError>;

    /// How long a sync request and its reply take on the link itself, for placing the device's
    /// clock reading within the round trip. Default: no link (an in-process device).
    fn sync_timing(&self) -> SyncTiming {
        SyncTiming::default()
    }

    /// Hands every event received so far to `sink`, without blocking. No allocation. Every valid
    /// event is delivered; if a reply was corrupt, the first such error is returned afterwards.
    fn poll(&mut self, sink: &mut dyn FnMut(DeviceEvent)) -> Result<(), OutputError>;

    /// Turns every output off (used on shutdown, panic and error paths).
    fn all_off(&mut self) -> Result<(), OutputError>;
}

impl From<reflex_protocol::device_to_host::ErrorCode> for DeviceError {
    fn from(code: reflex_protocol::device_to_host::ErrorCode) -> Self {
        use reflex_protocol::device_to_host::ErrorCode;
        match code {
            ErrorCode::BadCrc => DeviceError::BadCrc,
            ErrorCode::BadFrame => DeviceError::BadFrame,
            ErrorCode::UnknownCommand => DeviceError::UnknownCommand,
            ErrorCode::BadArgument => DeviceError::BadArgument,
            ErrorCode::VersionMismatch => DeviceError::VersionMismatch,
            ErrorCode::WatchdogExpired => DeviceError::WatchdogExpired,
        }
    }
}

/// Check `command` against a device with `channels` outputs and translate it into our wire protocol's
/// command (shared by the serial driver and the simulated device, which speak the same bytes).
pub(crate) fn to_protocol(
    command: OutputCommand,
    channels: u8,
) -> Result<reflex_protocol::host_to_device::Command, OutputError> {
    use reflex_protocol::host_to_device::Command;
    if let Some(channel) = command.channel()
        && channel >= channels
    {
        return Err(OutputError::BadChannel { channel, channels });
    }
    command.check_arguments()?;
    Ok(match command {
        OutputCommand::SetLevel { channel, high } => Command::SetLevel { channel, high },
        OutputCommand::Pulse { channel, width_us } => Command::Pulse { channel, width_us },
        OutputCommand::PulseTrain {
            channel,
            period_us,
            width_us,
            count,
        } => Command::PulseTrain {
            channel,
            period_us,
            width_us,
            count,
        },
        OutputCommand::AllOff => Command::AllOff,
    })
}

/// A reply of our wire protocol as a device-independent event; `None` for replies that are not events of
/// the `Output` API (late handshake replies, status answers).
pub(crate) fn to_event(message: reflex_protocol::device_to_host::Message) -> Option<DeviceEvent> {
    use reflex_protocol::device_to_host::Reply;
    let seq = message.seq;
    Some(match message.reply {
        Reply::Ack {
            tag,
            device_time_us,
        } => DeviceEvent::Ack {
            seq,
            tag,
            device_time_us,
        },
        Reply::SyncReply { device_time_us } => DeviceEvent::SyncReply {
            seq,
            device_time_us,
        },
        Reply::InputEdge {
            channel,
            high,
            device_time_us,
        } => DeviceEvent::InputEdge {
            channel,
            high,
            device_time_us,
        },
        Reply::Error { code } => DeviceEvent::Error {
            seq,
            error: code.into(),
        },
        Reply::Hello { .. } | Reply::Status { .. } => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::SyncTiming;

    #[test]
    fn sync_frames_take_their_bytes_times_ten_bits_on_the_wire() {
        // SyncRequest: 7-byte payload → 11-byte frame; SyncReply: 11 → 15 (SPEC §5).
        assert_eq!(
            SyncTiming::serial(500_000),
            SyncTiming {
                request_ns: 220_000,
                reply_ns: 300_000
            }
        );
        assert_eq!(SyncTiming::serial(115_200).request_ns, 11 * 86_805);
    }
}
