"""One section of a config read alone (gateway/config/sections.py): paths as `load_config` resolves
them, errors as it names them, other sections not judged."""

from __future__ import annotations

from pathlib import Path

import pytest

from citynerve.gateway.api import ConfigError
from citynerve.gateway.config import load_config
from citynerve.gateway.config.sections import control_socket, store_path
from tests.config.test_config_errors import HEAD


def test_paths_are_those_load_config_resolves(tmp_path: Path) -> None:
    path = tmp_path / "etc" / "gw.toml"
    path.parent.mkdir()
    path.write_text(HEAD + '\n[control]\nsocket = "run/gw.sock"\n[store]\npath = "/var/lib/x/gw.db"\n')
    cfg = load_config(path)
    assert control_socket(path) == Path(cfg.control.socket) == tmp_path / "etc" / "run" / "gw.sock"
    assert store_path(path) == Path(cfg.store.path) == Path("/var/lib/x/gw.db")
    path.write_text(HEAD)  # the defaults, next to the file
    assert control_socket(path) == Path(load_config(path).control.socket)
    assert store_path(path) == Path(load_config(path).store.path)


def test_only_the_section_is_judged(tmp_path: Path) -> None:
    path = tmp_path / "gw.toml"
    path.write_text(HEAD + '\n[control]\nsocket = "gw.sock"\n[[devices]]\nid = "x"\nbus = "nowhere"\n')
    with pytest.raises(ConfigError):
        load_config(path)
    assert control_socket(path) == tmp_path / "gw.sock"
    path.write_text(HEAD + "\n[control]\nsocket = 5\n")
    with pytest.raises(ConfigError) as err:
        control_socket(path)
    assert [(i.file, i.path) for i in err.value.issues] == [(str(path), "control.socket")]
    path.write_text("[control\n")
    with pytest.raises(ConfigError) as err:
        store_path(path)
    assert "not valid TOML" in err.value.issues[0].message
