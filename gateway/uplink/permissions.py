"""Permission classes of remote actions and the ring of command keys that may sign them.

Every platform command belongs to one class (`ACTION_CLASSES`, plus the class each operator or
diagnostic action declares). A gateway holds one or more command keys (`[[upstream.commands.keys]]`),
each with an id and the classes it grants; a command verified with a key whose classes do not
include the action's class is rejected `not_permitted`, and the answer names the key and the class.
During a key rotation's overlap the key's previous verifier grants only RETIRING_PERMISSIONS
(`retiring_key` for the rest).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from citynerve.gateway.uplink.signing import SIGNING_CONTEXT, CommandVerifier


class Permission(enum.StrEnum):
    """What a remote action can do, from harmless to drastic."""

    READ = "read"  # look: read a point, diagnostics, logs
    OPERATE = "operate"  # day-to-day operation: write a point, restart a bus, away, maintenance, ack
    CONFIGURE = "configure"  # change how the gateway runs: log level, config documents, keys
    UPDATE = "update"  # software updates (update_start; citynerve.gateway.release.remote)
    REBOOT = "reboot"  # restart the machine


ALL_PERMISSIONS = frozenset(Permission)
LEGACY_PERMISSIONS = frozenset({Permission.READ, Permission.OPERATE, Permission.CONFIGURE, Permission.UPDATE})
"""What the single key of an `[upstream.commands]` table without `classes` grants: everything but
reboot, which is always granted explicitly."""

ACTION_CLASSES: dict[str, Permission] = {
    "read_point": Permission.READ,
    "resend_inventory": Permission.READ,
    "write_point": Permission.OPERATE,
    "restart_bus": Permission.OPERATE,
}
"""The classes of the built-in actions (citynerve.gateway.uplink.commands.ACTIONS)."""

RETIRING_PERMISSIONS = frozenset({Permission.READ, Permission.OPERATE})
"""What a key's previous (retiring) verifier still grants during a rotation's overlap, within the
key's own classes: looking and day-to-day operation (acks verify too). Never configure, update or
reboot: whoever still holds the old key must not rotate the new one away or change the gateway."""

LEGACY_KEY_ID = "platform"


@dataclass(frozen=True, slots=True)
class CommandKey:
    """One key the platform signs with, and what it may do."""

    id: str
    verifier: CommandVerifier
    classes: frozenset[Permission]
    retiring: bool = False
    """True when a command verified with the key's previous verifier during a rotation's overlap
    (`KeyRing.identify`): it grants only RETIRING_PERMISSIONS of `classes`."""


class KeyRing:
    """The command keys of one gateway. Used where one `CommandVerifier` was used before: `verify`
    accepts what any key signed (end-to-end acks); `identify` says which key signed a command."""

    def __init__(self, keys: Iterable[CommandKey]) -> None:
        self.keys = tuple(keys)
        if not self.keys:
            raise ValueError("a key ring needs at least one key")
        ids = [k.id for k in self.keys]
        if len(set(ids)) != len(ids):
            raise ValueError("command key ids must be unique")
        # Key rotation (citynerve.gateway.uplink.keyrotation): a key id's previous verifier, accepted too
        # until its monotonic deadline (the overlap window).
        self._retiring: dict[str, tuple[CommandVerifier, float]] = {}

    def rotate(self, key_id: str, verifier: CommandVerifier, *, old_until_mono: float | None) -> None:
        """`key_id` verifies with `verifier` from now on, and with its current one until
        `old_until_mono` (time.monotonic(); None: the current one retires at once). Same classes."""
        keys = list(self.keys)
        for i, key in enumerate(keys):
            if key.id == key_id:
                if old_until_mono is not None:
                    self._retiring[key_id] = (key.verifier, old_until_mono)
                else:
                    self._retiring.pop(key_id, None)
                keys[i] = CommandKey(key.id, verifier, key.classes)
                self.keys = tuple(keys)
                return
        raise KeyError(key_id)

    def retire_at(self, key_id: str, until_mono: float) -> bool:
        """Move the end of `key_id`'s overlap (time.monotonic(); now or before: over). False when
        no overlap is in progress (one that ended is never reopened)."""
        old = self._retiring.get(key_id)
        if old is None:
            return False
        self._retiring[key_id] = (old[0], until_mono)
        return True

    def retiring(self) -> dict[str, float]:
        """Key ids whose previous verifier is still accepted, with the monotonic end of the overlap."""
        now = time.monotonic()
        return {k: until for k, (_, until) in self._retiring.items() if until > now}

    @property
    def algorithm(self) -> str:
        return "/".join(sorted({k.verifier.algorithm.value for k in self.keys}))

    def identify(self, message: Mapping[str, Any], *, context: bytes = SIGNING_CONTEXT) -> CommandKey | None:
        """The key whose signature `message` carries (only the key named by `key_id` when it names
        one), or None. Verified by a retiring verifier: that verifier, with `retiring` set."""
        named = message.get("key_id")
        for key in self.keys:
            if named is not None and key.id != named:
                continue
            if key.verifier.verify(message, context=context):
                return key
            old = self._retiring.get(key.id)
            if old is not None:
                if time.monotonic() >= old[1]:
                    del self._retiring[key.id]  # the overlap is over: the old key is retired
                elif old[0].verify(message, context=context):
                    return CommandKey(key.id, old[0], key.classes, retiring=True)
        return None

    def verify(self, message: Mapping[str, Any], *, context: bytes = SIGNING_CONTEXT) -> bool:
        return self.identify(message, context=context) is not None

    def __repr__(self) -> str:  # never show key material
        return f"KeyRing({', '.join(k.id for k in self.keys)})"
