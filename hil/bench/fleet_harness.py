"""A fleet of real gateways on one Mosquitto, for the fleet tests and the fleet benchmark
(hil/bench/fleet.py).

Every gateway is a real `citynerve run` process with a small config: one Modbus TCP bus to a
simulated building (hil/sim/modbus, one pymodbus server shared by all), one water meter, the
uplink to the shared broker, commands signed with the operations centre's key. A silent TCP peer
(accepts, never answers) gives configs that fail health: a patch that moves the bus onto it.
Optional: a household rule on the meter (`rules=True`: suppressed while the household is away),
`[update]` for update rollouts (`update=True`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt

from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.platform.rollout import RolloutReport, config_action, parse_waves, rollout
from citynerve.hil.platform.store import PlatformStore
from citynerve.hil.sim.modbus import ModbusBuilding

NOC_KEY = bytes.fromhex("5a" * 32)
CONFIRM_S = 10.0  # healthy gateways confirm in ~3-4 s; failing ones revert after this
WATER_UNIT, SECOND_WATER_UNIT = 2, 3  # the simulated building's water meters

CONFIG = """
[gateway]
id = "{gw}"
org = {{ city = "310100", district = "310106", street = "310106013" }}
[store]
path = "var/gw.db"
[control]
socket = "var/gw.sock"
[log]
format = "json"
level = "info"

[[buses]]
id = "mb"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {modbus_port}
timeout_s = 0.3
min_poll_interval_s = 0.5

[[devices]]
id = "wm-1"
bus = "mb"
profile = "modbus-water-meter"
address = {unit}
poll_interval_s = 2
location = {{ address_code = "310106013007" }}

[upstream]
brokers = ["mqtt://{broker_host}:{broker_port}"]
status_interval_s = 2
[upstream.backoff]
initial_s = 0.2
max_s = 1.0
[upstream.commands]
enabled = true
[[upstream.commands.keys]]
id = "noc"
hmac_key_file = "{key_file}"
classes = {classes}
{update}{rules}"""

RULES = """
[rules]
[[rules.rules]]
id = "household.meter_error"
kind = "threshold"
event = "meter_error"
point = "error_code"
above = 0.5
severity = "warning"
suppress_when_away = true
select = { devices = ["wm-1"] }
message = "the household's water meter reports an error (not raised while the household is away)"
"""

UPDATE = """
[update]
root = "{root}"
service = "process"
disk_budget_bytes = {budget}
min_free_bytes = 0
"""
UPDATE_BUDGET = 64 << 20


class Fleet:
    """N gateway processes, a broker, a simulated building and a silent peer; the platform's
    consumer and fleet client on the broker."""

    def __init__(
        self, n: int, workdir: Path | None = None, *, update: bool = False, rules: bool = False
    ) -> None:
        self.n = n
        self.rules = rules
        # [update] on every gateway (an install root of its own; a budget per gateway, see
        # update_budget) and the update class for the key: for update rollouts
        self.update = update
        self.update_budget: dict[str, int] = {}
        self.ids = [f"gw-{i:02d}" for i in range(n)]
        self._own_dir = workdir is None
        self.dir = Path(tempfile.mkdtemp(prefix="fleet-")) if workdir is None else workdir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._stack = contextlib.AsyncExitStack()
        self.broker: MosquittoBroker | None = None
        self.platform: PlatformConsumer | None = None
        self.client: FleetClient | None = None
        self.building: ModbusBuilding | None = None
        self._silent = socket.socket()
        self.modbus_port = 0
        # (phase, gateway, "up" | "down") -> MQTT messages, while a phase is counted (`counting`)
        self.counts: Counter[tuple[str, str, str]] = Counter()
        self._phase: str | None = None
        self.signer = CommandSigner(hmac_key=NOC_KEY)

    async def __aenter__(self) -> Fleet:
        self._silent.bind(("127.0.0.1", 0))
        self._silent.listen(64)
        (self.dir / "broker").mkdir(parents=True, exist_ok=True)
        self.broker = self._stack.enter_context(MosquittoBroker(workdir=self.dir / "broker"))
        self.building = await self._stack.enter_async_context(ModbusBuilding())
        _, self.modbus_port = self.building.endpoint
        self.platform = await self._stack.enter_async_context(
            PlatformConsumer(host=self.broker.host, port=self.broker.port, db_path=self.dir / "platform.db")
        )
        self.client = await self._stack.enter_async_context(
            FleetClient(self.broker.host, self.broker.port, self.signer, timeout_s=60)
        )
        counter = asyncio.create_task(self._count())
        self._stack.push_async_callback(_cancel, counter)
        key = self.dir / "noc.key"
        key.write_text(NOC_KEY.hex())
        key.chmod(0o600)
        for gw in self.ids:
            self.start(gw)
        return self

    async def __aexit__(self, *exc: object) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs.values():
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
        await self._stack.aclose()
        self._silent.close()
        if self._own_dir:
            shutil.rmtree(self.dir, ignore_errors=True)

    @property
    def silent_port(self) -> int:
        """A TCP peer that accepts and never answers (a meter on it faults)."""
        return int(self._silent.getsockname()[1])

    def config_path(self, gw: str) -> Path:
        return self.dir / gw / "gw.toml"

    def config_text(self, gw: str) -> str:
        assert self.broker is not None
        classes = ["read", "operate", "configure"]
        update = ""
        if self.update:
            classes.append("update")
            root = self.dir / gw / "opt"
            (root / "releases").mkdir(parents=True, exist_ok=True)
            update = UPDATE.format(root=root, budget=self.update_budget.get(gw, UPDATE_BUDGET))
        return CONFIG.format(
            gw=gw,
            modbus_port=self.modbus_port,
            unit=WATER_UNIT,
            broker_host=self.broker.host,
            broker_port=self.broker.port,
            key_file=self.dir / "noc.key",
            classes=json.dumps(classes),
            update=update,
            rules=RULES if self.rules else "",
        )

    def start(self, gw: str) -> None:
        path = self.config_path(gw)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(self.config_text(gw))
        with (path.parent / "gateway.log").open("ab") as log:
            self.procs[gw] = subprocess.Popen(
                [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(path)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
                cwd=path.parent,
            )

    def log(self, gw: str) -> str:
        return (self.dir / gw / "gateway.log").read_text(errors="replace")

    async def wait_online(self, timeout_s: float = 120.0) -> float:
        """Until every gateway's retained status says online; returns the seconds it took."""
        assert self.platform is not None
        t0 = time.monotonic()
        while True:
            online = [
                g
                for g in self.ids
                if (self.platform.store.document(g, "status") or {}).get("state") == "online"
            ]
            if len(online) == self.n:
                return time.monotonic() - t0
            for gw, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{gw} exited {proc.returncode}:\n{self.log(gw)[-2000:]}")
            if time.monotonic() - t0 > timeout_s:
                missing = sorted(set(self.ids) - set(online))
                raise TimeoutError(f"not online after {timeout_s:g} s: {missing}")
            await asyncio.sleep(0.2)

    def status_doc(self, gw: str) -> dict[str, Any]:
        assert self.platform is not None
        return self.platform.store.document(gw, "status") or {}

    def _bus(self, port: int, timeout_s: float) -> dict[str, Any]:
        return {
            "id": "mb",
            "protocol": "modbus_tcp",
            "host": "127.0.0.1",
            "port": port,
            "timeout_s": timeout_s,
            "min_poll_interval_s": 0.5,
        }

    def good_patch(self, gw: str) -> str:
        """The bus's reply timeout from 0.3 to 0.5 s: healthy (a hot reload of the bus)."""
        return json.dumps({"buses": [self._bus(self.modbus_port, 0.5)]})

    def bad_patch(self, gw: str) -> str:
        """The bus moved to a peer that never answers (a wrong address): a valid config whose
        meter faults, so health fails and the gateway reverts by itself."""
        return json.dumps({"buses": [self._bus(self.silent_port, 0.3)]})

    async def rollout_config(
        self,
        bad: set[str],
        *,
        waves: str,
        max_failure_rate: float,
        version: str = "v2",
        confirm_s: float = CONFIRM_S,
    ) -> RolloutReport:
        assert self.client is not None

        def document(gw: str) -> str:
            return self.bad_patch(gw) if gw in bad else self.good_patch(gw)

        action = config_action(self.client, document, version=version, mode="patch", confirm_s=confirm_s)
        async with self.counting("rollout"):
            return await rollout(
                self.ids, action, waves=parse_waves(waves), max_failure_rate=max_failure_rate
            )

    @contextlib.asynccontextmanager
    async def counting(self, phase: str) -> AsyncIterator[None]:
        """Count MQTT messages per gateway and direction under `phase` while the block runs."""
        self._phase = phase
        try:
            yield
        finally:
            await asyncio.sleep(0.5)  # messages in flight when the block ends
            self._phase = None

    def per_gateway(self, phase: str, direction: str) -> list[int]:
        return [self.counts[(phase, g, direction)] for g in self.ids]

    def events(self, gw: str, kind: str) -> list[dict[str, Any]]:
        assert self.platform is not None
        return [e for e in self.platform.store.events(gw) if e.get("kind") == kind]

    async def until(self, what: str, predicate: Any, timeout_s: float = 90.0) -> None:
        """Poll `predicate` (a function, run in a thread: it reads the platform's store) until true."""
        deadline = time.monotonic() + timeout_s
        while not await asyncio.to_thread(predicate):
            if time.monotonic() > deadline:
                raise TimeoutError(f"fleet: {what} not within {timeout_s:g} s")
            await asyncio.sleep(0.2)

    def raised(self, gw: str, kind: str = "meter_error") -> bool:
        return any(e.get("state") == "raised" for e in self.events(gw, kind))

    def saw_meter_error(self, gw: str) -> bool:
        """The gateway's own reading of the meter's error code reached the platform."""
        assert self.platform is not None
        store = self.platform.store
        assert isinstance(store, PlatformStore)  # the SQLite store (this harness never uses Postgres)
        return any(
            r["device_id"] == "wm-1" and r["point"] == "error_code" and r["value"] == 1
            for r in store.readings(gw)
        )

    async def away_reaches_rules(self, target: str, timeout_s: float = 90.0) -> dict[str, Any]:
        """The household wm-1 of `target` is marked away from the platform; then the shared water
        meter reports an error. Every other gateway's rule raises `meter_error`; `target` polls the
        same error (its reading reaches the platform) and raises nothing while away; marked back,
        it raises. Returns `raised_while_away`, the order of `target`'s operator and meter_error
        events (the events lane is ordered), and the seconds each step took."""
        assert self.client is not None and self.building is not None
        t0 = time.monotonic()
        answer = await self.client.send(target, "set_away", {"device_id": "wm-1", "for_s": 3600})
        if answer.get("outcome") != "ok":
            raise RuntimeError(f"set_away on {target}: {answer}")
        steps: dict[str, float] = {"away_answered_s": time.monotonic() - t0}
        self.building.set_fault(WATER_UNIT, True)
        try:
            others = [g for g in self.ids if g != target]
            await self.until(
                "meter_error raised on the other gateways", lambda: all(map(self.raised, others))
            )
            steps["others_raised_s"] = time.monotonic() - t0
            await self.until(f"{target}'s reading of the error", lambda: self.saw_meter_error(target))
            raised_while_away = self.raised(target)
            answer = await self.client.send(target, "set_back", {"device_id": "wm-1"})
            if answer.get("outcome") != "ok":
                raise RuntimeError(f"set_back on {target}: {answer}")
            await self.until(f"meter_error on {target} once back", lambda: self.raised(target))
            steps["target_raised_when_back_s"] = time.monotonic() - t0
        finally:
            self.building.set_fault(WATER_UNIT, False)
        assert self.platform is not None
        order = [
            (e["kind"], (e.get("attrs") or {}).get("what") or e.get("state"))
            for e in self.platform.store.events(target)
            if e.get("kind") in ("operator", "meter_error")
        ]
        return {
            "raised_while_away": raised_while_away,
            "order": order,
            **{k: round(v, 2) for k, v in steps.items()},
        }

    async def rotate_keys(self, new_key: bytes, *, overlap_s: int = 0) -> dict[str, dict[str, Any]]:
        """Rotate the command key of every gateway (`rotate_command_key`, signed with the current
        key, all at once); from then on the fleet client signs with `new_key`. Answers by gateway."""
        assert self.client is not None
        args = {
            "alg": "hmac-sha256",
            "key": base64.b64encode(new_key).decode("ascii"),
            "overlap_s": overlap_s,
        }
        async with self.counting("key_rotation"):
            answers = await asyncio.gather(
                *(self.client.send(g, "rotate_command_key", args) for g in self.ids)
            )
        self.client.signer = self.signer = CommandSigner(hmac_key=new_key)
        return dict(zip(self.ids, answers, strict=True))

    async def _count(self) -> None:
        assert self.broker is not None
        async with aiomqtt.Client(self.broker.host, self.broker.port) as c:
            await c.subscribe("citynerve/#", qos=0)
            async for m in c.messages:
                phase = self._phase
                if phase is None:
                    continue
                parts = str(m.topic).split("/")
                if len(parts) >= 3:
                    way = "down" if parts[2] in ("cmd", "update") and parts[-1] != "result" else "up"
                    self.counts[(phase, parts[1], way)] += 1


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
        await task
