"""What the running gateway and the technician's `status` do not carry (issue 17, footprint).

A real `citynerve run` with a Modbus peer and an uplink to a real Mosquitto records the modules it
imported when it stops; `citynerve status` asks it while the config file has since gone invalid in
another section (status reads only `[control]`, `diag store` only `[store]`).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

from citynerve.gateway.control import ask
from citynerve.hil.platform import MosquittoBroker
from tests.integration.conftest import GatewayProcess, gateway_config

RECORDER = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: open({out!r}, 'w').write(json.dumps(sorted(sys.modules))))\n"
    "sys.argv = ['citynerve', 'run', '-c', {cfg!r}]\n"
    "from citynerve.gateway.cli import entry\n"
    "entry()\n"
)

NOT_RUN = {
    "cryptography": "certificates are read only when TLS files are configured, keys made on tls_csr",
    "rich": "terminal output of the technician's commands",
    "click": "`run` parses its own arguments (gateway/cli/_run.py)",
    "difflib": "suggestions for a mistyped config key",
    "ctypes.util": "finding libc by name: the clock check uses the process's own symbols",
    "citynerve.gateway.cli.cmd_diag": "diagnostic commands",
    "citynerve.gateway.commissioning": "commissioning",
}


class RecordingGateway(GatewayProcess):
    """`citynerve run` that writes the names of its imported modules when it exits."""

    def start(self) -> None:
        self.modules = self.config.parent / "modules.json"
        code = RECORDER.format(out=str(self.modules), cfg=str(self.config))
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT)


def _status(sock: Path) -> dict:
    try:
        return asyncio.run(ask(sock, "status"))
    except Exception:
        return {}


def test_running_gateway_imports_only_what_it_runs_and_status_reads_only_control(
    tmp_path: Path, modbus_peer: int
) -> None:
    with MosquittoBroker() as broker:
        cfg = gateway_config(tmp_path, modbus_peer, buses=1, units=2)
        cfg.write_text(cfg.read_text() + f'\n[upstream]\nbrokers = ["{broker.url}"]\n')
        gw = RecordingGateway(cfg)
        gw.start()
        sock = tmp_path / "var" / "gw.sock"
        try:
            gw.wait_for(
                lambda: (
                    (st := _status(sock)).get("devices_online") == 2
                    and (st.get("uplink") or {}).get("state") == "connected"
                ),
                timeout_s=60,
            )
            # The file goes bad in a device table: status still reaches the running gateway.
            cfg.write_text(cfg.read_text().replace('profile = "test-counter"', 'profile = "no-such"', 1))
            cli = [sys.executable, "-m", "citynerve.gateway.cli", "status", "-c", str(cfg), "--json"]
            done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["devices_online"] == 2
            diag = [sys.executable, "-m", "citynerve.gateway.cli", "diag", "store", "-c", str(cfg), "--json"]
            done = subprocess.run(diag, capture_output=True, text=True, timeout=60)
            assert done.returncode == 0 and json.loads(done.stdout)["healthy"], done
            # A bad [control] is refused like `config check` refuses it, naming the key.
            cfg.write_text(cfg.read_text().replace('socket = "var/gw.sock"', "socket = 5"))
            done = subprocess.run(cli, capture_output=True, text=True, timeout=60)
            assert done.returncode == 2 and "control.socket" in done.stdout + done.stderr, done
        finally:
            assert gw.kill(signal.SIGTERM) == 0, gw.log.read_text()[-3000:]
    modules = set(json.loads(gw.modules.read_text()))
    assert "citynerve.gateway.uplink" in modules and "citynerve.drivers.modbus.driver" in modules
    for name, what in NOT_RUN.items():
        assert not {m for m in modules if m == name or m.startswith(name + ".")}, f"{name}: {what}"
