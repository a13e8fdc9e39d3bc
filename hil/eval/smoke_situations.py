"""Smoke detectors in flats, labelled by what happened - fires, not alarms (issue 18).

Two residential buildings of twelve flats, three weeks. Each flat has two RS-485 photoelectric
smoke detectors (modbus-smoke-detector: the status register, polled every 2 s, reported on a change
and at least every 60 s; 0.5 % of polls fail), in two of the hallway, the living room next to an
open kitchen and a bedroom, tagged `zone:flat-NN` and `building:bN` (the pack's coincidences, issue
18). A detector alarms when the smoke in its chamber passes its own response threshold (2.5-4.5
%/m obscuration: the spread of a certified EN 54-7 / UL 217 population) and clears below 80 % of
it. Each building's fire panel (GST print port, `building:bN`) reports a first fire alarm when any
of its detectors alarms, and is reset by the operator 5-20 min after the smoke has gone.

What reaches the chamber:
- dust: a chamber's clean-air reading rises with age (installed 0-8 years ago, 0.1-1 %/m per year,
  twice that next to a kitchen); half the detectors compensate drift, the other half do not, so
  their margin to alarm shrinks;
- cooking: 2-3 meals a day, each one puff of smoke and aerosol reaching both detectors of the flat
  by their place (log-normal peak, median 0.2 %/m next to a kitchen, 0.05 in a hallway, 0.02 in a
  bedroom), 2 % of meals burnt (5x);
- steam from a shower (hallway detectors next to the bathroom, median 0.3 %/m peaks);
- an insect in one chamber for a day: spikes of 3-8 %/m now and then;
- fires (the ground truth, from ignition until put out 20-90 min later; each flat at most one; one
  incident that either detector of the flat detects): started in the first detector's room (50 %),
  the second's (20 %) or a room without one (30 %); a detector outside the room of origin gets
  0.3 of the smoke.
  flaming fires growing as t-squared fires (NFPA 72 Annex B / BS 7974: slow, medium, fast alpha =
  0.0029, 0.012, 0.047 kW/s2, after 0-10 min of incubation), the smoke at the detector taken as
  0.15 %/m per kW at the room of origin and 0.3 of that in the next room; smouldering fires (a
  cigarette on a mattress, an overheated cable: the EN 54-7 TF2/TF3 kind) whose smoke grows as the
  square of time to 5-20 %/m over 20-75 min.

An alarm on cooking smoke, steam, dust or an insect is a false alarm for the operations centre: the
pack passes what the detector says at once (GB 26875), so the pack's precision here is the
detectors' and depends on how often fires happen: the model burns one flat in three in three weeks
(hundreds of times the real rate) to have fires to score. `nuisance_per_detector_year` in the
scenario's params is the figure that does not depend on that choice.
"""

from __future__ import annotations

import math
import random

from citynerve.gateway.api import DeviceConfig, Quality, Sample, SampleBatch
from citynerve.hil.eval.model import START, Episode, Scenario, device

DAY = 86400
POLL_S = 2.0
REPORT_S = 60.0
FIRES = {"slow": 0.0029, "medium": 0.012, "fast": 0.047}  # NFPA 72 Annex B alpha, kW/s2
PLACES = ("hallway", "living room by the kitchen", "bedroom")
PAIRS = (  # the two detectors of a flat (BS 5839-6 / GB 50116: the escape route and a room)
    ("living room by the kitchen", "hallway"),
    ("hallway", "bedroom"),
    ("living room by the kitchen", "bedroom"),
)
COOK_PEAK = {"hallway": 0.05, "living room by the kitchen": 0.2, "bedroom": 0.02}


class _Detector:
    def __init__(self, rng: random.Random, place: str) -> None:
        self.place = place
        self.threshold = rng.uniform(2.5, 4.5)
        rate = math.exp(rng.gauss(math.log(0.1), 0.5)) * (2 if place != "bedroom" else 1)
        self.dust = rng.uniform(0, 8) * rate
        self.compensates = rng.random() < 0.5
        self.puffs: list[tuple[float, float, float, float]] = []  # t0, rise_s, fall_s, peak %/m
        self.fire: tuple[float, float, str, float, float] | None = None  # t0, t_out, kind, a, near

    def smoke(self, t: float) -> float:
        s = 0.0 if self.compensates else self.dust
        for t0, rise, fall, peak in self.puffs:
            if t0 <= t < t0 + rise + 5 * fall:
                s += peak * (t - t0) / rise if t < t0 + rise else peak * math.exp(-(t - t0 - rise) / fall)
        if self.fire is not None:
            t0, t_out, kind, a, near = self.fire
            if t0 <= t:
                x = min(t, t_out) - t0
                v = a * x * x if kind == "smoulder" else 0.15 * near * a * max(0.0, x) ** 2
                v = min(v, 60.0)
                if t > t_out:
                    v *= math.exp(-(t - t_out) / 300)
                s += v
        return s

    def windows(self) -> list[tuple[float, float]]:
        out = [(t0 - POLL_S, t0 + rise + 5 * fall) for t0, rise, fall, _ in self.puffs]
        if self.fire is not None:
            out.append((self.fire[0], self.fire[1] + 1800))
        return sorted(out)


def build(seed: int = 5475, flats: int = 24, days: int = 21) -> Scenario:
    """The situation-labelled scenario for the smoke-fire pack: two detectors per flat (one `zone:` tag)."""
    rng = random.Random(seed)
    devices: list[DeviceConfig] = []
    dets: list[_Detector] = []
    for i in range(flats):
        for k, place in enumerate(PAIRS[i % len(PAIRS)]):
            cfg = device(
                f"smoke-{i:02d}{'ab'[k]}", "modbus-smoke-detector", {"smoke_alarm": ""}, 2 * i + k, "0702"
            )
            tags = (f"zone:flat-{i:02d}", f"building:b{i * 2 // flats}")  # two buildings, one panel each
            devices.append(cfg.model_copy(update={"tags": tags}))
            dets.append(_Detector(rng, place))
    panels = [
        device(f"panel-{b}", "firepanel-gst", {"fire_alarm": ""}, 90 + b).model_copy(
            update={"tags": (f"building:b{b}",)}
        )
        for b in range(2)
    ]
    end = START + days * DAY
    fires: list[tuple[int, float, float, str]] = []  # flat, ignition, put out, what
    for i in range(flats):
        pair = dets[2 * i : 2 * i + 2]
        for day in range(days):
            for meal_h in (7.0, 12.0, 18.5)[: rng.choice((2, 3, 3))]:
                t0 = START + day * DAY + (meal_h + rng.gauss(0, 0.5)) * 3600
                rise, fall = rng.uniform(120, 600), rng.uniform(300, 900)
                meal = math.exp(rng.gauss(0, 1.0)) * (5 if rng.random() < 0.02 else 1)  # one meal, both rooms
                for d in pair:
                    d.puffs.append((t0, rise, fall, COOK_PEAK[d.place] * meal * math.exp(rng.gauss(0, 0.3))))
            for d in pair:
                if d.place == "hallway" and i % 2 == 0:  # next to the bathroom: steam from the shower
                    t0 = START + day * DAY + rng.choice((7.0, 21.5)) * 3600 + rng.gauss(0, 1800)
                    peak = 0.15 * math.exp(rng.gauss(0, 1.0))
                    d.puffs.append((t0, rng.uniform(300, 600), rng.uniform(120, 400), peak))
        if i == 7:  # an insect in one chamber for a day
            day0 = START + rng.uniform(2, days - 2) * DAY
            for _ in range(rng.randint(3, 8)):
                pair[0].puffs.append((day0 + rng.uniform(0, DAY), 1.0, rng.uniform(2, 20), rng.uniform(3, 8)))
        if i % 3 == 1 or i % 6 == 0:
            t0 = START + rng.uniform(1, days - 1) * DAY
            out = t0 + rng.uniform(20, 90) * 60
            # Where it starts: the room of the first detector, of the second, or a room without one.
            r = rng.random()
            near = (1.0, 0.3) if r < 0.5 else (0.3, 1.0) if r < 0.7 else (0.3, 0.3)
            if rng.random() < 0.35:
                a = rng.uniform(5, 20) / rng.uniform(20 * 60, 75 * 60) ** 2  # %/m at the end of TF2/TF3
                for d, n in zip(pair, near, strict=True):
                    d.fire = (t0, out, "smoulder", a * n, 1.0)
                kind = "smoulder"
            else:
                kind = rng.choice(tuple(FIRES))
                t0 += rng.uniform(0, 600)  # incubation: the fire takes hold
                for d, n in zip(pair, near, strict=True):
                    d.fire = (t0, out, kind, FIRES[kind], n)
            origin = PAIRS[i % len(PAIRS)][0 if r < 0.5 else 1] if r < 0.7 else "room without a detector"
            fires.append((i, t0, out, f"{kind} fire in the {origin}"))
    batches: list[SampleBatch] = []
    episodes: list[Episode] = []
    nuisance = 0
    alarm_spans: list[list[tuple[float, float]]] = []
    for d, dev in zip(dets, devices, strict=True):
        spans = _alarms(d)
        alarm_spans.append(spans)
        fire_span = (d.fire[0], d.fire[1] + 1800) if d.fire else None
        nuisance += sum(1 for a, _ in spans if not (fire_span and fire_span[0] <= a <= fire_span[1]))
        batches += _polls(rng, dev.id, spans, end)
    for i, t0, out, what in fires:  # one incident per fire: either detector of the flat reports it
        episodes.append(Episode(devices[2 * i].id, ("smoke",), t0, out, what, also=(devices[2 * i + 1].id,)))
    for b, panel in enumerate(panels):
        members = range(b * flats // 2, (b + 1) * flats // 2)
        spans = sorted(s for i in members for k in (0, 1) for s in alarm_spans[2 * i + k])
        state_t = -math.inf
        for a, z in _merge(spans):
            if a < state_t:
                continue
            reset = z + rng.uniform(5, 20) * 60
            batches.append(SampleBatch(panel.id, round(a + 1.0, 3), (Sample("fire_alarm", True),)))
            batches.append(SampleBatch(panel.id, round(reset, 3), (Sample("fire_alarm", False),)))
            state_t = reset
        for i, t0, out, _ in fires:
            if i in members:
                episodes.append(Episode(panel.id, ("fire",), t0, out, f"fire in flat {i}"))
    batches.sort(key=lambda x: x.ts)
    episodes.sort(key=lambda e: e.start)
    years = len(dets) * days / 365
    return Scenario(
        "smoke-fire",
        [*devices, *panels],
        batches,
        episodes,
        before_s=POLL_S,
        after_s=REPORT_S,
        params={"nuisance_per_detector_year": round(nuisance / years, 2), "nuisance_alarms": nuisance},
    )


def _alarms(d: _Detector) -> list[tuple[float, float]]:
    """When the detector's status register says alarm: above its threshold, until below 80 % of it."""
    out: list[tuple[float, float]] = []
    for a, b in _merge(d.windows()):
        t, on = a, None
        while t < b:
            s = d.smoke(t)
            if on is None and s > d.threshold:
                on = t
            elif on is not None and s < 0.8 * d.threshold:
                out.append((on, t))
                on = None
            t += POLL_S
        if on is not None:
            out.append((on, b))
    return out


def _merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def _polls(
    rng: random.Random, dev_id: str, spans: list[tuple[float, float]], end: float
) -> list[SampleBatch]:
    """The driver's reports: every change at the next 2 s poll, the state at least every 60 s."""
    events = sorted([(a, True) for a, _ in spans] + [(b, False) for _, b in spans])
    out: list[SampleBatch] = []
    t = START + rng.uniform(0, REPORT_S)
    k = 0
    state = False
    while t < end:
        t_next = t + REPORT_S
        if k < len(events) and events[k][0] < t_next:
            t_next = math.ceil(events[k][0] / POLL_S) * POLL_S + 0.01
            state = events[k][1]
            k += 1
        else:
            state = any(a <= t_next < b for a, b in spans) if spans else False
        t = t_next
        if rng.random() < 0.005:
            out.append(SampleBatch(dev_id, round(t, 3), (Sample("smoke_alarm", None, Quality.BAD),)))
        else:
            out.append(SampleBatch(dev_id, round(t, 3), (Sample("smoke_alarm", state),)))
    return out
