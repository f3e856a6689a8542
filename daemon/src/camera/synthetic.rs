//! The synthetic camera of the embedded default: an arena with one animal carrying four coloured markers,
//! moving on a smooth random path from a seed, paced by the clock, with the true keypoints of every frame.
//!
//! The scene follows the contract in `tools/model/README.md`, which the bundled marker detector is built
//! for: floor (105,105,105) with ±8 noise, a 12 px wall (70,70,70), a dark ellipse body, and disk markers of
//! radius 5 px with an antialiased edge in red (nose), green (ear_left), blue (ear_right), yellow (tail_base).
//! Each frame is rendered ahead and delivered at its exposure time (a camera with zero readout time).
//!
//! Optionally an LED (`led = { channel, x, y, size }`): a square that is lit in every frame whose exposure
//! time falls while that output channel of the in-process simulated device is high, for `reflex lightloop`.
//! The camera asks the device's [`SimProbe`] for the level at the exposure time (atomics, no lock, no
//! allocation), after the clock has passed it, so the answer is exact to the device's µs.

use std::f64::consts::TAU;

use reflex_firmware_bridge::SimProbe;
use reflex_plugins::pose::{Keypoint, Pose};
use serde::{Deserialize, Serialize};

use super::{CameraError, Frame, FrameSource, PixelFormat, SourceInfo};
use crate::clock::SharedClock;

/// Keypoint names of the synthetic animal, in marker order.
pub const KEYPOINTS: [&str; 4] = ["nose", "ear_left", "ear_right", "tail_base"];

const MARKER_COLOURS: [[u8; 3]; 4] = [[235, 35, 35], [35, 235, 35], [35, 70, 235], [235, 235, 35]];
const MARKER_RADIUS_PX: f64 = 5.0;
const FLOOR: [u8; 3] = [105, 105, 105];
const WALL: [u8; 3] = [70, 70, 70];
const WALL_PX: usize = 12;
const NOISE_AMPLITUDE: i32 = 8;
const BODY: [u8; 3] = [55, 45, 40];
const BODY_SEMI_AXES_PX: (f64, f64) = (38.0, 20.0);
/// Marker positions in the body frame: (forward, left) in px from the body centre.
const MARKER_OFFSETS_PX: [(f64, f64); 4] = [(34.0, 0.0), (20.0, 10.0), (20.0, -10.0), (-34.0, 0.0)];
/// The LED's pixels when lit (a white LED, near saturation) and when off (its dark housing).
const LED_LIT: [u8; 3] = [255, 255, 240];
const LED_OFF: [u8; 3] = [40, 40, 40];
/// How far the body centre stays from the image edge: the body's reach plus a margin.
const BODY_MARGIN_PX: f64 = 38.0 + 5.0 + 2.0 + 20.0;

/// Settings of the synthetic camera (`[source.synthetic]` in the config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyntheticConfig {
    /// Frame width in pixels.
    pub width: u32,
    /// Frame height in pixels.
    pub height: u32,
    /// Frames per second, paced by the clock.
    pub fps: f64,
    /// Seed of the animal's path: the same seed gives the same path and the same ground truth.
    pub seed: u64,
    /// An LED in view, lit while an output channel of the simulated device is high (`reflex lightloop`);
    /// none unless set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub led: Option<LedConfig>,
}

impl Default for SyntheticConfig {
    fn default() -> Self {
        Self {
            width: 640,
            height: 480,
            fps: 120.0,
            seed: 1,
            led: None,
        }
    }
}

/// `[source.synthetic] led = { channel = 3, x = 600, y = 20, size = 16 }`: a `size` × `size` px square with
/// its top-left corner at (`x`, `y`), lit in frames exposed while output `channel` is high.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedConfig {
    /// The output channel of the simulated device the LED is wired to.
    pub channel: u8,
    /// Left edge (px).
    pub x: u32,
    /// Top edge (px).
    pub y: u32,
    /// Side of the square (px).
    pub size: u32,
}

/// A smooth, bounded 2-D path: per axis a sum of two sinusoids with seeded frequencies and phases.
#[derive(Debug, Clone)]
pub struct AnimalPath {
    centre: [f64; 2],
    amplitude: [f64; 2],
    /// Per axis: (weight, angular frequency rad/s, phase rad) of each component.
    components: [[(f64, f64, f64); 2]; 2],
}

impl AnimalPath {
    /// The path for an arena of `width` × `height` px and a seed.
    pub fn new(width: u32, height: u32, seed: u64) -> Self {
        let mut rng = SplitMix64(seed ^ 0x5EED_CAFE_F00D_BEEF);
        let (w, h) = (width as f64, height as f64);
        let centre = [w / 2.0, h / 2.0];
        let amplitude = [
            (w / 2.0 - BODY_MARGIN_PX).max(0.0),
            (h / 2.0 - BODY_MARGIN_PX).max(0.0),
        ];
        let mut components = [[(0.0, 0.0, 0.0); 2]; 2];
        for axis in &mut components {
            let slow_hz = 0.05 + 0.10 * rng.unit();
            let fast_hz = 0.20 + 0.30 * rng.unit();
            axis[0] = (0.65, TAU * slow_hz, TAU * rng.unit());
            axis[1] = (0.35, TAU * fast_hz, TAU * rng.unit());
        }
        Self {
            centre,
            amplitude,
            components,
        }
    }

    /// Body centre (px) and velocity (px/s) at time `t_s`.
    pub fn state(&self, t_s: f64) -> ([f64; 2], [f64; 2]) {
        let mut pos = [0.0; 2];
        let mut vel = [0.0; 2];
        for axis in 0..2 {
            let (mut p, mut v) = (0.0, 0.0);
            for &(weight, omega, phase) in &self.components[axis] {
                p += weight * (omega * t_s + phase).sin();
                v += weight * omega * (omega * t_s + phase).cos();
            }
            pos[axis] = self.centre[axis] + self.amplitude[axis] * p;
            vel[axis] = self.amplitude[axis] * v;
        }
        (pos, vel)
    }
}

/// The synthetic camera. Renders into the caller's frame buffer; allocates only in `new`.
pub struct SyntheticCamera {
    info: SourceInfo,
    clock: SharedClock,
    path: AnimalPath,
    background: Vec<u8>,
    period_ns: u64,
    start_ns: Option<u64>,
    next_id: u64,
    skipped: u64,
    heading_rad: f64,
    /// The LED, when configured, and the device whose output drives it (dark until one is attached).
    led: Option<(LedConfig, Option<SimProbe>)>,
}

impl SyntheticCamera {
    /// A camera with the given settings, paced by `clock`.
    pub fn new(config: &SyntheticConfig, clock: SharedClock) -> Result<Self, CameraError> {
        if !(config.fps.is_finite() && config.fps > 0.0 && config.fps <= 10_000.0) {
            return Err(CameraError::Config(format!(
                "source.synthetic.fps must be in (0, 10000], got {}",
                config.fps
            )));
        }
        let min = (2.0 * BODY_MARGIN_PX) as u32 + 1;
        if config.width < min || config.height < min || config.width > 8192 || config.height > 8192
        {
            return Err(CameraError::Config(format!(
                "source.synthetic size must be between {min}x{min} and 8192x8192, got {}x{}",
                config.width, config.height
            )));
        }
        if let Some(led) = &config.led {
            let fits = |at: u32, side: u32| at.checked_add(led.size).is_some_and(|end| end <= side);
            if led.size == 0 || !fits(led.x, config.width) || !fits(led.y, config.height) {
                return Err(CameraError::Config(format!(
                    "source.synthetic.led: a {0}x{0} px square at ({1}, {2}) does not fit in the {3}x{4} frame",
                    led.size, led.x, led.y, config.width, config.height
                )));
            }
        }
        let info = SourceInfo {
            name: format!("synthetic(seed={})", config.seed),
            width: config.width,
            height: config.height,
            format: PixelFormat::Rgb8,
            fps: config.fps,
        };
        Ok(Self {
            background: render_background(
                config.width as usize,
                config.height as usize,
                config.seed,
            ),
            path: AnimalPath::new(config.width, config.height, config.seed),
            period_ns: (1e9 / config.fps).round() as u64,
            info,
            clock,
            start_ns: None,
            next_id: 0,
            skipped: 0,
            heading_rad: 0.0,
            led: config.led.map(|led| (led, None)),
        })
    }

    /// Wires the configured LED to the simulated output device behind `device` (which has `channels`
    /// outputs): from now on it is lit in frames exposed while its channel is high. Without a configured LED
    /// this does nothing; with one, another output device (`None`) or a channel it lacks is an error.
    pub fn attach_device(
        &mut self,
        device: Option<SimProbe>,
        channels: u8,
    ) -> Result<(), CameraError> {
        let Some((led, probe)) = &mut self.led else {
            return Ok(());
        };
        let Some(device) = device else {
            return Err(CameraError::Config(
                "source.synthetic.led is driven by the simulated output device: set [output] kind = \"simulated\", or remove led".into(),
            ));
        };
        if led.channel >= channels {
            return Err(CameraError::Config(format!(
                "source.synthetic.led: channel {} does not exist (the output has channels 0..{})",
                led.channel,
                channels.saturating_sub(1)
            )));
        }
        *probe = Some(device);
        Ok(())
    }

    /// The true keypoints (px) of the animal at `t_s`, written into `pose` (len 4), and the heading used.
    fn keypoints_at(&mut self, t_s: f64, pose: &mut Pose) {
        let (centre, vel) = self.path.state(t_s);
        let speed = vel[0].hypot(vel[1]);
        if speed > 1.0 {
            self.heading_rad = vel[1].atan2(vel[0]);
        }
        let (sin, cos) = self.heading_rad.sin_cos();
        *pose = Pose::new(KEYPOINTS.len());
        for (kp, &(fwd, left)) in pose.points_mut().iter_mut().zip(&MARKER_OFFSETS_PX) {
            // Image y points down: "left" of the heading (cos, sin) is (sin, -cos).
            let x = centre[0] + fwd * cos + left * sin;
            let y = centre[1] + fwd * sin - left * cos;
            *kp = Keypoint {
                x: x as f32,
                y: y as f32,
                score: 1.0,
            };
        }
    }

    /// Render the frame at time `t_s` into `data` and its true pose into `truth`.
    pub fn render(&mut self, t_s: f64, data: &mut [u8], truth: &mut Pose) {
        data.copy_from_slice(&self.background);
        self.keypoints_at(t_s, truth);
        let (centre, _) = self.path.state(t_s);
        let (w, h) = (self.info.width as usize, self.info.height as usize);
        draw_body(data, w, h, centre, self.heading_rad);
        for (kp, colour) in truth.points().iter().zip(&MARKER_COLOURS) {
            draw_marker(data, w, h, kp.x as f64, kp.y as f64, *colour);
        }
    }
}

impl FrameSource for SyntheticCamera {
    fn info(&self) -> &SourceInfo {
        &self.info
    }

    fn next_frame(&mut self, frame: &mut Frame) -> Result<bool, CameraError> {
        self.info.check_frame(frame)?;
        let start = *self.start_ns.get_or_insert_with(|| self.clock.now_ns());
        let mut due = start + self.next_id * self.period_ns;
        let now = self.clock.now_ns();
        if now > due + self.period_ns {
            // We fell behind our own exposure clock (a starved core): skip the slots that are gone, as a
            // free-running camera would, and count them.
            let behind = (now - due) / self.period_ns;
            self.next_id += behind;
            self.skipped += behind;
            due = start + self.next_id * self.period_ns;
        }
        let id = self.next_id;
        self.next_id += 1;
        // The scene at the exposure time is known in advance: render first, then deliver at the exposure time,
        // like a camera with zero readout. `capture` latency then measures the host's wake-up, not our renderer.
        let t_s = id as f64 / self.info.fps;
        self.render(t_s, &mut frame.data, &mut frame.truth);
        self.clock.sleep_until(due);
        // The LED's level is read at the exposure time, once the clock has passed it: only then is it known.
        if let Some((led, device)) = &self.led {
            let lit = device
                .as_ref()
                .is_some_and(|d| d.level_at_host_ns(led.channel, due));
            draw_led(&mut frame.data, self.info.width as usize, led, lit);
        }
        frame.id = id;
        frame.camera = 0;
        frame.t_exposure_ns = due;
        frame.t_capture_ns = self.clock.now_ns();
        Ok(true)
    }

    fn skipped(&self) -> u64 {
        self.skipped
    }

    fn truth_keypoints(&self) -> &[&'static str] {
        &KEYPOINTS
    }
}

fn render_background(w: usize, h: usize, seed: u64) -> Vec<u8> {
    let mut rng = SplitMix64(seed);
    let mut data = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let wall = x < WALL_PX || y < WALL_PX || x >= w - WALL_PX || y >= h - WALL_PX;
            let px = &mut data[(y * w + x) * 3..][..3];
            if wall {
                px.copy_from_slice(&WALL);
            } else {
                for (c, &base) in px.iter_mut().zip(&FLOOR) {
                    let noise =
                        (rng.next() % (2 * NOISE_AMPLITUDE as u64 + 1)) as i32 - NOISE_AMPLITUDE;
                    *c = (base as i32 + noise).clamp(0, 255) as u8;
                }
            }
        }
    }
    data
}

fn draw_body(data: &mut [u8], w: usize, h: usize, centre: [f64; 2], heading_rad: f64) {
    let (a, b) = BODY_SEMI_AXES_PX;
    let (sin, cos) = heading_rad.sin_cos();
    let (x0, x1) = clamp_span(centre[0] - a - 1.0, centre[0] + a + 1.0, w);
    let (y0, y1) = clamp_span(centre[1] - a - 1.0, centre[1] + a + 1.0, h);
    for y in y0..y1 {
        for x in x0..x1 {
            let (dx, dy) = (x as f64 - centre[0], y as f64 - centre[1]);
            let (u, v) = (dx * cos + dy * sin, -dx * sin + dy * cos);
            if (u / a).powi(2) + (v / b).powi(2) <= 1.0 {
                data[(y * w + x) * 3..][..3].copy_from_slice(&BODY);
            }
        }
    }
}

fn draw_marker(data: &mut [u8], w: usize, h: usize, cx: f64, cy: f64, colour: [u8; 3]) {
    let reach = MARKER_RADIUS_PX + 1.0;
    let (x0, x1) = clamp_span(cx - reach, cx + reach, w);
    let (y0, y1) = clamp_span(cy - reach, cy + reach, h);
    for y in y0..y1 {
        for x in x0..x1 {
            let d = (x as f64 - cx).hypot(y as f64 - cy);
            let coverage = (MARKER_RADIUS_PX + 0.5 - d).clamp(0.0, 1.0);
            if coverage > 0.0 {
                for (c, &target) in data[(y * w + x) * 3..][..3].iter_mut().zip(&colour) {
                    *c = (*c as f64 * (1.0 - coverage) + target as f64 * coverage).round() as u8;
                }
            }
        }
    }
}

/// The LED square, lit or off (its size was checked against the frame in `new`).
fn draw_led(data: &mut [u8], w: usize, led: &LedConfig, lit: bool) {
    let colour = if lit { LED_LIT } else { LED_OFF };
    let (x, size) = (led.x as usize, led.size as usize);
    for y in led.y as usize..led.y as usize + size {
        if let Some(row) = data.get_mut((y * w + x) * 3..(y * w + x + size) * 3) {
            for px in row.chunks_exact_mut(3) {
                px.copy_from_slice(&colour);
            }
        }
    }
}

/// Pixel index range [lo, hi) covering [a, b], clipped to [0, n).
fn clamp_span(a: f64, b: f64, n: usize) -> (usize, usize) {
    let lo = a.floor().max(0.0) as usize;
    let hi = (b.ceil() as i64 + 1).clamp(0, n as i64) as usize;
    (lo.min(n), hi)
}

/// A tiny deterministic generator (SplitMix64): seeds paths and noise without a dependency.
#[derive(Debug, Clone)]
pub(crate) struct SplitMix64(pub(crate) u64);

impl SplitMix64 {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub(crate) fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use std::sync::Arc;

    fn camera(seed: u64) -> (SyntheticCamera, ManualClock) {
        let clock = ManualClock::new();
        let cam = SyntheticCamera::new(
            &SyntheticConfig {
                seed,
                ..Default::default()
            },
            Arc::new(clock.clone()),
        )
        .unwrap();
        (cam, clock)
    }

    #[test]
    fn same_seed_same_frames_and_truth() {
        let (mut a, _) = camera(7);
        let (mut b, _) = camera(7);
        let mut fa = Frame::for_source(a.info());
        let mut fb = Frame::for_source(b.info());
        for _ in 0..3 {
            a.next_frame(&mut fa).unwrap();
            b.next_frame(&mut fb).unwrap();
        }
        assert_eq!(fa.data, fb.data);
        assert_eq!(fa.truth.points(), fb.truth.points());
        let (mut c, _) = camera(8);
        let mut fc = Frame::for_source(c.info());
        c.next_frame(&mut fc).unwrap();
        a.next_frame(&mut fa).unwrap();
        assert_ne!(fa.truth.points()[0], fc.truth.points()[0]);
    }

    #[test]
    fn markers_keep_their_distance_and_margin_over_a_long_run() {
        let (mut cam, _) = camera(3);
        let mut truth = Pose::new(0);
        for i in 0..20_000 {
            cam.keypoints_at(i as f64 / 120.0, &mut truth);
            let p = truth.points();
            for (j, a) in p.iter().enumerate() {
                assert!(
                    a.x >= 20.0 && a.x <= 620.0 && a.y >= 20.0 && a.y <= 460.0,
                    "frame {i}: {a:?}"
                );
                for b in &p[j + 1..] {
                    assert!((a.x - b.x).hypot(a.y - b.y) >= 14.0);
                }
            }
        }
    }

    #[test]
    fn frames_are_paced_by_the_clock_and_stamped() {
        let (mut cam, clock) = camera(1);
        let mut f = Frame::for_source(cam.info());
        cam.next_frame(&mut f).unwrap();
        let t0 = f.t_exposure_ns;
        cam.next_frame(&mut f).unwrap();
        assert_eq!(f.id, 1);
        assert_eq!(f.t_exposure_ns - t0, 8_333_333);
        assert!(clock.now_ns() >= f.t_exposure_ns);
        // A stalled consumer: the clock runs 5 periods ahead; the camera skips the lost slots.
        clock.advance_ns(5 * 8_333_333);
        cam.next_frame(&mut f).unwrap();
        assert!(f.id > 2);
        assert_eq!(cam.skipped(), f.id - 2);
    }

    #[test]
    fn the_led_is_lit_in_frames_exposed_while_its_channel_is_high() {
        use reflex_firmware_bridge::{Output, OutputCommand, SimConfig, SimulatedDevice};
        let clock = ManualClock::new();
        let led = LedConfig {
            channel: 3,
            x: 600,
            y: 20,
            size: 16,
        };
        let config = SyntheticConfig {
            led: Some(led),
            ..Default::default()
        };
        let mut cam = SyntheticCamera::new(&config, Arc::new(clock.clone())).unwrap();
        let host = clock.clone();
        let mut device = SimulatedDevice::new(
            SimConfig {
                actuation_delay_us: 500,
                watchdog_ms: 0,
                ..SimConfig::default()
            },
            Arc::new(move || host.now_ns()),
        );
        cam.attach_device(Some(device.probe()), 4).unwrap();
        let pixel = |f: &Frame, x: usize, y: usize| -> [u8; 3] {
            f.data[(y * 640 + x) * 3..][..3].try_into().unwrap()
        };
        let mut f = Frame::for_source(cam.info());
        cam.next_frame(&mut f).unwrap();
        assert_eq!(pixel(&f, 600, 20), LED_OFF);
        assert_eq!(pixel(&f, 615, 35), LED_OFF);
        // Commanded 0.4 ms before the next exposure: the pin goes high 0.1 ms after it, so that frame is dark
        // and the one after is lit.
        let next_ns = f.t_exposure_ns + 8_333_333;
        clock.set_ns(next_ns - 400_000);
        let on = OutputCommand::SetLevel {
            channel: 3,
            high: true,
        };
        device.send(on, 0).unwrap();
        cam.next_frame(&mut f).unwrap();
        assert_eq!(f.t_exposure_ns, next_ns);
        assert_eq!(pixel(&f, 607, 27), LED_OFF);
        cam.next_frame(&mut f).unwrap();
        assert_eq!(pixel(&f, 600, 20), LED_LIT);
        assert_eq!(pixel(&f, 615, 35), LED_LIT);
        assert_ne!(pixel(&f, 616, 36), LED_LIT, "the square is 16 px");
        // A camera without an attached device shows the LED off.
        let mut dark = SyntheticCamera::new(&config, Arc::new(ManualClock::new())).unwrap();
        dark.next_frame(&mut f).unwrap();
        assert_eq!(pixel(&f, 600, 20), LED_OFF);
        let outside = SyntheticConfig {
            led: Some(LedConfig { x: 630, ..led }),
            ..Default::default()
        };
        let err = SyntheticCamera::new(&outside, Arc::new(ManualClock::new()))
            .err()
            .unwrap();
        assert!(err.to_string().contains("does not fit"), "{err}");
        let mut cam = SyntheticCamera::new(&config, Arc::new(ManualClock::new())).unwrap();
        let err = cam.attach_device(None, 4).unwrap_err().to_string();
        assert!(err.contains("kind = \"simulated\""), "{err}");
        let err = cam
            .attach_device(Some(device.probe()), 2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("channel 3 does not exist"), "{err}");
    }

    #[test]
    fn marker_pixels_have_their_colour_at_the_keypoint() {
        let (mut cam, _) = camera(2);
        let mut f = Frame::for_source(cam.info());
        cam.next_frame(&mut f).unwrap();
        for (kp, colour) in f.truth.points().iter().zip(&MARKER_COLOURS) {
            let (x, y) = (kp.x.round() as usize, kp.y.round() as usize);
            assert_eq!(&f.data[(y * 640 + x) * 3..][..3], colour);
        }
    }
}
