"""Secret files named in the config (keys, password files) and settings that weaken security.

A secret file that group or others may read is refused, unless the config (or the command line)
says `allow_insecure_secret_files`: then it is a warning. Settings that are allowed but weaken
security (`tls.verify = false`, a password sent over plain `mqtt://`) are warnings: `config check`
prints them and `citynerve run` logs them at start.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr

from citynerve.gateway.api import ConfigIssue, SecretFile

INSECURE_BITS = 0o077
"""Any permission for group or others: a secret file is the gateway user's alone (chmod 600)."""


def secret_paths(model: BaseModel, prefix: str) -> Iterator[tuple[str, Path]]:
    """(key path, file) of every field marked SecretFile in `model`, nested models included."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        where = f"{prefix}.{name}" if prefix else name
        if isinstance(value, Path) and _marked(info.metadata, info.annotation):
            yield where, value
        elif isinstance(value, BaseModel):
            yield from secret_paths(value, where)


def _marked(metadata: list[Any], annotation: Any) -> bool:
    """True when SecretFile is in the field's metadata or in an Annotated member of its type
    (`SecretPath | None` keeps the marker inside the union)."""
    if any(isinstance(m, SecretFile) for m in metadata):
        return True
    return any(
        any(isinstance(m, SecretFile) for m in getattr(arg, "__metadata__", ()))
        for arg in get_args(annotation)
    )


def check_secret_file(path: Path) -> str | None:
    """Why `path` is not safe to hold a secret, or None. A missing file is not judged here (see
    `missing_secret_file`)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as err:
        return f"cannot check {path}: {err.strerror or err}"
    if not stat.S_ISREG(st.st_mode):
        return f"{path} is not a regular file"
    bits = stat.S_IMODE(st.st_mode)
    if bits & INSECURE_BITS:
        who = [w for w, mask in (("group", 0o070), ("others", 0o007)) if bits & mask]
        return (
            f"secret file {path} is open to {' and '.join(who)} (mode {bits:04o}): "
            f"`chmod 600 {path}` (owned by the gateway's user), or set "
            "[security] allow_insecure_secret_files = true to accept it with a warning"
        )
    return None


def missing_secret_file(path: Path) -> str | None:
    """Why the gateway cannot read the secret at `path` (it does not exist, or its owner or root
    cannot read it), or None. A file of another user that this user cannot read is not judged: the
    technician checking the config is often not the service's user."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return (
            f"secret file {path} does not exist: create it, the gateway's user's alone "
            f"(`install -o citynerve -g citynerve -m 600 FILE {path}`), or fix the path"
        )
    except OSError:
        return None  # check_secret_file says why
    mine = os.geteuid() in (0, st.st_uid)
    if mine and stat.S_ISREG(st.st_mode) and not os.access(path, os.R_OK):
        return f"secret file {path} cannot be read (mode {stat.S_IMODE(st.st_mode):04o}): `chmod 600 {path}`"
    return None


def secret_file_problems(
    sections: Iterable[tuple[str, BaseModel | None]], *, allow_insecure: bool, must_exist: bool
) -> Iterator[tuple[str, str, bool]]:
    """(key path, problem, is an error) for each secret file of `sections` ((key prefix, model)).

    A file that does not exist or cannot be read is an error when `must_exist` (`config check`: the
    installer must learn it on site), else a warning (`run` starts without it: meters, rules and
    the outbox go on, and the warning is logged). An unsafe mode is an error unless `allow_insecure`.
    """
    for prefix, model in sections:
        if model is None:
            continue
        for where, path in secret_paths(model, prefix):
            if (missing := missing_secret_file(path)) is not None:
                yield where, missing, must_exist
            elif (problem := check_secret_file(path)) is not None:
                yield where, problem, not allow_insecure


def inline_secrets(model: BaseModel, prefix: str) -> Iterator[str]:
    """Key paths of secrets written into the config itself (SecretStr fields: a BTHome `key`)."""
    for name in type(model).model_fields:
        value = getattr(model, name)
        where = f"{prefix}.{name}" if prefix else name
        if isinstance(value, SecretStr):
            yield where
        elif isinstance(value, BaseModel):
            yield from inline_secrets(value, where)


def config_file_warning(path: Path, holders: list[str]) -> ConfigIssue | None:
    """A config that holds secrets itself should not be readable by others (the service reads it
    through its group, so group-readable is the installer's layout)."""
    try:
        bits = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None
    if not holders or not bits & 0o007:
        return None
    return ConfigIssue(
        str(path),
        holders[0],
        f"warning: this config holds secrets ({', '.join(holders[:3])}{', ...' if len(holders) > 3 else ''}) "
        f"and others can read it (mode {bits:04o}): `chmod o= {path}`, or move them to key files",
    )


def weak_settings(upstream: Any, file: str, where: str = "upstream") -> list[ConfigIssue]:
    """Warnings for uplink settings that are allowed but weaken security or delivery (`where`: the
    destination's key path, `upstream` or `upstream[i]`)."""
    out: list[ConfigIssue] = []
    if upstream is None:
        return out
    if upstream.protocol == "3.1.1" and not upstream.e2e_ack:
        # docs/uplink.md, "What a broker refuses"
        drop = "warning: under MQTT 3.1.1 a broker may acknowledge a publish it drops (Mosquitto 2.0 does"
        note = (
            f"{drop} for a topic its ACL denies, then closes the connection: the gateway keeps those "
            "rows; a broker that stays connected loses them unseen, and Sparkplug B has no platform "
            'acks): check the broker\'s ACL, or use protocol = "5"'
            if upstream.encoding == "sparkplug-b"
            else f"{drop} for a topic its ACL denies, then closes the connection: the gateway keeps those "
            "rows; a broker that stays connected loses them unseen): set e2e_ack = true so rows leave "
            "only on the platform's ack"
        )
        out.append(ConfigIssue(file, f"{where}.protocol", note))
    if not upstream.tls.verify:
        out.append(
            ConfigIssue(
                file,
                f"{where}.tls.verify",
                "warning: TLS server verification is off: anyone on the path can pose as the broker",
            )
        )
    has_password = upstream.password_file is not None or upstream.password_env is not None
    plain = [u for u in upstream.brokers if u.lower().startswith("mqtt://")]
    if has_password and plain:
        out.append(
            ConfigIssue(
                file,
                f"{where}.brokers",
                f"warning: the broker password is sent in clear text to {', '.join(plain)}: use mqtts://",
            )
        )
    return out
