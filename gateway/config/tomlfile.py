"""The one bounded TOML reader of every file the CLI and the gateway parse: the config, rule packs,
profiles. Only regular files are read (a FIFO, device or socket is refused, never waited on); size
is checked before parsing and nesting cannot escape as a RecursionError: every refusal is a
ConfigError naming the file."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path
from typing import Any

from citynerve.gateway.api import ConfigError, ConfigIssue, decode_text

MAX_TOML_BYTES = 16 << 20
"""Largest TOML file read: a generated config of 1,000 devices is ~200 KB, so this leaves room for
tens of thousands; a bigger file (or a device or pipe that never ends) is refused, not read whole."""


def read_toml(path: Path, *, max_bytes: int = MAX_TOML_BYTES) -> dict[str, Any]:
    """Parse a TOML file of at most `max_bytes`; a missing, unreadable, oversized, too deeply
    nested or malformed file is a ConfigError naming it."""
    return read_toml_text(path, max_bytes=max_bytes)[1]


def read_toml_text(path: Path, *, max_bytes: int = MAX_TOML_BYTES) -> tuple[str, dict[str, Any]]:
    """The text of a TOML file of at most `max_bytes` and what it parses to (an editor keeps the
    text: comments and layout); refused as `read_toml` refuses, with a ConfigError naming the file."""

    def refused(message: str) -> ConfigError:
        return ConfigError([ConfigIssue(str(path), "", message)])

    try:
        # O_NONBLOCK: opening a FIFO (a stale `mkfifo x.toml` in a profile folder) waits for a
        # writer for ever; opened this way it returns at once and is refused below as not a file.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(f.fileno())
            if stat.S_ISDIR(st.st_mode):
                raise IsADirectoryError
            if not stat.S_ISREG(st.st_mode):
                raise refused("not a regular file (a pipe, device or socket), expected a TOML file")
            size = st.st_size
            if size > max_bytes:
                raise refused(f"{size} bytes, larger than {max_bytes} ({max_bytes >> 20} MiB)")
            data = f.read(max_bytes + 1)  # bounded even if the file grows while it is read
        if len(data) > max_bytes:
            raise refused(f"larger than {max_bytes} bytes ({max_bytes >> 20} MiB)")
        text = decode_text(data)  # a BOM (Notepad) dropped: TOML would refuse line 1
        return text, tomllib.loads(text)
    except FileNotFoundError:
        raise refused("no such file") from None
    except IsADirectoryError:
        raise refused("is a folder, expected a TOML file") from None
    except PermissionError:
        raise refused("permission denied") from None
    except UnicodeDecodeError as err:
        raise refused(str(err)) from None  # a NotUtf8Error: the line, the column, what to do
    except tomllib.TOMLDecodeError as err:
        raise refused(f"not valid TOML: {err}") from None
    except RecursionError:  # arrays or inline tables nested thousands deep: the parser recurses
        raise refused("not valid TOML: nested too deeply") from None
    except OSError as err:
        raise refused(f"cannot read: {err.strerror or err}") from None


__all__ = ["MAX_TOML_BYTES", "read_toml", "read_toml_text"]
