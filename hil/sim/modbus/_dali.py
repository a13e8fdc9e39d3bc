"""A Modbus-DALI gateway: one unit id in front of the lamps of a DALI line (issue 18).

The map is the HMS Intesis "Modbus Server - DALI" one (user manual r1.3, section 2.4), which the
profile `modbus-intesis-dali-lamp` reads: each ballast's signals at 100 x its short address (0..63)
plus the signal number, holding and input registers alike (functions 03 and 04), addresses the map
does not define read 0, and nothing is answered past 20000 (the last address the gateway's poll
records reach). Each ballast is a `SimDevice` of that profile (its behaviour: `DALI_LAMP`), so a
test sets one lamp's `state.fault` and its neighbours stay lit.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from pymodbus.constants import ExcCodes

from citynerve.hil.sim.modbus._devices import SimDevice, SimProfile

DALI_LAMP_PROFILE = "modbus-intesis-dali-lamp"
BALLAST_STRIDE = 100  # registers from one short address to the next
LAST_ADDRESS = 20000


class SimDaliGateway(SimDevice):
    """The gateway on `unit`, with a DALI LED driver at each of `short_addresses`."""

    def __init__(
        self,
        unit: int,
        short_addresses: Iterable[int],
        *,
        seed: int = 0,
        speed: float = 1.0,
        utc_offset_h: float = 8.0,
        clock: Any = time.time,
    ) -> None:
        profile = SimProfile.load(DALI_LAMP_PROFILE)
        super().__init__(profile, unit, seed=seed, speed=speed, utc_offset_h=utc_offset_h, clock=clock)
        self.ballasts: dict[int, SimDevice] = {}
        for sa in short_addresses:
            if not 0 <= sa <= 63:
                raise ValueError(f"DALI short address {sa} is not 0..63")
            self.ballasts[sa] = SimDevice(
                profile, unit, seed=seed * 64 + sa + 1, speed=speed, utc_offset_h=utc_offset_h, clock=clock
            )

    def registers(self, table: str, address: int, count: int) -> list[int] | list[bool] | ExcCodes:
        if table not in ("holding", "input"):
            return ExcCodes.ILLEGAL_FUNCTION  # the manual names functions 03, 04, 06 and 16 only
        if address + count - 1 > LAST_ADDRESS:
            return ExcCodes.ILLEGAL_ADDRESS
        self.reads += 1
        words = [0] * count
        lo, hi = self.profile.extent["holding"]
        for sa in range(address // BALLAST_STRIDE, (address + count - 1) // BALLAST_STRIDE + 1):
            ballast = self.ballasts.get(sa)
            if ballast is None:
                continue
            base = sa * BALLAST_STRIDE
            first, end = max(address, base + lo), min(address + count, base + hi)
            if first >= end:
                continue
            got = ballast.registers("holding", first - base, end - first)
            if isinstance(got, ExcCodes):
                return got
            words[first - address : end - address] = [int(w) for w in got]
        for i in range(count):
            written = self.written.get((table, address + i))
            if written is not None:
                words[i] = written
        return words

    def write(self, table: str, address: int, values: list[int] | list[bool]) -> ExcCodes | None:
        """Kept and read back (an arc power level written reads back; the lamps do not follow it)."""
        if table != "holding":
            return ExcCodes.ILLEGAL_FUNCTION
        if address + len(values) - 1 > LAST_ADDRESS:
            return ExcCodes.ILLEGAL_ADDRESS
        for i, v in enumerate(values):
            self.written[(table, address + i)] = int(v)
            self.written[("input", address + i)] = int(v)
        return None
