"""What a Sparkplug host is told about the gateway's devices, in a real gateway (in-process runtime,
real Mosquitto, simulated Modbus building): a device offline when the gateway restarts is not born
alive, a filtered destination births only its devices, and a device going offline dies (and comes
back) on a host whose filter leaves the device_offline events out."""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from citynerve.gateway.config import load_config
from citynerve.gateway.uplink.sparkplug import Payload
from citynerve.hil.platform import MosquittoBroker
from citynerve.hil.sim.modbus import ModbusBuilding
from tests.fieldtools.conftest import DEVICES, gateway_toml, run_gateway, wait_for

GW = "gw-test-0001"
# The building's five devices and one whose unit no device answers (a meter that died or was removed).
GONE = ("wm-9", "modbus-water-meter", 99, "7", "9", "901")

Seen = list[tuple[str, Payload]]


@pytest.fixture
async def seen(broker: MosquittoBroker) -> AsyncIterator[Seen]:
    """Every spBv1.0 message, in order (a host application's view)."""
    out: Seen = []
    async with aiomqtt.Client(broker.host, broker.port) as client:
        await client.subscribe("spBv1.0/#", qos=1)

        async def collect() -> None:
            async for m in client.messages:
                assert isinstance(m.payload, bytes)
                out.append((str(m.topic), Payload.FromString(m.payload)))

        task = asyncio.create_task(collect())
        yield out
        task.cancel()


def _verbs(seen: Seen, device: str) -> list[str]:
    return [t.split("/")[2] for t, _ in seen if t.endswith(f"/{GW}/{device}")]


def _config(short_dir: Path, building: ModbusBuilding, broker: MosquittoBroker, spb_filter: str = "") -> Path:
    """A JSON v1 destination and a Sparkplug one ("scada", with `spb_filter`); rows committed
    within 0.2 s."""
    extra = textwrap.dedent(
        f"""
        [[upstream]]
        id = "city"
        brokers = ["{broker.url}"]

        [[upstream]]
        id = "scada"
        encoding = "sparkplug-b"
        brokers = ["{broker.url}"]
        {spb_filter}
        """
    )
    host, port = building.endpoint
    path = short_dir / "gateway.toml"
    text = gateway_toml(host, port, devices=(*DEVICES, GONE), extra=extra)
    text = text.replace('synchronous = "normal"', 'synchronous = "normal"\ncommit_interval_ms = 200')
    path.write_text(text)
    return path


async def test_an_offline_device_is_not_born_alive_after_a_restart(
    short_dir: Path, broker: MosquittoBroker, seen: Seen
) -> None:
    """wm-9 went offline (DDEATH). The gateway restarts: the bus owner starts wm-9 offline from the
    restored alarm and raises nothing new. The host must not be told wm-9 is alive (a DBIRTH with
    null values and no DDEATH after it): the new edge node starts it dead."""
    async with ModbusBuilding() as building:
        path = _config(short_dir, building, broker)
        async with run_gateway(load_config(path)):
            await wait_for(lambda: "DDEATH" in _verbs(seen, "wm-9"), timeout_s=30)
            await asyncio.sleep(1.0)  # the DDEATH's row acknowledged (else it goes again: still dead)
        first_life = len(seen)
        async with run_gateway(load_config(path)):
            await wait_for(lambda: "DDATA" in _verbs(seen[first_life:], "em-1"), timeout_s=30)
            await asyncio.sleep(2.0)  # a few polls of wm-9, which raise nothing new
        second = _verbs(seen[first_life:], "wm-9")
        births = [t.split("/")[4] for t, _ in seen[first_life:] if "/DBIRTH/" in t]
        assert "em-1" in births and "wm-9" not in births, (births, second)
        assert not second or second[-1] == "DDEATH", f"after the restart the host has wm-9 alive: {second}"


async def test_devices_outside_the_destinations_filter_are_not_born(
    short_dir: Path, broker: MosquittoBroker, seen: Seen
) -> None:
    """A Sparkplug destination filtered to em-1 announces no other device (a DBIRTH of every point,
    null values, alive for ever) to its host."""
    async with ModbusBuilding() as building:
        path = _config(short_dir, building, broker, 'filter = { devices = ["em-1"] }')
        async with run_gateway(load_config(path)):
            await wait_for(lambda: "DDATA" in _verbs(seen, "em-1"), timeout_s=30)
            await asyncio.sleep(1.0)
    born = sorted({t.split("/")[4] for t, _ in seen if "/DBIRTH/" in t})
    assert born == ["em-1"], f"devices outside filter.devices born on the host: {born}"


def _host_view(seen: Seen, device: str) -> tuple[list[str], bool]:
    """`device`'s verbs, and whether its data only ever came while it was born (a host drops
    DDATA of a device it holds dead)."""
    verbs = _verbs(seen, device)
    alive = False
    for verb in verbs:
        if verb == "DDATA" and not alive:
            return verbs, False
        alive = verb != "DDEATH" if verb in ("DBIRTH", "DDEATH") else alive
    return verbs, True


def _alias_of(seen: Seen, device: str, prefix: str) -> set[int]:
    return {
        m.alias
        for t, p in seen
        if "/DBIRTH/" in t and t.endswith(f"/{GW}/{device}")
        for m in p.metrics
        if m.name.startswith(prefix)
    }


@pytest.mark.parametrize(
    "spb_filter", ['filter = { event_kinds = ["smoke"] }', 'filter = { lanes = ["telemetry"] }']
)
async def test_a_device_dies_and_comes_back_on_a_host_whose_filter_leaves_device_offline_out(
    short_dir: Path, broker: MosquittoBroker, seen: Seen, spb_filter: str
) -> None:
    """A host taking telemetry (and smoke alarms) only: wm-2 stops answering and the host must get
    a DDEATH for it (Sparkplug session state, not an alarm the filter is about), without the
    alarm's metrics; when it answers again, a DBIRTH before its data."""

    def last_state(device: str) -> str | None:
        return next((v for v in reversed(_verbs(seen, device)) if v in ("DBIRTH", "DDEATH")), None)

    async with ModbusBuilding() as building:
        path = _config(short_dir, building, broker, spb_filter)
        async with run_gateway(load_config(path)):
            await wait_for(lambda: "DDATA" in _verbs(seen, "wm-2"), timeout_s=30)
            building.silence(2)
            await wait_for(lambda: last_state("wm-2") == "DDEATH", timeout_s=15)
            death = len(seen)
            building.revive(2)
            await wait_for(
                lambda: last_state("wm-2") == "DBIRTH" and "DDATA" in _verbs(seen[death:], "wm-2"),
                timeout_s=15,
            )
    verbs, data_while_born = _host_view(seen, "wm-2")
    assert data_while_born, f"DDATA of wm-2 while the host holds it dead: {verbs}"
    alarm = _alias_of(seen, "wm-2", "Alarms/device_offline/")
    sent = {m.alias for t, p in seen if "/DDATA/" in t and t.endswith(f"/{GW}/wm-2") for m in p.metrics}
    assert alarm and not alarm & sent  # the filter leaves the alarm itself out
