"""`citynerve demo` (the default building scenario, issue 18 D4): besides its meters, smoke detectors
and manhole covers, the building shows the street's device classes - the stairwell meter box's
electrical fire detector, the entrance door, a bed-foot sensor - and their alarms reach the platform."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citynerve.hil.demo import _event_kinds
from citynerve.hil.demo_building import GATEWAY_ID
from citynerve.hil.platform.store import PlatformStore

REPO = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "citynerve.gateway.cli")


@pytest.mark.slow
def test_building_demo_shows_new_points_and_their_alarms_reach_the_platform(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "demo", "--duration", "22", "--workdir", str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    store = PlatformStore(tmp_path / "platform.db")
    try:
        kinds = _event_kinds(store.events(GATEWAY_ID))
        points = {r.get("point") for r in store.readings(GATEWAY_ID)}
    finally:
        store.close()
    # Three alarms of the new packs: forced door (at once), door wedged open (8 s hold in the demo),
    # residual current in the meter box (5 s hold), next to the building's own.
    assert {"door_forced", "door_held_open", "residual_current"} <= kinds, kinds
    # Flat 301's resident out of bed, no water use, no movement the PIR sees: "check on this person".
    assert "check_on_person" in kinds, kinds
    assert {"in_bed", "door_open", "forced_open", "residual_current", "cable_temp_a", "motion"} <= points, (
        points
    )
