//! Real pose models: reflex's keypoints on the fixtures of `tests/fixtures/models/` (made by the real
//! DeepLabCut-Live and sleap-nn, see `tools/fixtures/README.md`) equal the tools' own within 1e-3 px, the
//! dynamic crop maps back to full-frame coordinates exactly, and wrong models are refused by name.
//!
//! ONNX Runtime is required (the test command installs it: `pip install onnxruntime==1.31.1`), like the other
//! backend tests; tract is tried too and, where it cannot run a graph, the reason is printed.

#![allow(unsafe_code)] // reason: a global allocator is an unsafe trait; it only counts and delegates to System

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use reflex_daemon::camera::{Frame, PixelFormat};
use reflex_daemon::inference::{
    self, BackendChoice, CropConfig, InferenceError, Model, ModelConfig, PoseModel, Provider,
    cli::load_image,
};
use reflex_plugins::pose::{Keypoint, Pose};

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// Counts allocations made on a thread between `counted` calls' start and end; delegates to `System`.
struct CountingAllocator;

unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                ALLOCS.with(|n| n.set(n.get() + 1));
            }
        });
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = COUNTING.try_with(|on| {
            if on.get() {
                ALLOCS.with(|n| n.set(n.get() + 1));
            }
        });
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Run `f`, returning its result and the allocations it made on this thread.
fn counted<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCS.with(|n| n.set(0));
    COUNTING.with(|on| on.set(true));
    let out = f();
    COUNTING.with(|on| on.set(false));
    (out, ALLOCS.with(Cell::get))
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/models")
}

/// The fixture frames: (source frame number, frame).
fn frames() -> Vec<(u64, Frame)> {
    let dir = fixtures().join("frames");
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("frames.json")).unwrap()).unwrap();
    meta["frames"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            let frame = load_image(&dir.join(f["file"].as_str().unwrap())).unwrap();
            assert_eq!((frame.width, frame.height), (256, 256));
            (f["source_frame"].as_u64().unwrap(), frame)
        })
        .collect()
}

/// One row of an expected CSV.
#[derive(Debug, Clone)]
struct Row {
    track: Option<usize>,
    node: String,
    xy: Option<(f64, f64)>,
    score: f64,
}

/// `frame,track,node,x,y,score` → frame → rows.
fn expected(file: &Path) -> HashMap<u64, Vec<Row>> {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out: HashMap<u64, Vec<Row>> = HashMap::new();
    for line in text.lines().skip(1) {
        let c: Vec<&str> = line.split(',').collect();
        let xy = if c[3].is_empty() {
            None
        } else {
            Some((c[3].parse().unwrap(), c[4].parse().unwrap()))
        };
        out.entry(c[0].parse().unwrap()).or_default().push(Row {
            track: c[1].parse().ok(),
            node: c[2].to_string(),
            xy,
            score: c[5].parse().unwrap(),
        });
    }
    out
}

fn config(dir: &str, networks: &[&str], backend: BackendChoice) -> ModelConfig {
    ModelConfig {
        path: fixtures().join(dir).display().to_string(),
        networks: networks.iter().map(|s| s.to_string()).collect(),
        backend,
        ..ModelConfig::default()
    }
}

/// ONNX Runtime must load (the test command installs it).
fn load_ort(config: &ModelConfig) -> Model {
    inference::load(config, &mut |_| {}).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (the test command installs ONNX Runtime: `pip install onnxruntime==1.31.1`)",
            config.path
        )
    })
}

/// tract where it can run the graph; None with the reason printed where it cannot.
fn load_tract(config: &ModelConfig) -> Option<Model> {
    match inference::load(config, &mut |_| {}) {
        Ok(m) => Some(m),
        Err(e) => {
            assert!(
                matches!(
                    e,
                    InferenceError::Runtime {
                        backend: "tract",
                        ..
                    }
                ),
                "tract should fail with its own error, got: {e}"
            );
            eprintln!("tract cannot run {}: {e}", config.path);
            None
        }
    }
}

/// Max |Δ| of coordinates and of scores between expected instance `want` and `got`, or Err if a keypoint is
/// present in one and missing in the other.
fn diff(want: &[&Row], got: &Pose, names: &[String]) -> Result<(f64, f64), String> {
    let (mut dxy, mut ds) = (0f64, 0f64);
    for r in want {
        let k = names.iter().position(|n| *n == r.node).expect("node name");
        let p: Keypoint = got.points()[k];
        match r.xy {
            Some((x, y)) => {
                if p.is_missing() {
                    return Err(format!("{} missing, expected ({x}, {y})", r.node));
                }
                dxy = dxy
                    .max((f64::from(p.x) - x).abs())
                    .max((f64::from(p.y) - y).abs());
            }
            None => {
                if !p.is_missing() {
                    return Err(format!(
                        "{} at ({}, {}), expected missing",
                        r.node, p.x, p.y
                    ));
                }
            }
        }
        ds = ds.max((f64::from(p.score) - r.score).abs());
    }
    Ok((dxy, ds))
}

/// Run `model` on every fixture frame and compare with `expected` (instances matched as a set: each expected
/// track to the reflex instance closest to it). Returns (max coordinate diff px, max score diff).
fn compare(model: &mut Model, expected: &HashMap<u64, Vec<Row>>) -> (f64, f64) {
    let names = model.keypoints().to_vec();
    let (mut worst_xy, mut worst_s) = (0f64, 0f64);
    for (source, frame) in frames() {
        let n = model.estimate_all(&frame).unwrap();
        let got: Vec<Pose> = model.instances().to_vec();
        assert_eq!(got.len(), n);
        let rows = &expected[&source];
        let mut tracks: Vec<Option<usize>> = rows.iter().map(|r| r.track).collect();
        tracks.dedup();
        assert_eq!(
            tracks.len(),
            n,
            "frame {source}: {} instance(s) expected, reflex found {n}",
            tracks.len()
        );
        let mut used = vec![false; n];
        for t in tracks {
            let want: Vec<&Row> = rows.iter().filter(|r| r.track == t).collect();
            let best = (0..n)
                .filter(|&i| !used[i])
                .filter_map(|i| diff(&want, &got[i], &names).ok().map(|d| (i, d)))
                .min_by(|a, b| a.1.0.total_cmp(&b.1.0));
            let Some((i, (dxy, ds))) = best else {
                panic!(
                    "frame {source} track {t:?}: no reflex instance matches: {:?}",
                    (0..n)
                        .map(|i| diff(&want, &got[i], &names))
                        .collect::<Vec<_>>()
                )
            };
            used[i] = true;
            worst_xy = worst_xy.max(dxy);
            worst_s = worst_s.max(ds);
        }
    }
    (worst_xy, worst_s)
}

/// Compare on ONNX Runtime (required) and tract (where it runs); print the figures; check the tolerances.
fn check_fixture(label: &str, dir: &str, networks: &[&str], expected_file: &str, score_tol: f64) {
    let want = expected(&fixtures().join(dir).join(expected_file));
    let mut ort = load_ort(&config(dir, networks, BackendChoice::Onnxruntime));
    assert_eq!(ort.backend(), "onnxruntime");
    let (dxy, ds) = compare(&mut ort, &want);
    eprintln!(
        "{label} vs {expected_file} (onnxruntime): max |Δxy| = {dxy:.2e} px, max |Δscore| = {ds:.2e}"
    );
    assert!(dxy <= 1e-3, "{label}: coordinates differ by {dxy} px");
    assert!(ds <= score_tol, "{label}: scores differ by {ds}");
    if let Some(mut tract) = load_tract(&config(dir, networks, BackendChoice::Tract)) {
        let (dxy, ds) = compare(&mut tract, &want);
        eprintln!(
            "{label} vs {expected_file} (tract): max |Δxy| = {dxy:.2e} px, max |Δscore| = {ds:.2e}"
        );
        assert!(
            dxy <= 1e-3,
            "{label} (tract): coordinates differ by {dxy} px"
        );
        assert!(ds <= score_tol, "{label} (tract): scores differ by {ds}");
    }
}

#[test]
fn dlc_tf_matches_dlclive_argmax_pose_predict() {
    check_fixture("dlc_tf", "dlc_tf", &[], "expected.csv", 1e-5);
}

#[test]
fn dlc_tf_num_outputs_2_matches_dlclive_multi_pose_predict() {
    let tmp = tempfile::tempdir().unwrap();
    let src = fixtures().join("dlc_tf");
    std::fs::copy(src.join("model.onnx"), tmp.path().join("model.onnx")).unwrap();
    let cfg = std::fs::read_to_string(src.join("pose_cfg.yaml")).unwrap();
    assert!(cfg.contains("num_outputs: 1"));
    std::fs::write(
        tmp.path().join("pose_cfg.yaml"),
        cfg.replace("num_outputs: 1", "num_outputs: 2"),
    )
    .unwrap();
    let want = expected(&src.join("expected_num_outputs2.csv"));
    let mut model = load_ort(&ModelConfig {
        path: tmp.path().display().to_string(),
        backend: BackendChoice::Onnxruntime,
        ..ModelConfig::default()
    });
    // Ranks are ordered: compare rank by rank, not as a set.
    let names = model.keypoints().to_vec();
    let (mut worst_xy, mut worst_s) = (0f64, 0f64);
    for (source, frame) in frames() {
        assert_eq!(model.estimate_all(&frame).unwrap(), 2);
        for rank in 0..2 {
            let rows: Vec<&Row> = want[&source]
                .iter()
                .filter(|r| r.track == Some(rank))
                .collect();
            let (dxy, ds) = diff(&rows, &model.instances()[rank], &names).unwrap();
            worst_xy = worst_xy.max(dxy);
            worst_s = worst_s.max(ds);
        }
    }
    eprintln!(
        "dlc_tf num_outputs 2 vs expected_num_outputs2.csv (onnxruntime): max |Δxy| = {worst_xy:.2e} px, max |Δscore| = {worst_s:.2e}"
    );
    assert!(worst_xy <= 1e-3 && worst_s <= 1e-5);
}

#[test]
fn dlc3_pytorch_matches_dlclive_pytorch_runner() {
    check_fixture("dlc3_pytorch", "dlc3_pytorch", &[], "expected.csv", 1e-5);
}

#[test]
fn sleap_single_export_matches_sleap_nn() {
    check_fixture(
        "sleap_single export",
        "sleap_single",
        &[],
        "expected_export.csv",
        1e-5,
    );
}

#[test]
fn sleap_single_confmaps_match_sleap_nn_integral_refinement() {
    check_fixture(
        "sleap_single confmaps",
        "sleap_single",
        &["confmaps.onnx"],
        "expected.csv",
        1e-5,
    );
}

#[test]
fn sleap_topdown_export_matches_sleap_nn_as_a_set() {
    check_fixture(
        "sleap_topdown export",
        "sleap_topdown",
        &[],
        "expected_export.csv",
        1e-5,
    );
}

#[test]
fn sleap_topdown_confmaps_match_sleap_nn_as_a_set() {
    check_fixture(
        "sleap_topdown confmaps",
        "sleap_topdown",
        &["centroid_confmaps.onnx", "instance_confmaps.onnx"],
        "expected.csv",
        1e-5,
    );
}

/// The fixture frame pasted into a `w` × `h` black canvas at (`ox`, `oy`).
fn canvas(frame: &Frame, w: u32, h: u32, ox: u32, oy: u32) -> Frame {
    let mut data = vec![0u8; w as usize * h as usize * 3];
    for y in 0..frame.height as usize {
        let src = &frame.data[y * frame.width as usize * 3..(y + 1) * frame.width as usize * 3];
        let at = ((y + oy as usize) * w as usize + ox as usize) * 3;
        data[at..at + src.len()].copy_from_slice(src);
    }
    Frame {
        width: w,
        height: h,
        format: PixelFormat::Rgb8,
        data,
        ..frame.clone()
    }
}

fn shifted(p: &Pose, dx: f32, dy: f32) -> Pose {
    let mut q = *p;
    for k in q.points_mut() {
        k.x += dx;
        k.y += dy;
    }
    q
}

#[test]
fn cropping_keeps_full_frame_coordinates() {
    // A fixed-input network (DeepLabCut, 256x256) on 384x256 frames: the fly's frame is pasted left or right,
    // and the crop (the network's input size, around the last pose) lands on it, so reflex's keypoints in
    // full-frame coordinates are the tool's keypoints on the uncropped fly frame, plus the offset.
    let mut plain = load_ort(&config("dlc_tf", &[], BackendChoice::Onnxruntime));
    let mut cropping = load_ort(&ModelConfig {
        crop: CropConfig {
            enabled: true,
            ..CropConfig::default()
        },
        ..config("dlc_tf", &[], BackendChoice::Onnxruntime)
    });
    let mut worst = 0f32;
    for (source, frame) in frames() {
        let mut reference = Pose::new(0);
        plain.estimate(&frame, &mut reference).unwrap();
        let left = reference.points().iter().map(|k| k.x).sum::<f32>() / 5.0 < 128.0;
        let ox = if left { 0 } else { 128 };
        let big = canvas(&frame, 384, 256, ox, 0);
        cropping.prepare(384, 256, PixelFormat::Rgb8).unwrap();
        // The last pose: this frame's, where the tool put it (a still animal).
        cropping.crop_around(&[shifted(&reference, ox as f32, 0.0)]);
        for _ in 0..2 {
            let mut pose = Pose::new(0);
            cropping.estimate(&big, &mut pose).unwrap();
            assert!(cropping.last_was_cropped(), "frame {source}: not cropped");
            let w = cropping.last_window();
            assert_eq!((w.x, w.y, w.w, w.h), (ox, 0, 256, 256), "frame {source}");
            for (p, q) in pose.points().iter().zip(reference.points()) {
                worst = worst
                    .max((p.x - (q.x + ox as f32)).abs())
                    .max((p.y - q.y).abs());
                assert_eq!(p.score, q.score);
            }
        }
        // Lost (nothing above min_score): the whole frame again.
        cropping.crop_around(&[Pose::new(5)]);
        let mut pose = Pose::new(0);
        cropping.estimate(&big, &mut pose).unwrap();
        assert!(!cropping.last_was_cropped());
        assert_eq!(cropping.last_window().w, 384);
    }
    eprintln!(
        "crop (dlc_tf, fixed 256x256 input): max |Δxy| vs the uncropped frame = {worst:.2e} px"
    );
    assert!(worst <= 1e-3, "{worst}");

    // A network with a dynamic input (the sleap-nn export): the same 384x256 frame whole and through a
    // 256x256 crop give the same keypoints in full-frame coordinates when the animal is inside the crop.
    let whole = |c: ModelConfig| load_ort(&c);
    let mut full = whole(config("sleap_single", &[], BackendChoice::Onnxruntime));
    let mut crop = whole(ModelConfig {
        crop: CropConfig {
            enabled: true,
            size: [256, 256],
            min_score: 0.2,
            ..CropConfig::default()
        },
        ..config("sleap_single", &[], BackendChoice::Onnxruntime)
    });
    let (mut worst_xy, mut worst_s) = (0f32, 0f32);
    for (source, frame) in frames() {
        let mut p = Pose::new(0);
        full.estimate(&frame, &mut p).unwrap();
        let xs: Vec<f32> = p
            .points()
            .iter()
            .filter(|k| !k.is_missing())
            .map(|k| k.x)
            .collect();
        let left = xs.iter().sum::<f32>() / (xs.len() as f32) < 128.0;
        let ox = if left { 0 } else { 128 };
        let big = canvas(&frame, 384, 256, ox, 0);
        let (mut a, mut b) = (Pose::new(0), Pose::new(0));
        full.estimate(&big, &mut a).unwrap();
        crop.reset_crop();
        crop.estimate(&big, &mut b).unwrap(); // first frame: nothing known yet, whole frame
        assert!(!crop.last_was_cropped());
        crop.estimate(&big, &mut b).unwrap(); // then around the pose just found
        assert!(crop.last_was_cropped(), "frame {source}: not cropped");
        let w = crop.last_window();
        assert!(
            w.x % 16 == 0 && w.w == 256,
            "frame {source}: window {w:?} not aligned to max_stride"
        );
        for (p, q) in a.points().iter().zip(b.points()) {
            assert_eq!(p.is_missing(), q.is_missing(), "frame {source}");
            if !p.is_missing() {
                worst_xy = worst_xy.max((p.x - q.x).abs()).max((p.y - q.y).abs());
            }
            worst_s = worst_s.max((p.score - q.score).abs());
        }
    }
    eprintln!(
        "crop (sleap export, dynamic input): whole 384x256 frame vs 256x256 crop: max |Δxy| = {worst_xy:.2e} px, max |Δscore| = {worst_s:.2e}"
    );
    assert!(worst_xy <= 1e-3, "{worst_xy}");
}

/// A minimal ONNX file declaring inputs and outputs (no nodes): enough for reflex to plan and refuse it.
fn onnx(inputs: &[(&str, i32, &[i64])], outputs: &[(&str, i32, &[i64])]) -> Vec<u8> {
    fn varint(out: &mut Vec<u8>, mut v: u64) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }
    fn bytes(out: &mut Vec<u8>, field: u64, b: &[u8]) {
        varint(out, field << 3 | 2);
        varint(out, b.len() as u64);
        out.extend_from_slice(b);
    }
    fn int(out: &mut Vec<u8>, field: u64, v: u64) {
        varint(out, field << 3);
        varint(out, v);
    }
    fn value_info(name: &str, elem: i32, dims: &[i64]) -> Vec<u8> {
        let mut shape = Vec::new();
        for &d in dims {
            let mut dim = Vec::new();
            int(&mut dim, 1, d as u64);
            bytes(&mut shape, 1, &dim);
        }
        let mut tensor = Vec::new();
        int(&mut tensor, 1, elem as u64);
        bytes(&mut tensor, 2, &shape);
        let mut ty = Vec::new();
        bytes(&mut ty, 1, &tensor);
        let mut vi = Vec::new();
        bytes(&mut vi, 1, name.as_bytes());
        bytes(&mut vi, 2, &ty);
        vi
    }
    let mut graph = Vec::new();
    bytes(&mut graph, 2, b"g");
    for (n, e, d) in inputs {
        bytes(&mut graph, 11, &value_info(n, *e, d));
    }
    for (n, e, d) in outputs {
        bytes(&mut graph, 12, &value_info(n, *e, d));
    }
    let mut model = Vec::new();
    int(&mut model, 1, 8);
    let mut opset = Vec::new();
    int(&mut opset, 2, 17);
    bytes(&mut model, 8, &opset);
    bytes(&mut model, 7, &graph);
    model
}

fn folder_with(onnx_bytes: &[u8], pose_cfg: &str) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("model.onnx"), onnx_bytes).unwrap();
    std::fs::write(tmp.path().join("pose_cfg.yaml"), pose_cfg).unwrap();
    tmp
}

fn refused(dir: &Path) -> String {
    let config = ModelConfig {
        path: dir.display().to_string(),
        ..ModelConfig::default()
    };
    let e = inference::inspect(&config).expect_err("a wrong model must be refused");
    // Loading refuses it the same way, before any runtime is involved.
    let again = inference::load(&config, &mut |_| {}).expect_err("refused by load too");
    assert_eq!(e.to_string(), again.to_string());
    e.to_string()
}

const CFG: &str =
    "all_joints_names: [head, thorax, abdomen, wingL, wingR]\nstride: 8.0\nlocref_stdev: 7.2801\n";

#[test]
fn wrong_models_are_refused_naming_what_is_wrong() {
    // Unknown outputs: a third head (part-affinity fields) next to the score map and locref.
    let m = onnx(
        &[("Placeholder", 1, &[1, 256, 256, 3])],
        &[
            ("Sigmoid", 1, &[1, 35, 35, 5]),
            ("pose/locref_pred/block4/BiasAdd", 1, &[1, 35, 35, 10]),
            ("pose/pairwise_pred/block4/BiasAdd", 1, &[1, 35, 35, 8]),
        ],
    );
    let e = refused(folder_with(&m, CFG).path());
    assert!(
        e.contains("unknown output")
            && e.contains("`pose/pairwise_pred/block4/BiasAdd` float32 [1, 35, 35, 8]"),
        "{e}"
    );
    // No score map at all: the outputs are listed.
    let m = onnx(
        &[("x", 1, &[1, 256, 256, 3])],
        &[("out", 1, &[1, 35, 35, 7])],
    );
    let e = refused(folder_with(&m, CFG).path());
    assert!(
        e.contains("no score-map output with 5 channels") && e.contains("`out`"),
        "{e}"
    );
    // Wrong input rank.
    let m = onnx(
        &[("x", 1, &[1, 256, 256])],
        &[("Sigmoid", 1, &[1, 35, 35, 5])],
    );
    let e = refused(folder_with(&m, CFG).path());
    assert!(
        e.contains("input `x` float32 [1, 256, 256] has rank 3"),
        "{e}"
    );
    // A missing pose_cfg.yaml field names the file and the field.
    let good = std::fs::read(fixtures().join("dlc_tf/model.onnx")).unwrap();
    let dir = folder_with(
        &good,
        "all_joints_names: [head, thorax, abdomen, wingL, wingR]\nlocref_stdev: 7.2801\n",
    );
    let e = refused(dir.path());
    assert!(
        e.contains("pose_cfg.yaml") && e.contains("missing `stride`"),
        "{e}"
    );
    let dir = folder_with(&good, "stride: eight\nall_joints_names: [a, b, c, d, e]\n");
    let e = refused(dir.path());
    assert!(
        e.contains("pose_cfg.yaml: line 1: `stride` must be a number"),
        "{e}"
    );
    // Keypoint count that does not match the network.
    let dir = folder_with(&good, "all_joints_names: [head, thorax]\nstride: 8\n");
    let e = refused(dir.path());
    assert!(e.contains("no score-map output with 2 channels"), "{e}");
    // Multi-animal DeepLabCut: not supported, said so.
    let dir = folder_with(&good, &format!("{CFG}partaffinityfield_predict: true\n"));
    let e = refused(dir.path());
    assert!(
        e.contains("not supported") && e.contains("multi-animal"),
        "{e}"
    );
    // A folder that is neither DeepLabCut nor SLEAP.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("model.onnx"), &good).unwrap();
    let e = refused(tmp.path());
    assert!(
        e.contains("pose_cfg.yaml") && e.contains("export_metadata.json"),
        "{e}"
    );
    // SLEAP raw top-down heads named without the centered-instance network.
    let config = ModelConfig {
        path: fixtures().join("sleap_topdown").display().to_string(),
        networks: vec!["centroid_confmaps.onnx".into()],
        ..ModelConfig::default()
    };
    let e = inference::inspect(&config).unwrap_err().to_string();
    assert!(
        e.contains("centroid first") && e.contains("networks"),
        "{e}"
    );
    // Not ONNX at all.
    let dir = folder_with(b"not a model", CFG);
    let e = refused(dir.path());
    assert!(
        e.contains("model.onnx") && e.contains("not a readable ONNX model"),
        "{e}"
    );
}

#[test]
fn gpu_provider_asked_for_and_absent_is_a_clear_error() {
    let available = inference::available_providers();
    assert!(
        available.contains(&Provider::Cpu),
        "ONNX Runtime must load for this test (pip install onnxruntime==1.31.1)"
    );
    for p in [Provider::Cuda, Provider::Tensorrt] {
        let config = ModelConfig {
            providers: vec![p, Provider::Cpu],
            ..config("dlc_tf", &[], BackendChoice::Onnxruntime)
        };
        match inference::load(&config, &mut |_| {}) {
            Ok(m) => {
                // A GPU build: the provider is there, so the model loads on it.
                assert!(available.contains(&p));
                assert_eq!(m.backend(), "onnxruntime");
            }
            Err(e) => {
                assert!(!available.contains(&p));
                let e = e.to_string();
                assert!(
                    e.contains(&format!("execution provider `{}` was asked for", p.name()))
                        && e.contains("does not offer it")
                        && e.contains("it offers: cpu"),
                    "{e}"
                );
            }
        }
    }
    // tract cannot use a GPU: said at config time.
    let c = reflex_daemon::config::Config::parse(
        "[model]\nbackend = \"tract\"\nproviders = [\"cuda\"]\n",
        "rig.toml",
    )
    .unwrap_err();
    assert!(c.to_string().contains("tract runs on the CPU only"), "{c}");
}

fn reflex(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_reflex"))
        .args(args)
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("run reflex")
}

#[test]
fn cli_inspect_and_predict_on_a_fixture() {
    let dir = fixtures().join("dlc3_pytorch");
    let out = reflex(&["model", "inspect", dir.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "DeepLabCut 3",
        "head, thorax, abdomen, wingL, wingR",
        "stride:",
        "8 px",
        "input  `input` float32 [1, 3, 256, 256]",
        "output `heatmap` float32 [1, 5, 35, 35]",
        "NCHW float32 RGB, v/255, then (x - mean)/std",
        "input size 256x256",
        "HeatmapPredictor",
    ] {
        assert!(text.contains(want), "missing `{want}` in:\n{text}");
    }

    let tmp = tempfile::tempdir().unwrap();
    let csv = tmp.path().join("poses.csv");
    let frames_dir = fixtures().join("frames");
    let images: Vec<String> = ["frame_0102.rgb", "frame_0603.rgb"]
        .iter()
        .map(|f| frames_dir.join(f).display().to_string())
        .collect();
    let mut args = vec!["model", "predict", dir.to_str().unwrap()];
    args.extend(images.iter().map(String::as_str));
    args.extend(["--out", csv.to_str().unwrap(), "--backend", "onnxruntime"]);
    let out = reflex(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read_to_string(&csv).unwrap();
    let want = std::fs::read_to_string(dir.join("expected.csv")).unwrap();
    let mut lines = got.lines();
    assert_eq!(lines.next(), Some("frame,track,node,x,y,score"));
    let want_rows: Vec<&str> = want.lines().skip(1).take(10).collect();
    let got_rows: Vec<&str> = lines.collect();
    assert_eq!(got_rows.len(), 10);
    for (g, w) in got_rows.iter().zip(&want_rows) {
        let (g, w): (Vec<&str>, Vec<&str>) = (g.split(',').collect(), w.split(',').collect());
        assert_eq!(g[1], "0");
        assert_eq!(g[2], w[2]);
        for c in 3..6 {
            let (a, b): (f64, f64) = (g[c].parse().unwrap(), w[c].parse().unwrap());
            assert!((a - b).abs() <= 2e-3, "{g:?} vs {w:?}");
        }
    }

    // PNG frames are read too (written here from the raw fixture frame).
    let png_path = tmp.path().join("f.png");
    {
        let frame = load_image(&frames_dir.join("frame_0102.rgb")).unwrap();
        let file = std::fs::File::create(&png_path).unwrap();
        let mut enc = png::Encoder::new(std::io::BufWriter::new(file), 256, 256);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        enc.write_header()
            .unwrap()
            .write_image_data(&frame.data)
            .unwrap();
        let back = load_image(&png_path).unwrap();
        assert_eq!(back.data, frame.data);
    }

    // Errors are clean, with the file named.
    let out = reflex(&["model", "inspect", "/nonexistent/model"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/model") && !err.contains("panicked"),
        "{err}"
    );
}

#[test]
fn preprocessing_and_decoding_allocate_nothing_per_frame() {
    let crop = CropConfig {
        enabled: true,
        size: [256, 256],
        min_score: 0.2,
        ..CropConfig::default()
    };
    let cases: Vec<(&str, ModelConfig)> = vec![
        ("dlc_tf", config("dlc_tf", &[], BackendChoice::Onnxruntime)),
        (
            "dlc3_pytorch",
            config("dlc3_pytorch", &[], BackendChoice::Onnxruntime),
        ),
        (
            "sleap_single export",
            config("sleap_single", &[], BackendChoice::Onnxruntime),
        ),
        (
            "sleap_single confmaps",
            config(
                "sleap_single",
                &["confmaps.onnx"],
                BackendChoice::Onnxruntime,
            ),
        ),
        (
            "sleap_topdown export",
            config("sleap_topdown", &[], BackendChoice::Onnxruntime),
        ),
        (
            "sleap_topdown export, cropping",
            ModelConfig {
                crop: crop.clone(),
                ..config("sleap_topdown", &[], BackendChoice::Onnxruntime)
            },
        ),
        (
            "sleap_topdown confmaps",
            config(
                "sleap_topdown",
                &["centroid_confmaps.onnx", "instance_confmaps.onnx"],
                BackendChoice::Onnxruntime,
            ),
        ),
    ];
    let frames: Vec<Frame> = frames()
        .into_iter()
        .map(|(_, f)| canvas(&f, 320, 256, 32, 0))
        .collect();
    for (label, c) in cases {
        let stage2 = c.networks.len() == 2;
        let mut model = load_ort(&c);
        model.prepare(320, 256, PixelFormat::Rgb8).unwrap();
        let (mut ours, mut runtime, mut instances) = (0, 0, 0);
        for (i, frame) in frames.iter().cycle().take(12).enumerate() {
            let ((), a) = counted(|| model.stage_input(frame).unwrap());
            let (_, r) = counted(|| model.stage_run().map(|_| ()).unwrap());
            let (n, b) = counted(|| model.stage_decode(frame).unwrap());
            if i >= 4 {
                ours += a + b;
                runtime += r;
                instances += n;
            }
        }
        eprintln!(
            "{label}: {ours} allocations in pre-processing + decoding over 8 frames ({instances} instances); the runtime: {:.1} per run",
            runtime as f64 / 8.0
        );
        if stage2 {
            // Decoding runs the centered-instance network once per instance: what it allocates is the
            // runtime's (about as much as a main-network run), none of reflex's.
            assert!(
                ours <= instances as u64 * (runtime / 8 + 2),
                "{label}: {ours}"
            );
        } else {
            assert_eq!(ours, 0, "{label}");
        }
    }
}
