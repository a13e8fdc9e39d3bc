"""Provision a node of the firmware family: make its key, write its config.json, print its gateway
config entry.

    python device_fw/tools/provision.py --id mh-0001 --mac A4:C1:38:12:34:56 \
        --address-code 320508001001 --component-code 3205080101000001 --out build/mh-0001
    python device_fw/tools/provision.py --build bedfoot --id bed-0301 --mac ... --out build/bed-0301

`--build` (manhole, the default; bedfoot; hydrant) picks the build's config.example.json, which
its loader accepts, and the gateway profile its adverts decode into.

Writes <out>/config.json (copy it to the node with mpremote) and <out>/<id>.key (install it on the
gateway, mode 0600, and point `key_file` at it), and prints the `[[devices]]` table to paste into
the gateway config. Runs on the installer's laptop (CPython), not on the node.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# build -> (its config.example.json, the gateway profile of its adverts)
BUILDS = {
    "manhole": (HERE.parent / "config.example.json", "bthome-manhole-cover"),
    "bedfoot": (HERE.parent / "bedfoot" / "config.example.json", "bthome-bed-occupancy"),
    "hydrant": (HERE.parent / "hydrant" / "config.example.json", "bthome-fire-hydrant"),
}


def provision(
    node_id: str,
    mac: str,
    address_code: str,
    component_code: str | None,
    out: Path,
    key: str | None = None,
    heartbeat_s: int | None = None,
    build: str = "manhole",
) -> tuple[Path, Path, str]:
    if build not in BUILDS:
        raise ValueError(f"build {build!r}: expected one of {', '.join(BUILDS)}")
    if not re.fullmatch(r"([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}", mac):
        raise ValueError(f"MAC {mac!r}: expected six hex pairs separated by ':'")
    if not re.fullmatch(r"[0-9]{6,20}", address_code):
        raise ValueError(f"address code {address_code!r}: expected 6-20 digits")
    if component_code is not None and not re.fullmatch(r"[0-9]{16}", component_code):
        raise ValueError(f"component code {component_code!r}: expected 16 digits")
    key = key or secrets.token_hex(16)
    if not re.fullmatch(r"[0-9a-fA-F]{32}", key):
        raise ValueError("key: expected 32 hex digits")
    out.mkdir(parents=True, exist_ok=True)
    example, profile = BUILDS[build]
    cfg = json.loads(example.read_text())
    cfg["key"] = key.lower()
    if heartbeat_s is None:
        heartbeat_s = int(cfg["heartbeat_interval_s"])
    if not 10 <= heartbeat_s <= 86400:
        raise ValueError(f"heartbeat {heartbeat_s} s: expected 10-86400")
    cfg["heartbeat_interval_s"] = heartbeat_s
    cfg_path = out / "config.json"
    cfg_path.write_text(json.dumps(cfg, indent=2) + "\n")
    key_path = out / f"{node_id}.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.lower() + "\n")
    lines = [
        "[[devices]]",
        f'id = "{node_id}"',
        'bus = "ble0"',
        f'profile = "{profile}"',
        f'address = "{mac.upper()}"',
        f'key_file = "/etc/citynerve/keys/{node_id}.key"',
        f"poll_interval_s = {heartbeat_s}",
    ]
    if component_code:
        lines.append(f'component_code = "{component_code}"')
    lines.append(f'location = {{ address_code = "{address_code}" }}')
    return cfg_path, key_path, "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description="Provision a CityNerve sensor node.")
    ap.add_argument("--build", choices=sorted(BUILDS), default="manhole", help="the node's firmware")
    ap.add_argument("--id", required=True, help="device id in the gateway config, e.g. mh-0001")
    ap.add_argument("--mac", required=True, help="the node's BLE MAC (mpremote exec: see README)")
    ap.add_argument("--address-code", required=True)
    ap.add_argument("--component-code")
    ap.add_argument("--key", help="use this key instead of a fresh random one (32 hex digits)")
    ap.add_argument("--heartbeat-s", type=int, help="default: the build's example config")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    try:
        cfg_path, key_path, entry = provision(
            a.id, a.mac, a.address_code, a.component_code, a.out, a.key, a.heartbeat_s, a.build
        )
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    print(f"# node config: {cfg_path}\n# gateway key: {key_path}\n{entry}")


if __name__ == "__main__":
    main()
