"""A config document from the platform: assembled from chunks (bounded, hash-checked), turned into
the candidate config text (a whole TOML config, or a JSON merge patch of some sections applied to
the running one) and validated with the checks of `citynerve config check`.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import hashlib
import re
import shutil
import time
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomli_w

from citynerve.gateway.api import ConfigError, ConfigIssue, GatewayError, decode_text
from citynerve.gateway.config import GatewayConfig, load_config
from citynerve.gateway.config.paths import managed_profile_dir
from citynerve.gateway.payload import PayloadError, load_json

MAX_DOCUMENT_BYTES = 512 * 1024  # a big district config is ~100 KB
MAX_CHUNK_BYTES = 8 * 1024  # raw bytes per chunk: base64 in a command stays under the 16 KB inbound cap
MAX_CHUNKS = MAX_DOCUMENT_BYTES // MAX_CHUNK_BYTES
MAX_UPLOADS = 4  # uploads assembled at once; the oldest is dropped for a fifth
UPLOAD_TTL_S = 600.0  # an upload not applied within this (monotonic) time is dropped
MAX_DEPTH = 16
"""Deepest nesting of a document or a profile in it (a shipped config nests 6 levels): bounded
before the parsers see the text, since tomllib and json recurse per array and table."""
PATCH_SECTIONS = frozenset({"buses", "devices", "rules", "upstream", "web", "log", "clock"})
"""Top-level sections a patch may change (and `profiles`, the managed profiles: profiles.py).
`gateway` (the identity), `store`, `control`, `security`
and `profile_dirs` change only with a whole document, and the gateway id and store path never."""


class DocumentError(GatewayError):
    """A config document that cannot be used: `reason` is the command's reject reason
    (`bad_value`), `detail` says what and where."""

    def __init__(self, detail: str) -> None:
        self.detail = detail
        super().__init__(detail)


@dataclass
class _Upload:
    count: int
    started: float
    parts: dict[int, bytes] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return sum(len(p) for p in self.parts.values())


class ChunkAssembler:
    """Chunks of config documents by upload id, bounded in number, size and age."""

    def __init__(self, *, clock: Any = time.monotonic) -> None:
        self._uploads: dict[str, _Upload] = {}
        self._clock = clock

    def add(self, upload: str, index: int, count: int, data: str) -> dict[str, Any]:
        now = self._clock()
        self._uploads = {k: u for k, u in self._uploads.items() if now - u.started < UPLOAD_TTL_S}
        if not 0 < count <= MAX_CHUNKS:
            raise DocumentError(f"count must be in 1..{MAX_CHUNKS}")
        if not 0 <= index < count:
            raise DocumentError(f"index must be in 0..{count - 1}")
        try:
            raw = base64.b64decode(data.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as err:
            raise DocumentError(f"data is not base64: {err}") from err
        if len(raw) > MAX_CHUNK_BYTES:
            raise DocumentError(f"a chunk holds at most {MAX_CHUNK_BYTES} bytes")
        up = self._uploads.get(upload)
        if up is None:
            if len(self._uploads) >= MAX_UPLOADS:
                oldest = min(self._uploads, key=lambda k: self._uploads[k].started)
                del self._uploads[oldest]
            up = self._uploads[upload] = _Upload(count, now)
        if up.count != count:
            raise DocumentError(f"upload {upload} has {up.count} chunks, not {count}")
        up.parts[index] = raw
        if up.size > MAX_DOCUMENT_BYTES:
            del self._uploads[upload]
            raise DocumentError(f"a document holds at most {MAX_DOCUMENT_BYTES} bytes")
        return {"upload": upload, "received": len(up.parts), "count": count}

    def take(self, upload: str) -> bytes:
        up = self._uploads.get(upload)
        if up is None:
            raise DocumentError(f"no upload {upload!r} (never sent, or older than {UPLOAD_TTL_S:g} s)")
        missing = [i for i in range(up.count) if i not in up.parts]
        if missing:
            raise DocumentError(f"upload {upload} misses chunks {missing[:20]}")
        del self._uploads[upload]
        return b"".join(up.parts[i] for i in range(up.count))


def check_hash(data: bytes, sha256: object) -> None:
    if not isinstance(sha256, str) or hashlib.sha256(data).hexdigest() != sha256.lower():
        raise DocumentError("sha256 does not match the document")


def candidate_text(current: str, document: bytes, mode: str) -> str:
    """The config text the document asks for: the document itself (`replace`) or the running
    config with a JSON merge patch (RFC 7396) of some sections applied (`patch`)."""
    if len(document) > MAX_DOCUMENT_BYTES:
        raise DocumentError(f"a document holds at most {MAX_DOCUMENT_BYTES} bytes")
    try:
        text = decode_text(document)  # a file uploaded from Windows may start with a BOM
    except UnicodeDecodeError as err:
        raise DocumentError(f"the document: {err}") from err
    if mode == "replace":
        load_toml(text, "the document")
        return text
    if mode != "patch":
        raise DocumentError("mode must be replace or patch")
    patch = load_patch(text)
    if not isinstance(patch, dict) or not patch:
        raise DocumentError("the patch must be a non-empty JSON object")
    bad = sorted(set(patch) - PATCH_SECTIONS)
    if bad:
        raise DocumentError(f"a patch may change {', '.join(sorted(PATCH_SECTIONS))}; not {', '.join(bad)}")
    merged = merge_patch(tomllib.loads(current), patch)
    try:
        return tomli_w.dumps(merged)
    except (TypeError, ValueError) as err:  # e.g. a null inside a list: TOML has no null
        raise DocumentError(f"the patched config cannot be written as TOML: {err}") from err


def load_patch(text: str) -> Any:
    """A JSON patch, nested at most MAX_DEPTH (checked on the text before parsing), finite numbers
    only; else DocumentError."""
    try:
        return load_json(text, where="the patch", max_bytes=MAX_DOCUMENT_BYTES, max_depth=MAX_DEPTH)
    except PayloadError as err:
        raise DocumentError(f"the patch is {err.reason}") from None


# What can hold a bracket in TOML without nesting (strings, comments), or one bracket.
_TOML_TOKENS = re.compile(
    r'"""(?:[^\\]|\\.)*?"""|\'\'\'.*?\'\'\'|"(?:[^"\\\n]|\\.)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]',
    re.DOTALL,
)


def _toml_too_deep(text: str, limit: int) -> int | None:
    """The line where TOML text's arrays and inline tables nest deeper than `limit`, or None."""
    depth = 0
    for m in _TOML_TOKENS.finditer(text):
        c = m.group()
        if len(c) != 1:
            continue  # a string or a comment
        if c in "[{":
            depth += 1
            if depth > limit:
                return text.count("\n", 0, m.start()) + 1
        else:
            depth -= 1
    return None


def load_toml(text: str, where: str) -> dict[str, Any]:
    """TOML from the platform nested at most MAX_DEPTH, else DocumentError naming `where`. Checked
    on the text before tomllib sees it (it recurses per array and inline table) and on the result
    (dotted keys and table headers nest without recursing, but everything after would)."""
    line = _toml_too_deep(text, MAX_DEPTH - 1)  # the root table is a level without a bracket
    if line is not None:
        raise DocumentError(f"{where} nests deeper than {MAX_DEPTH} levels (line {line})")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise DocumentError(f"{where} is not TOML: {err}") from err
    except RecursionError:  # not below MAX_DEPTH; kept so that no parser error escapes untyped
        raise DocumentError(f"{where} nests too deep") from None
    if _depth(data) > MAX_DEPTH:
        raise DocumentError(f"{where} nests deeper than {MAX_DEPTH} levels (dotted keys or tables)")
    return data


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: objects merge key by key, null deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = merge_patch(out.get(key), value)
    return out


def _depth(value: Any, level: int = 0) -> int:
    if level > MAX_DEPTH:
        return level
    if isinstance(value, dict):
        return max((_depth(v, level + 1) for v in value.values()), default=level + 1)
    if isinstance(value, list):
        return max((_depth(v, level + 1) for v in value), default=level + 1)
    return level


def validate(
    config_path: Path, text: str, running: GatewayConfig | None, profiles: Mapping[str, str] | None = None
) -> GatewayConfig:
    """Check `text` as `config check` would, as if it were the file at `config_path` (relative
    paths resolve the same), with `profiles` (`{id: TOML text}`) as its managed profiles, checked
    as profile files are; and refuse what would cut the gateway off its own data: another gateway
    id or store than `running`'s (None: the running config does not load; only the load check).
    Raises ConfigError listing every issue with its key path (`profiles.<id>.<key>` for a managed
    profile)."""
    candidate = config_path.with_name(f".{config_path.name}.candidate")
    staged = managed_profile_dir(candidate)
    shutil.rmtree(staged, ignore_errors=True)
    candidate.write_text(text, encoding="utf-8")
    candidate.chmod(0o600)
    if profiles:
        staged.mkdir(mode=0o700)
        for pid, body in profiles.items():
            (staged / f"{pid}.toml").write_text(body, encoding="utf-8")
    try:
        insecure = running is not None and running.security.allow_insecure_secret_files
        cfg = load_config(candidate, allow_insecure_secrets=insecure)
    except ConfigError as err:
        raise ConfigError([_profile_issue(i, staged, candidate, config_path) for i in err.issues]) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            candidate.unlink()
        shutil.rmtree(staged, ignore_errors=True)
    issues = []
    if running is None:
        return cfg
    if cfg.gateway.id != running.gateway.id:
        issues.append(
            ConfigIssue(str(config_path), "gateway.id", "a remote config cannot change the gateway id")
        )
    if Path(cfg.store.path) != Path(running.store.path):
        issues.append(ConfigIssue(str(config_path), "store.path", "a remote config cannot move the store"))
    if issues:
        raise ConfigError(issues)
    return cfg


def _profile_issue(issue: ConfigIssue, staged: Path, candidate: Path, config_path: Path) -> ConfigIssue:
    """An issue in a staged managed profile, named by its key path in the document; one in the
    candidate config, by the config's name (the candidate file is gone when it is read)."""
    f = Path(issue.file)
    if f == candidate:
        return dataclasses.replace(issue, file=str(config_path))
    if f.parent != staged:
        return issue
    path = f"profiles.{f.stem}" + (f".{issue.path}" if issue.path else "")
    return dataclasses.replace(issue, file=str(config_path), path=path)


def issues_text(err: ConfigError, limit: int = 6000) -> str:
    """Every issue as `key path: message`, for a command's detail (cut at `limit` characters)."""
    text = f"{len(err.issues)} issue(s): " + "; ".join(f"{i.shown}: {i.message}" for i in err.issues)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def redacted(text: str) -> str:
    """The config with secrets replaced (as in the support bundle)."""
    from citynerve.gateway.commissioning.redact import redact_config

    return tomli_w.dumps(redact_config(tomllib.loads(text)))


def issue_list(err: ConfigError) -> list[Mapping[str, str]]:
    return [{"path": i.path, "shown": i.shown, "message": i.message} for i in err.issues]
