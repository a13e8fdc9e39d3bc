"""`citynerve store ...`: inspect the outbox, also while the gateway runs (read-only, WAL)."""

from __future__ import annotations

import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from citynerve.gateway.api import Event, Reading, read_text
from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    config_option,
    console,
    corrupt_copy_line,
    fail,
    json_option,
    print_json,
)
from citynerve.gateway.cli._groups import store
from citynerve.gateway.store import (
    Lane,
    OutboxRow,
    StoreConfig,
    StoreError,
    StoreStats,
    read_rows,
    read_stats,
)


def db_from_config(config_path: Path) -> Path:
    """The outbox path of a gateway config: its [store] path, relative to the config file's folder.

    Only the [store] table is read, so the stats of a gateway's outbox can be seen even when
    another part of its config does not validate (that is `citynerve config check`'s job).
    """
    try:
        raw = tomllib.loads(read_text(config_path))
    except FileNotFoundError:
        fail(f"{config_path}: no such config file (give -c FILE or --db FILE)", EXIT_INVALID)
    except (OSError, UnicodeDecodeError) as err:
        fail(f"{config_path}: cannot read: {err}", EXIT_INVALID)
    except tomllib.TOMLDecodeError as err:
        fail(f"{config_path}: not valid TOML: {err}", EXIT_INVALID)
    section = raw.get("store", {})
    if not isinstance(section, dict):
        fail(f"{config_path}: store: expected a table", EXIT_INVALID)
    try:
        cfg = StoreConfig.model_validate(section)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(x) for x in ("store", *first["loc"]))
        fail(f"{config_path}: {where}: {first['msg']}", EXIT_INVALID)
    p = Path(cfg.path)
    return p if p.is_absolute() else config_path.resolve().parent / p


def _age(ts: float | None, now: float) -> float | None:
    return None if ts is None else round(max(0.0, now - ts), 3)


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"  # pragma: no cover - the loop always returns


def _human_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def stats_document(stats: StoreStats, now: float) -> dict[str, Any]:
    doc = stats.to_dict()
    for lane in doc["lanes"]:
        lane["oldest_age_s"] = _age(lane["oldest_ts"], now)
    return doc


@store.command("stats")
@config_option
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The outbox file itself (instead of finding it through the config).",
)
@json_option
def stats_command(config_path: Path, db_path: Path | None, as_json: bool) -> None:
    """Rows and oldest age per lane, dropped counts, file size and schema version of the outbox.

    Safe while the gateway runs: the file is opened read-only and WAL readers never block the
    writer. Exits 1 when the file is missing or not an outbox, 2 for a bad config.
    """
    db = db_path if db_path is not None else db_from_config(config_path)
    try:
        stats = read_stats(db)
    except StoreError as err:
        if as_json:
            print_json({"ok": False, "path": str(db), "error": err.reason})
            raise SystemExit(EXIT_FAILED) from err
        fail(str(err), EXIT_FAILED)
    now = time.time()
    doc = stats_document(stats, now)
    if as_json:
        print_json({"ok": True, **doc})
        return
    table = Table(title=Text(f"outbox {stats.path}"), title_justify="left")
    table.add_column("lane")
    table.add_column("rows", justify="right")
    table.add_column("oldest", justify="right")
    table.add_column("dropped unsent", justify="right")
    for lane in doc["lanes"]:
        dropped = lane["dropped"]
        table.add_row(
            Text(lane["lane"]),
            f"{lane['rows']:,}",
            _human_age(lane["oldest_age_s"]),
            f"[yellow]{dropped:,}[/]" if dropped else "0",
        )
    console.print(table)
    console.print(
        f"file {_human_bytes(stats.file_bytes)} (+ WAL {_human_bytes(stats.wal_bytes)}), "
        f"schema version {stats.schema_version}, next seq {stats.next_seq:,}, epoch {stats.epoch or '-'}",
        highlight=False,
        markup=False,
    )
    if stats.dropped_by:
        by = ", ".join(f"{reason} {n:,}" for reason, n in sorted(stats.dropped_by.items()))
        console.print(f"dropped unsent by reason: {by}", highlight=False, markup=False)
    if doc["corrupt_copy"]:
        console.print(corrupt_copy_line(doc["corrupt_copy"]), style="yellow", highlight=False, markup=False)


def row_document(row: OutboxRow) -> dict[str, Any]:
    rec = row.record
    doc: dict[str, Any] = {"seq": row.seq, "lane": row.lane.name.lower(), "ts": row.ts}
    if isinstance(rec, Reading):
        doc.update(
            device_id=rec.device_id, point=rec.point, value=rec.value, unit=rec.unit, quality=str(rec.quality)
        )
    else:
        doc.update(
            device_id=rec.device_id,
            kind=rec.kind,
            state=str(rec.state),
            severity=rec.severity.name.lower(),
            rule=rec.rule,
            value=rec.value,
            message=rec.message,
            attrs=rec.attrs,
            id=rec.id,
        )
    return doc


def _when(ts: float) -> str:
    try:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return str(ts)


@store.command("peek")
@config_option
@click.option(
    "--db",
    "db_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="The outbox file itself (instead of finding it through the config).",
)
@click.option(
    "--lane",
    type=click.Choice(["event", "telemetry"]),
    default="event",
    show_default=True,
    help="Which queue to show.",
)
@click.option(
    "-n", "--limit", type=click.IntRange(1, 100_000), default=20, show_default=True, help="How many rows."
)
@click.option("--newest", is_flag=True, help="Show the newest rows instead of the oldest (next to send).")
@json_option
def peek_command(
    config_path: Path, db_path: Path | None, lane: str, limit: int, newest: bool, as_json: bool
) -> None:
    """Show rows waiting in the outbox: by default the oldest, i.e. the next the uplink sends.

    Read-only, safe while the gateway runs. Exits 1 when the file is missing or not an outbox.
    """
    db = db_path if db_path is not None else db_from_config(config_path)
    try:
        rows = read_rows(db, Lane[lane.upper()], limit=limit, newest=newest)
    except StoreError as err:
        if as_json:
            print_json({"ok": False, "path": str(db), "error": err.reason})
            raise SystemExit(EXIT_FAILED) from err
        fail(str(err), EXIT_FAILED)
    if as_json:
        print_json({"ok": True, "path": str(db), "lane": lane, "rows": [row_document(r) for r in rows]})
        return
    table = Table(
        title=Text(f"outbox {db}: {lane} lane, {'newest' if newest else 'oldest'} {len(rows)}"),
        title_justify="left",
    )
    table.add_column("seq", justify="right")
    table.add_column("time (UTC)")
    table.add_column("device")
    if lane == "telemetry":
        for col in ("point", "value", "unit", "quality"):
            table.add_column(col)
        for r in rows:
            rec = r.record
            assert isinstance(rec, Reading)
            value = repr(rec.value) if isinstance(rec.value, str) else str(rec.value)
            cells = (rec.device_id, rec.point, value, rec.unit, str(rec.quality))
            # Text(): device data is shown as it is, never read as rich markup.
            table.add_row(str(r.seq), _when(r.ts), *(Text(c) for c in cells))
    else:
        for col in ("kind", "state", "severity", "message"):
            table.add_column(col)
        for r in rows:
            ev = r.record
            assert isinstance(ev, Event)
            cells = (ev.device_id, ev.kind, str(ev.state), ev.severity.name.lower(), ev.message)
            table.add_row(str(r.seq), _when(r.ts), *(Text(c) for c in cells))
    console.print(table)
