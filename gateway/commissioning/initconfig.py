"""The first config of a gateway, from an installer's answers (`citynerve init`)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from citynerve.gateway.rules.packs import RulePack

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


@dataclass(frozen=True, slots=True)
class PackChoice:
    """A shipped rule pack that fits devices `init` added: on, or written commented out until the
    installer has set what `per_household` says."""

    pack: str
    profiles: tuple[str, ...]  # the added devices' profiles of the pack's classes
    devices: tuple[str, ...]  # the added devices of those profiles
    per_household: str = ""  # non-empty: written commented out, with this line

    @property
    def on(self) -> bool:
        return not self.per_household


def fitting_packs(devices: Sequence[tuple[str, str, str]], packs: Sequence[RulePack]) -> list[PackChoice]:
    """The packs written for the classes of `devices` (id, profile, device_class), in pack order."""
    out: list[PackChoice] = []
    for pack in packs:
        mine = [(d, p) for d, p, cls in devices if cls and cls in pack.classes]
        if mine:
            profiles = tuple(dict.fromkeys(p for _, p in mine))
            out.append(PackChoice(pack.id, profiles, tuple(d for d, _ in mine), pack.per_household))
    return out


def rules_text(choices: Sequence[PackChoice]) -> str:
    """The `[rules]` table for the chosen packs, as TOML text to append to the config: packs that
    need nothing per household are on, selecting the devices' profiles (a device of the same
    profile added later is covered too); the others are commented out with what to set."""
    if not choices:
        return ""
    lines = [
        "",
        "# Alarms: the shipped rule packs for the device classes `init` found (docs/rules.md).",
        "# Check with `citynerve diag rules check <this file>`; without [rules] no alarm is raised.",
        "[rules]",
    ]
    for c in choices:
        lines.append("")
        if c.on:
            lines += [
                "[[rules.packs]]",
                f"name = {_quoted(c.pack)}",
                f"select = {{ profiles = [{', '.join(_quoted(p) for p in c.profiles)}] }}",
            ]
        else:
            why = f"{c.pack}: off until set per household: {c.per_household}. Then remove the leading '# ' "
            why += "of the lines below (select only the devices it is for):"
            lines += [f"# {line}" for line in textwrap.wrap(why, 98)]
            lines += [
                "# [[rules.packs]]",
                f"# name = {_quoted(c.pack)}",
                f"# select = {{ devices = [{', '.join(_quoted(d) for d in c.devices)}] }}",
            ]
    return "\n".join(lines) + "\n"


def _quoted(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a TOML basic string: ids and profile ids are plain names
