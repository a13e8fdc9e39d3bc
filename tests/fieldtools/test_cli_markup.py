"""Text from the field is printed as it is by the CLI, never read as rich markup: a fire panel's
location label "B1 [/] plant room" used to crash `citynerve status` (MarkupError traceback) and
"[east] stair" lost its "[east]". The real GST parser builds the alarm's words as the driver does,
a real ControlServer answers, the real `citynerve status` prints them; likewise a device error, a
bus id and an operator's name with brackets, and `devices import`'s mismatch table."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from citynerve.drivers.firepanel.parsers import parser_for
from citynerve.gateway.cli import main
from citynerve.gateway.control import ControlServer

from .conftest import wait_for


def _alarm_from_panel(label: str) -> dict[str, Any]:
    rec = parser_for("gst").parse_line(f"火警  24/05/02 17:24  004回路004号  感烟探测器  {label}")
    assert rec is not None
    point = rec.point_key if rec.loop is not None else ""
    words = " ".join(p for p in (rec.event_text, point, rec.device_type, rec.location) if p)
    return {
        "severity": "critical",
        "device_id": "fp-[1]",
        "kind": str(rec.kind),
        "rule": "panel:gst",
        "subject": rec.point_key,
        "message": words,
        "raised_at": time.time(),
        "acked_by": "ops [/b]",
    }


def _status(label: str) -> dict[str, Any]:
    device = {"id": "em-[/i]1", "online": False, "faulted": False, "last_success": None, "errors": 3,
              "last_error": "exception 2 [/red] at 40001", "readings": {}}  # fmt: skip
    return {
        "gateway_id": "gw-1",
        "name": "b7 [lobby]",
        "version": "x",
        "uptime_s": 5,
        "devices_online": 0,
        "devices_total": 1,
        "buses": [
            {"id": "rs485-[1]", "channel": "down", "channel_error": "no [/] port", "devices": [device]}
        ],
        "alarms": [_alarm_from_panel(label)],
        "uplink": {"state": "down", "last_error": "broker said [/x]"},
    }


@contextlib.asynccontextmanager
async def _control(path: Path, status: dict[str, Any]) -> AsyncIterator[None]:
    async def answer(_: dict[str, Any]) -> dict[str, Any]:
        return status

    task = asyncio.create_task(ControlServer(path, {"status": answer}).run())
    try:
        await wait_for(path.exists, 10)
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@pytest.mark.parametrize("label", ["一层大厅 [east] stair", "B1 [/] plant room"])
async def test_status_prints_field_text_as_it_is(short_dir: Path, label: str) -> None:
    path = short_dir / "ctl.sock"
    async with _control(path, _status(label)):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "citynerve.gateway.cli", "status", "--socket", str(path),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "250"},
        )  # fmt: skip
        out = (await proc.communicate())[0].decode()
    assert proc.returncode == 0, out
    assert label in out, out  # in the alarm's message, brackets and all
    for shown in ("fp-[1]", "ops [/b]", "em-[/i]1", "exception 2 [/red] at 40001", "rs485-[1]",
                  "no [/] port", "b7 [lobby]", "broker said [/x]"):  # fmt: skip
        assert shown in out, (shown, out)


def test_devices_import_mismatch_table_prints_the_register_as_it_is(config_path: Path) -> None:
    register = config_path.parent / "register.csv"
    register.write_text("address,type\n1,smoke [/] detector\n[east]9,water meter\n", encoding="utf-8")
    result = CliRunner(env={"COLUMNS": "250"}).invoke(
        main, ["devices", "import", "-c", str(config_path), str(register), "--dry-run"]
    )
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output  # mismatches
    assert "register says 'smoke [/] detector'" in result.output, result.output
    assert "[east]9" in result.output, result.output
