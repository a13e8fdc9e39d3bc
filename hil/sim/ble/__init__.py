"""Virtual BLE advertisers on a bumble virtual link: BTHome nodes without a radio.

`VirtualRadio` is one in-process link (a bumble LocalLink) that simulated nodes advertise on and
that the gateway's bumble backend scans (pass `radio.link` to the driver, or register the radio
under a name and use `transport = "virtual:<name>"` in the bus config).
"""

from citynerve.hil.sim.ble.advertiser import VirtualAdvertiser, VirtualRadio
from citynerve.hil.sim.ble.dongle import VirtualDongle, free_tcp_port
from citynerve.hil.sim.ble.firmware import FirmwareAdvert, run_scenario
from citynerve.hil.sim.ble.nodes import BTHomeNode, ManholeCoverNode

__all__ = [
    "BTHomeNode",
    "FirmwareAdvert",
    "ManholeCoverNode",
    "VirtualAdvertiser",
    "VirtualDongle",
    "VirtualRadio",
    "free_tcp_port",
    "run_scenario",
]
