"""The config file's history: snapshots of configs that ran, the pending (unconfirmed) change and a
log of what happened (applied, confirmed, reverted, rolled back), in a folder beside the config.

    gw.toml                the running config
    gw.toml.history/       index.json, 0007.toml ... (at most MAX_SNAPSHOTS), pending.json,
                           0007.profiles.json (the managed profiles of snapshot 7, if any)
    gw.toml.profiles/      the managed profiles (sent by the platform): <id>.toml

Every write is atomic (a temporary file, fsync, rename), so a power cut leaves the old or the new
file, never half of one. The folder holds copies of the config, so it is the service user's alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citynerve.gateway.api import GatewayError, read_text
from citynerve.gateway.atomicfile import NewFileOwner, replace_file
from citynerve.gateway.config.paths import managed_profile_dir

MAX_SNAPSHOTS = 10
MAX_LOG = 100
LOCAL_VERSION = "local"  # a config written by hand, not by the platform or a rollback


class HistoryError(GatewayError):
    """The config history folder cannot be read or written (or names no such version)."""

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"config history {path}: {problem}")


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def atomic_write(path: Path, data: str, mode: int = 0o600) -> None:
    """Write `data` to `path` through a temporary file in the same folder: all or nothing. A
    replaced file keeps its owner and group (root's `config rollback` leaves the service user's
    config readable to it); a new one takes its folder's (the history folder is the service's)."""
    replace_file(path, data, mode=mode, new_owner=NewFileOwner.FOLDER)


def state_digest(text: str, profiles: Mapping[str, str]) -> str:
    """The config's version hash: of the text alone without managed profiles, else of the text
    and every profile (by id, in order)."""
    if not profiles:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()
    blob = json.dumps({"config": text, "profiles": dict(sorted(profiles.items()))}, sort_keys=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def read_profiles(directory: Path) -> dict[str, str]:
    """The managed profiles as `{id: TOML text}` (empty when the folder does not exist)."""
    if not directory.is_dir():
        return {}
    return {f.stem: f.read_text(encoding="utf-8") for f in sorted(directory.glob("*.toml"))}


def write_profiles(directory: Path, profiles: Mapping[str, str], owner_like: Path | None = None) -> None:
    """Make the managed folder hold exactly `profiles`: written into a new folder, then swapped in
    by two renames (a power cut in between leaves no managed folder; the pending marker then
    reverts the change at the next start, `prepare_start`). The new folder gets the owner of the
    one it replaces, else of `owner_like` (the history folder): the service user's, even when root
    writes it (`config rollback`)."""
    new = directory.with_name(directory.name + ".new")
    old = directory.with_name(directory.name + ".old")
    for d in (new, old):
        shutil.rmtree(d, ignore_errors=True)
    if not profiles and not directory.exists():
        return
    if profiles:
        new.mkdir(mode=0o700, parents=True)
        like = directory if directory.is_dir() else owner_like
        if like is not None and like.is_dir() and os.geteuid() == 0:
            st = like.stat()
            os.chown(new, st.st_uid, st.st_gid)
        for pid, text in profiles.items():
            atomic_write(new / f"{pid}.toml", text, 0o600)
    if directory.exists():
        os.replace(directory, old)
    if profiles:
        os.replace(new, directory)
    shutil.rmtree(old, ignore_errors=True)
    with contextlib.suppress(OSError):
        dfd = os.open(directory.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    version: str
    sha256: str
    file: str
    saved_at: float
    profiles: str = ""  # the managed profiles' file (JSON {id: text}), when there were any

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "seq": self.seq,
            "version": self.version,
            "sha256": self.sha256,
            "file": self.file,
            "saved_at": self.saved_at,
        }
        if self.profiles:
            out["profiles"] = self.profiles
        return out


class ConfigHistory:
    """Snapshots, the pending change and the log of one config file."""

    def __init__(self, config_path: Path, max_snapshots: int = MAX_SNAPSHOTS) -> None:
        self.config_path = Path(config_path)
        self.dir = self.config_path.with_name(self.config_path.name + ".history")
        self.profile_dir = managed_profile_dir(self.config_path)
        self.max_snapshots = max_snapshots

    # -- files -----------------------------------------------------------------------------------

    def _index(self) -> dict[str, Any]:
        path = self.dir / "index.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {"current": None, "snapshots": [], "log": [], "next_seq": 1}
        except (OSError, ValueError) as err:
            raise HistoryError(path, f"unreadable: {err}") from err
        if not isinstance(data, dict):
            raise HistoryError(path, "not a JSON object")
        return data

    def _save_index(self, data: Mapping[str, Any]) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.dir / "index.json", json.dumps(data, indent=1, sort_keys=True))

    def read_config(self) -> str:
        """The config file's text, a BOM dropped (a patch parses it as TOML)."""
        return read_text(self.config_path)

    def read_profiles(self) -> dict[str, str]:
        """The managed profiles (sent by the platform) as `{id: TOML text}`."""
        return read_profiles(self.profile_dir)

    def write_state(self, text: str, profiles: Mapping[str, str]) -> None:
        """The config and the managed profiles: the profiles first (a config naming a profile
        must not run without it)."""
        write_profiles(self.profile_dir, profiles, self.dir)
        self.write_config(text)

    def put_back(self, text: str, profiles: Mapping[str, str]) -> None:
        """Make the config and the managed profiles `text` and `profiles` again after a write that
        failed half way, writing only what differs (what just failed to write may fail again). The
        config first: the old config beside the new profiles names none that is missing."""
        if self.read_config() != text:
            self.write_config(text)
        if self.read_profiles() != dict(profiles):
            write_profiles(self.profile_dir, profiles, self.dir)

    def write_config(self, text: str) -> None:
        try:
            mode = self.config_path.stat().st_mode & 0o777
        except FileNotFoundError:
            mode = 0o600
        atomic_write(self.config_path, text, mode)

    # -- what runs -------------------------------------------------------------------------------

    def current(self, text: str | None = None, profiles: Mapping[str, str] | None = None) -> dict[str, str]:
        """The running config's version and hash (of the managed profiles too, `state_digest`). A
        file changed by hand since the platform (or a rollback) wrote it is version `local`."""
        text = self.read_config() if text is None else text
        digest = state_digest(text, self.read_profiles() if profiles is None else profiles)
        cur = self._index().get("current") or {}
        version = cur.get("version") if cur.get("sha256") == digest else None
        return {"version": str(version or LOCAL_VERSION), "sha256": digest}

    def set_current(self, version: str, digest: str) -> None:
        data = self._index()
        data["current"] = {"version": version, "sha256": digest}
        self._save_index(data)

    def snapshots(self) -> list[Snapshot]:
        return [Snapshot(**s) for s in self._index().get("snapshots", [])]

    def log(self) -> list[dict[str, Any]]:
        return list(self._index().get("log", []))

    def snapshot(self, text: str, version: str, profiles: Mapping[str, str] | None = None) -> Snapshot:
        """Keep a copy of `text` (the config that runs now) and of the managed profiles (default:
        those on disk now); the oldest beyond the bound go."""
        profiles = self.read_profiles() if profiles is None else dict(profiles)
        data = self._index()
        seq = int(data.get("next_seq", 1))
        name = f"{seq:04d}.toml"
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.dir / name, text)
        pname = ""
        if profiles:
            pname = f"{seq:04d}.profiles.json"
            atomic_write(self.dir / pname, json.dumps(profiles, sort_keys=True))
        snap = Snapshot(seq, version, state_digest(text, profiles), name, round(time.time(), 3), pname)
        snaps = [*data.get("snapshots", []), snap.to_dict()]
        for old in snaps[: max(0, len(snaps) - self.max_snapshots)]:
            for f in (old["file"], old.get("profiles")):
                if f:
                    with contextlib.suppress(FileNotFoundError):
                        (self.dir / f).unlink()
        data["snapshots"] = snaps[-self.max_snapshots :]
        data["next_seq"] = seq + 1
        self._save_index(data)
        return snap

    def snapshot_text(self, snap: Snapshot) -> str:
        return self.snapshot_state(snap)[0]

    def snapshot_state(self, snap: Snapshot) -> tuple[str, dict[str, str]]:
        """The config text and the managed profiles of a snapshot, checked against its hash."""
        text = (self.dir / snap.file).read_text(encoding="utf-8")
        profiles: dict[str, str] = {}
        if snap.profiles:
            try:
                profiles = json.loads((self.dir / snap.profiles).read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise HistoryError(self.dir / snap.profiles, f"unreadable: {err}") from err
        if state_digest(text, profiles) != snap.sha256:
            raise HistoryError(self.dir / snap.file, "snapshot does not match its hash")
        return text, profiles

    def find(self, version: str | None) -> Snapshot:
        """The newest snapshot of `version` (None: the newest snapshot)."""
        snaps = self.snapshots()
        for snap in reversed(snaps):
            if version is None or snap.version == version or snap.sha256.startswith(version):
                return snap
        known = ", ".join(s.version for s in snaps) or "none"
        raise HistoryError(self.dir, f"no snapshot of version {version!r} (kept: {known})")

    def note(self, what: str, version: str, digest: str, **more: Any) -> None:
        """Add a line to the log (applied, confirmed, reverted, rollback, rejected)."""
        data = self._index()
        entry = {"at": round(time.time(), 3), "what": what, "version": version, "sha256": digest}
        entry.update({k: v for k, v in more.items() if v is not None})
        data["log"] = [*data.get("log", []), entry][-MAX_LOG:]
        self._save_index(data)

    # -- the change waiting for its health check ---------------------------------------------------

    def pending(self) -> dict[str, Any] | None:
        path = self.dir / "pending.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            raise HistoryError(path, f"unreadable: {err}") from err
        return data if isinstance(data, dict) else None

    def set_pending(self, data: Mapping[str, Any]) -> None:
        self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        atomic_write(self.dir / "pending.json", json.dumps(data, sort_keys=True))

    def clear_pending(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.dir / "pending.json").unlink()

    # -- local rollback ----------------------------------------------------------------------------

    def rollback(
        self, version: str | None, by: str, check: Callable[[str, dict[str, str]], object] | None = None
    ) -> tuple[Snapshot, dict[str, str]]:
        """Put the snapshot of `version` (default: the newest) in place of the config; the config
        it replaces is snapshotted first. `check(text, profiles)` is called with the snapshot's
        state before anything is written (it raises to refuse it: a snapshot that no longer loads,
        e.g. after an update). Returns the snapshot used and what ran before."""
        snap = self.find(version)
        text, profiles = self.snapshot_state(snap)
        if check is not None:
            check(text, profiles)
        before_text, before_profiles = self.read_config(), self.read_profiles()
        before = self.current(before_text, before_profiles)
        self.snapshot(before_text, before["version"], before_profiles)
        self.write_state(text, profiles)
        self.set_current(snap.version, snap.sha256)
        self.clear_pending()
        self.note("rollback", snap.version, snap.sha256, by=by, replaced=before["version"])
        return snap, before

    def find_seq(self, seq: int) -> Snapshot:
        for snap in self.snapshots():
            if snap.seq == seq:
                return snap
        raise HistoryError(self.dir, f"no snapshot {seq}")
