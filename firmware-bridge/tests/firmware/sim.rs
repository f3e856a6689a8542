//! The firmware ELF under simavr, over a PTY, driven by `SerialDevice`. Times in µs; pin times
//! are simulated time from the harness, device times come from the firmware's own clock.

use reflex_firmware_bridge::{
    DeviceError, DeviceEvent, Output, OutputCommand, OutputError, SerialConfig, SerialDevice,
    SerialError,
};
use reflex_protocol::host_to_device::{self, Command};
use reflex_protocol::{MAX_FRAME_LEN, encode_frame};

use crate::rig::{Rig, SimEvent, anyhow_chain};

/// Allowed error of a simulated pulse width or period, µs.
const TOLERANCE_US: f64 = 10.0;
/// The shipped firmware's watchdog time (its Makefile default), ms. The other tests run a build
/// with a 1 s watchdog (see `rig::Built`).
const WATCHDOG_MS: f64 = 50.0;

fn frame(seq: u16, tag: u32, command: Command) -> Vec<u8> {
    let mut out = [0u8; MAX_FRAME_LEN];
    let n = host_to_device::Message { seq, tag, command }
        .encode_frame(&mut out)
        .expect("encodes");
    out[..n].to_vec()
}

fn errors(rig: &Rig) -> Vec<(u16, DeviceError)> {
    rig.events
        .iter()
        .filter_map(|e| match *e {
            DeviceEvent::Error { seq, error } => Some((seq, error)),
            _ => None,
        })
        .collect()
}

/// Waits for `n` edges on `pin` and returns them.
fn wait_edges(rig: &mut Rig, pin: u8, n: usize) -> Vec<(bool, f64)> {
    rig.wait_until(&format!("{n} edges on pin {pin}"), |rig| {
        rig.sim.edges(pin).len() >= n
    });
    rig.sim.edges(pin)
}

#[test]
fn handshake_reports_the_firmware() {
    let rig = Rig::start_shipped();
    let info = rig.dev.info();
    assert_eq!(info.protocol_version, reflex_protocol::PROTOCOL_VERSION);
    assert_eq!(info.device_id, 0x5246_5831, "\"RFX1\"");
    assert_eq!(info.firmware_version, 1);
    assert_eq!(info.channels, 4);
    assert_eq!(info.name, "reflex firmware");
}

#[test]
fn a_5_ms_pulse_is_5_ms_on_the_pin() {
    let mut rig = Rig::start();
    let seq = rig
        .dev
        .send(
            OutputCommand::Pulse {
                channel: 0,
                width_us: 5000,
            },
            42,
        )
        .expect("send");
    rig.ack_time_us(seq);
    let edges = wait_edges(&mut rig, 0, 2);
    let [(true, rise), (false, fall)] = edges[..] else {
        panic!("expected one rise then one fall, got {edges:?}");
    };
    let error_us = fall - rise - 5000.0;
    eprintln!("5 ms pulse: width error {error_us:+.3} µs (simulated)");
    assert!(error_us.abs() <= TOLERANCE_US, "width {} µs", fall - rise);
    // No other channel moved.
    for pin in 1..4 {
        assert!(rig.sim.edges(pin).is_empty(), "pin {pin} moved");
    }
}

#[test]
fn pulses_of_many_widths_are_exact() {
    let mut rig = Rig::start();
    for (i, width_us) in [5u32, 10, 45, 64, 80, 81, 90, 100, 250, 1000, 20_000]
        .into_iter()
        .enumerate()
    {
        let seq = rig
            .dev
            .send(
                OutputCommand::Pulse {
                    channel: 1,
                    width_us,
                },
                0,
            )
            .expect("send");
        rig.ack_time_us(seq);
        let edges = wait_edges(&mut rig, 1, 2 * (i + 1));
        let (rise, fall) = (edges[2 * i], edges[2 * i + 1]);
        assert!(rise.0 && !fall.0, "{edges:?}");
        let error_us = fall.1 - rise.1 - f64::from(width_us);
        eprintln!("{width_us} µs pulse: width error {error_us:+.3} µs (simulated)");
        assert!(
            error_us.abs() <= TOLERANCE_US,
            "{width_us} µs pulse: error {error_us} µs"
        );
    }
}

#[test]
fn ack_time_is_the_rising_edge_on_the_device_clock() {
    let mut rig = Rig::start();
    let mut offsets = Vec::new();
    for i in 0..3 {
        let seq = rig
            .dev
            .send(
                OutputCommand::Pulse {
                    channel: 2,
                    width_us: 1000,
                },
                i,
            )
            .expect("send");
        let ack_us = rig.ack_time_us(seq);
        let edges = wait_edges(&mut rig, 2, 2 * (i as usize + 1));
        let (high, rise_us) = edges[2 * i as usize];
        assert!(high);
        // The device clock starts when the firmware starts its timer, a fixed time after the
        // simulation's cycle 0: the offset is that constant, the same for every ack.
        offsets.push(rise_us - ack_us as f64);
    }
    eprintln!("ack vs simulated edge offsets: {offsets:?} µs");
    assert!(
        offsets[0] >= 0.0 && offsets[0] < 1000.0,
        "clock origin {offsets:?}"
    );
    for offset in &offsets {
        assert!(
            (offset - offsets[0]).abs() <= 1.0,
            "acks do not track edges: {offsets:?}"
        );
    }
}

#[test]
fn a_pulse_train_has_its_count_period_and_width() {
    let mut rig = Rig::start();
    let (period_us, width_us, count) = (10_000u32, 2_000u32, 5u32);
    let seq = rig
        .dev
        .send(
            OutputCommand::PulseTrain {
                channel: 3,
                period_us,
                width_us,
                count,
            },
            7,
        )
        .expect("send");
    rig.ack_time_us(seq);
    let edges = wait_edges(&mut rig, 3, 2 * count as usize);
    // One more round trip well after the last pulse: no extra pulse came.
    rig.wait_until("the train's end", |rig| {
        rig.sim.events.iter().any(|e| match *e {
            SimEvent::Rx { t_us } => t_us > edges[edges.len() - 1].1 + 3.0 * f64::from(period_us),
            _ => false,
        })
    });
    rig.sync();
    let edges = rig.sim.edges(3);
    assert_eq!(edges.len(), 2 * count as usize, "{edges:?}");
    let rises: Vec<f64> = edges.iter().filter(|e| e.0).map(|e| e.1).collect();
    let falls: Vec<f64> = edges.iter().filter(|e| !e.0).map(|e| e.1).collect();
    for (rise, fall) in rises.iter().zip(&falls) {
        assert!(
            (fall - rise - f64::from(width_us)).abs() <= TOLERANCE_US,
            "width {}",
            fall - rise
        );
    }
    for (k, pair) in rises.windows(2).enumerate() {
        let error_us = pair[1] - pair[0] - f64::from(period_us);
        assert!(
            error_us.abs() <= TOLERANCE_US,
            "period {k}: error {error_us} µs"
        );
    }
    // Rising edges sit on the grid: no error accumulates over the train.
    let drift_us = rises[rises.len() - 1] - rises[0] - f64::from(period_us * (count - 1));
    eprintln!("train: total drift of the last rise {drift_us:+.3} µs");
    assert!(drift_us.abs() <= 2.0);
}

#[test]
fn traffic_during_a_fast_train_loses_no_byte() {
    // Edges every 100 µs while the host streams frames at the line's full speed: the edge
    // interrupt must never hold the UART off long enough to drop a byte (a dropped byte would
    // be a bad frame, and the device would turn every output off).
    let mut rig = Rig::start();
    let (period_us, width_us, count) = (200u32, 100u32, 1500u32);
    let seq = rig
        .dev
        .send(
            OutputCommand::PulseTrain {
                channel: 2,
                period_us,
                width_us,
                count,
            },
            0,
        )
        .expect("send");
    rig.ack_time_us(seq);
    // Bursts of sync requests, each answered before the next, until the train ends.
    const BURST: usize = 2;
    let mut sent = 0;
    while rig.sim.edges(2).len() < 2 * count as usize && errors(&rig).is_empty() {
        for _ in 0..BURST {
            rig.dev.request_sync().expect("request_sync");
        }
        sent += BURST;
        rig.wait_until("the burst's replies", |rig| {
            rig.events
                .iter()
                .filter(|e| matches!(e, DeviceEvent::SyncReply { .. }))
                .count()
                >= sent
                || !errors(rig).is_empty()
        });
    }
    assert!(
        sent >= 40,
        "the train ended before the traffic ran ({sent} frames; errors {:?})",
        errors(&rig)
    );
    rig.sync();
    assert_eq!(errors(&rig), [], "the device saw a corrupted frame");
    // The device clock never went back: every overflow of its 16-bit timer was counted while
    // the edge interrupt kept clearing its own flag (simavr 1.6 lost them; see the harness).
    let times: Vec<u64> = rig
        .events
        .iter()
        .filter_map(|e| match *e {
            DeviceEvent::SyncReply { device_time_us, .. } => Some(device_time_us),
            _ => None,
        })
        .collect();
    assert!(
        times.windows(2).all(|p| p[0] < p[1]),
        "device time went back: {times:?}"
    );
    let edges = rig.sim.edges(2);
    assert_eq!(edges.len(), 2 * count as usize);
    let rises: Vec<f64> = edges.iter().filter(|e| e.0).map(|e| e.1).collect();
    let worst_us = rises
        .windows(2)
        .map(|p| (p[1] - p[0] - f64::from(period_us)).abs())
        .fold(0.0, f64::max);
    eprintln!("fast train under traffic: worst period error {worst_us:.3} µs");
    assert!(worst_us <= TOLERANCE_US);
}

#[test]
fn watchdog_turns_every_output_off_when_heartbeats_stop() {
    let mut rig = Rig::start_shipped();
    let seq = rig
        .dev
        .send(
            OutputCommand::SetLevel {
                channel: 0,
                high: true,
            },
            0,
        )
        .expect("send");
    rig.ack_time_us(seq);
    let seq = rig
        .dev
        .send(
            OutputCommand::PulseTrain {
                channel: 1,
                period_us: 2_000,
                width_us: 1_000,
                count: 1_000,
            },
            0,
        )
        .expect("send");
    rig.ack_time_us(seq);
    rig.sync();
    rig.heartbeats = false;
    rig.wait_until("the watchdog's error", |rig| {
        errors(rig)
            .iter()
            .any(|&(_, e)| e == DeviceError::WatchdogExpired)
    });
    rig.sync(); // the error's `tx` line, and every edge before it, are in
    let last_frame_us = rig
        .sim
        .events
        .iter()
        .filter_map(|e| match *e {
            SimEvent::Rx { t_us } => Some(t_us),
            _ => None,
        })
        .filter(|&t| t < rig.sim.edges(0).last().map_or(0.0, |e| e.1))
        .fold(f64::MIN, f64::max);
    let (high, off_us) = *rig.sim.edges(0).last().expect("pin 0 edges");
    assert!(!high, "pin 0 went low");
    let reaction_us = off_us - last_frame_us;
    eprintln!("watchdog: outputs off {reaction_us:.1} µs after the last frame (simulated)");
    assert!(
        reaction_us >= WATCHDOG_MS * 1000.0,
        "too early: {reaction_us} µs"
    );
    assert!(
        reaction_us <= (WATCHDOG_MS + 5.0) * 1000.0,
        "too late: {reaction_us} µs"
    );
    for pin in 0..4 {
        assert!(!rig.sim.level(pin), "pin {pin} still high");
    }
    // The train was cancelled: pin 1 stayed low from then on.
    let last_pin1 = rig.sim.edges(1).last().copied().expect("train edges");
    assert!(!last_pin1.0 && last_pin1.1 <= off_us + 1.0, "{last_pin1:?}");
}

#[test]
fn a_corrupted_frame_is_refused_and_changes_no_output() {
    let mut rig = Rig::start();
    // A pulse command with one payload bit flipped: the CRC no longer matches.
    let mut bad = frame(
        100,
        0,
        Command::Pulse {
            channel: 0,
            width_us: 5000,
        },
    );
    bad[9] ^= 0x04;
    assert!(!bad[..bad.len() - 1].contains(&0));
    rig.dev.write_raw(&bad).expect("write");
    rig.wait_until("the CRC error", |rig| !errors(rig).is_empty());
    assert_eq!(errors(&rig)[0].1, DeviceError::BadCrc);
    rig.sync();
    assert!(
        rig.sim.edges(0).is_empty(),
        "the corrupted pulse fired: {:?}",
        rig.sim.edges(0)
    );
    assert!(
        !rig.events
            .iter()
            .any(|e| matches!(e, DeviceEvent::Ack { .. }))
    );

    // With an output on, a malformed frame turns it off (SPEC: the device cannot tell what
    // the frame was, so it does not guess).
    let seq = rig
        .dev
        .send(
            OutputCommand::SetLevel {
                channel: 1,
                high: true,
            },
            0,
        )
        .expect("send");
    rig.ack_time_us(seq);
    rig.dev.write_raw(&bad).expect("write");
    rig.wait_until("the second CRC error", |rig| errors(rig).len() >= 2);
    rig.sync();
    let edges = rig.sim.edges(1);
    assert_eq!(
        edges.iter().map(|e| e.0).collect::<Vec<_>>(),
        [true, false],
        "{edges:?}"
    );
}

#[test]
fn malformed_frames_and_bad_arguments_get_their_error_codes() {
    let mut rig = Rig::start();
    let mut buf = [0u8; MAX_FRAME_LEN];
    // Unknown message type 0x09 with a valid CRC.
    let n = encode_frame(&[0x09, 1, 0, 0, 0, 0, 0], &mut buf).expect("frame");
    rig.dev.write_raw(&buf[..n]).expect("write");
    // A heartbeat one byte too long.
    let n = encode_frame(&[0x02, 2, 0, 0, 0, 0, 0, 0], &mut buf).expect("frame");
    rig.dev.write_raw(&buf[..n]).expect("write");
    // 70 bytes of garbage before a delimiter: overlong.
    let mut garbage = vec![0x55u8; 70];
    garbage.push(0);
    rig.dev.write_raw(&garbage).expect("write");
    // Channel 7 on a 4-channel device (the driver would refuse to send it).
    rig.dev
        .write_raw(&frame(
            4242,
            0,
            Command::Pulse {
                channel: 7,
                width_us: 100,
            },
        ))
        .expect("write");
    // A train whose pulses overlap.
    rig.dev
        .write_raw(&frame(
            4243,
            0,
            Command::PulseTrain {
                channel: 0,
                period_us: 100,
                width_us: 100,
                count: 2,
            },
        ))
        .expect("write");
    rig.wait_until("five errors", |rig| errors(rig).len() >= 5);
    let codes: Vec<DeviceError> = errors(&rig).iter().map(|e| e.1).collect();
    assert_eq!(
        codes,
        [
            DeviceError::UnknownCommand,
            DeviceError::BadFrame,
            DeviceError::BadFrame,
            DeviceError::BadArgument,
            DeviceError::BadArgument
        ]
    );
    // BadArgument answers with the command's seq; frame errors with the device's counter.
    assert_eq!(errors(&rig)[3].0, 4242);
    assert_eq!(errors(&rig)[4].0, 4243);
    // (consecutive; not necessarily from 0: bytes the host sent while the simulated chip was
    // still booting may have cost a frame error during the handshake, which then repeated).
    let counter = errors(&rig)[0].0;
    assert_eq!(
        errors(&rig)[..3].iter().map(|e| e.0).collect::<Vec<_>>(),
        [counter, counter.wrapping_add(1), counter.wrapping_add(2)]
    );
    rig.sync();
    for pin in 0..4 {
        assert!(rig.sim.edges(pin).is_empty(), "pin {pin} moved");
    }
}

#[test]
fn commands_without_a_matching_hello_are_refused() {
    let mut rig = Rig::start();
    // A host speaking protocol version 2 says hello: the device answers (with version 1) and
    // from then on refuses commands.
    rig.dev
        .write_raw(&frame(
            500,
            0,
            Command::Hello {
                protocol_version: 2,
            },
        ))
        .expect("write");
    rig.dev
        .write_raw(&frame(
            501,
            0,
            Command::SetLevel {
                channel: 0,
                high: true,
            },
        ))
        .expect("write");
    let sync_seq = rig.dev.request_sync().expect("request_sync");
    rig.wait_until("the version errors", |rig| errors(rig).len() >= 2);
    assert_eq!(
        errors(&rig),
        [
            (501, DeviceError::VersionMismatch),
            (sync_seq, DeviceError::VersionMismatch)
        ]
    );
    rig.catch_up(1); // the device's Hello reply is not an event
    assert!(rig.sim.edges(0).is_empty());

    // A matching Hello restores service.
    rig.dev
        .write_raw(&frame(
            502,
            0,
            Command::Hello {
                protocol_version: 1,
            },
        ))
        .expect("write");
    let seq = rig
        .dev
        .send(
            OutputCommand::SetLevel {
                channel: 0,
                high: true,
            },
            0,
        )
        .expect("send");
    rig.ack_time_us(seq);
    assert!(wait_edges(&mut rig, 0, 1)[0].0, "pin 0 went high");
}

#[test]
fn a_vanished_device_is_a_clear_error_naming_the_port() {
    let mut rig = Rig::start();
    rig.sim.kill();
    let port = rig.sim.pty.display().to_string();
    let mut error = None;
    for _ in 0..10_000 {
        let result = rig.dev.poll(&mut |_| {}).and_then(|()| rig.dev.heartbeat());
        if let Err(e) = result {
            error = Some(e);
            break;
        }
        // Bounded: the kernel reports the hang-up as soon as the harness is gone.
        std::thread::yield_now();
    }
    let error = error.expect("an error once the device is gone");
    assert!(matches!(error, OutputError::Io(_)), "{error:?}");
    assert!(error.to_string().contains("I/O error"), "{error}");
    let chain = anyhow_chain(&error);
    assert!(chain.contains(&port), "{chain}");
    // Every later call fails the same way, without touching the port.
    let again = rig
        .dev
        .send(OutputCommand::AllOff, 0)
        .expect_err("still failed");
    assert!(anyhow_chain(&again).contains(&port));
}

#[test]
fn a_silent_port_fails_the_handshake_naming_the_port() {
    // A PTY with nothing behind it: the handshake must time out with the port in the message.
    use serialport::SerialPort as _;
    let (master, slave) = serialport::TTYPort::pair().expect("pty pair");
    let port = slave.name().expect("slave name");
    drop(slave);
    let config = SerialConfig {
        handshake_timeout_ms: 300,
        hello_interval_ms: 100,
        ..SerialConfig::default()
    };
    let error = SerialDevice::open(&port, &config).expect_err("nobody answers");
    assert!(
        matches!(error, SerialError::HandshakeTimeout { .. }),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&port) && message.contains("300 ms"),
        "{message}"
    );
    drop(master);
}
