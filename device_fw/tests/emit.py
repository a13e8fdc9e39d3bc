# Runs boots of the node from a scenario and prints every advert as a JSON line, for pytest to
# check with the gateway's decoder and the bthome-ble parser, and to replay over a virtual radio.
#
#   micropython emit.py scenario.json    ({"config": {...}, "mac": "a4c138000001", "boots": [{"tilt": 30}]})
#   (a boot's "accel": [x, y, z] in g sets the accelerometer's reading instead of "tilt")
#
# The scenario comes in a file: this unix build of MicroPython aborts ("FATAL: uncaught NLR") on a
# command-line argument longer than about 256 characters.

import json
import math
import sys

import bluetooth
import machine

import harness


def main():
    with open(sys.argv[1]) as f:
        scenario = json.load(f)
    bluetooth.MAC[0] = bytes.fromhex(scenario.get("mac", "a4c138000001"))
    cfg = harness.make_config(**scenario.get("config", {}))
    for b in scenario["boots"]:
        if b.get("power_loss"):
            harness.power_loss()
        r = b.get("tilt", 0.0) * math.pi / 180
        machine.SIM.accel = tuple(b["accel"]) if "accel" in b else (math.sin(r), 0.0, math.cos(r))  # g
        machine.SIM.adc_uv[34] = int(b.get("water_v", 0.12) * 1e6)
        machine.SIM.adc_uv[35] = int(b.get("battery_v", 3.4) / cfg["battery_divider"] * 1e6)
        machine.SIM.pins[27] = 1 if b.get("tamper") else 0
        machine.SIM.pins[25] = 1 if b.get("gas") else 0
        n, sleep_ms = harness.boot(cfg)
        for adv, interval_ms, duration_ms in n.adverts:
            print(json.dumps({"adv": adv.hex(), "interval_ms": interval_ms, "duration_ms": duration_ms,
                              "sleep_ms": sleep_ms, "tilt_alarm": n.tilt.active}))


main()
