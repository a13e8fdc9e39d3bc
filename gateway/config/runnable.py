"""Checks that what `citynerve run` opens can be opened, so `config check` refuses it first: one bus
per serial port (the second would find it locked, its devices offline for good), and a control
socket path the kernel takes (AF_UNIX: at most 107 bytes; a relative path resolved under a deep
config folder is longer, and `run` died binding it). A baud rate no adapter is usually set to
(`96000` typed for 9600) is only warned of: odd rates exist (and not at all where it sets no line:
socket://, loop://)."""

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


STANDARD_BAUDRATES = (
    300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200,
    230400, 460800, 500000, 576000, 921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000,
    3500000, 4000000,
)  # fmt: skip
"""The rates Linux's termios names from 300 baud up (pyserial sets any other through BOTHER)."""


RATELESS_URL_SCHEMES = ("socket", "loop")
"""pyserial URL schemes whose baud rate sets no line: a raw TCP bridge (the device server's own
settings hold) and a loopback. Not rfc2217:// (the rate goes to the device server, which sets its
UART with it), nor spy://, alt://, hwgrep://, cp2110:// (a real UART, opened with it)."""


def baudrate_problem(bus: BusConfig) -> str | None:
    """Why a serial bus's baud rate looks like a typo, with the standard rate meant, or None.

    A digit too many or too few (96000, 960) means the rate ten times smaller or larger when that is
    standard; otherwise the standard rate nearest by ratio is suggested. None where the rate sets no
    line (RATELESS_URL_SCHEMES; pyserial matches the scheme in lower case)."""
    if not isinstance(bus, SerialSettings) or bus.baudrate in STANDARD_BAUDRATES:
        return None
    scheme, url, _ = bus.port.lower().partition("://")
    if url and scheme in RATELESS_URL_SCHEMES:
        return None
    baud = bus.baudrate
    typo = [r for r in STANDARD_BAUDRATES if r in (baud * 10, baud / 10)]
    meant = typo[0] if typo else min(STANDARD_BAUDRATES, key=lambda r: max(r, baud) / min(r, baud))
    return f"bus {bus.id!r}: {baud} baud is not a standard rate; did you mean {meant}?"


def serial_device(bus: BusConfig) -> str | None:
    """The serial device an enabled bus opens (links resolved: /dev/serial/by-id/... is the
    /dev/ttyUSB0 it names), or None: not a serial bus, disabled, or a pyserial URL (socket://,
    rfc2217://, loop://), which opens no local device."""
    if not isinstance(bus, SerialSettings) or not bus.enabled or "://" in bus.port:
        return None
    return os.path.realpath(bus.port)


__all__ = [
    "MAX_SOCKET_PATH_BYTES",
    "RATELESS_URL_SCHEMES",
    "STANDARD_BAUDRATES",
    "baudrate_problem",
    "serial_device",
    "socket_path_problem",
]
