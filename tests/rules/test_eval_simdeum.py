"""elderly-water on SIMDEUM's households (issue 18): the conversion from SIMDEUM's patterns to the meter
model's per-minute litres, the scenario built around a house model, and the row left out with a reason
when the optional extra `simdeum` is not installed. None of these needs the extra (CI does not have it):
the house model here is hand-made; docs/benchmarks.md records the real runs."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime

import pytest

from citynerve.hil.bench import rules_eval
from citynerve.hil.eval import simdeum_house, water_simdeum, water_situations
from citynerve.hil.eval.simdeum_house import SimulatedDay, SimulatedHouse


def test_flows_land_in_their_minutes_and_keep_their_litres() -> None:
    flow = [0.0] * 4
    # From minute 1: a flush at 0.042 L/s from second 50 for 150 s (6.3 L), a tap at 0.1 L/s in second 130.
    flush = [(s, 0.042) for s in range(50, 200)]
    water_simdeum.add_flows(flow, 1, [*flush, (130, 0.1)])
    assert flow[0] == 0.0
    assert flow[1] == pytest.approx(10 * 0.042)  # seconds 50-59
    assert flow[2] == pytest.approx(60 * 0.042)  # seconds 60-119
    assert flow[3] == pytest.approx(60 * 0.042 + 0.1)  # seconds 120-179, and the tap
    assert sum(flow) == pytest.approx(130 * 0.042 + 0.1)  # seconds 180-199 fall past the end: dropped
    # SIMDEUM's 86,401st second is the next midnight: the next day's first minute.
    day = [0.0] * 2880
    water_simdeum.add_flows(day, 0, [(86_399, 1.0), (86_400, 2.0)])
    assert day[1439] == 1.0 and day[1440] == 2.0 and sum(day) == 3.0


def _fake_house(seed: Sequence[int], days: Sequence[tuple[datetime, bool]]) -> SimulatedHouse:
    """A resident who flushes at 07:00 and showers at 19:00 (40 L over 8 min) every day."""
    flows = [(7 * 3600 + s, 0.05) for s in range(120)] + [(19 * 3600 + s, 40 / 480) for s in range(480)]
    day = SimulatedDay(
        flows=flows, by_use={"Wc": 6.0, "Shower": 40.0}, up_min=420, go_min=600, home_min=900, sleep_min=1380
    )
    return SimulatedHouse(gender="female", appliances=("Wc", "Shower"), days=[day] * len(days))


def test_the_households_incidents_and_meter_are_the_independent_rows() -> None:
    calls: list[tuple[tuple[int, ...], list[bool]]] = []

    def house(seed: Sequence[int], days: Sequence[tuple[datetime, bool]]) -> SimulatedHouse:
        calls.append((tuple(seed), [w for _, w in days]))
        return _fake_house(seed, days)

    scn = water_simdeum.build(seed=5, households=4, days=16, house_model=house)
    ours = water_situations.build(seed=5, households=4, days=16)
    # Same incidents (and outages) as our own model's households: only the everyday life differs.
    assert scn.episodes == ours.episodes
    assert [b.ts for b in scn.batches] == [b.ts for b in ours.batches]
    assert scn.batches != ours.batches
    assert scn == water_simdeum.build(seed=5, households=4, days=16, house_model=_fake_house)
    # One house per household, seeded (scenario seed, household); 2026-09-14 is a Monday.
    assert [c[0] for c in calls] == [(5, h) for h in range(4)]
    assert calls[0][1][:7] == [True] * 5 + [False] * 2
    assert scn.params["litres_per_day_median"] == pytest.approx(46.0)
    # Household 3 has no incident: its meter advances 46 L a day (reads are whole litres).
    reads = [(b.ts, b.samples[0].value) for b in scn.batches if b.device_id == "water-03"]
    first, last = reads[0], reads[-1]
    assert isinstance(first[1], float) and isinstance(last[1], float)
    days = (last[0] - first[0]) / 86400
    assert (last[1] - first[1]) * 1000 / days == pytest.approx(46.0, rel=0.1)


def test_missing_extra_is_a_typed_error_and_the_row_is_left_out(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "pysimdeum", None)  # `import pysimdeum...` raises ImportError
    with pytest.raises(simdeum_house.SimdeumMissing, match=r"\[simdeum\]"):
        water_simdeum.build(households=2, days=16)
    assert rules_eval._simdeum(0.9) == []
    assert "elderly-water/simdeum: not scored" in capsys.readouterr().err
