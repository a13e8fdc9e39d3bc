"""The night rule relative to the feeder (issue 18): weather shared by every household of a feeder (a
heat spell's all-night air conditioning) is no incident; one household's heater left on is."""

from __future__ import annotations

import random
from typing import Any

import pytest

from citynerve.gateway.api import EventState, Reading
from citynerve.gateway.rules.peers import PeerSlots

from .conftest import T0, dev, engine

MIDNIGHT = T0 + 6400  # 2026-09-22 00:00 +08:00
NIGHT = {
    "id": "night",
    "kind": "anomaly",
    "point": "value",
    "cumulative": True,
    "profile": True,
    "slot_s": 1800,
    "hours": [0, 6],
    "z": 6,
    "warmup": 7,
    "min_value": 0.3,
    "min_scale": 0.03,
    "alpha": 0.1,
}


def _raised(peers: str) -> list[tuple[str, int]]:
    """Four meters, 12 days read every 10 min: a heat spell on night 10 (all four +1.2 kW all night),
    a heater left on at meter m3 on night 11 (+1.5 kW, 01:00-05:00). Raised (meter, night)."""
    rule: dict[str, Any] = {**NIGHT, "peers": peers} if peers else NIGHT
    meters = [dev(f"m{i}", tags=("feeder:F1",)) for i in range(4)]
    e = engine([rule], meters)
    rng = random.Random(7)
    total = [0.0] * 4
    out = []
    for k in range(12 * 144):
        ts = MIDNIGHT + k * 600
        night, h = divmod(k, 144)
        for i, m in enumerate(meters):
            kw = 0.1 + 0.05 * rng.random() + (0.8 if 42 <= h < 132 else 0.0)  # daytime use
            if night == 10 and h < 36:
                kw += 1.2
            if night == 11 and i == 3 and 6 <= h < 30:
                kw += 1.5
            total[i] += kw / 6
            evs = e.evaluate([Reading(m.id, "value", round(total[i], 3), "kWh", ts)]) + e.tick(ts)
            out += [(ev.device_id, night) for ev in evs if ev.state is EventState.RAISED]
    return out


def test_peer_slots_score_the_excess_over_the_others_median() -> None:
    g = PeerSlots()
    g.put(5, "a", 1.0)
    g.put(5, "b", 0.2)
    assert g.excess(5, "a") is None  # one other member: not judged
    g.put(5, "c", 0.4)
    assert g.excess(5, "a") == pytest.approx(0.7)
    g.put(9, "a", 0.1)
    assert 5 not in g.uses  # only the last few slots are kept


def test_peer_slots_move_with_a_clock_step() -> None:
    """A backward step of the wall clock by 3 slots: the members' slots move with it (their
    AnomalyCondition.shift), so the group's slots do too: an old slot is not taken for a new one."""
    g = PeerSlots(slot_s=1800.0)
    for m, use in (("a", 1.0), ("b", 0.2), ("c", 0.4)):
        g.put(9, m, use)
    g.shift(-3 * 1800.0)
    assert sorted(g.uses) == [6]
    g.put(9, "a", 0.3)  # three slots on, after the step
    assert g.excess(9, "a") is None  # b and c have not closed slot 9 yet


def test_a_shared_heat_spell_is_no_incident_a_heater_left_on_is() -> None:
    # Against its own past only, every meter raises on the heat spell's night.
    assert sorted({d for d, n in _raised("") if n == 10}) == ["m0", "m1", "m2", "m3"]
    # Against the feeder, only the heater.
    assert sorted(set(_raised("feeder"))) == [("m3", 11)]


def test_peers_need_a_meter() -> None:
    with pytest.raises(ValueError, match="cumulative"):
        engine([{**NIGHT, "cumulative": False, "profile": False, "peers": "feeder"}])
