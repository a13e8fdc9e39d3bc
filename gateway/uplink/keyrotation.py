"""Rotation of the platform's command-verification keys (which also verify end-to-end acks).

`rotate_command_key`, signed with the key it replaces, announces the new key (an HMAC secret or an
Ed25519 public key). From then on both verify for `overlap_s` (default a day, at most 30 days), so
commands already signed and in flight still pass; then the old key retires. The new key is kept
0600 in the gateway's credentials folder and the rotation in the store's key/value state: a restart
keeps the new key and what is left of the overlap (measured on the monotonic clock while running,
from the stored wall-clock end at start, at most MAX_OVERLAP_S: a box without an RTC may start with
its wall clock in 1970). When the runtime learns that the wall clock is synchronised, `rearm()` takes
the overlaps' ends again from the stored wall-clock ends (an overlap whose end passed is over then).
A rotation is forgotten when the configured key file itself changed since (a key provisioned again
on site wins).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from citynerve.gateway.api import Event, read_secret_file
from citynerve.gateway.uplink.commands import Caller, KeyValueState
from citynerve.gateway.uplink.config import CommandsConfig
from citynerve.gateway.uplink.encoding import RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.gateway.uplink.permissions import LEGACY_KEY_ID, KeyRing
from citynerve.gateway.uplink.signing import CommandVerifier, SignatureAlgorithm
from citynerve.gateway.uplink.tlsrotate import credentials_event, decode_state, write_private

log = logging.getLogger(__name__)

STATE_KEY = "uplink.command_key_rotations"
DEFAULT_OVERLAP_S = 86400.0
MAX_OVERLAP_S = 30 * 86400.0
MIN_OVERLAP_S = 0.0


def configured_key_file(cfg: CommandsConfig, key_id: str) -> Path | None:
    if key_id == LEGACY_KEY_ID:
        return cfg.hmac_key_file or cfg.ed25519_public_key_file
    for k in cfg.keys:
        if k.id == key_id:
            return k.hmac_key_file or k.ed25519_public_key_file
    return None


def _file_hash(path: Path | None) -> str | None:
    try:
        return hashlib.sha256(read_secret_file(path)).hexdigest() if path is not None else None
    except (OSError, ValueError):
        return None


def _verifier(alg: str, material: bytes) -> CommandVerifier:
    if alg == SignatureAlgorithm.HMAC_SHA256.value:
        return CommandVerifier.hmac(material)
    if alg == SignatureAlgorithm.ED25519.value:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        if len(material) != 32:
            raise ValueError("an Ed25519 public key is 32 bytes")
        return CommandVerifier.ed25519(Ed25519PublicKey.from_public_bytes(material))
    raise ValueError("alg must be hmac-sha256 or ed25519")


class CommandKeyRotation:
    """Applies and records rotations of the keys of one KeyRing."""

    def __init__(
        self,
        *,
        state: KeyValueState,
        directory: Path,
        gateway_id: str,
        config: Callable[[], CommandsConfig | None],
        events: Callable[[Event], None],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._state = state
        self.directory = directory
        self._gateway_id = gateway_id
        self._config = config
        self._events = events
        self._wall = wall
        self._records: dict[str, dict[str, Any]] = {}
        self.ring: KeyRing | None = None

    async def load(self) -> None:
        data = decode_state(await self._state.get(STATE_KEY))
        self._records = dict(data) if isinstance(data, dict) else {}

    def attach(self, ring: KeyRing | None) -> None:
        """Apply the recorded rotations to `ring` (the uplink's, made from the config)."""
        self.ring = ring
        cfg = self._config()
        if ring is None or cfg is None:
            return
        for key_id, rec in list(self._records.items()):
            try:
                if _file_hash(configured_key_file(cfg, key_id)) != rec.get("configured_sha256"):
                    log.warning("command key %s provisioned again since rotated: rotation dropped", key_id)
                    continue
                material = bytes.fromhex(read_secret_file(Path(str(rec["file"]))).decode("ascii").strip())
                verifier = _verifier(str(rec["alg"]), material)
                left = self._left(rec)
                ring.rotate(key_id, verifier, old_until_mono=time.monotonic() + left if left > 0 else None)
                overlap = f", the old one for {left:.0f} s more" if left > 0 else ""
                log.info("command key %s: rotated key in force%s", key_id, overlap)
            except (KeyError, OSError, ValueError) as err:
                log.error("command key %s: rotation not applied (%s); configured key stays", key_id, err)

    def _left(self, rec: dict[str, Any]) -> float:
        """What is left of a rotation's overlap by the wall clock, at most MAX_OVERLAP_S."""
        return min(MAX_OVERLAP_S, float(rec.get("old_until", 0)) - self._wall())

    def rearm(self) -> None:
        """The wall clock is synchronised now: each old key retires at its stored wall-clock end
        (at once when that passed). An overlap already over stays over."""
        if self.ring is None:
            return
        for key_id, rec in self._records.items():
            try:
                left = self._left(rec)
            except (TypeError, ValueError):
                continue
            if self.ring.retire_at(key_id, time.monotonic() + max(0.0, left)):
                log.info("command key %s: old key retires in %.0f s (clock synchronised)", key_id, left)

    def status(self) -> dict[str, Any]:
        return {
            k: {
                "alg": r.get("alg"),
                "since": r.get("since"),
                "old_until": r.get("old_until"),
                "overlap_left_s": max(0.0, round(self._left(r), 1)),
            }
            for k, r in self._records.items()
        }

    async def rotate(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        if self.ring is None:
            raise CommandRejectedError(RejectReason.INTERNAL, "no command keys")
        alg, overlap = args.get("alg"), args.get("overlap_s", DEFAULT_OVERLAP_S)
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or not math.isfinite(overlap):
            raise CommandRejectedError(RejectReason.BAD_VALUE, "overlap_s must be a number")
        if not MIN_OVERLAP_S <= overlap <= MAX_OVERLAP_S:
            raise CommandRejectedError(RejectReason.BAD_VALUE, f"overlap_s must be in 0..{MAX_OVERLAP_S:g}")
        text = args.get("key")
        if not isinstance(text, str) or len(text) > 512:
            raise CommandRejectedError(RejectReason.BAD_VALUE, "key (base64) is required")
        try:
            material = base64.b64decode(text, validate=True)
            verifier = _verifier(str(alg), material)
        except (binascii.Error, ValueError) as err:
            raise CommandRejectedError(RejectReason.BAD_VALUE, f"new key: {err}") from err
        if verifier.algorithm.value != alg:
            raise CommandRejectedError(RejectReason.BAD_VALUE, "alg does not match the key")
        key_id = caller.key_id
        # The command destination's keys: a command through another destination is refused before
        # it gets here (gateway/uplinks.py, COMMAND_DESTINATION_ONLY).
        current = next((k for k in self.ring.keys if k.id == key_id), None)
        if current is None:
            raise CommandRejectedError(RejectReason.NOT_PERMITTED, f"{key_id!r} is no command key here")
        if current.verifier.algorithm is not verifier.algorithm:
            raise CommandRejectedError(
                RejectReason.BAD_VALUE,
                f"key {key_id!r} is {current.verifier.algorithm.value}; keep the algorithm",
            )
        cfg = self._config()
        now = self._wall()
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.directory / f"command-{key_id}.key"
        write_private(path, material.hex().encode("ascii"))
        record = {
            "alg": alg,
            "file": str(path),
            "since": now,
            "old_until": now + float(overlap),
            "configured_sha256": _file_hash(configured_key_file(cfg, key_id)) if cfg else None,
            "by": key_id,
        }
        self._records[key_id] = record
        await self._state.put(STATE_KEY, json.dumps(self._records))  # durable before the ring changes
        self.ring.rotate(
            key_id, verifier, old_until_mono=time.monotonic() + float(overlap) if overlap > 0 else None
        )
        fingerprint = hashlib.sha256(material).hexdigest()[:16]
        self._events(
            credentials_event(
                self._gateway_id,
                "command_key_rotation",
                f"platform key {key_id}",
                f"command key {key_id} rotated (new key {fingerprint}); old one retires in {overlap:g} s",
                key_id=key_id,
                old_until=record["old_until"],
            )
        )
        log.warning("command key %s rotated; old one accepted for %g s more", key_id, overlap)
        return {"key_id": key_id, "alg": alg, "old_until": record["old_until"], "overlap_s": float(overlap)}
