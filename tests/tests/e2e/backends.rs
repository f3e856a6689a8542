//! ONNX Runtime and tract give the same network outputs on the bundled model.

use std::sync::Arc;

use reflex_daemon::camera::synthetic::{SyntheticCamera, SyntheticConfig};
use reflex_daemon::camera::{Frame, FrameSource};
use reflex_daemon::clock::ManualClock;
use reflex_daemon::inference::{self, BackendChoice, DlcModel, ModelConfig, PoseModel};
use reflex_plugins::pose::Pose;

fn load(backend: BackendChoice) -> DlcModel {
    let config = ModelConfig {
        backend,
        ..ModelConfig::default()
    };
    inference::load(&config, &mut |_| {}).unwrap_or_else(|e| {
        panic!("{backend:?} backend: {e} (the test command installs ONNX Runtime: `pip install onnxruntime==1.31.1`)")
    })
}

#[test]
fn onnxruntime_and_tract_agree_on_the_bundled_model() {
    let mut ort = load(BackendChoice::Onnxruntime);
    let mut tract = load(BackendChoice::Tract);
    assert_eq!((ort.backend(), tract.backend()), ("onnxruntime", "tract"));
    let mut camera = SyntheticCamera::new(
        &SyntheticConfig {
            seed: 5,
            ..Default::default()
        },
        Arc::new(ManualClock::new()),
    )
    .unwrap();
    let mut frame = Frame::for_source(camera.info());
    let mut worst = (0.0f32, 0.0f32);
    for _ in 0..8 {
        camera.next_frame(&mut frame).unwrap();
        // Outputs in the decoder's order: score map, then locref.
        let a = ort.run_raw(&frame).unwrap();
        let (sa, la) = (a[0].data.clone(), a[1].data.clone());
        let b = tract.run_raw(&frame).unwrap();
        assert_eq!(sa.len(), b[0].data.len());
        for (x, y) in sa.iter().zip(&b[0].data) {
            worst.0 = worst.0.max((x - y).abs());
        }
        for (x, y) in la.iter().zip(&b[1].data) {
            worst.1 = worst.1.max((x - y).abs());
        }
        let (mut pa, mut pb) = (Pose::new(0), Pose::new(0));
        ort.estimate(&frame, &mut pa).unwrap();
        tract.estimate(&frame, &mut pb).unwrap();
        for (p, q) in pa.points().iter().zip(pb.points()) {
            assert!(
                (p.x - q.x).abs() < 1e-2 && (p.y - q.y).abs() < 1e-2,
                "{p:?} vs {q:?}"
            );
        }
    }
    assert!(worst.0 <= 1e-4, "scoremaps differ by {}", worst.0);
    eprintln!(
        "backends agree: max |Δscoremap| = {:.2e}, max |Δlocref| = {:.2e}",
        worst.0, worst.1
    );
}
