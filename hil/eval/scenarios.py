"""The labelled scenarios, one per shipped pack, with the default (fixed) seeds and sizes.

Two kinds of data (issue 18). `SCENARIOS` (issue 6) label episodes where each pack's published
rule becomes true, so they check the engine implements the rules, not whether the rules are right.
`INDEPENDENT` are models of the physical situation - a resident's nights, traffic in a fire lane,
bins filling and emptying, wind on a facade, a water network's pumps - labelled by what happened,
never by a pack's threshold: they measure whether the pack's alarms can be trusted.
"""

from __future__ import annotations

from collections.abc import Callable

from citynerve.hil.eval import (
    bed,
    curtainwall,
    electricity,
    electricity_situations,
    entrance,
    firelane,
    household,
    household_nodes,
    hydrant,
    lamps,
    litterbin,
    manhole,
    manhole_situations,
    meterbox,
    smoke,
    smoke_situations,
    water,
    water_situations,
)
from citynerve.hil.eval.model import Scenario

SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "elderly-water": water.build,
    "manhole": manhole.build,
    "smoke-fire": smoke.build,
    "electricity": electricity.build,
}
"""Pack name -> scenario builder labelled from the published rules (keyword arguments: seed, sizes)."""

INDEPENDENT: dict[str, Callable[..., Scenario]] = {
    "elderly-water": water_situations.build,
    "elderly-bed": bed.build,
    "fire-hydrant": hydrant.build,
    "fire-lane": firelane.build,
    "litter-bin": litterbin.build,
    "curtain-wall": curtainwall.build,
    "meter-box": meterbox.build,
    "street-lamp": lamps.build,
    "entrance": entrance.build,
    "manhole": manhole_situations.build,
    "smoke-fire": smoke_situations.build,
    "electricity": electricity_situations.build,
    "household": household.build,  # bed sensor and water meter of one resident: the composite
    "household-packs": household.build_packs,  # the same data, the per-device packs' alarms joined
    "household-door-pir": household_nodes.build,  # the same lives, with the flat's door and a PIR
}
"""Pack name -> physical-situation model labelled by what happened (issue 18)."""


def build_all(small: bool = False) -> list[Scenario]:
    """The rule-labelled scenarios; `small` shrinks them (fewer devices and days) for the test suite."""
    if not small:
        return [b() for b in SCENARIOS.values()]
    return [
        water.build(households=12, days=12),
        manhole.build(covers=10, days=5),
        smoke.build(detectors=12, days=2),
        electricity.build(households=4, days=14),
    ]


def build_independent(small: bool = False) -> list[Scenario]:
    """The physical-situation scenarios; `small` shrinks them for the test suite."""
    if not small:
        return [b() for b in INDEPENDENT.values()]
    return [
        water_situations.build(households=12, days=20),
        bed.build(residents=16, days=30),
        hydrant.build(hydrants=12, days=7),
        firelane.build(lanes=6, days=7),
        litterbin.build(bins=9, days=10),
        curtainwall.build(panels=8, days=30),
        meterbox.build(boxes=8, days=5),
        lamps.build(lamps=12, days=5),
        entrance.build(doors=4, days=7),
        manhole_situations.build(covers=5, days=5),
        smoke_situations.build(flats=12, days=7),
        electricity_situations.build(households=5, days=14),
        household.build(residents=10, days=30),
        household.build_packs(residents=10, days=30),
        household_nodes.build(residents=10, days=30),
    ]
