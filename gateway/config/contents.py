"""What is in the key, certificate and password files the config names, read as `run` reads them.

`config check` looked at these files' existence and mode only, and said "valid" for a BTHome key of
31 hex digits, a CA file that is not PEM or an empty password file; `run` refused them later, one
node, the uplink or the status page at a time, far from the technician who could fix them. Each
file is read here with the reader `run` uses. A problem names the key and the file, never what is
in the file.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from citynerve.gateway.api import ConfigError, DeviceConfig

PEM_CERTS = "expected PEM certificates ('-----BEGIN CERTIFICATE-----' blocks)"


def content_problems(sections: Iterable[tuple[str, BaseModel | None]]) -> Iterator[tuple[str, str]]:
    """(key path, problem) for each file of `sections` ((key prefix, model)) whose contents `run`
    would refuse. Files that `run` does not read (a disabled uplink or status page) are not read."""
    from citynerve.gateway.uplink.config import UpstreamConfig
    from citynerve.gateway.web.config import WebConfig

    for prefix, model in sections:
        if isinstance(model, UpstreamConfig) and model.enabled:
            yield from _upstream(prefix, model)
        elif isinstance(model, WebConfig) and model.enabled and model.password_file is not None:
            yield from _web(prefix, model.password_file)
        elif isinstance(model, DeviceConfig):
            yield from _issues(prefix, "", model.read_files)


def _issues(prefix: str, strip: str, read: Callable[[], object]) -> Iterator[tuple[str, str]]:
    """Run `read`; each issue of the ConfigError it raises, with its key path under `prefix` (the
    readers name their own key: `upstream.password_file`, `devices[mh-1].key_file`)."""
    try:
        read()
    except ConfigError as err:
        for issue in err.issues:
            tail = issue.path.removeprefix(strip).partition(".")[2]
            where = f"{prefix}.{tail}" if tail else prefix
            named = issue.file and issue.file not in issue.message and issue.file != "<environment>"
            yield where, f"{issue.file}: {issue.message}" if named else issue.message


def _upstream(prefix: str, up: Any) -> Iterator[tuple[str, str]]:
    if up.password_file is not None:
        yield from _issues(prefix, "upstream", up.password)
    if any(b.tls for b in up.broker_urls()):
        yield from _tls(prefix, up.tls)
    commands = up.commands
    if (commands.enabled or up.e2e_ack) and commands.has_key:
        from citynerve.gateway.uplink.keys import load_key_ring

        yield from _issues(prefix, "upstream", lambda: load_key_ring(commands))


def _tls(prefix: str, tls: Any) -> Iterator[tuple[str, str]]:
    """The CA, then the client certificate and its key, each loaded as the uplink loads them."""
    from citynerve.gateway.uplink._connection import tls_context

    if tls.verify and tls.ca_file is not None:
        try:
            tls_context(tls.model_copy(update={"cert_file": None, "key_file": None}))
        except (OSError, ValueError) as err:
            yield f"{prefix}.tls.ca_file", _file_words(tls.ca_file, err, PEM_CERTS)
    cert, key = tls.cert_file, tls.key_file
    if cert is None or key is None:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=str(cert))
    except (OSError, ValueError) as err:
        yield f"{prefix}.tls.cert_file", _file_words(cert, err, f"{PEM_CERTS}, the client's first")
        return
    try:
        if b"ENCRYPTED" in key.read_bytes()[:4096]:  # OpenSSL would ask for the passphrase on the tty
            yield (
                f"{prefix}.tls.key_file",
                f"{key} is encrypted with a passphrase: the gateway needs it unencrypted",
            )
            return
        tls_context(tls.model_copy(update={"verify": False}))
    except (OSError, ValueError) as err:
        if isinstance(err, ssl.SSLError) and err.reason == "KEY_VALUES_MISMATCH":
            yield f"{prefix}.tls.key_file", f"{key} is not the private key of the certificate {cert}"
        else:
            yield f"{prefix}.tls.key_file", _file_words(key, err, "expected a PEM private key")


def _file_words(path: Path, err: Exception, expected: str) -> str:
    if isinstance(err, ssl.SSLError) and err.reason == "NO_CERTIFICATE_OR_CRL_FOUND":
        return f"{path} holds no PEM certificate: {expected}"
    if isinstance(err, ssl.SSLError):  # "PEM lib": no PEM block of the kind, or a broken one
        return f"{path} is not PEM or is damaged ({err.reason or err.library or 'OpenSSL'}): {expected}"
    if isinstance(err, FileNotFoundError):
        return f"{path} does not exist: install the file there, or fix the path"
    if isinstance(err, OSError):
        return f"cannot read {path}: {err.strerror or err}"
    return f"{path}: {err}"


def _web(prefix: str, path: Path) -> Iterator[tuple[str, str]]:
    from citynerve.gateway.web.config import read_password_file

    try:
        read_password_file(path)
    except ValueError as err:
        yield f"{prefix}.password_file", str(err)
