"""One section of a gateway config, read without validating the rest.

`citynerve status` and the operator commands only need the control socket's path; validating every
bus, device and profile of a 1,000-device file (and importing their drivers) to find it is most of
their start on a slow box. The section is checked with its own model, its relative paths resolved
against the file's folder exactly as `load_config` does. A file that is not valid TOML, or a section
that is not valid, is a ConfigError naming the file and key, as from `load_config`; problems in other
sections are left to `config check` and to the gateway that reads the file.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from citynerve.gateway.api import ConfigError
from citynerve.gateway.config.errors import issues_from
from citynerve.gateway.config.loader import read_toml
from citynerve.gateway.config.model import ControlConfig


def control_socket(path: Path) -> Path:
    """The control socket the gateway started with `path` listens on."""
    raw = read_toml(path).get("control", {})
    try:
        control = ControlConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(issues_from(err, str(path), "control", ControlConfig)) from None
    socket = Path(control.socket)
    return socket if socket.is_absolute() else path.resolve().parent / socket
