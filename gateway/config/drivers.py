"""Find protocol drivers by bus protocol name through the `citynerve.drivers` entry points.

Loaded lazily, one protocol at a time, so a gateway that has no BLE bus never imports BLE code.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points

from citynerve.gateway.api import DriverSpec, PermanentError

GROUP = "citynerve.drivers"


class DriverNotFoundError(PermanentError):
    def __init__(self, protocol: str, reason: str) -> None:
        self.protocol = protocol
        self.reason = reason
        super().__init__(f"protocol {protocol!r}: {reason}")


def known_protocols() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


@cache
def driver_spec(protocol: str) -> DriverSpec:
    """The DriverSpec registered for `protocol`. Raises DriverNotFoundError."""
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == protocol]
    if not eps:
        raise DriverNotFoundError(protocol, f"unknown protocol (known: {', '.join(known_protocols())})")
    try:
        spec = eps[0].load()
    except Exception as err:  # a broken or missing driver package must not stop config checking
        raise DriverNotFoundError(protocol, f"driver failed to load: {err}") from err
    if not isinstance(spec, DriverSpec):
        raise DriverNotFoundError(protocol, f"entry point {eps[0].value} is not a DriverSpec")
    return spec
