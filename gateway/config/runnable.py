"""Checks that what `citynerve run` opens can be opened, so `config check` refuses it first: one bus
per serial port (the second would find it locked, its devices offline for good), and a control
socket path the kernel takes (AF_UNIX: at most 107 bytes; a relative path resolved under a deep
config folder is longer, and `run` died binding it)."""

from __future__ import annotations

import os

from citynerve.gateway.api import BusConfig, SerialSettings

MAX_SOCKET_PATH_BYTES = 107
"""sun_path is 108 bytes on Linux, the last one the terminating NUL."""


def socket_path_problem(path: str) -> str | None:
    """Why a Unix socket cannot be bound at `path` (the resolved path), or None."""
    size = len(os.fsencode(path))
    if size <= MAX_SOCKET_PATH_BYTES:
        return None
    return (
        f"resolves to {path!r}: {size} bytes, longer than a Unix socket path may be "
        f"({MAX_SOCKET_PATH_BYTES}); use a shorter absolute path, e.g. /run/citynerve/gateway.sock"
    )


def serial_device(bus: BusConfig) -> str | None:
    """The serial device an enabled bus opens (links resolved: /dev/serial/by-id/... is the
    /dev/ttyUSB0 it names), or None: not a serial bus, disabled, or a pyserial URL (socket://,
    rfc2217://, loop://), which opens no local device."""
    if not isinstance(bus, SerialSettings) or not bus.enabled or "://" in bus.port:
        return None
    return os.path.realpath(bus.port)


__all__ = ["MAX_SOCKET_PATH_BYTES", "serial_device", "socket_path_problem"]
