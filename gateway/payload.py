"""One bounded JSON loader for every payload that comes from the network (MQTT commands, acks).

`load_json` checks the size first and the nesting depth next, on the raw bytes, before the standard
parser sees them: a payload of 100 000 opening brackets is refused in microseconds instead of
reaching the parser's recursion limit. Every refusal is a `PayloadError` naming where the payload
came from and why, so a caller catches exactly one type and a bad payload never ends a session.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from citynerve.gateway.api import PermanentError

DEFAULT_MAX_DEPTH = 16
"""Deeper than any message of the contract (commands nest 3 levels) with room to spare."""

# A JSON string (with escapes), or one bracket. Strings are matched so that brackets inside them
# are skipped. The possessive `*+` never gives back what it took, and an unterminated string runs
# to the end of the data: each byte is read once. (`"(?:[^"\\]|\\.)*"` retried a string that never
# closed from each of its quotes: quadratic, 12 s for 64 KiB of `\"` on the event loop.) The
# brackets after an unterminated string go uncounted; the parser stops at that string anyway.
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)|[\[\]{}]', re.DOTALL)
_OPEN = frozenset(b"[{")


class PayloadError(PermanentError):
    """A payload from outside that is not accepted: too large, nested too deep, or not JSON.

    `where` names the source (a topic kind such as ``uplink.cmd``); `reason` says what is wrong.
    """

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(f"{where}: {reason}")


def nesting_depth(data: bytes, limit: int) -> int:
    """The deepest bracket nesting of JSON text `data`, counting no further than `limit + 1`."""
    depth = deepest = 0
    for m in _TOKENS.finditer(data):
        c = m.group()
        if len(c) != 1:
            continue  # a string
        if c[0] in _OPEN:
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        else:
            depth -= 1
    return deepest


def load_json(data: bytes | str, *, where: str, max_bytes: int, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Parse JSON text from outside within `max_bytes` and `max_depth`; raise `PayloadError`.

    NaN and infinities are refused (they are not JSON), also as numbers too large for a float
    (`1e999`); text must be UTF-8.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else bytes(data)
    if len(raw) > max_bytes:
        raise PayloadError(where, f"{len(raw)} bytes, larger than {max_bytes}")
    if nesting_depth(raw, max_depth) > max_depth:
        raise PayloadError(where, f"nested deeper than {max_depth} levels")
    try:
        return json.loads(raw.decode("utf-8"), parse_constant=_no_constants, parse_float=_finite)
    except UnicodeDecodeError as err:
        raise PayloadError(where, f"not UTF-8 (byte {err.start})") from None
    except RecursionError:  # cannot happen below max_depth; kept so no parser error escapes typed
        raise PayloadError(where, "nested too deep") from None
    except ValueError as err:
        raise PayloadError(where, f"not JSON: {err}") from None


def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite(text: str) -> float:
    # 1e999 is valid JSON text but parses to inf, which no JSON number stands for.
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the number {text[:32]} is out of range (not finite)")
    return value


__all__ = ["DEFAULT_MAX_DEPTH", "PayloadError", "load_json", "nesting_depth"]
