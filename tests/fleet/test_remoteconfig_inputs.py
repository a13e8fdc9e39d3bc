"""`config_apply` through the real CommandProcessor, in process, against the documents a platform
(or an attacker holding a configure key) may send: nesting too deep for the parsers in every place a
document can hide it, and a push whose write fails half way (the box stays on its previous state).

The gateway under the remote config is a stand-in subclassing `Reconfigurable` (the runtime needs
buses and a broker; the config file, its history and the managed profiles are real files)."""

from __future__ import annotations

import asyncio
import base64
import errno
import hashlib
import json
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from citynerve.gateway.api import Event
from citynerve.gateway.config import GatewayConfig, load_config
from citynerve.gateway.remoteconfig import prepare_start
from citynerve.gateway.remoteconfig.document import MAX_DEPTH, DocumentError, candidate_text
from citynerve.gateway.remoteconfig.manager import Reconfigurable, RemoteConfig
from citynerve.gateway.remoteconfig.profiles import candidate
from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import (
    CommandOutcome,
    CommandProcessor,
    JsonV1Encoding,
    NonceCache,
    RejectReason,
)
from citynerve.gateway.uplink.encoding import CommandResult
from citynerve.gateway.uplink.signing import CommandVerifier
from citynerve.hil.platform import CommandSigner
from tests.integration.conftest import gateway_config
from tests.uplink.test_commands import BuildingTarget

GW = "gw-test"  # gateway_config's id
KEY = bytes.fromhex("00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff")
SIGNER = CommandSigner(hmac_key=KEY)


class FileGateway(Reconfigurable):
    """The runtime's side as remote config sees it: the config as loaded from its file, healthy."""

    def __init__(self, path: Path) -> None:
        self.config: GatewayConfig = load_config(path)
        self.results: list[CommandResult] = []

    async def reload(self) -> dict[str, Any]:
        self.config = load_config(self.config.source)
        return {}

    async def restart_uplink(self) -> None:
        return None

    async def config_confirmed(self) -> None:
        return None

    def request_restart(self, delay_s: float) -> None:
        return None

    def uplink_state(self) -> dict[str, Any] | None:
        return {"connected": True}

    def bus_stats(self) -> list[dict[str, Any]]:
        return []

    async def publish_result(self, result: CommandResult, destination: str | None = None) -> bool:
        self.results.append(result)
        return True


@dataclass
class Rig:
    config: Path
    gateway: FileGateway
    remote: RemoteConfig
    processor: CommandProcessor
    events: list[Event]
    rotating: list[str]  # a TLS rotation waiting (its reason), as Credentials.rotation_waiting says

    async def send(self, action: str, args: dict[str, Any], command_id: str | None = None) -> CommandResult:
        c = SIGNER.command(GW, action, args, now=time.time(), command_id=command_id)
        return await self.processor.handle(json.dumps(c).encode())


def apply_args(document: str, *, version: str = "v2", mode: str = "replace") -> dict[str, Any]:
    sha = hashlib.sha256(document.encode()).hexdigest()
    return {"version": version, "mode": mode, "document": document, "sha256": sha}


@pytest.fixture
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    config = gateway_config(tmp_path, 5020, buses=1, units=1)
    gateway = FileGateway(config)
    events: list[Event] = []
    tasks: list[asyncio.Task[Any]] = []

    def spawn(coro: Awaitable[Any], name: str) -> None:
        tasks.append(asyncio.ensure_future(coro))

    rotating: list[str] = []
    remote = RemoteConfig(
        gateway, events=events.append, spawn=spawn, rotation_waiting=lambda: rotating[0] if rotating else None
    )
    async with AsyncOutbox(tmp_path / "outbox.sqlite") as ob:

        async def resend() -> None:
            return None

        processor = CommandProcessor(
            gateway_id=GW,
            target=BuildingTarget(),
            verifier=CommandVerifier.hmac(KEY),
            nonces=NonceCache(ob),
            decode=JsonV1Encoding(topic_prefix="citynerve", gateway_id=GW).decode_command,
            resend_inventory=resend,
            enabled=True,
            extra_actions=remote.actions(),
        )
        yield Rig(config, gateway, remote, processor, events, rotating)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


# -- nesting -----------------------------------------------------------------------------------------

DEEP = 4000  # far past the parsers' recursion limit
TOML_ARRAY = "x = " + "[" * DEEP + "]" * DEEP + "\n"
TOML_INLINE = "a = " + "{b = " * DEEP + "1" + "}" * DEEP + "\n"
TOML_DOTTED = "a" + ".a" * DEEP + " = 1\n"  # no recursion in tomllib, but in everything after it
JSON_DEEP = '{"rules": ' + "[" * 100_000 + "]" * 100_000 + "}"

DEEP_DOCUMENTS: dict[str, tuple[str, str, str]] = {
    # name: (mode, document, what the detail names)
    "toml array": ("replace", TOML_ARRAY, "the document nests deeper than 16 levels (line 1)"),
    "toml inline tables": ("replace", TOML_INLINE, "the document nests deeper than 16 levels (line 1)"),
    "toml dotted keys": ("replace", TOML_DOTTED, "the document nests deeper than 16 levels"),
    "toml array on line 3": ("replace", "# c\n\n" + TOML_ARRAY, "(line 3)"),
    "json patch": ("patch", JSON_DEEP, "the patch is nested deeper than 16 levels"),
    "profile as toml text": (
        "patch",
        json.dumps({"profiles": {"p1": TOML_INLINE}}),
        "profiles.p1 nests deeper than 16 levels (line 1)",
    ),
    "profile as toml text, dotted": (
        "patch",
        json.dumps({"profiles": {"p1": TOML_DOTTED}}),
        "profiles.p1 nests deeper than 16 levels",
    ),
    "profile table in a whole document": (
        "replace",
        '[profiles]\np1 = """\n' + TOML_ARRAY + '"""\n',
        "profiles.p1 nests deeper than 16 levels (line 1)",
    ),
}


@pytest.mark.parametrize("name", sorted(DEEP_DOCUMENTS))
def test_a_deeply_nested_document_is_a_typed_error_naming_where(name: str, tmp_path: Path) -> None:
    mode, doc, where = DEEP_DOCUMENTS[name]
    running = gateway_config(tmp_path, 5020, buses=1, units=1).read_text()
    with pytest.raises(DocumentError) as err:
        candidate(running, {}, doc.encode(), mode)
    assert where in err.value.detail


def test_brackets_in_toml_strings_and_comments_do_not_count(tmp_path: Path) -> None:
    running = gateway_config(tmp_path, 5020, buses=1, units=1).read_text()
    many = "[{" * 40
    doc = running + (
        f'\n# {many}\n[extra]\nliteral = \'{many}\' # {many}\nbasic = "{many}\\"{many}"\n'
        f'multi_literal = \'\'\'\n{many}\n\'\'\'\nmulti_basic = """\n{many}\\"""{many}"""\n'
    )
    text, _ = candidate(running, {}, doc.encode(), "replace")
    assert text == doc
    at_bound = MAX_DEPTH - 1  # the root table is the first level
    nested = "x = " + "[" * at_bound + "]" * at_bound + "\n"
    assert candidate_text(running, (nested + running).encode(), "replace")
    with pytest.raises(DocumentError, match="deeper than 16 levels"):
        candidate_text(running, ("x = [" + nested[4:-1] + "]\n" + running).encode(), "replace")


async def test_deep_documents_are_answered_bad_value_inline_and_chunked(rig: Rig) -> None:
    for n, (name, (mode, doc, where)) in enumerate(DEEP_DOCUMENTS.items()):
        if len(doc) < 12_000:  # inline what fits a 16 KiB command
            r = await rig.send("config_apply", apply_args(doc, mode=mode))
            assert (r.outcome, r.reason) == (CommandOutcome.REJECTED, RejectReason.BAD_VALUE), (name, r)
            assert where in r.detail, (name, r.detail)
        data = doc.encode()
        parts = [data[i : i + 8192] for i in range(0, len(data), 8192)]
        upload = f"up-{n}"
        for i, part in enumerate(parts):
            data64 = base64.b64encode(part).decode()
            args = {"upload": upload, "index": i, "count": len(parts), "data": data64}
            assert (await rig.send("config_chunk", args)).outcome is CommandOutcome.OK
        sha = hashlib.sha256(data).hexdigest()
        r = await rig.send("config_apply", {"version": "v2", "mode": mode, "upload": upload, "sha256": sha})
        assert (r.outcome, r.reason) == (CommandOutcome.REJECTED, RejectReason.BAD_VALUE), (name, r)
        assert where in r.detail, (name, r.detail)
    assert rig.remote.pending is None and rig.config.read_text() == rig.gateway.config.source.read_text()
    ok = await rig.send("config_apply", apply_args('{"log": {"level": "debug"}}', mode="patch"))
    assert ok.outcome is CommandOutcome.OK, ok  # the session goes on


async def test_a_chunked_change_refused_while_a_rotation_waits_keeps_its_upload(rig: Rig) -> None:
    # "send the change after it": the chunks were taken (deleted) before the refusal, so the
    # resent config_apply failed "no upload" and every chunk had to go again.
    doc = json.dumps({"log": {"level": "debug"}})
    data64 = base64.b64encode(doc.encode()).decode()
    chunk = {"upload": "up-1", "index": 0, "count": 1, "data": data64}
    assert (await rig.send("config_chunk", chunk)).outcome is CommandOutcome.OK
    apply = {
        "version": "v2",
        "mode": "patch",
        "upload": "up-1",
        "sha256": hashlib.sha256(doc.encode()).hexdigest(),
    }
    rig.rotating.append("a TLS client certificate rotation waits for the uplink to connect")
    r = await rig.send("config_apply", apply)
    assert (r.outcome, r.reason) == (CommandOutcome.REJECTED, RejectReason.BAD_VALUE), r
    assert "rotation waits" in r.detail
    rig.rotating.clear()
    r = await rig.send("config_apply", apply)  # the same upload, after the rotation
    assert r.outcome is CommandOutcome.OK, r
    assert rig.remote.pending is not None


# -- a write that fails half way ---------------------------------------------------------------------

LITE = {
    "id": "wm-lite",
    "family": "modbus",
    "poll_interval_s": 2,
    "points": {"flow_rate": {"table": "holding", "address": 0, "type": "float32", "unit": "m3/h"}},
}
PATCH = json.dumps({"profiles": {"wm-lite": LITE}, "log": {"level": "debug"}})


@dataclass
class _DiskFull:
    """The disk refuses the config file's write (ENOSPC) and nothing else, so the atomic write of
    the config fails after the profiles were written. `end()`: the disk has room again."""

    config: Path
    monkeypatch: pytest.MonkeyPatch

    def __post_init__(self) -> None:
        real = tempfile.mkstemp

        def mkstemp(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("prefix") == f".{self.config.name}." and kwargs.get("dir") == self.config.parent:
                raise OSError(errno.ENOSPC, "No space left on device")
            return real(*args, **kwargs)

        self.monkeypatch.setattr(tempfile, "mkstemp", mkstemp)

    def end(self) -> None:
        self.monkeypatch.undo()


async def test_a_config_write_that_fails_leaves_the_previous_state_and_no_marker(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    hist = rig.remote.history
    before_text, before_current = rig.config.read_text(), hist.current()
    disk_full = _DiskFull(rig.config, monkeypatch)
    r = await rig.send("config_apply", apply_args(PATCH, mode="patch"), command_id="cmd-v2")
    assert (r.outcome, r.reason) == (CommandOutcome.FAILED, RejectReason.INTERNAL), r
    assert "cannot write the config" in r.detail
    # The previous state, whole: config, managed profiles (none), current version; no marker.
    assert rig.config.read_text() == before_text
    assert hist.read_profiles() == {} and not hist.profile_dir.exists()
    assert hist.pending() is None and hist.current() == before_current
    assert rig.remote.pending is None and rig.remote.current == before_current
    assert [e["what"] for e in hist.log()] == ["failed"]
    disk_full.end()
    # A restart finds nothing to confirm: no late "confirmed" for a command answered failed.
    assert prepare_start(rig.config) is None
    again = RemoteConfig(rig.gateway, events=rig.events.append, spawn=lambda c, n: c.close())
    await again.resume()
    assert again.last is None and rig.gateway.results == []
    # The disk has room again: the same change goes through.
    r = await rig.send("config_apply", apply_args(PATCH, mode="patch", version="v3"))
    assert r.outcome is CommandOutcome.OK and r.result is not None and r.result["state"] == "pending"
    assert set(hist.read_profiles()) == {"wm-lite"}


async def test_when_putting_the_previous_state_back_fails_too_the_next_start_reverts(
    rig: Rig, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    hist = rig.remote.history
    before_text = rig.config.read_text()
    disk_full = _DiskFull(rig.config, monkeypatch)
    # ... and the managed folder cannot be swapped back either (its rename target is a file).
    stuck = hist.profile_dir.with_name(hist.profile_dir.name + ".old")
    stuck.write_text("")
    r = await rig.send("config_apply", apply_args(PATCH, mode="patch"), command_id="cmd-v2")
    assert (r.outcome, r.reason) == (CommandOutcome.FAILED, RejectReason.INTERNAL), r
    assert any(
        rec.levelname == "CRITICAL" and "cannot put the previous config back" in rec.getMessage()
        for rec in caplog.records
    )
    pending = hist.pending()
    assert pending is not None and pending["state"] == "unwritten"
    disk_full.end()
    stuck.unlink()
    # The next start puts the snapshot back before the config is loaded, and reports the revert.
    assert "reverted: its write failed" in str(prepare_start(rig.config))
    assert rig.config.read_text() == before_text and hist.read_profiles() == {}
    again = RemoteConfig(FileGateway(rig.config), events=rig.events.append, spawn=lambda c, n: c.close())
    await again.resume()
    assert again.last is not None and again.last["outcome"] == "reverted"
    assert hist.pending() is None
