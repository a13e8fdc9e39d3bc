"""The household's third signal in the evaluation (hil/eval/household_nodes.py): the flat's door and a
PIR driven by the same lives as the bed-foot sensor and the meter; the `household-door-pir` row is
scored against the `household` row on the same households (docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from citynerve.gateway.api import EventState
from citynerve.hil.eval import household, household_nodes
from citynerve.hil.eval.harness import score

from .conftest import ReplayCache


def test_the_door_and_pir_ride_on_the_same_lives() -> None:
    base = household.build(residents=6, days=12)
    a, b = household_nodes.build(residents=6, days=12), household_nodes.build(residents=6, days=12)
    assert a.batches == b.batches and a.episodes == b.episodes
    # The bed and the meter send exactly what they send in the household row.
    old = {d.id for d in base.devices}
    assert [x for x in a.batches if x.device_id in old] == base.batches
    assert {d.profile for d in a.devices} == {
        "bthome-bed-occupancy",
        "cjt188-water-cold",
        "bthome-door-contact",
        "bthome-motion-pir",
    }
    homes = a.rules.households  # type: ignore[union-attr]
    assert all(h.door.startswith("door-") and h.motion.startswith("pir-") for h in homes)
    # Labels: the household row's incidents, plus the silent PIR node (a maintenance event).
    assert [e for e in a.episodes if not e.device_id.startswith("pir-")] == base.episodes
    assert [e.kinds for e in a.episodes if e.device_id.startswith("pir-")] == [("household_node_silent",)]
    doors = [s.value for x in a.batches if x.device_id.startswith("door-") for s in x.samples]
    assert doors.count(True) > 6 * 12  # errands, visitors, deliveries: the door opens most days


@pytest.mark.slow
def test_the_third_signal_beats_bed_and_water_on_the_same_households(eval_replays: ReplayCache) -> None:
    base, nodes = household.build(residents=10, days=30), household_nodes.build(residents=10, days=30)
    rb = eval_replays.replay(base, base.rules)  # type: ignore[arg-type]
    rn = eval_replays.replay(nodes, nodes.rules)  # type: ignore[arg-type]
    old, new = score(base, rb.events), score(nodes, rn.events)
    assert new.episodes == old.episodes + 1  # the silent PIR node
    assert new.false_alarms < old.false_alarms, (new.figures(), old.figures())
    assert new.f1 > old.f1 >= 0.7 and new.f1 >= 0.9, (new.figures(), old.figures())
    # Every fall and every resident unwell in bed is found; the silent node is maintenance, on the node.
    assert not [e.what for e in new.missed if e.what.startswith(("fell", "unwell", "PIR"))]
    node = [e for e in rn.events if e.kind == "household_node_silent" and e.state is EventState.RAISED]
    assert [e.device_id for e in node] == [f"pir-{household_nodes.SILENT_NODE:02d}"]
