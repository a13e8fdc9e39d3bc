"""Bad input to the `diag` commands, refused before any line is touched: a typed usage error (exit 2)
in the field's words ("--address: a DL/T 645 address is 12 digits, got '161'"), never a library's
("String should match pattern '^[0-9]{12}$'", "invalid literal for int() with base 16")."""

from __future__ import annotations

import re
from typing import IO, Any

import click

from citynerve.gateway.api import BusConfig, meter_address_problem
from citynerve.gateway.cli._exit import EXIT_INVALID, consoles
from citynerve.gateway.config import GatewayConfig


class DiagInputError(click.ClickException):
    """Bad input to a diag command: `param` (the option, e.g. --address) and `reason`. Shown as one
    line like every other diag error (`error: --address: ...`), exit 2."""

    exit_code = EXIT_INVALID

    def __init__(self, param: str, reason: str) -> None:
        self.param = param
        self.reason = reason
        super().__init__(f"{param}: {reason}")

    def show(self, file: IO[Any] | None = None) -> None:
        from rich.markup import escape

        consoles()[1].print(f"[bold red]error:[/] {escape(self.message)}", highlight=False, soft_wrap=True)


_DI = re.compile(r"(?:0[xX])?(?:[0-9A-Fa-f]{4}|[0-9A-Fa-f]{8})")


def configured_bus(cfg: GatewayConfig, bus_id: str) -> BusConfig:
    """The bus `bus_id` of the config, or a usage error listing the buses it has."""
    try:
        return cfg.bus(bus_id)
    except KeyError:
        known = ", ".join(b.id for b in cfg.buses) or "none"
        raise DiagInputError("--bus", f"no bus {bus_id!r} in the config (buses: {known})") from None


def meter_address(value: str, *, digits: int, protocol: str, device_ids: set[str]) -> str:
    """A meter address as printed (`digits` digits, leading zeros included) or the id of a device of
    the bus (`device_ids`); else a usage error naming --address."""
    text = value.strip()
    problem = meter_address_problem(value, digits=digits, protocol=protocol)
    if problem is None or text in device_ids:
        return text
    also = "; or give a device id of the bus" if device_ids else ""
    raise DiagInputError("--address", f"{problem}{also}")


def dlt645_di(value: str) -> str:
    """A DL/T 645 data identifier: 8 hex digits (2007) or 4 (1997)."""
    if _DI.fullmatch(value.strip()) is None:
        raise DiagInputError(
            "--di",
            f"a DL/T 645 DI is 8 hex digits (2007, e.g. 00010000) or 4 (1997, e.g. 9010), got {value!r}",
        )
    return value.strip()


def hex_byte(value: str, *, param: str, what: str) -> str:
    """A byte written in hex as printed ("10"), else a usage error naming `param`."""
    text = value.strip().removeprefix("0x").removeprefix("0X")
    if not (1 <= len(text) <= 2 and all(c in "0123456789abcdefABCDEF" for c in text)):
        raise DiagInputError(param, f"{what} is a hex byte such as 10, got {value!r}")
    return value.strip()
