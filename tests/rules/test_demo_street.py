"""`citynerve demo --scenario street` (issue 18): the real CLI runs the gateway against the
simulated street; the street's new alarms and the clears of those it resolves reach the platform
(its database is read afterwards)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from citynerve.gateway.config import load_config
from citynerve.gateway.rules.packs import PACKS_DIR, load_pack
from citynerve.hil.demo import _event_kinds
from citynerve.hil.demo_street import DALI_LAMPS, GATEWAY_ID, NODES, DemoStreet
from citynerve.hil.platform.store import PlatformStore

REPO = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "citynerve.gateway.cli")


async def test_street_config_shortens_holds_only_in_the_demo(tmp_path: Path) -> None:
    """The demo's config shortens holds and two clear holds through the packs' params; every rule
    of the street's packs is there as shipped otherwise, and the shipped packs keep their values."""
    async with DemoStreet() as street:
        path = tmp_path / "gateway.toml"
        path.write_text(street.config_toml(broker="mqtt://127.0.0.1:1883"), encoding="utf-8")
    cfg = load_config(path)
    rules = {r.id: r for r in cfg.rules.all_rules()}
    # The DALI lamps: one unit id, each lamp's registers at 100 x its short address.
    devices = {d.id: d for d in cfg.devices}
    for dev_id, _, sa in DALI_LAMPS:
        assert devices[dev_id].points["lamp_fault"].address == 100 * sa + 5  # type: ignore[attr-defined]
    assert rules["fire-hydrant.outlet_open"].clear_hold_s == 3
    assert rules["fire-lane.blocked"].clear_hold_s == 4
    assert rules["curtain-wall.vibration"].hold_s == 4 and rules["curtain-wall.tilted"].hold_s == 4
    for dev_id, _, _, _, pack, params in NODES:
        shipped = load_pack(PACKS_DIR / f"{pack}.toml")
        for key in params:
            assert key in shipped.params, (pack, key)  # a pack parameter, not a new rule
        for raw in shipped.rules:
            rule = rules[f"{pack}.{raw['id']}"]
            assert rule.kind == raw["kind"] and rule.event == raw["event"]
            assert rule.select.devices == (dev_id,)
    shipped_rules = {r["id"]: r for r in load_pack(PACKS_DIR / "fire-lane.toml").rules}
    assert shipped_rules["blocked"]["clear_hold_s"] == "$blocked_clear_hold_s"
    assert load_pack(PACKS_DIR / "fire-lane.toml").params["blocked_clear_hold_s"] == 60


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
        events = store.events(GATEWAY_ID)
        readings = store.readings(GATEWAY_ID)
    finally:
        store.close()
    kinds, cleared = _event_kinds(events), _event_kinds(events, "cleared")
    # The street's new alarms from six different packs arrived: the curtain wall panel's rattle in
    # the typhoon's gusts and its tilt when a fixing breaks among them.
    street = {"fire_lane_blocked", "hydrant_opened", "residual_current", "door_forced", "not_back_in_bed"}
    assert street | {"panel_vibration", "panel_tilt", "lamp_driver_overheat"} <= kinds, kinds
    # The demo's shortened clear holds: the closed hydrant and the freed lane are cleared.
    assert {"hydrant_opened", "fire_lane_blocked"} <= cleared, cleared
    points = {r.get("point") for r in readings}
    new_points = {"in_bed", "pressure", "occupied", "fill_distance", "residual_current", "lamp_on"}
    assert new_points <= points, points
    dali = {
        (r.get("device_id"), r["point"]) for r in readings if r.get("device_id") in ("lamp-08", "lamp-09")
    }
    assert {("lamp-08", "lamp_on"), ("lamp-08", "dimming"), ("lamp-09", "thermal_shutdown")} <= dali, dali
    panel = {r["point"] for r in readings if r.get("device_id") == "cw-01"}
    assert {"tilt", "vibration_peak", "vibration"} <= panel, panel
    assert max(r["value"] for r in readings if (r.get("device_id"), r["point"]) == ("cw-01", "tilt")) > 1.0
