"""A TCP bus whose host no resolver takes (an empty or over-long DNS label: a config typo) is refused
by the config with the key named; one that got past the models anyway (built in code) is a channel
error at open, and the bus owner keeps running with the channel down, never crashing."""

from __future__ import annotations

import asyncio
import random
import textwrap
from pathlib import Path

import pytest
from modbus_support import LOCATION, device_model
from pydantic import ValidationError

from citynerve.drivers.modbus.config import ModbusRtuOverTcpBusConfig, ModbusTcpBusConfig
from citynerve.drivers.modbus.driver import ModbusDriver
from citynerve.gateway.api import ChannelError, ConfigError
from citynerve.gateway.bus import BusOwner
from citynerve.gateway.config import load_config

BAD_HOSTS = ["plc..local", "a" * 64 + ".local", ".plc", "plc local", "plc:502", "x" * 254]
GOOD_HOSTS = ["plc.local", "plc.local.", "10.0.0.5", "::1", "fe80::1", "bücher.example", "a" * 63]
BUS_MODELS = [ModbusTcpBusConfig, ModbusRtuOverTcpBusConfig]


@pytest.mark.parametrize("model", BUS_MODELS, ids=lambda m: m.__name__)
def test_the_bus_models_take_host_names_and_ip_literals(model: type[ModbusTcpBusConfig]) -> None:
    for host in GOOD_HOSTS:
        assert model(id="b", host=host).host == host
    for host in BAD_HOSTS:
        with pytest.raises(ValidationError) as info:
            model(id="b", host=host)
        assert info.value.errors()[0]["loc"] == ("host",), host


@pytest.mark.parametrize("protocol", ["modbus_tcp", "modbus_rtu_over_tcp"])
def test_the_config_loader_names_the_host_key(tmp_path: Path, protocol: str) -> None:
    toml = textwrap.dedent(f'''
        [gateway]
        id = "gw-1"
        org = {{ city = "310100", district = "310106", street = "310106013" }}

        [[buses]]
        id = "plc"
        protocol = "{protocol}"
        host = "plc..local"
        ''')  # fmt: skip
    path = tmp_path / "gw.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [i.path for i in info.value.issues] == ["buses[0].host"]
    assert "plc..local" in info.value.issues[0].message


@pytest.mark.parametrize("model", BUS_MODELS, ids=lambda m: m.__name__)
async def test_a_host_that_got_past_the_models_is_a_channel_error(model: type[ModbusTcpBusConfig]) -> None:
    bus = model.model_construct(id="b1", host="plc..local", port=502, timeout_s=0.3)  # unvalidated
    driver = ModbusDriver(bus, [])
    with pytest.raises(ChannelError) as info:
        await driver.open()
    assert "plc..local" in info.value.reason and "serial" not in info.value.reason


@pytest.mark.parametrize("model", BUS_MODELS, ids=lambda m: m.__name__)
async def test_the_owner_of_such_a_bus_keeps_running_with_the_channel_down(
    model: type[ModbusTcpBusConfig],
) -> None:
    bus = model.model_construct(
        id="b1", host="a" * 64 + ".local", port=502, timeout_s=0.3, backoff_initial_s=0.2, backoff_max_s=0.4
    )
    dev = device_model(
        id="m1", bus="b1", profile="t", address=1, location=LOCATION,
        points={"v": {"table": "holding", "address": 0}},
    )  # fmt: skip

    class Sink:
        def submit(self, batch: object) -> None: ...
        def event(self, event: object) -> None: ...
        def mark_offline(self, device_id: str, ts: float) -> None: ...

    owner = BusOwner(bus, [dev], ModbusDriver(bus, [dev]), Sink(), rng=random.Random(1))
    task = asyncio.create_task(owner.run())
    await asyncio.sleep(0.5)  # several open attempts (channel backoff 0.05 s doubling)
    assert not task.done(), task.exception()
    assert owner.channel_open is False and owner.channel_error is not None
    assert owner.counters.channel_errors >= 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
