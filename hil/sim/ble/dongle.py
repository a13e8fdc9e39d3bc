"""A virtual HCI dongle: a bumble controller on a VirtualRadio, served over an HCI transport.

Another process (the `citynerve` CLI, `citynerve run`) can then use the radio exactly as it would
use a USB dongle through bumble: bus config `backend = "bumble"`, `transport = "tcp-client:..."`.
"""

from __future__ import annotations

import contextlib
import socket
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
        self, radio: VirtualRadio, *, port: int | None = None, address: str = "F0:D0:00:00:00:01"
    ) -> None:
        self.radio = radio
        self.port = port or free_tcp_port()
        self.address = address
        self._transport: Transport | None = None
        self.controller: Controller | None = None

    @property
    def client_transport(self) -> str:
        return f"tcp-client:127.0.0.1:{self.port}"

    async def __aenter__(self) -> VirtualDongle:
        self._transport = await open_transport(f"tcp-server:127.0.0.1:{self.port}")
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
