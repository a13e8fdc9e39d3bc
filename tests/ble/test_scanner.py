"""The scanner interface: record parsing, backend choice with lazy imports, the watchdog."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from typing import Any

import pytest
from ble_support import bus_config
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from citynerve.drivers.ble import (
    AdStructureError,
    Advertisement,
    Backend,
    BleBusConfig,
    Scanner,
    ScannerBackend,
    build_ad_structures,
    parse_ad_structures,
    uuid16_to_128,
)
from citynerve.gateway.api import ChannelError
from citynerve.hil.sim.ble import VirtualAdvertiser, VirtualRadio


def test_ad_structures() -> None:
    data = build_ad_structures({0xFCD2: b"\x40\x02\xca\x09"}, name="mh-1")
    service, name = parse_ad_structures(data)
    assert service == {uuid16_to_128(0xFCD2): b"\x40\x02\xca\x09"} and name == "mh-1"
    # 32- and 128-bit service data, zero padding
    data = (
        bytes([7, 0x20, 1, 2, 3, 4, 0xAA, 0xBB]) + bytes([18, 0x21]) + bytes(range(16)) + b"\xcc" + bytes(3)
    )
    service, _ = parse_ad_structures(data)
    assert service["04030201-0000-1000-8000-00805f9b34fb"] == b"\xaa\xbb"
    assert service["0f0e0d0c-0b0a-0908-0706-050403020100"] == b"\xcc"
    with pytest.raises(AdStructureError):
        parse_ad_structures(bytes([9, 0x16, 0xD2]))
    with pytest.raises(ValueError, match="31 bytes"):
        build_ad_structures({0xFCD2: bytes(40)})


@given(st.binary(max_size=31))
def test_ad_structures_fuzz(data: bytes) -> None:
    with contextlib.suppress(AdStructureError):
        parse_ad_structures(data)


def test_bus_config() -> None:
    assert BleBusConfig(id="ble0", protocol="bthome").backend is Backend.BLEAK
    with pytest.raises(ValidationError, match="needs a transport"):
        BleBusConfig(id="ble0", protocol="bthome", backend="bumble")
    with pytest.raises(ValidationError):
        BleBusConfig(id="ble0", protocol="bthome", watchdog_s=0)
    with pytest.raises(ValidationError):
        BleBusConfig(id="ble0", protocol="bthome", backend="bluez")


def test_bumble_missing_names_what_works_on_an_installed_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    # A gateway installed from the offline bundle cannot pip install: install.py --sim adds bumble.
    from citynerve.drivers.ble import _scanner

    real = _scanner.importlib.util.find_spec
    monkeypatch.setattr(
        _scanner.importlib.util, "find_spec", lambda name, *a: None if name == "bumble" else real(name, *a)
    )
    settings = BleBusConfig(id="ble0", protocol="bthome", backend="bumble", transport="usb:0")
    with pytest.raises(ChannelError, match=r"install\.py again with --sim.*citynerve\[bumble\]"):
        _scanner.make_backend(settings, lambda advert: None)


def test_backends_are_imported_lazily() -> None:
    code = (
        "import sys, citynerve.drivers.bthome, citynerve.drivers.ble;"
        "print('bumble' in sys.modules, 'bleak' in sys.modules,"
        " 'citynerve.drivers.ble._bumble' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]


async def test_bleak_without_bluez_is_a_channel_error() -> None:
    # No BlueZ / system D-Bus on the test machine: a typed error naming the bus, not a crash.
    bus = BleBusConfig(id="ble-pi", protocol="bthome", adapter="hci7")
    scanner = Scanner(bus, lambda adv: None)
    with pytest.raises(ChannelError) as info:
        await scanner.start()
    assert info.value.bus_id == "ble-pi" and "hci7" in info.value.reason
    await scanner.close()


async def test_bad_bumble_transport_is_a_channel_error() -> None:
    bus = BleBusConfig(id="ble1", protocol="bthome", backend="bumble", transport="serial:/dev/does-not-exist")
    scanner = Scanner(bus, lambda adv: None)
    with pytest.raises(ChannelError) as info:
        await scanner.start()
    assert info.value.bus_id == "ble1"
    await scanner.close()


async def test_bumble_backend_delivers_normalized_records(radio: VirtualRadio) -> None:
    got: list[Advertisement] = []
    scanner = Scanner(bus_config(radio), got.append)
    async with scanner:
        adv = VirtualAdvertiser(radio, "a4:c1:38:00:00:09", name="mh")
        await adv.send(b"\x40\x02\xca\x09")
        await asyncio.sleep(0.05)
    assert got, "nothing heard"
    rec = got[0]
    assert rec.address == "A4:C1:38:00:00:09" and rec.local_name == "mh" and rec.rssi == -50
    assert rec.service_data_16(0xFCD2) == b"\x40\x02\xca\x09"
    assert scanner.stats.adverts == len(got) and scanner.stats.last_heard == got[-1].ts


async def test_scanner_accepts_a_link_object(radio: VirtualRadio) -> None:
    bus = BleBusConfig(id="ble2", protocol="bthome", backend="bumble", transport="usb:0")
    got: list[Advertisement] = []
    async with Scanner(bus, got.append, link=radio.link):  # the link wins over the transport
        await VirtualAdvertiser(radio, "A4:C1:38:00:00:0A").send(b"\x40\x01\x64")
        await asyncio.sleep(0.05)
    assert got and got[0].service_data_16(0xFCD2) == b"\x40\x01\x64"


@pytest.mark.parametrize("passive", [True, False])
async def test_thousands_of_rotating_addresses_leave_no_state_in_bumble(
    radio: VirtualRadio, passive: bool
) -> None:
    """Phones rotate their random address every few minutes: a street cabinet hears thousands a
    day. bumble's per-address accumulators must not keep one for each (about 1 KiB apiece)."""
    from bumble import ll
    from bumble.hci import Address

    from citynerve.drivers.ble._bumble import ACCUMULATORS_MAX, BumbleBackend

    heard = 0

    def count(adv: Advertisement) -> None:
        nonlocal heard
        heard += 1

    n = 3 * ACCUMULATORS_MAX + 1000
    phone_data = bytes([2, 1, 6, 9, 0xFF, 0x4C, 0, 1, 2, 3, 4, 5, 6])  # manufacturer data, no BTHome
    async with Scanner(bus_config(radio, passive=passive), count) as scanner:
        backend = scanner.backend
        assert isinstance(backend, BumbleBackend) and backend._device is not None
        accumulators = backend._device.advertisement_accumulators
        sender = VirtualAdvertiser(radio, "C0:00:00:00:00:01")
        await sender.power_on()
        most = 0
        for i in range(n):
            mac = f"C1:00:00:{i >> 16 & 0xFF:02X}:{i >> 8 & 0xFF:02X}:{i & 0xFF:02X}"
            pdu = ll.AdvInd(advertiser_address=Address(mac), data=phone_data)
            sender.controller.send_advertising_pdu(pdu)
            if i % 100 == 99:
                await asyncio.sleep(0)
                most = max(most, len(accumulators))
        async with asyncio.timeout(30):
            while heard < n:
                await asyncio.sleep(0.01)
                most = max(most, len(accumulators))
    assert heard >= n  # an active scan also reports the virtual controller's scan responses
    assert most <= (1 if passive else ACCUMULATORS_MAX), most


class CountingBackend(ScannerBackend):
    """Records what the watchdog asks of a backend (the real one is exercised above)."""

    def __init__(self, fail_restart: bool = False) -> None:
        super().__init__(lambda adv: None, bus_id="ble0")
        self.calls: list[str] = []
        self.fail_restart = fail_restart

    async def start(self) -> None:
        self.calls.append("start")
        if self.fail_restart and len(self.calls) > 1:
            raise ChannelError(self.bus_id, "adapter gone")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def reset_adapter(self) -> None:
        self.calls.append("reset")

    async def close(self) -> None:
        self.calls.append("close")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


async def test_watchdog_restarts_then_resets(radio: VirtualRadio) -> None:
    clock = FakeClock()
    backend = CountingBackend()
    scanner = Scanner(bus_config(radio, watchdog_s=10), lambda a: None, backend=backend, clock=clock)
    await scanner.start()
    clock.now = 5
    await scanner.check()
    assert backend.calls == ["start"]  # heard recently enough
    clock.now = 11
    await scanner.check()
    assert backend.calls[1:] == ["stop", "start"] and scanner.stats.restarts == 1
    clock.now = 22
    await scanner.check()
    assert backend.calls[3:] == ["reset", "start"] and scanner.stats.resets == 1
    # hearing something resets the escalation
    backend.deliver(Advertisement("A4:C1:38:00:00:01", -60, {}, 0.0))
    clock.now = 25
    await scanner.check()
    clock.now = 36
    await scanner.check()
    assert backend.calls[-2:] == ["stop", "start"] and scanner.stats.restarts == 2


async def test_watchdog_survives_a_failing_restart(radio: VirtualRadio) -> None:
    clock = FakeClock()
    backend = CountingBackend(fail_restart=True)
    scanner = Scanner(bus_config(radio, watchdog_s=10), lambda a: None, backend=backend, clock=clock)
    await scanner.start()
    clock.now = 11
    await scanner.check()
    assert "adapter gone" in scanner.stats.last_error


async def test_watchdog_on_the_real_bumble_backend(radio: VirtualRadio) -> None:
    # A deaf radio: the watchdog restarts the scan, then resets the (virtual) controller, and
    # adverts are heard again afterwards.
    got: list[Any] = []
    scanner = Scanner(bus_config(radio, watchdog_s=0.2), got.append)
    async with scanner:
        watch = asyncio.create_task(scanner.watch())
        await asyncio.sleep(0.6)
        assert scanner.stats.restarts >= 1 and scanner.stats.resets >= 1
        await VirtualAdvertiser(radio, "A4:C1:38:00:00:0B").send(b"\x40\x01\x50")
        await asyncio.sleep(0.05)
        watch.cancel()
    assert got


def test_consumer_exceptions_are_contained(radio: VirtualRadio, caplog: Any) -> None:
    def broken(adv: Advertisement) -> None:
        raise RuntimeError("bug")

    scanner = Scanner(bus_config(radio), broken, backend=CountingBackend())
    scanner.backend.deliver(Advertisement("A4:C1:38:00:00:01", -60, {}, 0.0))
    assert scanner.stats.adverts == 1 and "consumer failed" in caplog.text
