# Prints one advert (hex) of each family build for the gateway-side cross-check (tests/device_fw).
# Usage: micropython emit_family.py <mac hex>

import sys

import machine

import test_family

machine.SIM.reset()
mac = bytes.fromhex(sys.argv[1])
import bluetooth  # noqa: E402

bluetooth.MAC[0] = mac
machine.SIM.adc_uv[34] = 2000000
n, _ = test_family.boot_bed(test_family.bed_config.validate({"key": test_family.KEY}))
print("BED", n.adverts[0][0].hex())
machine.SIM.reset()
machine.SIM.adc_uv[34] = 650000
machine.SIM.pins[14] = 1
n, _ = test_family.boot_hydrant(test_family.hy_config.validate({"key": test_family.KEY}))
print("HYDRANT", n.adverts[0][0].hex())
# Their sensor faults: a dead accelerometer on the hydrant, a shorted strip under the bed.
machine.SIM.reset()
machine.SIM.adc_uv[34] = 3300000
n, _ = test_family.boot_bed(test_family.bed_config.validate({"key": test_family.KEY}))
print("BED_FAULT", n.adverts[0][0].hex())
machine.SIM.reset()
machine.SIM.adc_uv[34] = 650000
machine.SIM.accel = (0.0, 0.0, 0.0)
n, _ = test_family.boot_hydrant(test_family.hy_config.validate({"key": test_family.KEY}))
print("HYDRANT_FAULT", n.adverts[0][0].hex())
