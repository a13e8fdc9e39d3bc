"""Commissioning: write a first config, discover devices on its buses, edit the device list safely,
and build support bundles for technicians."""

from citynerve.gateway.commissioning.assign import Proposal, identify_found, propose
from citynerve.gateway.commissioning.busspec import BusSpecError, parse_bus_spec
from citynerve.gateway.commissioning.configfile import (
    ConfigEditError,
    DeviceListEditor,
    ReloadOutcome,
    ReloadReport,
    ask_reload,
    dump_toml,
    write_atomically,
)
from citynerve.gateway.commissioning.discovery import Found, discover
from citynerve.gateway.commissioning.profiles import ProfileInfo, available_profiles

__all__ = [
    "BusSpecError",
    "ConfigEditError",
    "DeviceListEditor",
    "Found",
    "ProfileInfo",
    "Proposal",
    "ReloadOutcome",
    "ReloadReport",
    "ask_reload",
    "available_profiles",
    "discover",
    "dump_toml",
    "identify_found",
    "parse_bus_spec",
    "propose",
    "write_atomically",
]
