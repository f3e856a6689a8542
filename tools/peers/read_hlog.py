#!/usr/bin/env python3
"""Read a reflex `latency.hlog` with HdrHistogram's own Python log reader and print per-tag totals as JSON.

The peer for reflex's interval log: `hdrhistogram` (PyPI, HdrHistogram/HdrHistogram_py) reads the file with
its `HistogramLogReader` (the port of the Java `HistogramLogReader`) and decodes every interval histogram
itself (V2, deflate-compressed); nothing of the format is re-implemented here. The Rust test
`tests/tests/e2e/latency_report.rs` checks that what this prints equals what `reflex latency` reads.

Output: one JSON object, tag → {"intervals", "count", "max", "p50", "p90", "p99", "p999",
"rank_p50", "rank_p99", "recorded"}: values in the file's unit (ns); `rank_*` is the sample rank the package
used for that percentile (it rounds q·n to the nearest integer, where the Rust crate rounds up, so the two
can name neighbouring values for the same q); `recorded` is [[value, count], …] over every recorded bucket
(value = the bucket's highest equivalent value).
Plus "_lines": interval lines in the file, so a reader that stopped early is caught.

It installs `hdrhistogram` into tools/peers/.venv on first use (`pip install --no-deps`; it needs nothing
else at run time) and re-runs itself there; `--ensure` only does that (tools/test.sh calls it).

Usage: tools/peers/read_hlog.py SESSION/latency.hlog
"""

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
VENV_PY = VENV / "bin" / "python"
VERSION = "0.10.8"
REQUIREMENTS = [f"hdrhistogram=={VERSION}"]


def ensure_venv():
    """Re-run this script inside tools/peers/.venv, creating it and installing hdrhistogram if needed."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not VENV_PY.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    probe = (
        "import sys, importlib.metadata as m\n"
        f"try:\n    sys.exit(m.version('hdrhistogram') != '{VERSION}')\n"
        "except m.PackageNotFoundError:\n    sys.exit(1)\n"
    )
    if subprocess.call([str(VENV_PY), "-c", probe], stderr=subprocess.DEVNULL) != 0:
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        subprocess.check_call(
            [str(VENV_PY), "-m", "pip", "install", "--quiet", "--no-deps", *REQUIREMENTS], env=env
        )
    os.execv(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hlog", type=Path, nargs="?")
    parser.add_argument("--ensure", action="store_true", help="only set up tools/peers/.venv")
    args = parser.parse_args()
    ensure_venv()
    if args.ensure:
        return
    if args.hlog is None:
        parser.error("give a latency.hlog")

    from hdrh.histogram import HdrHistogram
    from hdrh.log import HistogramLogReader

    reader = HistogramLogReader(str(args.hlog), None)
    totals, intervals = {}, {}
    while True:
        h = reader.get_next_interval_histogram()
        if h is None:
            break
        tag = h.get_tag()
        if tag not in totals:
            # reflex's bounds: 1 ns to 10 s, 3 significant digits.
            totals[tag] = HdrHistogram(1, 10_000_000_000, 3)
            intervals[tag] = 0
        totals[tag].add(h)
        intervals[tag] += 1
    reader.close()

    out = {}
    for tag, h in totals.items():
        n = h.get_total_count()
        out[tag] = {
            "intervals": intervals[tag],
            "count": n,
            "max": h.get_max_value(),
            **{k: h.get_value_at_percentile(p) if n else 0 for k, p in PERCENTILES},
            "rank_p50": h.get_target_count_at_percentile(50.0),
            "rank_p99": h.get_target_count_at_percentile(99.0),
            "recorded": [[it.value_iterated_to, it.count_at_value_iterated_to] for it in h.get_recorded_iterator()],
        }
    with open(args.hlog, encoding="utf-8") as f:
        out["_lines"] = sum(1 for line in f if line[:1] not in ("#", '"', "") and line.strip())
    json.dump(out, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


PERCENTILES = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p999", 99.9)]

if __name__ == "__main__":
    main()
