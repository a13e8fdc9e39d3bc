"""Permission classes of remote actions and the ring of command keys that may sign them.

Every platform command belongs to one class (`ACTION_CLASSES`, plus the class each operator or
diagnostic action declares). A gateway holds one or more command keys (`[[upstream.commands.keys]]`),
each with an id and the classes it grants; a command verified with a key whose classes do not
include the action's class is rejected `not_permitted`, and the answer names the key and the class.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from citynerve.gateway.uplink.signing import SIGNING_CONTEXT, CommandVerifier


class Permission(enum.StrEnum):
    """What a remote action can do, from harmless to drastic."""

    READ = "read"  # look: read a point, diagnostics, logs
    OPERATE = "operate"  # day-to-day operation: write a point, restart a bus, away, maintenance, ack
    CONFIGURE = "configure"  # change how the gateway runs: log level, (later) config documents
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

LEGACY_KEY_ID = "platform"


@dataclass(frozen=True, slots=True)
class CommandKey:
    """One key the platform signs with, and what it may do."""

    id: str
    verifier: CommandVerifier
    classes: frozenset[Permission]


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

    @property
    def algorithm(self) -> str:
        return "/".join(sorted({k.verifier.algorithm.value for k in self.keys}))

    def identify(self, message: Mapping[str, Any], *, context: bytes = SIGNING_CONTEXT) -> CommandKey | None:
        """The key whose signature `message` carries (only the key named by `key_id` when it names
        one), or None."""
        named = message.get("key_id")
        for key in self.keys:
            if named is not None and key.id != named:
                continue
            if key.verifier.verify(message, context=context):
                return key
        return None

    def verify(self, message: Mapping[str, Any], *, context: bytes = SIGNING_CONTEXT) -> bool:
        return self.identify(message, context=context) is not None

    def __repr__(self) -> str:  # never show key material
        return f"KeyRing({', '.join(k.id for k in self.keys)})"
