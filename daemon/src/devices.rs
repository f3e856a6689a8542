//! `reflex devices` and `reflex device …`: find serial ports and talk to the reflex firmware on
//! one (`firmware-bridge/firmware/`), outside a session: handshake, round-trip times, one pulse.

use anyhow::{Context, bail};
use reflex_firmware_bridge::serial::{self, DEFAULT_BAUD_RATE};
use reflex_firmware_bridge::{DeviceEvent, Output, OutputCommand, SerialConfig, SerialDevice};

use crate::clock::{Clock, MonotonicClock};

/// How long a single reply may take before the command gives up, in ns.
const REPLY_TIMEOUT_NS: u64 = 1_000_000_000;

/// `reflex device …`: commands for one device on a serial port.
#[derive(clap::Subcommand)]
pub enum DeviceCommand {
    /// Handshake, print who the device is, then time round trips of sync requests (host →
    /// device → host) and print min/p50/p99/max.
    Ping(PingArgs),
    /// Fire one pulse and print the device time of its rising edge (from the device's ack).
    Pulse(PulseArgs),
}

/// The port and line speed.
#[derive(clap::Args)]
pub struct PortArgs {
    /// Serial port of the device (`reflex devices` lists them), e.g. /dev/ttyACM0.
    pub port: String,
    /// Line speed in baud.
    #[arg(long, default_value_t = DEFAULT_BAUD_RATE)]
    pub baud: u32,
    /// Give up the handshake after this many ms.
    #[arg(long, default_value_t = 3000)]
    pub handshake_timeout_ms: u64,
}

/// Arguments of `reflex device ping`.
#[derive(clap::Args)]
pub struct PingArgs {
    #[command(flatten)]
    port: PortArgs,
    /// Number of round trips to time.
    #[arg(long, default_value_t = 100)]
    count: usize,
}

/// Arguments of `reflex device pulse`.
#[derive(clap::Args)]
pub struct PulseArgs {
    #[command(flatten)]
    port: PortArgs,
    /// Output channel.
    #[arg(long, default_value_t = 0)]
    channel: u8,
    /// Pulse width in ms (µs resolution).
    #[arg(long)]
    width_ms: f64,
}

/// `reflex devices`: lists serial ports, with USB vendor/product ids and serial numbers, the GenICam
/// cameras Aravis finds (or why it cannot look), and the V4L2 cameras with their formats, sizes and rates.
pub fn list_ports() -> anyhow::Result<()> {
    let ports = serial::available_ports().context("listing serial ports")?;
    if ports.is_empty() {
        println!("no serial ports found");
    }
    for port in ports {
        match port.usb {
            Some(usb) => println!(
                "{}  usb {:04x}:{:04x}  serial {}  {}{}",
                port.name,
                usb.vid,
                usb.pid,
                usb.serial_number.as_deref().unwrap_or("-"),
                usb.manufacturer
                    .as_deref()
                    .map_or(String::new(), |m| format!("{m} ")),
                usb.product.as_deref().unwrap_or(""),
            ),
            None => println!("{}", port.name),
        }
    }
    crate::camera::aravis::print_devices();
    crate::camera::v4l2_stream::print_devices();
    Ok(())
}

/// Runs one `reflex device …` command.
pub fn run_cli(command: DeviceCommand) -> anyhow::Result<()> {
    match command {
        DeviceCommand::Ping(args) => ping(&args),
        DeviceCommand::Pulse(args) => pulse(&args),
    }
}

fn open(args: &PortArgs) -> anyhow::Result<SerialDevice> {
    let config = SerialConfig {
        baud_rate: args.baud,
        handshake_timeout_ms: args.handshake_timeout_ms,
        ..SerialConfig::default()
    };
    let device = SerialDevice::open(&args.port, &config)?;
    let info = device.info();
    println!(
        "{}: {} id {:#010x}, protocol version {}, firmware version {}, {} output channels",
        args.port,
        info.name,
        info.device_id,
        info.protocol_version,
        info.firmware_version,
        info.channels
    );
    Ok(device)
}

/// One clock-sync exchange: the device's µs time when it answered.
fn device_time(device: &mut SerialDevice, clock: &MonotonicClock) -> anyhow::Result<u64> {
    let seq = device.request_sync().context("sending a sync request")?;
    wait_for(device, clock, "sync reply", 0, |event| match *event {
        DeviceEvent::SyncReply {
            seq: s,
            device_time_us,
        } if s == seq => Some(device_time_us),
        _ => None,
    })
}

/// Polls `device` until `want` picks a value out of an event; device errors are printed, a
/// silent device is an error after [`REPLY_TIMEOUT_NS`] + `extra_ns`.
fn wait_for<T>(
    device: &mut SerialDevice,
    clock: &MonotonicClock,
    what: &str,
    extra_ns: u64,
    mut want: impl FnMut(&DeviceEvent) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = clock.now_ns() + REPLY_TIMEOUT_NS + extra_ns;
    let port = device.port_name().to_owned();
    loop {
        let mut found = None;
        device
            .poll(&mut |event| {
                if found.is_none() {
                    found = want(&event);
                }
                if let DeviceEvent::Error { seq, error } = event {
                    eprintln!("device reported (seq {seq}): {error}");
                }
            })
            .with_context(|| format!("reading from {port}"))?;
        if let Some(value) = found {
            return Ok(value);
        }
        if clock.now_ns() > deadline {
            bail!(
                "no {what} from {port} within {} ms",
                (REPLY_TIMEOUT_NS + extra_ns) / 1_000_000
            );
        }
        std::thread::yield_now();
    }
}

fn ping(args: &PingArgs) -> anyhow::Result<()> {
    if args.count == 0 {
        bail!("--count must be at least 1");
    }
    let clock = MonotonicClock::new();
    let mut device = open(&args.port)?;
    let mut round_trips_ns = Vec::with_capacity(args.count);
    let mut first_device_us = None;
    let mut last_device_us = 0;
    let start_ns = clock.now_ns();
    for _ in 0..args.count {
        let sent_ns = clock.now_ns();
        let device_us = device_time(&mut device, &clock)?;
        round_trips_ns.push(clock.now_ns() - sent_ns);
        first_device_us.get_or_insert(device_us);
        last_device_us = device_us;
    }
    let elapsed_ns = clock.now_ns() - start_ns;
    round_trips_ns.sort_unstable();
    let at = |q: f64| {
        let i = ((round_trips_ns.len() - 1) as f64 * q).round() as usize;
        round_trips_ns.get(i).copied().unwrap_or(0) as f64 / 1000.0
    };
    println!(
        "{} sync round trips (host → device → host): min {:.1} µs  p50 {:.1} µs  p99 {:.1} µs  max {:.1} µs",
        round_trips_ns.len(),
        at(0.0),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    if let Some(first) = first_device_us
        && args.count > 1
    {
        let device_us = last_device_us.saturating_sub(first);
        println!(
            "device clock advanced {device_us} µs over {:.0} µs of host time",
            elapsed_ns as f64 / 1000.0
        );
    }
    Ok(())
}

fn pulse(args: &PulseArgs) -> anyhow::Result<()> {
    let width_us = (args.width_ms * 1000.0).round();
    if !(width_us >= 1.0 && width_us <= f64::from(u32::MAX)) {
        bail!(
            "--width-ms must be between 0.001 and {} ms",
            u32::MAX / 1000
        );
    }
    let width_us = width_us as u32;
    let clock = MonotonicClock::new();
    let mut device = open(&args.port)?;
    let sent_ns = clock.now_ns();
    let seq = device
        .send(
            OutputCommand::Pulse {
                channel: args.channel,
                width_us,
            },
            0,
        )
        .context("sending the pulse")?;
    let rise_us = wait_for(&mut device, &clock, "ack", 0, |event| match *event {
        DeviceEvent::Ack {
            seq: s,
            device_time_us,
            ..
        } if s == seq => Some(device_time_us),
        _ => None,
    })?;
    println!(
        "pulse of {width_us} µs on channel {}: rising edge at device time {rise_us} µs (ack {:.1} µs after sending)",
        args.channel,
        (clock.now_ns() - sent_ns) as f64 / 1000.0
    );
    // Keep the device's watchdog fed until the pulse has ended on the device clock: closing the
    // driver turns every output off.
    let end_us = rise_us + u64::from(width_us);
    loop {
        let now_us = device_time(&mut device, &clock)?;
        if now_us >= end_us {
            return Ok(());
        }
        // Pace the keep-alive (a CLI command, not the loop): one sync every ~10 ms.
        clock.sleep_until(clock.now_ns() + 10_000_000);
    }
}
