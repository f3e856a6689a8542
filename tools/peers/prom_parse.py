#!/usr/bin/env python3
"""Parse Prometheus text exposition format with Prometheus's own Python client, for reflex's /metrics tests.

Reads the exposition text on stdin, parses it with `prometheus_client.parser.text_string_to_metric_families`
(the reference parser of the Prometheus project's Python client) and prints the families as JSON on stdout:

    [{"name": ..., "type": ..., "documentation": ...,
      "samples": [{"name": ..., "labels": {...}, "value": 1.0 | null}]}, ...]

`value` is null for NaN (JSON has no NaN). A sample that does not belong to the family declared before it
comes out as a family of type "unknown", so a mis-grouped exposition is visible to the caller. A line the
parser refuses exits with status 1 and the parser's error on stderr.

It installs `prometheus-client` into tools/peers/.venv on first use (`pip install --no-deps`; it has no
dependencies) and re-runs itself there. `--ensure` only does that (tools/test.sh calls it).

Usage: tools/peers/prom_parse.py < metrics.txt
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
VENV = HERE / ".venv"
VENV_PY = VENV / "bin" / "python"
REQUIREMENTS = ["prometheus-client==0.26.0"]


def ensure_venv():
    """Re-run this script inside tools/peers/.venv, creating it and installing prometheus-client if needed."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not VENV_PY.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    probe = (
        "import importlib.metadata as m, sys; "
        f"sys.exit(m.version('prometheus-client') != {REQUIREMENTS[0].split('==')[1]!r})"
    )
    if subprocess.call([str(VENV_PY), "-c", probe], stderr=subprocess.DEVNULL) != 0:
        env = dict(os.environ, PIP_DISABLE_PIP_VERSION_CHECK="1")
        subprocess.check_call(
            [str(VENV_PY), "-m", "pip", "install", "--quiet", "--no-deps", *REQUIREMENTS],
            env=env,
            stdout=sys.stderr,
        )
    os.execv(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]])


def main():
    ensure_venv()
    if sys.argv[1:] == ["--ensure"]:
        return 0
    from prometheus_client.parser import text_string_to_metric_families

    text = sys.stdin.read()
    try:
        families = [
            {
                "name": f.name,
                "type": f.type,
                "documentation": f.documentation,
                "samples": [
                    {
                        "name": s.name,
                        "labels": dict(s.labels),
                        "value": None if math.isnan(s.value) else s.value,
                    }
                    for s in f.samples
                ],
            }
            for f in text_string_to_metric_families(text)
        ]
    except Exception as e:  # the parser raises ValueError and others on malformed lines
        print(f"prometheus_client refused the exposition: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    json.dump(families, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
