"""`citynerve demo` stopped by SIGTERM (`timeout`, a service manager, `kill`) cleans up as Ctrl-C
does: it left its Mosquitto running (adopted by init, still listening) because only SIGINT ran the
demo's cleanup."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from citynerve.hil.platform.broker import find_mosquitto

REPO = Path(__file__).resolve().parents[2]
CLI = (sys.executable, "-m", "citynerve.gateway.cli")


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(find_mosquitto() is None, reason="needs Mosquitto")
def test_sigterm_stops_the_demo_and_its_broker(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [*CLI, "demo", "--duration", "0", "--workdir", str(tmp_path), "--broker", "mosquitto"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"},
    )
    try:
        assert proc.stdout is not None
        port = None
        for line in proc.stdout:  # the broker line comes first, the gateway's once it is started
            if m := re.search(r"broker mqtt://127\.0\.0\.1:(\d+)", line):
                port = int(m.group(1))
            if line.startswith("gateway "):
                break
        assert port is not None, proc.stderr.read() if proc.stderr else ""
        brokers = [c for c in _children(proc.pid) if "mosquitto" in Path(f"/proc/{c}/cmdline").read_text()]
        assert len(brokers) == 1, brokers
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    left = _alive(brokers[0])
    if left:  # not for the next test run to find
        os.kill(brokers[0], signal.SIGKILL)
    assert not left, "the demo's Mosquitto outlived the demo"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
