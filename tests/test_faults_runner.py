"""The fault runner (hil/bench/faults.py) runs every fast fault scenario against real processes; all
must hold. The scenarios themselves live in hil/faults/<area>.py and are listed in docs/reliability.md."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_every_fast_fault_scenario_holds() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.hil.bench.faults", "--json"],
        cwd=REPO, capture_output=True, text=True, timeout=900,
    )
    report = json.loads(proc.stdout)
    bad = [
        f"{s['name']}: {s['verdict']}: {s['detail']}" for s in report["scenarios"] if s["verdict"] != "held"
    ]
    assert not bad, "\n".join(bad)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_scenario_is_documented() -> None:
    from citynerve.hil.faults import load_all

    doc = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    missing = [name for name in load_all() if f"`{name}`" not in doc]
    assert not missing, f"fault scenarios not in docs/reliability.md: {missing}"
