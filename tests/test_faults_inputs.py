"""The network- and port-input fault scenarios (hil/faults/inputs.py), each against a real
`citynerve run`, Mosquitto and a pty: run one by one so a broken promise names itself."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

from citynerve.hil.faults import load_all

SCENARIOS = {name: sc for name, sc in load_all().items() if name.startswith("inputs.")}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
async def test_input_scenario_holds(name: str, tmp_path: Path) -> None:
    result = SCENARIOS[name].fn(tmp_path)
    detail = await result if inspect.isawaitable(result) else result
    assert detail  # Broken (an AssertionError) otherwise, with what broke
