"""One section of a gateway config, read without validating the rest.

`citynerve status`, the operator commands and `diag store` need one path from the file (the control
socket, the outbox); validating every bus, device and profile of a 1,000-device file (and importing
their drivers) to find it is most of their start on a slow box. The section is checked with its own
model, its path resolved against the file's folder exactly as `load_config` does. A file that is
not valid TOML, or a section that is not valid, is a ConfigError naming the file and key, as from
`load_config`; problems in other sections are left to `config check` and to the gateway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from citynerve.gateway.api import ConfigError
from citynerve.gateway.config.errors import issues_from
from citynerve.gateway.config.loader import read_toml
from citynerve.gateway.config.model import ControlConfig

M = TypeVar("M", bound=BaseModel)


def _section(path: Path, name: str, model: type[M]) -> M:
    raw: Any = read_toml(path).get(name, {})
    try:
        return model.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(issues_from(err, str(path), name, model)) from None


def _resolve(path: Path, value: str) -> Path:
    p = Path(value)
    return p if p.is_absolute() else path.resolve().parent / p


def control_socket(path: Path) -> Path:
    """The control socket the gateway started with `path` listens on."""
    return _resolve(path, _section(path, "control", ControlConfig).socket)


def store_path(path: Path) -> Path:
    """The outbox file of the gateway configured by `path`."""
    from citynerve.gateway.store import StoreConfig

    return _resolve(path, _section(path, "store", StoreConfig).path)
