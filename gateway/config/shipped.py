"""Where the data that ships with CityNerve lives: device profiles and rule packs.

One place to ask, so every reader (the config loader, `init`, discovery, the rule packs) finds the
same folders wherever the config file is (/etc/citynerve/gateway.toml, a bench folder, a test).
"""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parents[2] / "config"


def shipped_profiles_dir() -> Path:
    """The folder of the device profiles that ship with CityNerve (searched last)."""
    return _ROOT / "profiles"


def shipped_rules_dir() -> Path:
    """The folder of the rule packs that ship with CityNerve."""
    return _ROOT / "rules"
