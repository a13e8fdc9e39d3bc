"""Replay protection when the gateway's store fails: a counter that cannot be read is no baseline
(the advert is refused as `store_unavailable` and the read retried at the next one), and a flush
never writes a counter below the stored one."""

from __future__ import annotations

from typing import Any

import pytest
from ble_support import KEY, MAC, MemoryState, manhole_device

from citynerve.drivers.bthome import RejectReason, codec
from citynerve.drivers.bthome.errors import CounterUnavailableError
from citynerve.drivers.bthome.replay import KEY_PREFIX, CounterGuard, counter_key, key_fingerprint
from citynerve.hil.sim.ble import BTHomeNode, ManholeCoverNode, VirtualAdvertiser, VirtualRadio

FP = key_fingerprint(KEY)
COUNTER_KEY = counter_key(MAC, FP)
LEGACY_KEY = KEY_PREFIX + MAC  # an older release's counter, by MAC alone


class LockedAtStart(MemoryState):
    """SQLite busy for the first `failures` reads of a counter (as at a gateway start under load)."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def get(self, key: str) -> str | None:
        if key.startswith(KEY_PREFIX) and self.failures:
            self.failures -= 1
            raise OSError("database is locked")
        return await super().get(key)


async def test_captured_adverts_are_refused_while_the_counter_cannot_be_read(
    radio: VirtualRadio, listening: Any
) -> None:
    state = LockedAtStart(failures=2)
    state.data[COUNTER_KEY] = "1000"  # the node had reached counter 1000
    driver, sink = await listening([manhole_device()], state)
    replayer = VirtualAdvertiser(radio, MAC)
    await replayer.power_on()
    # Adverts captured long ago: counters 500 ("closed") and 501 ("lifted"), both below 1000.
    replayer.send_now(codec.build([(0x11, False), (0x3F, 0.0)], mac=MAC, key=KEY, counter=500))
    replayer.send_now(codec.build([(0x11, False), (0x3F, 0.5)], mac=MAC, key=KEY, counter=500))
    replayer.send_now(codec.build([(0x11, True), (0x3F, 80.0)], mac=MAC, key=KEY, counter=501))
    node = ManholeCoverNode(radio, MAC, key=KEY, counter=1001)
    await node.state(tilt_deg=3.0)
    await sink.wait_for(lambda: len(sink.batches) == 1)
    stats = driver.stats()["mh-1"]
    assert stats.rejected == {RejectReason.STORE_UNAVAILABLE: 2, RejectReason.REPLAY: 1}
    assert [b.samples[0].value for b in sink.batches] == [3.0] and sink.events == []
    await driver.close()
    assert state.data[COUNTER_KEY] == "1001"


async def test_a_store_that_stays_down_refuses_encrypted_adverts_and_says_why(
    radio: VirtualRadio, listening: Any
) -> None:
    plain = "A4:C1:38:00:00:09"  # a plaintext node has no counter: delivered all the same
    devices = [manhole_device(), manhole_device(mac=plain, key=None, dev_id="mh-plain")]
    driver, sink = await listening(devices, LockedAtStart(failures=10**9))
    await ManholeCoverNode(radio, MAC, key=KEY).state(tilt_deg=40.0, tilt_alarm=True)
    await BTHomeNode(radio, plain).report([(0x3F, 1.0)])
    await sink.wait_for(lambda: len(sink.batches) == 1)
    assert sink.batches[0].device_id == "mh-plain" and sink.events == []
    stats = driver.stats()["mh-1"]
    assert set(stats.rejected) == {RejectReason.STORE_UNAVAILABLE}
    assert "database is locked" in stats.last_error
    diag = await driver.diag("stats", {})
    assert diag["devices"]["mh-1"]["rejected"] == {"store_unavailable": stats.rejected_total}


async def test_flush_never_writes_below_the_stored_counter() -> None:
    state = MemoryState()
    state.data[COUNTER_KEY] = "1000"
    guard = CounterGuard(state)
    assert await guard.last(MAC, FP) == 1000
    guard.accept(MAC, FP, 1001)
    state.data[COUNTER_KEY] = "2000"  # another writer (an older gateway's flush) got further
    await guard.flush()
    assert state.data[COUNTER_KEY] == "2000" and guard.cached(MAC, FP) == 2000
    guard.accept(MAC, FP, 2001)
    await guard.flush()
    assert state.data[COUNTER_KEY] == "2001"
    # Only a reset (a replaced node) lowers it, and the new node's first counter then stands.
    guard.reset(MAC, FP)
    guard.accept(MAC, FP, 1)
    await guard.flush()
    assert state.data[COUNTER_KEY] == "1"
    guard.accept(MAC, FP, 2)
    await guard.flush()
    assert state.data[COUNTER_KEY] == "2"


async def test_a_failed_counter_read_is_retried_not_cached() -> None:
    state = LockedAtStart(failures=1)
    state.data[COUNTER_KEY] = "7"
    guard = CounterGuard(state)
    with pytest.raises(CounterUnavailableError) as err:
        await guard.last(MAC, FP)
    assert err.value.mac == MAC and err.value.reason_code is RejectReason.STORE_UNAVAILABLE
    assert isinstance(err.value.cause, OSError)
    assert await guard.last(MAC, FP) == 7


async def test_a_new_key_starts_a_fresh_counter_and_the_old_keys_stays() -> None:
    """Provisioning a node anew (a new key) after its flash was erased: its counter restarts at 1
    and is accepted; adverts captured under the old key stay refused if that key came back."""
    state = MemoryState()
    guard = CounterGuard(state)
    new_fp = key_fingerprint(bytes(16))
    assert new_fp != FP and len(new_fp) == 12 and KEY.hex()[:12] not in new_fp
    assert await guard.last(MAC, FP) is None
    guard.accept(MAC, FP, 105_152)
    await guard.flush()
    assert await guard.last(MAC, new_fp) is None
    guard.accept(MAC, new_fp, 1)
    await guard.flush()
    assert state.data == {COUNTER_KEY: "105152", counter_key(MAC, new_fp): "1"}
    assert await CounterGuard(state).last(MAC, FP) == 105_152


async def test_an_older_releases_counter_by_mac_applies_to_the_current_key_only() -> None:
    """An upgrade opens no replay window: the MAC-only counter is the configured key's. A key that
    comes after it does not inherit it; a release rolled back to still finds it."""
    state = MemoryState()
    state.data[LEGACY_KEY] = "5000"
    assert await CounterGuard(state).last(MAC, FP) == 5000
    assert state.data[COUNTER_KEY] == "5000" and state.data[f"{LEGACY_KEY}.adopted"] == FP
    assert state.data[LEGACY_KEY] == "5000"
    assert await CounterGuard(state).last(MAC, FP) == 5000  # after a restart, its own entry
    assert await CounterGuard(state).last(MAC, key_fingerprint(bytes(16))) is None


async def test_a_reset_is_not_undone_by_an_older_releases_counter() -> None:
    state = MemoryState()
    state.data[LEGACY_KEY] = "5000"
    guard = CounterGuard(state)
    guard.reset(MAC, FP)  # before any advert was seen: the MAC-only counter never loaded
    await guard.flush()
    assert await CounterGuard(state).last(MAC, FP) is None


async def test_remote_reset_counter_lets_a_reflashed_node_in(radio: VirtualRadio, listening: Any) -> None:
    """The platform's `reset_counter` (configure permission; gateway/fleet_diag.py) does what
    `citynerve diag ble reset-counter` does, for a BLE node only."""
    from citynerve.gateway.fleet_diag import diag_actions
    from citynerve.gateway.uplink.commands import Caller
    from citynerve.gateway.uplink.errors import CommandRejectedError
    from citynerve.gateway.uplink.permissions import Permission

    state = MemoryState()
    state.data[COUNTER_KEY] = "105152"
    device = manhole_device()
    driver, sink = await listening([device], state)
    actions = diag_actions(
        config_source=None,
        devices=lambda: {device.id: device},
        protocol_of=lambda bus: "bthome",
        owner_of=lambda bus: driver,
    )
    assert actions["reset_counter"].permission is Permission.CONFIGURE
    node = ManholeCoverNode(radio, MAC, key=KEY, counter=1)  # its flash erased, its key kept
    await node.state(tilt_deg=60.0, tilt_alarm=True)
    await sink.wait_for(lambda: driver.stats()["mh-1"].rejected.get(RejectReason.REPLAY, 0) >= 1)
    assert driver.stats()["mh-1"].counter_restarted and sink.events == []
    out = await actions["reset_counter"].handler({"device_id": "mh-1"}, Caller("noc", "c-1"))
    assert out == {"device_id": "mh-1", "bus": "ble0", "device": "mh-1", "counter": None, "was": 105152}
    await node.state(tilt_deg=61.0, tilt_alarm=True)
    await sink.wait_for(lambda: len(sink.events) == 1)
    with pytest.raises(CommandRejectedError):
        await actions["reset_counter"].handler({"device_id": "nope"}, Caller("noc", "c-2"))
