"""One probe of a meter search on a shared RS-485 line, as a concentrator does it.

A request goes to an address pattern in which some digits are the wildcard `A` (DL/T 645: 12 BCD
digits, CJ/T 188: 14). Every meter whose address fits answers at once, so the line carries:
- nothing (`silent`): no meter fits;
- one clean frame (`one`): exactly one meter fits; the frame carries its full address;
- bytes that are no valid frame, or a frame that fails its checksum (`collision`): several meters
  fit and their replies overlapped. The search fixes one more digit and asks again.

The search itself (which patterns to ask, in what order) is citynerve.gateway.commissioning.meter_search.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from citynerve.drivers.serialio._line import ReplyTimeout
from citynerve.gateway.api import DiagParamError, PermanentError

WILDCARD_DIGIT = "A"
PROBE_TIMEOUT_S = (0.01, 5.0)  # a probe's timeout_s is clamped into this range


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def number_param(
    params: Mapping[str, Any], name: str, default: float, *, low: float, high: float, action: str
) -> float:
    """Parameter `name` as a finite number (a number, or text that is one), clamped to low..high.
    NaN, infinities, booleans and anything that is not a number raise DiagParamError: a NaN
    passes min/max clamps untouched, and a NaN timeout never expires."""
    raw = params.get(name, default)
    if isinstance(raw, bool):
        raise DiagParamError(action, name, f"expected a number, got {_shown(raw)}")
    try:
        value = float(raw)
    except (TypeError, ValueError, OverflowError) as err:
        raise DiagParamError(action, name, f"expected a number, got {_shown(raw)}") from err
    if not math.isfinite(value):
        raise DiagParamError(action, name, f"expected a finite number, got {_shown(raw)}")
    return min(max(value, low), high)


def probe_timeout_s(params: Mapping[str, Any], default: float) -> float:
    """A probe's `timeout_s`: a finite number of seconds, clamped to PROBE_TIMEOUT_S."""
    low, high = PROBE_TIMEOUT_S
    return number_param(params, "timeout_s", default, low=low, high=high, action="probe")


class Probe(enum.StrEnum):
    SILENT = "silent"
    ONE = "one"
    COLLISION = "collision"


@dataclass(frozen=True, slots=True)
class ProbeResult:
    outcome: Probe
    address: str = ""
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "address": self.address, **self.detail}


def check_pattern(pattern: Any, digits: int) -> str:
    """A search pattern: `digits` characters, each a decimal digit or the wildcard A."""
    text = str(pattern or "").strip().upper()
    if len(text) != digits or not all(c in "0123456789A" for c in text):
        raise PermanentError(f"search pattern must be {digits} digits or A (wildcard), got {pattern!r}")
    return text


def fits(pattern: str, address: str) -> bool:
    """Does `address` fit `pattern` (A matches any digit)?"""
    return len(pattern) == len(address) and all(
        p in (WILDCARD_DIGIT, a) for p, a in zip(pattern.upper(), address.upper(), strict=True)
    )


def from_timeout(err: ReplyTimeout) -> ProbeResult:
    """No acceptable frame: silence, or the garble of overlapping replies."""
    if err.heard_data or err.rejected_total:
        return ProbeResult(
            Probe.COLLISION, detail={"bytes": err.received_total, "rejected": err.rejected_total}
        )
    return ProbeResult(Probe.SILENT)
