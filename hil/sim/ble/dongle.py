"""A virtual HCI dongle: a bumble controller on a VirtualRadio, served over an HCI transport.

Another process (the `citynerve` CLI, `citynerve run`) can then use the radio exactly as it would
use a USB dongle through bumble: bus config `backend = "bumble"`, `transport = "tcp-client:..."`.
With `serial_link` the dongle is a serial one (H4 over a pseudo-terminal, `serial:<link>,...`):
its device node is there while the dongle is plugged in, as /dev/ttyACM0 is.
"""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path
from types import TracebackType

from bumble.controller import Controller
from bumble.transport import open_transport
from bumble.transport.common import Transport

from citynerve.hil.sim.ble.advertiser import VirtualRadio


def free_tcp_port() -> int:
    """A loopback TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class VirtualDongle:
    """`async with VirtualDongle(radio) as d:` then point a bumble host at `d.client_transport`."""

    def __init__(
        self,
        radio: VirtualRadio,
        *,
        port: int | None = None,
        address: str = "F0:D0:00:00:00:01",
        serial_link: str | Path | None = None,
    ) -> None:
        self.radio = radio
        self.port = port or free_tcp_port()
        self.address = address
        self.serial_link = str(serial_link) if serial_link else None
        self._transport: Transport | None = None
        self.controller: Controller | None = None

    @property
    def client_transport(self) -> str:
        if self.serial_link:
            return f"serial:{self.serial_link},1000000"
        return f"tcp-client:127.0.0.1:{self.port}"

    async def __aenter__(self) -> VirtualDongle:
        # bumble's pty transport links the pseudo-terminal to `serial_link`, and unlinks it at close
        where = f"pty:{self.serial_link}" if self.serial_link else f"tcp-server:127.0.0.1:{self.port}"
        self._transport = await open_transport(where)
        self.controller = Controller(
            "virtual-dongle",
            host_source=self._transport.source,
            host_sink=self._transport.sink,
            link=self.radio.link,
            public_address=self.address,
        )
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.controller is not None:
            with contextlib.suppress(KeyError):
                self.radio.link.remove_controller(self.controller)
        if self._transport is not None:
            await self._transport.close()
