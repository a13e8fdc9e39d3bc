"""Canonical form and signatures of platform commands (HMAC-SHA256 or Ed25519).

The signed bytes are `SIGNING_CONTEXT + canonical_json(command without "sig")`, where canonical JSON
is RFC 8785 (JSON Canonicalization Scheme: UTF-8, keys sorted by UTF-16 code units, numbers as
ECMAScript writes them, so a JavaScript signer gets the same bytes with `JSON.stringify` rules).
The gateway canonicalizes the message it parsed, so the sender's spelling of a number (`1.0`, `1e5`)
does not matter. The platform side (hil/platform) signs with the same functions;
docs/upstream-contract.md states it with test vectors.
"""

from __future__ import annotations

import base64
import enum
import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import rfc8785

from citynerve.gateway.api import read_secret_file, read_secret_text

if TYPE_CHECKING:  # imported where used: HMAC needs only the stdlib, and cryptography costs ~6 MB RSS
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

SIGNING_CONTEXT = b"citynerve-command-v1\n"
"""Prefix of the signed bytes, so a signature over another kind of message never verifies here."""
ACK_SIGNING_CONTEXT = b"citynerve-ack-v1\n"
"""Prefix of a signed end-to-end ack: same key and canonical form as commands, another context, so
an ack signature is never a valid command and a command signature is never a valid ack."""


class SignatureAlgorithm(enum.StrEnum):
    HMAC_SHA256 = "hmac-sha256"
    ED25519 = "ed25519"


def canonical_bytes(command: Mapping[str, Any], context: bytes = SIGNING_CONTEXT) -> bytes:
    """The exact bytes that are signed: everything but `sig`, RFC 8785 canonical JSON, with the
    context prefix. Raises ValueError for what RFC 8785 cannot carry (NaN, integers beyond
    +-(2**53 - 1), lone surrogates): such a message cannot be signed, and never verifies."""
    body = {k: v for k, v in command.items() if k != "sig"}
    try:
        return context + rfc8785.dumps(body)
    except rfc8785.CanonicalizationError as err:
        raise ValueError(f"not canonicalizable (RFC 8785): {err}") from err


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def sign_hmac(command: Mapping[str, Any], key: bytes, *, context: bytes = SIGNING_CONTEXT) -> dict[str, Any]:
    """Return a copy of `command` with `alg` = hmac-sha256 and `sig` (base64) set."""
    out = dict(command)
    out["alg"] = SignatureAlgorithm.HMAC_SHA256.value
    out["sig"] = _b64(hmac.new(key, canonical_bytes(out, context), hashlib.sha256).digest())
    return out


def sign_ed25519(
    command: Mapping[str, Any], private_key: Ed25519PrivateKey, *, context: bytes = SIGNING_CONTEXT
) -> dict[str, Any]:
    """Return a copy of `command` with `alg` = ed25519 and `sig` (base64) set."""
    out = dict(command)
    out["alg"] = SignatureAlgorithm.ED25519.value
    out["sig"] = _b64(private_key.sign(canonical_bytes(out, context)))
    return out


class CommandVerifier:
    """Checks a command's signature with the key provisioned at install (one key, one algorithm)."""

    def __init__(self, algorithm: SignatureAlgorithm, key: bytes | Ed25519PublicKey) -> None:
        self.algorithm = algorithm
        self._key = key

    @classmethod
    def hmac(cls, key: bytes) -> CommandVerifier:
        if len(key) < 16:
            raise ValueError("HMAC key shorter than 16 bytes")
        return cls(SignatureAlgorithm.HMAC_SHA256, key)

    @classmethod
    def ed25519(cls, public_key: Ed25519PublicKey) -> CommandVerifier:
        return cls(SignatureAlgorithm.ED25519, public_key)

    @classmethod
    def from_files(
        cls, *, hmac_key_file: Path | None, ed25519_public_key_file: Path | None
    ) -> CommandVerifier:
        """Load the key: HMAC key file holds the raw secret (hex or text); Ed25519 is PEM or raw 32 bytes.

        Raises OSError / ValueError; the caller wraps them into a ConfigError with the key path.
        """
        if hmac_key_file is not None:
            return cls.hmac(read_hmac_key(hmac_key_file))
        if ed25519_public_key_file is not None:
            from cryptography.hazmat.primitives import serialization
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

            data = read_secret_file(ed25519_public_key_file)
            if len(data) == 32:
                return cls.ed25519(Ed25519PublicKey.from_public_bytes(data))
            key = serialization.load_pem_public_key(data)
            if not isinstance(key, Ed25519PublicKey):
                raise ValueError("not an Ed25519 public key")
            return cls.ed25519(key)
        raise ValueError("no command key given")

    def verify(self, command: Mapping[str, Any], *, context: bytes = SIGNING_CONTEXT) -> bool:
        """True when `sig` is a valid signature of the message's canonical bytes under our key
        (`context`: SIGNING_CONTEXT for commands, ACK_SIGNING_CONTEXT for end-to-end acks)."""
        if command.get("alg") != self.algorithm.value:
            return False
        sig_text = command.get("sig")
        if not isinstance(sig_text, str):
            return False
        try:
            sig = base64.b64decode(sig_text, validate=True)
            data = canonical_bytes(command, context)
        except (ValueError, TypeError):
            return False
        if self.algorithm is SignatureAlgorithm.HMAC_SHA256:
            assert isinstance(self._key, bytes)
            expected = hmac.new(self._key, data, hashlib.sha256).digest()
            return hmac.compare_digest(expected, sig)
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

        assert isinstance(self._key, Ed25519PublicKey)
        try:
            self._key.verify(sig, data)
        except InvalidSignature:
            return False
        return True

    def __repr__(self) -> str:  # never show key material
        return f"CommandVerifier({self.algorithm.value})"


def read_hmac_key(path: Path) -> bytes:
    """An HMAC key file: hex (64+ hex digits) is decoded, anything else is used as UTF-8 text, stripped."""
    text = read_secret_text(path)
    try:
        if len(text) >= 32 and len(text) % 2 == 0:
            return bytes.fromhex(text)
    except ValueError:
        pass
    return text.encode("utf-8")
