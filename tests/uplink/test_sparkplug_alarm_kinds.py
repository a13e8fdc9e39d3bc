"""The alarm kinds a device's rules can raise are declared in its DBIRTH, and the outbox's notices
in the NBIRTH, so a raise needs no rebirth (a real `citynerve run`, a real Mosquitto). Each
device's first alarm of each kind used to cost an extra DBIRTH (a node-level notice a full
rebirth): `device_spec` was called without the kinds."""

from __future__ import annotations

from pathlib import Path

from citynerve.hil.faults._time_gateway import SMOKE_UNIT, building_and_gateway, short_folder
from citynerve.hil.platform import MosquittoBroker
from tests.uplink.sparkplug_host import SparkplugHost
from tests.uplink.test_sparkplug_present_state import GROUP, HOST_ID, NODE, _destination


async def test_a_rules_alarm_needs_no_rebirth(short_dir: Path) -> None:
    with short_folder(short_dir) as folder:
        broker = MosquittoBroker(workdir=folder)
        broker.start()
        try:
            extra = _destination(broker, primary_host=False)
            async with (
                SparkplugHost(broker, group_id=GROUP, node_id=NODE, host_id=HOST_ID) as host,
                building_and_gateway(folder, {}, extra=extra) as (building, gw),
            ):
                view = host.view
                await gw.wait_for("sd-11's data", lambda: any(d.device == "sd-11" for d in view.data), 60.0)
                building.trigger_smoke(SMOKE_UNIT)

                def raised() -> bool:
                    return any(d.name.endswith("/Rule") and d.value == "smoke_held" for d in view.data)

                await gw.wait_for("the raise at the host", raised, 30.0)
        finally:
            broker.close()
    births = [(verb, device) for verb, device, _ in view.births]
    assert births.count(("DBIRTH", "sd-11")) == 1, births
    assert births.count(("NBIRTH", None)) == 1, births
    dbirth = host.last_birth("sd-11")
    nbirth = host.last_birth(None)
    assert dbirth is not None and nbirth is not None
    folder = next(d.name for d in view.data if d.name.endswith("/Rule") and d.value == "smoke_held")
    assert folder.replace("/Rule", "/Active") in dbirth, sorted(dbirth)
    assert "Alarms/outbox_dropped/Active" in nbirth and "Alarms/outbox_new_epoch/Active" in nbirth
