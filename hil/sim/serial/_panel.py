"""A fire panel's printer port on a pty: writes GST-style GB2312 records like a real panel prints."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from datetime import datetime
from pathlib import Path

from citynerve.hil.sim.serial._bus import _open_pty

LOCATIONS = ("一层大厅东侧", "二层走廊", "三层配电间", "地下车库B区", "五层电梯前室", "屋顶水箱间")


class FirePanelStream:
    """`async with FirePanelStream() as panel:` then the gateway listens on `panel.port`.

    `record(event, loop=, device=, device_type=, location=)` prints one record line;
    `alarm`, `fault`, `fault_cleared`, `reset` are shorthands; `line(text)` prints any text and
    `noise(n)` sends bytes that are not text. `encoding` is what the panel prints in (GB2312).
    `byte_time_s` > 0 paces the output like a slow printer port.
    """

    def __init__(
        self,
        *,
        encoding: str = "gb2312",
        line_end: bytes = b"\r\n",
        link: str | Path | None = None,
        byte_time_s: float = 0.0,
        seed: int = 7,
    ) -> None:
        self.encoding = encoding
        self.line_end = line_end
        self.link = Path(link) if link else None
        self.byte_time_s = byte_time_s
        self.lines_sent = 0
        self._rng = random.Random(seed)
        self._master = self._slave = -1
        self._slave_path = ""

    @property
    def port(self) -> str:
        return str(self.link) if self.link else self._slave_path

    async def __aenter__(self) -> FirePanelStream:
        self._master, self._slave, self._slave_path = _open_pty()
        # the panel never reads: drain what a misconfigured gateway might send so the pty never fills
        asyncio.get_running_loop().add_reader(self._master, self._drain)
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self._slave_path)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
            self._master = self._slave = -1
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def _drain(self) -> None:
        with contextlib.suppress(OSError):
            os.read(self._master, 4096)

    async def send(self, data: bytes) -> None:
        if self.byte_time_s <= 0:
            os.write(self._master, data)
            return
        for i in range(len(data)):
            os.write(self._master, data[i : i + 1])
            await asyncio.sleep(self.byte_time_s)

    async def line(self, text: str) -> None:
        await self.send(text.encode(self.encoding, errors="replace") + self.line_end)
        self.lines_sent += 1

    async def record(
        self,
        event: str,
        *,
        loop: int | None = None,
        device: int | None = None,
        device_type: str = "",
        location: str = "",
        when: datetime | None = None,
    ) -> str:
        stamp = (when or datetime.now()).strftime("%y/%m/%d %H:%M")
        where = f"{loop:03d}回路{device:03d}号" if loop is not None and device is not None else ""
        text = "  ".join(p for p in (event, stamp, where, device_type, location) if p)
        await self.line(text)
        return text

    async def alarm(
        self,
        loop: int = 4,
        device: int = 4,
        *,
        device_type: str = "感烟探测器",
        location: str = "",
        first: bool = True,
    ) -> str:
        return await self.record(
            "首次火警" if first else "火警",
            loop=loop,
            device=device,
            device_type=device_type,
            location=location or self._rng.choice(LOCATIONS),
        )

    async def fault(
        self, loop: int = 1, device: int = 12, *, device_type: str = "手动报警按钮", location: str = ""
    ) -> str:
        return await self.record(
            "故障",
            loop=loop,
            device=device,
            device_type=device_type,
            location=location or self._rng.choice(LOCATIONS),
        )

    async def fault_cleared(
        self, loop: int = 1, device: int = 12, *, device_type: str = "手动报警按钮", location: str = ""
    ) -> str:
        return await self.record(
            "故障恢复", loop=loop, device=device, device_type=device_type, location=location
        )

    async def reset(self) -> str:
        return await self.record("复位")

    async def noise(self, count: int = 16) -> None:
        await self.send(bytes(self._rng.randrange(256) for _ in range(count)) + self.line_end)
