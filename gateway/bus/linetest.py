"""Line-quality test: N transactions on a bus, with success rate, failures by kind, latency spread
and the serial driver's own error counters (`diag line --bus ID --repeat N`).

It runs through whatever runs transactions: the bus owner (between its polls, one transaction per
job, so polling goes on) or a driver opened directly when no gateway runs. Every configured device
is asked in turn for its first poll request, so a line with one bad device shows it in the per-device
table. The kernel's counters of the UART (parity, framing, break, overrun errors: TIOCGICOUNT on
Linux) are read before and after; pseudo-terminals and USB adapters whose driver keeps none say
"not available" rather than zeros.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from citynerve.gateway.api import DeviceConfig, GatewayError, PollRequest
from citynerve.gateway.bus.jobs import BusStoppedError
from citynerve.gateway.bus.verdict import kind_of

MAX_REPEAT = 10_000
TIOCGICOUNT = 0x545D  # Linux: struct serial_icounter_struct, 20 ints
_ICOUNT = struct.Struct("20i")
_ICOUNT_FIELDS = ("cts", "dsr", "rng", "dcd", "rx", "tx", "frame", "overrun", "parity", "brk", "buf_overrun")
SHOWN_COUNTERS = ("parity", "frame", "brk", "overrun", "buf_overrun", "rx", "tx")

Transact = Callable[[DeviceConfig, PollRequest], Awaitable[object]]


def serial_counters(port: str) -> dict[str, int] | None:
    """The UART's error counters of `port` (TIOCGICOUNT), or None where the OS gives none.

    A second descriptor of the same tty reads the same per-port counters; it is opened without
    touching the line settings and closed at once."""
    if not port.startswith("/dev/"):
        return None
    try:
        fd = os.open(port, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return None
    try:
        raw = fcntl.ioctl(fd, TIOCGICOUNT, bytes(_ICOUNT.size))
    except OSError:  # a pty (ENOTTY / EINVAL) or a driver without counters
        return None
    finally:
        os.close(fd)
    values = _ICOUNT.unpack(raw)
    return dict(zip(_ICOUNT_FIELDS, values, strict=False))


def _percentile(sorted_ms: Sequence[float], q: float) -> float:
    index = min(len(sorted_ms) - 1, max(0, round(q * (len(sorted_ms) - 1))))
    return round(sorted_ms[index], 2)


def latency_summary(latencies_ms: Sequence[float]) -> dict[str, float] | None:
    if not latencies_ms:
        return None
    s = sorted(latencies_ms)
    return {
        "min": round(s[0], 2),
        "p50": _percentile(s, 0.5),
        "p90": _percentile(s, 0.9),
        "p99": _percentile(s, 0.99),
        "max": round(s[-1], 2),
    }


async def run_line_test(
    transact: Transact,
    plans: Sequence[tuple[DeviceConfig, PollRequest]],
    repeat: int,
    *,
    port: str | None = None,
) -> dict[str, Any]:
    """Run `repeat` transactions over `plans` (device, request) in turn and report on the line."""
    if not plans:
        raise GatewayError("no device with a poll request on this bus: nothing to test the line with")
    repeat = max(1, min(repeat, MAX_REPEAT))
    before = serial_counters(port) if port else None
    ok = 0
    by_kind: dict[str, int] = {}
    first_error: dict[str, str] = {}
    latencies: list[float] = []
    per_device: dict[str, dict[str, int]] = {}
    started = time.monotonic()
    for i in range(repeat):
        device, request = plans[i % len(plans)]
        row = per_device.setdefault(device.id, {"attempts": 0, "ok": 0})
        row["attempts"] += 1
        t0 = time.monotonic()
        try:
            await transact(device, request)
        except BusStoppedError:
            raise  # not a fact about the line: the test ends (it went on, each transaction refused)
        except GatewayError as err:
            kind = str(kind_of(err))
            by_kind[kind] = by_kind.get(kind, 0) + 1
            first_error.setdefault(kind, str(err))
            row[kind] = row.get(kind, 0) + 1
            continue
        latencies.append((time.monotonic() - t0) * 1000)
        ok += 1
        row["ok"] += 1
    after = serial_counters(port) if port else None
    counters: dict[str, int] | None = None
    if before is not None and after is not None:
        counters = {k: after[k] - before[k] for k in SHOWN_COUNTERS}
    return {
        "transactions": repeat,
        "ok": ok,
        "success_rate": round(ok / repeat, 4),
        "failures_by_kind": by_kind,
        "first_error_by_kind": first_error,
        "latency_ms": latency_summary(latencies),
        "devices": per_device,
        "duration_s": round(time.monotonic() - started, 2),
        "serial_counters": counters,
        "serial_counters_note": (
            None
            if counters is not None
            else "not available (a pseudo-terminal, a network port, or a driver without TIOCGICOUNT)"
        ),
    }


def first_requests(
    devices: Sequence[DeviceConfig], plan: Callable[[DeviceConfig], Sequence[PollRequest]]
) -> list[tuple[DeviceConfig, PollRequest]]:
    out = []
    for device in devices:
        with contextlib.suppress(GatewayError):
            requests = list(plan(device))
            if requests:
                out.append((device, requests[0]))
    return out


def serial_port_of(bus: object) -> str | None:
    """The device path of a serial bus (None for TCP and radio buses)."""
    port = getattr(bus, "port", None)
    return port if isinstance(port, str) else None


LINE_TEST = "line-test"  # the diag action name, handled by the owner and the direct route alike


async def line_test_with(
    driver: object, devices: Sequence[DeviceConfig], bus: object, params: dict[str, Any], transact: Transact
) -> dict[str, Any]:
    """The `line-test` action for a poll driver: params {repeat}."""
    from citynerve.gateway.api import PermanentError, PollDriver

    if not isinstance(driver, PollDriver):
        raise PermanentError("a listen-only bus has no transactions to test: use its own stats")
    plans = first_requests(devices, driver.plan)
    return await run_line_test(transact, plans, int(params.get("repeat", 50)), port=serial_port_of(bus))
