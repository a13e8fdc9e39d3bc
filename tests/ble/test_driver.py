"""The BTHome ListenDriver on a bumble virtual radio: delivery, alarms, replay, keys, counts."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from ble_support import KEY, MAC, MemoryState, RecordingSink, bus_config, manhole_device
from pydantic import ValidationError

from citynerve.drivers.bthome import DRIVER, BTHomeDevice, BTHomeDriver, BTHomePoint, RejectReason, codec
from citynerve.drivers.bthome.replay import counter_key, key_fingerprint
from citynerve.gateway.api import ConfigError, EventState, PermanentError, Severity
from citynerve.hil.sim.ble import BTHomeNode, ManholeCoverNode, VirtualAdvertiser, VirtualRadio


async def test_readings_and_tilt_alarm_reach_the_sink(radio: VirtualRadio, listening: Any) -> None:
    driver, sink = await listening([manhole_device()], MemoryState())
    node = ManholeCoverNode(radio, MAC, key=KEY)
    await node.state(tilt_deg=2.5, water_mm=120, battery_pct=88, voltage_v=3.41)
    await sink.wait_for(lambda: len(sink.batches) == 1)
    values = {s.point: s.value for s in sink.batches[0].samples}
    assert values == {
        "tilt": 2.5,
        "water_level": 120,
        "battery": 88,
        "voltage": 3.41,
        "tilt_alarm": False,
        "water_high": False,
        "tamper": False,
    }
    assert sink.events == []  # a closed cover on first sight is no event
    await node.state(tilt_deg=42.0, tilt_alarm=True)
    await sink.wait_for(lambda: len(sink.events) == 1)
    ev = sink.events[0]
    assert (ev.device_id, ev.kind, ev.state, ev.severity) == (
        "mh-1",
        "manhole_tilt",
        EventState.RAISED,
        Severity.CRITICAL,
    )
    assert ev.attrs["component_code"] == "3205080101000001" and ev.attrs["address_code"] == "320508001"
    await node.state(tilt_deg=1.0)
    await sink.wait_for(lambda: len(sink.events) == 2)
    assert sink.events[1].state is EventState.CLEARED
    stats = driver.stats()["mh-1"]
    assert stats.accepted == 3 and stats.rejected == {}
    assert stats.duplicates >= 3  # each burst repeats the same advert
    assert driver.last_seen("mh-1") == sink.batches[-1].ts
    assert stats.last_rssi is not None and stats.last_counter == 3


async def test_wrong_key_replay_malformed_are_rejected_and_counted(
    radio: VirtualRadio, listening: Any
) -> None:
    driver, sink = await listening([manhole_device()], MemoryState())
    good = ManholeCoverNode(radio, MAC, key=KEY, counter=100)
    sent = await good.state(tilt_deg=3.0)
    await sink.wait_for(lambda: len(sink.batches) == 1)

    forger = VirtualAdvertiser(radio, "A4:C1:38:00:00:01")  # same MAC, no key: a fake node
    await forger.power_on()

    async def forge(data: bytes) -> None:
        forger.send_now(data)  # exactly one advertising PDU
        await asyncio.sleep(0.01)

    await forge(codec.build([(0x11, False), (0x3F, 0.0)], mac=MAC, key=bytes(16), counter=500))
    await forge(codec.build([(0x11, False), (0x3F, 0.0)]))  # plaintext "all is well"
    await forge(sent)  # the last advert again: a duplicate, harmless...
    await good.state(tilt_deg=4.0)  # (the good node moves on to counter 101)
    await forge(sent)  # ...but now counter 100 <= 101: a replay
    await forge(b"\x41\x02")  # truncated encrypted
    await forge(b"\x41" + bytes(12))  # right length, garbage: wrong key (MIC)
    await forge(b"\x20\x02\xca\x09")  # BTHome v1 bits: malformed
    await good.state(tilt_deg=5.0)
    await sink.wait_for(lambda: len(sink.batches) == 3)
    await asyncio.sleep(0.1)
    stats = driver.stats()["mh-1"]
    assert [b.samples[0].value for b in sink.batches] == [3.0, 4.0, 5.0]
    assert stats.rejected[RejectReason.WRONG_KEY] == 2
    assert stats.rejected[RejectReason.UNENCRYPTED] == 1
    assert stats.rejected[RejectReason.REPLAY] == 1
    assert stats.rejected[RejectReason.MALFORMED] == 2
    assert stats.accepted == 3
    # the first replay (same bytes as the last accepted advert) is a duplicate, not a rejection
    assert stats.duplicates >= 1
    assert "counter" in stats.last_error or "bthome" in stats.last_error
    diag = await driver.diag("stats", {})
    assert diag["devices"]["mh-1"]["rejected"]["replay"] == 1


async def test_counter_survives_gateway_restart(radio: VirtualRadio, listening: Any) -> None:
    state = MemoryState()
    node = ManholeCoverNode(radio, MAC, key=KEY, counter=10)
    driver, sink = await listening([manhole_device()], state)
    old = await node.state(tilt_deg=1.0)
    await sink.wait_for(lambda: len(sink.batches) == 1)
    await driver.close()  # flushes the counter
    assert state.data[counter_key(MAC, key_fingerprint(KEY))] == "10"

    driver2, sink2 = await listening([manhole_device()], state)
    replayer = VirtualAdvertiser(radio, "A4:C1:38:00:00:01")
    await replayer.power_on()
    replayer.send_now(old)
    await node.state(tilt_deg=2.0)
    await sink2.wait_for(lambda: len(sink2.batches) == 1)
    assert sink2.batches[0].samples[0].value == 2.0
    assert driver2.stats()["mh-1"].rejected == {RejectReason.REPLAY: 1}


async def test_reset_counter_for_a_replaced_node(radio: VirtualRadio, listening: Any) -> None:
    state = MemoryState()
    state.data["bthome.counter." + MAC] = "5000"  # an older release's, by MAC: this key's
    driver, sink = await listening([manhole_device()], state)
    node = ManholeCoverNode(radio, MAC, key=KEY, counter=1)  # new node, counter from 1
    await node.state(tilt_deg=1.0)
    await asyncio.sleep(0.15)
    # every copy of the burst is heard and refused
    assert sink.batches == [] and driver.stats()["mh-1"].rejected[RejectReason.REPLAY] >= 1
    assert await driver.diag("reset-counter", {"device": "mh-1"}) == {
        "device": "mh-1",
        "counter": None,
        "was": 5000,
    }
    assert driver.stats()["mh-1"].rejected == {}  # its refusals as replays no longer describe it
    await node.state(tilt_deg=1.5)
    await sink.wait_for(lambda: len(sink.batches) == 1)
    with pytest.raises(PermanentError):
        await driver.diag("reset-counter", {"device": "nope"})
    with pytest.raises(PermanentError):
        await driver.diag("format-disk", {})


async def test_plaintext_sensor_packet_id_dedupe(radio: VirtualRadio, listening: Any) -> None:
    dev = BTHomeDevice.model_validate(
        {
            "id": "smoke-1",
            "bus": "ble0",
            "profile": "bthome-smoke",
            "address": "a4:c1:38:00:00:02",
            "location": {"address_code": "320508001"},
            "points": {
                "smoke": {
                    "name": "smoke",
                    "object": "smoke",
                    "event_kind": "smoke",
                    "event_severity": "critical",
                }
            },
        }
    )
    driver, sink = await listening([dev])
    node = BTHomeNode(radio, "A4:C1:38:00:00:02")
    await node.report([(0x29, True)], repeats=5)
    await sink.wait_for(lambda: len(sink.events) == 1)
    await asyncio.sleep(0.05)
    assert len(sink.batches) == 1  # five copies, one reading
    assert driver.stats()["smoke-1"].duplicates >= 3
    assert sink.events[0].kind == "smoke" and sink.events[0].severity is Severity.CRITICAL


async def test_unknown_nodes_are_ignored_but_listed(radio: VirtualRadio, listening: Any) -> None:
    driver, sink = await listening([manhole_device()])
    stranger = BTHomeNode(radio, "11:22:33:44:55:66")
    task = asyncio.create_task(driver.diag("scan", {"duration": 0.3}))
    await asyncio.sleep(0.05)
    await stranger.report([(0x02, 21.5), (0x03, 40.0)])
    node = ManholeCoverNode(radio, MAC, key=KEY)
    await node.state(tilt_deg=7.0)
    result = await task
    by_mac = {d["address"]: d for d in result["devices"]}
    assert by_mac["11:22:33:44:55:66"]["configured"] is False
    assert by_mac["11:22:33:44:55:66"]["values"] == {"temperature": 21.5, "humidity": 40.0}
    assert by_mac[MAC]["configured"] and by_mac[MAC]["encrypted"] and by_mac[MAC]["device_id"] == "mh-1"
    assert by_mac[MAC]["values"]["rotation"] == 7.0
    assert driver.unknown_adverts >= 1
    assert all(b.device_id == "mh-1" for b in sink.batches)


async def test_consumer_bug_does_not_stop_the_scanner(radio: VirtualRadio, listening: Any) -> None:
    class BrokenOnce(RecordingSink):
        broke = False

        def submit(self, batch: Any) -> None:
            if not self.broke:
                self.broke = True
                raise RuntimeError("pipeline bug")
            super().submit(batch)

    driver = BTHomeDriver(bus_config(radio), [manhole_device()])
    await driver.open()
    sink = BrokenOnce()
    task = asyncio.create_task(driver.listen(sink))
    node = ManholeCoverNode(radio, MAC, key=KEY)
    await node.state(tilt_deg=1.0)
    await asyncio.sleep(0.1)
    # A sink that raises is the bus owner's to handle: listen() ends with the error...
    assert task.done() and isinstance(task.exception(), ExceptionGroup)
    # ...and the owner restarts listen on the same open driver, which carries on.
    task2 = asyncio.create_task(driver.listen(sink))
    await node.state(tilt_deg=2.0)
    await sink.wait_for(lambda: len(sink.batches) == 1)
    task2.cancel()
    await driver.close()


async def test_key_file_and_config_errors(tmp_path: Path, radio: VirtualRadio) -> None:
    key_file = tmp_path / "mh.key"
    key_file.write_text(KEY.hex() + "\n")
    dev = manhole_device(key=None, key_file=str(key_file))
    assert dev.encrypted and dev.resolve_key() == KEY
    bad = manhole_device(key=None, key_file=str(tmp_path / "missing.key"))
    driver = BTHomeDriver(bus_config(radio), [bad])
    await driver.open()  # the adapter opens: only this node is faulted (tests/ble/test_bad_key_file.py)
    (err,) = driver.device_faults().values()
    assert isinstance(err, ConfigError) and "key_file" in err.issues[0].path
    await driver.close()
    with pytest.raises(ValidationError, match="key or key_file"):
        manhole_device(key_file=str(key_file))
    with pytest.raises(ValidationError, match="16 hex digits, expected 32"):
        manhole_device(key=b"\x01" * 8)
    with pytest.raises(ValidationError, match="not 6 bytes"):
        manhole_device(mac="A4:C1:38")
    assert "abcdef" not in repr(manhole_device(key=bytes.fromhex("abcdef" + "00" * 13)))  # key is secret


def test_a_key_file_is_read_up_to_a_bound(tmp_path: Path) -> None:
    """key_file pointing at something big (a log, a disk image): refused without reading it whole."""
    import tracemalloc

    from citynerve.drivers.bthome.config import KEY_FILE_MAX_BYTES

    big = tmp_path / "big.key"
    with big.open("wb") as f:
        f.truncate(8 * 2**20)  # sparse: 8 MiB to read, none on disk
    dev = manhole_device(key=None, key_file=str(big))
    tracemalloc.start()
    try:
        with pytest.raises(ConfigError) as info:
            dev.resolve_key("gw.toml")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 1024, peak
    (issue,) = info.value.issues
    assert (issue.file, issue.path) == ("gw.toml", "devices[mh-1].key_file")
    assert f"longer than {KEY_FILE_MAX_BYTES} bytes" in issue.message
    at_bound = tmp_path / "padded.key"  # the key, padded with blanks up to the bound: accepted
    at_bound.write_text(KEY.hex().ljust(KEY_FILE_MAX_BYTES - 1) + "\n")
    assert manhole_device(key=None, key_file=str(at_bound)).resolve_key() == KEY
    at_bound.write_text(KEY.hex().ljust(KEY_FILE_MAX_BYTES) + "\n")
    with pytest.raises(ConfigError, match="longer than"):
        manhole_device(key=None, key_file=str(at_bound)).resolve_key()


def test_two_devices_with_one_mac_are_a_config_error(radio: VirtualRadio) -> None:
    """The loader refuses this already; a driver built otherwise (diag, tests) must not silently
    give the node's adverts to the last device only."""
    devices = [manhole_device(), manhole_device(mac="a4c138000001", dev_id="mh-2")]
    with pytest.raises(ConfigError) as info:
        BTHomeDriver(bus_config(radio), devices)
    (issue,) = info.value.issues
    assert issue.path == "devices[mh-2].address"
    assert issue.message == f"address {MAC} is already used on bus 'ble0' by device 'mh-1'"


def test_point_model() -> None:
    assert BTHomePoint(name="t", object="0x3F").object == 0x3F
    assert BTHomePoint(name="t", object=63).object == 0x3F
    assert BTHomePoint(name="t", object="Rotation").object == "rotation"
    with pytest.raises(ValidationError, match="unknown BTHome object"):
        BTHomePoint(name="t", object="tilt")
    with pytest.raises(ValidationError, match="unknown BTHome object id"):
        BTHomePoint(name="t", object=0x99)
    assert (
        BTHomePoint(name="a", object="opening", event_kind="manhole_tilt", event_severity="critical").severity
        is Severity.CRITICAL
    )


def test_driver_spec() -> None:
    from importlib.metadata import entry_points

    (ep,) = [e for e in entry_points(group="citynerve.drivers") if e.name == "bthome"]
    assert ep.load() is DRIVER
    assert DRIVER.protocol == DRIVER.family == "bthome"
    (dec,) = [e for e in entry_points(group="citynerve.decoders") if e.name == "bthome"]
    assert dec.load()(bytes.fromhex("4002CA0903BF13"))["objects"][0]["value"] == 25.06


async def test_no_virtual_link_is_a_channel_error() -> None:
    from citynerve.drivers.ble import BleBusConfig
    from citynerve.gateway.api import ChannelError

    bus = BleBusConfig(id="ble9", protocol="bthome", backend="bumble", transport="virtual:nowhere")
    with pytest.raises(ChannelError) as info:
        await BTHomeDriver(bus, []).open()
    assert info.value.bus_id == "ble9"


async def test_alarm_raised_once_across_gateway_restart(radio: VirtualRadio, listening: Any) -> None:
    state = MemoryState()
    node = ManholeCoverNode(radio, MAC, key=KEY)
    driver, sink = await listening([manhole_device()], state)
    await node.state(tilt_deg=40.0, tilt_alarm=True)
    await sink.wait_for(lambda: len(sink.events) == 1)
    await driver.close()
    assert state.data["bthome.alarm.mh-1.tilt_alarm"] == "1"
    _driver2, sink2 = await listening([manhole_device()], state)
    await node.state(tilt_deg=41.0, tilt_alarm=True)  # still lifted after the restart: no new event
    await sink2.wait_for(lambda: len(sink2.batches) == 1)
    assert sink2.events == []
    await node.state(tilt_deg=0.5)
    await sink2.wait_for(lambda: len(sink2.events) == 1)
    assert sink2.events[0].state is EventState.CLEARED


async def test_overload_is_counted_not_fatal(radio: VirtualRadio) -> None:
    from citynerve.drivers.ble import Advertisement
    from citynerve.drivers.bthome import driver as driver_mod

    driver = BTHomeDriver(bus_config(radio), [manhole_device()])
    payload = codec.build([(0x3F, 1.0)], mac=MAC, key=KEY, counter=1)
    adv = Advertisement(MAC, -60, {codec.UUID128: payload}, 0.0)
    for _ in range(driver_mod.QUEUE_SIZE + 10):  # nobody consuming: the queue fills
        driver._on_advertisement(adv)
    assert driver.dropped_adverts == 10
    for i in range(driver_mod.NEARBY_MAX + 5):  # many strangers: the table stays bounded
        mac = f"11:22:33:44:{i >> 8:02X}:{i & 0xFF:02X}"
        driver._on_advertisement(Advertisement(mac, -80, {codec.UUID128: b"\x40\x01\x10"}, float(i)))
    assert len(driver.nearby) == driver_mod.NEARBY_MAX
    assert "11:22:33:44:00:00" not in driver.nearby  # the longest unheard went first
    assert driver.unknown_adverts == driver_mod.NEARBY_MAX + 5


def test_diag_decode_cli_uses_this_decoder() -> None:
    from click.testing import CliRunner

    from citynerve.gateway.cli import main

    runner = CliRunner()
    args = ["diag", "decode", "bthome", "41a47266c95f730011223378237214", "--mac", "54:48:E6:8F:80:A5"]
    ok = runner.invoke(main, [*args, "--key", "231d39c1d7cc1ab1aee224cd096db932", "--json"])
    assert ok.exit_code == 0, ok.output
    assert '"value": 25.06' in ok.output
    bad = runner.invoke(main, [*args, "--key", "00" * 16])
    assert bad.exit_code == 1 and "MIC" in bad.output and "Traceback" not in bad.output


async def test_store_failure_does_not_stop_delivery(radio: VirtualRadio, listening: Any) -> None:
    """The alarm state cannot be read: alarms are raised from what the node says (a counter that
    cannot be read refuses the advert instead: test_replay_store.py)."""

    class BrokenState(MemoryState):
        async def get(self, key: str) -> str | None:
            if key.startswith("bthome.alarm."):
                raise OSError("disk I/O error")
            return await super().get(key)

    driver, sink = await listening([manhole_device()], BrokenState())
    node = ManholeCoverNode(radio, MAC, key=KEY)
    await node.state(tilt_deg=50.0, tilt_alarm=True)
    await sink.wait_for(lambda: len(sink.events) == 1)
    await node.state(tilt_deg=51.0, tilt_alarm=True)
    await sink.wait_for(lambda: len(sink.batches) == 2)
    assert len(sink.events) == 1  # raised once: the in-memory state carries on
    assert driver.stats()["mh-1"].rejected == {}


async def test_advert_flood_of_one_node_is_rate_limited(radio: VirtualRadio) -> None:
    """A spoofer (or a broken node) sending fresh plaintext adverts as fast as it can: the burst and
    then ADVERTS_PER_S are delivered, the rest counted, not stored advert by advert."""
    from citynerve.drivers.ble import Advertisement
    from citynerve.drivers.bthome import driver as driver_mod

    mac = "A4:C1:38:00:00:09"
    dev = manhole_device(mac=mac, key=None, dev_id="mh-plain")
    driver = BTHomeDriver(bus_config(radio), [dev])
    sink = RecordingSink()
    n = 2000
    for i in range(n):
        payload = codec.build([(0x00, i % 256), (0x3F, float(i % 90))])
        await driver.handle(Advertisement(mac, -60, {codec.UUID128: payload}, float(i)), sink)
    stats = driver.stats()["mh-plain"]
    assert driver_mod.ADVERTS_BURST <= len(sink.batches) <= driver_mod.ADVERTS_BURST + 5
    assert stats.rate_limited == n - len(sink.batches) - stats.duplicates
    assert driver.input_stats()["rate_limited"] == stats.rate_limited


async def test_remote_device_read_answers_with_the_last_advert(radio: VirtualRadio, listening: Any) -> None:
    """A remote `device_read` of a BLE node (gateway/fleet_diag.py): the node is never asked; the
    answer is its last accepted advert (raw service data, which decodes to what it sent), the last
    one heard even if refused, and its link statistics."""
    from citynerve.gateway.fleet_diag import diag_actions
    from citynerve.gateway.uplink.commands import Caller

    device = manhole_device()
    driver, sink = await listening([device], MemoryState())
    read = diag_actions(
        config_source=None,
        devices=lambda: {device.id: device},
        protocol_of=lambda bus: "bthome",
        owner_of=lambda bus: driver,  # the bus owner hands a listening driver's diag to it as is
    )["device_read"].handler
    node = ManholeCoverNode(radio, MAC, key=KEY, counter=7)
    before = await read({"device_id": "mh-1"}, Caller("noc", "c-1"))
    assert before["last_advert"] is None and before["last_heard"] is None
    sent = await node.state(tilt_deg=6.5)
    await sink.wait_for(lambda: len(sink.batches) == 1)
    forger = VirtualAdvertiser(radio, MAC)  # then a forged advert from the same MAC: refused
    await forger.power_on()
    forger.send_now(codec.build([(0x11, False)], mac=MAC, key=bytes(16), counter=900))
    await asyncio.sleep(0.2)
    out = await read({"device_id": "mh-1"}, Caller("noc", "c-2"))
    assert out["device_id"] == "mh-1" and out["mac"] == MAC and out["encrypted"] is True
    last = out["last_advert"]
    assert bytes.fromhex(last["service_data"]) == sent and last["counter"] == 7
    decoded = codec.parse(bytes.fromhex(last["service_data"]), mac=MAC, cipher=driver._runtime["mh-1"].cipher)
    assert any(m.value == 6.5 for m in decoded.measurements)
    assert out["last_heard"]["service_data"] != last["service_data"]  # the forged one
    assert out["link"]["accepted"] == 1 and out["link"]["rejected"]
