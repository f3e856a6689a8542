//! Bpod bridge. Expected bytes are transcribed from the state machine firmware
//! (sanworks/Bpod_StateMachine_Firmware @ d7397640953d6e8f00551e1e0574f1b4a932d04e,
//! `Dev/StateMachineFirmware/StateMachineFirmware.ino`: `'6'` → `53`, discovery byte `222`,
//! `'F'` → two u16, `'~'` + soft code byte, APP port bytes as `SoftEvent2`) and Sanworks' MATLAB
//! client (sanworks/Bpod_Gen2 @ 9be6bea107dba96e8b4e38aa1c5617339d4efc50,
//! `Functions/SendBpodSoftCode.m`: `SendBpodSoftCode(code)` writes `['~' code-1]`). The PyPI
//! client `bpod-core` 0.1.0a15 (`bpod_core/bpod/__init__.py`) writes the same bytes
//! (`verify(b'6', b'5')`, `query_struct(b'F', '<2H')`, `write_struct('<cB', b'~', softcode)`);
//! it was read, not run (it needs a serial port and a dozen dependencies), so no fixtures.

use std::io::ErrorKind;

use reflex_firmware_bridge::bpod::{Bpod, BpodConfig, BpodPort};
use reflex_firmware_bridge::{Output, OutputCommand, OutputError};

use crate::fake::{Answers, BpodModel, Fake, Silent};
use crate::{bad_reply, events};

fn main_port() -> BpodConfig {
    BpodConfig {
        port: BpodPort::Primary,
        ..BpodConfig::default()
    }
}

#[test]
fn main_port_handshake_skips_discovery_bytes_and_reads_the_version() {
    let fake = Fake::new(BpodModel::main_port(3));
    let device = Bpod::connect(fake.clone(), main_port()).unwrap();
    assert_eq!(fake.take_written(), b"6F");
    let info = device.info();
    assert_eq!(info.firmware_version, 23);
    assert_eq!(
        info.name,
        "Bpod state machine type 4 (soft codes, no device timestamps)"
    );
    assert_eq!(info.channels, 15);
    assert!(fake.with(|m| m.connected));
}

#[test]
fn pulse_sends_a_usb_soft_code_on_the_main_port() {
    let fake = Fake::new(BpodModel::main_port(0));
    let mut device = Bpod::connect(fake.clone(), main_port()).unwrap();
    fake.clear_written();
    let seq = device
        .send(
            OutputCommand::Pulse {
                channel: 4,
                width_us: 1_000,
            },
            1,
        )
        .unwrap();
    // Event SoftCode5 in the protocol: SendBpodSoftCode(5) writes the same two bytes.
    assert_eq!(fake.take_written(), [b'~', 4]);
    let next = device
        .send(
            OutputCommand::Pulse {
                channel: 0,
                width_us: 1,
            },
            2,
        )
        .unwrap();
    assert_eq!(next, seq.wrapping_add(1));
    assert_eq!(fake.take_written(), [0x7E, 0]);
    assert_eq!(fake.with(|m| m.soft_codes.clone()), [4, 0]);
    assert!(
        events(&mut device).is_empty(),
        "soft codes are not acknowledged"
    );
}

#[test]
fn app_port_sends_raw_bytes_without_handshake() {
    let fake = Fake::new(BpodModel::app_port());
    let mut device = Bpod::connect(fake.clone(), BpodConfig::default()).unwrap();
    assert!(
        fake.take_written().is_empty(),
        "the APP port has no handshake"
    );
    device
        .send(
            OutputCommand::Pulse {
                channel: 5,
                width_us: 100,
            },
            1,
        )
        .unwrap();
    assert_eq!(fake.take_written(), [5]); // event APP_SoftCode5
    // Bytes the state machine sends to the APP port (its own APP_SoftCode outputs) are dropped.
    fake.inject(&[1, 2, 3]);
    assert!(events(&mut device).is_empty());
}

#[test]
fn all_off_uses_the_configured_soft_code() {
    let fake = Fake::new(BpodModel::app_port());
    let mut device = Bpod::connect(fake.clone(), BpodConfig::default()).unwrap();
    let err = device.send(OutputCommand::AllOff, 1).unwrap_err();
    assert_eq!(
        err.to_string(),
        "all off: Bpod: no soft code configured for AllOff (all_off_soft_code)"
    );
    device.all_off().unwrap();
    assert!(fake.take_written().is_empty(), "nothing to turn off");

    let fake = Fake::new(BpodModel::main_port(0));
    let config = BpodConfig {
        all_off_soft_code: Some(14),
        ..main_port()
    };
    let mut device = Bpod::connect(fake.clone(), config).unwrap();
    fake.clear_written();
    device.send(OutputCommand::AllOff, 1).unwrap();
    device.all_off().unwrap();
    assert_eq!(fake.take_written(), [b'~', 14, b'~', 14]);

    let config = BpodConfig {
        all_off_soft_code: Some(15),
        ..BpodConfig::default()
    };
    let err = Bpod::connect(Fake::new(BpodModel::app_port()), config).unwrap_err();
    assert!(matches!(
        err,
        OutputError::BadChannel {
            channel: 15,
            channels: 15
        }
    ));
}

#[test]
fn refuses_levels_trains_and_unknown_codes() {
    let fake = Fake::new(BpodModel::app_port());
    let mut device = Bpod::connect(fake.clone(), BpodConfig::default()).unwrap();
    let err = device
        .send(
            OutputCommand::SetLevel {
                channel: 0,
                high: true,
            },
            1,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        OutputError::InvalidArgument {
            command: "set level",
            ..
        }
    ));
    let err = device
        .send(
            OutputCommand::PulseTrain {
                channel: 0,
                period_us: 10,
                width_us: 5,
                count: 2,
            },
            1,
        )
        .unwrap_err();
    assert!(err.to_string().contains("soft codes only"), "{err}");
    let err = device
        .send(
            OutputCommand::Pulse {
                channel: 15,
                width_us: 5,
            },
            1,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "channel 15 is out of range: the device has 15 output channels (0..=14)"
    );
    let err = device.request_sync().unwrap_err();
    assert!(err.to_string().contains("no device clock"), "{err}");
    assert!(fake.take_written().is_empty());
}

#[test]
fn a_wrong_or_missing_handshake_is_an_error() {
    let err = Bpod::connect(Fake::new(Answers(b'X')), main_port()).unwrap_err();
    let (kind, reply) = bad_reply(&err);
    assert_eq!(kind, ErrorKind::InvalidData);
    assert!(
        reply
            .what
            .starts_with("handshake answered 88 instead of 53"),
        "{reply}"
    );
    let err = Bpod::connect(Fake::new(Silent), main_port()).unwrap_err();
    assert_eq!(bad_reply(&err).0, ErrorKind::TimedOut);
}
