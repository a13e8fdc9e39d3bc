"""The labelled evaluation: scoring is right, the generator is deterministic, and every shipped pack
meets its floors on the (reduced) scenarios, replayed through the real pipeline."""

from __future__ import annotations

import pytest

from citynerve.gateway.api import Event, EventState, Severity
from citynerve.hil.eval import Episode, Scenario, build_all
from citynerve.hil.eval.harness import score
from citynerve.hil.eval.water import build as water

from .conftest import ReplayCache

R, C = EventState.RAISED, EventState.CLEARED


def ev(kind: str, ts: float, state: EventState = R, dev: str = "d1", rule: str = "p.r") -> Event:
    return Event(dev, kind, state, Severity.MAJOR, ts, rule)


def test_scoring_matches_alarms_to_episodes_and_penalises_flapping() -> None:
    scn = Scenario(
        "p",
        [],
        [],
        [Episode("d1", ("a",), 100.0, 200.0, "x"), Episode("d1", ("a", "b"), 1000.0, 1100.0, "y")],
        before_s=5.0,
        after_s=10.0,
        vibration=[("d1", 500.0, 502.0)],
    )
    events = [
        ev("a", 96.0),  # within the tolerance before the start: detects episode 1
        ev("a", 150.0, C),  # clears are not alarms
        ev("a", 160.0),  # raised again in the same episode: flapping, a false alarm
        ev("a", 501.0),  # no episode, during a passing vehicle
        ev("b", 1108.0),  # detects episode 2 within the latency allowed after its end
        ev("a", 1109.0),  # a second kind on the same episode is fine
        ev("a", 1200.0, rule="other.r"),  # another pack's rule: not scored here
        ev("a", 3000.0, dev="d2"),  # wrong device
    ]
    s = score(scn, events)
    assert (s.alarms, s.false_alarms, s.detected, s.episodes) == (6, 3, 2, 2)
    assert s.precision == pytest.approx(0.5) and s.recall == 1.0 and s.f1 == pytest.approx(2 / 3)
    assert s.false_alarms_vibration == 1
    assert s.median_delay_s == pytest.approx((-4.0 + 108.0) / 2)


def test_generator_is_deterministic_with_its_seed() -> None:
    a, b = water(households=4, days=8), water(households=4, days=8)
    assert a.batches == b.batches and a.episodes == b.episodes
    assert water(seed=7, households=4, days=8).batches != a.batches


@pytest.mark.slow
def test_every_shipped_pack_meets_its_floors_on_labelled_data(eval_replays: ReplayCache) -> None:
    scores = {s.pack: s for s in eval_replays.evaluate(build_all(small=True))}
    assert sorted(scores) == ["elderly-water", "electricity", "manhole", "smoke-fire"]
    for s in scores.values():
        assert s.episodes >= 8, s.pack
        assert s.f1 >= 0.95, (s.pack, s.figures(), s.missed, s.false)
        assert s.false_alarms_vibration == 0
    vib = scores["manhole"]
    assert vib.readings > 100_000  # vehicles were there: thousands of passes were replayed
