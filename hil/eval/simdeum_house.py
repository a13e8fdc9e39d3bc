"""SIMDEUM's elderly resident living alone: the one module that calls pysimdeum (the extra `simdeum`).

SIMDEUM (Blokker, Vreeburg and van Dijk 2010, "Simulating residential water demand with a stochastic
end-use model", J. Water Resour. Plann. Manage. 136(1); KWR's Python port `pysimdeum` 1.0.1 on PyPI)
draws a household's water use from Dutch survey statistics (Blokker 2006): who lives there, which
end uses the house has (toilet, shower, bath, taps, washing machine, dishwasher, outside tap), when
the residents get up, go out, come home and go to sleep, and for each end use how often, how long
and how much. Here: a `one_person` house whose resident is a `senior` (over 65, no job), furnished
by SIMDEUM's penetration rates. SIMDEUM computes a user's presence once and reuses it for every
pattern (`pysimdeum.built_house`); a person's days differ, so a new presence is drawn for each day
(SIMDEUM's weekday statistics on working days, its weekend ones on weekends and holidays: for a
senior they are the same) and that day is simulated alone (`simulate(num_patterns=1)`: one pattern
is 86,401 seconds x users x end uses x 2 floats; a month at once would be ~0.6 GB).

pysimdeum has no type hints and draws from numpy's global random generator, which is seeded here;
what leaves this module is plain Python (`SimulatedHouse`). pysimdeum 1.0.1 needs pandas < 3 (it
uses the frequency aliases "1H" and "1S" and `Resampler.fillna`, which pandas 3 removed): the extra
pins it. One defect of pysimdeum 1.0.1 is worked around (`NO_LEAVE_AWAY`).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any

EXTRA = "simdeum"
NO_LEAVE_AWAY = timedelta(minutes=1)
"""A day the resident does not go out (SIMDEUM sets home = go, "actually no leave", ~1 % of days):
pysimdeum 1.0.1's Presence.pdf then marks the whole day away (its `timeindexer` takes the empty
interval go..home for one wrapping round midnight), the day's probabilities are all NaN and every
use starts at 00:00:00, overwriting the others (checked: 8 of 720 days at full size, median 33 L,
all of it in the first minutes after midnight). Going out for one minute instead keeps the day."""


class SimdeumMissing(LookupError):
    """The optional extra `simdeum` (pysimdeum) is not installed."""


@dataclass(frozen=True)
class SimulatedDay:
    """One day of SIMDEUM's resident: its flow, second by second, and what it was doing."""

    flows: list[tuple[int, float]]  # (second from 00:00, total flow L/s) for every second with flow
    by_use: dict[str, float]  # litres per end use (SIMDEUM's class names: Wc, Shower, KitchenTap, ...)
    up_min: int  # presence, minutes from the day's 00:00: got up
    go_min: int  # went out
    home_min: int  # came home
    sleep_min: int  # went to sleep (after 1440: past midnight)


@dataclass(frozen=True)
class SimulatedHouse:
    """A one-person senior house and its days."""

    gender: str
    appliances: tuple[str, ...]
    days: list[SimulatedDay]


def _import() -> Any:
    try:
        import numpy
        from pysimdeum.core import house, statistics, user, utils
    except ImportError as e:
        raise SimdeumMissing(f"pysimdeum is not installed: pip install -e '.[{EXTRA}]'") from e
    return numpy, house, statistics, user, utils


def senior_alone(seed: Sequence[int], days: Sequence[tuple[date, bool]]) -> SimulatedHouse:
    """SIMDEUM's senior living alone for `days` ((date, is a working day) each), numpy seeded with `seed`."""
    numpy, house_mod, stats_mod, user_mod, utils = _import()
    with warnings.catch_warnings():
        # pysimdeum 1.0.1 on pandas 2.x: FutureWarnings on its frequency aliases and fillna.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        numpy.random.seed(list(seed))
        stats = stats_mod.Statistics()
        house = house_mod.House(house_type="one_person", statistics=stats)
        genders = stats.household["one_person"]["division_gender"]
        person = user_mod.User(id="user_1", age="senior", gender=str(utils.chooser(genders)), job=False)
        house.users = [person]
        house.furnish_house()
        out: list[SimulatedDay] = []
        for day, working in days:
            presence = user_mod.Presence(weekday=working, user=person, stats=stats)
            if presence.home <= presence.go:  # "actually no leave": see NO_LEAVE_AWAY
                presence.home = presence.go + NO_LEAVE_AWAY
            person.presence = presence.pdf()
            sim = house.simulate(date=datetime.combine(day, time()), num_patterns=1)
            flow = sim.sel(flowtypes="totalflow", patterns=0)
            per_second = flow.sum(["user", "enduse"]).values
            used = numpy.flatnonzero(per_second)
            flows = list(zip(used.tolist(), per_second[used].tolist(), strict=True))
            by_use = flow.sum(["user", "time"])
            litres = zip(map(str, by_use["enduse"].values), map(float, by_use.values), strict=True)
            out.append(
                SimulatedDay(
                    flows=flows,
                    by_use=dict(litres),
                    up_min=_minutes(presence.up),
                    go_min=_minutes(presence.go),
                    home_min=_minutes(presence.home),
                    sleep_min=_minutes(presence.sleep),
                )
            )
    appliances = tuple(str(a.statistics["classname"]) for a in house.appliances)
    return SimulatedHouse(gender=str(person.gender), appliances=appliances, days=out)


def _minutes(td: Any) -> int:
    return int(td.total_seconds() // 60)
