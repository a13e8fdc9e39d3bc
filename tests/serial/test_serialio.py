"""The shared serial line: stale input drained, replies ended by the frame not a timer, and a USB
adapter unplugged and plugged back (device node gone, EIO) without restarting the gateway."""

from __future__ import annotations

import asyncio
import os
import random
import time
from pathlib import Path

import pytest
from serial_support import Collector, bus_config, dlt_device

from citynerve.drivers.dlt645 import Dlt645Driver, codec
from citynerve.drivers.serialio import (
    MeterSerialSettings,
    ReplyTimeout,
    SerialBusConfig,
    SerialLine,
    byte_time_s,
)
from citynerve.gateway.api import ChannelError, Event, EventState
from citynerve.gateway.bus import OFFLINE_KIND, BusOwner
from citynerve.hil.sim.idle_close import IdleClosingProxy
from citynerve.hil.sim.serial import SerialMeterBus, SimDlt645Meter
from citynerve.hil.sim.serial._bus import _open_pty

REPLY = bytes.fromhex("68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16")


def test_defaults_are_2400_8e1_and_byte_time() -> None:
    cfg = SerialBusConfig(id="b", protocol="dlt645", port="/dev/ttyUSB0")
    assert (cfg.serial.baudrate, cfg.serial.parity, cfg.serial.bytesize, cfg.serial.stopbits) == (
        2400,
        "E",
        8,
        1,
    )
    assert byte_time_s(cfg.serial) == pytest.approx(11 / 2400)


async def test_transact_drains_stale_input_and_returns_at_frame_end() -> None:
    master, slave, path = _open_pty()
    try:
        async with SerialLine(
            "b",
            MeterSerialSettings(port=path),
        ) as line:
            os.write(master, REPLY)  # a late reply from an earlier request: stale
            await asyncio.sleep(0.05)
            loop = asyncio.get_running_loop()
            got = asyncio.Event()

            def answer() -> None:
                data = os.read(master, 4096)
                assert data == codec.build_read("000000000161", 0x02010100)
                os.write(
                    master,
                    b"\xfe\xfe" + bytes.fromhex("68 61 01 00 00 00 00 68 91 06 33 34 34 35 34 43 10 16"),
                )
                got.set()

            loop.add_reader(master, answer)
            started = time.monotonic()
            frame = await line.transact(
                codec.build_read("000000000161", 0x02010100), codec.StreamParser(), timeout_s=5.0
            )
            elapsed = time.monotonic() - started
            loop.remove_reader(master)
            assert frame.data[:4] == bytes.fromhex("00 01 01 02")  # the fresh reply, not the stale one
            assert elapsed < 1.0  # ended by the complete frame, far before the 5 s timeout
            with pytest.raises(ReplyTimeout) as info:
                await line.transact(b"\x00", codec.StreamParser(), timeout_s=0.05)
            assert info.value.received == b"" and info.value.rejected == ()
    finally:
        os.close(master)
        os.close(slave)


async def test_open_missing_port_is_channel_error(tmp_path: Path) -> None:
    line = SerialLine("rs485-9", MeterSerialSettings(port=str(tmp_path / "ttyUSB7")))
    with pytest.raises(ChannelError) as info:
        await line.open()
    assert info.value.bus_id == "rs485-9" and "ttyUSB7" in info.value.reason
    await line.close()
    await line.close()  # twice is fine


async def test_unplug_and_replug_driver_level(tmp_path: Path) -> None:
    link = tmp_path / "ttyUSB0"
    async with SerialMeterBus(
        meters=[SimDlt645Meter("000000000161", values={0x00010000: 5.5})], link=link
    ) as bus:
        driver = Dlt645Driver(bus_config(str(link)), [dlt_device(points={"e": {"di": "00010000"}})])
        device = driver.devices["em-0161"]
        request = driver.plan(device)[0]
        await driver.open()
        assert (await driver.read(device, request))[0].value == 5.5
        bus.unplug()
        with pytest.raises(ChannelError):  # EIO on the open port
            await driver.read(device, request)
        with pytest.raises(ChannelError):  # the device node is gone
            await driver.read(device, request)
        bus.replug()
        assert (await driver.read(device, request))[0].value == 5.5
        assert driver.line.opens == 2
        await driver.close()


async def wait_for(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


async def test_unplug_and_replug_under_the_bus_owner(tmp_path: Path) -> None:
    """The gateway's bus owner keeps running: the meter goes offline when the adapter is pulled and
    comes back online when it is plugged in again, without restarting anything."""
    link = tmp_path / "ttyUSB0"
    meter = SimDlt645Meter("000000000161", values={0x00010000: 5.5})
    async with SerialMeterBus(meters=[meter], link=link) as bus:
        cfg = SerialBusConfig(
            id="rs485-1",
            protocol="dlt645",
            timeout_s=0.3,
            retries=0,
            offline_after=1,
            backoff_initial_s=0.1,
            backoff_max_s=0.2,
            port=str(link),
        )
        device = dlt_device(points={"e": {"di": "00010000"}}, poll_interval_s=0.05)
        driver = Dlt645Driver(cfg, [device])
        sink = Collector()
        owner = BusOwner(cfg, [device], driver, sink, rng=random.Random(1))
        task = asyncio.create_task(owner.run(), name="bus[rs485-1]")
        try:
            await wait_for(lambda: any(s.value == 5.5 for b in sink.batches for s in b.samples))
            bus.unplug()
            await wait_for(
                lambda: any(e.kind == OFFLINE_KIND and e.state is EventState.RAISED for e in sink.events)
            )
            await asyncio.sleep(0.3)  # a few failed reopen attempts while the node is missing
            seen = len(sink.batches)
            bus.replug()
            await wait_for(
                lambda: any(e.kind == OFFLINE_KIND and e.state is EventState.CLEARED for e in sink.events)
            )
            await wait_for(lambda: len(sink.batches) > seen)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        assert driver.line.opens >= 2


async def test_adapter_missing_at_start_raises_device_offline_on_the_poll_schedule(tmp_path: Path) -> None:
    """A bus whose adapter is missing when the gateway starts: its meters go offline with the same
    event and after the same offline_after polls as a meter that stops answering (the open retries'
    own backoff, 0.5 s doubling to 4 s here, used to pace the count: offline after ~7.5 s, and
    minutes in the field), and come back when the adapter appears (a pty symlinked into place)."""
    link = tmp_path / "ttyUSB9"
    meter = SimDlt645Meter("000000000161", values={0x00010000: 5.5})
    async with SerialMeterBus(meters=[meter], link=link) as bus:
        bus.unplug()  # no such port when the owner starts
        cfg = SerialBusConfig(
            id="rs485-1",
            protocol="dlt645",
            timeout_s=0.3,
            retries=0,
            offline_after=3,
            backoff_initial_s=2.0,
            backoff_max_s=4.0,
            port=str(link),
        )
        device = dlt_device(points={"e": {"di": "00010000"}}, poll_interval_s=0.2)
        driver = Dlt645Driver(cfg, [device])
        sink = Collector()
        owner = BusOwner(cfg, [device], driver, sink, rng=random.Random(1))
        started = time.monotonic()
        task = asyncio.create_task(owner.run(), name="bus[rs485-1]")
        try:

            def raised() -> list[Event]:
                return [e for e in sink.events if e.kind == OFFLINE_KIND and e.state is EventState.RAISED]

            await wait_for(lambda: raised(), timeout_s=3.0)
            assert time.monotonic() - started < 2.0  # 3 polls at 0.2 s (+ jitter), not the open backoff
            assert [e.device_id for e in raised()] == ["em-0161"]
            assert "ttyUSB9" in raised()[0].message
            assert owner.health["em-0161"].online is False and owner.channel_open is False
            bus.replug()
            await wait_for(
                lambda: any(e.kind == OFFLINE_KIND and e.state is EventState.CLEARED for e in sink.events),
                timeout_s=8.0,
            )
            assert any(s.value == 5.5 for b in sink.batches for s in b.samples)
        finally:
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task


async def _start_converter(meter: SimDlt645Meter) -> asyncio.Server:
    """A transparent RS-485/Ethernet converter with `meter` on its line, on a free local port."""
    parser = codec.StreamParser()

    async def converter(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(256):
            for frame in parser.feed(data):
                reply = meter.answer(frame)
                if reply:
                    writer.write(reply)
        writer.close()

    return await asyncio.start_server(converter, "127.0.0.1", 0)


async def test_serial_to_ethernet_converter_socket_url() -> None:
    """Transparent RS-485/Ethernet converters: `port = "socket://host:port"` works like a tty."""
    server = await _start_converter(SimDlt645Meter("000000000161", values={0x00010000: 3.25}))
    port = server.sockets[0].getsockname()[1]
    try:
        driver = Dlt645Driver(
            bus_config(f"socket://127.0.0.1:{port}"), [dlt_device(points={"e": {"di": "00010000"}})]
        )
        device = driver.devices["em-0161"]
        assert (await driver.read(device, driver.plan(device)[0]))[0].value == 3.25
        await driver.close()
    finally:
        server.close()
        await server.wait_closed()


async def test_a_converter_that_closes_idle_connections_is_read_at_every_poll() -> None:
    """A converter's inactivity timeout shorter than the poll interval: the line finds its socket
    closed and reopens it before the request (as after an unplugged adapter), so every read works.
    DL/T 645 and CJ/T 188 share this line; Modbus has its own channel (tests/modbus)."""
    server = await _start_converter(SimDlt645Meter("000000000161", values={0x00010000: 3.25}))
    port = server.sockets[0].getsockname()[1]
    try:
        async with IdleClosingProxy(upstream=("127.0.0.1", port), idle_s=0.1) as proxy:
            driver = Dlt645Driver(
                bus_config(f"socket://{proxy.host}:{proxy.port}"),
                [dlt_device(points={"e": {"di": "00010000"}})],
            )
            device = driver.devices["em-0161"]
            for _ in range(3):
                assert (await driver.read(device, driver.plan(device)[0]))[0].value == 3.25
                await asyncio.sleep(0.3)
            assert proxy.idle_closed == 3 and driver.line.opens == 3
            await driver.close()
    finally:
        server.close()
        await server.wait_closed()
