"""Every config mistake, for every protocol, ends `citynerve config check` with exit 2 and lines that
name the entry by index and id plus the key path: never a traceback.

The broken configs are generated: one valid base per protocol (a bus and a device on a shipped
profile), then one mistake at a time (wrong types, unknown and missing keys, NaN and infinity,
bad ids, out-of-range values) in the device, its point overrides and its bus.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.hil.faults.config_cases import BASES, INF, MISTAKES, NAN, base, point_override

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, cfg: dict[str, Any]) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(tomli_w.dumps(cfg))
    return path


@pytest.mark.parametrize("protocol", sorted(BASES))
def test_the_base_config_of_every_protocol_is_valid(tmp_path: Path, protocol: str) -> None:
    result = CliRunner().invoke(main, ["config", "check", str(_write(tmp_path, base(protocol)))])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("mistake", sorted(MISTAKES))
@pytest.mark.parametrize("protocol", sorted(BASES))
def test_every_mistake_is_exit_2_with_the_entry_id_and_key_path(
    tmp_path: Path, protocol: str, mistake: str
) -> None:
    cfg = base(protocol)
    mutate, where = MISTAKES[mistake]
    mutate(cfg, protocol)
    path = _write(tmp_path, cfg)
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    expected = f"{path}: {where.format(point=BASES[protocol][2])}"
    assert expected in result.output, result.output
    # One mistake is reported for the broken entry only: the good device is not blamed for it.
    if mistake.startswith("bus_"):
        assert "devices[0] (id 'dev-0').bus: bus 'bus-1' has errors (see buses[0])" in result.output
    else:
        assert "devices[0]" not in result.output


def test_the_real_cli_process_gives_the_same_lines(tmp_path: Path) -> None:
    """The DL/T 645 point mistake that used to end in a traceback, through a real process."""
    cfg = base("dlt645")
    point_override(cfg, "dlt645", di="ZZ", scale=NAN)
    path = _write(tmp_path, cfg)
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert proc.returncode == 2, proc.stderr
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    assert "devices[1] (id 'dev-7').points.voltage.di: " in out
    assert "devices[1] (id 'dev-7').points.voltage.scale: expected: input should be a finite number" in out


def test_json_output_keeps_the_plain_path_and_names_the_id(tmp_path: Path) -> None:
    cfg = base("cjt188")
    point_override(cfg, "cjt188", deadband=INF)
    result = CliRunner().invoke(main, ["config", "check", "--json", str(_write(tmp_path, cfg))])
    assert result.exit_code == 2
    assert '"path": "devices[1].points.flow_total.deadband"' in result.output
    assert '"id": "dev-7"' in result.output


def test_a_driver_validator_that_breaks_is_an_issue_not_a_traceback() -> None:
    """The DL/T 645 device validator walked `points` when they were None and raised AttributeError:
    whatever a driver's validator raises on odd input becomes an issue at the entry's key path."""
    from pydantic import BaseModel, model_validator

    from citynerve.gateway.config.loader import _Loader

    class Fragile(BaseModel):
        points: Any = None

        @model_validator(mode="after")
        def _walk(self) -> Fragile:
            for _ in self.points.items():
                pass
            return self

    loader = _Loader(Path("gw.toml"))
    assert loader.validate(Fragile, {}, "devices[3]") is None
    [issue] = loader.issues
    assert issue.path == "devices[3]"
    assert issue.message.startswith("cannot be checked (AttributeError: ")
