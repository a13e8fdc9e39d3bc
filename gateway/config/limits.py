"""The shortest poll interval each bus type can keep up with (docs/installer-guide.md, "Poll intervals").

A shorter interval does not give fresher data: the line is busy all the time, every other device on it
waits, and slow meters miss replies. Serial buses scale with the baud rate: one transaction's bytes take
longer on a slower line. Listening buses (fire panel, BTHome) take the interval as the heartbeat a
device is expected to keep, and no node or panel reports meaningfully faster than once a second.
"""

from __future__ import annotations

from citynerve.gateway.api import BusConfig

MIN_POLL_S: dict[str, tuple[float, int | None]] = {
    # protocol: (minimum interval in seconds, at this baud rate; None: not a serial line)
    "modbus_tcp": (0.1, None),
    "modbus_rtu_over_tcp": (0.2, None),
    "modbus_rtu": (0.5, 9600),
    "dlt645": (1.0, 2400),
    "cjt188": (1.0, 2400),
    "firepanel": (1.0, None),
    "bthome": (1.0, None),
}
DEFAULT_MIN_POLL_S = 0.1
"""For a protocol not in the table (a third-party driver)."""
FLOOR_S = 0.1


def min_poll_interval_s(bus: BusConfig) -> float:
    """The shortest poll interval allowed for devices on `bus`."""
    base, at_baud = MIN_POLL_S.get(bus.protocol, (DEFAULT_MIN_POLL_S, None))
    baud = getattr(bus, "baudrate", None)
    if at_baud is None or not isinstance(baud, int) or baud <= 0:
        return base
    # Slower line, longer transactions: the minimum grows in proportion; a faster line lowers it
    # down to half the table's value (devices still need time to answer).
    return round(max(base * at_baud / baud, base / 2, FLOOR_S), 3)


def describe(bus: BusConfig) -> str:
    """'modbus_rtu at 2400 baud' / 'modbus_tcp', for messages."""
    baud = getattr(bus, "baudrate", None)
    _, at_baud = MIN_POLL_S.get(bus.protocol, (DEFAULT_MIN_POLL_S, None))
    return f"{bus.protocol} at {baud} baud" if at_baud is not None and isinstance(baud, int) else bus.protocol
