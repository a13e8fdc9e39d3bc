"""The labelled scenarios, one per shipped pack, with the default (fixed) seeds and sizes."""

from __future__ import annotations

from collections.abc import Callable

from hil.eval import electricity, manhole, smoke, water
from hil.eval.model import Scenario

SCENARIOS: dict[str, Callable[..., Scenario]] = {
    "elderly-water": water.build,
    "manhole": manhole.build,
    "smoke-fire": smoke.build,
    "electricity": electricity.build,
}
"""Pack name -> scenario builder (keyword arguments: seed and sizes, see each module)."""


def build_all(small: bool = False) -> list[Scenario]:
    """Every scenario; `small` shrinks them (fewer devices and days) for the test suite."""
    if not small:
        return [b() for b in SCENARIOS.values()]
    return [
        water.build(households=12, days=12),
        manhole.build(covers=10, days=5),
        smoke.build(detectors=12, days=2),
        electricity.build(households=4, days=14),
    ]
