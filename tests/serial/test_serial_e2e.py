"""End to end: a real `citynerve run` with DL/T 645 meters, CJ/T 188 water meters and a fire panel
simulated in another process on ptys. Readings reach the outbox, the valve closes on a control
`write`, and the panel's fire alarm becomes a CRITICAL smoke event with its location text."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.control import ask
from citynerve.gateway.store import Lane, Outbox


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[tuple[dict[str, str], subprocess.Popen[str]]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "citynerve.hil.sim.serial",
            "--link-dir",
            str(tmp_path / "dev"),
            "--dlt645",
            "000000000161",
            "--dlt645",
            "000000000301",
            "--cjt188",
            "00000000000301",
            "--panel",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    ports = json.loads(proc.stdout.readline())
    yield ports, proc
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def write_config(tmp: Path, ports: dict[str, str]) -> Path:
    text = textwrap.dedent(
        f"""
        [gateway]
        id = "gw-e2e-serial"
        org = {{ city = "320500", district = "320508", street = "320508001" }}
        [store]
        path = "var/gw.db"
        commit_interval_ms = 20
        [control]
        socket = "var/gw.sock"
        [log]
        format = "json"

        [[buses]]
        id = "rs485-power"
        protocol = "dlt645"
        port = "{ports["dlt645"]}"
        timeout_s = 1.0

        [[buses]]
        id = "rs485-water"
        protocol = "cjt188"
        port = "{ports["cjt188"]}"
        timeout_s = 1.0

        [[buses]]
        id = "fire-panel"
        protocol = "firepanel"
        port = "{ports["firepanel"]}"

        [[devices]]
        id = "em-incomer"
        bus = "rs485-power"
        profile = "dlt645-three-phase"
        address = "000000000161"
        poll_interval_s = 1
        location = {{ address_code = "320508001007", building = "7", floor = "B1" }}

        [[devices]]
        id = "em-0301"
        bus = "rs485-power"
        profile = "dlt645-single-phase"
        address = "000000000301"
        poll_interval_s = 1
        location = {{ address_code = "320508001007", building = "7", floor = "3", room = "301" }}

        [[devices]]
        id = "wm-0301"
        bus = "rs485-water"
        profile = "cjt188-water-cold"
        address = "00000000000301"
        poll_interval_s = 1
        location = {{ address_code = "320508001007", building = "7", floor = "3", room = "301" }}

        [[devices]]
        id = "fp-main"
        bus = "fire-panel"
        profile = "firepanel-gst"
        address = "GST-200-01"
        location = {{ address_code = "320508001007", building = "7", floor = "1", room = "fire control" }}
        """
    )
    (tmp / "var").mkdir(exist_ok=True)
    path = tmp / "gw.toml"
    path.write_text(text, encoding="utf-8")
    return path


def control(sock: Path, op: str, **params: Any) -> Any:
    return asyncio.run(ask(sock, op, **params))


def wait_for(
    proc: subprocess.Popen[bytes],
    log: Path,
    predicate: Callable[[], bool],
    timeout_s: float = 30,
    describe: Callable[[], str] = lambda: "",
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"gateway exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if predicate():
                return
        except Exception:  # the socket is not there yet
            pass
        time.sleep(0.1)
    try:
        state = describe()
    except Exception as err:
        state = repr(err)
    raise AssertionError(f"timed out ({state}); gateway log:\n{log.read_text()[-3000:]}")


def test_run_reads_meters_closes_valve_and_reports_fire(
    tmp_path: Path, sim: tuple[dict[str, str], subprocess.Popen[str]]
) -> None:
    ports, sim_proc = sim
    config = write_config(tmp_path, ports)
    sock, db, log = tmp_path / "var" / "gw.sock", tmp_path / "var" / "gw.db", tmp_path / "gateway.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(config)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        pollers = {"em-incomer", "em-0301", "wm-0301"}

        def online() -> set[str]:
            buses = control(sock, "status")["buses"]
            return {d["id"] for b in buses for d in b["devices"] if d.get("online")}

        wait_for(proc, log, lambda: pollers <= online(), describe=lambda: f"online: {online()}")
        energy = control(sock, "read", device="em-incomer", point="energy_import")
        assert energy["unit"] == "kWh" and energy["value"] > 0
        flow = control(sock, "read", device="wm-0301", point="flow_total")
        assert flow["unit"] == "m3" and flow["value"] > 0
        assert control(sock, "write", device="wm-0301", point="valve", value="close") == {"written": True}
        assert control(sock, "read", device="wm-0301", point="valve")["value"] == "closed"

        def fire_event() -> bool:
            # a printer port drops what was printed before it was opened: print until heard (the
            # listener raises a repeated alarm of the same detector only once)
            sim_proc.send_signal(signal.SIGUSR1)
            time.sleep(0.2)
            outbox = Outbox(db)
            try:
                rows = outbox.peek(Lane.EVENT, limit=10_000)
            finally:
                outbox.close()
            return any(isinstance(r.record, Event) and r.record.kind == "smoke" for r in rows)

        wait_for(proc, log, fire_event)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    outbox = Outbox(db)
    try:
        events = [r.record for r in outbox.peek(Lane.EVENT, limit=10_000) if isinstance(r.record, Event)]
    finally:
        outbox.close()
    smoke = next(e for e in events if e.kind == "smoke")
    assert (smoke.device_id, smoke.state, smoke.severity) == ("fp-main", EventState.RAISED, Severity.CRITICAL)
    assert smoke.attrs["location_text"] == "一层大厅东侧" and smoke.attrs["loop"] == 4
