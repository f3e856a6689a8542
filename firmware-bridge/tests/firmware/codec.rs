//! The firmware's C codec (compiled for the host as `codec-dump`) and reflex-protocol produce
//! the same frames for the same messages.

use std::collections::BTreeMap;
use std::process::Command;

use reflex_protocol::MAX_FRAME_LEN;
use reflex_protocol::device_to_host::{self, ErrorCode, Reply};
use reflex_protocol::host_to_device::{self, Command as Cmd};

use crate::rig::built;

fn h2d(seq: u16, tag: u32, command: Cmd) -> Vec<u8> {
    let mut out = [0u8; MAX_FRAME_LEN];
    let n = host_to_device::Message { seq, tag, command }
        .encode_frame(&mut out)
        .expect("encodes");
    out[..n].to_vec()
}

fn d2h(seq: u16, reply: Reply) -> Vec<u8> {
    let mut out = [0u8; MAX_FRAME_LEN];
    let n = device_to_host::Message { seq, reply }
        .encode_frame(&mut out)
        .expect("encodes");
    out[..n].to_vec()
}

/// The messages `firmware/host/codec_dump.c` encodes, built with reflex-protocol.
fn rust_frames() -> BTreeMap<String, Vec<u8>> {
    let mut m = BTreeMap::new();
    let mut add = |name: &str, frame: Vec<u8>| {
        m.insert(name.to_owned(), frame);
    };
    add(
        "h2d-hello",
        h2d(
            1,
            0,
            Cmd::Hello {
                protocol_version: 1,
            },
        ),
    );
    add("h2d-heartbeat", h2d(2, 0, Cmd::Heartbeat));
    add(
        "h2d-set-level",
        h2d(
            3,
            1234,
            Cmd::SetLevel {
                channel: 2,
                high: true,
            },
        ),
    );
    add(
        "h2d-pulse",
        h2d(
            4,
            0x12345,
            Cmd::Pulse {
                channel: 0,
                width_us: 5000,
            },
        ),
    );
    add(
        "h2d-pulse-train",
        h2d(
            5,
            1000,
            Cmd::PulseTrain {
                channel: 1,
                period_us: 25_000,
                width_us: 5000,
                count: 10,
            },
        ),
    );
    add("h2d-all-off", h2d(6, 0, Cmd::AllOff));
    add("h2d-query-status", h2d(7, 0, Cmd::QueryStatus));
    add("h2d-sync-request", h2d(8, 0, Cmd::SyncRequest));
    add(
        "h2d-pulse-train-max",
        h2d(
            0xFFFF,
            u32::MAX,
            Cmd::PulseTrain {
                channel: 3,
                period_us: u32::MAX,
                width_us: 1,
                count: u32::MAX,
            },
        ),
    );
    add(
        "d2h-hello",
        d2h(
            1,
            Reply::Hello {
                protocol_version: 1,
                device_id: 0x1234_5678,
                firmware_version: 0x0102,
                channels: 4,
            },
        ),
    );
    add(
        "d2h-ack",
        d2h(
            4,
            Reply::Ack {
                tag: 74565,
                device_time_us: 1_234_567_890,
            },
        ),
    );
    add(
        "d2h-sync-reply",
        d2h(
            8,
            Reply::SyncReply {
                device_time_us: 1_000_020,
            },
        ),
    );
    add(
        "d2h-status",
        d2h(
            7,
            Reply::Status {
                levels: 0b0101,
                device_time_us: 2_000_000,
            },
        ),
    );
    add(
        "d2h-input-edge",
        d2h(
            0,
            Reply::InputEdge {
                channel: 0,
                high: true,
                device_time_us: 3_000_000,
            },
        ),
    );
    add(
        "d2h-error",
        d2h(
            9,
            Reply::Error {
                code: ErrorCode::WatchdogExpired,
            },
        ),
    );
    add(
        "d2h-ack-max",
        d2h(
            0xFFFF,
            Reply::Ack {
                tag: u32::MAX,
                device_time_us: u64::MAX,
            },
        ),
    );
    add(
        "d2h-ack-zero",
        d2h(
            0,
            Reply::Ack {
                tag: 0,
                device_time_us: 0,
            },
        ),
    );
    add(
        "d2h-status-max",
        d2h(
            0xFFFF,
            Reply::Status {
                levels: 0xF,
                device_time_us: 0x0123_4567_89AB_CDEF,
            },
        ),
    );
    add(
        "d2h-sync-reply-zero",
        d2h(0, Reply::SyncReply { device_time_us: 0 }),
    );
    for value in 1..=6u8 {
        let code = ErrorCode::from_u8(value).expect("known code");
        add(
            &format!("d2h-error-{value}"),
            d2h(0x100 * u16::from(value), Reply::Error { code }),
        );
    }
    m
}

#[test]
fn c_codec_encodes_the_same_bytes_as_reflex_protocol() {
    let out = Command::new(&built().codec_dump)
        .output()
        .expect("runs codec-dump");
    assert!(
        out.status.success(),
        "codec-dump failed (a frame did not decode back):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c_frames: BTreeMap<String, Vec<u8>> = String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|line| {
            let (name, hex) = line.split_once(':').expect("`name: hex`");
            let bytes = hex
                .split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).expect("hex byte"))
                .collect();
            (name.to_owned(), bytes)
        })
        .collect();
    let rust = rust_frames();
    assert_eq!(
        c_frames.keys().collect::<Vec<_>>(),
        rust.keys().collect::<Vec<_>>(),
        "the C and Rust lists name the same messages"
    );
    for (name, frame) in &rust {
        assert_eq!(
            &c_frames[name], frame,
            "{name}: C frame differs from reflex-protocol's"
        );
    }
}

#[test]
fn c_codec_matches_the_spec_examples() {
    // The SPEC's own hex, so the C side is checked against the contract, not only the crate.
    let spec = include_str!("../../../protocol/SPEC.md");
    let out = Command::new(&built().codec_dump)
        .output()
        .expect("runs codec-dump");
    let c_out = String::from_utf8(out.stdout).expect("utf-8");
    let mut checked = 0;
    let mut name = None;
    for line in spec.lines() {
        if let Some(n) = line.strip_prefix("example: ") {
            name = Some(n.trim().to_owned());
        } else if let (Some(frame), Some(n)) = (line.strip_prefix("frame: "), name.as_ref()) {
            let expected = format!("{n}: {}", frame.trim());
            assert!(
                c_out.lines().any(|l| l == expected),
                "SPEC example {n}: the C codec does not produce `{}`",
                frame.trim()
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 14, "every SPEC example checked");
}
