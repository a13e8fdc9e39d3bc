"""Commissioning: write a first config, discover devices on its buses, edit the device list safely,
and build support bundles for technicians."""

from gateway.commissioning.assign import Proposal, identify_found, propose
from gateway.commissioning.busspec import BusSpecError, parse_bus_spec
from gateway.commissioning.configfile import (
    ConfigEditError,
    DeviceListEditor,
    ReloadOutcome,
    ReloadReport,
    ask_reload,
    dump_toml,
    write_atomically,
)
from gateway.commissioning.discovery import Found, discover
from gateway.commissioning.profiles import ProfileInfo, available_profiles

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
