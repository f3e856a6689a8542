#!/usr/bin/env bash
# Runs every test of reflex. Installs what the tests need (idempotent): the ONNX Runtime wheel, so both
# inference backends are tested, and the `onnx` package that regenerates the bundled model.
set -euo pipefail
cd "$(dirname "$0")/.."

export PIP_DISABLE_PIP_VERSION_CHECK=1
if ! python3 -c 'import onnxruntime, onnx, numpy, sys; sys.exit(onnxruntime.__version__ != "1.31.1")' 2>/dev/null; then
    python3 -m pip install --quiet "onnxruntime==1.31.1" "onnx==1.23.2" "numpy>=1.26"
fi

# The /metrics tests parse the exposition with Prometheus's Python client, in tools/peers/.venv (pinned).
python3 tools/peers/prom_parse.py --ensure
# The latency.hlog test reads it with HdrHistogram's own Python log reader, in tools/peers/.venv (pinned).
python3 tools/peers/read_hlog.py --ensure

# The AVR firmware's tests (firmware-bridge/tests/firmware/) build it with avr-gcc and run it under simavr
# through a small C harness on libsimavr. Debian packages; we run as root.
if ! command -v avr-gcc >/dev/null || ! command -v make >/dev/null \
    || ! [ -e /usr/lib/avr/include/util/crc16.h ] || ! [ -e /usr/include/simavr/sim_avr.h ] \
    || ! [ -e /usr/include/libelf.h ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq make gcc-avr avr-libc simavr libsimavr-dev libelf-dev >/dev/null
fi

# GenICam cameras (daemon/tests/aravis.rs) are tested against Aravis's own fake GigE Vision camera, a
# separate process speaking GVCP/GVSP on 127.0.0.1: the library libaravis-0.8-0 (reflex loads it at run
# time) and the fake camera, in aravis-tools. The test fails, rather than skips, without them here.
if ! compgen -G '/usr/lib/*/libaravis-0.8.so.0' >/dev/null || ! command -v arv-fake-gv-camera-0.8 >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends libaravis-0.8-0 aravis-tools >/dev/null
fi
export REFLEX_REQUIRE_ARAVIS=1

# The committed model is exactly what its generator makes.
python3 tools/model/make_default_model.py --check

cargo test --workspace
