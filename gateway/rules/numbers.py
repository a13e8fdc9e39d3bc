"""The number types of the `[rules]` models: a boolean is refused where a number is expected.

Pydantic takes `true` for 1 (and 1.0) in an int or float field: `hold_s = true` was a 1 s hold, a
pack parameter `fault_hold_s = true` the same, `above = true` a threshold of 1. TOML has real
numbers; a boolean there is a mistake (a key meant for another one, a pack parameter's type mixed
up), refused with its key path. Ints still work where floats are expected (`hold_s = 5`).
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator

from citynerve.gateway.api import FiniteFloat, in_field_words


def _not_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise in_field_words(f"expected a number, found the boolean {str(value).lower()}")
    return value


Number = Annotated[FiniteFloat, BeforeValidator(_not_bool)]
"""FiniteFloat, without bools: every float of a rule, an action, a schedule, a household."""
Count = Annotated[int, BeforeValidator(_not_bool)]
"""An int without bools."""


def is_number(value: object) -> bool:
    """An int or float, not a bool (a pack parameter's default that is a number)."""
    return isinstance(value, int | float) and not isinstance(value, bool)
