"""A remote config change may not take away the key that sent it (docs/fleet.md, "Remote
configuration"): the health check sees the destination connected and confirms, but afterwards the
platform cannot send any change back, and the box needs a site visit. So the change is refused
before anything is written when the candidate config would leave the calling key missing on the
destination the command came through, without `configure` there, or verifying with other key
material, or that destination gone, disabled or not taking commands. A key is rotated on purpose
in two steps: add the new key, then remove the old one with a command signed by the new one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from citynerve.gateway.api import read_secret_file
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.uplink.commands import Caller
from citynerve.gateway.uplink.config import CommandsConfig, UpstreamConfig
from citynerve.gateway.uplink.permissions import LEGACY_KEY_ID
from citynerve.gateway.uplink.signing import read_hmac_key

_Key = tuple[str, Path, Sequence[str]]  # kind (hmac, ed25519), key file, classes


def lockout(running: GatewayConfig, candidate: GatewayConfig, caller: Caller) -> str | None:
    """Why `candidate` would leave `caller`'s key unable to send a change back through the
    destination it came through, or None. Reads key files (run it off the event loop)."""
    via = caller.destination
    if via is None:  # not through an uplink: no platform to lock out
        return None
    who = f"key {caller.key_id!r}"
    hint = "To retire it, move the platform to a new destination first, through this one"
    dest = _destination(candidate, via)
    what: str | None
    if dest is None:
        what = f"removes (or renames) destination {via!r}"
    elif not dest.enabled:
        what = f"disables destination {via!r}"
    elif dest.encoding != "json-v1":
        what = f"makes destination {via!r} {dest.encoding} (it takes no commands)"
    elif not dest.commands.enabled:
        what = f"turns commands off on destination {via!r}"
    else:
        hint = (
            "To rotate a key, add the new key first, then remove the old one with a change signed "
            "with the new one"
        )
        if (key := _key(dest.commands, caller.key_id)) is None:
            what = f"removes {who}"
        elif "configure" not in key[2]:
            what = f"takes the configure class from {who} (it would grant {', '.join(key[2])})"
        else:
            before = _destination(running, via)
            old = None if before is None else _key(before.commands, caller.key_id)
            what = None if old is None else _changed(old, key, who)
    if what is None:
        return None
    why = f"the change {what}: {who} sent it through destination {via!r} and could send no change back. "
    return why + hint


def _destination(cfg: GatewayConfig, dest_id: str) -> UpstreamConfig | None:
    dests = cfg.destinations or ((cfg.upstream,) if cfg.upstream is not None else ())
    return next((d for d in dests if d.id == dest_id), None)


def _key(commands: CommandsConfig, key_id: str) -> _Key | None:
    """The kind, file and classes of `key_id` (LEGACY_KEY_ID: the table's own key), or None."""
    own = (commands.hmac_key_file, commands.ed25519_public_key_file, commands.classes)
    k = next((k for k in commands.keys if k.id == key_id), None)
    if k is not None:
        hmac, ed, classes = k.hmac_key_file, k.ed25519_public_key_file, k.classes
    elif key_id == LEGACY_KEY_ID:
        hmac, ed, classes = own
    else:
        return None
    if hmac is not None:
        return ("hmac", hmac, classes)
    return None if ed is None else ("ed25519", ed, classes)


def _changed(old: _Key, new: _Key, who: str) -> str | None:
    """What the change does to the key material (the resolved bytes: the same key may move to
    another file), or None when it verifies the same."""
    if old[0] != new[0]:
        return f"changes {who} from an {old[0]} key to an {new[0]} key"
    if Path(old[1]) == Path(new[1]):
        return None  # a config change writes no key file
    try:
        same = _material(old) == _material(new)
    except (OSError, ValueError) as err:
        return f"points {who} at a key file that cannot be read ({type(err).__name__})"
    return None if same else f"points {who} at a file with another key"


def _material(key: _Key) -> bytes:
    return read_hmac_key(key[1]) if key[0] == "hmac" else read_secret_file(key[1])
