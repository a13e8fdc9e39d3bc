"""The fault runner (hil/bench/faults.py) runs the fault scenarios against real processes; all must
hold. The scenarios live in hil/faults/<area>.py and are listed in docs/reliability.md.

Every fast scenario runs in CI exactly once: the areas with tests of their own run there (time in
tests/clock, store in tests/store, alarms and bulkheads in tests/alarms, inputs in
tests/test_faults_inputs.py), and the runner itself runs the rest here, end to end as a process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from citynerve.hil.faults import load_all

REPO = Path(__file__).resolve().parents[1]
RUN_HERE = ("config.", "actions.")  # the areas without tests of their own


@pytest.mark.slow
@pytest.mark.parametrize("prefix", RUN_HERE)
def test_the_runner_runs_the_fast_scenarios_and_they_hold(prefix: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.hil.bench.faults", "--json", "-k", prefix],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    report = json.loads(proc.stdout)
    bad = [
        f"{s['name']}: {s['verdict']}: {s['detail']}" for s in report["scenarios"] if s["verdict"] != "held"
    ]
    assert not bad, "\n".join(bad)
    assert report["total"] >= 1 and proc.returncode == 0, proc.stderr[-2000:]


def test_every_fast_scenario_runs_in_ci() -> None:
    tests = "\n".join(
        p.read_text(encoding="utf-8")
        for p in (REPO / "tests").rglob("test_*.py")
        if p.name != Path(__file__).name
    )
    missing = [
        name
        for name, sc in load_all().items()
        if not sc.slow
        and not name.startswith(RUN_HERE)
        and not name.startswith("inputs.")  # tests/test_faults_inputs.py runs every inputs.* scenario
        and sc.fn.__name__ not in tests
    ]
    assert not missing, f"fast fault scenarios no CI test runs: {missing}"


def test_every_scenario_is_documented() -> None:
    doc = (REPO / "docs" / "reliability.md").read_text(encoding="utf-8")
    missing = [name for name in load_all() if f"`{name}`" not in doc]
    assert not missing, f"fault scenarios not in docs/reliability.md: {missing}"
