"""The night rule's persistence (`base_s`) and peer quantile (`peers_quantile`), issue 18: something
left on is present in every half-hour for hours; a traveller's water heater at midnight fills one or
two; a dehumidifier running all night is what it is made for and stays under the floor."""

from __future__ import annotations

import random

import pytest

from citynerve.gateway.api import EventState, Reading
from citynerve.gateway.rules import RuleEngine, RulesConfig
from citynerve.gateway.rules.conditions import AnomalyCondition
from citynerve.gateway.rules.config import AnomalyRule
from citynerve.gateway.rules.peers import PeerSlots, quantile
from citynerve.gateway.rules.stats import SlotMin
from citynerve.hil.eval import Scenario
from citynerve.hil.eval import electricity_situations as model

from .conftest import T0, dev

MIDNIGHT = T0 + 6400  # 2026-09-22 00:00 +08:00
OTHER_RULES = (
    "over_current",
    "voltage_band",
    *(f"{r}_{p}" for r in ("over_current", "voltage_band") for p in "abc"),
)


def test_slot_min_is_the_lowest_of_the_last_slots_in_a_row() -> None:
    m = SlotMin(3)
    assert m.push(10, 1.0) is None  # fewer than three slots known: unknown
    assert m.push(11, 0.4) is None
    assert m.push(12, 0.9) == 0.4
    assert m.push(13, 0.8) == 0.4
    assert m.push(14, 0.7) == 0.7  # slot 11 has left the span
    assert m.push(16, 2.0) is None  # slot 15 missing: the run starts again
    snap = m.snapshot()
    again = SlotMin(3)
    again.restore(snap)
    assert again.push(17, 1.5) is None
    assert again.push(18, 1.2) == 1.2


def test_peers_quantile_interpolates_between_the_others() -> None:
    assert quantile([0.1, 0.3, 0.2], 0.5) == pytest.approx(0.2)
    assert quantile([0.1, 0.2, 0.3, 0.4], 0.75) == pytest.approx(0.325)
    assert quantile([0.5], 0.75) == 0.5
    g = PeerSlots(0.75)
    for member, use in (("a", 1.0), ("b", 0.1), ("c", 0.2), ("d", 0.4)):
        g.put(5, member, use)
    assert g.excess(5, "a") == pytest.approx(1.0 - 0.3)  # others 0.1, 0.2, 0.4: q 0.75 = 0.3


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"base_s": 2000}, "base_s.*multiple of `slot_s`"),
        ({"cumulative": False, "profile": False, "base_s": 3600}, "base_s.*cumulative"),
        ({"peers_quantile": 0.75}, "peers_quantile.*needs `peers`"),
        ({"peers": "feeder", "peers_quantile": 1.5}, "peers_quantile"),
    ],
)
def test_bad_settings_are_named(extra: dict[str, object], match: str) -> None:
    rule = {"id": "night", "kind": "anomaly", "point": "value", "cumulative": True, "profile": True}
    with pytest.raises(ValueError, match=match):
        RulesConfig.model_validate({"rules": [{**rule, **extra}]})


def test_the_persistence_survives_a_restart() -> None:
    rule = AnomalyRule(id="n", kind="anomaly", point="v", cumulative=True, base_s=5400, warmup=1)
    a = AnomalyCondition(rule)
    for k in range(4):  # four 30-min slots of 0.5 kWh, read every 10 min
        for j in range(3):
            a.on_reading(100 + (k * 3 + j) * 0.5 / 3, MIDNIGHT + (k * 3 + j) * 600)
    b = AnomalyCondition(rule)
    b.restore(a.snapshot())
    assert b.base is not None and a.base is not None
    assert b.base.snapshot() == a.base.snapshot()
    assert len(b.base.values) == 3


def _raised(params: dict[str, float | int]) -> set[tuple[str, int]]:
    """The shipped pack's night rule on four meters of one feeder, 12 days read every 10 min.
    Night 9: m1 is home from travel at 00:10 (water heater 2.8 kW for 45 min, a kettle). Night 10:
    m2 runs a dehumidifier all night (0.3 kW, normal use). Night 11: m3 has a heater left on
    (1.5 kW, 01:00-05:00). Returns (meter, night) of every raised night alarm."""
    meters = [dev(f"m{i}", points=("energy_import",), tags=("feeder:F1",)) for i in range(4)]
    cfg = RulesConfig.model_validate(
        {"packs": [{"name": "electricity", "disable": list(OTHER_RULES), "params": params}]}
    )
    e = RuleEngine(cfg, meters)
    rng = random.Random(11)
    total = [500.0] * 4
    out: set[tuple[str, int]] = set()
    for k in range(12 * 144):
        ts = MIDNIGHT + k * 600
        night, h = divmod(k, 144)  # h: 10-min step of the local day
        for i, m in enumerate(meters):
            kw = 0.08 + 0.04 * rng.random() + (0.9 if 42 <= h < 132 else 0.0)
            if night == 9 and i == 1 and 1 <= h < 6:
                kw += 2.8 + (1.8 if h == 1 else 0.0)
            if night == 10 and i == 2 and (h < 42 or h >= 132):
                kw += 0.3
            if night == 11 and i == 3 and 6 <= h < 30:
                kw += 1.5
            total[i] += kw / 6
            evs = e.evaluate([Reading(m.id, "energy_import", round(total[i], 2), "kWh", ts)]) + e.tick(ts)
            out |= {(ev.device_id, night) for ev in evs if ev.state is EventState.RAISED}
    return out


def test_the_shipped_night_rule_raises_on_a_heater_left_on_only() -> None:
    assert _raised({}) == {("m3", 11)}


def test_without_persistence_the_travellers_return_raises() -> None:
    # Each half-hour judged alone (base_s 0) with the pack's 30 min hold: the water heater's two
    # half-hours raise, a false alarm the persistence removes.
    assert _raised({"night_base_s": 0}) == {("m1", 9), ("m3", 11)}


def test_a_dehumidifier_or_blanket_all_night_is_drawn_but_labelled_normal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:

    def build(seed: int) -> Scenario:
        return model.build(seed=seed, households=3, days=10)

    labelled = {s: build(s) for s in range(1, 5)}
    monkeypatch.setattr(model, "NORMAL_AT_NIGHT", frozenset())
    as_incidents = {s: build(s) for s in range(1, 5)}
    normal = {"dehumidifier left on", "electric blanket left on high"}
    seeds = [s for s, scn in as_incidents.items() if any(ep.what in normal for ep in scn.episodes)]
    assert seeds, "no seed draws a dehumidifier or a blanket"
    for s in seeds:
        assert labelled[s].batches == as_incidents[s].batches  # the same load, readings and meters
        assert labelled[s].episodes == [ep for ep in as_incidents[s].episodes if ep.what not in normal]
