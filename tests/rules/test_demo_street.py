"""`citynerve demo --scenario street` (issue 18): the real CLI runs the gateway against the
simulated street; the street's new alarms reach the platform (its database is read afterwards)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citynerve.hil.demo import _event_kinds
from citynerve.hil.demo_street import GATEWAY_ID
from citynerve.hil.platform.store import PlatformStore

REPO = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "citynerve.gateway.cli")


@pytest.mark.slow
@pytest.mark.long
def test_street_demo_alarms_reach_the_platform(tmp_path: Path) -> None:
    proc = subprocess.run(
        [*CLI, "demo", "--scenario", "street", "--duration", "40", "--workdir", str(tmp_path)],
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
        readings = store.readings(GATEWAY_ID)
    finally:
        store.close()
    # At least three of the street's new alarms, from four different packs, arrived.
    assert {"fire_lane_blocked", "hydrant_opened", "residual_current", "door_forced"} <= kinds, kinds
    points = {r.get("point") for r in readings}
    new_points = {"in_bed", "pressure", "occupied", "fill_distance", "residual_current", "lamp_on"}
    assert new_points <= points, points
