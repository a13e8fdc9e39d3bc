"""Load the platform's command keys from `[upstream.commands]` into a `KeyRing`."""

from __future__ import annotations

from pathlib import Path

from citynerve.gateway.api import ConfigError, ConfigIssue
from citynerve.gateway.uplink.config import CommandsConfig
from citynerve.gateway.uplink.permissions import LEGACY_KEY_ID, CommandKey, KeyRing, Permission
from citynerve.gateway.uplink.signing import CommandVerifier


def _load(hmac_file: Path | None, ed_file: Path | None, where: str, subject: str = "") -> CommandVerifier:
    try:
        return CommandVerifier.from_files(hmac_key_file=hmac_file, ed25519_public_key_file=ed_file)
    except (OSError, ValueError) as err:
        key = "hmac_key_file" if hmac_file else "ed25519_public_key_file"
        raise ConfigError(
            [
                ConfigIssue(
                    str(hmac_file or ed_file),
                    f"{where}.{key}",
                    f"cannot load the command key: {err}",
                    subject,
                )
            ]
        ) from err


def load_key_ring(cfg: CommandsConfig) -> KeyRing:
    """Every configured key with its classes. Raises ConfigError naming the key path of a bad file."""
    keys: list[CommandKey] = []
    if cfg.hmac_key_file is not None or cfg.ed25519_public_key_file is not None:
        verifier = _load(cfg.hmac_key_file, cfg.ed25519_public_key_file, "upstream.commands")
        keys.append(CommandKey(LEGACY_KEY_ID, verifier, frozenset(Permission(c) for c in cfg.classes)))
    for i, k in enumerate(cfg.keys):
        verifier = _load(k.hmac_key_file, k.ed25519_public_key_file, f"upstream.commands.keys[{i}]", k.id)
        keys.append(CommandKey(k.id, verifier, frozenset(Permission(c) for c in k.classes)))
    return KeyRing(keys)
