"""No flapping floods: noisy input around a threshold gives alternating raise/clear pairs, each
raise preceded by the condition held for the hold time (hypothesis). Inputs that flap past the hold
times: the flap damper, tests/rules/test_flap_damper.py."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.gateway.api import EventState

from .conftest import T0, engine, feed

HOLD = 2.0
CLEAR_HOLD = 5.0


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.floats(7.0, 13.0, allow_nan=False), min_size=1, max_size=300),
    gaps=st.lists(st.floats(0.05, 3.0), min_size=300, max_size=300),
)
def test_noise_around_threshold_alternates_and_respects_hold(values: list[float], gaps: list[float]) -> None:
    e = engine(
        [
            {
                "id": "tilt",
                "kind": "threshold",
                "point": "value",
                "above": 10.0,
                "hysteresis": 1.0,
                "hold_s": HOLD,
                "clear_hold_s": CLEAR_HOLD,
            }
        ]
    )
    t = T0
    series = []
    for v, g in zip(values, gaps, strict=False):
        t += g
        series.append((t, v))
    events = feed(e, series)
    events += e.tick(t + 100)
    # The alarm's own events (more than 6 raises and clears a minute also give one `input_flapping`
    # event and hold the rest back: tests/rules/test_flap_damper.py).
    events = [ev for ev in events if ev.kind == "tilt"]
    kinds = [ev.state for ev in events]
    # Alternating, starting with a raise.
    assert all(k is (EventState.RAISED if i % 2 == 0 else EventState.CLEARED) for i, k in enumerate(kinds))
    # Each raise: the plain condition (> 10) held for HOLD by the readings seen; each clear: back at or
    # below 10 - hysteresis for CLEAR_HOLD.
    for ev in events:
        before = [(ts, v) for ts, v in series if ts <= ev.ts]
        holds = (lambda v: v > 10.0) if ev.state is EventState.RAISED else (lambda v: v <= 9.0)
        began = None
        for ts, v in reversed(before):
            if not holds(v):
                break
            began = ts
        assert began is not None
        assert began <= ev.ts - (HOLD if ev.state is EventState.RAISED else CLEAR_HOLD) + 1e-6
    # Pairs are separated by at least the hold times.
    for a, b in itertools.pairwise(events):
        assert b.ts - a.ts >= (CLEAR_HOLD if a.state is EventState.RAISED else HOLD) - 1e-9
