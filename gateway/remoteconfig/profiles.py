"""Device profiles carried by a remote config document (docs/fleet.md, "Profiles").

The platform's profiles live in a folder the gateway manages, `<config>.profiles/` beside the
config file (`citynerve.gateway.config.loader.managed_profile_dir`), one `<id>.toml` per profile,
searched before every other profile folder. A document carries them under `profiles`:

- a patch (JSON): `"profiles": {"<id>": {profile table} | "<TOML text>" | null}`: each profile
  named is replaced whole, `null` deletes it, the others stay;
- a whole config (TOML): `[profiles.<id>]` tables: the complete set of managed profiles (a whole
  config without `profiles` leaves them as they are).

They are validated exactly as profile files are (they are written as files and loaded by the same
loader), snapshotted with the config and rolled back with it. The config's version hash covers
them: with managed profiles it is the SHA-256 of the config text and every profile
(`state_digest`); without, the SHA-256 of the config text alone, as before.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import tomli_w

from citynerve.gateway.api import decode_text, is_id
from citynerve.gateway.remoteconfig.document import (
    MAX_DOCUMENT_BYTES,
    DocumentError,
    candidate_text,
    load_patch,
    load_toml,
)
from citynerve.gateway.remoteconfig.history import read_profiles, state_digest, write_profiles

MAX_PROFILES = 64  # managed profiles on one gateway
MAX_PROFILE_BYTES = 64 * 1024  # one profile as TOML (the largest shipped one is ~6 KB)
PROFILES_KEY = "profiles"

__all__ = ["candidate", "read_profiles", "state_digest", "write_profiles"]


def _profile_text(pid: object, value: Any) -> str:
    if not is_id(pid):
        raise DocumentError(
            f"profiles: {str(pid)[:64]!r} is not a profile id (letters, digits, `_ . : -`, at most 64)"
        )
    if isinstance(value, str):
        load_toml(value, f"profiles.{pid}")
        text = value
    elif isinstance(value, dict):
        try:
            text = tomli_w.dumps(value)
        except (TypeError, ValueError) as err:
            raise DocumentError(f"profiles.{pid}: cannot be written as TOML: {err}") from err
    else:
        raise DocumentError(f"profiles.{pid}: expected a table (or TOML text), or null to delete it")
    if len(text.encode("utf-8")) > MAX_PROFILE_BYTES:
        raise DocumentError(f"profiles.{pid}: a profile holds at most {MAX_PROFILE_BYTES} bytes")
    return text


def _bounded(profiles: dict[str, str]) -> dict[str, str]:
    if len(profiles) > MAX_PROFILES:
        raise DocumentError(f"profiles: at most {MAX_PROFILES} managed profiles ({len(profiles)} asked)")
    return profiles


def candidate(
    current: str, current_profiles: Mapping[str, str], document: bytes, mode: str
) -> tuple[str, dict[str, str]]:
    """The config text and the managed profiles the document asks for (see the module doc)."""
    if len(document) > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"a document holds at most {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = decode_text(document)
    except UnicodeDecodeError as err:
        raise DocumentError(f"the document: {err}") from err
    if mode == "patch":
        patch = load_patch(text)
        if not isinstance(patch, dict) or PROFILES_KEY not in patch:
            return candidate_text(current, document, mode), dict(current_profiles)
        changes = patch.pop(PROFILES_KEY)
        if not isinstance(changes, dict) or not changes:
            raise DocumentError("profiles must be a non-empty object of profile id -> table or null")
        profiles = dict(current_profiles)
        for pid, value in changes.items():
            if value is None:
                profiles.pop(pid, None)
            else:
                profiles[pid] = _profile_text(pid, value)
        config = candidate_text(current, json.dumps(patch).encode(), mode) if patch else current
        return config, _bounded(profiles)
    config = candidate_text(current, document, mode)
    if mode != "replace":
        return config, dict(current_profiles)
    raw = load_toml(config, "the document")
    if PROFILES_KEY not in raw:
        return config, dict(current_profiles)
    tables = raw.pop(PROFILES_KEY)
    if not isinstance(tables, dict):
        raise DocumentError("profiles must be tables: [profiles.<id>]")
    profiles = {str(pid): _profile_text(pid, value) for pid, value in tables.items()}
    return tomli_w.dumps(raw), _bounded(profiles)
