//! The bridges over a real serial port: [`SerialTransport`] on a pseudo-terminal whose other side
//! runs a device model, byte by byte, on its own thread (as a USB serial device would).
#![allow(unsafe_code)] // reason: opening a PTY pair needs libc calls; each is checked

use std::ffi::CStr;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use reflex_firmware_bridge::pulsepal::{PulsePal, PulsePalConfig};
use reflex_firmware_bridge::transport::SerialTransport;
use reflex_firmware_bridge::{Output, OutputCommand, SerialError};

use crate::fake::{Model, PulsePalModel};

/// A PTY whose master side runs `model` until the slave side is closed; returns the slave path,
/// the shared model and the device thread.
fn device_on_pty<M: Model>(model: M) -> (String, Arc<Mutex<M>>, JoinHandle<()>) {
    // SAFETY: posix_openpt returns a new fd or -1 (checked); grantpt/unlockpt/ptsname_r only
    // read that fd and write into the buffer given with its length.
    let (master, slave) = unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt failed");
        let master = OwnedFd::from_raw_fd(fd);
        assert_eq!(libc::grantpt(fd), 0, "grantpt");
        assert_eq!(libc::unlockpt(fd), 0, "unlockpt");
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        let slave = CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned();
        (master, slave)
    };
    let model = Arc::new(Mutex::new(model));
    let shared = Arc::clone(&model);
    let thread = std::thread::spawn(move || {
        let mut port = File::from(master);
        let mut buf = [0u8; 256];
        let mut out = Vec::new();
        // Reads fail (EIO) once the slave side is closed: the "device" then ends.
        while let Ok(n) = port.read(&mut buf) {
            if n == 0 {
                break;
            }
            out.clear();
            {
                let mut m = shared.lock().unwrap();
                for &b in &buf[..n] {
                    m.receive(b, &mut out);
                }
            }
            if port.write_all(&out).is_err() {
                break;
            }
        }
    });
    (slave, model, thread)
}

#[test]
fn pulse_pal_over_a_serial_port_connects_and_triggers() {
    let (path, model, device) = device_on_pty(PulsePalModel::new(21));
    let transport = SerialTransport::open(&path, 115_200, Duration::from_millis(200)).unwrap();
    assert_eq!(transport.name(), path);
    let config = PulsePalConfig {
        reply_timeout: Duration::from_secs(10),
        ..PulsePalConfig::default()
    };
    let mut pulse_pal = PulsePal::connect(transport, config).unwrap();
    assert_eq!(pulse_pal.info().firmware_version, 21);
    pulse_pal
        .send(
            OutputCommand::Pulse {
                channel: 2,
                width_us: 5_000,
            },
            7,
        )
        .unwrap();
    // A round trip that the device answers: once its reply is back, the pulse was received.
    pulse_pal.all_off().unwrap();
    drop(pulse_pal);
    device.join().unwrap();
    let m = model.lock().unwrap();
    assert_eq!(m.client_name, b"REFLEX");
    assert_eq!(m.channels[2].triggers, 1, "{:?}", m.channels[2]);
    assert_eq!(m.channels[2].phase1_cycles, 100, "5 ms in 50 µs cycles");
    assert!(m.aborts >= 2, "connect and all_off each abort");
}

#[test]
fn a_missing_port_is_named() {
    let e = SerialTransport::open("/dev/no-such-reflex-port", 115_200, Duration::ZERO).unwrap_err();
    assert!(matches!(e, SerialError::Open { ref port, .. } if port == "/dev/no-such-reflex-port"));
    assert!(e.to_string().contains("/dev/no-such-reflex-port"), "{e}");
}
