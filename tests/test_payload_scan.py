"""The bounded JSON loader's depth pre-scan runs on the event loop (control socket, uplink commands
and acks), so it must read each byte once: an unterminated string full of escaped quotes - which
made the old scanner retry the string from every quote, quadratic - is scanned in linear time, and
the depth of valid JSON is what it was.

Linear is checked without a clock budget: up to 1 MiB, the hostile input must cost no more than a
few times the same bytes with the string closed (a linear baseline timed alongside)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from citynerve.gateway.payload import PayloadError, load_json, nesting_depth


def _hostile(n: int) -> bytes:
    return b'"' + b'\\"' * n  # an unterminated JSON string of escaped quotes


def _best_of(scan: Callable[[], Any], runs: int = 5) -> float:
    best = float("inf")
    for _ in range(runs):
        started = time.perf_counter()
        scan()
        best = min(best, time.perf_counter() - started)
    return best


@pytest.mark.parametrize("tail", [b"", b"\\", b"[[[", b"\\\\"])
def test_hostile_scan_costs_what_the_closed_string_costs_up_to_one_mib(tail: bytes) -> None:
    # The baseline is the same bytes with the string closed, which every scanner reads once. Both
    # are timed here and now (best of five), so the machine's speed and caches cancel out: linear
    # is about 1x at every size; the quadratic scan was 100x at 8 KiB and worse with every size.
    for n in (4 << 10, 32 << 10, 1 << 19):
        hostile = _hostile(n) + tail
        closed = _hostile(n) + b'"'
        ratio = _best_of(partial(nesting_depth, hostile, 16)) / _best_of(partial(nesting_depth, closed, 16))
        assert ratio < 8, f"{len(hostile)} hostile bytes took {ratio:.0f}x the closed string's time"


@pytest.mark.parametrize("data", [_hostile(32_000), b'[["' + b"[" * 100_000, b'["\\' + b"{" * 100_000])
def test_hostile_requests_are_refused_typed(data: bytes) -> None:
    # What follows an unterminated string is never parsed, so its brackets need not be counted.
    with pytest.raises(PayloadError, match="not JSON"):
        load_json(data, where="control", max_bytes=1 << 20)


def _depth(obj: Any) -> int:
    if isinstance(obj, list):
        return 1 + max((_depth(v) for v in obj), default=0)
    if isinstance(obj, dict):
        return 1 + max((_depth(v) for v in obj.values()), default=0)
    return 0


_TRICKY = st.text(alphabet='[]{}"\\/ab\n\t\u00e9\u2028', max_size=12)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | _TRICKY,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TRICKY, inner, max_size=4),
    max_leaves=30,
)


@given(_JSON, st.booleans())
def test_depth_of_valid_json_is_its_nesting(obj: Any, ascii_only: bool) -> None:
    text = json.dumps(obj, ensure_ascii=ascii_only).encode()
    assert nesting_depth(text, 64) == _depth(obj)


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        (b'{"a":[1,{"b":"]]"}]}', 3),
        (b'[[["x\\"]"]]]', 3),
        (b"[" * 40, 17),  # counting stops past the limit
        (b'{"k":"\\\\"}', 1),
        (b'["\\\\"]]]', 1),
        (b'[["unterminated [[[[', 2),
    ],
)
def test_depth_of_known_texts(text: bytes, depth: int) -> None:
    assert nesting_depth(text, 16) == depth
