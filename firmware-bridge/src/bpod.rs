//! Bridge to a Sanworks **Bpod** finite state machine: reflex's triggers become soft codes, so
//! a Bpod protocol (state machine) running on it changes state on them.
//!
//! Protocol, read in `sanworks/Bpod_StateMachine_Firmware` at commit
//! `d7397640953d6e8f00551e1e0574f1b4a932d04e` (`Dev/StateMachineFirmware/StateMachineFirmware.ino`)
//! and `sanworks/Bpod_Gen2` at commit `9be6bea107dba96e8b4e38aa1c5617339d4efc50`
//! (`Functions/SendBpodSoftCode.m`, `Functions/@BpodObject/Connect2BpodSM.m`,
//! `Functions/@BpodObject/SetupStateMachine.m`, `Functions/@BpodObject/SetupHardware.m`,
//! `Functions/Plugins/Bonsai/APP_SoftCode Example/`):
//!
//! - **main USB port** ([`BpodPort::Primary`]): until a client connects, the state machine sends
//!   the discovery byte `222` every 100 ms; handshake `'6'` → `'5'` (53); `'F'` → firmware major
//!   version and machine type, two little-endian `u16`; a USB soft code is `'~'` (0x7E) and one
//!   byte `b`, which becomes event `SoftCode{b + 1}` (`SendBpodSoftCode(code)` sends
//!   `['~' code-1]`), and is dropped unless a state machine is running. (`'S'` + byte is *not*
//!   a soft code: the firmware echoes it back as `2, byte` for testing.) Only one program can
//!   open this port, so this mode suits setups where reflex is the state machine's only client.
//! - **APP port** ([`BpodPort::App`], state machine 2 and later, firmware v23): the second USB
//!   serial port, for a third-party program beside the Bpod software running the protocol. No
//!   handshake; each byte `b` becomes event `APP_SoftCode{b}` while a state machine runs. The
//!   port must be opened with DTR asserted (Sanworks' Bonsai example sets `DtrEnable`).
//!
//! Mapping: `Pulse { channel }` → soft code byte `channel` (event `SoftCode{channel + 1}` on the
//! main port, `APP_SoftCode{channel}` on the APP port); its `width_us` is not sent — what the
//! state machine does on the event is the protocol's business. `SetLevel` and `PulseTrain` are
//! refused with [`OutputError::InvalidArgument`]. `AllOff` sends
//! [`BpodConfig::all_off_soft_code`] when one is set (the protocol should go to a state with
//! its outputs off) and is refused otherwise; [`Output::all_off`] then does nothing, since
//! reflex drives none of Bpod's outputs itself.
//!
//! **No device timestamps and no acks.** The state machine does not answer soft codes (it
//! timestamps the event in its own trial data, which the Bpod software receives), so this
//! bridge emits no [`DeviceEvent`]s and [`Output::request_sync`] fails. Bytes arriving from the
//! state machine are read and discarded.

use std::io;
use std::time::Duration;

use crate::transport::{BadReply, Transport, read_exact_timeout};
use crate::{DeviceEvent, DeviceInfo, Output, OutputCommand, OutputError};

/// Handshake request on the main port (`'6'`).
pub const HANDSHAKE: u8 = b'6';
/// Handshake answer (`'5'`).
pub const HANDSHAKE_REPLY: u8 = b'5';
/// Byte the state machine repeats every 100 ms until a client handshakes.
pub const DISCOVERY_BYTE: u8 = 222;
/// Command: firmware major version and machine type (two `u16`).
pub const FIRMWARE_VERSION: u8 = b'F';
/// Command: USB soft code, followed by the code byte (main port).
pub const SOFT_CODE: u8 = b'~';
/// Soft codes in a default Bpod setup (`BpodSystem.HW.n.SoftCodes = 15`; modules can reduce it).
pub const DEFAULT_SOFT_CODES: u8 = 15;

/// Name for errors and [`BadReply`].
const DEVICE: &str = "Bpod";
/// Discovery bytes tolerated before the handshake answer (≥ 10 s of them).
const MAX_DISCOVERY_BYTES: usize = 128;

/// Which of the state machine's USB serial ports the transport is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BpodPort {
    /// The main port: `'6'`/`'5'` handshake, soft codes as `'~'` and the code.
    Primary,
    /// The APP port (state machine 2+, firmware v23): one raw byte per soft code.
    App,
}

/// Settings of the Bpod bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BpodConfig {
    /// Which port the transport is.
    pub port: BpodPort,
    /// Soft codes the protocol handles; channels are `0..soft_codes`.
    pub soft_codes: u8,
    /// Soft code byte sent for `AllOff` (and by [`Output::all_off`]), `None` to refuse `AllOff`.
    pub all_off_soft_code: Option<u8>,
    /// Longest wait for each answer while connecting (main port only).
    pub reply_timeout: Duration,
}

impl Default for BpodConfig {
    fn default() -> Self {
        Self {
            port: BpodPort::App,
            soft_codes: DEFAULT_SOFT_CODES,
            all_off_soft_code: None,
            reply_timeout: Duration::from_millis(500),
        }
    }
}

/// A Bpod state machine receiving soft codes; see the [module docs](self).
pub struct Bpod<T: Transport> {
    transport: T,
    config: BpodConfig,
    info: DeviceInfo,
    next_seq: u16,
}

impl<T: Transport> std::fmt::Debug for Bpod<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bpod")
            .field("info", &self.info)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Bpod<T> {
    /// On the main port: handshakes (`'6'` → `'5'`, skipping discovery bytes) and reads the
    /// firmware version and machine type. On the APP port there is nothing to exchange.
    pub fn connect(mut transport: T, config: BpodConfig) -> Result<Self, OutputError> {
        if let Some(code) = config.all_off_soft_code
            && code >= config.soft_codes
        {
            return Err(OutputError::BadChannel {
                channel: code,
                channels: config.soft_codes,
            });
        }
        let (firmware_version, name) = match config.port {
            BpodPort::App => (
                0,
                "Bpod state machine, APP port (soft codes, no device timestamps)".to_owned(),
            ),
            BpodPort::Primary => {
                transport.write_all(&[HANDSHAKE])?;
                let mut skipped = 0;
                loop {
                    let mut byte = [0u8; 1];
                    read_exact_timeout(
                        &mut transport,
                        &mut byte,
                        config.reply_timeout,
                        DEVICE,
                        "the handshake reply ('5')",
                    )?;
                    match byte[0] {
                        HANDSHAKE_REPLY => break,
                        DISCOVERY_BYTE if skipped < MAX_DISCOVERY_BYTES => skipped += 1,
                        other => {
                            return Err(BadReply::io(
                                io::ErrorKind::InvalidData,
                                DEVICE,
                                format!(
                                    "handshake answered {other} instead of {HANDSHAKE_REPLY} ('5'): \
                                     is this a Bpod state machine's main port?"
                                ),
                            )
                            .into());
                        }
                    }
                }
                transport.write_all(&[FIRMWARE_VERSION])?;
                let mut reply = [0u8; 4];
                read_exact_timeout(
                    &mut transport,
                    &mut reply,
                    config.reply_timeout,
                    DEVICE,
                    "the firmware version",
                )?;
                let [v0, v1, m0, m1] = reply;
                let machine = u16::from_le_bytes([m0, m1]);
                (
                    u16::from_le_bytes([v0, v1]),
                    format!("Bpod state machine type {machine} (soft codes, no device timestamps)"),
                )
            }
        };
        Ok(Self {
            transport,
            info: DeviceInfo {
                name,
                device_id: 0,
                firmware_version,
                protocol_version: 0,
                channels: config.soft_codes,
            },
            config,
            next_seq: 0,
        })
    }

    fn write_code(&mut self, code: u8) -> Result<(), OutputError> {
        match self.config.port {
            BpodPort::Primary => self.transport.write_all(&[SOFT_CODE, code])?,
            BpodPort::App => self.transport.write_all(&[code])?,
        }
        Ok(())
    }
}

impl<T: Transport> Output for Bpod<T> {
    fn info(&self) -> &DeviceInfo {
        &self.info
    }

    fn send(&mut self, command: OutputCommand, _tag: u32) -> Result<u16, OutputError> {
        command.check_arguments()?;
        let code = match command {
            OutputCommand::Pulse { channel, .. } => channel,
            OutputCommand::AllOff => {
                self.config
                    .all_off_soft_code
                    .ok_or(OutputError::InvalidArgument {
                        command: "all off",
                        reason: "Bpod: no soft code configured for AllOff (all_off_soft_code)",
                    })?
            }
            OutputCommand::SetLevel { .. } => {
                return Err(OutputError::InvalidArgument {
                    command: "set level",
                    reason: "Bpod: reflex sends soft codes only (Pulse → soft code); \
                             the state machine protocol drives its outputs",
                });
            }
            OutputCommand::PulseTrain { .. } => {
                return Err(OutputError::InvalidArgument {
                    command: "pulse train",
                    reason: "Bpod: reflex sends soft codes only (Pulse → soft code); \
                             the state machine protocol drives its outputs",
                });
            }
        };
        if code >= self.config.soft_codes {
            return Err(OutputError::BadChannel {
                channel: code,
                channels: self.config.soft_codes,
            });
        }
        self.write_code(code)?;
        let seq = self.next_seq;
        self.next_seq = seq.wrapping_add(1);
        Ok(seq)
    }

    /// The state machine has no host watchdog: nothing to send.
    fn heartbeat(&mut self) -> Result<(), OutputError> {
        Ok(())
    }

    /// Always fails: soft codes are not answered, so there is no clock to read.
    fn request_sync(&mut self) -> Result<u16, OutputError> {
        Err(OutputError::InvalidArgument {
            command: "request_sync",
            reason: "Bpod soft codes carry no device clock: no timestamps reach the host",
        })
    }

    /// Reads and discards whatever the state machine sent; delivers no events.
    fn poll(&mut self, _sink: &mut dyn FnMut(DeviceEvent)) -> Result<(), OutputError> {
        let mut rx = [0u8; 64];
        while self.transport.read_available(&mut rx)? > 0 {}
        Ok(())
    }

    /// Sends [`BpodConfig::all_off_soft_code`] if set; otherwise nothing (reflex drives no Bpod
    /// output itself).
    fn all_off(&mut self) -> Result<(), OutputError> {
        match self.config.all_off_soft_code {
            Some(code) => self.write_code(code),
            None => Ok(()),
        }
    }
}
