# BTHome v2 service data encoder for the manhole node (the wire format, written from bthome.io).

import struct

from manhole.ccm import AesCcm

UUID16 = 0xFCD2
VERSION_BITS = 2 << 5
FLAG_ENCRYPTED = 0x01

# Object ids the node sends, with their encodings (struct format, factor). Ascending ids.
BATTERY = 0x01  # uint8 %
PRESSURE = 0x04  # uint24 0.01 hPa (hydrant build)
VOLTAGE = 0x0C  # uint16 0.001 V
OPENING = 0x11  # binary: the node's tilt alarm (tilt held beyond threshold)
GAS = 0x1C  # binary: gas detected
MOISTURE = 0x20  # binary: high water
OCCUPANCY = 0x23  # binary: in bed (bedfoot build)
PROBLEM = 0x26  # binary: a sensor of the node gives no reading (sent only while so, in its reading's place)
TAMPER = 0x2B  # binary
ROTATION = 0x3F  # sint16 0.1 deg: the cover's tilt
DISTANCE_MM = 0x40  # uint16 mm: the water level

_FORMATS = {
    BATTERY: ("<B", 1),
    PRESSURE: ("<I3", 0.01),
    VOLTAGE: ("<H", 0.001),
    OPENING: ("<B", 1),
    GAS: ("<B", 1),
    OCCUPANCY: ("<B", 1),
    MOISTURE: ("<B", 1),
    PROBLEM: ("<B", 1),
    TAMPER: ("<B", 1),
    ROTATION: ("<h", 0.1),
    DISTANCE_MM: ("<H", 1),
}

_LIMITS = {"<B": (0, 255), "<H": (0, 65535), "<h": (-32768, 32767), "<I3": (0, 0xFFFFFF)}


def encode_object(obj_id, value):
    fmt, factor = _FORMATS[obj_id]
    if isinstance(value, bool):
        n = 1 if value else 0
    else:
        n = int(round(value / factor))
    lo, hi = _LIMITS[fmt]
    n = lo if n < lo else hi if n > hi else n  # saturate: a clipped reading beats a wrapped one
    if fmt == "<I3":  # 3-byte little-endian integer
        return bytes([obj_id]) + struct.pack("<I", n)[:3]
    return bytes([obj_id]) + struct.pack(fmt, n)


def encode_objects(objects):
    """objects: list of (id, value); sorted by id as the format asks."""
    out = b""
    for obj_id, value in sorted(objects, key=lambda o: o[0]):
        out += encode_object(obj_id, value)
    return out


def nonce(mac, device_info, counter):
    return bytes(mac) + struct.pack("<HBI", UUID16, device_info, counter)


def service_data(objects, key=None, mac=None, counter=None):
    """BTHome v2 service data (after the UUID). Encrypted when key is given (needs mac, counter)."""
    body = encode_objects(objects)
    if key is None:
        return bytes([VERSION_BITS]) + body
    info = VERSION_BITS | FLAG_ENCRYPTED
    sealed = AesCcm(key, 4).encrypt(nonce(mac, info, counter), body)
    return bytes([info]) + sealed[:-4] + struct.pack("<I", counter) + sealed[-4:]


def adv_payload(sdata, name=None):
    """Legacy advertising data: 16-bit service data (+ name). No flags: the node only broadcasts."""
    out = bytes([3 + len(sdata), 0x16]) + struct.pack("<H", UUID16) + sdata
    if name:
        raw = name.encode()
        out += bytes([1 + len(raw), 0x09]) + raw
    if len(out) > 31:
        raise ValueError("advertising data is %d bytes, legacy adverts carry 31" % len(out))
    return out
