"""Statistical detection: warm-up, streaming scores, daily profile, constant memory, outliers
do not poison the estimate."""

from __future__ import annotations

import json
import random

from citynerve.gateway.rules.stats import Estimator

from .conftest import T0, engine, feed, states


def test_estimator_learns_location_and_scale() -> None:
    rng = random.Random(1)
    for robust in (False, True):
        est = Estimator(alpha=0.02, min_scale=0.0, robust=robust)
        for _ in range(3000):
            est.learn(rng.gauss(50.0, 2.0))
        assert abs(est.loc - 50.0) < 0.5
        assert 1.5 < est.scale() < 2.6
        assert est.score(70.0) > 7


def test_outliers_are_winsorized() -> None:
    est = Estimator(alpha=0.05, min_scale=0.1, robust=True)
    for _ in range(200):
        est.learn(10.0 + (0.5 if _ % 2 else -0.5))
    before = est.loc
    for _ in range(5):
        est.learn(1000.0)
    assert est.loc - before < 1.0  # five wild values move the estimate by a bounded step


def test_anomaly_rule_warms_up_then_flags_and_clears() -> None:
    rng = random.Random(2)
    rule = {"id": "odd", "kind": "anomaly", "point": "value", "method": "ewma", "z": 6, "warmup": 30}
    e = engine([rule])
    series = [(T0 + i * 60, rng.gauss(20.0, 0.5)) for i in range(200)]
    assert feed(e, [*series[:20], (T0 + 20 * 60 + 1, 80.0)]) == []  # during warm-up: nothing
    assert feed(e, series[21:]) == []
    ev = feed(e, [(T0 + 300 * 60, 40.0), (T0 + 301 * 60, 20.1)])
    assert states(ev) == [("odd", "raised"), ("odd", "cleared")]


def test_daily_profile_flags_night_use_far_above_the_household_pattern() -> None:
    rule = {
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
    e = engine([rule])
    rng = random.Random(3)
    # Midnight (local) before T0: T0 is 22:13, so this starts on a day boundary.
    day0 = T0 - (22 * 3600 + 13 * 60 + 20)
    total, out = 1000.0, []
    for d in range(12):
        for m in range(1440):
            hour = m / 60
            kw = 0.15 + (2.0 if 18 <= hour < 21 else 0.0) + rng.uniform(0, 0.05)
            if d == 10 and 2 <= hour < 4:
                kw += 2.0  # a heater left on, after the warm-up
            total += kw / 60
            out += feed(e, [(day0 + d * 86400 + m * 60, round(total, 2))], tick=False)
    raised = [ev for ev in out if ev.state.value == "raised"]
    assert len(raised) == 1
    assert day0 + 10 * 86400 + 2 * 3600 < raised[0].ts <= day0 + 10 * 86400 + 3 * 3600
    # The daily evening peak (every day, outside the night hours) never alarms, and the profile
    # keeps the same size whatever the history: 48 bins.
    snap = e.snapshot()["instances"]["night|d1"][1]
    assert len(snap[0]) == 48
    assert len(json.dumps(snap)) < 4000
