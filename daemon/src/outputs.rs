//! Opening the configured output device (`[output]`): the simulated device, reflex's firmware, or a
//! Pulse Pal, Harp or Bpod through their bridges. Everything here runs once, before the loop starts.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use reflex_firmware_bridge::bpod::{Bpod, BpodConfig, BpodPort};
use reflex_firmware_bridge::harp::{Harp, HarpConfig};
use reflex_firmware_bridge::pulsepal::{PulsePal, PulsePalConfig};
use reflex_firmware_bridge::transport::SerialTransport;
use reflex_firmware_bridge::{
    Output, SerialConfig, SerialDevice, SimConfig, SimProbe, SimulatedDevice,
};

use crate::clock::SharedClock;
use crate::config::{BpodInterface, HarpBoard, OutputConfig, OutputKind};

/// Longest a command write may block on a USB serial port before the device counts as lost.
const WRITE_TIMEOUT: Duration = Duration::from_millis(50);
/// Longest wait for each answer of a third-party device's handshake.
const REPLY_TIMEOUT: Duration = Duration::from_millis(1000);

/// Opens (and handshakes with) the device `config` names; the simulated device runs on `clock`.
pub fn open(config: &OutputConfig, clock: &SharedClock) -> anyhow::Result<Box<dyn Output>> {
    let serial = |port: &str, baud_rate: u32| {
        SerialTransport::open(port, baud_rate, WRITE_TIMEOUT)
            .with_context(|| format!("opening the output device on {port}"))
    };
    Ok(match config.kind {
        OutputKind::Simulated => Box::new(simulated(config, clock)),
        OutputKind::Serial => {
            let c = &config.serial;
            let serial = SerialConfig {
                baud_rate: c.baud_rate,
                handshake_timeout_ms: c.handshake_timeout_ms,
                ..SerialConfig::default()
            };
            Box::new(
                SerialDevice::open(&c.port, &serial)
                    .with_context(|| format!("opening the output device on {}", c.port))?,
            )
        }
        OutputKind::Pulsepal => {
            let c = &config.pulsepal;
            let pulse_pal = PulsePalConfig {
                high_level_mv: c.high_level_mv,
                reply_timeout: REPLY_TIMEOUT,
            };
            Box::new(
                PulsePal::connect(serial(&c.port, c.baud_rate)?, pulse_pal)
                    .with_context(|| format!("connecting to the Pulse Pal on {}", c.port))?,
            )
        }
        OutputKind::Harp => {
            let c = &config.harp;
            let harp = match c.board {
                HarpBoard::Behavior => HarpConfig {
                    reply_timeout: REPLY_TIMEOUT,
                    ..HarpConfig::behavior()
                },
            };
            Box::new(
                Harp::connect(serial(&c.port, c.baud_rate)?, harp)
                    .with_context(|| format!("connecting to the Harp device on {}", c.port))?,
            )
        }
        OutputKind::Bpod => {
            let c = &config.bpod;
            let bpod = BpodConfig {
                port: match c.interface {
                    BpodInterface::App => BpodPort::App,
                    BpodInterface::Primary => BpodPort::Primary,
                },
                soft_codes: c.soft_codes,
                all_off_soft_code: c.all_off_soft_code,
                reply_timeout: REPLY_TIMEOUT,
            };
            Box::new(
                Bpod::connect(serial(&c.port, c.baud_rate)?, bpod).with_context(|| {
                    format!("connecting to the Bpod state machine on {}", c.port)
                })?,
            )
        }
    })
}

/// Like [`open`], and for the simulated device also its probe, which the synthetic camera's LED reads
/// (`[source.synthetic] led`, `reflex lightloop`); `None` for every other device.
pub fn open_with_probe(
    config: &OutputConfig,
    clock: &SharedClock,
) -> anyhow::Result<(Box<dyn Output>, Option<SimProbe>)> {
    if config.kind == OutputKind::Simulated {
        let device = simulated(config, clock);
        let probe = device.probe();
        return Ok((Box::new(device), Some(probe)));
    }
    open(config, clock).map(|output| (output, None))
}

/// The in-process simulated device of `[output.simulated]`, on `clock`.
fn simulated(config: &OutputConfig, clock: &SharedClock) -> SimulatedDevice {
    let c = &config.simulated;
    let host_clock = Arc::clone(clock);
    SimulatedDevice::new(
        SimConfig {
            channels: c.channels,
            actuation_delay_us: c.actuation_delay_us,
            watchdog_ms: c.watchdog_ms,
            ..SimConfig::default()
        },
        Arc::new(move || host_clock.now_ns()),
    )
}
