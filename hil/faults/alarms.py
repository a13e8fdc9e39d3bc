"""Alarms: one truth for active alarms, whatever raised them (bulkheads: hil/faults/bulkheads.py).

- `alarms.every_kind_in_every_view`: a real `citynerve run` with a Modbus building (pymodbus), a fire
  panel on a pty (citynerve.hil.sim.serial), a BTHome manhole node on a bumble virtual radio and a real
  Mosquitto. A rule alarm (smoke detector), a fire panel alarm, a BTHome tilt alarm and a device
  offline are raised; each must show in `citynerve status` (table and `--json`), the status page's
  JSON, /metrics and the retained status message; after kill -9 and a restart the fire alarm is
  still listed, and the offline alarm restored from the last run clears when the device answers.

The helpers here (`GatewayRun`, `building_toml`, `wait_until`) serve the bulkhead scenarios too.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from citynerve.gateway.alarms import KEPT
from citynerve.gateway.control import ask
from citynerve.hil.faults import Broken, scenario
from citynerve.hil.platform.broker import MosquittoBroker, find_mosquitto, free_port
from citynerve.hil.sim.modbus import ModbusBuilding

REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "config" / "profiles"
ADDRESS_CODE = "310106013007"
BLE_KEY = "231d39c1d7cc1ab1aee224cd096db932"
BLE_MAC = "A4:C1:38:00:00:01"
GATEWAY_ID = "gw-alarms"

Check = Callable[[], Awaitable[bool] | bool]


async def wait_until(check: Check, what: str, timeout_s: float = 30.0, *, log: Path | None = None) -> None:
    """Poll `check` (sync or async; exceptions count as not yet) until true, else raise Broken."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    last = ""
    while asyncio.get_running_loop().time() < deadline:
        try:
            result = check()
            if not isinstance(result, bool):
                result = await result
            if result:
                return
        except Exception as err:  # not up yet (socket, page): keep waiting
            last = repr(err)
        await asyncio.sleep(0.1)
    tail = _tail(log) if log is not None else ""
    raise Broken(f"timed out waiting for {what} {last}\n{tail}")


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-3000:] if log.exists() else ""


def building_toml(host: str, port: int, *, extra: str = "") -> str:
    """A gateway on one Modbus TCP building: a meter, two water meters, a smoke detector with the
    smoke-fire rule pack, an offline rule on the water meters."""
    text = textwrap.dedent(
        f"""\
        profile_dirs = ["{PROFILES}"]
        [gateway]
        id = "{GATEWAY_ID}"
        org = {{ city = "310100", district = "310106", street = "310106013" }}
        [store]
        path = "var/gw.db"
        commit_interval_ms = 20
        [control]
        socket = "var/gw.sock"
        [log]
        format = "json"
        [rules]
        [[rules.packs]]
        name = "smoke-fire"
        select = {{ profiles = ["modbus-smoke-detector"] }}
        points = {{ smoke = "smoke_alarm" }}
        [[rules.rules]]
        id = "meter_offline"
        kind = "offline"
        severity = "major"
        select = {{ profiles = ["modbus-water-meter"] }}

        [[buses]]
        id = "tcp-1"
        protocol = "modbus_tcp"
        host = "{host}"
        port = {port}
        timeout_s = 0.3
        retries = 0
        offline_after = 1
        backoff_initial_s = 0.5
        backoff_max_s = 1
        """
    )
    for dev_id, profile, unit in (
        ("em-1", "modbus-power-meter-3ph", 1),
        ("wm-2", "modbus-water-meter", 2),
        ("wm-3", "modbus-water-meter", 3),
        ("sd-11", "modbus-smoke-detector", 11),
    ):
        text += textwrap.dedent(
            f"""
            [[devices]]
            id = "{dev_id}"
            bus = "tcp-1"
            profile = "{profile}"
            address = {unit}
            poll_interval_s = 0.5
            location = {{ address_code = "{ADDRESS_CODE}", building = "7", floor = "1" }}
            """
        )
    return text + extra


class GatewayRun:
    """A real `citynerve run -c CONFIG` child process; its output goes to `gateway.log`."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.log = config.parent / "gateway.log"
        self.sock = config.parent / "var" / "gw.sock"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "citynerve.gateway.cli",
                "run",
                "-c",
                str(self.config),
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

        async def answers() -> bool:  # a socket file left by a killed run does not count
            return bool(await ask(self.sock, "ping"))

        await self.wait(answers, "the control socket to answer")

    async def wait(self, check: Check, what: str, timeout_s: float = 30.0) -> None:
        async def alive_and() -> bool:
            if self.proc is not None and self.proc.returncode is not None:
                tail = self.log.read_text(errors="replace")[-3000:]
                raise Broken(f"gateway exited {self.proc.returncode} while waiting for {what}:\n{tail}")
            result = check()
            return result if isinstance(result, bool) else await result

        await wait_until(alive_and, what, timeout_s, log=self.log)

    async def status(self) -> dict[str, Any]:
        result: dict[str, Any] = await ask(self.sock, "status")
        return result

    async def cli(self, *args: str) -> str:
        proc = await asyncio.create_subprocess_exec(
            *self._cli_argv(args),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "COLUMNS": "250"},  # a wide table: nothing cut off
        )
        out, err = await asyncio.wait_for(proc.communicate(), 60)
        if proc.returncode != 0:
            raise Broken(f"citynerve {' '.join(args)} exited {proc.returncode}: {err.decode()[-2000:]}")
        return out.decode()

    def _cli_argv(self, args: Sequence[str]) -> list[str]:
        return [sys.executable, "-m", "citynerve.gateway.cli", *args, "-c", str(self.config)]

    async def stop(self) -> int:
        if self.proc is None:
            return 0
        if self.proc.returncode is not None:
            return self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.proc.wait(), 30)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise Broken("gateway did not stop on SIGTERM within 30 s") from None

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def alarm_names(alarms: Sequence[dict[str, Any]]) -> set[tuple[str, str]]:
    return {(str(a.get("device_id")), str(a.get("kind"))) for a in alarms}


async def http_get(port: int, path: str) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 10)
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise Broken(f"GET {path}: {head[:80]!r}")
    return body


def metric_alarms(text: str) -> set[tuple[str, str]]:
    """(device, kind) of every `citynerve_alarm_active` sample."""
    from prometheus_client.parser import text_string_to_metric_families

    out = set()
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == "citynerve_alarm_active" and s.value == 1:
                out.add((s.labels["device"], s.labels["kind"]))
    return out


async def retained_alarms(host: str, port: int) -> set[tuple[str, str]]:
    """The alarms in the retained status message a platform finds on subscribing."""
    import aiomqtt

    async with aiomqtt.Client(host, port, identifier=f"probe-{os.getpid()}") as client:
        await client.subscribe(f"citynerve/{GATEWAY_ID}/status", qos=1)
        async with asyncio.timeout(10):
            async for msg in client.messages:
                body = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
                return alarm_names(body.get("gateway", {}).get("alarms", []))
    return set()


@contextlib.contextmanager
def fire_panel_sim(tmp: Path) -> Iterator[tuple[str, Any]]:
    """The simulated fire panel (citynerve.hil.sim.serial --panel) on a pty; yields (port, process)."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "citynerve.hil.sim.serial", "--link-dir", str(tmp / "dev"), "--panel"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        ports = json.loads(proc.stdout.readline())
        yield str(ports["firepanel"]), proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@scenario(
    "alarms.every_kind_in_every_view",
    area="alarms",
    promise="rule, fire panel, BTHome and offline alarms all show in status, page, metrics and the "
    "retained status; a kill -9 and restart keeps them",
    timeout_s=240.0,
)
async def every_kind_in_every_view(tmp: Path) -> str:
    from citynerve.hil.sim.ble import ManholeCoverNode, VirtualDongle, VirtualRadio

    if find_mosquitto() is None:
        raise Broken("mosquitto is not installed")
    web_port = free_port()
    with (
        fire_panel_sim(tmp) as (panel_port, panel),
        MosquittoBroker() as broker,
        VirtualRadio(f"alarms{os.getpid()}") as radio,
    ):
        async with ModbusBuilding() as building, VirtualDongle(radio) as dongle:
            host, port = building.endpoint
            extra = textwrap.dedent(
                f"""
                [upstream]
                brokers = ["mqtt://{broker.host}:{broker.port}"]
                status_interval_s = 0.5
                [web]
                enabled = true
                port = {web_port}
                refresh_s = 0.5

                [[buses]]
                id = "fire-panel"
                protocol = "firepanel"
                port = "{panel_port}"
                [[devices]]
                id = "fp-main"
                bus = "fire-panel"
                profile = "firepanel-gst"
                address = "GST-200-01"
                location = {{ address_code = "{ADDRESS_CODE}", building = "7", floor = "1" }}

                [[buses]]
                id = "ble0"
                protocol = "bthome"
                backend = "bumble"
                transport = "{dongle.client_transport}"
                [[devices]]
                id = "mh-1"
                bus = "ble0"
                profile = "bthome-manhole-cover"
                address = "{BLE_MAC}"
                key = "{BLE_KEY}"
                location = {{ address_code = "{ADDRESS_CODE}" }}
                """
            )
            config = tmp / "gw.toml"
            config.write_text(building_toml(host, port, extra=extra))
            node = ManholeCoverNode(radio, BLE_MAC, key=bytes.fromhex(BLE_KEY))
            gw = GatewayRun(config)
            try:
                await gw.start()
                building.trigger_smoke(11)  # a rule alarm (smoke-fire pack)
                building.silence(3)  # wm-3 stops answering: device_offline (bus owner)

                async def active() -> set[tuple[str, str]]:
                    return alarm_names((await gw.status())["alarms"])

                async def panel_alarm() -> bool:
                    # A printer port drops what was printed before it was opened: print until heard.
                    if ("fp-main", "smoke") in await active():
                        return True
                    panel.send_signal(signal.SIGUSR1)
                    await asyncio.sleep(0.3)
                    return False

                async def tilt_alarm() -> bool:
                    if ("mh-1", "manhole_tilt") in await active():
                        return True
                    await node.state(tilt_deg=50.0, tilt_alarm=True)
                    return False

                await gw.wait(panel_alarm, "the fire panel's alarm")
                await gw.wait(tilt_alarm, "the BTHome tilt alarm")
                want = {
                    ("sd-11", "smoke"),
                    ("wm-3", "device_offline"),
                    ("fp-main", "smoke"),
                    ("mh-1", "manhole_tilt"),
                }
                await gw.wait(lambda: _has(active, want), f"every kind active: {want}")

                views: dict[str, set[tuple[str, str]]] = {}
                views["status --json"] = alarm_names(json.loads(await gw.cli("status", "--json"))["alarms"])
                rows = (await gw.cli("status")).split("active alarms", 1)[-1].splitlines()
                views["status"] = {(d, k) for d, k in want if any(d in row and k in row for row in rows)}
                await asyncio.sleep(1.1)  # past the page's status cache
                page = json.loads(await http_get(web_port, "/api/status"))
                views["/api/status"] = alarm_names(page["alarms"])
                views["/metrics"] = metric_alarms((await http_get(web_port, "/metrics")).decode())

                async def retained() -> bool:
                    views["retained status"] = await retained_alarms(broker.host, broker.port)
                    return want <= views["retained status"]

                with contextlib.suppress(Broken):
                    await gw.wait(retained, "the retained status with every alarm", timeout_s=15)
                missing = {name: sorted(want - got) for name, got in views.items() if not want <= got}
                if missing:
                    raise Broken(f"alarms missing from views: {missing}")
                cards = {d["id"]: d for g in page["groups"] for d in g["devices"]}
                if not (cards["fp-main"]["alarm"] and cards["sd-11"]["alarm"] and cards["wm-3"]["alarm"]):
                    raise Broken("a device with an active alarm is not marked on the page")

                # Power loss (kill -9) once the registry is on disk (it is saved within about a
                # second of a change) forgets nothing: the fire alarm is listed again (restored)
                # before the panel prints anything; the restored offline alarm clears when wm-3 answers.
                db = tmp / "var" / "gw.db"
                kept = {("fp-main", "smoke"), ("wm-3", "device_offline")}
                await gw.wait(lambda: _saved(db, kept), "the active alarms saved in the store")
                await gw.kill()
                await gw.start()
                after = await gw.status()
                if not {("fp-main", "smoke"), ("wm-3", "device_offline")} <= alarm_names(after["alarms"]):
                    raise Broken(f"alarms forgotten by a restart: {sorted(alarm_names(after['alarms']))}")
                building.revive(3)
                await gw.wait(
                    lambda: _lacks(active, ("wm-3", "device_offline")), "the restored offline alarm to clear"
                )
                return (
                    f"{len(want)} kinds in {len(views)} views; the fire alarm survived kill -9 and a restart"
                )
            finally:
                await gw.kill()
                await node.close()


async def _saved(db: Path, want: set[tuple[str, str]]) -> bool:
    """Whether the registry's saved state (read-only from the store) holds `want`."""

    def read() -> set[tuple[str, str]]:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5.0)
        try:
            rows = conn.execute("SELECT value FROM kept WHERE kind = ?", (KEPT,)).fetchall()
        finally:
            conn.close()
        return alarm_names([json.loads(row[0]) for row in rows])

    return want <= await asyncio.to_thread(read)


async def _has(active: Callable[[], Awaitable[set[tuple[str, str]]]], want: set[tuple[str, str]]) -> bool:
    return want <= await active()


async def _lacks(active: Callable[[], Awaitable[set[tuple[str, str]]]], name: tuple[str, str]) -> bool:
    return name not in await active()
