"""Platform side of software updates: push a signed release bundle to one gateway, in chunks over
MQTT or as a URL the gateway downloads, and follow it to the gateway's verdict (docs/fleet.md,
"Software update").

    async with FleetClient(host, port, signer, key_id="releases") as fleet:
        outcome = await update_gateway(fleet, "gw-1", Path("citynerve-1.4.0-aarch64.tar.gz"))

`update_gateway` is what a staged rollout calls for each gateway of a wave: it never raises for a
gateway that refuses, fails or goes silent; the outcome says so (`ok`, `phase`, `reason`).
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citynerve.hil.platform.fleet import FleetClient

CHUNK_BYTES = 64 * 1024
WINDOW = 64  # chunks sent before asking the gateway what it still misses
FINAL = ("confirmed", "rolled-back", "failed")


@dataclass
class UpdateOutcome:
    """How one gateway's update ended."""

    gateway_id: str
    update_id: str
    ok: bool = False
    phase: str = "not-started"
    reason: str = ""
    release: dict[str, Any] = field(default_factory=dict)  # versions from the gateway's last answer
    rejected: str = ""  # the reject reason when the gateway refused the update (no_space, not_permitted)
    chunks_sent: int = 0
    commands_sent: int = 0
    elapsed_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class Bundle:
    """A bundle as the platform announces it: size, SHA-256, and its chunk table (or its URL)."""

    size: int
    sha256: str
    data: bytes = b""
    url: str = ""
    chunk_bytes: int = CHUNK_BYTES

    @classmethod
    def from_file(cls, path: Path, *, chunk_bytes: int = CHUNK_BYTES, url: str = "") -> Bundle:
        data = path.read_bytes()
        return cls(len(data), hashlib.sha256(data).hexdigest(), b"" if url else data, url, chunk_bytes)

    @property
    def count(self) -> int:
        return -(-self.size // self.chunk_bytes)

    def chunk(self, i: int) -> bytes:
        return self.data[i * self.chunk_bytes : (i + 1) * self.chunk_bytes]

    def table(self) -> bytes:
        return b"".join(hashlib.sha256(self.chunk(i)).digest() for i in range(self.count))

    def start_args(self, update_id: str) -> dict[str, Any]:
        args: dict[str, Any] = {"update_id": update_id, "size": self.size, "sha256": self.sha256}
        if self.url:
            args["url"] = self.url
        else:
            args["chunk_bytes"] = self.chunk_bytes
            args["chunks_sha256"] = hashlib.sha256(self.table()).hexdigest()
        return args


async def update_gateway(
    client: FleetClient,
    gateway_id: str,
    bundle: Path | Bundle,
    *,
    update_id: str | None = None,
    timeout_s: float = 900.0,
    window: int = WINDOW,
    on_progress: Callable[[dict[str, Any]], None] | None = None,
) -> UpdateOutcome:
    """Update one gateway and wait for its verdict; resumes by itself when the gateway (or the link)
    goes away in the middle. `on_progress` gets every answer of the gateway (phase, bytes)."""
    b = bundle if isinstance(bundle, Bundle) else Bundle.from_file(bundle)
    out = UpdateOutcome(gateway_id, update_id or f"upd-{uuid.uuid4().hex[:12]}")
    start = time.monotonic()
    deadline = start + timeout_s
    table = b"" if b.url else b.table()
    args = b.start_args(out.update_id)
    action = "update_start"
    while time.monotonic() < deadline:
        try:
            out.commands_sent += 1
            answer = await client.send(gateway_id, action, args if action == "update_start" else {})
        except TimeoutError:  # the gateway is away (restarting, link down): ask again
            action = "update_start"
            continue
        if answer.get("outcome") != "ok":
            out.phase, out.rejected = "refused", str(answer.get("reason") or "")
            out.reason = str(answer.get("detail") or "")
            break
        res = answer.get("result") or {}
        if on_progress is not None:
            on_progress(res)
        out.phase, out.reason = str(res.get("phase")), str(res.get("reason") or "")
        out.release = dict(res.get("release") or {})
        if res.get("update_id") not in (None, out.update_id):  # a status from another update
            action = "update_start"
            continue
        if out.phase in FINAL:
            break
        if out.phase == "receiving":
            topic = str(res["topic"])
            if not res.get("table"):
                await client.publish(f"{topic}/table", table)
                out.chunks_sent += 1
            todo = [i for first, last in res.get("missing") or [] for i in range(first, last + 1)][:window]
            for i in todo:
                await client.publish(f"{topic}/{i}", b.chunk(i))
                out.chunks_sent += 1
            action = "update_start"  # what is still missing (answered after the chunks, in order)
        else:  # downloading, verifying, applying, restarting: wait and ask
            await asyncio.sleep(1.0)
            action = "update_status"
    else:
        out.reason = out.reason or f"no verdict within {timeout_s:g} s"
    out.ok = out.phase == "confirmed"
    out.elapsed_s = round(time.monotonic() - start, 3)
    return out
