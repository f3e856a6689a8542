#!/usr/bin/env python3
"""Build reflex's embedded default pose model: a hand-designed (untrained) ONNX marker detector.

The network finds the four coloured disk markers of reflex's synthetic camera (the scene contract is in
tools/model/README.md) and emits its result in the DeepLabCut TensorFlow export layout, so that the daemon
decodes it exactly as DeepLabCut(-Live) does (argmax of the score map + location refinement):

    Placeholder                      float32 [1, 480, 640, 3]  NHWC RGB, raw 0..255
    Sigmoid                          float32 [1, 60, 80, 4]    score maps, stride 8
    pose/locref_pred/block4/BiasAdd  float32 [1, 60, 80, 8]    locref (dx_k, dy_k) / locref_stdev

Writes daemon/models/default/model.onnx (byte-for-byte deterministic) and daemon/models/default/pose_cfg.yaml.

    python3 tools/model/make_default_model.py && python3 tools/model/check_default_model.py
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(ROOT, "daemon", "models", "default")

H, W = 480, 640
STRIDE = 8
GH, GW = H // STRIDE, W // STRIDE
LOCREF_STDEV = 7.2801
KEYPOINTS = ["nose", "ear_left", "ear_right", "tail_base"]
NK = len(KEYPOINTS)

INPUT_NAME = "Placeholder"
SCORE_NAME = "Sigmoid"
LOCREF_NAME = "pose/locref_pred/block4/BiasAdd"

# --- Stage 1: per-pixel colour features (1x1 conv on raw RGB 0..255, then Relu) -----------------------
# Each row: (name, wR, wG, wB, bias). feature = Relu(wR*R + wG*G + wB*B + bias) / (value on its own
# colour), so a full-coverage marker pixel gives exactly 1.0. Every non-marker colour of the scene (floor
# with +-8 noise per channel, wall, body) and every other marker colour gives <= -9 before the Relu
# (asserted by check_colour_margins), so it contributes exactly 0. Yellow is R + G - B - 260: being
# linear it cannot separate yellow from red + green with a low threshold, so its rim pixels below ~50 %
# coverage drop out (symmetric, costs < 0.1 px); a Relu(min(R, G) - B - 25) variant was 3x slower in tract.
FEATURES_RAW = [
    # name        wR     wG     wB     bias
    ("red",      1.0,  -1.0,   0.0,  -25.0),   # R - G - 25                 red -> 175
    ("green",   -1.0,   1.0,  -0.25, -10.0),   # G - R - B/4 - 10           green -> 181.25
    ("blue",    -0.5,  -0.5,   1.0,  -25.0),   # B - (R + G)/2 - 25         blue -> 157.5
    ("yellow",   1.0,   1.0,  -1.0, -260.0),   # R + G - B - 260            yellow -> 175
]
MARKER_COLOURS = {
    "nose": (235, 35, 35),
    "ear_left": (35, 235, 35),
    "ear_right": (35, 70, 235),
    "tail_base": (235, 235, 35),
}

# --- Score: Sigmoid(A * (S0 + LAMBDA * M0_centre) - B) -------------------------------------------------
# S0 = feature mass in the 3x3-cell (24x24 px) window, M0_centre = mass in the cell itself. A full marker
# has a mass of ~76 (pixel-coverage units), so the score is ~0.97..0.99 on it and Sigmoid(-B) = 0.02 where
# there is nothing.
SCORE_A = 0.1
SCORE_LAMBDA = 0.1
SCORE_B = math.log(49.0)  # Sigmoid(-B) = 0.02
EPS = 1e-3  # locref denominator guard (S0 = 0 -> locref 0)


def feature_value(row, rgb):
    """Pre-Relu value of one raw feature row for an RGB triple (float arrays welcome)."""
    _, wr, wg, wb, bias = row
    return wr * rgb[0] + wg * rgb[1] + wb * rgb[2] + bias


def features_np(rgb):
    """Reference of stage 1 in numpy: rgb [..., 3] float -> [..., 4] features (red, green, blue, yellow)."""
    rgb = np.moveaxis(np.asarray(rgb, dtype=np.float64), -1, 0)
    return np.stack([np.maximum(feature_value(r, rgb), 0.0) * s for r, s in zip(FEATURES_RAW, feature_scales())], axis=-1)


def feature_scales():
    """Scale per keypoint feature so that a full marker pixel gives 1.0."""
    return [1.0 / feature_value(FEATURES_RAW[k], np.array(MARKER_COLOURS[n], float)) for k, n in enumerate(KEYPOINTS)]


def check_colour_margins():
    """Every feature is >= 0.99 on its own colour and exactly 0 on every other colour of the scene.

    Returns the smallest "margin" (how far below 0 the pre-Relu value of a foreign colour stays, raw units).
    """
    floor_corners = [np.array([105 + a, 105 + b, 105 + c], float) for a in (-8, 8) for b in (-8, 8) for c in (-8, 8)]
    others = {"wall": [np.array([70.0, 70, 70])], "body": [np.array([55.0, 45, 40])], "floor": floor_corners}
    for name, c in MARKER_COLOURS.items():
        others[name] = [np.array(c, float)]
    worst = math.inf
    for k, name in enumerate(KEYPOINTS):
        own = features_np(np.array(MARKER_COLOURS[name], float))[k]
        assert abs(own - 1.0) < 1e-9, (name, own)
        for oname, cols in others.items():
            if oname == name:
                continue
            for c in cols:
                f = features_np(c)[k]
                assert f == 0.0, (name, oname, c, f)
                worst = min(worst, -feature_value(FEATURES_RAW[k], c))
    # A marker's rim blends its colour with what is under it (floor, wall, body): the feature is then
    # ~coverage. A foreign marker's rim is a convex combination of two colours that both map <= -9, so it
    # stays 0 (the features are linear before the Relu).
    return worst


def t(name, arr, dtype=np.float32):
    return numpy_helper.from_array(np.ascontiguousarray(np.asarray(arr, dtype=dtype)), name)


def build_model(score_a=SCORE_A, score_lambda=SCORE_LAMBDA, score_b=SCORE_B, input_mode="strided"):
    inits = []
    nodes = []

    if input_mode == "transpose":
        nodes.append(helper.make_node("Transpose", [INPUT_NAME], ["image_nchw"], perm=[0, 3, 1, 2], name="to_nchw"))
        kshape, kstrides = [1, 1], [1, 1]
    else:
        inits.append(t("shape/flat_rgb", [1, 1, H, 3 * W], np.int64))
        nodes.append(helper.make_node("Reshape", [INPUT_NAME, "shape/flat_rgb"], ["image_nchw"], name="to_flat_rgb"))
        kshape, kstrides = [1, 3], [1, 3]

    # Stage 1: colour features, 1x3 stride-3 conv on the interleaved RGB row (= 1x1 conv 3 -> 4, and
    # NHWC -> NCHW for free) + Relu. Scales folded into the weights (Relu commutes with a positive scale).
    scales = feature_scales()
    w1 = np.zeros((NK, 1) + tuple(kshape)) if input_mode != "transpose" else np.zeros((NK, 3, 1, 1))
    b1 = np.zeros(NK)
    for i, (row, s) in enumerate(zip(FEATURES_RAW, scales)):
        if input_mode == "transpose":
            w1[i, :, 0, 0] = np.array(row[1:4]) * s
        else:
            w1[i, 0, 0, :] = np.array(row[1:4]) * s
        b1[i] = row[4] * s
    inits += [t("colour/W", w1), t("colour/B", b1)]
    nodes.append(helper.make_node("Conv", ["image_nchw", "colour/W", "colour/B"], ["colour_lin"], kernel_shape=kshape, strides=kstrides, name="colour/conv"))
    nodes.append(helper.make_node("Relu", ["colour_lin"], ["features"], name="colour/relu"))

    # Stage 2: per cell and keypoint the mass M0 and first moments Mx, My about the cell's nominal point
    # (col*8 + 4, row*8 + 4) (DeepLabCut's cell centre): grouped 8x8 stride-8 conv, 4 -> 12 channels,
    # channel 3k + {0: M0, 1: Mx, 2: My}.
    off = np.arange(STRIDE, dtype=np.float64) - STRIDE / 2.0  # pixel offset from the nominal point
    w2 = np.zeros((3 * NK, 1, STRIDE, STRIDE))
    for k in range(NK):
        w2[3 * k + 0, 0] = 1.0
        w2[3 * k + 1, 0] = off[None, :]  # x varies along the last (width) axis
        w2[3 * k + 2, 0] = off[:, None]
    inits += [t("moments/W", w2)]
    nodes.append(helper.make_node("Conv", ["features", "moments/W"], ["moments"], kernel_shape=[STRIDE, STRIDE], strides=[STRIDE, STRIDE], group=NK, name="moments/conv"))

    # Stage 3: 3x3 neighbourhood on the cell grid (pad 1), grouped per keypoint, 12 -> 16 channels,
    # channel 4k + {0: score logit, 1: S0, 2: Sx / locref_stdev, 3: Sy / locref_stdev}, moments shifted
    # to the centre cell's nominal point: Sx = sum(Mx(n) + 8*dcol*M0(n)).
    w3 = np.zeros((4 * NK, 3, 3, 3))
    b3 = np.zeros(4 * NK)
    for k in range(NK):
        for i in range(3):  # kernel row -> drow = i - 1
            for j in range(3):  # kernel col -> dcol = j - 1
                dr, dc = i - 1, j - 1
                w3[4 * k + 0, 0, i, j] = score_a * (1.0 + (score_lambda if (dr == 0 and dc == 0) else 0.0))
                w3[4 * k + 1, 0, i, j] = 1.0
                w3[4 * k + 2, 0, i, j] = STRIDE * dc / LOCREF_STDEV
                w3[4 * k + 2, 1, i, j] = 1.0 / LOCREF_STDEV
                w3[4 * k + 3, 0, i, j] = STRIDE * dr / LOCREF_STDEV
                w3[4 * k + 3, 2, i, j] = 1.0 / LOCREF_STDEV
        b3[4 * k + 0] = -score_b
        b3[4 * k + 1] = EPS
    inits += [t("neigh/W", w3), t("neigh/B", b3)]
    nodes.append(helper.make_node("Conv", ["moments", "neigh/W", "neigh/B"], ["neigh"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=NK, name="neigh/conv"))

    # Heads: [1,16,60,80] -> [1,4,4,60,80] -> logit / S0 / (Sx, Sy).
    inits += [
        t("shape/k4", [1, NK, 4, GH, GW], np.int64),
        t("shape/k", [1, NK, GH, GW], np.int64),
        t("shape/k2", [1, 2 * NK, GH, GW], np.int64),
        t("sl/axes", [2], np.int64),
        t("sl/0", [0], np.int64),
        t("sl/1", [1], np.int64),
        t("sl/2", [2], np.int64),
        t("sl/4", [4], np.int64),
    ]
    nodes.append(helper.make_node("Reshape", ["neigh", "shape/k4"], ["neigh5"], name="heads/reshape"))
    nodes.append(helper.make_node("Slice", ["neigh5", "sl/0", "sl/1", "sl/axes"], ["logit5"], name="heads/logit"))
    nodes.append(helper.make_node("Slice", ["neigh5", "sl/1", "sl/2", "sl/axes"], ["mass5"], name="heads/mass"))
    nodes.append(helper.make_node("Slice", ["neigh5", "sl/2", "sl/4", "sl/axes"], ["moment5"], name="heads/moment"))
    # Score map.
    nodes.append(helper.make_node("Reshape", ["logit5", "shape/k"], ["logit_nchw"], name="score/reshape"))
    nodes.append(helper.make_node("Transpose", ["logit_nchw"], ["logit_nhwc"], perm=[0, 2, 3, 1], name="score/to_nhwc"))
    nodes.append(helper.make_node("Sigmoid", ["logit_nhwc"], [SCORE_NAME], name="Sigmoid"))
    # Location refinement: centroid offset / locref_stdev (the 1/stdev is folded into the conv weights).
    nodes.append(helper.make_node("Div", ["moment5", "mass5"], ["locref5"], name="locref/div"))
    nodes.append(helper.make_node("Reshape", ["locref5", "shape/k2"], ["locref_nchw"], name="locref/reshape"))
    nodes.append(helper.make_node("Transpose", ["locref_nchw"], [LOCREF_NAME], perm=[0, 2, 3, 1], name="locref/to_nhwc"))

    graph = helper.make_graph(
        nodes,
        "reflex_default_marker_detector",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, H, W, 3])],
        [
            helper.make_tensor_value_info(SCORE_NAME, TensorProto.FLOAT, [1, GH, GW, NK]),
            helper.make_tensor_value_info(LOCREF_NAME, TensorProto.FLOAT, [1, GH, GW, 2 * NK]),
        ],
        initializer=inits,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", 17)],
        producer_name="reflex tools/model/make_default_model.py",
        producer_version="1",
        doc_string=(
            "reflex's synthetic marker detector: hand-designed (untrained) ONNX network for the synthetic "
            "camera's four coloured disk markers, in the DeepLabCut TensorFlow export layout. See "
            "tools/model/README.md."
        ),
    )
    model.ir_version = 8
    meta = {
        "framework": "reflex-synthetic (DeepLabCut TF export layout)",
        "keypoints": ",".join(KEYPOINTS),
        "all_joints_names": ",".join(KEYPOINTS),
        "num_joints": str(NK),
        "stride": str(float(STRIDE)),
        "locref_stdev": str(LOCREF_STDEV),
        "location_refinement": "true",
        "input": f"{INPUT_NAME} float32 [1,{H},{W},3] NHWC RGB 0..255",
        "output_scoremap": f"{SCORE_NAME} float32 [1,{GH},{GW},{NK}]",
        "output_locref": f"{LOCREF_NAME} float32 [1,{GH},{GW},{2 * NK}]",
        "scene_contract": "tools/model/README.md",
    }
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


POSE_CFG = f"""\
# reflex's synthetic marker detector (embedded default model).
# Not a trained DeepLabCut network: a hand-designed ONNX graph (tools/model/make_default_model.py) that
# finds the four coloured disk markers of reflex's synthetic camera (scene contract: tools/model/README.md)
# and emits DeepLabCut's TensorFlow export layout, so it is decoded exactly like an exported DLC model:
#   input  Placeholder                      float32 [1, {H}, {W}, 3]  (NHWC, RGB, 0..255)
#   output Sigmoid                          float32 [1, {GH}, {GW}, {NK}]  (score maps)
#   output pose/locref_pred/block4/BiasAdd  float32 [1, {GH}, {GW}, {2 * NK}]  (locref, x/y interleaved)
# Generated file: edit make_default_model.py and regenerate instead of editing this.
all_joints:
- [0]
- [1]
- [2]
- [3]
all_joints_names:
- nose
- ear_left
- ear_right
- tail_base
num_joints: {NK}
stride: {float(STRIDE)}
location_refinement: true
locref_stdev: {LOCREF_STDEV}
dataset_type: default
net_type: reflex_synthetic_marker_detector
batch_size: 1
global_scale: 1.0
scoremap_dir: test
"""


def main():
    margin = check_colour_margins()
    model = build_model()
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, "model.onnx")
    data = model.SerializeToString(deterministic=True)
    if "--check" in sys.argv[1:]:
        # CI: the committed files must be exactly what this script makes.
        stale = []
        for name, want in (("model.onnx", data), ("pose_cfg.yaml", POSE_CFG.encode("utf-8"))):
            try:
                with open(os.path.join(OUT_DIR, name), "rb") as f:
                    if f.read() != want:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        if stale:
            print(f"daemon/models/default/{', '.join(stale)} differ from what {os.path.basename(__file__)} makes: "
                  "regenerate with `python3 tools/model/make_default_model.py` and commit", file=sys.stderr)
            return 1
        print("bundled model is up to date with its generator")
        return 0
    with open(path, "wb") as f:
        f.write(data)
    with open(os.path.join(OUT_DIR, "pose_cfg.yaml"), "w", encoding="utf-8", newline="\n") as f:
        f.write(POSE_CFG)
    print(f"colour margin: foreign colours stay >= {margin:.2f} (raw units) below the Relu threshold")
    print(f"wrote {os.path.relpath(path, ROOT)} ({len(data)} bytes) and pose_cfg.yaml")
    return 0


if __name__ == "__main__":
    sys.exit(main())
