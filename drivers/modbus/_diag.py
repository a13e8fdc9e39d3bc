"""Technician actions on an open Modbus channel: scan unit ids, raw read, raw write, identify.

Every result is a JSON-able dict; bad parameters raise `DiagParamError` naming the parameter.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from citynerve.drivers.modbus.codec import (
    GATEWAY_NO_TARGET,
    ORDERS,
    TYPES,
    CodecError,
    decode_registers,
    encode_value,
)
from citynerve.gateway.api import (
    DeviceExceptionError,
    DeviceTimeoutError,
    DiagParamError,
    DiagSteps,
    FrameError,
    PermanentError,
)

if TYPE_CHECKING:
    from citynerve.drivers.modbus._channel import ModbusChannel

TABLES = ("coil", "discrete", "input", "holding")


def _int(params: Mapping[str, Any], action: str, name: str, default: int | None, lo: int, hi: int) -> int:
    raw = params.get(name, default)
    if raw is None:
        raise DiagParamError(action, name, f"required (an integer {lo}..{hi})")
    try:
        if isinstance(raw, float):  # 10.7 is not address 10 (a JSON 10.0 is refused as well)
            raise TypeError("not an integer")
        value = int(raw, 0) if isinstance(raw, str) else int(raw)
    except (TypeError, ValueError) as err:
        raise DiagParamError(action, name, f"expected an integer {lo}..{hi}, got {raw!r}") from err
    if isinstance(raw, bool) or not lo <= value <= hi:
        raise DiagParamError(action, name, f"expected an integer {lo}..{hi}, got {raw!r}")
    return value


def _choice(params: Mapping[str, Any], action: str, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = str(params.get(name, default))
    if value not in choices:
        raise DiagParamError(action, name, f"expected one of {', '.join(choices)}, got {value!r}")
    return value


def _unit(channel: ModbusChannel, params: Mapping[str, Any], action: str, lo: int) -> tuple[int, int | None]:
    """The unit id to ask (1..247 on a serial line; up to 255 on Modbus TCP, where 0 and 255 address
    the device itself) and, on Modbus TCP, `reply_unit`: the unit id its replies carry if not that."""
    tcp = channel.frame_protocol == "modbus-tcp"
    unit = _int(params, action, "unit", None, lo, 255 if tcp else 247)
    if params.get("reply_unit") is None:
        return unit, None
    if not tcp:
        raise DiagParamError(action, "reply_unit", "is for Modbus TCP (an RTU reply carries the unit asked)")
    return unit, _int(params, action, "reply_unit", None, 0, 255)


def _timeout(params: Mapping[str, Any], action: str, default: float) -> float:
    raw = params.get("timeout_s", default)
    try:
        value = float(raw)
    except (TypeError, ValueError) as err:
        raise DiagParamError(action, "timeout_s", f"expected seconds, got {raw!r}") from err
    if not 0 < value <= 60:
        raise DiagParamError(action, "timeout_s", f"expected 0 < seconds <= 60, got {raw!r}")
    return value


def _read_call(table: str, address: int, count: int, unit: int) -> Any:
    async def call(client: Any) -> Any:
        method = {
            "coil": client.read_coils,
            "discrete": client.read_discrete_inputs,
            "holding": client.read_holding_registers,
            "input": client.read_input_registers,
        }[table]
        return await method(address, count=count, device_id=unit)

    return call


def scan_steps(channel: ModbusChannel, params: Mapping[str, Any], bus_timeout: float) -> DiagSteps:
    """`scan`, one step per unit id: the bus owner runs each as its own job, with the polls due
    in between (a scan as one job held the line for units x timeout: 8 minutes at 60 s)."""
    first = _int(params, "scan", "first", 1, 1, 247)
    last = _int(params, "scan", "last", 247, first, 247)
    table = _choice(params, "scan", "table", "holding", TABLES)
    address = _int(params, "scan", "address", 0, 0, 65535)
    timeout = _timeout(params, "scan", min(bus_timeout, 0.2))

    def ask(unit: int) -> Callable[[], Awaitable[_UnitReply]]:
        async def step() -> _UnitReply:
            call = _read_call(table, address, 1, unit)
            try:
                await channel.transact(f"unit {unit}", unit, (), timeout, call)
            except DeviceTimeoutError:
                return _UnitReply(unit, "silent")
            except DeviceExceptionError as err:
                if err.code in GATEWAY_NO_TARGET:  # a TCP gateway answering for a unit it cannot reach
                    return _UnitReply(unit, "gateway_no_answer")
                # An exception reply still proves a device with this unit id is on the line.
                return _UnitReply(unit, "exception", err.code)
            except FrameError:
                return _UnitReply(unit, "garbled")
            return _UnitReply(unit, "data")

        return step

    def join(replies: list[_UnitReply]) -> dict[str, Any]:
        answered: list[dict[str, Any]] = []
        for r in replies:
            if r.reply == "data":
                answered.append({"unit": r.unit, "reply": "data"})
            elif r.reply == "exception":
                answered.append({"unit": r.unit, "reply": "exception", "exception_code": r.code})
        return {
            "action": "scan",
            "table": table,
            "address": address,
            "scanned": [first, last],
            "timeout_s": timeout,
            "answered": answered,
            "garbled": [r.unit for r in replies if r.reply == "garbled"],
            # exception 10/11: the gateway's word that nothing answered there
            "gateway_no_answer": [r.unit for r in replies if r.reply == "gateway_no_answer"],
        }

    return DiagSteps(tuple(ask(unit) for unit in range(first, last + 1)), join)


@dataclass(frozen=True, slots=True)
class _UnitReply:
    """What one unit id of a scan gave: data, exception (with its code), garbled,
    gateway_no_answer (a TCP gateway's exception 10/11) or silent."""

    unit: int
    reply: str
    code: int | None = None


async def _read(channel: ModbusChannel, params: Mapping[str, Any], bus_timeout: float) -> dict[str, Any]:
    unit, reply_unit = _unit(channel, params, "read", 0)
    table = _choice(params, "read", "table", "holding", TABLES)
    address = _int(params, "read", "address", None, 0, 65535)
    type_ = params.get("type")
    order = params.get("order")
    if order is not None:
        order = _choice(params, "read", "order", "ABCD", tuple(ORDERS))
        word_order, byte_order = ORDERS[order]
    else:
        word_order = _choice(params, "read", "word_order", "big", ("big", "little"))
        byte_order = _choice(params, "read", "byte_order", "big", ("big", "little"))
    if type_ is not None:
        type_ = _choice(params, "read", "type", "uint16", (*TYPES, "string"))
        if table in ("coil", "discrete"):
            raise DiagParamError("read", "type", f"a {table} read gives bits; 'type' is for registers")
    natural = TYPES[type_].registers if type_ in TYPES else 1
    limit = 2000 if table in ("coil", "discrete") else 125
    count = _int(params, "read", "count", natural, 1, limit)
    if address + count - 1 > 65535:
        what = "count" if "count" in params else "type"
        raise DiagParamError("read", what, f"{count} from address {address} pass 65535")
    timeout = _timeout(params, "read", bus_timeout)
    call = _read_call(table, address, count, unit)
    reply = await channel.transact(f"unit {unit}", unit, (), timeout, call, reply_unit)
    result: dict[str, Any] = {
        "action": "read",
        "unit": unit,
        "table": table,
        "address": address,
        "count": count,
        "frames": channel.last_frames(),
    }
    if table in ("coil", "discrete"):
        result["bits"] = list(reply.bits[:count])
        return result
    result["registers"] = list(reply.registers)
    result["hex"] = " ".join(f"{r:04x}" for r in reply.registers)
    if type_ is not None:
        regs = reply.registers if type_ == "string" else reply.registers[:natural]
        try:
            value = decode_registers(regs, type_, word_order=word_order, byte_order=byte_order)
        except CodecError as err:
            raise DiagParamError("read", "count", f"{count} registers cannot hold a {type_}: {err}") from err
        result.update(type=type_, word_order=word_order, byte_order=byte_order, value=value)
    if len(reply.registers) >= 2:
        result["orders"] = _all_orders(reply.registers, type_)
    return result


def _all_orders(registers: Sequence[int], type_: str | None) -> dict[str, dict[str, Any]]:
    """The first register pair (or four, for 64-bit types) decoded in each of the four layouts, so
    a technician sees which word / byte order gives a believable number."""
    types = [type_] if type_ in TYPES and TYPES[type_].registers >= 2 else ["float32", "int32", "uint32"]
    out: dict[str, dict[str, Any]] = {}
    for name, (word_order, byte_order) in ORDERS.items():
        row: dict[str, Any] = {}
        for t in types:
            regs = registers[: TYPES[t].registers]
            try:
                row[t] = decode_registers(regs, t, word_order=word_order, byte_order=byte_order)
            except CodecError:
                continue
        out[name] = row
    return out


async def _write(channel: ModbusChannel, params: Mapping[str, Any], bus_timeout: float) -> dict[str, Any]:
    unit, reply_unit = _unit(channel, params, "write", 0)
    table = _choice(params, "write", "table", "holding", ("coil", "holding"))
    address = _int(params, "write", "address", None, 0, 65535)
    timeout = _timeout(params, "write", bus_timeout)
    raw = params.get("values", params.get("value"))
    if raw is None:
        raise DiagParamError("write", "value", "required (a value, or 'values' for several)")
    values = list(raw) if isinstance(raw, list | tuple) else [raw]
    if not values:
        raise DiagParamError("write", "values", "at least one value")
    if table == "coil":
        bits = []
        for v in values:
            if not isinstance(v, bool | int) or int(v) not in (0, 1):
                raise DiagParamError("write", "value", f"a coil takes true/false or 0/1, not {v!r}")
            bits.append(bool(v))
        payload: list[int] | list[bool] = bits
    else:
        regs: list[int] = []
        for v in values:
            try:
                regs.extend(encode_value(int(v, 0) if isinstance(v, str) else v, "uint16"))
            except (CodecError, ValueError, TypeError) as err:
                raise DiagParamError("write", "value", f"a register takes 0..65535, not {v!r}") from err
        payload = regs
    # One request's worth (FC 15: 1968 coils, FC 16: 123 registers) inside the address space.
    most = 1968 if table == "coil" else 123
    if len(payload) > most:
        why = f"at most {most} {table} values in one write, got {len(payload)}"
        raise DiagParamError("write", "values", why)
    if address + len(payload) - 1 > 65535:
        raise DiagParamError("write", "values", f"{len(payload)} values from address {address} pass 65535")
    function = {("coil", True): 5, ("coil", False): 15, ("holding", True): 6, ("holding", False): 16}[
        (table, len(payload) == 1 and not isinstance(raw, list | tuple))
    ]

    async def call(client: Any) -> Any:
        silent = channel.broadcast(unit)
        if function == 5:
            return await client.write_coil(address, payload[0], device_id=unit, no_response_expected=silent)
        if function == 15:
            return await client.write_coils(address, payload, device_id=unit, no_response_expected=silent)
        if function == 6:
            return await client.write_register(
                address, payload[0], device_id=unit, no_response_expected=silent
            )
        return await client.write_registers(address, payload, device_id=unit, no_response_expected=silent)

    await channel.transact(f"unit {unit}", unit, (), timeout, call, reply_unit)
    return {
        "action": "write",
        "unit": unit,
        "table": table,
        "address": address,
        "function": function,
        "values": [int(v) if isinstance(v, bool) else v for v in payload],
    }


OBJECT_NAMES: dict[int, str] = {
    0: "vendor",
    1: "product_code",
    2: "revision",
    3: "vendor_url",
    4: "product_name",
    5: "model_name",
    6: "application_name",
}


async def _identify(channel: ModbusChannel, params: Mapping[str, Any], bus_timeout: float) -> dict[str, Any]:
    unit, reply_unit = _unit(channel, params, "identify", 0 if channel.frame_protocol == "modbus-tcp" else 1)
    timeout = _timeout(params, "identify", bus_timeout)

    async def call(client: Any) -> Any:
        # FC 43 / MEI 14, basic objects (vendor, product code, revision): many meters lack it
        # and answer exception 1, which is reported as such.
        return await client.read_device_information(read_code=1, object_id=0, device_id=unit)

    reply = await channel.transact(f"unit {unit}", unit, (), timeout, call, reply_unit)
    objects = {
        OBJECT_NAMES.get(k, f"object_{k:#04x}"): v.decode("latin-1").strip("\x00 ") for k, v in reply.objects
    }
    return {"action": "identify", "unit": unit, "objects": objects}


async def run_diag(
    channel: ModbusChannel, bus_timeout: float, action: str, params: Mapping[str, Any]
) -> dict[str, Any]:
    """Run one technician action; see the module docstring."""
    if action == "scan":
        return await scan_steps(channel, params, bus_timeout).run()
    if action == "read":
        return await _read(channel, params, bus_timeout)
    if action == "write":
        return await _write(channel, params, bus_timeout)
    if action == "identify":
        return await _identify(channel, params, bus_timeout)
    raise PermanentError(f"modbus has no diagnostic action {action!r} (try scan, read, write, identify)")
