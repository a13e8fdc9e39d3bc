"""Modbus device simulators on real pymodbus servers, driven by the profile files.

The three shipped profiles (config/profiles/modbus-*.toml) have behaviours: the three-phase
meter's power follows a daily curve (morning and evening peaks), voltages wobble around 230 V,
energy rises by integrating the power; the water meter's flow follows the same day and its
totaliser only rises; the smoke detector's alarm register is set and cleared from code. Any other
Modbus profile is simulated too, with plausible values by unit. `speed` runs simulated time
faster (speed=60: an hour per minute) so a demo shows the day passing.

Usage::

    from citynerve.hil.sim.modbus import ModbusBuilding, start_tcp_devices, PtyLink

    # A building on one Modbus TCP endpoint (unit 1 meter, 2-3 water, 11-13 smoke):
    async with ModbusBuilding(speed=60) as b:
        host, port = b.endpoint
        b.trigger_smoke(11); b.clear_smoke(11)
        b.silence(2); b.revive(2)          # a device unplugged and back

    # The same over RTU on a serial line: a pty pair joined by a relay that can corrupt bytes,
    # optionally paced like a real line (baudrate=9600) or echoing like a 2-wire adapter.
    async with PtyLink(baudrate=9600) as link, ModbusBuilding(rtu_url=link.device_port) as b:
        ...  # the gateway opens link.gateway_port; link.to_gateway = lambda d: d[:-1] + b"\\0"
        link.unplug()                      # the USB adapter vanishes

    # Many devices for benchmarks: N endpoints x M unit ids, values computed on demand.
    fleet = await start_tcp_devices(["modbus-power-meter-3ph", "modbus-water-meter"], 1000)
    fleet.addresses                        # [(host, port, unit), ...]
    await fleet.aclose()

A Modbus-DALI gateway (the Intesis map of `modbus-intesis-dali-lamp`): `SimDaliGateway(unit,
[short addresses])` serves a DALI LED driver at 100 x each short address behind one unit id;
`gateway.ballasts[sa].state.fault` puts one lamp out.

Lower level: `SimProfile.load(id_or_path)`, `SimDevice(profile, unit, speed=..)`,
`serve_tcp(devices, host=, port=, rtu_framing=)`, `serve_rtu(devices, url=, baudrate=)`.
Registers are encoded with pymodbus' own converters, independent of the driver's codec.
"""

from citynerve.hil.sim.modbus._dali import SimDaliGateway
from citynerve.hil.sim.modbus._devices import (
    PROFILES_DIR,
    SimDevice,
    SimDeviceContext,
    SimProfile,
    registers_of,
)
from citynerve.hil.sim.modbus._serve import (
    DEFAULT_BUILDING,
    ModbusBuilding,
    PtyLink,
    SimEndpoint,
    SimFleet,
    serve_rtu,
    serve_tcp,
    start_tcp_devices,
)

__all__ = [
    "DEFAULT_BUILDING",
    "PROFILES_DIR",
    "ModbusBuilding",
    "PtyLink",
    "SimDaliGateway",
    "SimDevice",
    "SimDeviceContext",
    "SimEndpoint",
    "SimFleet",
    "SimProfile",
    "registers_of",
    "serve_rtu",
    "serve_tcp",
    "start_tcp_devices",
]
