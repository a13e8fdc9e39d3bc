"""Replay a scenario through the real pipeline and rule engine on a simulated clock, and score it."""

from __future__ import annotations

import bisect
import math
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from citynerve.gateway.api import Event, EventState, Reading
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import ACTION_KIND, PackRef, RuleEngine, RulesConfig
from citynerve.gateway.rules.replay import next_tick_after, on_second
from citynerve.hil.eval.model import Episode, Scenario

CONFIRMED = "_confirmed"
"""Event kinds ending so are a pack's second, confirmed stage of an alarm (smoke_confirmed after smoke):
scored apart from the immediate alarms, against the same episodes (`score(..., confirmed=True)`)."""


class CollectingSink:
    """The pipeline's sink: keeps events, counts readings (what the outbox writer would store)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.readings = 0

    def put_readings(self, readings: Sequence[Reading]) -> None:
        self.readings += len(readings)

    def put_event(self, event: Event) -> None:
        self.events.append(event)


@dataclass(slots=True)
class Replay:
    events: list[Event]
    readings_in: int
    seconds: float


def replay(scn: Scenario, rules: RulesConfig | None = None) -> Replay:
    """Feed every batch to a Pipeline with a RuleEngine; tick like the runtime, on scenario time."""
    if rules is None:
        rules = RulesConfig(packs=(PackRef(name=scn.pack),))
    clock = [scn.batches[0].ts if scn.batches else 0.0]
    engine = RuleEngine(rules, scn.devices, clock=lambda: clock[0])
    sink = CollectingSink()
    pipe = Pipeline({d.id: d for d in scn.devices}, sink, engine)
    away = sorted([(a, dev, True) for dev, a, _ in scn.away] + [(b, dev, False) for dev, _, b in scn.away])
    ai = 0
    t0 = time.perf_counter()
    next_tick = clock[0]
    for batch in scn.batches:
        while next_tick < batch.ts:
            while ai < len(away) and away[ai][0] <= next_tick:
                engine.set_away(away[ai][1], away[ai][2])
                ai += 1
            clock[0] = next_tick
            pipe.tick(next_tick)
            next_tick = next_tick_after(engine, next_tick)
        clock[0] = batch.ts
        pipe.submit(batch)
        if engine.waiting:
            next_tick = min(next_tick, on_second(engine.next_deadline(batch.ts)))
    end = clock[0] + 60  # let hold timers run out, not the missing-data rules after the data ends
    while next_tick < end:
        pipe.tick(next_tick)
        next_tick = next_tick_after(engine, next_tick)
    return Replay(sink.events, pipe.readings_in, time.perf_counter() - t0)


@dataclass(slots=True)
class PackScore:
    """How well one pack did on its scenario."""

    pack: str
    episodes: int
    detected: int
    alarms: int
    false_alarms: int
    precision: float
    recall: float
    f1: float
    median_delay_s: float
    false_alarms_vibration: int
    readings: int
    replay_s: float
    missed: list[Episode] = field(default_factory=list)
    false: list[Event] = field(default_factory=list)
    confirmed: PackScore | None = None  # the confirmed stage, for a pack that raises one

    def figures(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "median_delay_s": round(self.median_delay_s, 1),
            "false_alarms_vibration": self.false_alarms_vibration,
            "episodes": self.episodes,
            "alarms": self.alarms,
            "false_alarms": self.false_alarms,
            "readings": self.readings,
        }


def score(
    scn: Scenario,
    events: Sequence[Event],
    readings: int = 0,
    seconds: float = 0.0,
    confirmed: bool = False,
) -> PackScore:
    """Match raised alarms to episodes. A second raise of the same kind in one episode is a false alarm
    (flapping is penalised); an alarm matching no episode is a false alarm. `confirmed`: score only the
    confirmed stage (kind `<kind>_confirmed` matches an episode of `<kind>`), else only the rest."""
    prefix = scn.rule_prefix or scn.pack + "."
    alarms = [
        e
        for e in events
        if e.state is EventState.RAISED
        and e.kind != ACTION_KIND
        and e.rule.startswith(prefix)
        and e.kind.endswith(CONFIRMED) == confirmed
    ]
    by_dev: dict[str, list[int]] = {}
    for i, ep in enumerate(scn.episodes):
        for dev in (ep.device_id, *ep.also):
            by_dev.setdefault(dev, []).append(i)
    # One raise per episode, kind and device: a second from the same device is flapping; the second
    # detector of a flat seeing the same fire is not.
    used: set[tuple[int, str, str]] = set()
    first: dict[int, float] = {}
    false: list[Event] = []
    for e in alarms:
        cands = [
            i
            for i in by_dev.get(e.device_id, ())
            if e.kind.removesuffix(CONFIRMED) in scn.episodes[i].kinds
            and scn.episodes[i].start - scn.before_s - scn.episodes[i].slack_s
            <= e.ts
            <= scn.episodes[i].end + scn.after_s
        ]
        fresh = [i for i in cands if (i, e.kind, e.device_id) not in used]
        if not fresh:
            false.append(e)
            continue
        i = fresh[0]
        used.add((i, e.kind, e.device_id))
        first[i] = min(first.get(i, math.inf), e.ts)
    tp = len(alarms) - len(false)
    precision = tp / len(alarms) if alarms else 1.0
    recall = len(first) / len(scn.episodes) if scn.episodes else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    delays = [first[i] - scn.episodes[i].start for i in first]
    vib = _vibration_hits(scn, false)
    return PackScore(
        pack=scn.pack,
        episodes=len(scn.episodes),
        detected=len(first),
        alarms=len(alarms),
        false_alarms=len(false),
        precision=precision,
        recall=recall,
        f1=f1,
        median_delay_s=statistics.median(delays) if delays else math.nan,
        false_alarms_vibration=vib,
        readings=readings,
        replay_s=seconds,
        missed=[ep for i, ep in enumerate(scn.episodes) if i not in first],
        false=false,
    )


def _vibration_hits(scn: Scenario, false: Sequence[Event]) -> int:
    """False alarms raised during (or within 5 s after) a passing vehicle on that cover."""
    windows: dict[str, list[tuple[float, float]]] = {}
    for dev, a, b in scn.vibration:
        windows.setdefault(dev, []).append((a, b))
    starts = {dev: sorted(w) for dev, w in windows.items()}
    hits = 0
    for e in false:
        w = starts.get(e.device_id)
        if not w:
            continue
        k = bisect.bisect_right(w, (e.ts, math.inf)) - 1
        if k >= 0 and w[k][0] <= e.ts <= w[k][1] + 5.0:
            hits += 1
    return hits


def evaluate(scenarios: Sequence[Scenario]) -> list[PackScore]:
    """Replay and score each scenario with its own pack."""
    out = []
    for scn in scenarios:
        r = replay(scn, scn.rules if isinstance(scn.rules, RulesConfig) else None)
        s = score(scn, r.events, r.readings_in, r.seconds)
        if any(e.kind.endswith(CONFIRMED) for e in r.events):
            s.confirmed = score(scn, r.events, r.readings_in, r.seconds, confirmed=True)
        out.append(s)
    return out
