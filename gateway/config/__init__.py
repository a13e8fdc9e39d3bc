"""Gateway configuration: one TOML file per gateway plus reusable device profiles."""

from citynerve.gateway.config.loader import load_config, read_toml
from citynerve.gateway.config.model import (
    ControlConfig,
    GatewayConfig,
    Identity,
    LogConfig,
    OrgCodes,
    Profile,
)

__all__ = [
    "ControlConfig",
    "GatewayConfig",
    "Identity",
    "LogConfig",
    "OrgCodes",
    "Profile",
    "load_config",
    "read_toml",
]
