"""A TCP peer that closes idle connections: a proxy in front of a real protocol peer (a pymodbus
server, a simulated meter line) that closes a client connection after `idle_s` seconds without
traffic, as serial device servers (an "inactivity timeout" of a few seconds) and some TCP meters do.
Everything in between is passed on unchanged, so the peer behind it answers every request.

Usage::

    async with IdleClosingProxy(upstream=(host, port), idle_s=0.3) as proxy:
        ...  # the gateway connects to proxy.host, proxy.port
        proxy.idle_closed          # connections closed for idling
        proxy.cut_after_request = True   # close a connection once a request has gone through
        proxy.requests             # chunks passed on towards the peer
"""

from __future__ import annotations

import asyncio
import contextlib
from types import TracebackType

__all__ = ["IdleClosingProxy"]


class IdleClosingProxy:
    """Listens on 127.0.0.1 (a free port); each client connection gets its own upstream one."""

    def __init__(self, *, upstream: tuple[str, int], idle_s: float) -> None:
        self.upstream = upstream
        self.idle_s = idle_s
        self.host = "127.0.0.1"
        self.port = 0
        self.accepted = 0  # client connections accepted
        self.idle_closed = 0  # of them, closed after idle_s without traffic
        self.requests = 0  # chunks passed on towards the peer (one per request, as clients send)
        # Close the client side right after passing a request on (its reply is never delivered):
        # a connection lost after the request left.
        self.cut_after_request = False
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[object]] = set()

    async def __aenter__(self) -> IdleClosingProxy:
        self._server = await asyncio.start_server(self._serve, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def stop(self) -> None:
        """Stop listening and close every connection (the endpoint is gone: connects are refused)."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        upstream_w: asyncio.StreamWriter | None = None
        try:
            upstream_r, upstream_w = await asyncio.open_connection(*self.upstream)
            activity = asyncio.Event()
            async with asyncio.TaskGroup() as group:
                to_peer = group.create_task(self._pump(client_r, upstream_w, activity, request=True))
                to_client = group.create_task(self._pump(upstream_r, client_w, activity, request=False))
                while not to_peer.done() and not to_client.done():
                    activity.clear()
                    try:
                        async with asyncio.timeout(self.idle_s):
                            await activity.wait()
                    except TimeoutError:
                        self.idle_closed += 1
                        break
                to_peer.cancel()
                to_client.cancel()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            for writer in (client_w, upstream_w):
                if writer is not None:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        activity: asyncio.Event,
        *,
        request: bool,
    ) -> None:
        try:
            while data := await reader.read(4096):
                activity.set()
                if request:
                    self.requests += 1
                writer.write(data)
                await writer.drain()
                if request and self.cut_after_request:
                    return  # the connection is closed: the reply never reaches the client
        except OSError:
            pass
        finally:
            activity.set()  # wake the watch: this side is done
