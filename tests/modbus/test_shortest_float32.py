"""`shortest_float32` (bisection over the digits) gives what the digit-by-digit scan gives.

The bisection rests on an argument (docs in the function); these compare the two on every kind of
float32: random bit patterns over all exponents, runs of consecutive float32s around powers of two
and of ten (where the grid changes), subnormals, integers, short decimals, the extremes.
"""

from __future__ import annotations

import math
import random
import struct

from citynerve.gateway.api import shortest_float32
from citynerve.gateway.api._records import _shortest_float32_scan

F32 = struct.Struct("<f")
U32 = struct.Struct("<I")


def as_float(bits: int) -> float:
    return F32.unpack(U32.pack(bits))[0]


def as_bits(x: float) -> int:
    return U32.unpack(F32.pack(x))[0]


def check(x: float) -> None:
    expected = _shortest_float32_scan(x, F32.pack(x))
    got = shortest_float32(x)
    assert got == expected and math.copysign(1, got) == math.copysign(1, expected), (x, got, expected)
    assert F32.pack(got) == F32.pack(x)


def neighbours(x: float, n: int) -> list[float]:
    """`n` float32s on each side of `x` (positive, finite)."""
    bits = as_bits(x)
    out = []
    for b in range(max(1, bits - n), min(0x7F7FFFFF, bits + n) + 1):
        out.append(as_float(b))
    return out


def test_random_bit_patterns_over_all_exponents() -> None:
    rng = random.Random(32)
    for _ in range(60_000):
        x = as_float(rng.getrandbits(32))
        if math.isfinite(x):
            check(x)


def test_runs_around_powers_of_two_and_of_ten() -> None:
    for e in range(-149, 128, 3):
        for x in neighbours(2.0**e, 20):
            check(x)
            check(-x)
    for e in range(-45, 39):
        ten = F32.unpack(F32.pack(10.0**e))[0] if 10.0**e < 3.4e38 else 3.4e38
        for x in neighbours(F32.unpack(F32.pack(ten))[0], 40):
            check(x)


def test_subnormals_integers_short_decimals_and_extremes() -> None:
    for bits in range(1, 3000):
        check(as_float(bits))
    for bits in range(0x007FF000, 0x00801000):  # the last subnormals and the first normals
        check(as_float(bits))
    rng = random.Random(7)
    for _ in range(5000):
        check(float(F32.unpack(F32.pack(float(rng.randrange(2**26))))[0]))
        decimal = rng.randrange(1, 10**6) / 10 ** rng.randrange(0, 9)
        check(F32.unpack(F32.pack(decimal))[0])
    for x in (0.0, -0.0, 3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45, 16777217.0):
        check(F32.unpack(F32.pack(x))[0])
    assert shortest_float32(230.10000610351562) == 230.1
    assert math.isnan(shortest_float32(math.nan)) and shortest_float32(math.inf) == math.inf
