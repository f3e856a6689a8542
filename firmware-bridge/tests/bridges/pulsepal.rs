//! Pulse Pal bridge. Expected bytes are transcribed from the device firmware's command switch
//! (sanworks/PulsePal @ ecdbcf4bb81e65fd67a52f332d56bb013a6ac40e,
//! `Firmware/PulsePal_2_0_1/PulsePal_2_0_1.ino`: `213` op menu; `72` handshake → `75` + u32 LE
//! firmware; `74 param channel value` → `1`; `77 mask`; `79 channel u16` → `1`; `80`; `81`;
//! `89` + 6 chars) and the DAC formula of `Python/Python3/PulsePal.py` (`_volts2Bits`). No
//! Pulse Pal library is published on PyPI, so there is no peer to generate fixtures with.

use std::io::ErrorKind;

use reflex_firmware_bridge::pulsepal::{PulsePal, PulsePalConfig, volts_to_code};
use reflex_firmware_bridge::{Output, OutputCommand, OutputError};

use crate::fake::{Answers, Fake, PulsePalChannel, PulsePalModel, Silent};
use crate::{bad_reply, events};

fn connect(firmware: u32) -> (PulsePal<Fake<PulsePalModel>>, Fake<PulsePalModel>) {
    let fake = Fake::new(PulsePalModel::new(firmware));
    let device = PulsePal::connect(fake.clone(), PulsePalConfig::default()).unwrap();
    (device, fake)
}

#[test]
fn dac_codes_follow_sanworks_volts2bits() {
    // ceil(((V + 10) / 20) * bitMax), PulsePal.py `_volts2Bits`.
    assert_eq!(volts_to_code(5_000, 65_535), 49_152); // ceil(49151.25)
    assert_eq!(volts_to_code(0, 65_535), 32_768); // ceil(32767.5)
    assert_eq!(volts_to_code(-10_000, 65_535), 0);
    assert_eq!(volts_to_code(10_000, 65_535), 65_535);
    assert_eq!(volts_to_code(3_300, 65_535), 43_581); // ceil(43580.775)
    assert_eq!(volts_to_code(5_000, 255), 192); // ceil(191.25)
    assert_eq!(volts_to_code(0, 255), 128); // ceil(127.5)
    assert_eq!(volts_to_code(i16::MAX, 255), 255, "clamped to +10 V");
}

#[test]
fn connect_handshakes_names_itself_and_programs_every_channel() {
    let (device, fake) = connect(21);
    let written = fake.take_written();
    let mut expected = vec![213, 72]; // handshake
    expected.extend_from_slice(&[213, 89, b'R', b'E', b'F', b'L', b'E', b'X']);
    for ch in 1..=4u8 {
        expected.extend_from_slice(&[213, 74, 1, ch, 0]); // isBiphasic = 0
        expected.extend_from_slice(&[213, 74, 2, ch, 0x00, 0xC0]); // phase1Voltage 5 V = 49152
        expected.extend_from_slice(&[213, 74, 17, ch, 0x00, 0x80]); // restingVoltage 0 V = 32768
        expected.extend_from_slice(&[213, 74, 11, ch, 0, 0, 0, 0]); // pulseTrainDelay = 0
        expected.extend_from_slice(&[213, 74, 8, ch, 0, 0, 0, 0]); // burstDuration = 0
        expected.extend_from_slice(&[213, 74, 14, ch, 0]); // customTrainID = 0
    }
    expected.extend_from_slice(&[213, 80]); // abort
    assert_eq!(written, expected);
    let info = device.info();
    assert_eq!(info.name, "Pulse Pal 2 (no device timestamps)");
    assert_eq!(info.firmware_version, 21);
    assert_eq!(info.channels, 4);
    fake.with(|m| {
        assert_eq!(m.client_name, b"REFLEX");
        assert_eq!(m.aborts, 1);
        for ch in m.channels {
            assert_eq!(ch.phase1_voltage, 49_152);
            assert_eq!(ch.resting_voltage, 32_768);
        }
    });
}

#[test]
fn pulse_programs_changed_timing_once_then_only_triggers() {
    let (mut device, fake) = connect(21);
    fake.clear_written();
    let pulse = OutputCommand::Pulse {
        channel: 0,
        width_us: 1_000,
    };
    let seq = device.send(pulse, 7).unwrap();
    assert_eq!(
        fake.take_written(),
        [
            213, 74, 4, 1, 20, 0, 0, 0, // phase1Duration = 20 cycles of 50 µs
            213, 74, 10, 1, 20, 0, 0, 0, // pulseTrainDuration = 20 cycles
            213, 77, 0b0001, // soft trigger channel 1
        ]
    );
    assert!(events(&mut device).is_empty(), "Pulse Pal reports no acks");
    let again = device.send(pulse, 8).unwrap();
    assert_eq!(again, seq.wrapping_add(1));
    assert_eq!(fake.take_written(), [213, 77, 0b0001]);
    // Rounded to the nearest 50 µs cycle: 1_020 µs is still 20 cycles, 1_030 µs is 21.
    device
        .send(
            OutputCommand::Pulse {
                channel: 0,
                width_us: 1_020,
            },
            9,
        )
        .unwrap();
    assert_eq!(fake.take_written(), [213, 77, 0b0001]);
    device
        .send(
            OutputCommand::Pulse {
                channel: 3,
                width_us: 1_030,
            },
            9,
        )
        .unwrap();
    assert_eq!(
        fake.take_written(),
        [
            213, 74, 4, 4, 21, 0, 0, 0, 213, 74, 10, 4, 21, 0, 0, 0, 213, 77, 0b1000
        ]
    );
    device.poll(&mut |_| panic!("no events")).unwrap();
    fake.with(|m| {
        assert_eq!(m.channels[0].triggers, 3);
        assert_eq!(m.channels[3].triggers, 1);
        assert_eq!(m.channels[3].phase1_cycles, 21);
    });
}

#[test]
fn pulse_train_maps_period_width_and_count_onto_device_timing() {
    let (mut device, fake) = connect(21);
    fake.clear_written();
    device
        .send(
            OutputCommand::PulseTrain {
                channel: 2,
                period_us: 10_000,
                width_us: 2_000,
                count: 5,
            },
            1,
        )
        .unwrap();
    // phase1 = 40 cycles, gap = 160 cycles, train = 4 · 200 + 40 = 840 cycles (0x348).
    assert_eq!(
        fake.take_written(),
        [
            213, 74, 4, 3, 40, 0, 0, 0, //
            213, 74, 7, 3, 160, 0, 0, 0, //
            213, 74, 10, 3, 0x48, 0x03, 0, 0, //
            213, 77, 0b0100,
        ]
    );
    device.poll(&mut |_| {}).unwrap();
    let ch = fake.with(|m| m.channels[2]);
    assert_eq!(
        ch,
        PulsePalChannel {
            phase1_voltage: 49_152,
            resting_voltage: 32_768,
            phase1_cycles: 40,
            inter_pulse_cycles: 160,
            train_cycles: 840,
            triggers: 1,
            ..PulsePalChannel::default()
        }
    );
}

#[test]
fn set_level_writes_fixed_voltages_and_all_off_aborts() {
    let (mut device, fake) = connect(21);
    fake.clear_written();
    device
        .send(
            OutputCommand::SetLevel {
                channel: 1,
                high: true,
            },
            1,
        )
        .unwrap();
    assert_eq!(fake.take_written(), [213, 79, 2, 0x00, 0xC0]);
    assert_eq!(fake.with(|m| m.channels[1].fixed_voltage), Some(49_152));
    device
        .send(
            OutputCommand::SetLevel {
                channel: 1,
                high: false,
            },
            2,
        )
        .unwrap();
    assert_eq!(fake.take_written(), [213, 79, 2, 0x00, 0x80]);
    device.poll(&mut |_| {}).unwrap(); // two confirm bytes consumed
    device.send(OutputCommand::AllOff, 3).unwrap();
    assert_eq!(fake.take_written(), [213, 80]);
    device.all_off().unwrap();
    assert_eq!(fake.take_written(), [213, 80]);
    assert_eq!(fake.with(|m| m.aborts), 3);
    drop(device);
    assert_eq!(fake.take_written(), [213, 81], "dropping disconnects");
    assert_eq!(fake.with(|m| m.disconnects), 1);
}

#[test]
fn pulse_pal_1_uses_8_bit_voltages() {
    let (mut device, fake) = connect(5);
    assert_eq!(device.info().name, "Pulse Pal 1 (no device timestamps)");
    assert_eq!(device.voltage_codes(), (192, 128));
    let written = fake.take_written();
    assert_eq!(&written[10..20], [213, 74, 1, 1, 0, 213, 74, 2, 1, 192]);
    device
        .send(
            OutputCommand::SetLevel {
                channel: 3,
                high: true,
            },
            1,
        )
        .unwrap();
    assert_eq!(fake.take_written(), [213, 79, 4, 192]);
    device.poll(&mut |_| {}).unwrap();
}

#[test]
fn refuses_what_the_device_cannot_do() {
    let (mut device, fake) = connect(21);
    fake.clear_written();
    let err = device
        .send(
            OutputCommand::Pulse {
                channel: 4,
                width_us: 100,
            },
            1,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        OutputError::BadChannel {
            channel: 4,
            channels: 4
        }
    ));
    let err = device
        .send(
            OutputCommand::Pulse {
                channel: 0,
                width_us: 24,
            },
            1,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pulse: Pulse Pal: width_us rounds to 0 cycles of 50 µs"
    );
    let err = device
        .send(
            OutputCommand::PulseTrain {
                channel: 0,
                period_us: 1_010,
                width_us: 1_000,
                count: 3,
            },
            1,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pulse train: Pulse Pal: width and period round to the same 50 µs cycle"
    );
    let err = device.request_sync().unwrap_err();
    assert!(err.to_string().contains("no device clock"), "{err}");
    device.heartbeat().unwrap();
    assert!(fake.take_written().is_empty(), "nothing sent for refusals");
}

#[test]
fn unexpected_bytes_from_the_device_are_reported() {
    let (mut device, fake) = connect(21);
    fake.inject(&[7]);
    let err = device.poll(&mut |_| {}).unwrap_err();
    let (kind, reply) = bad_reply(&err);
    assert_eq!(kind, ErrorKind::InvalidData);
    assert_eq!(reply.device, "Pulse Pal");
    assert_eq!(
        reply.what,
        "unexpected byte 7 from the device (0 confirm bytes were owed)"
    );
    device.poll(&mut |_| {}).unwrap();
}

#[test]
fn a_wrong_or_missing_handshake_is_an_error() {
    let err = PulsePal::connect(Fake::new(Answers(0)), PulsePalConfig::default()).unwrap_err();
    let (kind, reply) = bad_reply(&err);
    assert_eq!(kind, ErrorKind::InvalidData);
    assert!(
        reply.what.starts_with("handshake answered 0 instead of 75"),
        "{reply}"
    );
    let err = PulsePal::connect(Fake::new(Silent), PulsePalConfig::default()).unwrap_err();
    let (kind, reply) = bad_reply(&err);
    assert_eq!(kind, ErrorKind::TimedOut);
    assert!(reply.what.contains("handshake reply"), "{reply}");
}
