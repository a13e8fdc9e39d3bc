"""`citynerve diag decode KIND HEX`: a technician pastes a captured frame and sees every field.

Decoders are found through the `citynerve.decoders` entry points (modbus-rtu, dlt645, cjt188,
bthome...), so the CLI never imports a driver package by name. Exit 0 when the frame decodes with a
good checksum, 1 when it does not (bad checksum/CRC, not a frame), 2 for bad input.
"""

from __future__ import annotations

import re
from importlib.metadata import entry_points
from typing import Any

import click
from rich.tree import Tree

from citynerve.gateway.api import FrameError, GatewayError
from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    console,
    esc,
    fail,
    json_option,
    print_json,
)
from citynerve.gateway.cli._groups import diag

GROUP = "citynerve.decoders"
_VERDICT_KEYS = ("checksum", "crc", "end")


def decoder_names() -> list[str]:
    return sorted({ep.name for ep in entry_points(group=GROUP)})


def load_decoder(kind: str) -> Any:
    """The decode function registered as `kind`. Raises click.UsageError naming the known kinds."""
    eps = [ep for ep in entry_points(group=GROUP) if ep.name == kind]
    if not eps:
        raise click.UsageError(
            f"no decoder {kind!r} (known: {', '.join(decoder_names()) or 'none installed'})"
        )
    try:
        return eps[0].load()
    except Exception as err:  # a missing or broken driver package: one clear line, not a traceback
        fail(f"decoder {kind!r} ({eps[0].value}) failed to load: {err}")


def parse_hex(text: str) -> bytes:
    """'68 61 01 ...', '686101', '0x68,0x61', '68:61' -> bytes. Raises click.BadParameter."""
    cleaned = re.sub(r"0[xX]", "", text)
    cleaned = re.sub(r"[\s,:;\-]", "", cleaned)
    if not cleaned:
        raise click.BadParameter("no hex digits", param_hint="HEX")
    if len(cleaned) % 2:
        raise click.BadParameter(f"odd number of hex digits ({len(cleaned)})", param_hint="HEX")
    try:
        return bytes.fromhex(cleaned)
    except ValueError as err:
        bad = next((c for c in cleaned if c not in "0123456789abcdefABCDEF"), "?")
        raise click.BadParameter(f"{bad!r} is not a hex digit", param_hint="HEX") from err


def verdict_ok(decoded: dict[str, Any]) -> bool:
    """False when any checksum/CRC/end-byte verdict in the decoded frame says not ok."""
    for key in _VERDICT_KEYS:
        value = decoded.get(key)
        if isinstance(value, dict) and value.get("ok") is False:
            return False
    return True


def _tree(node: Tree, value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                _tree(node.add(f"[bold]{esc(key)}[/]"), item)
            else:
                node.add(f"[bold]{esc(key)}[/]: {_text(key, item)}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, dict | list):
                _tree(node.add(f"[{i}]"), item)
            else:
                node.add(f"[{i}] {_text('', item)}")


def _text(key: str, item: Any) -> str:
    if key == "ok" and isinstance(item, bool):
        return "[green]yes[/]" if item else "[bold red]NO (mismatch)[/]"
    return esc(item)


def _options(pairs: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected KEY=VALUE", param_hint="--option")
        out[key.strip()] = value.strip()
    return out


@diag.command("decode")
@click.argument("kind", metavar="KIND")
@click.argument("hex_text", metavar="HEX", nargs=-1, required=True)
@click.option("--mac", help="bthome: the sensor's MAC address (needed to decrypt some payloads).")
@click.option("--key", help="bthome: the 32-hex-digit bind key of an encrypted sensor.")
@click.option(
    "--version", "dlt_version", type=click.Choice(["2007", "1997"]), help="dlt645: protocol version."
)
@click.option("--status-map", help="cjt188: the firmware's status-bit map (standard, bit0-closed, st1).")
@click.option("-o", "--option", "extra", multiple=True, metavar="KEY=VALUE", help="Any other decoder option.")
@json_option
def decode_cmd(
    kind: str,
    hex_text: tuple[str, ...],
    mac: str | None,
    key: str | None,
    dlt_version: str | None,
    status_map: str | None,
    extra: tuple[str, ...],
    as_json: bool,
) -> None:
    """Decode one captured frame: KIND is modbus-rtu, dlt645, cjt188 or bthome; HEX may contain spaces.

    Shows every field, the checksum verdict (expected vs found) and the decoded values with units.
    Exits 1 when the bytes are not a valid frame or the checksum does not match.

    \b
    citynerve diag decode dlt645 "68 61 01 00 00 00 00 68 91 08 33 33 34 33 59 33 33 33 8A 16"
    citynerve diag decode cjt188 68 10 12 00 00 00 00 00 00 01 03 90 1F 00 3D 16 --json
    """
    data = parse_hex(" ".join(hex_text))
    options: dict[str, Any] = _options(extra)
    for name, value in (("mac", mac), ("key", key), ("version", dlt_version), ("status_map", status_map)):
        if value is not None:
            options[name] = value
    decoder = load_decoder(kind)
    try:
        decoded = decoder(data, **options)
    except FrameError as err:
        if as_json:
            print_json({"kind": kind, "valid": False, "error": err.reason, "frame": data.hex(" ").upper()})
            raise SystemExit(EXIT_FAILED) from None
        fail(f"not a valid {kind} frame: {err.reason}")
    except (GatewayError, ValueError, TypeError) as err:
        fail(f"{kind}: {err}", EXIT_INVALID)
    ok = verdict_ok(decoded)
    if as_json:
        print_json({"kind": kind, "valid": ok, **decoded})
    else:
        tree = Tree(
            f"[bold]{kind}[/] frame, {len(data)} bytes: "
            + ("[green]valid[/]" if ok else "[bold red]INVALID[/]")
        )
        _tree(tree, decoded)
        console.print(tree, highlight=False)
    if not ok:
        raise SystemExit(EXIT_FAILED)
