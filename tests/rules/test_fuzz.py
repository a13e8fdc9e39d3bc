"""Bad input of every kind: random config tables give pydantic errors only; random readings of any
type through every rule kind never raise."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from citynerve.gateway.api import Quality, Reading
from citynerve.gateway.rules import RuleEngine, RulesConfig

from .conftest import T0, dev

KINDS = ["threshold", "rate", "missing", "offline", "boolean", "consumption", "composite", "anomaly", "x"]
KEYS = [
    "id",
    "kind",
    "point",
    "above",
    "below",
    "hysteresis",
    "hold_s",
    "clear_hold_s",
    "window",
    "window_s",
    "bin_s",
    "slot_s",
    "slots",
    "min_per_slot",
    "rollover_at",
    "max_step",
    "mode",
    "of",
    "within_s",
    "method",
    "alpha",
    "z",
    "warmup",
    "direction",
    "cumulative",
    "profile",
    "hours",
    "tz",
    "severity",
    "select",
    "max_change",
    "after_s",
    "active",
    "suppress_during",
    "escalate",
    "bogus",
]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-10, 10**6),
    st.floats(allow_nan=True),
    st.text(max_size=8),
    st.sampled_from([*KINDS, "sliding", "day", "slots", "all", "sequence", "robust", "UTC", "Asia/Shanghai"]),
)
values = st.recursive(
    scalars,
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=6,
)
rule = st.dictionaries(st.sampled_from(KEYS), values, max_size=8).map(
    lambda d: {"kind": d.get("kind", "threshold"), "id": d.get("id", "r"), **d}
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rules=st.lists(rule, max_size=3),
    extra=st.dictionaries(
        st.sampled_from(["packs", "actions", "away", "schedules", "contacts", "x"]), values, max_size=2
    ),
)
def test_random_tables_give_validation_errors_or_a_config(
    rules: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    try:
        cfg = RulesConfig.model_validate({"rules": rules, **extra})
    except ValidationError:
        return
    RuleEngine(cfg, [dev(points=("value", "p"))])  # whatever validated can be built


ANY_VALUE = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.sampled_from(["alarm", "0", "on", "closed"]),
)

ALL_KINDS = [
    {
        "id": "th",
        "kind": "threshold",
        "point": "value",
        "above": 10,
        "below": -10,
        "hysteresis": 1,
        "hold_s": 1,
    },
    {"id": "rate", "kind": "rate", "point": "value", "max_change": 5, "window_s": 10},
    {"id": "miss", "kind": "missing", "point": "value", "after_s": 30},
    {"id": "any", "kind": "missing", "after_s": 30},
    {"id": "bool", "kind": "boolean", "point": "value"},
    {
        "id": "slide",
        "kind": "consumption",
        "point": "value",
        "window": "sliding",
        "window_s": 3600,
        "bin_s": 300,
        "below": 0.01,
        "rollover_at": 1000,
        "max_step": 50,
    },
    {"id": "day", "kind": "consumption", "point": "value", "window": "day", "above": 2},
    {"id": "slots", "kind": "consumption", "point": "value", "window": "slots", "slots": 4, "slot_s": 60},
    {"id": "ewma", "kind": "anomaly", "point": "value", "method": "ewma", "warmup": 3},
    {
        "id": "prof",
        "kind": "anomaly",
        "point": "value",
        "cumulative": True,
        "profile": True,
        "slot_s": 3600,
        "warmup": 2,
        "hours": [22, 6],
    },
    {"id": "comp", "kind": "composite", "mode": "sequence", "of": ["th", "bool"], "within_s": 100},
]


@settings(max_examples=200, deadline=None)
@given(
    series=st.lists(
        st.tuples(st.floats(-5, 400), ANY_VALUE, st.sampled_from(list(Quality))), min_size=1, max_size=60
    )
)
def test_any_readings_through_every_rule_kind_never_raise(series: list[tuple[float, Any, Quality]]) -> None:
    e = RuleEngine(RulesConfig.model_validate({"rules": ALL_KINDS}), [dev()])
    t = T0
    for dt, v, q in series:
        t += dt  # also backwards: clocks jump
        for ev in e.evaluate([Reading("d1", "value", v, "", t, q)]) + e.tick(t):
            assert ev.value is None or not (isinstance(ev.value, float) and math.isnan(ev.value))
    e.restore(e.snapshot())
