"""The bleak backend without BlueZ (there is none in CI): record normalization from bleak's own
types, and the passive -> active fallback, with bleak's scanner replaced by a subclass of itself
whose start fails the way BlueZ refuses passive scanning. The real BlueZ run is a HIL matter."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from bleak import BleakScanner
from bleak.backends.device import BLEDevice
from bleak.backends.scanner import AdvertisementData
from bleak.exc import BleakError

from citynerve.drivers.ble import Advertisement
from citynerve.drivers.ble._bleak import BleakBackend
from citynerve.drivers.bthome import codec
from citynerve.gateway.api import ChannelError


def test_bleak_records_are_normalized() -> None:
    got: list[Advertisement] = []
    backend = BleakBackend(got.append, bus_id="ble0")
    data = AdvertisementData(
        local_name="mh-1",
        manufacturer_data={},
        service_data={codec.UUID128: b"\x40\x02\xca\x09"},
        service_uuids=[codec.UUID128],
        tx_power=None,
        rssi=-71,
        platform_data=(),
    )
    backend._on_advertisement(BLEDevice("a4:c1:38:00:00:01", "mh-1", None), data)
    (rec,) = got
    assert rec.address == "A4:C1:38:00:00:01" and rec.rssi == -71 and rec.local_name == "mh-1"
    assert rec.service_data_16(0xFCD2) == b"\x40\x02\xca\x09" and rec.platform_data is data


class RefusingScanner(BleakScanner):
    """bleak's scanner whose start fails like BlueZ without advertisement monitors (passive)."""

    log: ClassVar[list[str]] = []

    def __init__(self, *args: Any, passive: bool, fail_active: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.passive = passive
        self.fail_active = fail_active

    async def start(self) -> None:
        RefusingScanner.log.append("passive" if self.passive else "active")
        if self.passive or self.fail_active:
            raise BleakError("org.bluez.Error.NotSupported")

    async def stop(self) -> None:
        RefusingScanner.log.append("stop")


class TestBackend(BleakBackend):
    __test__ = False

    def __init__(self, *, fail_active: bool = False, **kw: Any) -> None:
        super().__init__(lambda a: None, bus_id="ble0", **kw)
        self.fail_active = fail_active

    def _make(self, passive: bool) -> Any:
        from bleak.backends.scanner import BaseBleakScanner

        class _Null(BaseBleakScanner):  # no platform backend is built: no D-Bus needed
            def __init__(self, *a: Any, **k: Any) -> None:
                pass

            async def start(self) -> None: ...

            async def stop(self) -> None: ...

            def set_scanning_filter(self, **kwargs: Any) -> None: ...

        return RefusingScanner(
            self._on_advertisement, passive=passive, fail_active=self.fail_active, backend=_Null
        )


async def test_passive_refused_falls_back_to_active(caplog: pytest.LogCaptureFixture) -> None:
    RefusingScanner.log = []
    backend = TestBackend()
    await backend.start()
    assert RefusingScanner.log == ["passive", "active"]
    assert "passive scanning refused" in caplog.text
    await backend.close()
    assert RefusingScanner.log[-1] == "stop"


async def test_nothing_works_is_one_channel_error() -> None:
    RefusingScanner.log = []
    backend = TestBackend(fail_active=True)
    with pytest.raises(ChannelError) as info:
        await backend.start()
    assert "passive" in info.value.reason and "active" in info.value.reason
    RefusingScanner.log = []
    active_only = TestBackend(fail_active=True, passive=False)
    with pytest.raises(ChannelError):
        await active_only.start()
    assert RefusingScanner.log == ["active"]
