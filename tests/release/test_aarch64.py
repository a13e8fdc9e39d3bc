"""Opt-in: the aarch64 bundle installs offline and runs on an emulated arm64 Debian root.

Slow (emulated: minutes) and needs root, mmdebstrap and qemu-user-static, so it runs only when
CITYNERVE_AARCH64_ROOT names the folder for the arm64 root (made on first use, reused after):

    CITYNERVE_AARCH64_ROOT=/var/tmp/arm64-root .venv/bin/python -m pytest tests/release/test_aarch64.py

Results and emulated timings are recorded in docs/benchmarks.md. After the proof, the technician
commands of hil/bench/cli.py run emulated in that root against a native gateway (`--aarch64-root`).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from citynerve.hil.tools.aarch64_proof import prove

from .conftest import ReleaseKey, source_copy

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.environ.get("CITYNERVE_AARCH64_ROOT"), reason="opt-in: CITYNERVE_AARCH64_ROOT"),
]


def test_aarch64_bundle_installs_offline_and_runs_the_demo(tmp_path: Path, release_key: ReleaseKey) -> None:
    from citynerve.hil.tools.bundle import build_bundle

    src = source_copy(tmp_path / "src", "1.0.0", release_key)
    bundle = build_bundle(arch="aarch64", key_path=release_key.private, out=tmp_path / "dist", source=src)
    result = prove(bundle, release_key.public, Path(os.environ["CITYNERVE_AARCH64_ROOT"]), suite="bookworm",
                   duration=30)  # fmt: skip
    assert result["arch"] == "aarch64" and str(result["version"]).endswith("1.0.0")
    assert result["examples"] == 3
    assert "demo done" in str(result["demo"]) and " 0 open gaps" in str(result["demo"])
    # the same root, now with the bundle installed: the technician commands emulated vs native
    from citynerve.hil.bench.cli import commands, measure

    figures = asyncio.run(measure(20, 1, None, Path(os.environ["CITYNERVE_AARCH64_ROOT"]).resolve()))
    for name in commands(Path("gw.toml")):
        assert figures[f"aarch64_{name}_s"] > 0 and figures[f"aarch64_ratio_{name}"] > 0
    assert figures["aarch64_python_start_s"] > 0
