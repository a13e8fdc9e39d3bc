"""`citynerve diag line --bus ID --repeat N`: how good is this line? (any polled protocol)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import click
from rich.table import Table

from citynerve.gateway.api import GatewayError
from citynerve.gateway.bus.linetest import LINE_TEST, MAX_REPEAT
from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    config_option,
    console,
    esc,
    fail,
    json_option,
    load_or_exit,
    print_json,
)
from citynerve.gateway.cli._groups import diag
from citynerve.gateway.cli._usage import configured_bus
from citynerve.gateway.diagbus import DiagSession

GOOD_RATE = 0.99  # below this the line needs work: exit 1


@diag.command("line")
@config_option
@click.option("--bus", "bus_id", required=True, help="Bus id from the config.")
@click.option(
    "--repeat",
    type=click.IntRange(1, MAX_REPEAT),
    default=100,
    show_default=True,
    help="Transactions to run.",
)
@json_option
def line(config_path: Path, bus_id: str, repeat: int, as_json: bool) -> None:
    """Line-quality test: run N transactions (each configured device in turn) and report the success
    rate, failures by kind (timeout, checksum, framing, wrong address...), the latency spread and the
    serial driver's own parity / framing / break / overrun counters where the OS keeps them.

    Runs through the running gateway's bus owner (polling goes on between the test's transactions),
    else on the port directly. Exits 1 when fewer than 99 % of the transactions succeed.
    """
    cfg = load_or_exit(config_path)
    configured_bus(cfg, bus_id)  # an unknown bus is bad input (exit 2), before any session

    async def run() -> dict[str, Any]:
        async with DiagSession(cfg, bus_id, timeout_s=max(120.0, repeat * 5.0)) as session:
            result = await session.run(LINE_TEST, {"repeat": repeat})
            result["route"] = session.route.value if session.route else None
            result["bus"] = bus_id
            return result

    try:
        result = asyncio.run(run())
    except GatewayError as err:
        fail(str(err))
    if as_json:
        print_json(result)
    else:
        show_line_test(result)
    if result["success_rate"] < GOOD_RATE:
        raise SystemExit(EXIT_FAILED)


def show_line_test(r: dict[str, Any]) -> None:
    console.print(
        f"bus {r['bus']} ({r.get('route')}): {r['ok']} of {r['transactions']} transactions succeeded "
        f"({r['success_rate']:.1%}) in {r['duration_s']} s",
        highlight=False,
        markup=False,
    )
    if r["failures_by_kind"]:
        t = Table(title="failures by kind")
        for col in ("kind", "count", "first error"):
            t.add_column(col)
        for kind, n in sorted(r["failures_by_kind"].items(), key=lambda kv: -kv[1]):
            t.add_row(esc(kind), str(n), esc(r["first_error_by_kind"].get(kind, "")))
        console.print(t)
    lat = r.get("latency_ms")
    if lat:
        console.print(
            "latency (ms): " + "  ".join(f"{k} {v}" for k, v in lat.items()),
            highlight=False,
        )
    t = Table(title="per device")
    for col in ("device", "attempts", "ok", "failures"):
        t.add_column(col)
    for dev, row in r["devices"].items():
        failures = ", ".join(f"{n} {k}" for k, n in row.items() if k not in ("attempts", "ok"))
        t.add_row(esc(dev), str(row["attempts"]), str(row["ok"]), esc(failures or "-"))
    console.print(t)
    counters = r.get("serial_counters")
    if counters is None:
        console.print(
            f"serial driver counters: {r.get('serial_counters_note')}", highlight=False, markup=False
        )
    else:
        console.print(
            "serial driver counters during the test: "
            + ", ".join(f"{k} {v}" for k, v in counters.items() if k not in ("rx", "tx"))
            + f" (rx {counters.get('rx')} bytes, tx {counters.get('tx')} bytes)",
            highlight=False,
        )
