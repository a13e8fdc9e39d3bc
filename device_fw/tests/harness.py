# Boots the node firmware on the host stand-ins, like the chip would: power-on or deep-sleep wake.

import bluetooth
import machine
import time

from manhole import config, hal, node

KEY = "231d39c1d7cc1ab1aee224cd096db932"


def make_config(**overrides):
    raw = {"key": KEY}
    raw.update(overrides)
    return config.validate(raw)


def power_loss():
    """Battery out and back: RTC memory is gone, flash stays."""
    machine.SIM.reset(keep_rtc=False)


def boot(cfg, counter_path="counter.dat"):
    """One boot: build the hardware, run one wake. Returns (node, sleep_ms).

    Sets the reset cause from how the previous boot ended (deep sleep or not).
    """
    del bluetooth.ADVERTS[:]
    hw = hal.Hardware(cfg)
    n = node.Node(hw, cfg, counter_path)
    sleep_ms = n.wake()
    try:
        hw.deep_sleep(sleep_ms)
    except machine.DeepSleep as e:
        machine.SIM.reset_cause = machine.DEEPSLEEP_RESET
        time.advance(e.asleep_ms)  # the timer, or 0: an EXT1 pin already high woke it at once
    return n, sleep_ms


def adverts():
    """Advert payloads started during the last boot (stops left out)."""
    return [a[2] for a in bluetooth.ADVERTS if a[2] is not None]


_LENGTHS = {"<B": 1, "<H": 2, "<h": 2, "<I3": 3}


def objects(adv, key=KEY):
    """The BTHome objects of one of the node's adverts, decrypted: {object id: raw integer}.

    CCM's payload is counter mode, so running the node's own encryption over the ciphertext gives
    back the plaintext (the tag it computes is of no use here and dropped). The gateway's decoder
    and bthome-ble check the same bytes in tests/device_fw.
    """
    from manhole import bthome
    from manhole.ccm import AesCcm

    sdata = adv[4 : 1 + adv[0]]
    info, body, counter = sdata[0], sdata[1:-8], int.from_bytes(sdata[-8:-4], "little")
    nonce = bthome.nonce(bluetooth.MAC[0], info, counter)
    plain = AesCcm(config.parse_key(key), 4).encrypt(nonce, body)[:-4]
    out = {}
    i = 0
    while i < len(plain):
        obj_id = plain[i]
        fmt = bthome._FORMATS[obj_id][0]
        n = _LENGTHS[fmt]
        raw = int.from_bytes(plain[i + 1 : i + 1 + n], "little")
        if fmt == "<h" and raw & 0x8000:
            raw -= 0x10000
        out[obj_id] = raw
        i += 1 + n
    return out
