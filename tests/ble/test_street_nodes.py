"""The street's simulated BTHome nodes (issue 18) on the bumble virtual radio, decoded by the real
BTHome driver with the points of their shipped profiles: what a node sends is what the gateway reads."""

from __future__ import annotations

from typing import Any

import pytest
from ble_support import MemoryState, device_of, normalized

from citynerve.hil.sim.ble import VirtualRadio
from citynerve.hil.sim.ble.street import (
    BedFootNode,
    CurtainWallNode,
    EntranceNode,
    FireLaneNode,
    FlatDoorNode,
    HydrantNode,
    LitterBinNode,
    MotionNode,
)


@pytest.mark.parametrize(
    "cls",
    [
        BedFootNode,
        HydrantNode,
        FireLaneNode,
        LitterBinNode,
        CurtainWallNode,
        EntranceNode,
        FlatDoorNode,
        MotionNode,
    ],
)
async def test_node_values_reach_the_driver(radio: VirtualRadio, listening: Any, cls: type) -> None:
    node = cls(radio, "A4:C1:38:00:10:01", seed=3)
    device = device_of(node, "n1")
    _, sink = await listening([device], MemoryState())
    sent = await node.report_at(100.0)
    await sink.wait_for(lambda: len(sink.batches) == 1)
    got = {s.point: normalized(node, s.point, s.value) for s in sink.batches[0].samples}
    # a point sent only while true (the node's sensor fault) reads false in an advert without it
    off = {name for name, p in device.points.items() if p.absent_means_off} - set(sent)
    assert {got.pop(name) for name in off} <= {False}
    assert set(got) == set(sent)
    for point, value in sent.items():
        assert got[point] == pytest.approx(value, abs=1e-3), point
    await node.close()


async def test_faults_show_in_what_the_nodes_send(radio: VirtualRadio) -> None:
    hydrant = HydrantNode(radio, "A4:C1:38:00:10:02", seed=1)
    normal = hydrant.values(0.0)["pressure"]
    assert 0.25 < float(normal) < 0.40
    hydrant.open_outlet()
    assert float(hydrant.values(0.0)["pressure"]) < float(normal) - 0.1
    hydrant.knock(45.0, broken=True)
    v = hydrant.values(0.0)
    assert v["pressure"] == 0.01 and float(v["tilt"]) >= 45.0
    bin_ = LitterBinNode(radio, "A4:C1:38:00:10:03", seed=2)
    bin_.ignite(0.0)
    assert float(bin_.values(600.0)["temperature"]) > 60.0
    door = EntranceNode(radio, "A4:C1:38:00:10:04")
    door.open_door()
    assert door.values(0.0)["forced_open"] is True
    door.close_door()
    door.release_lock()
    door.open_door()
    assert door.values(0.0)["forced_open"] is False
    wall = CurtainWallNode(radio, "A4:C1:38:00:10:05", seed=4)
    wall.wind(15.0)
    calm = max(float(wall.values(0.0)["vibration_peak"]) for _ in range(20))
    wall.loosen()
    assert min(float(wall.values(0.0)["vibration_peak"]) for _ in range(20)) > calm / 2
