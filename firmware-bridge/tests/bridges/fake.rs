//! In-memory transports with device models that answer like the real devices, so each bridge is
//! tested end to end (connect, send, poll) without hardware.
//!
//! A [`Fake`] is the bridge's transport and the test's handle at once (clones share state): the
//! test reads what the bridge wrote, drives the device clock, injects bytes, and inspects the
//! model. Replies are produced synchronously on `write_all`, so `read_timeout` never waits.
//! Buffers are reserved up front so the allocation test can count the bridge alone.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use reflex_firmware_bridge::transport::Transport;

/// A device model: consumes bytes from the host, appends its answers to `out`.
pub trait Model: Send + 'static {
    /// One byte arrived from the host.
    fn receive(&mut self, byte: u8, out: &mut Vec<u8>);
}

pub struct Inner<M> {
    pub model: M,
    /// Every byte the host wrote, in order.
    pub written: Vec<u8>,
    to_host: VecDeque<u8>,
    scratch: Vec<u8>,
}

/// The transport and the test's handle on it.
pub struct Fake<M>(Arc<Mutex<Inner<M>>>);

impl<M> Clone for Fake<M> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<M: Model> Fake<M> {
    pub fn new(model: M) -> Self {
        Self(Arc::new(Mutex::new(Inner {
            model,
            written: Vec::with_capacity(1 << 20),
            to_host: VecDeque::with_capacity(1 << 20),
            scratch: Vec::with_capacity(1 << 12),
        })))
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner<M>> {
        self.0.lock().unwrap()
    }

    /// Bytes written since the last call.
    pub fn take_written(&self) -> Vec<u8> {
        std::mem::take(&mut self.lock().written)
    }

    /// Clears what was written without allocating (keeps the capacity).
    pub fn clear_written(&self) {
        self.lock().written.clear();
    }

    /// Bytes the device sends unprompted (or corrupted replies, garbage).
    pub fn inject(&self, bytes: &[u8]) {
        self.lock().to_host.extend(bytes.iter().copied());
    }

    /// Runs `f` on the device model.
    pub fn with<R>(&self, f: impl FnOnce(&mut M) -> R) -> R {
        f(&mut self.lock().model)
    }
}

impl<M: Model> Transport for Fake<M> {
    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.lock();
        let Inner {
            model,
            written,
            to_host,
            scratch,
        } = &mut *inner;
        written.extend_from_slice(bytes);
        for &byte in bytes {
            scratch.clear();
            model.receive(byte, scratch);
            to_host.extend(scratch.iter().copied());
        }
        Ok(())
    }

    fn read_available(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut inner = self.lock();
        let n = buf.len().min(inner.to_host.len());
        for (dst, src) in buf.iter_mut().zip(inner.to_host.drain(..n)) {
            *dst = src;
        }
        Ok(n)
    }

    fn read_timeout(&mut self, buf: &mut [u8], _timeout: Duration) -> io::Result<usize> {
        self.read_available(buf)
    }
}

/// A device that never answers.
pub struct Silent;

impl Model for Silent {
    fn receive(&mut self, _byte: u8, _out: &mut Vec<u8>) {}
}

/// A device that answers every byte with a fixed byte.
pub struct Answers(pub u8);

impl Model for Answers {
    fn receive(&mut self, _byte: u8, out: &mut Vec<u8>) {
        out.push(self.0);
    }
}

// ------------------------------------------------------------------------------------------
// Pulse Pal: the op-menu command set of Firmware/PulsePal_2_0_1/PulsePal_2_0_1.ino
// (sanworks/PulsePal @ ecdbcf4bb81e65fd67a52f332d56bb013a6ac40e), written from the firmware's
// switch statement: each command's length and its confirm byte.
// ------------------------------------------------------------------------------------------

/// One channel's state as the Pulse Pal model holds it.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PulsePalChannel {
    pub is_biphasic: u8,
    pub phase1_voltage: u16,
    pub resting_voltage: u16,
    pub phase1_cycles: u32,
    pub inter_pulse_cycles: u32,
    pub burst_cycles: u32,
    pub train_cycles: u32,
    pub delay_cycles: u32,
    pub custom_train_id: u8,
    /// Last fixed voltage (opcode 79).
    pub fixed_voltage: Option<u16>,
    /// Soft triggers received.
    pub triggers: u32,
}

pub struct PulsePalModel {
    pub firmware: u32,
    pub channels: [PulsePalChannel; 4],
    pub aborts: u32,
    pub disconnects: u32,
    pub client_name: Vec<u8>,
    pending: Vec<u8>,
}

impl PulsePalModel {
    pub fn new(firmware: u32) -> Self {
        Self {
            firmware,
            channels: [PulsePalChannel::default(); 4],
            aborts: 0,
            disconnects: 0,
            client_name: Vec::new(),
            pending: Vec::with_capacity(64),
        }
    }

    fn voltage_len(&self) -> usize {
        if self.firmware < 20 { 1 } else { 2 }
    }

    /// Length of the command at the start of `pending` (from the op byte on), if known yet.
    fn command_len(&self) -> Option<usize> {
        let op = *self.pending.get(1)?;
        Some(match op {
            72 | 80 | 81 => 2,
            77 => 3,
            79 => 3 + self.voltage_len(),
            89 => 8,
            74 => {
                let code = *self.pending.get(2)?;
                4 + match code {
                    2 | 3 | 17 => self.voltage_len(),
                    4..=11 => 4,
                    _ => 1,
                }
            }
            other => panic!("Pulse Pal model: opcode {other} not modelled"),
        })
    }

    fn execute(&mut self, out: &mut Vec<u8>) {
        let cmd = std::mem::take(&mut self.pending);
        let volts = |b: &[u8]| match *b {
            [lo, hi] => u16::from_le_bytes([lo, hi]),
            [v] => u16::from(v),
            _ => unreachable!(),
        };
        let u32le = |b: &[u8]| u32::from_le_bytes(b.try_into().unwrap());
        match cmd[1] {
            72 => {
                out.push(75);
                out.extend_from_slice(&self.firmware.to_le_bytes());
            }
            74 => {
                let ch = &mut self.channels[usize::from(cmd[3] - 1)];
                let value = &cmd[4..];
                match cmd[2] {
                    1 => ch.is_biphasic = value[0],
                    2 => ch.phase1_voltage = volts(value),
                    4 => ch.phase1_cycles = u32le(value),
                    7 => ch.inter_pulse_cycles = u32le(value),
                    8 => ch.burst_cycles = u32le(value),
                    10 => ch.train_cycles = u32le(value),
                    11 => ch.delay_cycles = u32le(value),
                    14 => ch.custom_train_id = value[0],
                    17 => ch.resting_voltage = volts(value),
                    other => panic!("Pulse Pal model: parameter {other} not modelled"),
                }
                out.push(1);
            }
            77 => {
                for (i, ch) in self.channels.iter_mut().enumerate() {
                    if cmd[2] & (1 << i) != 0 {
                        ch.triggers += 1;
                    }
                }
            }
            79 => {
                self.channels[usize::from(cmd[2] - 1)].fixed_voltage = Some(volts(&cmd[3..]));
                out.push(1);
            }
            80 => {
                self.aborts += 1;
                for ch in &mut self.channels {
                    ch.fixed_voltage = None;
                }
            }
            81 => self.disconnects += 1,
            89 => self.client_name = cmd[2..].to_vec(),
            _ => unreachable!(),
        }
        self.pending = cmd;
        self.pending.clear();
    }
}

impl Model for PulsePalModel {
    fn receive(&mut self, byte: u8, out: &mut Vec<u8>) {
        if self.pending.is_empty() && byte != 213 {
            return; // the firmware ignores anything that does not start with the op-menu byte
        }
        self.pending.push(byte);
        if self.command_len() == Some(self.pending.len()) {
            self.execute(out);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Harp: a Harp Behavior board as harp-tech/protocol Device.md describes the request-reply
// contract (one timestamped reply per request, same type and address, error bit on refusal).
// ------------------------------------------------------------------------------------------

/// Encodes a device-to-host message with a timestamp, as a Harp device does (test-side
/// encoder, checked against harp-protocol's bytes in `harp::fake_device_encoder_matches_peer`).
pub fn harp_reply(
    message_type: u8,
    address: u8,
    payload_type: u8,
    seconds: u32,
    ticks: u16,
    payload: &[u8],
) -> Vec<u8> {
    let mut m = Vec::new();
    harp_reply_into(
        &mut m,
        message_type,
        address,
        payload_type,
        seconds,
        ticks,
        payload,
    );
    m
}

/// [`harp_reply`] appended to `out` (no allocation within `out`'s capacity).
pub fn harp_reply_into(
    out: &mut Vec<u8>,
    message_type: u8,
    address: u8,
    payload_type: u8,
    seconds: u32,
    ticks: u16,
    payload: &[u8],
) {
    let start = out.len();
    out.extend_from_slice(&[
        message_type,
        (4 + 6 + payload.len()) as u8,
        address,
        0xFF,
        payload_type | 0x10,
    ]);
    out.extend_from_slice(&seconds.to_le_bytes());
    out.extend_from_slice(&ticks.to_le_bytes());
    out.extend_from_slice(payload);
    let sum = out[start..].iter().fold(0u8, |a, &b| a.wrapping_add(b));
    out.push(sum);
}

pub struct HarpModel {
    pub who_am_i: u16,
    pub outputs: u16,
    pub pulse_enable: u16,
    pub pulse_ms: [u16; 14],
    /// Device clock: whole seconds and 32 µs ticks.
    pub seconds: u32,
    pub ticks: u16,
    /// Requests to this address are answered with the error bit.
    pub refuse_address: Option<u8>,
    /// Flip a bit of the next reply's checksum.
    pub corrupt_next_reply: bool,
    /// Requests received (type, address).
    pub requests: Vec<(u8, u8)>,
    frame: Vec<u8>,
}

impl HarpModel {
    pub fn behavior() -> Self {
        Self {
            who_am_i: 1216,
            outputs: 0,
            pulse_enable: 0xFFFF,
            pulse_ms: [0; 14],
            seconds: 100,
            ticks: 0,
            refuse_address: None,
            corrupt_next_reply: false,
            requests: Vec::with_capacity(1 << 16),
            frame: Vec::with_capacity(300),
        }
    }

    fn handle(&mut self, out: &mut Vec<u8>) {
        let f = std::mem::take(&mut self.frame);
        let sum = f[..f.len() - 1].iter().fold(0u8, |a, &b| a.wrapping_add(b));
        assert_eq!(
            sum,
            f[f.len() - 1],
            "Harp model: bad checksum from host: {f:02x?}"
        );
        assert_eq!(f[3], 0xFF, "Harp model: port must be 0xFF");
        assert_eq!(
            f[4] & 0x10,
            0,
            "Harp model: host requests carry no timestamp"
        );
        let (message_type, address, payload_type) = (f[0], f[2], f[4]);
        let payload = &f[5..f.len() - 1];
        self.requests.push((message_type, address));
        let word = |p: &[u8]| u16::from_le_bytes([p[0], p[1]]);
        let mut error = self.refuse_address == Some(address);
        let mut value = [0u8; 4];
        let copy = |value: &mut [u8; 4], bytes: &[u8]| {
            value[..bytes.len()].copy_from_slice(bytes);
            bytes.len()
        };
        let len = match (message_type, address) {
            (1, 0) => copy(&mut value, &self.who_am_i.to_le_bytes()),
            (1, 6) | (1, 7) => copy(&mut value, &[3]),
            (1, 13) => copy(&mut value, &4242u16.to_le_bytes()),
            (1, 8) => copy(&mut value, &self.seconds.to_le_bytes()),
            (2, 34) if !error => {
                self.outputs |= word(payload);
                copy(&mut value, payload)
            }
            (2, 35) if !error => {
                self.outputs &= !word(payload);
                copy(&mut value, payload)
            }
            (2, 45) if !error => {
                self.pulse_enable = word(payload);
                copy(&mut value, payload)
            }
            (2, 46..=59) if !error => {
                let ms = word(payload);
                if ms < 1 {
                    error = true; // app_write_REG_PULSE_*: returns false below 1 ms
                } else {
                    self.pulse_ms[usize::from(address - 46)] = ms;
                }
                copy(&mut value, payload)
            }
            _ if error => copy(&mut value, payload),
            other => panic!("Harp model: request {other:?} not modelled"),
        };
        harp_reply_into(
            out,
            message_type | if error { 0x08 } else { 0 },
            address,
            payload_type & 0x0F,
            self.seconds,
            self.ticks,
            &value[..len],
        );
        if self.corrupt_next_reply {
            self.corrupt_next_reply = false;
            *out.last_mut().unwrap() ^= 0x01;
        }
        self.frame = f;
        self.frame.clear();
    }
}

impl Model for HarpModel {
    fn receive(&mut self, byte: u8, out: &mut Vec<u8>) {
        self.frame.push(byte);
        if self.frame.len() >= 2 && self.frame.len() == usize::from(self.frame[1]) + 2 {
            self.handle(out);
        }
    }
}

// ------------------------------------------------------------------------------------------
// Bpod: the USB command set of Dev/StateMachineFirmware/StateMachineFirmware.ino
// (sanworks/Bpod_StateMachine_Firmware @ d7397640953d6e8f00551e1e0574f1b4a932d04e).
// ------------------------------------------------------------------------------------------

pub struct BpodModel {
    /// Models the APP port (every byte is a soft code) instead of the main port.
    pub app_port: bool,
    /// Discovery bytes (222) already waiting before the handshake answer.
    pub discovery_bytes: usize,
    pub connected: bool,
    /// Soft code bytes received (`'~'` + byte on the main port, raw on the APP port).
    pub soft_codes: Vec<u8>,
    expect_code: bool,
}

impl BpodModel {
    pub fn main_port(discovery_bytes: usize) -> Self {
        Self {
            app_port: false,
            discovery_bytes,
            connected: false,
            soft_codes: Vec::with_capacity(1 << 16),
            expect_code: false,
        }
    }

    pub fn app_port() -> Self {
        Self {
            app_port: true,
            ..Self::main_port(0)
        }
    }
}

impl Model for BpodModel {
    fn receive(&mut self, byte: u8, out: &mut Vec<u8>) {
        if self.app_port || self.expect_code {
            self.expect_code = false;
            self.soft_codes.push(byte);
            return;
        }
        match byte {
            b'6' => {
                out.extend(std::iter::repeat_n(222, self.discovery_bytes));
                out.push(53);
                self.connected = true;
            }
            b'F' => out.extend_from_slice(&[23, 0, 4, 0]), // v23, machine type 4 (2+)
            b'~' => self.expect_code = true,
            other => panic!("Bpod model: command {other} not modelled"),
        }
    }
}
