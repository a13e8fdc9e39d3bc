"""`citynerve demo`: the gateway's main job against a simulated building, no hardware, no root.

A building's devices are simulated by real protocol peers (pymodbus servers; DL/T 645 and CJ/T 188
meters and a fire panel on pty pairs; BTHome manhole covers on a bumble virtual radio), the city
platform by an MQTT broker (Mosquitto when installed, else an embedded one) and the reference
consumer. The gateway runs for real on a generated config; a scripted scenario triggers alarms
and a device failure while the demo shows what the gateway reads and what the platform receives.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from citynerve.gateway.api import GatewayError
from citynerve.gateway.config import load_config
from citynerve.gateway.runtime import Gateway
from citynerve.hil.demo_building import DemoBuilding
from citynerve.hil.demo_street import DemoStreet
from citynerve.hil.platform import (
    CommandSigner,
    PlatformConsumer,
    PlatformStore,
    find_mosquitto,
    free_port,
    start_demo_broker,
)
from citynerve.hil.platform.consumer import Arrival
from citynerve.hil.platform.view import format_arrival, print_platform_view


@dataclass
class DemoSummary:
    readings_arrived: int
    events_arrived: int
    duplicates: int
    gaps: int
    devices_online: int
    devices_total: int
    event_kinds: frozenset[str] = frozenset()  # kinds of the events that reached the platform


Step = tuple[float, str, Callable[[], Any]]


def scenario(b: DemoBuilding) -> list[Step]:
    """What happens in the building, seconds after start."""
    return [
        (12.0, "smoke in the 3F stairwell (detector unit 12)", lambda: b.modbus.trigger_smoke(12)),
        (20.0, "smoke cleared", lambda: b.modbus.clear_smoke(12)),
        (24.0, "water meter unit 3 unplugged", lambda: b.modbus.silence(3)),
        *b.extra_scenario(),
        (44.0, "water meter unit 3 plugged back", lambda: b.modbus.revive(3)),
    ]


SCENARIOS = ("building", "street")
BROKERS = ("auto", "mosquitto", "embedded")


def demo_broker_kind(broker: str) -> bool:
    """Whether the demo uses the embedded amqtt broker: `broker` "auto" (Mosquitto when installed),
    "mosquitto" or "embedded". amqtt speaks MQTT 3.1.1 only and has no shared subscriptions, so the
    gateway's uplink and the platform consumer are configured for it (`protocol = "3.1.1"`)."""
    if broker not in BROKERS:
        raise ValueError(f"unknown demo broker {broker!r}; known: {', '.join(BROKERS)}")
    if broker == "auto":
        return find_mosquitto() is None
    if broker == "mosquitto" and find_mosquitto() is None:
        raise GatewayError(
            "the demo was asked for Mosquitto, which is not installed (apt-get install mosquitto)"
        )
    return broker == "embedded"


async def run_demo(
    duration_s: float,
    workdir: Path,
    console: Console | None = None,
    scenario_name: str = "building",
    broker: str = "auto",
) -> DemoSummary:
    """Run the demo: `scenario_name` "building" (hil/demo_building.py) or "street" (hil/demo_street.py);
    `broker` as in `demo_broker_kind`."""
    if scenario_name not in SCENARIOS:
        raise ValueError(f"unknown demo scenario {scenario_name!r}; known: {', '.join(SCENARIOS)}")
    embedded = demo_broker_kind(broker)
    protocol = "3.1.1" if embedded else "5"
    console = console or Console()
    await asyncio.to_thread(_fresh_workdir, workdir)
    async with contextlib.AsyncExitStack() as stack:
        host, port, stop_broker = await start_demo_broker(embedded=embedded)
        stack.push_async_callback(stop_broker)
        kind = "embedded amqtt, MQTT 3.1.1" if embedded else "Mosquitto, MQTT 5"
        console.print(f"[bold]broker[/] mqtt://{host}:{port} ({kind})", highlight=False)
        building: DemoBuilding | DemoStreet
        if scenario_name == "street":
            building = await stack.enter_async_context(DemoStreet())
            steps_of = building.scenario()
        else:
            building = await stack.enter_async_context(DemoBuilding())
            steps_of = scenario(building)
        console.print(f"[bold]building[/] {escape(building.describe())}", highlight=False)

        last_data = 0.0

        def on_arrival(a: Arrival) -> None:
            nonlocal last_data
            if a.kind == "telemetry":  # one line every few seconds is enough for people
                if time.monotonic() - last_data < 3.0:
                    return
                last_data = time.monotonic()
            for line in format_arrival(a):
                console.print(f"[dim]platform[/] {line}", highlight=False)

        consumer = await stack.enter_async_context(
            PlatformConsumer(
                host=host,
                port=port,
                db_path=workdir / "platform.db",
                on_arrival=on_arrival,
                ack_signer=CommandSigner(hmac_key=building.write_platform_key(workdir)),
                protocol=protocol,
                group=None if embedded else "platform",
            )
        )
        config_path = workdir / "gateway.toml"
        web_port = free_port()
        config_path.write_text(
            building.config_toml(broker=f"mqtt://{host}:{port}", web_port=web_port, protocol=protocol)
        )
        cfg = load_config(config_path)
        console.print(
            f"[bold]gateway[/] {cfg.gateway.id}: {len(cfg.buses)} buses, {len(cfg.devices)} devices "
            f"(config {escape(str(config_path))}); status page http://127.0.0.1:{web_port}/ and /metrics",
            highlight=False,
        )
        stop = asyncio.Event()
        gateway = Gateway(cfg)
        gw_task = asyncio.create_task(gateway.run(stop), name="demo.gateway")
        started = time.monotonic()
        steps = asyncio.create_task(_play(steps_of, started, console), name="demo.scenario")
        shows = asyncio.create_task(_show_status(gateway, console), name="demo.status")
        try:
            await _wait(gw_task, duration_s)
        finally:
            stop.set()
            for t in (steps, shows):
                t.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await gw_task
        await asyncio.sleep(1.0)  # the last messages reach the platform
        st = gateway.brief_status()
        assert isinstance(consumer.store, PlatformStore)  # the demo's platform is SQLite
        print_platform_view(consumer.store, console)
        lanes = consumer.store.lanes()
        summary = DemoSummary(
            readings_arrived=sum(v.rows for v in lanes if v.lane == "telemetry"),
            events_arrived=sum(v.rows for v in lanes if v.lane == "event"),
            duplicates=sum(v.duplicates for v in lanes),
            gaps=sum(1 for v in lanes if v.open_gap is not None),
            devices_online=st["devices_online"],
            devices_total=st["devices_total"],
            event_kinds=frozenset(_event_kinds(consumer.store.events(cfg.gateway.id))),
        )
        console.print(
            f"[bold]demo done[/]: platform holds {summary.readings_arrived} readings and "
            f"{summary.events_arrived} events, {summary.duplicates} duplicates dropped, "
            f"{summary.gaps} open gaps; devices online {summary.devices_online}/{summary.devices_total}",
            highlight=False,
        )
        return summary


def _event_kinds(events: list[dict[str, Any]], state: str = "raised") -> set[str]:
    """Kinds of the events in `state` (raised, cleared) the platform holds (whatever the envelope
    nests them in)."""
    out: set[str] = set()
    for e in events:
        body = e.get("event", e) if isinstance(e.get("event"), dict) else e
        kind = body.get("kind") or body.get("type")
        if isinstance(kind, str) and body.get("state", "raised") == state:
            out.add(kind)
    return out


def _fresh_workdir(workdir: Path) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    for old in ("gateway.db", "gateway.db-wal", "gateway.db-shm", "platform.db"):
        (workdir / old).unlink(missing_ok=True)


async def _wait(task: asyncio.Task[None], duration_s: float) -> None:
    if duration_s > 0:
        done, _ = await asyncio.wait({task}, timeout=duration_s)
    else:
        done, _ = await asyncio.wait({task})
    for t in done:
        t.result()  # the gateway stopped by itself: show why


async def _play(steps: list[Step], started: float, console: Console) -> None:
    for at, what, action in sorted(steps, key=lambda s: s[0]):
        await asyncio.sleep(max(0.0, started + at - time.monotonic()))
        console.print(f"[bold magenta]scenario[/] t={at:.0f}s {escape(what)}", highlight=False)
        result = action()
        if isinstance(result, Awaitable):
            await result


async def _show_status(gateway: Gateway, console: Console) -> None:
    from citynerve.gateway.cli.cmd_run import show_status

    while True:
        await asyncio.sleep(15.0)
        with contextlib.suppress(Exception):
            show_status(await gateway.status())
