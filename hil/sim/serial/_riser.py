"""A riser of 30 meters on one RS-485 line, for the meter search: addresses chosen so the search
meets a collision at every digit (two meters that differ only in their first digit share the other
eleven), mixed DL/T 645 versions, and CJ/T 188 meters of several types and both DI byte orders."""

from __future__ import annotations

from citynerve.drivers.cjt188 import codec as cjt
from citynerve.hil.sim.serial._meters import SimCjt188Meter, SimDlt645Meter

# 28 flats on one street prefix (three share each last digit: a collision there, resolved by the
# tens digit), and two meters that differ only in their first digit: the search meets a collision at
# every one of the twelve digits on the way to them.
_DLT_ADDRESSES = (
    *(f"3101060000{n:02d}" for n in range(1, 29)),
    "100000000039",
    "200000000039",
)
_DLT_1997 = frozenset({"310106000003", "310106000017", "310106000028", "200000000039"})


def riser_dlt645() -> list[SimDlt645Meter]:
    """30 DL/T 645 meters; four of them still speak DL/T 645-1997."""
    assert len(set(_DLT_ADDRESSES)) == 30
    return [SimDlt645Meter(a, version="1997" if a in _DLT_1997 else "2007") for a in _DLT_ADDRESSES]


def riser_cjt188() -> list[SimCjt188Meter]:
    """30 CJ/T 188 meters: cold water (10), hot water (11), heat (20); every third sends its DIs low
    byte first. Addresses collide at every digit as on the DL/T 645 riser."""
    addresses = [f"{a}00" for a in _DLT_ADDRESSES]  # 14 digits
    types = (0x10, 0x10, 0x11, 0x20)
    return [
        SimCjt188Meter(
            a,
            meter_type=types[i % len(types)],
            di_order=cjt.DiOrder.LOW_FIRST if i % 3 == 2 else cjt.DiOrder.HIGH_FIRST,
            seed=i + 1,
        )
        for i, a in enumerate(addresses)
    ]
