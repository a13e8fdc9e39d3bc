"""Simulated RS-485 meters and fire panels on pty pairs: real protocol peers for tests, demos, benches.

Public API::

    from citynerve.hil.sim.serial import SerialMeterBus, SimDlt645Meter, SimCjt188Meter
    from citynerve.hil.sim.serial import Fault, FirePanelStream

    meters = [SimDlt645Meter("000000000161"), SimCjt188Meter("00000000000012", meter_type=0x10)]
    async with SerialMeterBus(meters=meters, baudrate=2400, wire_time=False) as bus:
        bus.port               # the path the gateway opens (pty slave, or `link=` symlink)
        bus.inject(Fault.BAD_CHECKSUM, count=1, address="000000000161")
        bus.unplug(); bus.replug()   # USB adapter pulled and plugged back (needs `link=`)

    async with FirePanelStream(encoding="gb2312", link=None) as panel:
        panel.port
        await panel.alarm(loop=4, device=4, location="一层大厅东侧", device_type="感烟探测器")
        await panel.fault(...); await panel.fault_cleared(...); await panel.reset()
        await panel.line("any text"); await panel.noise()

- `SimDlt645Meter(address, version="2007"|"1997", fe_count=2, values={di: value}, extra={di: (DataItem,
  value)}, split_dis=frozenset({di}), phases=3|1)`: answers reads of every DI in its version's table with
  values that move (energy grows with a swinging load), read-address (13), follow-ups (12) for
  `split_dis`, and an error reply (D1/C1, "no such data") for unknown DIs; with `phases=1` also for the
  phase B and C DIs (2007 02xx0200/0300, 1997 B6x2/B6x3).
- `SimCjt188Meter(address, meter_type=0x10, di_order=DiOrder.HIGH_FIRST, valve="open", battery_low=False,
  bad_time=False, status_map=STATUS_MAPS[...])`: 901F readings (flow grows while the valve is open; heat
  meters give heat, temperatures...), read address (03/810A), valve control (04/A017).
- Several meters that a request is for answer at once and collide (`collide`: the AND of what they
  send, never a valid frame): the wildcard and partial addresses (`A` digits) of a meter search.
  `riser_dlt645()` / `riser_cjt188()`: 30 meters for one line with a collision at every digit.
- `NullModem()`: `async with NullModem() as (port_a, port_b)`: two pty paths wired together, for
  third-party peers that open a port by path (the `dlt645` package's meter simulator).
- `SerialBuilding()`: the RS-485 part of the demo building (3 DL/T 645 meters, 3 CJ/T 188 water
  meters, the fire panel): `async with SerialBuilding() as s: s.config_toml(address_code=...)`
  gives the `[[buses]]`/`[[devices]]` tables, `s.extra_scenario()` the scripted events (fire alarm,
  reset, a meter going silent and back) as `(seconds, label, action)`; actions may be coroutines.
- As a process: `python -m citynerve.hil.sim.serial --link-dir DIR --dlt645 ADDR --cjt188 ADDR --panel
  [--alarm-after S]` prints `{"dlt645": PATH, "cjt188": PATH, "firepanel": PATH}` and serves until
  SIGTERM (see `__main__.py`).
- `Fault`: BAD_CHECKSUM, TRUNCATED, SILENCE, NOISE, NO_PREAMBLE, WRONG_ADDRESS.
- `LineRelay([(port, LineSettings(2400, "E", 1))], bit_error_rate=0.0, seed=1)`: between the gateway
  (it opens `relay.port`) and simulators' ports; re-times bytes at each side's baud rate and format,
  so wrong settings garble deterministically; optional seeded bit errors; several device ports
  transmitting at once collide.
- wire-time mode: each reply byte arrives `bits_per_byte / baudrate` after the previous (11 bits for
  8E1), and each request holds the line for its own wire time before the meter starts answering.
"""

from citynerve.hil.sim.serial._building import SerialBuilding
from citynerve.hil.sim.serial._bus import Fault, SerialMeterBus
from citynerve.hil.sim.serial._meters import SimCjt188Meter, SimDlt645Meter
from citynerve.hil.sim.serial._nullmodem import NullModem
from citynerve.hil.sim.serial._panel import FirePanelStream
from citynerve.hil.sim.serial._relay import LineRelay, retime
from citynerve.hil.sim.serial._riser import riser_cjt188, riser_dlt645

__all__ = [
    "Fault",
    "FirePanelStream",
    "LineRelay",
    "NullModem",
    "SerialBuilding",
    "SerialMeterBus",
    "SimCjt188Meter",
    "SimDlt645Meter",
    "retime",
    "riser_cjt188",
    "riser_dlt645",
]
