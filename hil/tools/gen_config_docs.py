"""Generate docs/configuration.md from the config models, so the reference never drifts from them.

    python -m citynerve.hil.tools.gen_config_docs          # rewrite docs/configuration.md
    python -m citynerve.hil.tools.gen_config_docs --check  # exit 1 when docs/configuration.md is stale

Every key of every section, bus, device and point model (one per protocol, from the driver
registry), and the device profile format: type, default, allowed range and meaning, read from the
pydantic models (field annotations, defaults, constraints and `description`s).
"""

from __future__ import annotations

import argparse
import enum
import re
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from annotated_types import Ge, Gt, Le, Lt, MaxLen, MinLen
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"

# Meanings of keys whose model field has no `description` (yet): by key, or by Model.key where one
# name means different things. A key with neither is a test failure (tests/fieldtools).
MEANING = {
    "id": "unique id (letters, digits, _ . : -); other entries refer to it",
    "name": "readable name, shown to people",
    "description": "free text for people",
    "enabled": "false: configured but not used",
    "tags": "labels rule selectors and the platform can match",
    "protocol": "the bus driver (see the bus sections)",
    "port": "serial device (/dev/ttyUSB0, a /dev/serial/by-id path) or a pyserial URL (socket://host:port); "
    "one enabled bus per serial device (`config check` refuses a second: it could not open the port)",
    "UpstreamConfig.protocol": "MQTT version: 5 (the broker states its limits and refusals) or 3.1.1",
    "ModbusTcpBusConfig.port": "TCP port of the Modbus TCP device or converter",
    "ModbusRtuOverTcpBusConfig.port": "TCP port of the serial-to-Ethernet converter",
    "host": "host name or IP address of the Modbus TCP converter",
    "baudrate": "line speed in baud",
    "bytesize": "data bits per character",
    "parity": "N none, E even, O odd",
    "stopbits": "stop bits per character",
    "timeout_s": "seconds to wait for a reply before the transaction counts as failed",
    "backoff_initial_s": "first wait before a failed bus is tried again; doubles per failure, less up "
    "to half of it at random (so buses restarted together do not retry in step)",
    "backoff_max_s": "longest wait between tries of a failed bus "
    "(a serial port that is missing is looked for every second)",
    "gap_s": "silence kept on the line between one frame and the next request",
    "poll_interval_s": "seconds between reads",
    "bus": "id of the bus the device is on",
    "profile": "profile id: the file stem of profiles/<id>.toml",
    "address": "where the device answers on its bus",
    "location": "where the device is (address code, building, floor, room, coordinates)",
    "building": "building name or number",
    "floor": "floor, e.g. B1, 3",
    "room": "room or flat",
    "lat": "latitude, WGS 84 degrees",
    "lon": "longitude, WGS 84 degrees",
    "points": "per-point overrides of the profile ([devices.points.<name>])",
    "unit": "engineering unit sent with the value (m3, kWh, V)",
    "scale": "value = raw x scale + offset",
    "offset": "value = raw x scale + offset",
    "deadband": "a new value is sent only when it moved by more than this (or max_interval_s passed)",
    "writable": "the platform may write this point (commands)",
    "table": "Modbus table: coil, discrete, holding or input",
    "type": "how the registers are decoded (uint16, int32, float32, bool with `bit`, string with `length`)",
    "word_order": "order of the 16-bit registers of a multi-register value",
    "byte_order": "order of the two bytes inside each register",
    "length": "number of registers (Modbus string) or bytes (DL/T 645 data item)",
    "bit": "the bit (0 = least significant) that holds a bool inside a register",
    "di": "DL/T 645 data identifier, hex (4 bytes for 2007, 2 for 1997)",
    "decimals": "implied decimal places of the BCD value",
    "signed": "the value's top bit is its sign",
    "version": "DL/T 645 edition the meter speaks: 2007 or 1997",
    "status_map": "how the meter's status bits read (valve, battery): a named map",
    "status_bits": "the meter's own status bit layout, when it is not the standard one",
    "valve_shift": "position of the valve state bits in the status word",
    "valve_mask": "width mask of the valve state bits",
    "valve_states": "valve bit values and what they mean (open, closed, fault)",
    "battery_low_bit": "status bit that says the battery is low",
    "preamble": "send FE bytes before each request (some meters need them to wake)",
    "di_order": "byte order of the 2-byte DI the meter speaks: 901F or 1F90",
    "field": "which field of the device's record becomes this point",
    "event_severity": "severity of the event this point raises when it becomes true",
    "date_order": "order of day, month and year in the panel's printed dates",
    "extra_dis": "data identifiers not in the built-in table: di, length, decimals, unit",
    "family": "protocol family the profile is for (modbus, dlt645, cjt188, bthome, firepanel)",
    "vendor": "who makes the device",
    "model": "the device model(s) the profile fits",
    "select": "which devices a rule applies to: by ids, profiles or tags",
    "devices": "device ids",
    "profiles": "profile ids",
    "kind": "the rule type (the section heading names it)",
    "point": "the point the rule reads",
    "event": "event type sent to the platform",
    "severity": "critical, major, minor or info",
    "message": "text of the event",
    "above": "raise when the value is above this",
    "below": "raise when the value is below this",
    "hysteresis": "the value must come back this far past the limit before the event clears",
    "hold_s": "the condition must hold this long before the event is raised",
    "clear_hold_s": "the condition must be gone this long before the event clears",
    "suppress_during": "schedule ids (quiet hours) when the rule does not raise",
    "suppress_when_away": "do not raise while the household is marked away",
    "escalate": "contact ids to call when the event stays raised",
    "window_s": "length of the window the value is judged over, seconds",
    "max_change": "raise when the value changes by more than this within window_s",
    "direction": "which changes count: rising, falling or both",
    "active": "the state of the input that raises (true for most alarms)",
    "window": "sliding (last window_s), day (calendar day) or slots (use in every slot)",
    "bin_s": "resolution of the sliding window, seconds",
    "slot_s": "length of one slot, seconds",
    "slots": "how many slots in a row",
    "min_per_slot": "use below this in a slot counts as no use",
    "rollover_at": "the meter's register wraps to zero at this value",
    "max_step": "a jump larger than this between two reads is a meter change, not use",
    "stale_s": "no reading for this long: the rule cannot judge (and says so)",
    "tz": "time zone of calendar days and schedules (IANA name)",
    "mode": "all or any of the rules active, or raised in sequence",
    "of": "the rule ids combined",
    "within_s": "sequence mode: the rules must raise within this many seconds",
    "method": "robust (median and mean absolute deviation) or ewma",
    "alpha": "ewma weight of a new value",
    "z": "raise when the value is this many deviations from normal",
    "cumulative": "score the use per slot of a cumulative meter, not the raw value",
    "min_value": "values below this never raise",
    "min_scale": "floor of the deviation, so a flat history cannot make noise an anomaly",
    "warmup": "values (per bin with a profile) before scoring starts",
    "hours": "local hours [from, to) the rule is active in",
    "after_s": "raise when no reading arrived for this long",
    "on": "rule ids whose events trigger the action",
    "when": "raised or cleared",
    "device": "device id the action writes to (empty: the event's device)",
    "value": "the value written",
    "min_interval_s": "writes that move the device at least this many seconds apart (a refused one waits)",
    "max_per_day": "writes that move the device at most this often a day",
    "start": "local time the window starts (HH:MM)",
    "end": "local time the window ends (HH:MM; before start: over midnight)",
    "days": "weekdays the schedule applies on",
    "role": "who the contact is (emergency_contact, community, street, operator, other)",
    "phone": "number the platform dials",
    "path": "a pack file by path instead of by name",
    "params": "values for the pack's parameters",
    "disable": "pack rule ids not to use",
    "packs": "shipped or local rule packs in use",
    "rules": "rules written in this config",
    "actions": "writes to devices when rules raise or clear",
    "schedules": "recurring quiet hours",
    "contacts": "people to call when events escalate",
    "socket": "Unix socket path of the local control interface; at most 107 bytes once resolved "
    "(AF_UNIX): under a deep folder, use a shorter absolute path",
    "level": "log level",
    "org": "administrative codes of where the gateway is",
    "username": "broker user name",
    "password_file": "file holding the broker password (never the password itself)",
    "password_env": "environment variable holding the broker password",
    "tls": "TLS settings for mqtts:// brokers",
    "verify": "check the broker's certificate and host name",
    "backoff": "reconnect waits after a lost broker connection",
    "initial_s": "first wait before reconnecting; doubles per failure",
    "max_s": "longest wait between reconnects",
    "commands": "commands from the platform: off unless `enabled = true` and a key is provisioned "
    "(a key alone checks end-to-end acks; commands are answered commands_disabled)",
    "hmac_key_file": "file with the shared HMAC key that signs commands",
    "ed25519_public_key_file": "file with the platform's Ed25519 public key that signs commands",
    "max_clock_skew_s": "a command stamped further from the gateway's clock is refused",
    "topic_prefix": "first level of every MQTT topic",
    "keepalive_s": "MQTT keepalive",
    "connect_timeout_s": "seconds to wait for the broker's CONNACK",
    "max_batch_readings": "most readings in one uplink message",
    "max_batch_bytes": "largest uplink message",
    "replay_burst": "messages sent back to back when a backlog is replayed",
    "e2e_ack": "wait for the platform's end-to-end acknowledgement before a message leaves the outbox "
    "(json-v1; refused with sparkplug-b)",
    "status_interval_s": "seconds between status messages",
    "backend": "BLE stack: bleak (BlueZ) or bumble (a virtual or USB radio)",
    "format": "how the raw bytes become a value (bcd, binary, ascii, datetime)",
    "UpstreamConfig.encoding": "payload encoding on the wire",
    "FirePanelDevice.encoding": "character set the panel prints in",
    "ModbusPointConfig.encoding": "character set of a string point",
    "DataItemConfig.name": "the data item's name",
    "PackRef.name": "pack name: the file stem under config/rules/",
    "PackRef.points": "rename the pack's point names to the devices' (pack point -> device point)",
    "PackRef.select": "which devices the pack's rules apply to",
    "Profile.description": "what the profile is for",
    "Profile.points": "the device's points: [points.<name>] with its protocol's point keys",
}

INTRO = """# Configuration reference

Generated from the config models by `python -m citynerve.hil.tools.gen_config_docs`; do not edit by hand (a
test fails when this file and the models disagree). One gateway reads one TOML file
(`/etc/citynerve/gateway.toml` on an installed gateway); `citynerve config check FILE` validates it and
names every problem with its key path and the entry's id. Guides: installer-guide.md (first config,
commissioning), technician-guide.md (diagnosis), rules.md (the `[rules]` section in depth),
modbus.md and serial-meters.md (point tables of each protocol).

The config, profiles, rule packs and the password and key files it names are UTF-8 text. A byte
order mark at the start (Windows Notepad writes one) is ignored, never part of a key or password;
a file in another encoding (GBK/GB18030, what an editor on a Chinese Windows writes by default) is
refused naming the line and byte of its first bad byte: save it as UTF-8.

Columns: **key**, **type**, **default** (*required* when there is none), **range** (limits the
loader enforces), **meaning**. A nested table is listed under its own heading. Relative paths are
relative to the config file's folder.
"""


def _type(annotation: Any) -> str:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type(args[0])
    if origin in (typing.Union, types.UnionType):
        parts = [_type(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} (optional)" if type(None) in args else text
    if origin is typing.Literal:
        return " / ".join(f'"{a}"' if isinstance(a, str) else str(a) for a in args)
    if origin in (tuple, list):
        inner = _type(args[0]) if args else "value"
        return f"array of {inner}"
    if origin is dict:
        return f"table of {_type(args[1])}" if len(args) == 2 else "table"
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return f"table ({annotation.__name__})"
        if issubclass(annotation, enum.Enum):
            return " / ".join(f'"{m.value}"' for m in annotation)
        return {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "Path": "path"}.get(
            annotation.__name__, annotation.__name__
        )
    text = str(annotation).replace("typing.", "")
    return re.sub(r"<class '([^']+)'>", r"\1", text)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "*required*"
    value = field.default
    if value is PydanticUndefined:
        value = field.default_factory() if field.default_factory else None  # type: ignore[call-arg]
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, BaseModel):
        return "(table defaults)"
    if value is None:
        return "none"
    if isinstance(value, str):
        return f'`"{value}"`' if value else '`""`'
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, dict | list | tuple) and not value:
        return "`{}`" if isinstance(value, dict) else "`[]`"
    return f"`{value}`"


def _range(field: FieldInfo) -> str:
    parts: list[str] = []
    for m in field.metadata:
        # citynerve.gateway.api's Seconds type bounds durations by a validator (0 < s <= 30 days),
        # not metadata
        if getattr(getattr(m, "func", None), "__name__", "") == "_duration":
            parts.insert(0, "> 0")
            if not any(isinstance(x, Le) for x in field.metadata):
                parts.append("<= 30 days")
        elif isinstance(m, Ge):
            parts.append(f">= {m.ge}")
        elif isinstance(m, Gt):
            parts.append(f"> {m.gt}")
        elif isinstance(m, Le):
            parts.append(f"<= {m.le}")
        elif isinstance(m, Lt):
            parts.append(f"< {m.lt}")
        elif isinstance(m, MinLen):
            parts.append(f"at least {m.min_length} long")
        elif isinstance(m, MaxLen):
            parts.append(f"at most {m.max_length} long")
        elif getattr(m, "pattern", None):
            parts.append(f"matches `{m.pattern}`")
    return ", ".join(parts)


def meaning(model: type[BaseModel], key: str, field: FieldInfo) -> str:
    return field.description or MEANING.get(f"{model.__name__}.{key}") or MEANING.get(key, "")


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _nested(annotation: Any) -> list[type[BaseModel]]:
    out: list[type[BaseModel]] = []
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    for a in typing.get_args(annotation):
        out += _nested(a)
    return out


def table(model: type[BaseModel], heading: str, level: int = 2, skip: tuple[str, ...] = ()) -> Iterator[str]:
    """A heading, the model's doc line, one row per key; nested models follow as subsections."""
    yield f"{'#' * level} {heading}"
    yield ""
    doc = (model.__doc__ or "").strip().split("\n\n")[0]
    if doc:
        yield " ".join(doc.split())
        yield ""
    yield "| key | type | default | range | meaning |"
    yield "|---|---|---|---|---|"
    nested: list[tuple[str, type[BaseModel]]] = []
    for name, field in model.model_fields.items():
        if name in skip:
            continue
        key = field.alias or name
        yield (
            f"| `{key}` | {_cell(_type(field.annotation))} | {_default(field)} | {_cell(_range(field))} "
            f"| {_cell(meaning(model, key, field))} |"
        )
        for sub in _nested(field.annotation):
            if sub is not model and all(sub is not m for _, m in nested):
                nested.append((key, sub))
    yield ""
    for key, sub in nested:
        several = sum(1 for k, _ in nested if k == key) > 1
        kind = _kind(sub) if several else ""
        yield from table(sub, f"{heading}.{key}{kind}", min(level + 1, 4))


def _kind(model: type[BaseModel]) -> str:
    """` (kind = "threshold")` for one of several table shapes told apart by a literal `kind`."""
    field = model.model_fields.get("kind")
    args = typing.get_args(field.annotation) if field else ()
    if field and typing.get_origin(field.annotation) is typing.Literal and len(args) == 1:
        return f' (kind = "{args[0]}")'
    return f" ({model.__name__})"


def render() -> str:
    from citynerve.gateway.config.drivers import driver_spec, known_protocols
    from citynerve.gateway.config.loader import _section_model
    from citynerve.gateway.config.model import (
        ClockConfig,
        ControlConfig,
        Identity,
        LogConfig,
        Profile,
        SecurityConfig,
    )

    out: list[str] = [INTRO]
    out += [
        "## Top level",
        "",
        "| key | type | default | range | meaning |",
        "|---|---|---|---|---|",
        "| `profile_dirs` | array of path | `[]` | | extra folders searched for device profiles "
        "(after `<config>.profiles/`, the profiles a remote config brought (docs/fleet.md); "
        "before `$CITYNERVE_PROFILES`, `profiles/` beside the config and the shipped profiles) |",
        "| `[gateway]` | table | *required* | | who this gateway is (below) |",
        "| `[control]`, `[log]`, `[clock]`, `[security]`, `[store]` | table | (table defaults) | | below |",
        "| `[upstream]`, `[rules]`, `[web]`, `[update]` | table | none (off) | "
        "| below; absent: that part is off |",
        "| `[[buses]]` | array of tables | `[]` | | one per bus; keys by `protocol` below |",
        "| `[[devices]]` | array of tables | `[]` | | one per device; keys by its bus's protocol below |",
        "",
    ]
    own: tuple[tuple[str, type[BaseModel]], ...] = (
        ("gateway", Identity),
        ("control", ControlConfig),
        ("log", LogConfig),
        ("clock", ClockConfig),
        ("security", SecurityConfig),
    )
    for name, model in own:
        out += list(table(model, f"[{name}]"))
    for name in ("store", "upstream", "rules", "web", "update"):
        out += list(table(_section_model(name), f"[{name}]"))
    for protocol in known_protocols():
        spec = driver_spec(protocol)
        out += list(table(spec.bus_model, f'[[buses]] protocol = "{protocol}"'))
    # One table per device model; a family whose protocols differ in devices (Modbus TCP unit
    # ids) names the protocols of each.
    models: dict[type[BaseModel], list[str]] = {}
    families: dict[str, set[type[BaseModel]]] = {}
    for protocol in known_protocols():
        spec = driver_spec(protocol)
        models.setdefault(spec.device_model, []).append(protocol)
        families.setdefault(spec.family, set()).add(spec.device_model)
    points_seen: set[type[BaseModel]] = set()
    for device_model, protocols in models.items():
        spec = driver_spec(protocols[0])
        where = spec.family if len(families[spec.family]) == 1 else " / ".join(protocols)
        out += list(table(device_model, f"[[devices]] on a {where} bus", skip=("points",)))
        if spec.point_model not in points_seen:
            points_seen.add(spec.point_model)
            out += list(table(spec.point_model, f"points of a {spec.family} device"))
    out += list(table(Profile, "Device profiles (profiles/<id>.toml)"))
    text = "\n".join(out).rstrip() + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 when the file is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run python -m citynerve.hil.tools.gen_config_docs", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
