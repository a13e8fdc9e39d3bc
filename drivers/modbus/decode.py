"""`decode_rtu`: every field of one captured Modbus RTU frame, for `citynerve diag decode`.

Registered as the `citynerve.decoders` entry point `modbus-rtu`.
"""

from __future__ import annotations

from typing import Any

from citynerve.drivers.modbus.codec import (
    EXCEPTION_REASONS,
    FUNCTIONS,
    ORDERS,
    PROTOCOL,
    TYPES,
    CodecError,
    Direction,
    Shape,
    decode_registers,
    parse_rtu_frame,
)
from citynerve.gateway.api import FrameError


def _as_bytes(data: bytes | bytearray | str) -> bytes:
    if isinstance(data, str):
        # Technicians paste hex from a sniffer: "01 03 00 00 00 02 c4 0b" or "0x01,0x03,...".
        text = data.replace("0x", "").replace(",", " ").replace(":", " ")
        try:
            return bytes.fromhex("".join(text.split()))
        except ValueError as err:
            raise FrameError(PROTOCOL, f"not hex bytes: {data[:40]!r}") from err
    return bytes(data)


def decode_rtu(data: bytes | bytearray | str, **options: Any) -> dict[str, Any]:
    """Decode one RTU frame (bytes, or hex text) into a JSON-able dict.

    Options: `direction` ("request" | "response"; guessed from the length otherwise),
    `type` (a register data type to decode the register values as, e.g. "float32") with
    `order` (ABCD, CDAB, BADC, DCBA). Raises FrameError when the bytes are not one frame.
    """
    raw = _as_bytes(data)
    direction_opt = options.get("direction")
    direction: Direction | None = None
    if direction_opt is not None:
        try:
            direction = Direction(str(direction_opt))
        except ValueError as err:
            raise FrameError(
                PROTOCOL, f"direction must be request or response, not {direction_opt!r}"
            ) from err
    frame = parse_rtu_frame(raw, direction)
    function = frame.function & 0x7F
    info = FUNCTIONS.get(function)
    result: dict[str, Any] = {
        "protocol": PROTOCOL,
        "frame": raw.hex(" "),
        "length": len(raw),
        "unit": frame.unit,
        "function": frame.function,
        "function_name": info.name if info else f"function {function}",
        "direction": frame.direction.value,
        "direction_guessed": direction is None,
        "ambiguous": frame.ambiguous,
        "crc": {
            "expected": f"{frame.crc_expected:#06x}",
            "found": f"{frame.crc_found:#06x}",
            "ok": frame.crc_ok,
            "wire_expected": frame.crc_expected.to_bytes(2, "little").hex(" "),
        },
    }
    fields: dict[str, Any] = {}
    if frame.shape is Shape.EXCEPTION:
        code = frame.exception_code or 0
        fields["exception_code"] = code
        fields["exception"] = EXCEPTION_REASONS.get(code, "unknown exception code")
    if frame.address is not None:
        fields["address"] = frame.address
    if frame.count is not None:
        fields["count"] = frame.count
    if frame.value is not None:
        fields["value"] = frame.value
        if function == 5:
            fields["coil"] = {0xFF00: "on", 0x0000: "off"}.get(frame.value, "invalid (must be ff00 or 0000)")
    if frame.shape in (Shape.BYTES, Shape.ADDR_COUNT_BYTES):
        fields["byte_count"] = len(frame.data)
        fields["data"] = frame.data.hex(" ")
    result["fields"] = fields
    if frame.registers:
        result["registers"] = list(frame.registers)
    elif frame.bits and info is not None:
        wanted = frame.count if frame.count is not None else len(frame.bits)
        result["bits"] = [int(b) for b in frame.bits[:wanted]]
    type_ = options.get("type")
    if type_ is not None and frame.registers:
        order = str(options.get("order", "ABCD")).upper()
        if order not in ORDERS:
            raise FrameError(PROTOCOL, f"order must be one of {', '.join(ORDERS)}, not {order!r}")
        if type_ != "string" and type_ not in TYPES:
            raise FrameError(PROTOCOL, f"type must be one of {', '.join([*TYPES, 'string'])}, not {type_!r}")
        word_order, byte_order = ORDERS[order]
        size = TYPES[type_].registers if type_ in TYPES else len(frame.registers)
        values: list[Any] = []
        regs = frame.registers
        try:
            for i in range(0, len(regs) - size + 1, size):
                values.append(
                    decode_registers(regs[i : i + size], type_, word_order=word_order, byte_order=byte_order)
                )
        except CodecError as err:
            raise FrameError(PROTOCOL, f"registers do not decode as {type_}: {err}", raw) from err
        result["values"] = {"type": type_, "order": order, "values": values}
    return result
