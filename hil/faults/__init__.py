"""Fault scenarios: each one puts a real process (gateway, Mosquitto, peers) through one fault or
hostile input and checks the promise the gateway makes about it (docs/reliability.md).

A scenario is a function registered with `@scenario(...)` in a module of this package, one module per
area (``hil/faults/<area>.py``). It gets a fresh working directory, may be sync or async, returns a
short detail string when the promise held and raises `Broken` (with what broke) when it did not; any
other exception counts as an error of the scenario itself. `hil/bench/faults.py` runs them.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

ScenarioFn = Callable[[Path], "str | Awaitable[str]"]


class Broken(AssertionError):
    """The gateway did not keep the promise the scenario checks."""


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    area: str
    promise: str
    fn: ScenarioFn
    slow: bool = False
    timeout_s: float = 120.0


SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, *, area: str, promise: str, slow: bool = False, timeout_s: float = 120.0
) -> Callable[[ScenarioFn], ScenarioFn]:
    """Register a fault scenario under a unique name (``area.what``)."""

    def register(fn: ScenarioFn) -> ScenarioFn:
        if name in SCENARIOS:
            raise ValueError(f"fault scenario {name!r} registered twice")
        SCENARIOS[name] = Scenario(name, area, promise, fn, slow, timeout_s)
        return fn

    return register


def load_all() -> dict[str, Scenario]:
    """Import every module of this package so that its scenarios register; return them by name."""
    for info in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{info.name}")
    return dict(sorted(SCENARIOS.items()))
