"""What a reload of the config file changes (the runtime's `reload`): the buses to restart, add or
remove, and the sections read only at start, which keep running as they are until a restart.

The config models hold the paths of key and password files, not what is in them: a new key written
into a BLE node's existing key file left the models equal, so the bus was not reopened and the node
stayed `wrong_key` until a restart, while the reload answered that the gateway took the change. So
the plan also compares a digest of the secret files each part reads only when it starts
(`secret_digests`): a bus's key files (its devices' `key_file`) and the platform's command keys.
The uplink's broker password and TLS files are left out: the uplink reads them again at every
connection; so is the status page's password file, which the web server reads again when it
changes (gateway/web/password.py).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from citynerve.gateway.config import GatewayConfig

__all__ = ["ReloadPlan", "plan_reload", "secret_digests"]

_FIELDS = {"upstream": ("upstream", "destinations")}
"""The GatewayConfig fields of a section whose name is not one field."""


@dataclass(frozen=True, slots=True)
class ReloadPlan:
    changed: list[str]  # buses whose settings or devices changed: restarted
    added: list[str]
    removed: list[str]
    restart_needed_for: list[str]  # sections that changed but are read only at start
    config: GatewayConfig  # the new config, with those sections as they run
    secrets: dict[str, str] = field(default_factory=dict)  # secret_digests in effect after the reload

    def report(self) -> dict[str, Any]:
        return {
            "changed": self.changed,
            "added": self.added,
            "removed": self.removed,
            "restart_needed_for": self.restart_needed_for,
        }


def plan_reload(
    old: GatewayConfig, new: GatewayConfig, secrets: Mapping[str, str] | None = None
) -> ReloadPlan:
    """Compare the running config `old` with the file's `new`. `secrets`: `secret_digests` of the
    files as the running parts read them (None: taken from `old` now, so no file counts as changed).
    Changed devices are no change to `rules`: the runtime binds the rule engine to them (reload.py)."""
    was = dict(secrets) if secrets is not None else secret_digests(old)
    now = secret_digests(new)
    old_buses = {b.id: (b, old.devices_on(b.id)) for b in old.buses if b.enabled}
    new_buses = {b.id: (b, new.devices_on(b.id)) for b in new.buses if b.enabled}
    changed = [
        b
        for b in new_buses
        if b in old_buses and (new_buses[b] != old_buses[b] or was.get(_bus(b)) != now[_bus(b)])
    ]
    added = [b for b in new_buses if b not in old_buses]
    removed = [b for b in old_buses if b not in new_buses]
    sections = {
        "store": (old.store, new.store),
        # Every [[upstream]] destination, not only the first (`upstream`): a second one removed,
        # renamed or re-pointed needs new uplinks too (`destinations` is empty in a config
        # built in code with `upstream` alone).
        "upstream": ((old.upstream, old.destinations), (new.upstream, new.destinations)),
        "rules": (old.rules, new.rules),
        "web": (old.web, new.web),
        "control": (old.control, new.control),
        "gateway": (old.gateway, new.gateway),
        "clock": (old.clock, new.clock),
        # Read only at start: the log setup, the security switches, the update handler.
        "log": (old.log, new.log),
        "security": (old.security, new.security),
        "update": (old.update, new.update),
    }
    needs_restart = [
        n for n, (before, after) in sections.items() if before != after or was.get(n) != now.get(n)
    ]
    kept = replace(new, **{f: getattr(old, f) for n in needs_restart for f in _FIELDS.get(n, (n,))})
    in_effect = {k: v for k, v in now.items() if k not in needs_restart}
    in_effect.update({k: was[k] for k in needs_restart if k in was})  # still read as at start
    return ReloadPlan(changed, added, removed, needs_restart, kept, in_effect)


def secret_digests(config: GatewayConfig) -> dict[str, str]:
    """A digest of the secret files each part of `config` reads when it starts, by part: `bus:<id>`
    (the bus and its devices: BLE key files), `upstream` (the platform's command keys). Never the
    files' contents: a SHA-256 over them."""
    out = {_bus(b.id): _digest([b, *config.devices_on(b.id)]) for b in config.buses if b.enabled}
    destinations = config.destinations or ((config.upstream,) if config.upstream is not None else ())
    out["upstream"] = _digest([d.commands for d in destinations])
    return out


def _bus(bus_id: str) -> str:
    return f"bus:{bus_id}"


def _digest(models: Iterable[BaseModel]) -> str:
    h = hashlib.sha256()
    for path in (p for m in models for p in _files(m)):
        h.update(str(path).encode() + b"\0" + _file_hash(path) + b"\0")
    return h.hexdigest()


def _files(model: BaseModel) -> Iterator[Path]:
    """The secret files `model` names (SecretFile fields, nested models and tuples of them included),
    and the command keys' public key files, which are read at start all the same."""
    from citynerve.gateway.config.secrets import secret_paths

    for _, path in secret_paths(model, ""):
        yield path
    for name in type(model).model_fields:
        value = getattr(model, name)
        if name == "ed25519_public_key_file" and isinstance(value, Path):
            yield value
        for item in value if isinstance(value, tuple) else ():
            if isinstance(item, BaseModel):
                yield from _files(item)


def _file_hash(path: Path) -> bytes:
    """SHA-256 of the file's first MAX_SECRET_FILE_BYTES + 1 bytes (a wrong path, a disk image, is
    not read whole), or the kind of error that kept it from being read: a file that becomes
    readable changes the digest too."""
    from citynerve.gateway.api import MAX_SECRET_FILE_BYTES

    try:
        with path.open("rb") as f:
            return hashlib.sha256(f.read(MAX_SECRET_FILE_BYTES + 1)).digest()
    except OSError as err:
        return f"unreadable: {type(err).__name__} {err.errno}".encode()
