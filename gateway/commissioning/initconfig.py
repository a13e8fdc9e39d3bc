"""The first config of a gateway, from an installer's answers (`citynerve init`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SYSTEM_CONFIG_DIR = Path("/etc/citynerve")
SYSTEM_STORE = "/var/lib/citynerve/outbox.db"
SYSTEM_SOCKET = "/run/citynerve/control.sock"

HEADER = """CityNerve gateway config, written by `citynerve init`.
Check it with `citynerve config check <this file>`; add devices with `citynerve devices add`.
Reference: docs/installer-guide.md"""


@dataclass(slots=True)
class InitAnswers:
    """Everything `citynerve init` asks for; the CLI fills it from flags or prompts."""

    gateway_id: str
    city: str
    district: str
    street: str
    name: str = ""
    upstream: list[str] = field(default_factory=list)
    username: str | None = None
    password_file: str | None = None
    buses: list[dict[str, Any]] = field(default_factory=list)
    profile_dirs: list[str] = field(default_factory=list)
    store_path: str | None = None
    socket: str | None = None


def default_paths(config_path: Path) -> tuple[str | None, str | None]:
    """Store and socket for a system install (/etc/citynerve/...); None: the loader's defaults
    beside the config file (a bench or a test folder)."""
    if config_path.absolute().parent == SYSTEM_CONFIG_DIR:
        return SYSTEM_STORE, SYSTEM_SOCKET
    return None, None


def initial_config(answers: InitAnswers) -> dict[str, Any]:
    """The config as a TOML-ready dict (key order is the order people read it in)."""
    data: dict[str, Any] = {}
    if answers.profile_dirs:
        data["profile_dirs"] = list(answers.profile_dirs)
    gateway: dict[str, Any] = {"id": answers.gateway_id}
    if answers.name:
        gateway["name"] = answers.name
    gateway["org"] = {"city": answers.city, "district": answers.district, "street": answers.street}
    data["gateway"] = gateway
    if answers.store_path:
        data["store"] = {"path": answers.store_path}
    if answers.socket:
        data["control"] = {"socket": answers.socket}
    if answers.upstream:
        upstream: dict[str, Any] = {"brokers": list(answers.upstream)}
        if answers.username:
            upstream["username"] = answers.username
        if answers.password_file:
            upstream["password_file"] = answers.password_file
        data["upstream"] = upstream
    if answers.buses:
        data["buses"] = list(answers.buses)
    return data
