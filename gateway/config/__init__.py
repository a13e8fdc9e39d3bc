"""Gateway configuration: one TOML file per gateway plus reusable device profiles."""

from gateway.config.loader import load_config, read_toml
from gateway.config.model import ControlConfig, GatewayConfig, Identity, LogConfig, OrgCodes, Profile

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
