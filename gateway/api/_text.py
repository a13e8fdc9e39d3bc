"""The one way text a person wrote is read: configs, profiles, rule packs, password and key files.

Windows Notepad starts a UTF-8 file with a byte order mark (U+FEFF): it is dropped, never parsed
as TOML nor kept as part of a password. A file in another encoding (GBK/GB18030 is what an editor
on a Chinese Windows writes) is refused with the line and byte column of its first bad byte and
what to do: save it as UTF-8.
"""

from __future__ import annotations

from pathlib import Path

from citynerve.gateway.api._config import MAX_SECRET_FILE_BYTES, read_secret_file

_BOMS_UTF16 = (b"\xff\xfe", b"\xfe\xff")


class NotUtf8Error(UnicodeDecodeError):
    """Text that is not UTF-8; its message says where and what to do. A UnicodeDecodeError (so a
    ValueError) for the callers that already catch those."""

    def __init__(self, data: bytes, err: UnicodeDecodeError) -> None:
        at = err.start + len(data) - len(err.object)  # utf-8-sig counts from after a BOM
        super().__init__("utf-8", data, at, at + err.end - err.start, err.reason)
        line = data.count(b"\n", 0, at) + 1
        column = at - (data.rfind(b"\n", 0, at) + 1) + 1
        self.line, self.column = line, column
        self.message = (
            f"not UTF-8 text: line {line}, byte {column} (0x{data[at]:02x}); "
            f"save the file as UTF-8{_guess(data)}"
        )

    def __str__(self) -> str:
        return self.message


def _guess(data: bytes) -> str:
    """A hint at what the file is, when it is easy to tell."""
    if data.startswith(_BOMS_UTF16):
        return " (it is UTF-16, what Notepad calls 'Unicode')"
    try:
        data.decode("gb18030")
    except UnicodeDecodeError:
        return ""
    if any(b >= 0x80 for b in data):
        return " (it looks like GBK/GB18030, what an editor on a Chinese Windows writes)"
    return ""


def decode_text(data: bytes) -> str:
    """`data` as UTF-8 text, a leading byte order mark dropped. Raises NotUtf8Error."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise NotUtf8Error(data, err) from None


def read_text(path: Path) -> str:
    """A text file a person edits (a config, a profile): UTF-8, a leading BOM dropped.
    Raises OSError, or NotUtf8Error naming the line and column of the first bad byte."""
    return decode_text(path.read_bytes())


def read_secret_text(path: Path, max_bytes: int = MAX_SECRET_FILE_BYTES) -> str:
    """A password or key written in a text file: bounded as `read_secret_file`, UTF-8, without a
    leading BOM nor the whitespace around it (the editor's last newline). Raises OSError, and
    ValueError (NotUtf8Error among them) for a file too long or not UTF-8."""
    return decode_text(read_secret_file(path, max_bytes)).strip()
