"""The street nodes' advert loss and faults (issue 18), heard by the real BTHome driver on the bumble
virtual radio and judged by the shipped rule packs.

Simulated time: a node reports its state at time t, the test waits (on the condition, not a
delay) until the driver delivered it, and gives the delivered samples to the pack's RuleEngine at
t. Loss, faults and noise are seeded, the link is lossless, so every run gives the same verdict.
"""

from __future__ import annotations

from typing import Any

import pytest
from ble_support import KEY, MemoryState, RecordingSink, device_of, normalized

from citynerve.drivers.bthome import BTHomeDevice
from citynerve.gateway.api import Event, EventState, Reading
from citynerve.gateway.rules import RuleEngine, RulesConfig
from citynerve.hil.eval.bed import REPEATS
from citynerve.hil.sim.ble import VirtualRadio
from citynerve.hil.sim.ble.street import (
    BLIP_S,
    BedFootNode,
    EntranceNode,
    FireLaneNode,
    HydrantNode,
    ProfileNode,
)

WITHIN = 30.0  # generous: a loaded box is slow, a wait on a condition costs only what it takes


class Harness:
    """One node, the driver hearing it, and one pack's engine on the node's simulated time."""

    def __init__(self, node: ProfileNode, device: BTHomeDevice, sink: RecordingSink, pack: str = "") -> None:
        self.node, self.device, self.sink = node, device, sink
        self.engine: RuleEngine | None = None
        if pack:
            cfg = RulesConfig.model_validate({"packs": [{"name": pack, "select": {"devices": [device.id]}}]})
            self.engine = RuleEngine(cfg, [device])
        self.events: list[Event] = []
        self.heard: list[dict[str, Any]] = []  # the delivered samples, per batch
        self.lost_at: list[float] = []  # the times of the reports the link lost

    async def report(self, t: float) -> None:
        """The node reports at `t`; what the driver delivers goes to the rules at `t`."""
        before = len(self.sink.batches)
        await self.node.report_at(t)
        if self.node.last_lost:
            self.lost_at.append(t)
        else:
            await self.sink.wait_for(lambda: len(self.sink.batches) > before, within=WITHIN)
        for batch in self.sink.batches[before:]:
            values = {s.point: normalized(self.node, s.point, s.value) for s in batch.samples}
            self.heard.append(values)
            if self.engine is not None:
                readings = [Reading(self.device.id, p, v, "", t) for p, v in values.items()]
                self.events += self.engine.evaluate(readings)
        self.tick(t)

    def tick(self, t: float) -> None:
        if self.engine is not None:
            self.events += self.engine.tick(t)

    def raised(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind and e.state is EventState.RAISED]

    def cleared(self, kind: str) -> list[Event]:
        return [e for e in self.events if e.kind == kind and e.state is EventState.CLEARED]


async def _harness(listening: Any, node: ProfileNode, pack: str = "", key: bytes | None = None) -> Harness:
    device = device_of(node, "n1", key=key)
    _, sink = await listening([device], MemoryState())
    return Harness(node, device, sink, pack)


async def test_loss_draws_a_heartbeat_once_and_a_change_per_advert(radio: VirtualRadio) -> None:
    node = BedFootNode(radio, "A4:C1:38:00:20:01", seed=5, loss=0.3)
    n = 20_000
    beats = sum(node.advert_lost(change=False) for _ in range(n)) / n
    changes = sum(node.advert_lost(change=True) for _ in range(n)) / n
    assert beats == pytest.approx(0.3, abs=0.02)
    assert changes == pytest.approx(0.3**REPEATS, abs=0.006)  # every advert of the burst lost
    quiet = BedFootNode(radio, "A4:C1:38:00:20:02", seed=5)  # the default: a perfect link
    assert not any(quiet.advert_lost(change=False) for _ in range(1000))


async def test_lossy_link_loses_heartbeats_the_change_arrives(radio: VirtualRadio, listening: Any) -> None:
    node = BedFootNode(radio, "A4:C1:38:00:20:03", key=KEY, seed=11, loss=0.3)
    h = await _harness(listening, node, key=KEY)
    for k in range(10):  # boot, then a heartbeat every 600 s
        await h.report(600.0 * k)
    node.in_bed = False  # out of bed: sent at once, as a burst
    await h.report(6030.0)
    for k in range(11, 15):
        await h.report(600.0 * k)
    # Seed 11: 5 of the 13 heartbeats lost; both changes (the boot, out of bed) got through.
    assert len(h.lost_at) == node.reports_lost == 5 and node.reports_sent == 10
    assert 0.0 not in h.lost_at and 6030.0 not in h.lost_at
    assert len(h.heard) == node.reports_sent  # the gateway heard exactly what the link let through
    i = [v["in_bed"] for v in h.heard].index(False)  # the change arrived
    assert all(v["in_bed"] is False for v in h.heard[i:])
    assert all(v["in_bed"] is True for v in h.heard[:i])
    await node.close()


async def test_a_reset_node_is_silent_then_accepted_again(radio: VirtualRadio, listening: Any) -> None:
    node = BedFootNode(radio, "A4:C1:38:00:20:04", key=KEY, seed=3)
    h = await _harness(listening, node, key=KEY)  # encrypted: the replay guard checks the counter
    await h.report(0.0)
    node.reset(10.0)  # down for device_fw's 10 min
    await h.report(300.0)
    assert node.last_lost and len(h.heard) == 1
    await h.report(620.0)  # booted: the counter moved past its block, the gateway takes it
    assert len(h.heard) == 2
    await node.close()


async def test_bed_strip_drift_reads_an_empty_bed(radio: VirtualRadio) -> None:
    node = BedFootNode(radio, "A4:C1:38:00:20:05", seed=3)
    assert node.values(0.0)["in_bed"] is True
    node.drift(0.3, t=0.0)  # 2.0 V loaded: below the firmware's 0.8 V after 4 h
    assert [node.values(3600.0 * h)["in_bed"] for h in (1, 3, 4.1, 6)] == [True, True, False, False]
    assert node.in_bed  # the resident never left


@pytest.mark.parametrize(
    ("cls", "pack", "kind"),
    [(EntranceNode, "entrance", "tamper"), (HydrantNode, "fire-hydrant", "hydrant_tamper")],
)
async def test_tamper_reaches_the_gateway_and_the_pack_raises(
    radio: VirtualRadio, listening: Any, cls: type[ProfileNode], pack: str, kind: str
) -> None:
    node = cls(radio, "A4:C1:38:00:20:06", seed=1)
    assert isinstance(node, EntranceNode | HydrantNode)
    h = await _harness(listening, node, pack)
    await h.report(0.0)
    assert h.heard[-1]["tamper"] is False and not h.raised(kind)
    node.tamper()  # the housing is opened
    await h.report(60.0)
    assert h.heard[-1]["tamper"] is True
    (ev,) = h.raised(kind)
    assert ev.rule == f"{pack}.tamper" and ev.device_id == "n1"
    node.tamper(False)
    await h.report(120.0)
    h.tick(135.0)  # past the rule's 10 s clear hold
    assert len(h.cleared(kind)) == 1
    await node.close()


async def test_fire_lane_blip_shorter_than_the_hold_raises_nothing(
    radio: VirtualRadio, listening: Any
) -> None:
    node = FireLaneNode(radio, "A4:C1:38:00:20:07", seed=2)
    h = await _harness(listening, node, "fire-lane")
    await h.report(0.0)
    node.blip(100.0, 12.0)  # a bicycle's metal over the detector
    await h.report(100.0)
    assert h.heard[-1]["occupied"] is True and 300 <= h.heard[-1]["distance"] <= 900
    await h.report(112.0)
    assert h.heard[-1]["occupied"] is False
    for t in range(120, 1300, 10):
        if t % 600 == 0:
            await h.report(float(t))  # heartbeats
        h.tick(float(t))
    assert not h.raised("fire_lane_blocked")
    # The same harness raises on a van that stays: the pack's 600 s hold, not the harness, decides.
    node.park()
    await h.report(1300.0)
    for t in range(1310, 2000, 10):
        if t % 600 == 0:
            await h.report(float(t))
        h.tick(float(t))
    assert len(h.raised("fire_lane_blocked")) == 1
    await node.close()


async def test_random_false_detections_are_seeded_and_short(radio: VirtualRadio) -> None:
    macs = iter(range(0x10, 0x20))

    def blips(seed: int) -> list[tuple[float, float]]:
        node = FireLaneNode(radio, f"A4:C1:38:00:21:{next(macs):02X}", seed=seed, false_per_h=0.5)
        for t in range(0, 14 * 86400, 60):
            node.values(float(t))
        a, _ = node.blips[-1]
        assert node.values(a + 1.0)["occupied"] is True and node.occupied is False
        return node.blips

    first = blips(1)
    assert first == blips(1)  # the same seed, the same blips
    assert first != blips(2)
    assert 120 <= len(first) <= 220  # 0.5 an hour over two weeks: 168 expected
    assert all(BLIP_S[0] <= b - a <= BLIP_S[1] for a, b in first)
    quiet = FireLaneNode(radio, "A4:C1:38:00:21:F0", seed=1)  # the default: none
    assert not any(quiet.values(float(t))["occupied"] for t in range(0, 86400, 60))
