//! Forward prediction: estimate where each keypoint will be at a later host time, to cancel
//! the camera → inference → output latency of the loop.
//!
//! The loop calls [`Predictor::observe`] once per inferred frame and then
//! [`Predictor::predict`] for the time given by [`Horizon::target_ns`]. Both run on the loop
//! thread: implementations preallocate everything in `new` and never allocate or panic.

use serde::{Deserialize, Serialize};

use crate::PluginError;
use crate::pose::{Keypoint, MAX_KEYPOINTS, Pose};

/// Nanoseconds per second, for converting frame timestamps to the filter's seconds.
const NS_PER_S: f64 = 1e9;

/// A forward predictor: fed measured poses, asked for the pose at a later time.
pub trait Predictor: Send {
    /// Short, stable identifier used in configs, logs and CSV columns (e.g. `"kalman"`).
    fn name(&self) -> &'static str;

    /// Feed the measured pose of the frame exposed at `frame_time_ns` (host monotonic ns).
    ///
    /// Missing keypoints (NaN) carry no information and must never corrupt the state.
    fn observe(&mut self, measured: &Pose, frame_time_ns: u64);

    /// Write the pose predicted for host time `at_ns` into `out` (out.len() == keypoint count).
    ///
    /// Keypoints the predictor has never seen are written as [`Keypoint::MISSING`].
    fn predict(&mut self, at_ns: u64, out: &mut Pose);

    /// Forget all history, as if newly constructed (e.g. between sessions or after a gap).
    fn reset(&mut self);
}

/// Where to predict to: DeepLabCut-Live's latency-adaptive horizon.
///
/// With `adapt`, the prediction targets `now + forward`, so it absorbs however long the frame
/// took to reach the predictor; without it, it targets a fixed `frame time + forward`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Horizon {
    /// How far past the reference time to predict, in nanoseconds.
    pub forward_ns: u64,
    /// Predict from the current time (true) rather than from the frame's exposure time.
    pub adapt: bool,
}

impl Horizon {
    /// adapt: now − frame time + forward (i.e. target = now + forward); else frame time + forward.
    ///
    /// Saturates at `u64::MAX` instead of overflowing.
    pub fn target_ns(&self, frame_time_ns: u64, now_ns: u64) -> u64 {
        let base_ns = if self.adapt { now_ns } else { frame_time_ns };
        base_ns.saturating_add(self.forward_ns)
    }
}

impl Default for Horizon {
    /// DeepLabCut-Live's defaults: `forward = 0.002` s, `adapt = True`.
    fn default() -> Self {
        Horizon {
            forward_ns: 2_000_000,
            adapt: true,
        }
    }
}

/// The "no prediction" baseline: returns the last measurement of each keypoint.
///
/// Each keypoint keeps its last non-missing measurement (position and score), so a keypoint
/// dropped for a few frames holds still instead of vanishing. `at_ns` is ignored.
#[derive(Clone, Copy, Debug)]
pub struct LastMeasurement {
    last: [Keypoint; MAX_KEYPOINTS],
}

impl LastMeasurement {
    /// A predictor that has seen nothing yet (every keypoint predicts as missing).
    pub const fn new() -> Self {
        LastMeasurement {
            last: [Keypoint::MISSING; MAX_KEYPOINTS],
        }
    }
}

impl Default for LastMeasurement {
    fn default() -> Self {
        LastMeasurement::new()
    }
}

impl Predictor for LastMeasurement {
    fn name(&self) -> &'static str {
        "last_measurement"
    }

    fn observe(&mut self, measured: &Pose, _frame_time_ns: u64) {
        for (last, point) in self.last.iter_mut().zip(measured.points()) {
            if !point.is_missing() {
                *last = *point;
            }
        }
    }

    fn predict(&mut self, _at_ns: u64, out: &mut Pose) {
        for (slot, last) in out.points_mut().iter_mut().zip(&self.last) {
            *slot = *last;
        }
    }

    fn reset(&mut self) {
        self.last = [Keypoint::MISSING; MAX_KEYPOINTS];
    }
}

/// Parameters of [`KalmanPredictor`], named and defaulted exactly as DeepLabCut-Live's
/// `KalmanFilterPredictor` (`dlclive/processor/kalmanfilter.py`), so its settings carry over.
///
/// Variances are in DLC-Live's units: pixels², (pixels/s)² and (pixels/s²)², with time in
/// seconds. Every field may be omitted in a config file; unknown fields are refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KalmanConfig {
    /// Predict to `now + forward` rather than `frame time + forward` (see [`Horizon`]). DLC: `True`.
    pub adapt: bool,
    /// Prediction horizon in seconds past the reference time. DLC: `0.002`.
    pub forward: f64,
    /// Nominal camera rate in frames per second. DLC: `30`.
    ///
    /// Accepted (and checked to be > 0) so DLC-Live settings load unchanged, but not used: DLC
    /// divides the velocity/acceleration pseudo-measurements by `1/fps`, while reflex divides
    /// by the measured interval between frame timestamps, which stays right when frames drop.
    pub fps: f64,
    /// Number of derivatives in the state: 2 = position, velocity, acceleration. DLC: `2`.
    /// reflex supports 0, 1 and 2.
    pub nderiv: usize,
    /// Prior variances of the derivatives (velocity, then acceleration), one per `nderiv`,
    /// that shrink the state toward zero before each prediction step. DLC: `[10, 10]`.
    pub priors: Vec<f64>,
    /// Initial variance of every state component. DLC: `5`.
    pub initial_var: f64,
    /// Process noise variance added to every state component per frame. DLC: `5`.
    pub process_var: f64,
    /// Measurement noise variance of every (pseudo-)measured component. DLC: `20`.
    pub dlc_var: f64,
    /// Keypoints scoring below this likelihood get no measurement update. DLC: `0`.
    pub lik_thresh: f32,
}

impl Default for KalmanConfig {
    /// DeepLabCut-Live's defaults.
    fn default() -> Self {
        KalmanConfig {
            adapt: true,
            forward: 0.002,
            fps: 30.0,
            nderiv: 2,
            priors: vec![10.0, 10.0],
            initial_var: 5.0,
            process_var: 5.0,
            dlc_var: 20.0,
            lik_thresh: 0.0,
        }
    }
}

impl KalmanConfig {
    /// The prediction horizon these settings ask for (`forward` rounded to whole ns).
    ///
    /// Call [`KalmanConfig::validate`] first; an invalid `forward` maps to 0 ns.
    pub fn horizon(&self) -> Horizon {
        let forward_ns = if self.forward.is_finite() && self.forward > 0.0 {
            // Saturating float-to-int cast: absurd horizons clamp to u64::MAX ns.
            (self.forward * NS_PER_S).round() as u64
        } else {
            0
        };
        Horizon {
            forward_ns,
            adapt: self.adapt,
        }
    }

    /// Check every parameter, naming the first one out of range.
    pub fn validate(&self) -> Result<(), PluginError> {
        let param = |param, requirement, value: f64, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(PluginError::InvalidKalmanParam {
                    param,
                    requirement,
                    value,
                })
            }
        };
        const NON_NEG: &str = "a finite number >= 0";
        const POS: &str = "a finite number > 0";
        let f = self.forward;
        param("forward", NON_NEG, f, f.is_finite() && f >= 0.0)?;
        param("fps", POS, self.fps, self.fps.is_finite() && self.fps > 0.0)?;
        if self.nderiv > MAX_NDERIV {
            return Err(PluginError::InvalidNderiv {
                nderiv: self.nderiv,
            });
        }
        if self.priors.len() != self.nderiv {
            return Err(PluginError::PriorsLength {
                nderiv: self.nderiv,
                got: self.priors.len(),
            });
        }
        for &p in &self.priors {
            param("priors", "finite numbers > 0", p, p.is_finite() && p > 0.0)?;
        }
        let v = self.initial_var;
        param("initial_var", POS, v, v.is_finite() && v > 0.0)?;
        let v = self.process_var;
        param("process_var", NON_NEG, v, v.is_finite() && v >= 0.0)?;
        let v = self.dlc_var;
        param("dlc_var", POS, v, v.is_finite() && v > 0.0)?;
        let t = self.lik_thresh;
        param("lik_thresh", "a finite number", f64::from(t), t.is_finite())?;
        Ok(())
    }
}

/// Highest supported `nderiv` (constant acceleration).
const MAX_NDERIV: usize = 2;
/// State components per coordinate at most: position, velocity, acceleration.
const MAX_STATE: usize = MAX_NDERIV + 1;
/// DLC-Live's fixed prior variance on position (`np.hstack(([1e5], priors))`), in pixels².
const POSITION_PRIOR_VAR: f64 = 1e5;

/// A small square matrix; only the top-left `n`×`n` block is used.
type Mat = [[f64; MAX_STATE]; MAX_STATE];
const ZERO: Mat = [[0.0; MAX_STATE]; MAX_STATE];

/// Kalman state of one image coordinate of one keypoint: derivatives 0..n and covariance.
#[derive(Clone, Copy, Debug)]
struct Axis {
    /// Position (px), velocity (px/s), acceleration (px/s²); the first `n` are used.
    x: [f64; MAX_STATE],
    /// Covariance of `x`.
    p: Mat,
}

/// Filter state of one keypoint.
#[derive(Clone, Copy, Debug)]
struct Track {
    /// False until the keypoint's first usable measurement initialises it.
    live: bool,
    /// x and y filters; DLC's model never couples them.
    axes: [Axis; 2],
    /// Score reported with predictions: the latest frame's measured score (0 when missing).
    score: f32,
}

const DEAD_TRACK: Track = Track {
    live: false,
    axes: [Axis {
        x: [0.0; MAX_STATE],
        p: ZERO,
    }; 2],
    score: 0.0,
};

/// Constant-acceleration Kalman filter, compatible with DeepLabCut-Live's
/// `KalmanFilterPredictor` (`dlclive/processor/kalmanfilter.py`, DeepLabCut-live commit
/// `29c81226964898062c1aaf10d04cc89fe1549e05`).
///
/// What it matches: a state of position, velocity and acceleration per keypoint and
/// coordinate (`nderiv = 2`); transition `F(dt)` with entries `dtᵈ / max(1, d)`; process
/// noise `Q = process_var·I`, measurement noise `R = dlc_var·I`, `H = I`, initial covariance
/// `initial_var·I`; before each prediction step the state is shrunk toward zero by the
/// priors (`x·B/(B+Pᵢᵢ)`, `B = [1e5, priors…]`), the covariance is not; the velocity and
/// acceleration are "measured" as finite differences of the new position against the previous
/// posterior; a keypoint without a usable measurement (below `lik_thresh`, and here also
/// missing or with a NaN score) keeps the predicted state, while its covariance is updated
/// as if it had been measured; predictions carry the latest measured score; the future pose
/// is `F(horizon)·x` from the posterior.
///
/// That covariance rule is kept on purpose although a textbook filter would keep `P⁻`: with
/// DLC's finite-difference pseudo-measurements, a covariance grown during a dropout makes the
/// re-acquired keypoint overshoot far more (measured here at 100 fps, 100 px/s, 20 ms ahead:
/// after a 10-frame gap 15 px worst error with DLC's rule, 56 px with `P⁻`).
///
/// DLC writes this as one state vector of `keypoints × 2 × 3` entries, but every matrix in
/// it (`F`, `Q`, `R`, `H`, `P₀`, the priors) is block-diagonal with one 3×3 block per
/// keypoint and coordinate, so `P`, `S` and `K` stay block-diagonal and the filter is exactly
/// a set of independent 3×3 filters, which is how it is computed here (inline arrays, f64).
///
/// Deliberate differences:
/// - `dt` is the interval between frame timestamps (ns), not the wall time between calls,
///   and the pseudo-measurement differences divide by that interval rather than `1/fps`;
///   a frame whose timestamp does not advance past the previous one is ignored.
/// - Each keypoint initialises on its own first usable measurement (finite position, score
///   ≥ `lik_thresh`); DLC initialises every keypoint from the first pose, whatever it holds.
/// - A missing (non-finite) position or a NaN score counts as no measurement; DLC would
///   feed the NaN into the state and never recover.
/// - A keypoint missing from the latest frame is predicted with score 0 (DLC would report
///   the NaN it was given); keypoints never seen are [`Keypoint::MISSING`].
/// - Nothing allocates after [`KalmanPredictor::new`]; the horizon is computed by the
///   caller ([`KalmanConfig::horizon`], [`Horizon::target_ns`]) and passed as `at_ns`.
#[derive(Clone, Debug)]
pub struct KalmanPredictor {
    /// State components per coordinate: `nderiv + 1`.
    n: usize,
    /// Prior variances `B`, per state component.
    prior_var: [f64; MAX_STATE],
    initial_var: f64,
    process_var: f64,
    dlc_var: f64,
    lik_thresh: f32,
    /// Time of the frame the state describes; `None` before the first frame.
    last_frame_ns: Option<u64>,
    /// Number of leading tracks that may be live (the longest pose observed).
    n_tracks: usize,
    tracks: [Track; MAX_KEYPOINTS],
}

impl KalmanPredictor {
    /// A filter with the given parameters, after checking them.
    pub fn new(cfg: &KalmanConfig) -> Result<Self, PluginError> {
        cfg.validate()?;
        let mut prior_var = [POSITION_PRIOR_VAR; MAX_STATE];
        prior_var[1..=cfg.nderiv].copy_from_slice(&cfg.priors);
        Ok(KalmanPredictor {
            n: cfg.nderiv + 1,
            prior_var,
            initial_var: cfg.initial_var,
            process_var: cfg.process_var,
            dlc_var: cfg.dlc_var,
            lik_thresh: cfg.lik_thresh,
            last_frame_ns: None,
            n_tracks: 0,
            tracks: [DEAD_TRACK; MAX_KEYPOINTS],
        })
    }

    /// A fresh state for one coordinate first measured at `position_px`: at rest, `initial_var·I`.
    fn start_axis(&self, position_px: f64) -> Axis {
        let mut axis = Axis {
            x: [0.0; MAX_STATE],
            p: ZERO,
        };
        axis.x[0] = position_px;
        for i in 0..self.n {
            axis.p[i][i] = self.initial_var;
        }
        axis
    }

    /// Advance one coordinate by `dt_s` and, with a measurement, correct its state.
    ///
    /// Returns false if the result is not finite (the caller drops the track).
    fn step_axis(&self, axis: &mut Axis, dt_s: f64, measured_px: Option<f64>) -> bool {
        let n = self.n;
        let f = transition(dt_s, n);

        // Prediction: shrink toward the priors (state only), then x⁻ = F x, P⁻ = F P Fᵀ + Q.
        let shrunk: [f64; MAX_STATE] = std::array::from_fn(|i| {
            let b = self.prior_var[i];
            if i < n {
                axis.x[i] * b / (b + axis.p[i][i])
            } else {
                0.0
            }
        });
        let mut xp = [0.0; MAX_STATE];
        for (i, xp_i) in xp.iter_mut().enumerate().take(n) {
            *xp_i = (i..n).map(|j| f[i][j] * shrunk[j]).sum();
        }
        let mut pp = mul_transposed(&mul(&f, &axis.p, n), &f, n);
        for (i, row) in pp.iter_mut().enumerate().take(n) {
            row[i] += self.process_var;
        }

        // S = P⁻ + R, K = P⁻ S⁻¹, P = (I − K) P⁻. Like DLC-Live, the covariance takes this
        // update even when there is no usable measurement (see the type's docs for why).
        let mut s = pp;
        for (i, row) in s.iter_mut().enumerate().take(n) {
            row[i] += self.dlc_var;
        }
        let Some(s_inv) = invert(&s, n) else {
            return false;
        };
        let k = mul(&pp, &s_inv, n);
        let mut i_minus_k = ZERO;
        for i in 0..n {
            for j in 0..n {
                i_minus_k[i][j] = f64::from(u8::from(i == j)) - k[i][j];
            }
        }

        // x = x⁻ + K y with a measurement, else x = x⁻.
        let mut x = xp;
        if let Some(z0) = measured_px {
            // Pseudo-measurements: each derivative is the finite difference of the one below
            // against the previous posterior.
            let mut residual = [0.0; MAX_STATE];
            let mut z_prev = z0;
            residual[0] = z0 - xp[0];
            for i in 1..n {
                let z = (z_prev - axis.x[i - 1]) / dt_s;
                residual[i] = z - xp[i];
                z_prev = z;
            }
            for i in 0..n {
                x[i] += (0..n).map(|j| k[i][j] * residual[j]).sum::<f64>();
            }
        }
        axis.x = x;
        axis.p = mul(&i_minus_k, &pp, n);
        axis.x[..n].iter().all(|v| v.is_finite())
            && axis.p[..n]
                .iter()
                .all(|row| row[..n].iter().all(|v| v.is_finite()))
    }
}

impl Predictor for KalmanPredictor {
    fn name(&self) -> &'static str {
        "kalman"
    }

    fn observe(&mut self, measured: &Pose, frame_time_ns: u64) {
        let dt_s = match self.last_frame_ns {
            Some(last_ns) if frame_time_ns <= last_ns => return, // stale or repeated frame
            Some(last_ns) => Some((frame_time_ns - last_ns) as f64 / NS_PER_S),
            None => None,
        };
        self.last_frame_ns = Some(frame_time_ns);
        self.n_tracks = self.n_tracks.max(measured.len());

        for i in 0..self.n_tracks {
            let point = measured.points().get(i).copied();
            let present = point.filter(|p| !p.is_missing());
            // `>=` is false for a NaN score, so NaN never counts as a measurement.
            let usable = present.filter(|p| p.score >= self.lik_thresh);
            let mut track = self.tracks[i];
            track.score = present.map_or(0.0, |p| if p.score.is_nan() { 0.0 } else { p.score });

            if let (true, Some(dt_s)) = (track.live, dt_s) {
                let ok_x = self.step_axis(&mut track.axes[0], dt_s, usable.map(|p| f64::from(p.x)));
                let ok_y = self.step_axis(&mut track.axes[1], dt_s, usable.map(|p| f64::from(p.y)));
                // A non-finite result (only reachable through absurd parameters) restarts the
                // keypoint at its next usable measurement instead of poisoning it for good.
                track.live = ok_x && ok_y;
            } else if let Some(p) = usable {
                track.axes = [
                    self.start_axis(f64::from(p.x)),
                    self.start_axis(f64::from(p.y)),
                ];
                track.live = true;
            }
            self.tracks[i] = track;
        }
    }

    fn predict(&mut self, at_ns: u64, out: &mut Pose) {
        let horizon_s = self.last_frame_ns.map_or(0.0, |last_ns| {
            at_ns.saturating_sub(last_ns) as f64 / NS_PER_S
        });
        let f = transition(horizon_s, self.n);
        for (slot, track) in out.points_mut().iter_mut().zip(&self.tracks) {
            *slot = if track.live {
                let [x, y] = track
                    .axes
                    .map(|a| (0..self.n).map(|j| f[0][j] * a.x[j]).sum::<f64>() as f32);
                Keypoint::new(x, y, track.score)
            } else {
                Keypoint::MISSING
            };
        }
    }

    fn reset(&mut self) {
        self.last_frame_ns = None;
        self.n_tracks = 0;
        self.tracks = [DEAD_TRACK; MAX_KEYPOINTS];
    }
}

/// DLC-Live's transition matrix: entry (i, i+d) = dtᵈ / max(1, d), i.e. [[1, dt, dt²/2],
/// [0, 1, dt], [0, 0, 1]] for n = 3.
fn transition(dt_s: f64, n: usize) -> Mat {
    std::array::from_fn(|i| {
        std::array::from_fn(|j| match j.checked_sub(i) {
            Some(d) if j < n => dt_s.powi(d as i32) / d.max(1) as f64,
            _ => 0.0,
        })
    })
}

/// `a · b` on the `n`×`n` block.
fn mul(a: &Mat, b: &Mat, n: usize) -> Mat {
    let mut c = ZERO;
    for i in 0..n {
        for j in 0..n {
            c[i][j] = (0..n).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    c
}

/// `a · bᵀ` on the `n`×`n` block.
fn mul_transposed(a: &Mat, b: &Mat, n: usize) -> Mat {
    let mut c = ZERO;
    for i in 0..n {
        for j in 0..n {
            c[i][j] = (0..n).map(|k| a[i][k] * b[j][k]).sum();
        }
    }
    c
}

/// Inverse of the `n`×`n` block by Gauss–Jordan elimination with partial pivoting, or `None`
/// if it is singular or not finite.
fn invert(m: &Mat, n: usize) -> Option<Mat> {
    let mut a = *m;
    let mut inv = ZERO;
    for (i, row) in inv.iter_mut().enumerate().take(n) {
        row[i] = 1.0;
    }
    for col in 0..n {
        let pivot = (col..n).max_by(|&r, &s| a[r][col].abs().total_cmp(&a[s][col].abs()))?;
        let pv = a[pivot][col];
        if !pv.is_finite() || pv.abs() < f64::MIN_POSITIVE {
            return None;
        }
        a.swap(col, pivot);
        inv.swap(col, pivot);
        for j in 0..n {
            a[col][j] /= pv;
            inv[col][j] /= pv;
        }
        for r in 0..n {
            if r != col {
                let factor = a[r][col];
                for j in 0..n {
                    a[r][j] -= factor * a[col][j];
                    inv[r][j] -= factor * inv[col][j];
                }
            }
        }
    }
    Some(inv)
}

/// Parameters of [`RobustPredictor`], in pixels, seconds and likelihood units.
///
/// Every field may be omitted in a config file; unknown fields are refused. The defaults were
/// chosen with `reflex eval predict` on a 25 fps clip of two flies (a SLEAP model's output:
/// ~5 px median error with a heavy tail and identity swaps); a `meas_sigma_px` of 8–12 and an
/// `accel_noise` of 200–400 scored alike there. Check them on your own recordings.
/// See [`RobustPredictor`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RobustConfig {
    /// Standard deviation of the pose model's position error for a keypoint scored ≥ 1, px.
    /// A keypoint scored `s` < 1 is trusted as if its error were `meas_sigma_px / √s`.
    pub meas_sigma_px: f64,
    /// Intensity of the random acceleration, as the standard deviation a free velocity would
    /// reach after 1 s, px/s (white-noise acceleration of spectral density `accel_noise²`,
    /// px²/s³). Larger follows turns and starts faster; smaller smooths more.
    pub accel_noise: f64,
    /// Time constant with which the velocity decays toward rest when nothing of the animal is
    /// measured and in the extrapolation, s: a prediction `h` ahead moves
    /// `damping_s·(1 − e^(−h/damping_s))·v`, so a stale velocity cannot carry a keypoint far.
    pub damping_s: f64,
    /// Keypoints scoring below this likelihood (or with a NaN score) are not measurements.
    pub min_score: f32,
    /// Measurements further than this many standard deviations of the innovation from the
    /// predicted position are rejected as outliers (detector glitches, identity swaps).
    pub gate_sigma: f64,
    /// After a keypoint's measurements have been rejected for this long in a row, s, the filter
    /// restarts at the measurement (the animal really went there, e.g. after a dropout).
    pub reacquire_s: f64,
}

impl Default for RobustConfig {
    /// `meas_sigma_px = 8`, `accel_noise = 200`, `damping_s = 0.15`, `min_score = 0.05`,
    /// `gate_sigma = 5`, `reacquire_s = 0.2`.
    fn default() -> Self {
        RobustConfig {
            meas_sigma_px: 8.0,
            accel_noise: 200.0,
            damping_s: 0.15,
            min_score: 0.05,
            gate_sigma: 5.0,
            reacquire_s: 0.2,
        }
    }
}

impl RobustConfig {
    /// Check every parameter, naming the first one out of range.
    pub fn validate(&self) -> Result<(), PluginError> {
        let check = |param, requirement, value: f64, ok: bool| {
            if ok {
                Ok(())
            } else {
                Err(PluginError::InvalidPredictorParam {
                    predictor: "robust",
                    param,
                    requirement,
                    value,
                })
            }
        };
        const POS: &str = "a finite number > 0";
        let pos = |v: f64| v.is_finite() && v > 0.0;
        check(
            "meas_sigma_px",
            POS,
            self.meas_sigma_px,
            pos(self.meas_sigma_px),
        )?;
        check("accel_noise", POS, self.accel_noise, pos(self.accel_noise))?;
        check("damping_s", POS, self.damping_s, pos(self.damping_s))?;
        check("gate_sigma", POS, self.gate_sigma, pos(self.gate_sigma))?;
        let r = self.reacquire_s;
        check(
            "reacquire_s",
            "a finite number >= 0",
            r,
            r.is_finite() && r >= 0.0,
        )?;
        let m = self.min_score;
        check("min_score", "a finite number", f64::from(m), m.is_finite())?;
        Ok(())
    }
}

/// Lowest score used to weight a measurement (a score of 0 would mean infinite noise).
const MIN_WEIGHT_SCORE: f64 = 0.05;

/// State of one keypoint in [`RobustPredictor`]: position and velocity per axis, and the
/// covariance they share (both axes see the same model and the same measurements, so their
/// covariances are always equal).
#[derive(Clone, Copy, Debug)]
struct RobustPoint {
    /// False until the first usable measurement.
    live: bool,
    /// Position, px (x, y).
    pos: [f64; 2],
    /// Velocity, px/s (x, y).
    vel: [f64; 2],
    /// Covariance of (position, velocity) of one axis: [var p, cov pv, var v] in px², px²/s, px²/s².
    cov: [f64; 3],
    /// Score reported with predictions: the accepted measurement's, 0 when none this frame.
    score: f32,
    /// Typical distance of this keypoint from the body centre (mean of the animal's live
    /// keypoints), px, learned from accepted frames; 0 until known.
    reach_px: f64,
    /// Where the current run of rejected measurements is (the latest of them), px.
    candidate: [f64; 2],
    /// Frame time since which rejected measurements have stayed together at `candidate`.
    candidate_since_ns: Option<u64>,
}

const DEAD_POINT: RobustPoint = RobustPoint {
    live: false,
    pos: [0.0; 2],
    vel: [0.0; 2],
    cov: [0.0; 3],
    score: 0.0,
    reach_px: 0.0,
    candidate: [0.0; 2],
    candidate_since_ns: None,
};

/// A measurement of one keypoint this frame, after the score check.
#[derive(Clone, Copy)]
struct Measurement {
    z: [f64; 2],
    /// Measurement variance, px².
    r: f64,
    score: f32,
}

/// Weight of a new frame in the running estimate of each keypoint's reach (an exponential
/// average over about 20 accepted frames).
const REACH_RATE: f64 = 0.05;
/// Fraction of a keypoint's reach by which posture may change it before the keypoint counts as
/// detached from the body (on top of the measurement's gate).
const REACH_SLACK: f64 = 0.5;
/// Standard deviation of a keypoint's position relative to the body when it is carried along
/// with the body, as a fraction of its reach.
const REACH_POSTURE: f64 = 0.25;

/// reflex's own forward predictor: a damped constant-velocity Kalman filter per keypoint with
/// likelihood-weighted updates and outlier, identity-swap and detached-keypoint rejection.
///
/// The model, per keypoint and axis: position and velocity with white-noise acceleration
/// (`q = accel_noise²`, process noise `q·[[dt³/3, dt²/2], [dt²/2, dt]]`), constant velocity
/// between measured frames, so steady motion is followed without lag. Only the position is
/// measured, with variance `meas_sigma_px² / clamp(score, 0.05, 1)`, so a doubtful keypoint
/// moves the state less (DLC-Live's filter instead "measures" velocity and acceleration as
/// finite differences of raw positions, which turns every pixel of noise into velocity). The
/// velocity decays toward rest with time constant `damping_s` (an Ornstein–Uhlenbeck
/// velocity: `[[1, τ(1 − e^(−dt/τ))], [0, e^(−dt/τ)]]`) while the animal goes unseen and in
/// the extrapolation to the asked time.
///
/// Robustness, per frame:
/// - *Jumps*: a measurement further than `gate_sigma` standard deviations of the innovation
///   from the predicted position is rejected.
/// - *Identity swaps*: if most of an animal's measured keypoints jump together, the frame is
///   taken as a swap (or a whole-body glitch) and all of its measurements are rejected.
/// - *Re-acquisition*: rejected measurements that stay together for `reacquire_s` restart the
///   keypoint there: the animal really went there (e.g. after a dropout or a fast move).
/// - *Detached keypoints*: each keypoint learns its typical distance from the body centre; a
///   rejected measurement much further from (or closer to) the centre than that, e.g. a head
///   detected on the other animal while the thorax is right, never restarts the keypoint, even
///   if it stays there; the keypoint follows the body instead.
/// - *Whole-body motion*: a keypoint without an accepted measurement moves with the mean
///   correction and velocity of the animal's accepted keypoints (a rigid translation); with
///   none, it coasts with decaying velocity and growing uncertainty (so its gate widens). Its
///   score is reported as 0.
///
/// Which to use when: `robust` for triggering on detector output (noisy, with low-score frames,
/// jumps and identity swaps) at horizons up to a few frames; [`KalmanPredictor`] to reproduce
/// a DeepLabCut-Live setup exactly; [`LastMeasurement`] when latency is below a frame's motion.
/// Like the others it is per animal (one instance per track), computes in f64 on inline
/// arrays and never allocates after [`RobustPredictor::new`].
#[derive(Clone, Debug)]
pub struct RobustPredictor {
    cfg: RobustConfig,
    /// White-noise acceleration spectral density `accel_noise²`, px²/s³.
    q: f64,
    /// Time of the frame the state describes; `None` before the first frame.
    last_frame_ns: Option<u64>,
    /// Number of leading points that may be live (the longest pose observed).
    n_points: usize,
    points: [RobustPoint; MAX_KEYPOINTS],
}

impl RobustPredictor {
    /// A predictor with the given parameters, after checking them.
    pub fn new(cfg: &RobustConfig) -> Result<Self, PluginError> {
        cfg.validate()?;
        Ok(RobustPredictor {
            cfg: cfg.clone(),
            q: cfg.accel_noise * cfg.accel_noise,
            last_frame_ns: None,
            n_points: 0,
            points: [DEAD_POINT; MAX_KEYPOINTS],
        })
    }

    /// Distance and gain factors of the damped motion over `dt_s`: (e^(−dt/τ), τ(1 − e^(−dt/τ))).
    fn damp(&self, dt_s: f64) -> (f64, f64) {
        let a = (-dt_s / self.cfg.damping_s).exp();
        (a, self.cfg.damping_s * (1.0 - a))
    }

    /// Restart `pt` at measurement `m`: at rest, with the velocity's stationary variance; its
    /// learned reach is kept.
    fn restart(&self, pt: &mut RobustPoint, m: &Measurement) {
        *pt = RobustPoint {
            live: true,
            pos: m.z,
            vel: [0.0; 2],
            cov: [m.r, 0.0, self.q * self.cfg.damping_s / 2.0],
            score: m.score,
            reach_px: pt.reach_px,
            candidate: m.z,
            candidate_since_ns: None,
        };
    }

    /// Mean position of the first `n_points` live points, or `None` if fewer than two are live.
    fn centre(&self) -> Option<[f64; 2]> {
        let mut sum = [0.0; 2];
        let mut n = 0usize;
        for pt in self.points[..self.n_points].iter().filter(|p| p.live) {
            sum[0] += pt.pos[0];
            sum[1] += pt.pos[1];
            n += 1;
        }
        (n >= 2).then(|| [sum[0] / n as f64, sum[1] / n as f64])
    }
}

/// Kalman time update of one point over `dt_s`: velocity factor `a` (e^(−dt/τ), or 1 for
/// constant velocity), velocity-to-position gain `b` (τ(1 − a), or `dt_s`), white-noise
/// acceleration of spectral density `q` (px²/s³).
fn time_update(pt: &mut RobustPoint, a: f64, b: f64, q: f64, dt_s: f64) {
    let [pp, pv, vv] = pt.cov;
    for k in 0..2 {
        pt.pos[k] += b * pt.vel[k];
        pt.vel[k] *= a;
    }
    pt.cov = [
        pp + 2.0 * b * pv + b * b * vv + q * dt_s.powi(3) / 3.0,
        a * (pv + b * vv) + q * dt_s * dt_s / 2.0,
        a * a * vv + q * dt_s,
    ];
}

/// What happened to one keypoint's measurement in a frame.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// No usable measurement.
    None,
    /// Accepted: the filter was updated (or started) with it.
    Accepted,
    /// Further from the prediction than the gate (or rejected with the whole animal).
    Jump,
    /// Further from the prediction than the gate, and not where it sits on the body: never a
    /// candidate for a restart.
    Detached,
}

impl Predictor for RobustPredictor {
    fn name(&self) -> &'static str {
        "robust"
    }

    fn observe(&mut self, measured: &Pose, frame_time_ns: u64) {
        let dt_s = match self.last_frame_ns {
            Some(last_ns) if frame_time_ns <= last_ns => return, // stale or repeated frame
            Some(last_ns) => (frame_time_ns - last_ns) as f64 / NS_PER_S,
            None => 0.0,
        };
        self.last_frame_ns = Some(frame_time_ns);
        let n = self.n_points.max(measured.len());
        self.n_points = n;
        let q = self.q;
        let sigma2 = self.cfg.meas_sigma_px * self.cfg.meas_sigma_px;
        let gate2 = self.cfg.gate_sigma * self.cfg.gate_sigma;
        // The state before this frame, for points that end up coasting (step 4).
        let before = self.points;

        // 1. Time update of every live point, constant velocity: a measured point is predicted
        // undamped, so steady motion is tracked without lag.
        let mut meas: [Option<Measurement>; MAX_KEYPOINTS] = [None; MAX_KEYPOINTS];
        for (i, m) in meas.iter_mut().enumerate().take(n) {
            *m = measured
                .points()
                .get(i)
                .filter(|p| !p.is_missing() && p.score >= self.cfg.min_score) // false for NaN
                .map(|p| Measurement {
                    z: [f64::from(p.x), f64::from(p.y)],
                    r: sigma2 / f64::from(p.score).clamp(MIN_WEIGHT_SCORE, 1.0),
                    score: p.score,
                });
            let pt = &mut self.points[i];
            if pt.live {
                time_update(pt, 1.0, dt_s, q, dt_s);
            }
        }

        // 2. Gate every measurement against its prediction. A rejected one is also checked
        // against the body: its distance from the body centre (this frame's measurements, the
        // prediction where there is none) must match the keypoint's learned reach.
        let centre = {
            let (mut sum, mut count) = ([0.0; 2], 0usize);
            for (pt, m) in self.points[..n].iter().zip(&meas).filter(|(p, _)| p.live) {
                let at = m.map_or(pt.pos, |m| m.z);
                sum[0] += at[0];
                sum[1] += at[1];
                count += 1;
            }
            (count >= 2).then(|| [sum[0] / count as f64, sum[1] / count as f64])
        };
        let mut verdict = [Verdict::None; MAX_KEYPOINTS];
        let (mut gated, mut jumps) = (0usize, 0usize);
        for i in 0..n {
            let (Some(m), pt) = (meas[i], &self.points[i]) else {
                continue;
            };
            if !pt.live {
                verdict[i] = Verdict::Accepted;
                continue;
            }
            let s = pt.cov[0] + m.r;
            let d2 = ((m.z[0] - pt.pos[0]).powi(2) + (m.z[1] - pt.pos[1]).powi(2)) / s;
            gated += 1;
            // A NaN distance (never from finite state) counts as a jump.
            verdict[i] = if d2.is_nan() || d2 > gate2 {
                jumps += 1;
                let detached = centre.is_some_and(|c| {
                    let reach = (m.z[0] - c[0]).hypot(m.z[1] - c[1]);
                    // The measurement's own noise only: the prediction's uncertainty says nothing
                    // about where the keypoint sits on the body.
                    let slack = self.cfg.gate_sigma * m.r.sqrt() + REACH_SLACK * pt.reach_px;
                    pt.reach_px > 0.0 && (reach - pt.reach_px).abs() > slack
                });
                if detached {
                    Verdict::Detached
                } else {
                    Verdict::Jump
                }
            } else {
                Verdict::Accepted
            };
        }
        // Most of the body jumped at once: an identity swap or a whole-animal glitch.
        let swap = gated >= 2 && 2 * jumps > gated;

        // 3. Measurement update, rejection and restarts.
        let mut shift = [0.0; 2];
        let mut vel = [0.0; 2];
        let mut cov = [0.0; 3];
        let mut accepted = 0usize;
        for i in 0..n {
            let Some(m) = meas[i] else {
                self.points[i].score = 0.0;
                continue;
            };
            let mut pt = self.points[i];
            if !pt.live {
                self.restart(&mut pt, &m);
            } else if swap || verdict[i] != Verdict::Accepted {
                // Rejected. Rejections that stay together become a candidate for a restart.
                let near = (m.z[0] - pt.candidate[0]).hypot(m.z[1] - pt.candidate[1])
                    <= 2.0 * self.cfg.gate_sigma * m.r.sqrt();
                let since = match pt.candidate_since_ns {
                    Some(since) if near => since,
                    _ => frame_time_ns,
                };
                pt.candidate = m.z;
                pt.candidate_since_ns = Some(since);
                pt.score = 0.0;
                let held_s = (frame_time_ns - since) as f64 / NS_PER_S;
                verdict[i] = if held_s >= self.cfg.reacquire_s && verdict[i] != Verdict::Detached {
                    self.restart(&mut pt, &m);
                    Verdict::Accepted
                } else {
                    Verdict::Jump
                };
            } else {
                let [pp, pv, vv] = pt.cov;
                let s = pp + m.r;
                let (k0, k1) = (pp / s, pv / s);
                for k in 0..2 {
                    let innovation = m.z[k] - pt.pos[k];
                    pt.pos[k] += k0 * innovation;
                    pt.vel[k] += k1 * innovation;
                    shift[k] += k0 * innovation;
                    vel[k] += pt.vel[k];
                }
                pt.cov = [(1.0 - k0) * pp, (1.0 - k0) * pv, vv - k1 * pv];
                for (sum, c) in cov.iter_mut().zip(&pt.cov) {
                    *sum += c;
                }
                pt.score = m.score;
                pt.candidate_since_ns = None;
                accepted += 1;
            }
            self.points[i] = pt;
        }

        // 4. Keypoints not updated move with the body: the mean correction and velocity of the
        // accepted ones (a rigid translation), and are as certain as those, up to a change of
        // posture (a quarter of their reach), so that their gate does not open wide while the
        // body is in view.
        if accepted > 0 {
            let k = accepted as f64;
            for (pt, v) in self.points[..n].iter_mut().zip(&verdict) {
                if pt.live && *v != Verdict::Accepted {
                    for ax in 0..2 {
                        pt.pos[ax] += shift[ax] / k;
                        pt.vel[ax] = vel[ax] / k;
                    }
                    let posture_var = (REACH_POSTURE * pt.reach_px).powi(2);
                    pt.cov = [cov[0] / k + posture_var, cov[1] / k, cov[2] / k];
                }
            }
        } else {
            // Nothing of the body seen: points coast with damped velocity.
            let (a, b) = self.damp(dt_s);
            for ((pt, v), old) in self.points[..n].iter_mut().zip(&verdict).zip(&before) {
                if pt.live && old.live && *v != Verdict::Accepted {
                    let (score, candidate, since) = (pt.score, pt.candidate, pt.candidate_since_ns);
                    *pt = *old;
                    time_update(pt, a, b, q, dt_s);
                    (pt.score, pt.candidate, pt.candidate_since_ns) = (score, candidate, since);
                }
            }
        }

        // 5. Learn each accepted keypoint's reach from the body centre.
        if let Some(c) = self.centre() {
            for (pt, v) in self.points[..n].iter_mut().zip(&verdict) {
                if *v == Verdict::Accepted && pt.live {
                    let reach = (pt.pos[0] - c[0]).hypot(pt.pos[1] - c[1]);
                    pt.reach_px = if pt.reach_px > 0.0 {
                        pt.reach_px + REACH_RATE * (reach - pt.reach_px)
                    } else {
                        reach
                    };
                }
            }
        }

        // A non-finite state (only reachable through absurd inputs) restarts the point.
        for pt in &mut self.points[..n] {
            let finite = pt
                .pos
                .iter()
                .chain(&pt.vel)
                .chain(&pt.cov)
                .all(|v| v.is_finite())
                && pt.reach_px.is_finite();
            if pt.live && !finite {
                *pt = DEAD_POINT;
            }
        }
    }

    fn predict(&mut self, at_ns: u64, out: &mut Pose) {
        let horizon_s = self.last_frame_ns.map_or(0.0, |last_ns| {
            at_ns.saturating_sub(last_ns) as f64 / NS_PER_S
        });
        let (_, b) = self.damp(horizon_s);
        for (slot, pt) in out.points_mut().iter_mut().zip(&self.points) {
            *slot = if pt.live {
                Keypoint::new(
                    (pt.pos[0] + b * pt.vel[0]) as f32,
                    (pt.pos[1] + b * pt.vel[1]) as f32,
                    pt.score,
                )
            } else {
                Keypoint::MISSING
            };
        }
    }

    fn reset(&mut self) {
        self.last_frame_ns = None;
        self.n_points = 0;
        self.points = [DEAD_POINT; MAX_KEYPOINTS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn pose1(x: f32, y: f32, score: f32) -> Pose {
        let mut p = Pose::new(1);
        p.points_mut()[0] = Keypoint::new(x, y, score);
        p
    }

    /// Feed `frames` frames of `truth(t_s)` at `fps`, predicting `forward_ns` ahead each frame;
    /// return the worst Euclidean error (px) over frames `from..`.
    fn worst_error(
        predictor: &mut dyn Predictor,
        truth: impl Fn(f64) -> (f64, f64),
        fps: f64,
        frames: usize,
        from: usize,
        forward_ns: u64,
    ) -> f64 {
        let period_ns = (1e9 / fps).round() as u64;
        let t0_ns = 5_000_000_000u64; // arbitrary non-zero monotonic origin
        let mut out = Pose::new(1);
        let mut worst: f64 = 0.0;
        for k in 0..frames {
            let t_ns = t0_ns + k as u64 * period_ns;
            let t_s = (t_ns - t0_ns) as f64 / 1e9;
            let (x, y) = truth(t_s);
            predictor.observe(&pose1(x as f32, y as f32, 0.95), t_ns);
            let at_ns = Horizon {
                forward_ns,
                adapt: false,
            }
            .target_ns(t_ns, t_ns);
            predictor.predict(at_ns, &mut out);
            let (tx, ty) = truth((at_ns - t0_ns) as f64 / 1e9);
            let p = out.points()[0];
            let err = (f64::from(p.x) - tx).hypot(f64::from(p.y) - ty);
            if k >= from {
                assert!(err.is_finite(), "frame {k}: non-finite prediction {p:?}");
                worst = worst.max(err);
            }
        }
        worst
    }

    fn kalman() -> KalmanPredictor {
        KalmanPredictor::new(&KalmanConfig::default()).unwrap()
    }

    #[test]
    fn horizon_adapt_targets_now_plus_forward() {
        let h = Horizon {
            forward_ns: 30 * MS,
            adapt: true,
        };
        // now − frame + forward after the frame time = now + forward.
        assert_eq!(h.target_ns(1_000 * MS, 1_012 * MS), 1_042 * MS);
        let fixed = Horizon { adapt: false, ..h };
        assert_eq!(fixed.target_ns(1_000 * MS, 1_012 * MS), 1_030 * MS);
        assert_eq!(fixed.target_ns(u64::MAX - 1, 0), u64::MAX);
        assert_eq!(
            Horizon::default(),
            Horizon {
                forward_ns: 2 * MS,
                adapt: true
            }
        );
    }

    #[test]
    fn config_horizon_converts_seconds_to_ns() {
        let cfg = KalmanConfig {
            forward: 0.0333,
            adapt: false,
            ..KalmanConfig::default()
        };
        assert_eq!(
            cfg.horizon(),
            Horizon {
                forward_ns: 33_300_000,
                adapt: false
            }
        );
        assert_eq!(KalmanConfig::default().horizon(), Horizon::default());
    }

    #[test]
    fn defaults_are_dlc_lives() {
        let cfg = KalmanConfig::default();
        assert!(cfg.adapt);
        assert_eq!(cfg.forward, 0.002);
        assert_eq!(cfg.fps, 30.0);
        assert_eq!(cfg.nderiv, 2);
        assert_eq!(cfg.priors, vec![10.0, 10.0]);
        assert_eq!(cfg.initial_var, 5.0);
        assert_eq!(cfg.process_var, 5.0);
        assert_eq!(cfg.dlc_var, 20.0);
        assert_eq!(cfg.lik_thresh, 0.0);
        let parsed: KalmanConfig = toml::from_str("").unwrap();
        assert_eq!(parsed, cfg);
    }

    #[test]
    fn config_parses_dlc_parameter_names_and_refuses_unknown_ones() {
        let cfg: KalmanConfig =
            toml::from_str("forward = 0.03\nadapt = false\nlik_thresh = 0.6\npriors = [5, 20]")
                .unwrap();
        assert_eq!(cfg.forward, 0.03);
        assert!(!cfg.adapt);
        assert_eq!(cfg.lik_thresh, 0.6);
        assert_eq!(cfg.priors, vec![5.0, 20.0]);
        assert_eq!(cfg.dlc_var, 20.0);
        let err = toml::from_str::<KalmanConfig>("forwrd = 0.03").unwrap_err();
        assert!(err.to_string().contains("unknown field `forwrd`"), "{err}");
    }

    #[test]
    fn invalid_parameters_are_named() {
        let check = |cfg: KalmanConfig, msg: &str| {
            assert_eq!(KalmanPredictor::new(&cfg).unwrap_err().to_string(), msg);
        };
        let d = KalmanConfig::default;
        check(
            KalmanConfig {
                dlc_var: 0.0,
                ..d()
            },
            "kalman predictor: `dlc_var` must be a finite number > 0, got 0",
        );
        check(
            KalmanConfig {
                forward: -0.01,
                ..d()
            },
            "kalman predictor: `forward` must be a finite number >= 0, got -0.01",
        );
        check(
            KalmanConfig { nderiv: 3, ..d() },
            "kalman predictor: `nderiv` must be 0, 1 or 2 (up to constant acceleration), got 3",
        );
        check(
            KalmanConfig { nderiv: 1, ..d() },
            "kalman predictor: `priors` must have nderiv = 1 entries (prior variances of velocity, then acceleration), got 2",
        );
        check(
            KalmanConfig {
                lik_thresh: f32::NAN,
                ..d()
            },
            "kalman predictor: `lik_thresh` must be a finite number, got NaN",
        );
    }

    #[test]
    fn constant_velocity_is_predicted_ahead() {
        let truth = |t: f64| (100.0 + 200.0 * t, 300.0 - 120.0 * t); // 200, -120 px/s
        for (forward_ms, kalman_max_px, min_ratio) in
            [(20, 0.3, 10.0), (30, 1.5, 4.0), (40, 3.0, 2.5)]
        {
            let k = worst_error(&mut kalman(), truth, 100.0, 200, 60, forward_ms * MS);
            let last = worst_error(
                &mut LastMeasurement::new(),
                truth,
                100.0,
                200,
                60,
                forward_ms * MS,
            );
            assert!(k < kalman_max_px, "{forward_ms} ms: kalman error {k} px");
            assert!(
                k * min_ratio < last,
                "{forward_ms} ms: kalman {k} px vs last {last} px"
            );
        }
    }

    #[test]
    fn constant_acceleration_is_predicted_ahead() {
        // 50 px/s initial velocity, 300 px/s² acceleration in x; y at rest.
        let truth = |t: f64| (100.0 + 50.0 * t + 150.0 * t * t, 200.0);
        for (forward_ms, kalman_max_px, min_ratio) in
            [(20, 0.6, 10.0), (30, 2.0, 5.0), (40, 5.0, 3.0)]
        {
            let k = worst_error(&mut kalman(), truth, 100.0, 120, 60, forward_ms * MS);
            let last = worst_error(
                &mut LastMeasurement::new(),
                truth,
                100.0,
                120,
                60,
                forward_ms * MS,
            );
            assert!(k < kalman_max_px, "{forward_ms} ms: kalman error {k} px");
            assert!(
                k * min_ratio < last,
                "{forward_ms} ms: kalman {k} px vs last {last} px"
            );
        }
    }

    /// Three frames of DeepLabCut-Live's equations, worked through for one coordinate.
    ///
    /// Settings: DLC defaults except `fps = 1` and `lik_thresh = 0.5`; frames at t = 0, 1, 2 s
    /// (so DLC's wall-clock dt and its `1/fps` both equal our frame interval, 1 s). Keypoint
    /// A's x is 10, 12, 15 px (scores 0.9, 0.95, 0.99); keypoint B's x is 100, 103, 107 px
    /// with scores 0.9, 0.8, 0.1 (below the threshold on frame 3).
    ///
    /// F(1 s) = [[1, 1, 0.5], [0, 1, 1], [0, 0, 1]]; Q = 5I, R = 20I, P₀ = 5I, B = [1e5, 10, 10].
    ///
    /// Frame 1 (t = 0): x_A = [10, 0, 0], P = 5I.
    ///
    /// Frame 2 (t = 1): shrink: 10·1e5/(1e5 + 5) = 9.99950002; velocity, acceleration 0.
    /// x⁻ = F·x = [9.99950002, 0, 0]. P⁻ = 5·F·Fᵀ + 5I, with F·Fᵀ = [[2.25, 1.5, 0.5],
    /// [1.5, 2, 1], [0.5, 1, 1]], so P⁻ = [[16.25, 7.5, 2.5], [7.5, 15, 5], [2.5, 5, 10]].
    /// Pseudo-measurement z = [12, (12 − 10)/1, (2 − 0)/1] = [12, 2, 2];
    /// y = z − x⁻ = [2.00049998, 2, 2]. S = P⁻ + 20I; K = P⁻S⁻¹; x = x⁻ + K·y
    /// = [11.1390406, 1.20288183, 0.871266313]; P = (I − K)P⁻ = [[8.43033510, 2.39858907,
    /// 0.564373898], [2.39858907, 7.79541446, 1.83421517], [0.564373898, 1.83421517,
    /// 6.31393298]]. Prediction 0.5 s ahead: 11.1390406 + 0.5·1.20288183
    /// + 0.125·0.871266313 = 11.8493898.
    ///
    /// Frame 3 (t = 2): shrink by B/(B + diag P): [11.1390406·1e5/(1e5 + 8.4303351),
    /// 1.20288183·10/17.7954145, 0.871266313·10/16.3139330] = [11.1381016, 0.675951, 0.534063];
    /// x⁻ = F·that = [12.0810834, 1.21001315, 0.534062702]; P⁻ = F·P·Fᵀ + 5I =
    /// [[30, 16.6666667, 5.5555556], [16.6666667, 22.7777778, 8.1481481], [5.5555556,
    /// 8.1481481, 11.3139330]]. z = [15, (15 − 11.1390406)/1, (3.8609594 − 1.20288183)/1];
    /// y = [2.91891661, 2.65094628, 2.12401489]; x = x⁻ + K·y = [14.1889584, 3.13242878,
    /// 1.63494404]; 0.5 s ahead: 15.9595408. Keypoint B on frame 3 is below `lik_thresh`, so
    /// it keeps x⁻ = [103.112325, 1.81537964, 0.801167563]: 0.5 s ahead 104.120161.
    ///
    /// The same numbers come out of DLC-Live's own `KalmanFilterPredictor` at commit 29c8122
    /// with `time.time` mocked to the frame times (printed to 9 decimals; y ≈ 4 and 50 are
    /// the shrink of constant coordinates).
    #[test]
    fn matches_dlc_live_for_three_frames() {
        let cfg = KalmanConfig {
            fps: 1.0,
            lik_thresh: 0.5,
            ..KalmanConfig::default()
        };
        let mut kf = KalmanPredictor::new(&cfg).unwrap();
        let s = 1_000_000_000u64;
        let frames = [
            [(10.0, 4.0, 0.9), (100.0, 50.0, 0.9)],
            [(12.0, 4.0, 0.95), (103.0, 50.0, 0.8)],
            [(15.0, 4.0, 0.99), (107.0, 50.0, 0.1)],
        ];
        // Expected (x_A, y_A, x_B, y_B) at horizons 0, 0.5 and 1 s after each frame (DLC).
        let expected: [[[f64; 4]; 3]; 3] = [
            [[10.0, 4.0, 100.0, 50.0]; 3],
            [
                [11.139040579, 3.999884309, 101.706102437, 49.998553864],
                [11.849389784, 3.999897007, 102.771896072, 49.998712586],
                [12.777555567, 3.999911116, 104.164444556, 49.998888944],
            ],
            [
                [14.188958411, 3.999818253, 103.112324851, 49.99452927],
                [15.959540805, 3.999898926, 104.120160615, 49.994640533],
                [18.138859208, 3.999994494, 105.32828827, 49.994762606],
            ],
        ];
        let mut out = Pose::new(2);
        for (k, frame) in frames.iter().enumerate() {
            let mut pose = Pose::new(2);
            for (slot, &(x, y, score)) in pose.points_mut().iter_mut().zip(frame) {
                *slot = Keypoint::new(x, y, score);
            }
            let t_ns = k as u64 * s;
            kf.observe(&pose, t_ns);
            for (h, want) in expected[k].iter().enumerate() {
                kf.predict(t_ns + h as u64 * s / 2, &mut out);
                let got = [
                    out.points()[0].x,
                    out.points()[0].y,
                    out.points()[1].x,
                    out.points()[1].y,
                ];
                for (g, w) in got.iter().zip(want) {
                    assert!(
                        (f64::from(*g) - w).abs() < 1e-4,
                        "frame {k}, horizon {h}: got {got:?}, DLC-Live {want:?}"
                    );
                }
                // Predictions carry the frame's measured score, as in DLC-Live.
                assert_eq!(out.points()[0].score, frame[0].2);
                assert_eq!(out.points()[1].score, frame[1].2);
            }
        }
    }

    #[test]
    fn below_lik_thresh_gives_no_update() {
        let cfg = KalmanConfig {
            lik_thresh: 0.6,
            ..KalmanConfig::default()
        };
        let mut a = KalmanPredictor::new(&cfg).unwrap();
        let mut b = KalmanPredictor::new(&cfg).unwrap();
        for k in 0..30u64 {
            let p = pose1(50.0 + k as f32, 80.0, 0.9);
            a.observe(&p, k * 10 * MS);
            b.observe(&p, k * 10 * MS);
        }
        // Frame 30: `a` sees a wild low-score outlier, `b` sees nothing at all.
        a.observe(&pose1(900.0, -900.0, 0.59), 300 * MS);
        b.observe(&pose1(f32::NAN, f32::NAN, f32::NAN), 300 * MS);
        for k in 31..35u64 {
            let p = pose1(50.0 + k as f32, 80.0, 0.9);
            a.observe(&p, k * 10 * MS);
            b.observe(&p, k * 10 * MS);
            let (mut pa, mut pb) = (Pose::new(1), Pose::new(1));
            a.predict(k * 10 * MS + 20 * MS, &mut pa);
            b.predict(k * 10 * MS + 20 * MS, &mut pb);
            assert_eq!(
                (pa.points()[0].x, pa.points()[0].y),
                (pb.points()[0].x, pb.points()[0].y)
            );
            assert!(
                (pa.points()[0].x - (52.0 + k as f32)).abs() < 1.0,
                "{:?}",
                pa.points()[0]
            );
        }
    }

    #[test]
    fn nan_and_missing_input_never_poison_the_state() {
        let mut kf = kalman();
        let bad = [
            Keypoint::MISSING,
            Keypoint::new(f32::NAN, 3.0, 0.9),
            Keypoint::new(3.0, f32::INFINITY, 0.9),
            Keypoint::new(3.0, 4.0, f32::NAN),
        ];
        let mut out = Pose::new(1);
        for k in 0..100u64 {
            let t_ns = 1_000 * MS + k * 10 * MS;
            let mut p = pose1(10.0 + k as f32, 20.0, 0.9);
            if k % 3 == 1 {
                p.points_mut()[0] = bad[(k as usize / 3) % bad.len()];
            }
            kf.observe(&p, t_ns);
            kf.predict(t_ns + 20 * MS, &mut out);
            let q = out.points()[0];
            assert!(q.x.is_finite() && q.y.is_finite(), "frame {k}: {q:?}");
            if k > 40 {
                assert!((q.x - (12.0 + k as f32)).abs() < 1.0, "frame {k}: {q:?}");
                assert!((q.y - 20.0).abs() < 0.5, "frame {k}: {q:?}");
            }
            // No usable measurement this frame: position extrapolated, score reported as 0.
            let expect_score = if k % 3 == 1 { 0.0 } else { 0.9 };
            assert_eq!(q.score, expect_score, "frame {k}");
        }
    }

    #[test]
    fn unseen_keypoints_stay_missing_until_first_measured() {
        let mut kf = kalman();
        let mut out = Pose::new(3);
        kf.predict(0, &mut out);
        assert!(out.points().iter().all(Keypoint::is_missing));
        let mut p = Pose::new(2); // keypoint 1 missing, keypoint 2 beyond this pose
        p.points_mut()[0] = Keypoint::new(1.0, 2.0, 0.9);
        kf.observe(&p, 10 * MS);
        kf.predict(20 * MS, &mut out);
        assert_eq!(out.points()[0], Keypoint::new(1.0, 2.0, 0.9));
        assert!(out.points()[1].is_missing() && out.points()[2].is_missing());
        p.points_mut()[1] = Keypoint::new(7.0, 8.0, 0.8);
        kf.observe(&p, 20 * MS);
        kf.predict(20 * MS, &mut out);
        assert_eq!(out.points()[1], Keypoint::new(7.0, 8.0, 0.8)); // initialised, no motion yet
        kf.reset();
        kf.predict(20 * MS, &mut out);
        assert!(out.points().iter().all(Keypoint::is_missing));
    }

    #[test]
    fn reacquisition_after_a_dropout_stays_bounded() {
        // 100 px/s at 100 fps, predicted 20 ms ahead; the keypoint vanishes for `gap` frames.
        for (gap, max_px) in [(1u64, 1.5), (3, 5.0), (10, 20.0)] {
            let mut kf = kalman();
            let mut out = Pose::new(1);
            let mut worst: f32 = 0.0;
            for k in 0..150u64 {
                let mut p = Pose::new(1);
                if !(60..60 + gap).contains(&k) {
                    p.points_mut()[0] = Keypoint::new(10.0 + k as f32, 5.0, 0.9);
                }
                kf.observe(&p, k * 10 * MS);
                kf.predict(k * 10 * MS + 20 * MS, &mut out);
                if k >= 60 + gap {
                    worst = worst.max((out.points()[0].x - (12.0 + k as f32)).abs());
                }
            }
            assert!(worst < max_px, "gap {gap}: worst error {worst} px");
        }
    }

    #[test]
    fn stale_frame_times_are_ignored() {
        let mut kf = kalman();
        let mut reference = kalman();
        for k in 0..10u64 {
            let p = pose1(k as f32, 0.0, 1.0);
            kf.observe(&p, 100 * MS + k * 10 * MS);
            reference.observe(&p, 100 * MS + k * 10 * MS);
        }
        kf.observe(&pose1(500.0, 500.0, 1.0), 190 * MS); // repeated timestamp
        kf.observe(&pose1(500.0, 500.0, 1.0), 150 * MS); // out of order
        let (mut a, mut b) = (Pose::new(1), Pose::new(1));
        kf.predict(220 * MS, &mut a);
        reference.predict(220 * MS, &mut b);
        assert_eq!(a.points()[0], b.points()[0]);
    }

    #[test]
    fn fewer_derivatives_still_track() {
        let cfg = KalmanConfig {
            nderiv: 1,
            priors: vec![10.0],
            ..KalmanConfig::default()
        };
        let truth = |t: f64| (100.0 + 200.0 * t, 50.0);
        let mut kf = KalmanPredictor::new(&cfg).unwrap();
        let k = worst_error(&mut kf, truth, 100.0, 200, 60, 20 * MS);
        let last = worst_error(&mut LastMeasurement::new(), truth, 100.0, 200, 60, 20 * MS);
        assert!(k * 2.0 < last, "kalman {k} px vs last {last} px");
        let cfg = KalmanConfig {
            nderiv: 0,
            priors: vec![],
            ..KalmanConfig::default()
        };
        let mut kf = KalmanPredictor::new(&cfg).unwrap();
        let k = worst_error(&mut kf, |_| (10.0, 20.0), 100.0, 50, 10, 20 * MS);
        assert!(k < 0.01, "static point drifted {k} px");
    }

    #[test]
    fn last_measurement_holds_last_valid_point() {
        let mut lm = LastMeasurement::new();
        let mut out = Pose::new(2);
        lm.predict(0, &mut out);
        assert!(out.points().iter().all(Keypoint::is_missing));
        lm.observe(&pose1(3.0, 4.0, 0.7), 0);
        lm.observe(&pose1(f32::NAN, f32::NAN, f32::NAN), 10);
        lm.predict(1_000, &mut out);
        assert_eq!(out.points()[0], Keypoint::new(3.0, 4.0, 0.7));
        assert!(out.points()[1].is_missing());
        lm.reset();
        lm.predict(1_000, &mut out);
        assert!(out.points()[0].is_missing());
        assert_eq!(lm.name(), "last_measurement");
    }

    fn robust() -> RobustPredictor {
        RobustPredictor::new(&RobustConfig::default()).unwrap()
    }

    #[test]
    fn robust_predicts_constant_velocity_ahead() {
        let truth = |t: f64| (100.0 + 200.0 * t, 300.0 - 120.0 * t); // 233 px/s
        for fps in [25.0, 100.0] {
            for forward_ms in [20, 40, 80] {
                let r = worst_error(&mut robust(), truth, fps, 300, 150, forward_ms * MS);
                let last = worst_error(
                    &mut LastMeasurement::new(),
                    truth,
                    fps,
                    300,
                    150,
                    forward_ms * MS,
                );
                assert!(
                    r * 4.0 < last,
                    "{fps} fps {forward_ms} ms: robust {r} px vs last {last} px"
                );
            }
        }
    }

    #[test]
    fn robust_rejects_identity_swaps_and_reacquires_real_jumps() {
        // Two keypoints at rest; at 25 fps frames 40..43 (120 ms) come from another animal 150 px away
        // (an identity swap, both keypoints at once), then from frame 100 on the animal really is there.
        let mut r = robust();
        let mut out = Pose::new(2);
        let at = |k: u64| k * 40 * MS;
        for k in 0..200u64 {
            let offset = if (40..43).contains(&k) || k >= 100 {
                150.0
            } else {
                0.0
            };
            let mut p = Pose::new(2);
            p.points_mut()[0] = Keypoint::new(100.0 + offset, 100.0, 0.9);
            p.points_mut()[1] = Keypoint::new(120.0 + offset, 100.0, 0.9);
            r.observe(&p, at(k));
            r.predict(at(k) + 40 * MS, &mut out);
            let x = out.points()[0].x;
            if k < 100 {
                assert!((x - 100.0).abs() < 0.01, "frame {k}: swap leaked, x = {x}");
            }
            if k >= 100 + 6 {
                // Restarted after `reacquire_s` (0.2 s = 5 frames) and settled.
                assert!(
                    (x - 250.0).abs() < 1.0,
                    "frame {k}: not reacquired, x = {x}"
                );
            }
        }
    }

    #[test]
    fn robust_whole_body_jump_rejects_the_keypoints_that_agree_by_chance() {
        // Three keypoints; on frame 30 two of them jump far (a swap with an animal whose third keypoint
        // happens to lie where ours is): all three measurements of that frame are ignored.
        let mut a = robust();
        let mut b = robust();
        for k in 0..40u64 {
            let mut p = Pose::new(3);
            p.points_mut()[0] = Keypoint::new(10.0 + k as f32, 10.0, 0.9);
            p.points_mut()[1] = Keypoint::new(30.0 + k as f32, 10.0, 0.9);
            p.points_mut()[2] = Keypoint::new(50.0 + k as f32, 10.0, 0.9);
            let mut q = p;
            if k == 30 {
                q.points_mut()[0].x += 200.0;
                q.points_mut()[1].x += 200.0;
                q.points_mut()[2].x += 3.0;
                p = Pose::new(3); // `b` sees nothing on that frame
            }
            a.observe(&q, k * 10 * MS);
            b.observe(&p, k * 10 * MS);
        }
        let (mut pa, mut pb) = (Pose::new(3), Pose::new(3));
        a.predict(400 * MS, &mut pa);
        b.predict(400 * MS, &mut pb);
        for (x, y) in pa.points().iter().zip(pb.points()) {
            assert!((x.x - y.x).abs() < 1e-4, "{pa:?} vs {pb:?}");
        }
    }

    #[test]
    fn robust_weights_by_likelihood_and_ignores_low_scores() {
        // A noisy point alternating ±10 px: low-score measurements move the estimate less.
        let run = |score: f32| {
            let mut r = robust();
            let mut out = Pose::new(1);
            let mut worst: f32 = 0.0;
            for k in 0..200u64 {
                let x = 100.0 + if k % 2 == 0 { 10.0 } else { -10.0 };
                r.observe(&pose1(x, 50.0, score), k * 40 * MS);
                r.predict(k * 40 * MS, &mut out);
                if k > 50 {
                    worst = worst.max((out.points()[0].x - 100.0).abs());
                }
            }
            worst
        };
        assert!(run(0.2) < run(1.0), "{} vs {}", run(0.2), run(1.0));
        // Below `min_score`: no measurement at all.
        let mut r = robust();
        let mut out = Pose::new(1);
        r.observe(&pose1(1.0, 2.0, 0.01), 0);
        r.predict(0, &mut out);
        assert!(out.points()[0].is_missing());
    }

    #[test]
    fn robust_survives_nan_missing_and_stale_input() {
        let mut r = robust();
        let bad = [
            Keypoint::MISSING,
            Keypoint::new(f32::NAN, 3.0, 0.9),
            Keypoint::new(3.0, f32::INFINITY, 0.9),
            Keypoint::new(3.0, 4.0, f32::NAN),
            Keypoint::new(1e30, -1e30, 0.9),
        ];
        let mut out = Pose::new(1);
        for k in 0..300u64 {
            let t_ns = 1_000 * MS + k * 10 * MS;
            let mut p = pose1(10.0 + k as f32, 20.0, 0.9);
            if k % 3 == 1 {
                p.points_mut()[0] = bad[(k as usize / 3) % bad.len()];
            }
            r.observe(&p, t_ns);
            r.observe(&p, t_ns - 5 * MS); // stale: ignored
            r.predict(t_ns + 20 * MS, &mut out);
            let q = out.points()[0];
            assert!(q.x.is_finite() && q.y.is_finite(), "frame {k}: {q:?}");
            if k > 100 {
                assert!((q.x - (12.0 + k as f32)).abs() < 2.0, "frame {k}: {q:?}");
            }
        }
        r.reset();
        r.predict(0, &mut out);
        assert!(out.points()[0].is_missing());
        assert_eq!(r.name(), "robust");
    }

    #[test]
    fn robust_config_is_checked_and_parsed() {
        let err = RobustPredictor::new(&RobustConfig {
            damping_s: 0.0,
            ..RobustConfig::default()
        })
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "robust predictor: `damping_s` must be a finite number > 0, got 0"
        );
        let cfg: RobustConfig = toml::from_str("gate_sigma = 3.5").unwrap();
        assert_eq!(cfg.gate_sigma, 3.5);
        assert_eq!(cfg.damping_s, RobustConfig::default().damping_s);
        assert!(toml::from_str::<RobustConfig>("gate = 3").is_err());
    }
}
