"""Remote configuration with commit-confirm: config documents from the platform, the config
history beside the config file, and the health check that confirms or reverts (docs/fleet.md)."""

from citynerve.gateway.remoteconfig.history import ConfigHistory, HistoryError
from citynerve.gateway.remoteconfig.manager import RemoteConfig, change_waiting, prepare_start

__all__ = ["ConfigHistory", "HistoryError", "RemoteConfig", "change_waiting", "prepare_start"]
