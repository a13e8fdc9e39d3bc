"""Replace a file atomically without changing who may read it.

A temporary file beside the target, fsync, the owner and group of the file it replaces, rename,
fsync of the folder: a reader sees the old file or the new one, never half of one, and a service
user that could read `root:citynerve 0640` before `sudo citynerve devices add` can read it after.
"""

from __future__ import annotations

import contextlib
import enum
import os
import shutil
import tempfile
import time
from pathlib import Path

__all__ = ["NewFileOwner", "backup_copy", "fsync_dir", "replace_file"]


class NewFileOwner(enum.Enum):
    """Who owns a file that did not exist before (a replaced file always keeps its owner)."""

    WRITER = "writer"  # the writing process (as open(2) makes it)
    FOLDER_GROUP = "folder_group"  # the writer, with the folder's group (/etc/citynerve: citynerve)
    FOLDER = "folder"  # the folder's owner and group (a folder that is the service user's alone)


def fsync_dir(folder: Path) -> None:
    """Make a rename in `folder` durable (some filesystems refuse fsync on folders: then it is
    still atomic, only perhaps not yet on disk)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def backup_copy(path: Path) -> Path:
    """Copy `path` to `<name>.<UTC time>.bak` beside it (`-1`, `-2` ... when that name is taken:
    an earlier backup is never overwritten, even by a second process in the same second)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    n = 0
    while True:
        backup = path.with_name(f"{path.name}.{stamp}{f'-{n}' if n else ''}.bak")
        try:
            out = open(backup, "xb")  # noqa: SIM115 - closed below; exclusive create is the point
        except FileExistsError:
            n += 1
            continue
        break
    try:
        with out, open(path, "rb") as src:
            shutil.copyfileobj(src, out)
            out.flush()
            os.fsync(out.fileno())
        shutil.copystat(path, backup)
    except BaseException:
        with contextlib.suppress(OSError):
            backup.unlink()
        raise
    return backup


def _give_owner(fd: int, uid: int, gid: int) -> None:
    """Give the open file `uid`/`gid` as far as this process may: root can give both; a user may
    give a group it is in (the service user keeps `citynerve` on a file root owned)."""
    st = os.fstat(fd)
    if (st.st_uid, st.st_gid) == (uid, gid) or (uid == -1 and st.st_gid == gid):
        return
    try:
        os.fchown(fd, uid, gid)
        return
    except PermissionError:
        pass
    if st.st_gid != gid:
        with contextlib.suppress(PermissionError):
            os.fchown(fd, -1, gid)


def replace_file(
    path: Path,
    text: str,
    *,
    mode: int,
    backup: bool = False,
    new_owner: NewFileOwner = NewFileOwner.FOLDER_GROUP,
) -> Path | None:
    """Replace (or create) `path` with `text`; returns the backup's path when `backup` and there was
    a file. The file gets `mode`; a replaced file keeps its owner and group, a new one gets
    `new_owner`. Raises OSError (nothing changed: the temporary file is removed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        old = path.stat()
    except FileNotFoundError:
        old = None
    backup_path = backup_copy(path) if backup and old is not None else None
    if old is not None:
        uid, gid = old.st_uid, old.st_gid
    else:
        folder = path.parent.stat()
        uid = folder.st_uid if new_owner is NewFileOwner.FOLDER else -1
        gid = -1 if new_owner is NewFileOwner.WRITER else folder.st_gid
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            if gid != -1:
                _give_owner(f.fileno(), uid, gid)
            os.fchmod(f.fileno(), mode)  # after the chown, which may clear set-id bits
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_dir(path.parent)
    return backup_path
