#!/usr/bin/env python3
"""Check reflex's default marker detector (daemon/models/default/model.onnx) against the scene contract.

Renders scenes with numpy exactly as tools/model/README.md specifies (the same rules as the Rust synthetic
camera), runs onnxruntime, decodes DeepLabCut-style (argmax of Sigmoid + locref * locref_stdev), and prints
per-keypoint error and likelihood statistics. Exit status 1 if any keypoint error > 0.5 px, any keypoint
likelihood < 0.9, or any score on a scene without markers > 0.1.

    python3 tools/model/check_default_model.py [--scenes 300] [--seed 1]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper, shape_inference

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODEL = os.path.join(ROOT, "daemon", "models", "default", "model.onnx")

# --- Scene contract (tools/model/README.md; daemon/src/camera/synthetic.rs) ------------------------------
H, W = 480, 640
FLOOR = 105
NOISE = 8
WALL = 70
WALL_PX = 12
BODY = (55, 45, 40)
BODY_AXES = (38.0, 20.0)
RADIUS = 5.0
KEYPOINTS = ["nose", "ear_left", "ear_right", "tail_base"]
COLOURS = np.array([(235, 35, 35), (35, 235, 35), (35, 70, 235), (235, 235, 35)], dtype=np.float64)
OFFSETS = np.array([(34.0, 0.0), (20.0, 10.0), (20.0, -10.0), (-34.0, 0.0)])  # (forward, left) px
MIN_SEPARATION = 14.0
MARGIN = 20.0

# --- DeepLabCut decoding ---------------------------------------------------------------------------------
STRIDE = 8.0
LOCREF_STDEV = 7.2801

# --- Acceptance ------------------------------------------------------------------------------------------
MAX_ERROR_PX = 0.5
MIN_LIKELIHOOD = 0.9
MAX_BACKGROUND = 0.1

YY, XX = np.mgrid[0:H, 0:W].astype(np.float64)


def keypoints_for(centre, heading, offsets=OFFSETS):
    """Body-frame offsets -> image keypoints; image y points down, "left" of (cos, sin) is (sin, -cos)."""
    s, c = math.sin(heading), math.cos(heading)
    fwd, left = offsets[:, 0], offsets[:, 1]
    return np.stack([centre[0] + fwd * c + left * s, centre[1] + fwd * s - left * c], axis=1)


def rust_round(v):
    return np.floor(v + 0.5)  # f64::round for non-negative values (half away from zero)


def render(rng, centre, heading, kps, noise_everywhere=False, markers=True):
    """One RGB8 frame per the contract. noise_everywhere: robustness variant that also puts the +-8 noise
    on the wall, the body and the marker pixels (the contract has it on the floor only)."""
    img = np.full((H, W, 3), float(FLOOR))
    img += rng.integers(-NOISE, NOISE + 1, size=(H, W, 3))
    wall = (XX < WALL_PX) | (YY < WALL_PX) | (XX >= W - WALL_PX) | (YY >= H - WALL_PX)
    img[wall] = WALL
    a, b = BODY_AXES
    s, c = math.sin(heading), math.cos(heading)
    dx, dy = XX - centre[0], YY - centre[1]
    u, v = dx * c + dy * s, -dx * s + dy * c
    body = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    img[body] = BODY
    not_floor = wall | body
    if markers:
        for (kx, ky), colour in zip(kps, COLOURS):
            x0, x1 = max(int(math.floor(kx - RADIUS - 1)), 0), min(int(math.ceil(kx + RADIUS + 1)) + 1, W)
            y0, y1 = max(int(math.floor(ky - RADIUS - 1)), 0), min(int(math.ceil(ky + RADIUS + 1)) + 1, H)
            d = np.hypot(XX[y0:y1, x0:x1] - kx, YY[y0:y1, x0:x1] - ky)
            cov = np.clip(RADIUS + 0.5 - d, 0.0, 1.0)[..., None]
            patch = img[y0:y1, x0:x1]
            img[y0:y1, x0:x1] = np.where(cov > 0, rust_round(patch * (1 - cov) + colour * cov), patch)
            not_floor[y0:y1, x0:x1] |= cov[..., 0] > 0
    if noise_everywhere:
        img[not_floor] += rng.integers(-NOISE, NOISE + 1, size=(int(not_floor.sum()), 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def valid(kps):
    if np.any(kps < MARGIN) or np.any(kps[:, 0] > W - 1 - MARGIN) or np.any(kps[:, 1] > H - 1 - MARGIN):
        return False
    d = np.hypot(*(kps[:, None, :] - kps[None, :, :]).transpose(2, 0, 1))
    return bool(np.all(d[np.triu_indices(4, 1)] >= MIN_SEPARATION))


def random_scene(rng, jitter):
    while True:
        heading = rng.uniform(-math.pi, math.pi)
        offsets = OFFSETS + (rng.uniform(-jitter, jitter, size=OFFSETS.shape) if jitter else 0.0)
        centre = rng.uniform([MARGIN, MARGIN], [W - 1 - MARGIN, H - 1 - MARGIN])
        kps = keypoints_for(centre, heading, offsets)
        if valid(kps):
            return centre, heading, kps


def scenes(rng, n):
    """(label, centre, heading, keypoints) of the test set."""
    out = []
    for i in range(n):  # random: half with the Rust camera's exact marker layout, half jittered by +-3 px
        jitter = 0.0 if i % 2 == 0 else 3.0
        out.append(("random" if jitter == 0 else "random-jitter",) + random_scene(rng, jitter))
    # Sub-cell sweep: heading 0 / 90 deg, body centre at every (1/8 px)-ish fraction of a cell: every
    # marker visits cell boundaries (x = 8n - 0.5, 8n + 7.5), cell starts (8n), nominal points (8n + 4).
    fracs = [0.0, 0.5, 1.0, 2.25, 3.5, 4.0, 4.5, 5.75, 7.0, 7.5, 7.999]
    for heading in (0.0, math.pi / 2):
        for fy in fracs:
            for fx in fracs:
                centre = np.array([320.0 + fx, 240.0 + fy])
                out.append(("cell-sweep", centre, heading, keypoints_for(centre, heading)))
    # Keypoints exactly on cell boundaries / at the margin of the image.
    for heading, centre in [
        (0.0, (MARGIN + 34.0, 100.0)),                 # tail_base at x = 20
        (math.pi, (W - 1 - MARGIN - 34.0, 100.0)),     # tail_base at x = 619
        (math.pi, (W - MARGIN - 34.0, 300.0)),         # tail_base at x = 620 (the Rust camera's bound)
        (math.pi / 2, (300.0, MARGIN + 34.0)),         # tail_base at y = 20
        (-math.pi / 2, (300.0, H - 1 - MARGIN - 34.0)),  # tail_base at y = 459
        (math.pi, (MARGIN - 34.0 + 68.0, 200.0)),      # nose at x = 20
        (0.0, (W - 1 - MARGIN - 34.0, 400.0)),         # nose at x = 619
        (-math.pi / 2, (200.0, MARGIN + 34.0)),        # nose at y = 20
        (math.pi / 2, (450.0, H - 1 - MARGIN - 34.0)),  # nose at y = 459
        (0.0, (MARGIN + 34.0, MARGIN + 10.0)),         # ear_left at y = 20, tail at x = 20: a corner
        (math.pi / 4, (MARGIN + 40.0, MARGIN + 40.0)),
    ]:
        out.append(("border", np.array(centre), heading, keypoints_for(np.array(centre), heading)))
    for n_ in range(8):  # exact cell-boundary coordinates for the nose
        x, y = 8.0 * (10 + 5 * n_) - 0.5, 8.0 * (8 + 3 * n_) - 0.5
        for heading in (0.0, math.pi / 2, math.pi, 0.3):
            centre = np.array([x, y]) - keypoints_for(np.zeros(2), heading)[0]
            kps = keypoints_for(centre, heading)
            if valid(kps):
                out.append(("cell-boundary", centre, heading, kps))
    return out


def decode(score, locref):
    """DeepLabCut's argmax + location refinement, per keypoint: (x, y, likelihood) [K, 3]."""
    k = score.shape[-1]
    res = np.zeros((k, 3))
    for j in range(k):
        idx = int(np.argmax(score[0, :, :, j]))
        row, col = divmod(idx, score.shape[2])
        dx = float(locref[0, row, col, 2 * j]) * LOCREF_STDEV
        dy = float(locref[0, row, col, 2 * j + 1]) * LOCREF_STDEV
        res[j] = (col * STRIDE + STRIDE / 2 + dx, row * STRIDE + STRIDE / 2 + dy, score[0, row, col, j])
    return res


def flops(model):
    """Multiply-accumulates and FLOPs (2 per MAC + 1 per elementwise output) from the inferred shapes."""
    m = shape_inference.infer_shapes(model)
    shapes = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    macs = 0
    elementwise = 0
    for node in m.graph.node:
        out = shapes.get(node.output[0])
        n_out = int(np.prod(out)) if out else 0
        if node.op_type == "Conv":
            w = inits[node.input[1]]
            macs += n_out * int(np.prod(w.shape[1:]))
            elementwise += n_out if len(node.input) > 2 else 0
        elif node.op_type in ("Relu", "Add", "Sub", "Mul", "Div", "Sigmoid"):
            elementwise += n_out
    return macs, 2 * macs + elementwise


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scenes", type=int, default=300, help="random scenes (plus the fixed edge cases)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--model", default=MODEL)
    args = ap.parse_args()

    model = onnx.load(args.model)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(args.model, so, providers=["CPUExecutionProvider"])
    ins = [(i.name, i.shape) for i in sess.get_inputs()]
    outs = [(o.name, o.shape) for o in sess.get_outputs()]
    print(f"model: {os.path.relpath(args.model, ROOT)}  {os.path.getsize(args.model)} bytes")
    print(f"  inputs:  {ins}")
    print(f"  outputs: {outs}")
    print(f"  metadata: keypoints={meta.get('keypoints')} stride={meta.get('stride')} locref_stdev={meta.get('locref_stdev')}")
    macs, fl = flops(model)
    print(f"  cost: {macs / 1e6:.2f} M multiply-accumulates, ~{fl / 1e6:.1f} MFLOP per frame")
    out_names = ["Sigmoid", "pose/locref_pred/block4/BiasAdd"]

    def run(img):
        return sess.run(out_names, {"Placeholder": img[None].astype(np.float32)})

    rng = np.random.default_rng(args.seed)
    failures = []
    errs = {k: [] for k in KEYPOINTS}
    liks = {k: [] for k in KEYPOINTS}
    far_max = 0.0
    by_label = {}
    test = scenes(rng, args.scenes)
    for variant in ("floor-noise", "noise-everywhere"):
        for label, centre, heading, kps in test if variant == "floor-noise" else test[: max(args.scenes // 3, 1)]:
            img = render(rng, centre, heading, kps, noise_everywhere=(variant == "noise-everywhere"))
            score, locref = run(img)
            pred = decode(score, locref)
            e = np.hypot(pred[:, 0] - kps[:, 0], pred[:, 1] - kps[:, 1])
            key = f"{variant}/{label}"
            by_label.setdefault(key, []).append(e.max())
            for j, name in enumerate(KEYPOINTS):
                errs[name].append(e[j])
                liks[name].append(pred[j, 2])
                if e[j] > MAX_ERROR_PX or pred[j, 2] < MIN_LIKELIHOOD:
                    failures.append(f"{key} {name}: truth ({kps[j, 0]:.3f}, {kps[j, 1]:.3f}) -> "
                                    f"({pred[j, 0]:.3f}, {pred[j, 1]:.3f}) err {e[j]:.3f} px, likelihood {pred[j, 2]:.4f}")
                # Score away from the marker (more than 2 cells from it): must look like background.
                rows, cols = np.mgrid[0:score.shape[1], 0:score.shape[2]]
                far = np.hypot(cols * STRIDE + 4 - kps[j, 0], rows * STRIDE + 4 - kps[j, 1]) > 3 * STRIDE
                far_max = max(far_max, float(score[0][far, j].max()))

    n_eval = len(errs[KEYPOINTS[0]])
    print(f"\n{n_eval} evaluated scenes ({len(test)} with floor noise only, as the Rust camera renders; "
          f"{n_eval - len(test)} with noise on wall/body/markers too)")
    print(f"{'keypoint':<10} {'median err':>10} {'p99 err':>8} {'max err':>8}   {'min lik':>8} {'median lik':>10}")
    for name in KEYPOINTS:
        e, l = np.array(errs[name]), np.array(liks[name])
        print(f"{name:<10} {np.median(e):>8.3f}px {np.percentile(e, 99):>6.3f}px {e.max():>6.3f}px   "
              f"{l.min():>8.4f} {np.median(l):>10.4f}")
    all_e = np.concatenate([np.array(v) for v in errs.values()])
    print(f"{'all':<10} {np.median(all_e):>8.3f}px {np.percentile(all_e, 99):>6.3f}px {all_e.max():>6.3f}px")
    print("max error by scene kind: " + ", ".join(f"{k} {max(v):.3f}px (n={len(v)})" for k, v in by_label.items()))
    print(f"max score farther than 3 cells from its marker: {far_max:.4f}")

    bg_max = 0.0
    for i in range(10):  # no markers at all: body and floor only (and noise everywhere for half)
        centre, heading, kps = random_scene(rng, 0.0)
        img = render(rng, centre, heading, kps, markers=False, noise_everywhere=(i % 2 == 1))
        score, _ = run(img)
        bg_max = max(bg_max, float(score.max()))
    img = np.zeros((H, W, 3), np.uint8)
    bg_max = max(bg_max, float(run(img)[0].max()))
    print(f"background (no markers) max likelihood: {bg_max:.4f}")
    if bg_max > MAX_BACKGROUND:
        failures.append(f"background likelihood {bg_max:.4f} > {MAX_BACKGROUND}")

    img = render(rng, *random_scene(rng, 0.0)).astype(np.float32)[None]
    for _ in range(5):
        sess.run(out_names, {"Placeholder": img})
    reps = 100
    t0 = time.perf_counter()
    for _ in range(reps):
        sess.run(out_names, {"Placeholder": img})
    dt = (time.perf_counter() - t0) / reps
    print(f"onnxruntime {ort.__version__} CPU, 1 thread: {dt * 1e3:.2f} ms per frame (mean of {reps})")

    if failures:
        print(f"\nFAIL: {len(failures)} problem(s)")
        for f in failures[:30]:
            print("  " + f)
        return 1
    print(f"\nOK: all errors <= {MAX_ERROR_PX} px, likelihoods >= {MIN_LIKELIHOOD}, background <= {MAX_BACKGROUND}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
