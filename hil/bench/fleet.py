"""A fleet of real gateways on one Mosquitto, for the fleet test and the fleet benchmark.

Every gateway is a real `citynerve run` process with a small config: one Modbus TCP bus to a
simulated building (hil/sim/modbus, one pymodbus server shared by all), one water meter, the
uplink to the shared broker, commands signed with the operations centre's key. A silent TCP peer
(accepts, never answers) gives configs that fail health: a patch that adds a meter on it.

Benchmark: a staged config rollout over the fleet (waves, failure-rate threshold) where some
gateways get the failing patch and revert by themselves. Prints the rollout time, reverts, and
MQTT messages per gateway during the rollout (gateway -> platform, and platform -> gateway).

    python -m citynerve.hil.bench.fleet [--gateways 20] [--bad 2] [--waves 1,10%,rest] [--confirm-s 10]
        [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiomqtt

from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer
from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.platform.rollout import RolloutReport, config_action, parse_waves, rollout
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
{update}"""

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

    def __init__(self, n: int, workdir: Path | None = None, *, update: bool = False) -> None:
        self.n = n
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
        self.counts: Counter[tuple[str, str]] = Counter()  # (gateway, "up" | "down") -> messages
        self._counting = False

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
            FleetClient(self.broker.host, self.broker.port, CommandSigner(hmac_key=NOC_KEY), timeout_s=60)
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

    def good_patch(self, gw: str) -> str:
        """A second water meter on the building's bus: healthy."""
        return json.dumps(
            {
                "devices": [
                    self._device("wm-1", "mb", WATER_UNIT),
                    self._device("wm-2", "mb", SECOND_WATER_UNIT),
                ]
            }
        )

    def bad_patch(self, gw: str) -> str:
        """A second bus to a peer that never answers, with a meter on it: valid, but its meter
        never answers, so health fails and the gateway reverts."""
        silent = {
            "id": "mb-silent",
            "protocol": "modbus_tcp",
            "host": "127.0.0.1",
            "port": self._silent.getsockname()[1],
            "timeout_s": 0.3,
            "min_poll_interval_s": 0.5,
        }
        mb = {"id": "mb", "protocol": "modbus_tcp", "host": "127.0.0.1", "port": self.modbus_port}
        mb.update({"timeout_s": 0.3, "min_poll_interval_s": 0.5})
        devices = [self._device("wm-1", "mb", WATER_UNIT), self._device("wm-9", "mb-silent", 9)]
        return json.dumps({"buses": [mb, silent], "devices": devices})

    @staticmethod
    def _device(dev: str, bus: str, unit: int) -> dict[str, Any]:
        return {
            "id": dev,
            "bus": bus,
            "profile": "modbus-water-meter",
            "address": unit,
            "poll_interval_s": 2,
            "location": {"address_code": "310106013007"},
        }

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
        self.counts.clear()
        self._counting = True
        try:
            return await rollout(
                self.ids, action, waves=parse_waves(waves), max_failure_rate=max_failure_rate
            )
        finally:
            self._counting = False

    async def _count(self) -> None:
        assert self.broker is not None
        async with aiomqtt.Client(self.broker.host, self.broker.port) as c:
            await c.subscribe("citynerve/#", qos=0)
            async for m in c.messages:
                if not self._counting:
                    continue
                parts = str(m.topic).split("/")
                if len(parts) >= 3:
                    self.counts[(parts[1], "down" if parts[2] == "cmd" and len(parts) == 3 else "up")] += 1


async def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
        await task


async def bench(
    n: int, bad_count: int, waves: str, max_failure_rate: float, confirm_s: float = CONFIRM_S
) -> dict[str, Any]:
    async with Fleet(n) as fleet:
        online_s = await fleet.wait_online(timeout_s=60 + 5 * n)
        bad = set(fleet.ids[-bad_count:]) if bad_count else set()
        report = await fleet.rollout_config(
            bad, waves=waves, max_failure_rate=max_failure_rate, confirm_s=confirm_s
        )
        up = [fleet.counts[(g, "up")] for g in fleet.ids]
        down = [fleet.counts[(g, "down")] for g in fleet.ids]
        per_gw = sorted(g.seconds for g in report.gateways if g.wave is not None)
        return {
            "gateways": n,
            "bad_configs": len(bad),
            "waves": waves,
            "max_failure_rate": max_failure_rate,
            "confirm_s": confirm_s,
            "fleet_online_s": round(online_s, 2),
            "rollout_s": round(report.seconds, 2),
            "wave_s": [round(w.seconds, 2) for w in report.waves],
            "outcomes": report.outcomes,
            "reverts": report.outcomes.get("reverted", 0),
            "stopped": report.stopped,
            "per_gateway_s_median": round(statistics.median(per_gw), 2) if per_gw else None,
            "per_gateway_s_max": round(max(per_gw), 2) if per_gw else None,
            "messages_up_per_gateway_median": statistics.median(up),
            "messages_up_per_gateway_max": max(up),
            "messages_down_per_gateway_median": statistics.median(down),
            "platform": "reference platform (hil/platform) and Mosquitto on loopback, one machine",
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--gateways", type=int, default=20)
    parser.add_argument("--bad", type=int, default=2, help="gateways (the last ones) given a failing config")
    parser.add_argument("--waves", default="1,10%,rest")
    parser.add_argument("--max-failure-rate", type=float, default=0.2)
    parser.add_argument("--confirm-s", type=float, default=CONFIRM_S, help="health check window")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(bench(args.gateways, args.bad, args.waves, args.max_failure_rate, args.confirm_s))
    if args.json:
        print(json.dumps(result))
        return
    for k, v in result.items():
        print(f"{k}: {v}")


if __name__ == "__main__":
    main()
