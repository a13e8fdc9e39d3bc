"""The `[web]` table: the local status page and /metrics. Off by default, loopback-only by default."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

from citynerve.gateway.api import STRICT, FiniteFloat, SecretPath, read_secret_text

_STRICT = STRICT


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and "localhost": addresses nobody on the LAN can reach."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class WebConfig(BaseModel):
    """Where the status page listens and who may see it.

    Exposed beyond loopback (e.g. `bind = "0.0.0.0"` for a technician's phone on the meter-room
    Wi-Fi) it needs `password_file` (HTTP Basic, user `username`); the page shows device addresses
    and alarms, and the metrics the building's state.
    """

    model_config = _STRICT

    enabled: bool = False
    bind: str = Field(default="127.0.0.1", min_length=1, description="address to listen on")
    port: int = Field(default=8080, ge=0, le=65535, description="TCP port (0: any free port)")
    username: str = Field(
        default="citynerve", min_length=1, pattern=r"^[^:]+$", description="user name of the page's login"
    )
    password_file: SecretPath | None = Field(
        default=None,
        description="file holding the password; required when bind is not loopback; "
        "a changed file applies within a second, without a restart",
    )
    refresh_s: FiniteFloat = Field(default=2.0, ge=0.5, le=60, description="how often the page refreshes")

    @model_validator(mode="after")
    def _password_when_exposed(self) -> WebConfig:
        if not is_loopback(self.bind) and self.password_file is None:
            raise ValueError(
                f"bind {self.bind!r} is reachable from the network: set password_file (or bind to 127.0.0.1)"
            )
        return self

    @property
    def auth_required(self) -> bool:
        return self.password_file is not None


def read_password_file(path: Path) -> bytes:
    """The status page's password: the file's text, stripped. Raises ValueError naming the file when
    it cannot be read or is empty (`config check` refuses it; the page would not start)."""
    try:
        secret = read_secret_text(path)  # a BOM would be part of it: 401 for ever
    except (OSError, ValueError) as err:
        raise ValueError(f"cannot read password_file {path}: {err}") from err
    if not secret:
        raise ValueError(f"password_file {path} is empty: write the status page's password in it")
    return secret.encode()
