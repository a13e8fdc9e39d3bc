"""Safe edits of the gateway config file: validate before replacing, write atomically, keep a backup.

Device edits work on the text, block by block, so the installer's comments and layout survive:
`add` appends a `[[devices]]` block, `remove` cuts one out. The candidate text is written to a
temporary file beside the config (so relative profile and store paths resolve the same), checked
with `load_config`, and only then renamed over the config, after a timestamped copy of the old one.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from citynerve.gateway.api import ConfigError, ConfigIssue, GatewayError, PermanentError
from citynerve.gateway.atomicfile import NewFileOwner, replace_file
from citynerve.gateway.config import GatewayConfig, load_config
from citynerve.gateway.config.tomlfile import read_toml_text
from citynerve.gateway.control import ControlError, GatewayNotRunningError, ask


class ConfigEditError(PermanentError):
    """An edit that cannot be made (no such device, duplicate id); `reason` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"{path}: {reason}")


def cannot_write(path: Path, err: OSError) -> ConfigEditError:
    """A write the folder or the disk refused (permission, read-only, full), as an edit error."""
    return ConfigEditError(path, f"cannot write: {err.strerror or err}")


def _value(value: Any) -> str:
    """One TOML value; tables become inline tables ({ a = 1, b = "x" })."""
    if isinstance(value, dict):
        if not value:
            return "{}"
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    return tomli_w.dumps({"v": value}, multiline_strings=False)[4:].rstrip("\n")


def _key(key: str) -> str:
    """A bare key when it may be one, else the quoted key tomli-w writes (the key itself may hold
    " = ", so the known tail is cut off rather than split on)."""
    if re.fullmatch(r"[A-Za-z0-9_-]+", key):
        return key
    text = tomli_w.dumps({key: 0})
    assert text.endswith(" = 0\n"), text
    return text[: -len(" = 0\n")]


def _is_table_array(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _flat(value: Any) -> bool:
    """Small tables of plain values read best inline (location = { ... }, org = { ... })."""
    return isinstance(value, dict) and all(not isinstance(v, dict | list) for v in value.values())


def _table_body(name: str, table: dict[str, Any], out: list[str]) -> None:
    subtables: list[tuple[str, Any]] = []
    for k, v in table.items():
        if (isinstance(v, dict) and not _flat(v)) or _is_table_array(v):
            subtables.append((k, v))
        else:
            out.append(f"{_key(k)} = {_value(v)}")
    for k, v in subtables:
        _emit(f"{name}.{_key(k)}", v, out)


def _emit(name: str, value: Any, out: list[str]) -> None:
    if _is_table_array(value):
        for item in value:
            out.append("")
            out.append(f"[[{name}]]")
            _table_body(name, item, out)
    else:
        out.append("")
        out.append(f"[{name}]")
        _table_body(name, value, out)


def dump_toml(data: dict[str, Any], header: str = "") -> str:
    """TOML text laid out the way people write configs: plain keys first, then `[table]`s and
    `[[array]]` blocks in the given order, small flat tables inline (location = { ... }).
    Values are encoded by tomli-w, so strings are always escaped correctly."""
    out: list[str] = []
    if header:
        out += [f"# {line}" if line else "#" for line in header.splitlines()]
        out.append("")
    tables: list[tuple[str, Any]] = []
    for k, v in data.items():
        if isinstance(v, dict) or _is_table_array(v):
            tables.append((k, v))
        else:
            out.append(f"{_key(k)} = {_value(v)}")
    for k, v in tables:
        _emit(_key(k), v, out)
    text = "\n".join(out).lstrip("\n") + "\n"
    return re.sub(r"\n{3,}", "\n\n", text)


def write_atomically(path: Path, text: str, *, backup: bool = True, mode: int = 0o640) -> Path | None:
    """Replace `path` with `text` (temp file + fsync + rename); returns the backup's path, if any.

    The backup is `<name>.<UTC timestamp>.bak` beside the file; a reader never sees half a file. The
    new file keeps the owner and group of the one it replaces (a new file takes the folder's group:
    `/etc/citynerve` is root:citynerve), so the service user can still read it. Raises OSError.
    """
    return replace_file(path, text, mode=mode, backup=backup, new_owner=NewFileOwner.FOLDER_GROUP)


def validate_text(path: Path, text: str) -> GatewayConfig:
    """Load `text` as if it were the config at `path`. Raises ConfigError (issues name `path`)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.check.", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        try:
            # As the config itself: its managed profiles (`<config>.profiles/`) are searched too.
            return load_config(tmp, as_path=path)
        except ConfigError as err:
            raise ConfigError(
                [
                    ConfigIssue(str(path) if i.file == tmp else i.file, i.path, i.message, i.subject)
                    for i in err.issues
                ]
            ) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


INLINE_DEVICES = "devices written as an inline array cannot be edited; write them as [[devices]] blocks"
_HEADER = re.compile(r"^\s*\[\[?\s*([A-Za-z0-9_.\"' -]+?)\s*\]\]?\s*(#.*)?$")


def _blocks(lines: list[str]) -> list[tuple[int, int]]:
    """(start, end) line ranges of each `[[devices]]` element, sub-tables included."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for i, line in enumerate(lines):
        m = _HEADER.match(line)
        if not m:
            continue
        name = m.group(1).replace(" ", "")
        is_array = line.lstrip().startswith("[[")
        if is_array and name == "devices":
            if start is not None:
                out.append((start, i))
            start = i
        elif start is not None and not name.startswith("devices."):
            out.append((start, i))
            start = None
    if start is not None:
        out.append((start, len(lines)))
    return out


class DeviceListEditor:
    """Add and remove `[[devices]]` entries of one config file, validated and backed up."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            # Bounded like every config read: size, and nesting that would escape as RecursionError.
            self.text, self.data = read_toml_text(path)
        except ConfigError as err:
            raise ConfigEditError(path, "; ".join(i.message for i in err.issues)) from None

    def check_editable(self) -> None:
        """Edits work on `[[devices]]` blocks; `devices = [{...}, ...]` has none to cut or rewrite."""
        if "devices" in self.data and not _blocks(self.text.splitlines(keepends=True)):
            raise ConfigEditError(self.path, INLINE_DEVICES)

    def devices(self) -> list[dict[str, Any]]:
        raw = self.data.get("devices", [])
        return [d for d in raw if isinstance(d, dict)] if isinstance(raw, list) else []

    def add(self, *entries: dict[str, Any]) -> str:
        """The config text with each entry appended as a `[[devices]]` block."""
        self.check_editable()
        ids = [d.get("id") for d in self.devices()]
        text = self.text if self.text.endswith("\n") or not self.text else self.text + "\n"
        for entry in entries:
            dev_id = entry.get("id")
            if dev_id in ids:
                raise ConfigEditError(self.path, f"a device with id {dev_id!r} already exists")
            ids.append(dev_id)
            text += "\n" + dump_toml({"devices": [entry]})
        return text

    def remove(self, device_id: str) -> str:
        """The config text without the `[[devices]]` block whose id is `device_id`."""
        self.check_editable()
        lines = self.text.splitlines(keepends=True)
        for start, end in _blocks(lines):
            try:
                parsed = tomllib.loads("".join(lines[start:end]))
            except tomllib.TOMLDecodeError:
                continue
            items = parsed.get("devices") or [{}]
            if items[0].get("id") == device_id:
                # Comments and blank lines at the end of the range sit above the next table: they
                # are that table's. Blank lines after the block go, so removals do not pile up
                # empty space, and so do the comment lines right above it: they describe this device.
                while end > start + 1 and (
                    not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")
                ):
                    end -= 1
                while end < len(lines) and not lines[end].strip():
                    end += 1
                while start > 0 and lines[start - 1].lstrip().startswith("#"):
                    start -= 1
                return "".join(lines[:start] + lines[end:])
        known = ", ".join(str(d.get("id")) for d in self.devices()) or "none"
        raise ConfigEditError(self.path, f"no device {device_id!r} (devices: {known})")

    def replace(self, text: str, device_id: str, entry: dict[str, Any]) -> str:
        """`text` with the `[[devices]]` block of `device_id` rewritten from `entry`, in place (the
        comment lines above it stay; comments inside the block do not survive)."""
        self.check_editable()
        lines = text.splitlines(keepends=True)
        for start, end in _blocks(lines):
            try:
                parsed = tomllib.loads("".join(lines[start:end]))
            except tomllib.TOMLDecodeError:
                continue
            items = parsed.get("devices") or [{}]
            if items[0].get("id") == device_id:
                while end > start + 1 and (
                    not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")
                ):
                    end -= 1
                block = dump_toml({"devices": [entry]}).lstrip("\n")
                return "".join(lines[:start]) + block + "".join(lines[end:])
        raise ConfigEditError(self.path, f"no device {device_id!r}")

    def replace_valid(self, entries: dict[str, dict[str, Any]]) -> tuple[str, dict[str, list[ConfigIssue]]]:
        """The config text with each entry's block rewritten, except the entries the config check
        refuses: those are returned with their issues, by device id, and left as they were.

        One check of all entries at once; an issue in a changed device's entry (`devices[i]`, named
        by its id) takes that entry out and the rest is checked again. Issues that name no changed
        entry get each entry checked on its own; entries that pass alone but fail together raise
        ConfigError (then nothing can be taken safely); ConfigEditError when devices are an inline
        array or the folder refuses the candidate file ("cannot write: ...")."""
        pending = dict(entries)
        refused: dict[str, list[ConfigIssue]] = {}
        while True:
            text = self.text
            for device_id, entry in pending.items():
                text = self.replace(text, device_id, entry)
            if not pending:
                return text, refused
            try:
                validate_text(self.path, text)
                return text, refused
            except OSError as err:  # the candidate is checked beside the config: the folder refused
                raise cannot_write(self.path, err) from err
            except ConfigError as err:
                blamed: dict[str, list[ConfigIssue]] = {}
                for issue in err.issues:
                    if issue.path.startswith("devices[") and issue.subject in pending:
                        blamed.setdefault(issue.subject, []).append(issue)
                if not blamed:
                    blamed = self._refused_alone(pending)
                if not blamed:
                    raise
            for device_id, issues in blamed.items():
                refused[device_id] = issues
                del pending[device_id]

    def _refused_alone(self, entries: dict[str, dict[str, Any]]) -> dict[str, list[ConfigIssue]]:
        out: dict[str, list[ConfigIssue]] = {}
        for device_id, entry in entries.items():
            try:
                validate_text(self.path, self.replace(self.text, device_id, entry))
            except OSError as err:
                raise cannot_write(self.path, err) from err
            except ConfigError as err:
                out[device_id] = list(err.issues)
        return out

    def save(self, text: str, *, backup: bool = True) -> tuple[GatewayConfig, Path | None]:
        """Validate `text` as the new config; if valid, replace the file (with a backup, unless the
        file is the command's own: `init` writes it, then adds the devices found).

        Raises ConfigError (every issue) and leaves the file untouched when invalid; ConfigEditError
        ("cannot write: ...") when the folder or the disk refuses the write (the file is untouched too).
        """
        try:
            cfg = validate_text(self.path, text)
            mode = self.path.stat().st_mode & 0o777 if self.path.exists() else 0o640
            kept = write_atomically(self.path, text, mode=mode, backup=backup)
        except OSError as err:
            raise cannot_write(self.path, err) from err
        self.text = text
        self.data = tomllib.loads(text)
        return cfg, kept


class ReloadOutcome(enum.Enum):
    """What happened when the running gateway was asked to reload its config: exactly one."""

    RELOADED = "reloaded"  # everything changed is in effect
    RESTART_NEEDED = "restart_needed"  # the buses took it; a section named in `restart_for` did not
    NOT_RUNNING = "not_running"  # applies at the next start
    UNSUPPORTED = "unsupported"  # the running version has no reload op: restart the service
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class ReloadReport:
    outcome: ReloadOutcome
    detail: Any  # the gateway's answer, or the reason
    restart_for: tuple[str, ...] = ()  # config sections the running gateway applies only at a start

    def message(self) -> str:
        """The outcome in one sentence, with what the installer does next."""
        if self.outcome is ReloadOutcome.RELOADED:
            buses = _changed_buses(self.detail)
            return "the running gateway took the change" + (f" (buses restarted: {buses})" if buses else "")
        if self.outcome is ReloadOutcome.RESTART_NEEDED:
            sections = ", ".join(f"[{s}]" for s in self.restart_for)
            takes = "section takes" if len(self.restart_for) == 1 else "sections take"
            return (
                f"the running gateway polls the change, but its {sections} {takes} it only after a "
                "restart: systemctl restart citynerve"
            )
        if self.outcome is ReloadOutcome.NOT_RUNNING:
            return "no gateway is running: the change applies when it starts"
        if self.outcome is ReloadOutcome.UNSUPPORTED:
            return "the running gateway cannot reload: systemctl restart citynerve"
        return f"the running gateway could not reload ({self.detail}): the file is changed; restart it"

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome.value,
            "message": self.message(),
            "restart_for": list(self.restart_for),
            "detail": self.detail,
        }


def _changed_buses(answer: Any) -> str:
    if not isinstance(answer, dict):
        return ""
    names = [str(b) for key in ("changed", "added", "removed") for b in answer.get(key) or ()]
    return ", ".join(names)


async def ask_reload(socket: Path) -> ReloadReport:
    """Ask a running gateway to re-read its config (control op `reload`) and report its answer."""
    try:
        answer = await ask(socket, "reload", timeout_s=60.0)
    except GatewayNotRunningError as err:
        return ReloadReport(ReloadOutcome.NOT_RUNNING, err.reason)
    except ControlError as err:
        if err.type == "BadRequest":
            # `reload` takes no arguments: a BadRequest means this gateway version has no such op.
            return ReloadReport(ReloadOutcome.UNSUPPORTED, err.message)
        return ReloadReport(ReloadOutcome.FAILED, f"{err.type}: {err.message}")
    except (GatewayError, OSError) as err:
        return ReloadReport(ReloadOutcome.FAILED, str(err))
    restart = answer.get("restart_needed_for") if isinstance(answer, dict) else None
    if isinstance(restart, list) and restart:
        return ReloadReport(ReloadOutcome.RESTART_NEEDED, answer, tuple(str(x) for x in restart))
    return ReloadReport(ReloadOutcome.RELOADED, answer)
