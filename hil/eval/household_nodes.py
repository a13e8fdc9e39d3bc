"""The household's third signal (issue 18): the flat's door contact and a PIR in the living room and
hallway, driven by the same simulated lives as the bed-foot sensor and the meter (hil/eval/household.py)
- the `household-door-pir` row of hil/bench/rules_eval.py.

The bed and the meter send exactly what they send in the `household` row (the same seed, the same
draws); the door and the PIR draw from a random stream of their own. From each resident's life:

- the door opens (10-40 s) whenever the resident goes out or comes back (the day's errands, a whole
  day out, the family's over the holiday, the ambulance), when the carer comes for a resident who
  fell and leaves an hour later, for visitors on holidays (60 % of holiday afternoons, 1-3 h, moving
  about the flat), and for a delivery or a neighbour at the door (0.4 a day, the resident stays in);
- the PIR sees a resident who is up and at home in bursts of 1-3 min separated by gaps out of its
  view or sitting still, log-normal with a median of 4 min (sigma 0.8: a gap over 40 min in 1 of
  200, over 2 h in 1 of 30,000 - a model assumption, not a measurement, docs/benchmarks.md gives the
  figures with a heavier tail); it sees them pass the hallway on each trip out of bed and coming
  in (after the door opened), a dozing
  resident (an afternoon in the armchair, 15 % of days, 20-80 min) not at all, nor a resident who
  spends a sleepless spell in the bedroom (20 % of spells); someone who fell is seen struggling
  for 2-10 min in 30 % of falls, then not at all; visitors and the carer are seen all along;
- each node: a change goes out as a burst (lost only if three adverts in a row are, at 5 % each),
  the PIR clears 60 s after the last movement, a heartbeat with the state every 600 s (5 % lost).
  One PIR node goes silent for 2-5 h (labelled `household_node_silent`: the maintenance event).

Labels are the `household` row's (falls, unwell in bed, a tap running at bedtime) plus the silent
node; `home_by` stays off (an unannounced evening out is no incident in this model).
"""

from __future__ import annotations

import math
import random

from citynerve.gateway.api import SampleBatch
from citynerve.gateway.rules import RulesConfig
from citynerve.gateway.rules.household_config import HouseholdConfig
from citynerve.gateway.rules.household_presence import NODE_EVENT_KIND
from citynerve.hil.eval.bed import node_adverts, poisson
from citynerve.hil.eval.household import _Flat, build_flats
from citynerve.hil.eval.model import START, Episode, Scenario, device, is_holiday

CLEAR_S = 60  # the PIR reports "clear" after this long without movement
GAP_MEDIAN_MIN, GAP_SIGMA = 4.0, 0.8
SILENT_NODE = 3  # the resident whose PIR goes silent for a few hours


def build(seed: int = 81, residents: int = 30, days: int = 30, gap_sigma: float = GAP_SIGMA) -> Scenario:
    """The `household` scenario with a door contact and a PIR per flat, and the households' alarm
    configured with them."""
    base, flats = build_flats(seed, residents, days)
    rng = random.Random(seed * 7919 + 18)  # the door and the PIR's own stream
    devices = list(base.devices)
    batches = list(base.batches)
    episodes = list(base.episodes)
    homes: list[HouseholdConfig] = []
    assert isinstance(base.rules, RulesConfig)
    end = START + days * 86400
    for i, (hh, flat) in enumerate(zip(base.rules.households, flats, strict=True)):
        door = device(f"door-{i:02d}", "bthome-door-contact", {"door_open": ""}, i)
        pir = device(f"pir-{i:02d}", "bthome-motion-pir", {"motion": ""}, i)
        devices += [door, pir]
        homes.append(hh.model_copy(update={"door": door.id, "motion": pir.id}))
        out, down, doors, company = _presence(rng, flat)
        seen = _seen(rng, flat, out, down, company, gap_sigma)
        dead = None
        if i == SILENT_NODE:
            t0 = START + rng.uniform(3, days - 3) * 86400
            dead = (t0, t0 + rng.uniform(2, 5) * 3600)
            episodes.append(Episode(pir.id, (NODE_EVENT_KIND,), dead[0], dead[1], "PIR node silent"))
        batches += _node(rng, door.id, "door_open", doors, end, None)
        batches += _node(rng, pir.id, "motion", _pir_states(seen), end, dead)
    batches.sort(key=lambda b: b.ts)
    episodes.sort(key=lambda e: e.start)
    rules = RulesConfig(households=tuple(homes))
    return Scenario(
        "household-door-pir",
        devices,
        batches,
        episodes,
        base.before_s,
        base.after_s,
        away=base.away,
        rules=rules,
        rule_prefix="household.",
    )


def _spans(mask: bytearray) -> list[tuple[int, int]]:
    out, m, n = [], 0, len(mask)
    while m < n:
        if not mask[m]:
            m += 1
            continue
        a = m
        while m < n and mask[m]:
            m += 1
        out.append((a, m))
    return out


def _mark(mask: bytearray, a: float, b: float, v: int = 1) -> None:
    lo, hi = max(0, int(a)), max(0, min(int(b), len(mask)))
    if hi > lo:
        mask[lo:hi] = bytes([v]) * (hi - lo)


def _presence(
    rng: random.Random, flat: _Flat
) -> tuple[bytearray, bytearray, list[tuple[float, bool]], bytearray]:
    """Minute masks (out of the flat, on the floor, someone else in the flat) and the door's
    changes (seconds since START, open)."""
    n = flat.n
    out, down, company = bytearray(n), bytearray(n), bytearray(n)
    for a, b in flat.outings:
        m = int(a)
        while m < b and m < n and flat.bed[m]:  # an errand drawn during a nap: they get up first
            m += 1
        if m < b:
            _mark(out, m + rng.uniform(2, 8), b)
    for a, b in flat.gone:
        _mark(out, a, b)
    for m in range(n):  # in bed is at home (a nap drawn during a day out: home for it, out again)
        if flat.bed[m]:
            out[m] = 0
    for a, b in _spans(out):
        if a > 0 and flat.bed[a - 1]:  # up from the bed, dressed, then out of the door
            _mark(out, a, min(b, a + rng.randint(2, 8)), 0)
    for a, b in flat.falls:
        _mark(out, a, b, 0)  # an errand drawn for that day never happened: they fell
        _mark(down, a, b)
    for a, b in flat.gone:  # away for days overrides the day's errands drawn meanwhile
        _mark(out, a, b)
    opens: list[float] = [float(a) for a, _ in _spans(out)] + [float(b) for _, b in _spans(out) if b < n]
    for _, found in flat.falls:
        opens += [found, found + 60]  # the carer comes, and leaves an hour later
        _mark(company, found, found + 60)
    for d in range(n // 1440):
        base = d * 1440
        if is_holiday(START + d * 86400) and rng.random() < 0.6:  # visitors on a holiday afternoon
            va = base + rng.uniform(14 * 60, 17 * 60)
            vb = va + rng.uniform(60, 180)
            if not any(out[int(va) : int(vb)]) and not any(down[int(va) : int(vb)]):
                opens += [va, vb]
                _mark(company, va, vb)
        for _ in range(poisson(rng, 0.4)):  # a delivery, a neighbour: the resident stays in
            t = base + rng.uniform(9 * 60, 19 * 60)
            if not out[int(t)] and not down[int(t)] and not flat.bed[int(t)]:
                opens.append(t)
    doors: list[tuple[float, bool]] = []
    for at in sorted(opens):
        t = START + at * 60 + rng.uniform(0, 50)
        doors += [(t, True), (t + rng.uniform(10, 40), False)]
    return out, down, doors, company


def _seen(
    rng: random.Random,
    flat: _Flat,
    out: bytearray,
    down: bytearray,
    company: bytearray,
    gap_sigma: float,
) -> list[tuple[float, float]]:
    """When the PIR sees someone (seconds since START, merged spans)."""
    n = flat.n
    hidden = bytearray(n)  # up, at home, out of the PIR's view
    for a, b in flat.spells:
        if rng.random() < 0.2:  # a sleepless spell spent in the bedroom
            _mark(hidden, a, b)
    for d in range(n // 1440):
        if rng.random() < 0.15:  # dozing in the armchair
            a = d * 1440 + rng.uniform(13.5 * 60, 16 * 60)
            _mark(hidden, a, a + rng.uniform(20, 80))
    up = bytearray(1 if not (flat.bed[m] or out[m] or down[m] or hidden[m]) else 0 for m in range(n))
    spans: list[tuple[float, float]] = []
    for a, b in _spans(up):
        t = a * 60 + rng.uniform(50, 60)  # passes the hallway out of bed, or in from the door
        while t < b * 60:
            burst = rng.uniform(60, 180)
            spans.append((t, min(t + burst, b * 60)))
            gap = math.exp(rng.gauss(math.log(GAP_MEDIAN_MIN * 60), gap_sigma))
            t += burst + gap
    for a, b in _spans(company):
        spans.append((a * 60, b * 60))
    for a, _ in flat.falls:
        if rng.random() < 0.3:  # the fall in the PIR's view: struggling
            spans.append((a * 60, a * 60 + rng.uniform(120, 600)))
    spans.sort()
    merged: list[tuple[float, float]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return [(START + a, START + b) for a, b in merged]


def _pir_states(seen: list[tuple[float, float]]) -> list[tuple[float, bool]]:
    """What the PIR reports: motion when first seen, clear CLEAR_S after the last movement."""
    out: list[tuple[float, bool]] = []
    for a, b in seen:
        if out and a <= out[-1][0]:  # seen again before it cleared: still "motion"
            out.pop()
        else:
            out.append((a, True))
        out.append((b + CLEAR_S, False))
    return out


def _node(
    rng: random.Random,
    dev_id: str,
    point: str,
    changes: list[tuple[float, bool]],
    end: float,
    dead: tuple[float, float] | None,
) -> list[SampleBatch]:
    """A node's adverts, as the bed-foot sensor's (bed.node_adverts): bursts, heartbeats, losses."""
    return node_adverts(rng, dev_id, point, changes, START, end, dead, state=False)
