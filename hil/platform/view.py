"""The platform's view for people: readings and alarms as they arrive, and a summary per gateway."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from citynerve.hil.platform.consumer import Arrival
from citynerve.hil.platform.store import PlatformStore


def _hms(ts_ms: int) -> str:
    """The time of day, or the number as sent when it is no time (a year past 9999: schema-valid)."""
    try:
        return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return str(ts_ms)


def format_arrival(a: Arrival, *, max_readings: int = 3) -> list[str]:
    """Lines (rich markup) that describe one arriving message; what the gateway sent is escaped."""
    b = a.body
    if a.kind == "events":
        out = []
        for e in b["events"]:
            colour = "red" if e["severity_level"] >= 3 and e["state"] == "raised" else "yellow"
            text = (
                f"{_hms(e['ts_ms'])} {a.gateway_id}/{e['device_id']} {e['kind']} "
                f"{e['state']} ({e['severity']}) seq={e['seq']} {e['message']}"
            )
            out.append(f"[{colour}]ALARM[/] {escape(text)}")
        return out
    if a.kind == "telemetry":
        rs = b["readings"]
        shown = ", ".join(f"{r['device_id']}.{r['point']}={r['value']}{r['unit']}" for r in rs[:max_readings])
        more = f" (+{len(rs) - max_readings} more)" if len(rs) > max_readings else ""
        dup = f" [dim]{a.ingested.duplicates} dup[/]" if a.ingested and a.ingested.duplicates else ""
        gap = " [red]GAP[/]" if a.ingested and a.ingested.gap else ""
        text = escape(f"{a.gateway_id} seq {b['first_seq']}..{b['seq']}: {shown}{more}")
        return [f"[green]data[/]  {text}{dup}{gap}"]
    if a.kind == "status":
        text = f"{a.gateway_id} {b['state']} (backlog {json.dumps(b.get('backlog', {}))})"
        return [f"[cyan]status[/] {escape(text)}"]
    if a.kind == "inventory":
        return [f"[cyan]inventory[/] {escape(a.gateway_id)}: {len(b['devices'])} devices"]
    text = f"{a.gateway_id} {b.get('command_id')}: {b.get('outcome')} {b.get('reason') or ''}"
    return [f"[magenta]result[/] {escape(text)}"]


def print_platform_view(store: PlatformStore, console: Console | None = None) -> None:
    """A table per gateway lane: rows stored, contiguous seq, duplicates, gaps; then the latest alarms."""
    console = console or Console()
    table = Table(title="City platform: what arrived")
    for col in (
        "gateway",
        "lane",
        "rows",
        "contiguous to seq",
        "messages",
        "duplicates",
        "gaps seen",
        "open gap",
    ):
        table.add_column(col)
    for v in store.lanes():
        table.add_row(
            escape(v.gateway_id),
            v.lane,
            str(v.rows),
            str(v.contiguous),
            str(v.messages),
            str(v.duplicates),
            str(v.gaps_seen),
            "-" if v.open_gap is None else f"{v.open_gap[0]}..{v.open_gap[1]}",
        )
    console.print(table)
    gateways = sorted({v.gateway_id for v in store.lanes()})
    for gw in gateways:
        events = store.events(gw)[-10:]
        for e in events:
            console.print(
                f"  {_hms(e['ts_ms'])} {gw}/{e['device_id']} {e['kind']} {e['state']} "
                f"({e['severity']}) {e['message']}",
                markup=False,  # a device's text (a panel's location "[/]") is printed as it is
            )
