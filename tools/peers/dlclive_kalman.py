#!/usr/bin/env python3
"""Run DeepLabCut-Live's own `KalmanFilterPredictor` on a pose CSV and write its forward predictions.

The peer for `reflex eval predict --peer-predictions`: for each horizon h it writes
`OUT/dlclive_kalman_h<ms>.csv` in reflex's pose-CSV layout (`frame,track,node,x,y,score`), where row
`frame` holds the position DLC-Live predicts, from the poses up to that frame, for the frame's time + h.

How DLC-Live is driven (nothing of its maths is re-implemented here):
- It is installed into `tools/peers/.venv` on first use (`pip install --no-deps deeplabcut-live "numpy<2"`),
  so the system numpy used by onnx/onnxruntime is untouched. The script re-runs itself in that venv.
- `dlclive/__init__.py` imports torch; an empty `dlclive` package module pointing at the installed folder is
  registered instead, and `dlclive.processor.kalmanfilter` is imported from it.
- `process` reads `time.time()`; a simulated clock is installed in that module and set to each frame's time
  (frame / fps), with `frame_time` equal to it, so the horizon `now - frame_time + forward` is exactly h.
- One `KalmanFilterPredictor(fps=fps, forward=h, **DLC defaults)` per track and keypoint. DLC-Live's
  matrices (F, Q, R, H, P0, priors) are block-diagonal per keypoint and coordinate, so this is the same filter
  as one instance over the whole pose; it lets a keypoint start on its own first usable measurement, as
  reflex's `KalmanPredictor` does (DLC would start every keypoint from the first pose, whatever it holds).
- A missing point (empty x, y) is fed as DLC-Live's "no update" case: likelihood -1 (below `lik_thresh`)
  at the filter's own position (a finite placeholder: a NaN would poison DLC's whole state through 0*NaN).
  A present point without a score counts as certain (score 1), as in reflex's CSV reader.

Usage: tools/peers/dlclive_kalman.py --poses ../shared/data/clip_pred2.csv --horizon-ms 10,20,40,80 \
           --out tests/fixtures/dlclive_kalman
"""

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import types
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
VENV_PY = VENV / "bin" / "python"
REQUIREMENTS = ["deeplabcut-live==1.1.0", "numpy<2"]


def ensure_venv():
    """Re-run this script inside tools/peers/.venv, creating it and installing DLC-Live first if needed."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not VENV_PY.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    probe = "import numpy, importlib.util as u, sys; sys.exit(u.find_spec('dlclive') is None or numpy.__version__[0] != '1')"
    if subprocess.call([str(VENV_PY), "-c", probe], stderr=subprocess.DEVNULL) != 0:
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        subprocess.check_call([str(VENV_PY), "-m", "pip", "install", "--quiet", "--no-deps", *REQUIREMENTS], env=env)
    os.execv(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]])


class SimClock:
    """Stands in for the `time` module inside kalmanfilter.py: `time()` returns the simulated now (s)."""

    def __init__(self):
        self.now_s = 0.0

    def time(self):
        return self.now_s


def import_kalman_module():
    """Import dlclive.processor.kalmanfilter without running dlclive/__init__.py (which imports torch)."""
    import importlib.util

    spec = importlib.util.find_spec("dlclive.processor.kalmanfilter") if "dlclive" in sys.modules else None
    if spec is None:
        site = next(Path(p) for p in sys.path if (Path(p) / "dlclive" / "processor" / "kalmanfilter.py").exists())
        pkg = types.ModuleType("dlclive")
        pkg.__path__ = [str(site / "dlclive")]
        sys.modules["dlclive"] = pkg
    import dlclive.processor.kalmanfilter as kf

    return kf


def read_fps(poses, fps_flag):
    if fps_flag:
        return fps_flag
    sidecar = Path(poses).with_suffix(".json")
    if sidecar.exists():
        meta = json.loads(sidecar.read_text())
        fps = meta.get("fps") or (meta.get("video") or {}).get("fps")
        if fps:
            return float(fps)
    sys.exit(f"{poses}: no fps: pass --fps or give a JSON sidecar {sidecar.name} with `fps` (or `video.fps`)")


def read_poses(path):
    """frames (sorted), tracks, nodes (first-seen order) and {(frame, track, node): (x, y, score)}."""
    points, frames, tracks, nodes = {}, set(), [], []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        for need in ("frame", "track", "node", "x", "y", "score"):
            if need not in reader.fieldnames:
                sys.exit(f"{path}: no `{need}` column (header: {','.join(reader.fieldnames)})")
        for line, row in enumerate(reader, start=2):
            frame = int(row["frame"])
            track, node = row["track"], row["node"]
            frames.add(frame)
            if track not in tracks:
                tracks.append(track)
            if node not in nodes:
                nodes.append(node)
            if row["x"].strip() and row["y"].strip():
                x, y = float(row["x"]), float(row["y"])
                score = float(row["score"]) if row["score"].strip() else 1.0
                if math.isfinite(x) and math.isfinite(y):
                    points[(frame, track, node)] = (x, y, score)
    return sorted(frames), tracks, nodes, points


def run(kf, frames, tracks, nodes, points, fps, horizon_s, lik_thresh):
    """Predictions {(frame, track, node): (x, y, score)} of DLC-Live's filter, horizon_s ahead of each frame."""
    import numpy as np

    clock = SimClock()
    kf.time = clock  # the module's `time.time()` now reads the simulated clock
    filters = {}
    out = {}
    for frame in frames:
        clock.now_s = frame / fps
        for track in tracks:
            for node in nodes:
                key = (track, node)
                p = points.get((frame, track, node))
                usable = p is not None and p[2] >= lik_thresh
                filt = filters.get(key)
                if filt is None:
                    if not usable:
                        continue
                    filt = kf.KalmanFilterPredictor(fps=fps, forward=horizon_s, lik_thresh=lik_thresh)
                    filters[key] = filt
                if p is None:
                    x, y = filt.X[0, 0], filt.X[1, 0]  # finite placeholder, never used: likelihood -1
                    pose = np.array([[x, y, -1.0]])
                else:
                    pose = np.array([[p[0], p[1], p[2]]])
                res = filt.process(pose, frame_time=clock.now_s)
                score = p[2] if p is not None else 0.0
                out[(frame, track, node)] = (float(res[0, 0]), float(res[0, 1]), score)
    return out


def main():
    ensure_venv()
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--poses", required=True, help="pose CSV the filter sees (frame,track,node,x,y,score)")
    ap.add_argument("--fps", type=float, help="frame rate; default: `fps` in the JSON sidecar of --poses")
    ap.add_argument("--horizon-ms", default="10,20,40,80", help="comma-separated horizons in ms")
    ap.add_argument("--lik-thresh", type=float, default=0.0, help="DLC-Live's lik_thresh (default 0)")
    ap.add_argument("--out", required=True, help="folder for dlclive_kalman_h<ms>.csv")
    args = ap.parse_args()

    kf = import_kalman_module()
    fps = read_fps(args.poses, args.fps)
    frames, tracks, nodes, points = read_poses(args.poses)
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    for h_ms in [int(h) for h in args.horizon_ms.split(",")]:
        pred = run(kf, frames, tracks, nodes, points, fps, h_ms / 1000.0, args.lik_thresh)
        path = out_dir / f"dlclive_kalman_h{h_ms}.csv"
        with open(path, "w", newline="") as f:
            f.write("frame,track,node,x,y,score\n")
            for frame in frames:
                for track in tracks:
                    for node in nodes:
                        p = pred.get((frame, track, node))
                        if p is None:
                            f.write(f"{frame},{track},{node},,,\n")
                        else:
                            f.write(f"{frame},{track},{node},{p[0]:.4f},{p[1]:.4f},{p[2]:.4g}\n")
        print(f"wrote {path} ({len(pred)} predictions, fps {fps}, horizon {h_ms} ms)")


if __name__ == "__main__":
    main()
