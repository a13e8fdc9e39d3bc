"""Row codec fuzzing: whatever a damaged row holds, decoding returns a record or raises one of the
errors `peek` expects (then skips the row); it never raises anything else."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from citynerve.gateway.api import Event, Reading
from citynerve.gateway.store._codec import decode_event, decode_reading, encode_event, encode_value
from citynerve.gateway.store._outbox import DECODE_ERRORS

json_like = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=10) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(
    body=st.one_of(
        st.text(max_size=200),
        json_like.map(json.dumps),
        # Near misses: the right shape with wrong field types.
        st.tuples(*(json_like for _ in range(9))).map(lambda t: json.dumps(list(t))),
        st.tuples(
            st.text(max_size=3), st.text(max_size=3), st.sampled_from(["raised", "cleared", "x"]),
            st.integers(-1, 5), st.text(max_size=3), json_like, st.text(max_size=3), json_like,
            st.text(max_size=3),
        ).map(lambda t: json.dumps(list(t))),
    ),
    ts=st.floats(),
)  # fmt: skip
def test_decode_event_on_garbage(body: str, ts: float) -> None:
    try:
        ev = decode_event(ts, body)
    except DECODE_ERRORS:
        return
    assert isinstance(ev, Event) and isinstance(ev.attrs, dict) and isinstance(ev.device_id, str)
    encode_event(ev)  # what decodes can be stored again


@settings(max_examples=200, deadline=None)
@given(
    kind=st.integers(min_value=-(2**63), max_value=2**63 - 1),
    raw=st.one_of(
        st.none(), st.integers(-(2**63), 2**63 - 1), st.floats(), st.text(max_size=30), st.binary()
    ),
)
def test_decode_reading_on_garbage(kind: int, raw: object) -> None:
    try:
        r = decode_reading("d", "p", "u", 1.0, kind, raw)
    except DECODE_ERRORS:
        return
    assert isinstance(r, Reading)


def test_deep_nesting_is_a_decode_error() -> None:
    try:
        decode_event(1.0, "[" * 100_000)
    except DECODE_ERRORS:
        pass
    else:  # pragma: no cover - the assertion below explains
        raise AssertionError("expected a decode error")


@given(value=st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text()))
def test_encode_value_accepts_every_value_type(value: object) -> None:
    code, _stored = encode_value(value)  # type: ignore[arg-type]
    assert 0 <= code <= 3
