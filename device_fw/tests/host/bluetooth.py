# Host stand-in for MicroPython's `bluetooth`: records what the firmware advertises.

import time

MAC = [bytes.fromhex("a4c138000001")]
ADVERTS = []  # (ticks_ms, interval_us, adv_data, connectable); adv_data None = stop


class BLE:
    def __init__(self):
        self._active = False

    def active(self, v=None):
        if v is not None:
            self._active = bool(v)
        return self._active

    def config(self, name):
        if name == "mac":
            return (0, MAC[0])
        raise ValueError("unknown config param")

    def gap_advertise(self, interval_us, adv_data=None, resp_data=None, connectable=True):
        if not self._active:
            raise OSError(1)  # EPERM: BLE not active, as on the device
        if interval_us is None:
            ADVERTS.append((time.ticks_ms(), None, None, False))
            return
        if adv_data is not None and len(adv_data) > 31:
            raise ValueError("advertising data too long")
        ADVERTS.append((time.ticks_ms(), interval_us, bytes(adv_data) if adv_data else None, connectable))
