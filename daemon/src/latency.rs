//! Per-stage latency histograms of one loop.
//!
//! The actuation thread, which sees every stamp of a frame, records each stage into a [`LatencySet`]. Every
//! interval it hands the whole set to the writer thread through an SPSC ring and takes back an emptied one,
//! so the loop never shares a lock with the writer (double-buffering) and never allocates.

use hdrhistogram::Histogram;
use serde::Serialize;

/// One measured span of a frame's way through the loop. Names are the tags in `latency.hlog` and the keys in
/// `summary.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum Stage {
    /// Exposure (driver or camera time) → frame complete on the host.
    Capture,
    /// Frame complete → inference thread starts on it (hand-off wait).
    QueueInference,
    /// Pre-processing, network and decoding.
    Inference,
    /// Pose ready → actuation thread starts on it (hand-off wait).
    QueueActuation,
    /// Forward prediction.
    Predict,
    /// Triggers and protocol decisions.
    Trigger,
    /// Decision → every command of the frame written to the output device (frames that command only).
    Output,
    /// Command written → the device's own timestamp of the output change, mapped to host time.
    DeviceAck,
    /// Exposure → the frame's decision made and its commands written.
    EndToEnd,
    /// End to end minus inference: what the loop itself costs.
    OutsideInference,
    /// Exposure → output change on the device, by the device's clock (frames that command only).
    ExposureToOutput,
}

impl Stage {
    /// Every stage, in the order of a frame's way.
    pub const ALL: [Stage; 11] = [
        Stage::Capture,
        Stage::QueueInference,
        Stage::Inference,
        Stage::QueueActuation,
        Stage::Predict,
        Stage::Trigger,
        Stage::Output,
        Stage::DeviceAck,
        Stage::EndToEnd,
        Stage::OutsideInference,
        Stage::ExposureToOutput,
    ];

    /// The stage's name (histogram tag and summary key).
    pub fn name(self) -> &'static str {
        match self {
            Stage::Capture => "capture",
            Stage::QueueInference => "queue_inference",
            Stage::Inference => "inference",
            Stage::QueueActuation => "queue_actuation",
            Stage::Predict => "predict",
            Stage::Trigger => "trigger",
            Stage::Output => "output",
            Stage::DeviceAck => "device_ack",
            Stage::EndToEnd => "end_to_end",
            Stage::OutsideInference => "outside_inference",
            Stage::ExposureToOutput => "exposure_to_output",
        }
    }
}

/// What is measured of the frames of a further camera (`[[camera]]`): their way ends at their pose, since
/// the triggers and the script see camera 0 only. Tags are `cameraN.<name>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(usize)]
pub enum CameraStage {
    /// Exposure → frame complete on the host.
    Capture,
    /// Frame complete → inference starts on it.
    QueueInference,
    /// Pre-processing, network and decoding.
    Inference,
    /// Exposure → the pose estimated.
    ExposureToPose,
}

impl CameraStage {
    /// Every stage, in the order of a frame's way.
    pub const ALL: [CameraStage; 4] = [
        CameraStage::Capture,
        CameraStage::QueueInference,
        CameraStage::Inference,
        CameraStage::ExposureToPose,
    ];

    /// The stage's name (after `cameraN.` in tags and summary keys).
    pub fn name(self) -> &'static str {
        match self {
            CameraStage::Capture => "capture",
            CameraStage::QueueInference => "queue_inference",
            CameraStage::Inference => "inference",
            CameraStage::ExposureToPose => "exposure_to_pose",
        }
    }
}

/// Highest recordable latency: 10 s in ns (larger values saturate).
const MAX_NS: u64 = 10_000_000_000;

/// A new histogram for latencies in ns, 1 ns to 10 s, 3 significant digits.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_NS, 3).expect("static histogram bounds are valid")
}

/// One histogram per stage, covering one interval of the session: the loop's [`Stage`]s, then the
/// [`CameraStage`]s of each further camera.
#[derive(Debug, Clone)]
pub struct LatencySet {
    hists: Vec<Histogram<u64>>,
    /// Further cameras (1, 2, …) measured beside the loop's camera 0.
    cameras: usize,
    /// Host time (ns) at which this interval began.
    pub start_ns: u64,
    /// Host time (ns) at which this interval ended (set when handed over).
    pub end_ns: u64,
}

impl Default for LatencySet {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencySet {
    /// Empty histograms for every stage of a one-camera rig (allocates; done before the loop starts).
    pub fn new() -> Self {
        Self::with_cameras(0)
    }

    /// Empty histograms for every stage, and for the [`CameraStage`]s of `cameras` further cameras.
    pub fn with_cameras(cameras: usize) -> Self {
        let n = Stage::ALL.len() + cameras * CameraStage::ALL.len();
        Self {
            hists: (0..n).map(|_| new_histogram()).collect(),
            cameras,
            start_ns: 0,
            end_ns: 0,
        }
    }

    /// Record one latency (ns) of `stage`; never allocates, saturates above 10 s.
    pub fn record(&mut self, stage: Stage, latency_ns: u64) {
        self.hists[stage as usize].saturating_record(latency_ns.max(1));
    }

    /// Record one latency (ns) of `stage` of further camera `camera` (1, 2, …); ignored for a camera this
    /// set was not made for. Never allocates.
    pub fn record_camera(&mut self, camera: usize, stage: CameraStage, latency_ns: u64) {
        if (1..=self.cameras).contains(&camera) {
            let i = Stage::ALL.len() + (camera - 1) * CameraStage::ALL.len() + stage as usize;
            self.hists[i].saturating_record(latency_ns.max(1));
        }
    }

    /// The tag of every histogram, in the order of [`LatencySet::histograms`]: stage names, then
    /// `cameraN.<stage>` (allocates; for the writer, not the loop).
    pub fn tags(&self) -> Vec<String> {
        let loop_tags = Stage::ALL.iter().map(|s| s.name().to_string());
        let camera_tags = (1..=self.cameras).flat_map(|c| {
            CameraStage::ALL
                .iter()
                .map(move |s| format!("camera{c}.{}", s.name()))
        });
        loop_tags.chain(camera_tags).collect()
    }

    /// Every histogram, in the order of [`LatencySet::tags`].
    pub fn histograms(&self) -> &[Histogram<u64>] {
        &self.hists
    }

    /// The histogram of `stage`.
    pub fn get(&self, stage: Stage) -> &Histogram<u64> {
        &self.hists[stage as usize]
    }

    /// Empty every histogram for reuse from `start_ns`.
    pub fn reset(&mut self, start_ns: u64) {
        self.hists.iter_mut().for_each(Histogram::reset);
        self.start_ns = start_ns;
        self.end_ns = start_ns;
    }

    /// Add every stage of `other` into this set.
    pub fn add(&mut self, other: &LatencySet) {
        for (a, b) in self.hists.iter_mut().zip(&other.hists) {
            // Same bounds on both sides, so adding cannot fail.
            let _ = a.add(b);
        }
    }
}

/// Percentiles of one stage, in ns.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
pub struct Quantiles {
    /// Frames measured.
    pub count: u64,
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Largest value.
    pub max: u64,
}

impl Quantiles {
    /// The percentiles of `h`.
    pub fn of(h: &Histogram<u64>) -> Self {
        Self {
            count: h.len(),
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_indexes_match() {
        for (i, s) in Stage::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
            assert_eq!(
                Stage::ALL.iter().filter(|o| o.name() == s.name()).count(),
                1
            );
        }
    }

    #[test]
    fn record_reset_add_and_quantiles() {
        let mut a = LatencySet::new();
        for v in 1..=1000u64 {
            a.record(Stage::Inference, v * 1000);
        }
        a.record(Stage::Capture, 20_000_000_000); // saturates, does not fail
        let q = Quantiles::of(a.get(Stage::Inference));
        assert_eq!(q.count, 1000);
        assert!((499_000..=501_000).contains(&q.p50), "{q:?}");
        assert!(q.max >= 999_000);
        let mut total = LatencySet::new();
        total.add(&a);
        total.add(&a);
        assert_eq!(total.get(Stage::Inference).len(), 2000);
        a.reset(5);
        assert_eq!(a.get(Stage::Inference).len(), 0);
        assert_eq!(a.start_ns, 5);
    }

    #[test]
    fn further_cameras_have_their_own_tagged_histograms() {
        let mut set = LatencySet::with_cameras(2);
        set.record_camera(2, CameraStage::Inference, 7_000);
        set.record_camera(3, CameraStage::Inference, 1); // no camera 3: ignored
        set.record_camera(0, CameraStage::Inference, 1); // camera 0 is the loop's: ignored
        let tags = set.tags();
        assert_eq!(tags.len(), set.histograms().len());
        assert_eq!(tags[Stage::ALL.len()], "camera1.capture");
        let at = tags.iter().position(|t| t == "camera2.inference").unwrap();
        let counts: Vec<u64> = set.histograms().iter().map(|h| h.len()).collect();
        assert_eq!(counts[at], 1);
        assert_eq!(counts.iter().sum::<u64>(), 1);
        assert_eq!(LatencySet::new().tags().len(), Stage::ALL.len());
    }
}
