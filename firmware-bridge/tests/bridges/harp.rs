//! Harp bridge, byte for byte against `tests/fixtures/harp_messages.txt`, which harp-tech's own
//! Python library (`harp-protocol` 0.5.0) wrote through `tools/peers/harp_fixtures.py`.

use std::collections::HashMap;
use std::io::ErrorKind;

use reflex_firmware_bridge::harp::{
    self, Harp, HarpConfig, Message, Parser, decode, encode_request,
};
use reflex_firmware_bridge::{DeviceError, DeviceEvent, Output, OutputCommand, OutputError};

use crate::fake::{Fake, HarpModel, Silent, harp_reply};
use crate::{bad_reply, events};

/// The peer's messages by name.
fn fixtures() -> HashMap<&'static str, Vec<u8>> {
    include_str!("../fixtures/harp_messages.txt")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (name, hex) = l.split_once(' ').unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            (name, bytes)
        })
        .collect()
}

fn fx(name: &str) -> Vec<u8> {
    fixtures()
        .remove(name)
        .unwrap_or_else(|| panic!("fixture {name} missing"))
}

fn connect() -> (Harp<Fake<HarpModel>>, Fake<HarpModel>) {
    let fake = Fake::new(HarpModel::behavior());
    let device = Harp::connect(fake.clone(), HarpConfig::behavior()).unwrap();
    (device, fake)
}

#[test]
fn requests_match_the_harp_protocol_library() {
    let cases: [(&str, u8, u8, u8, &[u8]); 12] = [
        ("req_read_who_am_i", 1, 0, 0x02, &[]),
        ("req_read_fw_version_h", 1, 6, 0x01, &[]),
        ("req_read_fw_version_l", 1, 7, 0x01, &[]),
        ("req_read_serial_number", 1, 13, 0x02, &[]),
        ("req_write_pulse_enable_none", 2, 45, 0x02, &[0, 0]),
        ("req_write_output_clear_all14", 2, 35, 0x02, &[0xFF, 0x3F]),
        ("req_write_output_set_ch2", 2, 34, 0x02, &[4, 0]),
        ("req_write_output_clear_ch2", 2, 35, 0x02, &[4, 0]),
        ("req_write_pulse_enable_ch1", 2, 45, 0x02, &[2, 0]),
        ("req_write_pulse_width_ch1_10ms", 2, 47, 0x02, &[10, 0]),
        ("req_write_output_set_ch1", 2, 34, 0x02, &[2, 0]),
        ("req_read_timestamp_second", 1, 8, 0x04, &[]),
    ];
    for (name, message_type, address, payload_type, payload) in cases {
        let mut out = [0u8; 32];
        let n = encode_request(message_type, address, payload_type, payload, &mut out).unwrap();
        assert_eq!(out[..n], fx(name), "{name}");
    }
    assert_eq!(
        encode_request(2, 34, 2, &[4, 0], &mut [0u8; 6]),
        None,
        "buffer too short"
    );
}

#[test]
fn replies_from_the_harp_protocol_library_decode_with_device_time() {
    let frame = fx("rep_output_set_ch2_t1234_5");
    assert_eq!(
        decode(&frame).unwrap(),
        Message {
            message_type: 2,
            is_error: false,
            address: 34,
            payload_type: 0x12,
            device_time_us: Some(1_234_500_000),
            payload: &[4, 0],
        }
    );
    let frame = fx("rep_timestamp_second_t1300_31249");
    let m = decode(&frame).unwrap();
    assert_eq!(m.device_time_us, Some(1_300_999_968));
    assert_eq!(m.payload, 1300u32.to_le_bytes());
    let frame = fx("evt_digital_input_state");
    let m = decode(&frame).unwrap();
    assert_eq!((m.message_type, m.address, m.payload), (3, 32, &[1u8][..]));
    assert_eq!(m.device_time_us, Some(1_235_000_224));
}

#[test]
fn fake_device_encoder_matches_peer() {
    assert_eq!(
        harp_reply(1, 0, 0x02, 100, 0, &1216u16.to_le_bytes()),
        fx("rep_who_am_i_1216")
    );
    assert_eq!(
        harp_reply(2, 34, 0x02, 1234, 15625, &[4, 0]),
        fx("rep_output_set_ch2_t1234_5")
    );
    assert_eq!(
        harp_reply(1, 8, 0x04, 1300, 31249, &1300u32.to_le_bytes()),
        fx("rep_timestamp_second_t1300_31249")
    );
}

#[test]
fn connect_identifies_the_board_and_turns_outputs_off() {
    let fake = Fake::new(HarpModel::behavior());
    fake.with(|m| m.outputs = 0b101);
    let device = Harp::connect(fake.clone(), HarpConfig::behavior()).unwrap();
    let expected: Vec<u8> = [
        "req_read_who_am_i",
        "req_read_fw_version_h",
        "req_read_fw_version_l",
        "req_read_serial_number",
        "req_write_pulse_enable_none",
        "req_write_output_clear_all14",
    ]
    .iter()
    .flat_map(|name| fx(name))
    .collect();
    assert_eq!(fake.take_written(), expected);
    let info = device.info();
    assert_eq!(info.name, "Harp (WHO_AM_I 1216, device timestamps)");
    assert_eq!(info.firmware_version, 0x0303);
    assert_eq!(info.device_id, 4242);
    assert_eq!(info.channels, 14);
    fake.with(|m| {
        assert_eq!(m.outputs, 0);
        assert_eq!(m.pulse_enable, 0);
    });
}

#[test]
fn set_level_is_acked_with_the_device_timestamp() {
    let (mut device, fake) = connect();
    fake.clear_written();
    fake.with(|m| (m.seconds, m.ticks) = (1234, 15625));
    let seq = device
        .send(
            OutputCommand::SetLevel {
                channel: 2,
                high: true,
            },
            77,
        )
        .unwrap();
    assert_eq!(fake.take_written(), fx("req_write_output_set_ch2"));
    assert_eq!(
        events(&mut device),
        [DeviceEvent::Ack {
            seq,
            tag: 77,
            device_time_us: 1_234_500_000
        }]
    );
    assert_eq!(fake.with(|m| m.outputs), 0b100);
    let seq = device
        .send(
            OutputCommand::SetLevel {
                channel: 2,
                high: false,
            },
            78,
        )
        .unwrap();
    assert_eq!(fake.take_written(), fx("req_write_output_clear_ch2"));
    assert!(matches!(
        events(&mut device).as_slice(),
        [DeviceEvent::Ack { seq: s, tag: 78, .. }] if *s == seq
    ));
    assert_eq!(fake.with(|m| m.outputs), 0);
}

#[test]
fn pulse_enables_pulse_mode_and_width_once_and_acks_the_set() {
    let (mut device, fake) = connect();
    fake.clear_written();
    let pulse = OutputCommand::Pulse {
        channel: 1,
        width_us: 10_000,
    };
    let seq = device.send(pulse, 5).unwrap();
    let expected: Vec<u8> = [
        "req_write_pulse_enable_ch1",
        "req_write_pulse_width_ch1_10ms",
        "req_write_output_set_ch1",
    ]
    .iter()
    .flat_map(|name| fx(name))
    .collect();
    assert_eq!(fake.take_written(), expected);
    let got = events(&mut device);
    assert!(
        matches!(got.as_slice(), [DeviceEvent::Ack { seq: s, tag: 5, .. }] if *s == seq),
        "configuration replies are not acks: {got:?}"
    );
    fake.with(|m| {
        assert_eq!(m.pulse_enable, 0b10);
        assert_eq!(m.pulse_ms[1], 10);
    });
    // The same pulse again: only the set.
    device.send(pulse, 6).unwrap();
    assert_eq!(fake.take_written(), fx("req_write_output_set_ch1"));
    assert_eq!(events(&mut device).len(), 1);
    // Holding the line high needs pulse mode off for it first.
    device
        .send(
            OutputCommand::SetLevel {
                channel: 1,
                high: true,
            },
            7,
        )
        .unwrap();
    let mut expected = Vec::new();
    let mut out = [0u8; 16];
    let n = encode_request(2, harp::behavior::OUTPUT_PULSE_ENABLE, 2, &[0, 0], &mut out).unwrap();
    expected.extend_from_slice(&out[..n]);
    expected.extend(fx("req_write_output_set_ch1"));
    assert_eq!(fake.take_written(), expected);
    assert_eq!(events(&mut device).len(), 1);
    assert_eq!(fake.with(|m| m.pulse_enable), 0);
}

#[test]
fn all_off_clears_every_line_and_sync_reads_the_clock() {
    let (mut device, fake) = connect();
    for channel in [0, 5, 13] {
        device
            .send(
                OutputCommand::SetLevel {
                    channel,
                    high: true,
                },
                1,
            )
            .unwrap();
    }
    events(&mut device);
    assert_eq!(fake.with(|m| m.outputs), 0b10_0000_0010_0001);
    fake.clear_written();
    let seq = device.send(OutputCommand::AllOff, 9).unwrap();
    assert_eq!(fake.take_written(), fx("req_write_output_clear_all14"));
    assert!(matches!(
        events(&mut device).as_slice(),
        [DeviceEvent::Ack { seq: s, tag: 9, .. }] if *s == seq
    ));
    assert_eq!(fake.with(|m| m.outputs), 0);
    device.all_off().unwrap();
    assert_eq!(fake.take_written(), fx("req_write_output_clear_all14"));
    assert!(events(&mut device).is_empty(), "all_off's reply is no ack");

    fake.with(|m| (m.seconds, m.ticks) = (1300, 31249));
    let seq = device.request_sync().unwrap();
    assert_eq!(fake.take_written(), fx("req_read_timestamp_second"));
    assert_eq!(
        events(&mut device),
        [DeviceEvent::SyncReply {
            seq,
            device_time_us: 1_300_999_968
        }]
    );
}

#[test]
fn error_replies_become_device_errors() {
    let (mut device, fake) = connect();
    fake.with(|m| m.refuse_address = Some(harp::behavior::OUTPUT_SET));
    let seq = device
        .send(
            OutputCommand::SetLevel {
                channel: 0,
                high: true,
            },
            1,
        )
        .unwrap();
    assert_eq!(
        events(&mut device),
        [DeviceEvent::Error {
            seq,
            error: DeviceError::BadArgument
        }]
    );
}

#[test]
fn events_are_skipped_and_corrupt_replies_resynchronise() {
    let (mut device, fake) = connect();
    fake.inject(&fx("evt_digital_input_state"));
    fake.with(|m| m.corrupt_next_reply = true);
    let lost = device
        .send(
            OutputCommand::SetLevel {
                channel: 0,
                high: true,
            },
            1,
        )
        .unwrap();
    let kept = device
        .send(
            OutputCommand::SetLevel {
                channel: 1,
                high: true,
            },
            2,
        )
        .unwrap();
    let mut got = Vec::new();
    let err = device.poll(&mut |e| got.push(e)).unwrap_err();
    let (kind, reply) = bad_reply(&err);
    assert_eq!(kind, ErrorKind::InvalidData);
    assert!(reply.what.starts_with("checksum"), "{reply}");
    assert!(
        matches!(got.as_slice(), [DeviceEvent::Ack { seq, tag: 2, .. }] if *seq == kept),
        "the good reply after the corrupt one is still delivered: {got:?}"
    );
    // The lost reply's request is forgotten: the next command pairs with its own reply.
    let _ = lost;
    let next = device.send(OutputCommand::AllOff, 3).unwrap();
    assert!(matches!(
        events(&mut device).as_slice(),
        [DeviceEvent::Ack { seq, tag: 3, .. }] if *seq == next
    ));
}

#[test]
fn an_unsolicited_reply_is_an_error() {
    let (mut device, fake) = connect();
    fake.inject(&fx("rep_output_set_ch2_t1234_5"));
    let err = device.poll(&mut |_| panic!("no events")).unwrap_err();
    assert!(
        bad_reply(&err).1.what.contains("no request is waiting"),
        "{err}"
    );
}

#[test]
fn refuses_what_the_board_cannot_do() {
    let (mut device, fake) = connect();
    fake.clear_written();
    let err = device
        .send(
            OutputCommand::PulseTrain {
                channel: 0,
                period_us: 10_000,
                width_us: 1_000,
                count: 3,
            },
            1,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        OutputError::InvalidArgument {
            command: "pulse train",
            ..
        }
    ));
    let err = device
        .send(
            OutputCommand::Pulse {
                channel: 0,
                width_us: 400,
            },
            1,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "pulse: Harp Behavior: pulse widths are whole ms, 1..=65535"
    );
    let err = device
        .send(
            OutputCommand::SetLevel {
                channel: 14,
                high: true,
            },
            1,
        )
        .unwrap_err();
    assert!(matches!(
        err,
        OutputError::BadChannel {
            channel: 14,
            channels: 14
        }
    ));
    device.heartbeat().unwrap();
    assert!(fake.take_written().is_empty());
}

#[test]
fn wrong_device_or_silence_fails_to_connect() {
    let mut model = HarpModel::behavior();
    model.who_am_i = 1234;
    let err = Harp::connect(Fake::new(model), HarpConfig::behavior()).unwrap_err();
    let (kind, reply) = bad_reply(&err);
    assert_eq!(kind, ErrorKind::InvalidData);
    assert_eq!(
        reply.what,
        "WHO_AM_I is 1234, expected 1216: wrong device on this port?"
    );
    let err = Harp::connect(Fake::new(Silent), HarpConfig::behavior()).unwrap_err();
    assert_eq!(bad_reply(&err).0, ErrorKind::TimedOut);
}

#[test]
fn parser_splits_streams_and_survives_byte_soup() {
    // Every peer message, fed one byte at a time, comes out whole and in order.
    let names = [
        "rep_who_am_i_1216",
        "rep_fw_version_h_3",
        "evt_digital_input_state",
        "rep_timestamp_second_t1300_31249",
    ];
    let stream: Vec<u8> = names.iter().flat_map(|n| fx(n)).collect();
    let mut parser = Parser::new();
    let mut addresses = Vec::new();
    for byte in &stream {
        parser.push(std::slice::from_ref(byte), &mut |m| {
            addresses.push(m.unwrap().address)
        });
    }
    assert_eq!(addresses, [0, 6, 32, 8]);
    // Garbage before a message: errors, then the message.
    let mut good = 0;
    let mut soup = vec![0xAA, 0x02, 0x05, 0x00];
    soup.extend(fx("rep_who_am_i_1216"));
    parser.push(&soup, &mut |m| good += usize::from(m.is_ok()));
    assert_eq!(good, 1);
    // Pseudo-random soup never panics.
    let mut x = 0x1234_5678u32;
    for _ in 0..100_000 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        parser.push(&x.to_le_bytes(), &mut |_| {});
    }
}
