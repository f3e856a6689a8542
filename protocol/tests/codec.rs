//! Codec contract tests: the examples in `SPEC.md` byte for byte, and property tests
//! (encode∘decode = id, byte soup never panics, resynchronisation after garbage).

use proptest::prelude::*;
use reflex_protocol::device_to_host::{self, ErrorCode, Reply};
use reflex_protocol::host_to_device::{self, Command};
use reflex_protocol::{FrameDecoder, FrameError, MAX_FRAME_LEN, PROTOCOL_VERSION};

const SPEC: &str = include_str!("../SPEC.md");

/// A message of either direction, so one table holds every example.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Any {
    H(host_to_device::Message),
    D(device_to_host::Message),
}

impl Any {
    fn encode_payload(&self, out: &mut [u8]) -> usize {
        match self {
            Any::H(m) => m.encode_payload(out).unwrap(),
            Any::D(m) => m.encode_payload(out).unwrap(),
        }
    }

    fn encode_frame(&self, out: &mut [u8]) -> usize {
        match self {
            Any::H(m) => m.encode_frame(out).unwrap(),
            Any::D(m) => m.encode_frame(out).unwrap(),
        }
    }

    fn decode_like(&self, payload: &[u8]) -> Any {
        match self {
            Any::H(_) => Any::H(host_to_device::Message::decode(payload).unwrap()),
            Any::D(_) => Any::D(device_to_host::Message::decode(payload).unwrap()),
        }
    }
}

fn h(seq: u16, tag: u32, command: Command) -> Any {
    Any::H(host_to_device::Message { seq, tag, command })
}

fn d(seq: u16, reply: Reply) -> Any {
    Any::D(device_to_host::Message { seq, reply })
}

/// The messages behind the examples of SPEC.md, by example name.
fn examples() -> Vec<(&'static str, Any)> {
    vec![
        (
            "h2d-hello",
            h(
                1,
                0,
                Command::Hello {
                    protocol_version: PROTOCOL_VERSION,
                },
            ),
        ),
        ("h2d-heartbeat", h(2, 0, Command::Heartbeat)),
        (
            "h2d-set-level",
            h(
                3,
                1234,
                Command::SetLevel {
                    channel: 2,
                    high: true,
                },
            ),
        ),
        (
            "h2d-pulse",
            h(
                4,
                74565,
                Command::Pulse {
                    channel: 0,
                    width_us: 5000,
                },
            ),
        ),
        (
            "h2d-pulse-train",
            h(
                5,
                1000,
                Command::PulseTrain {
                    channel: 1,
                    period_us: 25000,
                    width_us: 5000,
                    count: 10,
                },
            ),
        ),
        ("h2d-all-off", h(6, 0, Command::AllOff)),
        ("h2d-query-status", h(7, 0, Command::QueryStatus)),
        ("h2d-sync-request", h(8, 0, Command::SyncRequest)),
        (
            "d2h-hello",
            d(
                1,
                Reply::Hello {
                    protocol_version: PROTOCOL_VERSION,
                    device_id: 0x1234_5678,
                    firmware_version: 0x0102,
                    channels: 4,
                },
            ),
        ),
        (
            "d2h-ack",
            d(
                4,
                Reply::Ack {
                    tag: 74565,
                    device_time_us: 1_234_567_890,
                },
            ),
        ),
        (
            "d2h-sync-reply",
            d(
                8,
                Reply::SyncReply {
                    device_time_us: 1_000_020,
                },
            ),
        ),
        (
            "d2h-status",
            d(
                7,
                Reply::Status {
                    levels: 0b0101,
                    device_time_us: 2_000_000,
                },
            ),
        ),
        (
            "d2h-input-edge",
            d(
                0,
                Reply::InputEdge {
                    channel: 0,
                    high: true,
                    device_time_us: 3_000_000,
                },
            ),
        ),
        (
            "d2h-error",
            d(
                9,
                Reply::Error {
                    code: ErrorCode::WatchdogExpired,
                },
            ),
        ),
    ]
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn parse_hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|t| u8::from_str_radix(t, 16).unwrap_or_else(|e| panic!("bad hex `{t}`: {e}")))
        .collect()
}

/// Examples in SPEC.md: `example: NAME`, then `payload: HEX` and `frame: HEX` lines.
fn spec_examples() -> Vec<(String, Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    let mut lines = SPEC.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if let Some(name) = line.strip_prefix("example:") {
            let payload = lines.next().and_then(|l| l.strip_prefix("payload:"));
            let frame = lines.next().and_then(|l| l.strip_prefix("frame:"));
            let (Some(payload), Some(frame)) = (payload, frame) else {
                panic!(
                    "example `{}` must be followed by payload: and frame: lines",
                    name.trim()
                );
            };
            out.push((name.trim().to_owned(), parse_hex(payload), parse_hex(frame)));
        }
    }
    out
}

#[test]
fn spec_examples_match_the_codec() {
    let spec = spec_examples();
    let table = examples();
    let mut report = String::new();
    for (name, msg) in &table {
        let mut payload = [0u8; MAX_FRAME_LEN];
        let mut frame = [0u8; MAX_FRAME_LEN];
        let p = msg.encode_payload(&mut payload);
        let f = msg.encode_frame(&mut frame);
        report.push_str(&format!(
            "example: {name}\npayload: {}\nframe: {}\n",
            hex(&payload[..p]),
            hex(&frame[..f])
        ));
        let Some((_, sp, sf)) = spec.iter().find(|(n, _, _)| n == name) else {
            continue;
        };
        assert_eq!(hex(&payload[..p]), hex(sp), "payload of `{name}`");
        assert_eq!(hex(&frame[..f]), hex(sf), "frame of `{name}`");
        let mut dec = FrameDecoder::new();
        let mut decoded = None;
        for &b in sf {
            if let Some(r) = dec.push(b) {
                decoded = Some(msg.decode_like(r.unwrap()));
            }
        }
        assert_eq!(decoded, Some(*msg), "decoding `{name}`");
    }
    for (name, _) in &table {
        assert!(
            spec.iter().any(|(n, _, _)| n == name),
            "SPEC.md lacks example `{name}`; the codec gives:\n{report}"
        );
    }
    for (name, _, _) in &spec {
        assert!(
            table.iter().any(|(n, _)| n == name),
            "SPEC.md example `{name}` has no message in the test table"
        );
    }
}

#[test]
fn unknown_types_and_lengths_are_refused() {
    use reflex_protocol::DecodeError;
    assert_eq!(
        host_to_device::Message::decode(&[]),
        Err(DecodeError::Empty)
    );
    assert_eq!(
        host_to_device::Message::decode(&[0x81, 0, 0]),
        Err(DecodeError::UnknownType { msg_type: 0x81 })
    );
    assert_eq!(
        device_to_host::Message::decode(&[0x01, 0, 0, 0, 0, 0, 0, 1, 0]),
        Err(DecodeError::UnknownType { msg_type: 0x01 })
    );
    assert_eq!(
        host_to_device::Message::decode(&[0x02, 0, 0, 0, 0, 0, 0, 0xEE]),
        Err(DecodeError::Length {
            msg_type: 0x02,
            expected: 7,
            actual: 8
        })
    );
    assert_eq!(
        host_to_device::Message::decode(&[0x03, 0, 0, 0, 0, 0, 0, 1, 2]),
        Err(DecodeError::BadField {
            field: "high",
            value: 2
        })
    );
    assert_eq!(
        device_to_host::Message::decode(&[0x86, 0, 0, 0]),
        Err(DecodeError::BadField {
            field: "code",
            value: 0
        })
    );
}

fn error_code() -> impl Strategy<Value = ErrorCode> {
    (1u8..=6).prop_map(|v| ErrorCode::from_u8(v).unwrap())
}

fn command() -> impl Strategy<Value = Command> {
    prop_oneof![
        any::<u16>().prop_map(|protocol_version| Command::Hello { protocol_version }),
        Just(Command::Heartbeat),
        (any::<u8>(), any::<bool>())
            .prop_map(|(channel, high)| Command::SetLevel { channel, high }),
        (any::<u8>(), any::<u32>())
            .prop_map(|(channel, width_us)| Command::Pulse { channel, width_us }),
        (any::<u8>(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(channel, period_us, width_us, count)| Command::PulseTrain {
                channel,
                period_us,
                width_us,
                count
            }
        ),
        Just(Command::AllOff),
        Just(Command::QueryStatus),
        Just(Command::SyncRequest),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    prop_oneof![
        (any::<u16>(), any::<u32>(), any::<u16>(), any::<u8>()).prop_map(
            |(protocol_version, device_id, firmware_version, channels)| Reply::Hello {
                protocol_version,
                device_id,
                firmware_version,
                channels
            }
        ),
        (any::<u32>(), any::<u64>()).prop_map(|(tag, device_time_us)| Reply::Ack {
            tag,
            device_time_us
        }),
        any::<u64>().prop_map(|device_time_us| Reply::SyncReply { device_time_us }),
        (any::<u32>(), any::<u64>()).prop_map(|(levels, device_time_us)| Reply::Status {
            levels,
            device_time_us
        }),
        (any::<u8>(), any::<bool>(), any::<u64>()).prop_map(|(channel, high, device_time_us)| {
            Reply::InputEdge {
                channel,
                high,
                device_time_us,
            }
        }),
        error_code().prop_map(|code| Reply::Error { code }),
    ]
}

fn host_message() -> impl Strategy<Value = host_to_device::Message> {
    (any::<u16>(), any::<u32>(), command())
        .prop_map(|(seq, tag, command)| host_to_device::Message { seq, tag, command })
}

fn device_message() -> impl Strategy<Value = device_to_host::Message> {
    (any::<u16>(), reply()).prop_map(|(seq, reply)| device_to_host::Message { seq, reply })
}

/// Feeds `bytes` and collects every outcome as owned values.
fn feed_all(dec: &mut FrameDecoder, bytes: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
    bytes
        .iter()
        .filter_map(|&b| dec.push(b).map(|r| r.map(<[u8]>::to_vec)))
        .collect()
}

proptest! {
    #[test]
    fn host_messages_round_trip(msg in host_message()) {
        let mut frame = [0u8; MAX_FRAME_LEN];
        let n = msg.encode_frame(&mut frame).unwrap();
        prop_assert!(n <= MAX_FRAME_LEN);
        prop_assert!(!frame[..n - 1].contains(&0));
        let out = feed_all(&mut FrameDecoder::new(), &frame[..n]);
        prop_assert_eq!(out.len(), 1);
        let payload = out[0].clone().unwrap();
        prop_assert_eq!(host_to_device::Message::decode(&payload), Ok(msg));
    }

    #[test]
    fn device_messages_round_trip(msg in device_message()) {
        let mut frame = [0u8; MAX_FRAME_LEN];
        let n = msg.encode_frame(&mut frame).unwrap();
        prop_assert!(n <= MAX_FRAME_LEN);
        let out = feed_all(&mut FrameDecoder::new(), &frame[..n]);
        prop_assert_eq!(out.len(), 1);
        let payload = out[0].clone().unwrap();
        prop_assert_eq!(device_to_host::Message::decode(&payload), Ok(msg));
    }

    #[test]
    fn byte_soup_never_panics(soup in proptest::collection::vec(any::<u8>(), 0..600)) {
        let mut dec = FrameDecoder::new();
        for &b in &soup {
            if let Some(Ok(payload)) = dec.push(b) {
                prop_assert!(!payload.is_empty());
                let _ = host_to_device::Message::decode(payload);
                let _ = device_to_host::Message::decode(payload);
            }
        }
    }

    #[test]
    fn payload_soup_never_panics(soup in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = host_to_device::Message::decode(&soup);
        let _ = device_to_host::Message::decode(&soup);
    }

    #[test]
    fn resyncs_after_garbage(
        garbage in proptest::collection::vec(any::<u8>(), 0..300),
        msg in host_message(),
    ) {
        let mut frame = [0u8; MAX_FRAME_LEN];
        let n = msg.encode_frame(&mut frame).unwrap();
        let mut dec = FrameDecoder::new();
        feed_all(&mut dec, &garbage);
        // The garbage may end mid-frame; the sender's delimiter before its frame closes it.
        let mut stream = vec![0u8];
        stream.extend_from_slice(&frame[..n]);
        let out = feed_all(&mut dec, &stream);
        let last = out.last().cloned().unwrap().unwrap();
        prop_assert_eq!(host_to_device::Message::decode(&last), Ok(msg));
    }
}
