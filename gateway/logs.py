"""Logging: readable lines on a terminal, JSON lines otherwise (journald, files); secrets redacted."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
from typing import Any, TextIO

_SECRETS: set[str] = set()
_REDACTED = "***"

SECRET_KEY = re.compile(r"pass(word|wd|phrase)?|secret|key|token|credential|psk|auth", re.IGNORECASE)
"""Config keys whose values are secrets (`password_file`, `hmac_key_file`, `bindkey`, `api_token`)."""


def is_secret_key(name: str) -> bool:
    """True for a config key that names a secret: its value is never shown (logs, errors, bundles)."""
    return bool(SECRET_KEY.search(name))


def register_secret(value: str) -> None:
    """Never let `value` (a password, key, token) reach a log line."""
    if value and len(value) >= 4:
        _SECRETS.add(value)


_PLAIN = re.compile(r"[A-Za-z0-9_.:@+/-]{1,128}")
FIELD_MAX = 200


def field(value: object) -> str:
    """A value from outside (an id, a point, a value a device or a client sent) ready for a log line:
    plain ids as they are, anything else repr-escaped and cut to FIELD_MAX characters, so a newline
    or a control character in it can never start a forged log line or move a terminal's cursor."""
    if isinstance(value, str) and _PLAIN.fullmatch(value):
        return value
    text = repr(value)
    return text if len(text) <= FIELD_MAX else text[: FIELD_MAX - 3] + "..."


_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")


def _escape_controls(text: str) -> str:
    # The backstop for every message of a text log: one record is one line, whatever it quotes.
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], text)


URL_SECRET = "<redacted>"

_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*:)\S+@")
"""`scheme://user:password@`: to the last @ of the run (a password may hold @ or /), the user kept."""
_URL_TOKEN = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://)[^/@:\s]+@")
"""`scheme://token@` (a user part alone is often a token): all of it."""


def redact_urls(text: str) -> str:
    """`text` with the secret part of every URL in it replaced (`mqtt://gw:<redacted>@host`): a
    message or a log line that quotes a URL someone wrote never carries its password."""
    if "@" not in text:
        return text
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{URL_SECRET}@", text)
    return _URL_TOKEN.sub(lambda m: f"{m['head']}{URL_SECRET}@", text)


def redact(text: str) -> str:
    """`text` without URL passwords nor any value registered with `register_secret`."""
    text = redact_urls(text)
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, _REDACTED)
    return text


class _RedactingFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        # The message part only: a traceback appended after it keeps its lines.
        record.message = _escape_controls(record.message)
        return redact(super().formatMessage(record))

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC ISO 8601), level, logger, msg, `destination` on an uplink's
    lines (the `[[upstream]] id`), and exc when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        destination = getattr(record, "destination", None)  # set by the uplink's DestinationLog
        if isinstance(destination, str):
            out["destination"] = destination
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return redact(json.dumps(out, ensure_ascii=False))


def setup_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure the root logger once for the process."""
    stream = stream or sys.stderr
    if fmt == "auto":
        fmt = "text" if stream.isatty() else "json"
    handler = logging.StreamHandler(stream)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(
            _RedactingFormatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Third-party chatter stays at warning unless we debug. pymodbus logs every timeout at ERROR with
    # a dump of the last frames; the bus owner already reports failures once, so keep it quiet.
    for noisy, quiet in (
        ("pymodbus", logging.CRITICAL),
        ("bumble", logging.WARNING),
        ("bleak", logging.WARNING),
        ("aiomqtt", logging.WARNING),
        ("asyncio", logging.WARNING),
    ):
        logging.getLogger(noisy).setLevel(logging.DEBUG if level == "debug" else quiet)
