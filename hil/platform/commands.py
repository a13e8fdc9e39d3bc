"""Platform side of commands: build, sign (HMAC-SHA256 or Ed25519) and send a command, await the
result; and the signature of end-to-end acks (same key, `ACK_SIGNING_CONTEXT`)."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from citynerve.gateway.uplink.commands import build_command
from citynerve.gateway.uplink.signing import (
    ACK_SIGNING_CONTEXT,
    SIGNING_CONTEXT,
    canonical_bytes,
    sign_ed25519,
    sign_hmac,
)

__all__ = ["CommandSigner", "canonical_bytes"]


class CommandSigner:
    """Signs commands for one gateway with the key provisioned at install."""

    def __init__(
        self, *, hmac_key: bytes | None = None, ed25519_key: Ed25519PrivateKey | None = None
    ) -> None:
        if (hmac_key is None) == (ed25519_key is None):
            raise ValueError("give exactly one of hmac_key or ed25519_key")
        self._hmac = hmac_key
        self._ed = ed25519_key

    @classmethod
    def from_hmac_file(cls, path: Path) -> CommandSigner:
        from citynerve.gateway.uplink.signing import read_hmac_key

        return cls(hmac_key=read_hmac_key(path))

    def sign(self, command: Mapping[str, Any], *, context: bytes = SIGNING_CONTEXT) -> dict[str, Any]:
        if self._hmac is not None:
            return sign_hmac(command, self._hmac, context=context)
        assert self._ed is not None
        return sign_ed25519(command, self._ed, context=context)

    def sign_ack(self, ack: Mapping[str, Any]) -> dict[str, Any]:
        """An end-to-end ack signed with the same key (another signing context)."""
        return self.sign(ack, context=ACK_SIGNING_CONTEXT)

    def command(
        self,
        gateway_id: str,
        action: str,
        args: Mapping[str, Any] | None = None,
        *,
        lifetime_s: float = 60.0,
        now: float | None = None,
        command_id: str | None = None,
        nonce: str | None = None,
        key_id: str | None = None,
    ) -> dict[str, Any]:
        """A fresh, signed command (new id and nonce); `key_id` names the signing key (signed too)."""
        body = build_command(
            gateway_id=gateway_id,
            action=action,
            args=args,
            command_id=command_id or uuid.uuid4().hex[:16],
            nonce=nonce or secrets.token_urlsafe(18),
            issued_at=time.time() if now is None else now,
            lifetime_s=lifetime_s,
        )
        if key_id is not None:
            body["key_id"] = key_id
        return self.sign(body)

    @staticmethod
    def payload(command: Mapping[str, Any]) -> bytes:
        return json.dumps(command, separators=(",", ":")).encode()
