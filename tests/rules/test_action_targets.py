"""A local action that writes a read-only point is a config mistake, found by `citynerve config check`
(and refused by `citynerve run`), not at the first alarm: a valve that does not close, found during a
real leak. Both run as real processes on a config of the shipped smoke detector profile (its points
are read-only) and a riser valve controller (its `valve` writable, hil/faults/config.py).

Before, only an action's named device was checked, and only for having the point; an action with
`device = ""` (the device that raised) was not checked at all.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from citynerve.hil.faults.config import GATEWAY_HEAD, PROFILE

# Two riser controllers (one of them with its valve read-only: an older model's profile) and two
# smoke detectors; "leak" on the risers, "hot" on everything with `alarm_state`.
DEVICES = """
[[buses]]
id = "tcp-1"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = 1502

[[devices]]
id = "riser-1"
bus = "tcp-1"
profile = "valve-controller"
address = 1
tags = ["riser"]
location = { address_code = "310106013007" }

[[devices]]
id = "riser-old"
bus = "tcp-1"
profile = "valve-controller-ro"
address = 2
tags = ["riser"]
location = { address_code = "310106013007" }

[[devices]]
id = "sd-1"
bus = "tcp-1"
profile = "modbus-smoke-detector"
address = 3
location = { address_code = "310106013007" }

[[devices]]
id = "sd-2"
bus = "tcp-1"
profile = "modbus-smoke-detector"
address = 4
location = { address_code = "310106013007" }

[[rules.rules]]
id = "leak"
kind = "boolean"
point = "leak"
severity = "major"
select = { tags = ["riser"] }

[[rules.rules]]
id = "hot"
kind = "threshold"
point = "alarm_state"
above = 0.5
"""


def gateway(folder: Path, actions: str) -> Path:
    (folder / "profiles").mkdir(exist_ok=True)
    (folder / "profiles" / "valve-controller.toml").write_text(PROFILE)
    read_only = PROFILE.replace('id = "valve-controller"', 'id = "valve-controller-ro"')
    (folder / "profiles" / "valve-controller-ro.toml").write_text(read_only.replace("writable = true\n", ""))
    path = folder / "gw.toml"
    path.write_text(GATEWAY_HEAD + "\n[web]\nenabled = false\n" + DEVICES + textwrap.dedent(actions))
    return path


def citynerve(*args: str, cwd: Path) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        check=False,
    )
    return proc.returncode, proc.stdout + proc.stderr


def test_an_action_on_a_read_only_point_fails_config_check_and_run(tmp_path: Path) -> None:
    path = gateway(
        tmp_path,
        """
        [[rules.actions]]
        id = "reset_baud"
        on = ["hot"]
        device = "sd-2"
        point = "baud_code"
        value = 2
        """,
    )
    code, out = citynerve("config", "check", str(path), cwd=tmp_path)
    assert code == 2, out
    assert (
        f"{path}: rules.actions[0] (id 'reset_baud').point: point 'baud_code' of device 'sd-2' is not "
        "writable (its profile 'modbus-smoke-detector' does not say `writable = true`)"
    ) in out.replace("\n  ", " "), out
    code, out = citynerve("run", "-c", str(path), cwd=tmp_path)
    assert code == 2 and "is not writable" in out, out


def test_an_action_on_the_raising_device_is_checked_on_every_device_its_rules_apply_to(
    tmp_path: Path,
) -> None:
    actions = """
    [[rules.actions]]
    id = "close_valve"
    on = ["leak"]
    point = "valve"
    value = false

    [[rules.actions]]
    id = "silence"
    on = ["hot"]
    point = "alarm_state"
    value = 0
    """
    code, out = citynerve("config", "check", str(gateway(tmp_path, actions)), cwd=tmp_path)
    assert code == 2, out
    lines = [line.strip() for line in out.replace("\n    ", " ").splitlines() if "rules.actions" in line]
    assert len(lines) == 2, out
    assert "(id 'close_valve').point: point 'valve' is not writable on riser-old " in lines[0]
    assert 'device = "": the device that raised; rules leak apply to them' in lines[0]
    assert "point 'alarm_state' is not writable on sd-1, sd-2 (" in lines[1]
    # The old controller replaced: the leak's valve action is fine (the detectors have no valve).
    path = gateway(tmp_path, actions.split('[[rules.actions]]\n    id = "silence"')[0])
    path.write_text(path.read_text().replace('"valve-controller-ro"', '"valve-controller"'))
    code, out = citynerve("config", "check", str(path), cwd=tmp_path)
    assert code == 0, out
