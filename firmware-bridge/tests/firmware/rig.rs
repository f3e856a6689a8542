//! The test rig: builds the firmware and the simavr harness (`make`), runs the firmware under
//! simulation with its UART on a PTY, and drives it through [`SerialDevice`] while collecting the
//! harness's pin edges (in simulated µs).
#![allow(clippy::disallowed_methods)] // reason: the simulation runs in real time, so the rig heartbeats and bounds its waits on the wall clock

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use reflex_firmware_bridge::{DeviceEvent, Output, SerialConfig, SerialDevice};

/// Upper bound on any wait in these tests (wall clock). Only a bound for a hung test, never a
/// performance assertion: waits end as soon as the awaited reply or edge arrives.
pub const WAIT: Duration = Duration::from_secs(20);
/// Heartbeat interval while the rig waits (the firmware's watchdog is 50 ms).
const HEARTBEAT_EVERY: Duration = Duration::from_millis(10);

/// Paths of the built firmware ELFs, harness and codec dump.
pub struct Built {
    /// The firmware as shipped (50 ms watchdog).
    pub elf: PathBuf,
    /// The same firmware built with a 1 s watchdog, for tests that measure something else: a
    /// starved CI machine that misses a heartbeat must not turn a pulse off mid-measurement.
    pub elf_slow_watchdog: PathBuf,
    pub sim: PathBuf,
    pub codec_dump: PathBuf,
}

/// Watchdog time of [`Built::elf_slow_watchdog`], ms.
const SLOW_WATCHDOG_MS: u32 = 1000;

/// Builds everything under `firmware/` once per test binary, into the target dir.
pub fn built() -> &'static Built {
    static BUILT: OnceLock<Built> = OnceLock::new();
    BUILT.get_or_init(|| {
        // Also included by the workspace's end-to-end tests (tests/), hence the path through the
        // workspace root.
        let source = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../firmware-bridge/firmware"
        ));
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join("reflex-firmware");
        let slow = out.join(format!("watchdog-{SLOW_WATCHDOG_MS}ms"));
        make(source, &[format!("BUILD={}", out.display())]);
        make(
            source,
            &[
                format!("BUILD={}", slow.display()),
                format!("WATCHDOG_MS={SLOW_WATCHDOG_MS}"),
                format!("{}/reflex.elf", slow.display()),
            ],
        );
        Built {
            elf: out.join("reflex.elf"),
            elf_slow_watchdog: slow.join("reflex.elf"),
            sim: out.join("reflex-sim"),
            codec_dump: out.join("codec-dump"),
        }
    })
}

fn make(source: &Path, args: &[String]) {
    match Command::new("make")
        .arg("-C")
        .arg(source)
        .args(args)
        .output()
    {
        Ok(o) if o.status.success() => {}
        Ok(o) => panic!(
            "building the firmware, its simavr harness and the codec dump failed \
             (`make -C {} {}`). They need the Debian packages gcc-avr avr-libc simavr \
             libsimavr-dev libelf-dev, which tools/test.sh installs.\n{}{}",
            source.display(),
            args.join(" "),
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) => panic!("cannot run `make` to build the firmware: {e}"),
    }
}

/// What the harness reports.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SimEvent {
    /// PORTB pin changed at simulated time `t_us`, which is `host_ns` on the host's monotonic
    /// clock (the harness runs the simulation in step with it).
    Edge {
        pin: u8,
        high: bool,
        t_us: f64,
        host_ns: u64,
    },
    /// A frame delimiter from the host entered the simulated UART at `t_us`.
    Rx { t_us: f64 },
    /// The firmware sent a frame delimiter at `t_us`.
    Tx { t_us: f64 },
    /// The harness was held off too long to catch up: simulated time stood still for `ns` of
    /// host time at `t_us`, so `host_ns` of later events moved on by that much (`host_ns` is that
    /// moment's host time from then on).
    Lag { ns: u64, t_us: f64, host_ns: u64 },
}

fn parse(line: &str) -> Option<SimEvent> {
    let mut words = line.split_whitespace();
    match words.next()? {
        "edge" => Some(SimEvent::Edge {
            pin: words.next()?.parse().ok()?,
            high: words.next()? == "1",
            t_us: words.next()?.parse().ok()?,
            host_ns: words.next()?.parse().ok()?,
        }),
        "rx" => Some(SimEvent::Rx {
            t_us: words.next()?.parse().ok()?,
        }),
        "tx" => Some(SimEvent::Tx {
            t_us: words.next()?.parse().ok()?,
        }),
        "lag" => Some(SimEvent::Lag {
            ns: words.next()?.parse().ok()?,
            t_us: words.next()?.parse().ok()?,
            host_ns: words.next()?.parse().ok()?,
        }),
        _ => None,
    }
}

/// One simulation: the harness process (killed on drop) and what it reported so far.
pub struct Sim {
    child: Child,
    lines: Receiver<String>,
    pub pty: PathBuf,
    pub events: Vec<SimEvent>,
}

impl Sim {
    /// Starts the harness on `elf`.
    pub fn start(elf: &Path) -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let built = built();
        let pty = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
            "reflex-sim-{}-{}.tty",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        // 120 s of simulated time at most, so a harness orphaned by a crashed test ends itself.
        let mut child = Command::new(&built.sim)
            .arg(elf)
            .arg(&pty)
            .arg("120")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", built.sim.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        // simavr prints its own notes ("Loaded … .text") before the harness's `pty` line.
        loop {
            let line = lines
                .recv_timeout(WAIT)
                .expect("the harness printed no `pty` line");
            if line.starts_with("pty ") {
                break;
            }
        }
        Self {
            child,
            lines,
            pty,
            events: Vec::new(),
        }
    }

    /// Collects the harness's lines, waiting up to `timeout` for the first (this is the rig's
    /// pacing: it never sleeps).
    pub fn collect(&mut self, timeout: Duration) {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => self.events.extend(parse(&line)),
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => return,
        }
        while let Ok(line) = self.lines.try_recv() {
            self.events.extend(parse(&line));
        }
    }

    /// Edges of `pin` so far: (level, simulated µs).
    pub fn edges(&self, pin: u8) -> Vec<(bool, f64)> {
        self.events
            .iter()
            .filter_map(|e| match *e {
                SimEvent::Edge {
                    pin: p, high, t_us, ..
                } if p == pin => Some((high, t_us)),
                _ => None,
            })
            .collect()
    }

    /// Whether `pin` is high after every edge so far.
    pub fn level(&self, pin: u8) -> bool {
        self.edges(pin).last().is_some_and(|&(high, _)| high)
    }

    /// Stops the harness and collects every line it printed.
    #[allow(
        dead_code,
        reason = "used by tests/tests/firmware_loop.rs, which includes this file"
    )]
    pub fn finish(&mut self) {
        self.kill();
        while let Ok(line) = self.lines.recv() {
            self.events.extend(parse(&line));
        }
    }

    /// Stops the harness (the device disappears from the PTY).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_file(&self.pty);
    }
}

/// A simulated firmware with the driver connected, heartbeating while it waits.
pub struct Rig {
    pub sim: Sim,
    pub dev: SerialDevice,
    /// Every event the driver has delivered so far.
    pub events: Vec<DeviceEvent>,
    /// Whether waits send heartbeats (turned off to let the watchdog expire).
    pub heartbeats: bool,
    last_beat: Instant,
    _one_at_a_time: MutexGuard<'static, ()>,
}

impl Rig {
    /// Starts a simulation of the firmware with a 1 s watchdog and opens it (handshake
    /// included).
    pub fn start() -> Self {
        Self::start_elf(&built().elf_slow_watchdog)
    }

    /// Starts a simulation of the firmware as shipped (50 ms watchdog) and opens it.
    pub fn start_shipped() -> Self {
        Self::start_elf(&built().elf)
    }

    /// Simulations run one at a time so each gets a CPU and keeps up with real time.
    fn start_elf(elf: &Path) -> Self {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let guard = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let sim = Sim::start(elf);
        let config = SerialConfig {
            handshake_timeout_ms: 10_000,
            ..SerialConfig::default()
        };
        let dev = SerialDevice::open(sim.pty.to_str().expect("utf-8 path"), &config)
            .unwrap_or_else(|e| panic!("{:#}", anyhow_chain(&e)));
        Self {
            sim,
            dev,
            events: Vec::new(),
            heartbeats: true,
            last_beat: Instant::now(),
            _one_at_a_time: guard,
        }
    }

    /// Polls the driver and the harness (heartbeating if enabled) until `done` holds; panics
    /// after [`WAIT`] naming `what`.
    pub fn wait_until(&mut self, what: &str, mut done: impl FnMut(&Rig) -> bool) {
        let start = Instant::now();
        loop {
            let events = &mut self.events;
            self.dev
                .poll(&mut |e| events.push(e))
                .unwrap_or_else(|e| panic!("poll: {e}"));
            if done(self) {
                return;
            }
            assert!(
                start.elapsed() < WAIT,
                "timed out waiting for {what}; device events {:?}; edges per pin {:?}",
                self.events,
                (0..4)
                    .map(|pin| self.sim.edges(pin).len())
                    .collect::<Vec<_>>()
            );
            if self.heartbeats && self.last_beat.elapsed() >= HEARTBEAT_EVERY {
                self.dev.heartbeat().expect("heartbeat");
                self.last_beat = Instant::now();
            }
            self.sim.collect(Duration::from_millis(1));
        }
    }

    /// Waits for the Ack of `seq` and returns its device time in µs.
    pub fn ack_time_us(&mut self, seq: u16) -> u64 {
        let mut found = None;
        self.wait_until(&format!("the ack of command {seq}"), |rig| {
            found = rig.events.iter().find_map(|e| match *e {
                DeviceEvent::Ack {
                    seq: s,
                    device_time_us,
                    ..
                } if s == seq => Some(device_time_us),
                _ => None,
            });
            found.is_some()
        });
        found.expect("found")
    }

    /// Round trip through the device: after this, every reply to earlier commands has arrived
    /// and every edge they caused right away has been reported by the harness.
    pub fn sync(&mut self) {
        let seq = self.dev.request_sync().expect("request_sync");
        self.wait_until("a sync reply", |rig| {
            rig.events
                .iter()
                .any(|e| matches!(*e, DeviceEvent::SyncReply { seq: s, .. } if s == seq))
        });
        self.catch_up(0);
    }

    /// Waits until the harness has reported everything that happened before the latest reply.
    /// The harness prints each reply's `tx` line before the reply reaches the PTY, and edges as
    /// they happen: once it has printed as many `tx` lines as replies arrived (the handshake's
    /// Hello, `extra_replies` the driver does not deliver as events, and every event), every
    /// earlier edge line is in too.
    pub fn catch_up(&mut self, extra_replies: usize) {
        let replies = self.events.len() + 1 + extra_replies;
        self.wait_until("the harness's output to catch up", |rig| {
            rig.sim
                .events
                .iter()
                .filter(|e| matches!(e, SimEvent::Tx { .. }))
                .count()
                >= replies
        });
    }
}

/// `{:#}`-style rendering of an error and its sources.
pub fn anyhow_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
