"""A null-modem cable between two pty slaves, for peers that open a serial port by path themselves
(third-party meter simulators): bytes written on one end come out of the other, like socat's
`pty,raw pty,raw`."""

from __future__ import annotations

import asyncio
import contextlib
import os

from citynerve.hil.sim.serial._bus import _open_pty


class NullModem:
    """`async with NullModem() as (port_a, port_b):` two paths wired to each other."""

    def __init__(self) -> None:
        self._ends: list[tuple[int, int, str]] = []

    async def __aenter__(self) -> tuple[str, str]:
        self._ends = [_open_pty(), _open_pty()]
        loop = asyncio.get_running_loop()
        (ma, _, pa), (mb, _, pb) = self._ends
        loop.add_reader(ma, self._copy, ma, mb)
        loop.add_reader(mb, self._copy, mb, ma)
        return pa, pb

    async def __aexit__(self, *exc: object) -> None:
        loop = asyncio.get_running_loop()
        for master, slave, _ in self._ends:
            loop.remove_reader(master)
            os.close(master)
            os.close(slave)
        self._ends = []

    @staticmethod
    def _copy(src: int, dst: int) -> None:
        with contextlib.suppress(OSError):
            data = os.read(src, 4096)
            if data:
                os.write(dst, data)
