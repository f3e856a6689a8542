#!/usr/bin/env python3
"""Write Harp message fixtures with harp-tech's own Python library, for the Rust Harp bridge's tests.

The peer is `harp-protocol` (PyPI, harp-tech/python): its `HarpMessage` frames every message here
(header, timestamp, checksum); nothing of the framing is re-implemented in this script. Each line of
the output is `name hex`, where `name` says what the Rust test feeds or expects
(`firmware-bridge/tests/bridges/harp.rs` reads them):

- `req_*`: requests the host sends (no timestamp, port 0xFF), compared byte for byte with what
  `reflex_firmware_bridge::harp` writes;
- `rep_*`/`evt_*`: device replies and events with timestamps, which the bridge must decode, e.g.
  into `DeviceEvent::Ack { device_time_us }` (seconds * 1e6 + ticks * 32).

Register addresses are the Harp core registers (harp-tech/protocol `Device.md`) and the Harp Behavior
board's (harp-tech/device.behavior `device.yml`: OutputSet 34, OutputClear 35, OutputPulseEnable 45,
PulseDOPort0 46 .. PulseDO3 59, WHO_AM_I 1216, firmware 3.3).

It installs `harp-protocol` into tools/peers/.venv on first use (`pip install --no-deps`, with numpy<2
so the venv stays usable by the other peer scripts) and re-runs itself there.

Usage: tools/peers/harp_fixtures.py [--out firmware-bridge/tests/fixtures/harp_messages.txt]
"""

import argparse
import os
import struct
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
VENV = HERE / ".venv"
VENV_PY = VENV / "bin" / "python"
REQUIREMENTS = ["harp-protocol==0.5.0", "numpy<2", "typing-extensions>=4.14"]
DEFAULT_OUT = ROOT / "firmware-bridge" / "tests" / "fixtures" / "harp_messages.txt"


def ensure_venv():
    """Re-run this script inside tools/peers/.venv, creating it and installing harp-protocol if needed."""
    if Path(sys.prefix).resolve() == VENV.resolve():
        return
    if not VENV_PY.exists():
        subprocess.check_call([sys.executable, "-m", "venv", str(VENV)])
    probe = (
        "import sys, importlib.metadata as m\n"
        "try:\n    sys.exit(m.version('harp-protocol') != '0.5.0')\n"
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
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    ensure_venv()

    from importlib.metadata import version

    from harp.protocol import HarpMessage, MessageType, PayloadType

    def u16(v):
        return struct.pack("<H", v)

    def ts(seconds, ticks):
        """A float timestamp that harp-protocol turns back into exactly (seconds, ticks)."""
        return seconds + ticks * 32e-6

    R, W, E = MessageType.Read, MessageType.Write, MessageType.Event
    messages = [
        # Requests the bridge writes (connect, then commands).
        ("req_read_who_am_i", HarpMessage(R, 0, PayloadType.U16)),
        ("req_read_fw_version_h", HarpMessage(R, 6, PayloadType.U8)),
        ("req_read_fw_version_l", HarpMessage(R, 7, PayloadType.U8)),
        ("req_read_serial_number", HarpMessage(R, 13, PayloadType.U16)),
        ("req_write_pulse_enable_none", HarpMessage(W, 45, PayloadType.U16, u16(0))),
        ("req_write_output_clear_all14", HarpMessage(W, 35, PayloadType.U16, u16(0x3FFF))),
        ("req_write_output_set_ch2", HarpMessage(W, 34, PayloadType.U16, u16(1 << 2))),
        ("req_write_output_clear_ch2", HarpMessage(W, 35, PayloadType.U16, u16(1 << 2))),
        ("req_write_pulse_enable_ch1", HarpMessage(W, 45, PayloadType.U16, u16(1 << 1))),
        ("req_write_pulse_width_ch1_10ms", HarpMessage(W, 47, PayloadType.U16, u16(10))),
        ("req_write_output_set_ch1", HarpMessage(W, 34, PayloadType.U16, u16(1 << 1))),
        ("req_read_timestamp_second", HarpMessage(R, 8, PayloadType.U32)),
        # Replies and events a Harp Behavior board sends.
        ("rep_who_am_i_1216", HarpMessage(R, 0, PayloadType.U16, u16(1216), timestamp=ts(100, 0))),
        ("rep_fw_version_h_3", HarpMessage(R, 6, PayloadType.U8, bytes([3]), timestamp=ts(100, 10))),
        ("rep_fw_version_l_3", HarpMessage(R, 7, PayloadType.U8, bytes([3]), timestamp=ts(100, 20))),
        ("rep_serial_number_4242", HarpMessage(R, 13, PayloadType.U16, u16(4242), timestamp=ts(100, 30))),
        ("rep_pulse_enable_none", HarpMessage(W, 45, PayloadType.U16, u16(0), timestamp=ts(100, 40))),
        ("rep_output_clear_all14", HarpMessage(W, 35, PayloadType.U16, u16(0x3FFF), timestamp=ts(100, 50))),
        # 1234.5 s: 1234 s and 15625 ticks of 32 us -> device_time_us 1_234_500_000.
        ("rep_output_set_ch2_t1234_5", HarpMessage(W, 34, PayloadType.U16, u16(1 << 2), timestamp=ts(1234, 15625))),
        # Last tick of a second (31249): device_time_us 1_300_999_968.
        ("rep_timestamp_second_t1300_31249", HarpMessage(R, 8, PayloadType.U32, struct.pack("<I", 1300), timestamp=ts(1300, 31249))),
        ("evt_digital_input_state", HarpMessage(E, 32, PayloadType.U8, bytes([1]), timestamp=ts(1235, 7))),
    ]

    lines = [
        f"# Generated by tools/peers/harp_fixtures.py with harp-protocol {version('harp-protocol')} "
        "(harp-tech/python); do not edit.",
        "# name hex (whole message: header, timestamp when present, payload, checksum)",
    ]
    for name, message in messages:
        frame = message.bytes
        # Check the library reads its own frame back as we intended (timestamps exact).
        again = HarpMessage.parse(frame)
        assert again.bytes == frame, name
        if again.has_timestamp:
            seconds, ticks = struct.unpack_from("<IH", frame, 5)
            assert abs(seconds + ticks * 32e-6 - again.timestamp) < 1e-9, name
        lines.append(f"{name} {frame.hex()}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {len(messages)} messages to {args.out}")


if __name__ == "__main__":
    main()
