"""What a Sparkplug host shows as *current* is the gateway's present state, in a real `citynerve run`
(a Modbus smoke detector, a real Mosquitto, a host resolving aliases through the births):

- a smoke alarm raised while the primary host is away reaches it as historical data (it happened
  then), and after that data the host's current value is the alarm, as is every later birth's;
- after the wall clock steps back (NTP correcting a clock that ran ahead) live data and alarms are
  still live, not historical: what is historical is decided by the outbox order, not wall times.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

from citynerve.gateway.api import Event, EventState
from citynerve.hil.faults._time_gateway import SMOKE_UNIT, GatewayRun, building_and_gateway, short_folder
from citynerve.hil.platform import MosquittoBroker
from citynerve.hil.sim.clock import SteppedWallClock
from tests.uplink.sparkplug_host import SparkplugHost

GROUP = "district-7"
NODE = "gw-time"  # the gateway id of hil/faults/_time_gateway.py
HOST_ID = "scada-main"
DAYS2 = 2 * 86400.0


def _destination(broker: MosquittoBroker, *, primary_host: bool) -> str:
    host = f'primary_host_id = "{HOST_ID}"' if primary_host else ""
    return textwrap.dedent(
        f"""
        [[upstream]]
        id = "scada"
        encoding = "sparkplug-b"
        brokers = ["{broker.url}"]

        [upstream.sparkplug]
        group_id = "{GROUP}"
        {host}
        """
    )


def _smoke_raise(gw: GatewayRun) -> Event | None:
    return next((e for e in gw.events() if e.rule == "smoke_held" and e.state is EventState.RAISED), None)


async def _active_metric(gw: GatewayRun) -> str:
    event = await gw.wait_for("smoke_held raised", lambda: _smoke_raise(gw), 30.0)
    return f"Alarms/{event.kind}/Active"


async def test_an_alarm_raised_while_the_host_is_away_is_current_once_it_is_back(short_dir: Path) -> None:
    with short_folder(short_dir) as folder:
        broker = MosquittoBroker(workdir=folder)
        broker.start()
        try:
            async with (
                SparkplugHost(broker, group_id=GROUP, node_id=NODE, host_id=HOST_ID) as host,
                building_and_gateway(folder, {}, extra=_destination(broker, primary_host=True)) as (
                    building,
                    gw,
                ),
            ):
                view = host.view
                await host.state(True)
                await gw.wait_for("sd-11's data", lambda: any(d.device == "sd-11" for d in view.data), 60.0)
                await host.state(False)  # the SCADA host goes away: NDEATH, nothing published
                await gw.wait_for("the NDEATH", lambda: "NDEATH" in view.verbs, 15.0)
                building.trigger_smoke(SMOKE_UNIT)
                active = await _active_metric(gw)
                await host.state(True)

                def raise_arrived() -> bool:
                    return any(d.name == active and d.value is True for d in view.data if d.device == "sd-11")

                await gw.wait_for("the raise at the host", raise_arrived, 30.0)
                # It happened while the host was away: historical data, as Sparkplug wants...
                sent = [d for d in view.data if d.device == "sd-11" and d.name == active and d.value is True]
                assert sent[0].historical
                # ...and then the host's current value: the gateway holds the alarm.
                await gw.wait_for(
                    "the alarm current on the host", lambda: view.current.get(("sd-11", active)) is True, 15.0
                )
                assert view.current.get(("sd-11", "smoke_alarm")) is True
                births = len(view.births)
                await host.rebirth()
                await gw.wait_for(
                    "sd-11's DBIRTH after the rebirth",
                    lambda: any(d == "sd-11" for _, d, _ in view.births[births:]),
                    15.0,
                )
                born = host.last_birth("sd-11")
                assert born is not None and born[active] is True and born["smoke_alarm"] is True, born
        finally:
            broker.close()


async def test_live_data_stays_live_after_the_wall_clock_steps_back(short_dir: Path) -> None:
    with short_folder(short_dir) as folder:
        broker = MosquittoBroker(workdir=folder)
        broker.start()
        try:
            clock = SteppedWallClock(folder)
            clock.set_offset(DAYS2)  # no RTC: the clock ran two days ahead before NTP
            async with (
                SparkplugHost(broker, group_id=GROUP, node_id=NODE, host_id=HOST_ID) as host,
                building_and_gateway(folder, clock.env(), extra=_destination(broker, primary_host=False)) as (
                    building,
                    gw,
                ),
            ):
                view = host.view
                await gw.wait_for("sd-11's data", lambda: any(d.device == "sd-11" for d in view.data), 60.0)
                clock.set_offset(0.0)  # NTP steps it back, mid-session
                stepped = len(view.data)
                building.trigger_smoke(SMOKE_UNIT)

                def raised() -> str | None:  # the host's view: the row leaves the outbox at once
                    rules = [d for d in view.data if d.name.endswith("/Rule") and d.value == "smoke_held"]
                    return rules[0].name.removesuffix("/Rule") + "/Active" if rules else None

                active = await gw.wait_for("the raise at the host", raised, 30.0)
                after = [d for d in view.data[stepped:] if d.device == "sd-11"]
                historical = [(d.name, d.value) for d in after if d.historical]
                assert not historical, f"live data sent as historical after the step back: {historical[:5]}"
                assert view.current.get(("sd-11", active)) is True
                births = len(view.births)
                await host.rebirth()
                await gw.wait_for(
                    "sd-11's DBIRTH after the rebirth",
                    lambda: any(d == "sd-11" for _, d, _ in view.births[births:]),
                    15.0,
                )
                born = host.last_birth("sd-11")
                assert born is not None and born[active] is True, born
        finally:
            broker.close()
