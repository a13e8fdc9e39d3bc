"""Every kind of alarm in every view, and the bulkheads, against real processes (the fault scenarios
of hil/faults/alarms.py and bulkheads.py, also run by hil/bench/faults.py); and a rule bug faulting
one device."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from citynerve.gateway.api import Event, Reading, Sample, SampleBatch
from citynerve.gateway.pipeline import Pipeline, ReadingSink, RulesHook
from citynerve.hil.faults import alarms, bulkheads
from tests.pipeline.test_pipeline import device


async def test_every_kind_of_alarm_in_every_view_and_across_a_restart(tmp_path: Path) -> None:
    detail = await alarms.every_kind_in_every_view(tmp_path)
    assert "4 kinds in 5 views" in detail


async def test_a_device_whose_decode_or_plan_raises_is_faulted_and_recovers(tmp_path: Path) -> None:
    await bulkheads.device_decode_raises(tmp_path)


async def test_a_crashed_bus_owner_is_restarted(tmp_path: Path) -> None:
    await bulkheads.bus_owner_crash(tmp_path)


async def test_rules_fire_for_a_device_on_a_reloaded_bus(tmp_path: Path) -> None:
    await bulkheads.reload_keeps_rules(tmp_path)


class Sink(ReadingSink):
    def __init__(self) -> None:
        self.events: list[Event] = []

    def put_readings(self, readings: Sequence[Reading]) -> None:
        pass

    def put_event(self, event: Event) -> None:
        self.events.append(event)


class BuggyRules(RulesHook):
    """A rules hook with a bug for one device (the real engine has no known bug to trigger)."""

    def __init__(self) -> None:
        self.broken = {"bad"}

    def evaluate(self, readings: Sequence[Reading]) -> Sequence[Event]:
        if readings[0].device_id in self.broken:
            raise ZeroDivisionError("rule bug")
        return ()

    def tick(self, now: float) -> Sequence[Event]:
        return ()


def test_a_rule_bug_faults_its_device_only_until_it_evaluates_again() -> None:
    sink = Sink()
    rules = BuggyRules()
    pipeline = Pipeline({"good": device("good"), "bad": device("bad")}, sink, rules)
    for ts in (1.0, 2.0):
        for dev in ("good", "bad"):
            pipeline.submit(SampleBatch(dev, ts, (Sample("flow", 100 + ts),)))
    faults = [(e.device_id, e.kind, str(e.state)) for e in sink.events]
    assert faults == [("bad", "device_fault", "raised")]  # once, not per batch
    assert [a.device_id for a in pipeline.alarms.active()] == ["bad"]
    assert "rule bug" in (pipeline.rule_fault("bad") or "") and pipeline.rule_fault("good") is None
    assert pipeline.counters().rule_errors == 2
    rules.broken = set()
    pipeline.submit(SampleBatch("bad", 3.0, (Sample("flow", 5.0),)))
    assert [(e.device_id, str(e.state)) for e in sink.events[1:]] == [("bad", "cleared")]
    assert len(pipeline.alarms) == 0 and pipeline.rule_fault("bad") is None
