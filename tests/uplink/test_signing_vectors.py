"""The signing test vectors of docs/upstream-contract.md (schemas/v1/signing-vectors.json): RFC 8785
canonical forms, and HMAC signatures that the gateway verifies whatever JSON text carried the object
(a JavaScript signer's `JSON.stringify` spelling, other key orders, non-ASCII keys)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.uplink.schemas import schema_path
from citynerve.gateway.uplink.signing import (
    ACK_SIGNING_CONTEXT,
    SIGNING_CONTEXT,
    CommandVerifier,
    canonical_bytes,
)
from citynerve.hil.platform import CommandSigner

DOC = Path(__file__).parents[2] / "docs" / "upstream-contract.md"
VECTORS: dict[str, Any] = json.loads(schema_path("signing-vectors").read_text(encoding="utf-8"))
KEY = bytes.fromhex(VECTORS["hmac_key_hex"])
CONTEXTS = {"command": SIGNING_CONTEXT, "ack": ACK_SIGNING_CONTEXT}


@pytest.mark.parametrize("vector", VECTORS["canonical"], ids=lambda v: v["json"][:24])
def test_canonical_vectors(vector: dict[str, str]) -> None:
    obj = json.loads(vector["json"])
    assert canonical_bytes(obj, b"") == vector["canonical"].encode()
    assert f"| `{vector['json']}` | `{vector['canonical']}` |" in DOC.read_text(encoding="utf-8")


@pytest.mark.parametrize("vector", VECTORS["signatures"], ids=lambda v: v["kind"])
def test_signature_vectors_verify_and_the_reference_signer_makes_them(vector: dict[str, str]) -> None:
    ctx = CONTEXTS[vector["kind"]]
    obj = json.loads(vector["json"])
    assert canonical_bytes(obj, ctx) == vector["signed_bytes"].encode()
    signed = CommandSigner(hmac_key=KEY).sign(obj, context=ctx)
    assert signed["sig"] == vector["sig"]
    assert CommandVerifier.hmac(KEY).verify({**obj, "sig": vector["sig"]}, context=ctx)
    assert vector["sig"] in DOC.read_text(encoding="utf-8")


def _js_stringify_like(obj: Any) -> str:
    """What a JavaScript signer sends: insertion key order, `1` for 1.0, non-ASCII as itself."""
    text = json.dumps(obj, ensure_ascii=False, separators=(",", ":"))
    return re.sub(r"(?<=[:\[,])(-?\d+)\.0(?=[,}\]])", r"\1", text)


@pytest.mark.parametrize(
    "value", [0.00001, 1e5, 1.0, 1e21, 123.456, "é😀ﬀ", {"ﬀ": 1, "😀": 2, "z": 3}], ids=repr
)
def test_any_spelling_of_the_same_object_verifies(value: Any) -> None:
    """The issue's failures: 0.00001, 1e5, 1.0 and key order outside ASCII."""
    signer = CommandSigner(hmac_key=KEY)
    body = {
        "schema": "citynerve.command/1",
        "id": "c-1",
        "gateway_id": "gw-1",
        "action": "write_point",
        "args": {"device_id": "ahu-1", "point": "setpoint", "value": value},
        "nonce": "abcdefghijklmnop",
    }
    signed = signer.sign(body)
    verifier = CommandVerifier.hmac(KEY)
    for text in (
        json.dumps(signed),  # Python's spelling: 1e-05, 100000.0, ASCII escapes
        _js_stringify_like(signed),
        json.dumps(dict(reversed(list(signed.items()))), ensure_ascii=False),
    ):
        assert verifier.verify(json.loads(text)), text
    tampered = {**signed, "args": {**signed["args"], "point": "other"}}
    assert not verifier.verify(tampered)


def test_what_rfc_8785_cannot_carry_never_verifies() -> None:
    signer = CommandSigner(hmac_key=KEY)
    with pytest.raises(ValueError, match="RFC 8785"):
        signer.sign({"value": 2**60})
    assert not CommandVerifier.hmac(KEY).verify({"value": 2**60, "alg": "hmac-sha256", "sig": "AAAA"})
