"""A real `citynerve run` with [web] enabled serves the status page and Prometheus metrics."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from citynerve.hil.platform import free_port
from tests.integration.conftest import GatewayProcess, gateway_config


def get(url: str) -> tuple[int, str, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:  # loopback only
        return resp.status, resp.headers.get("Content-Type", ""), resp.read().decode()


def test_status_page_and_metrics(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    port = free_port()
    config = gateway_config(tmp_path, modbus_peer, buses=1, units=2)
    config.write_text(config.read_text() + f'\n[web]\nenabled = true\nbind = "127.0.0.1"\nport = {port}\n')
    gw = gateway_process(config)
    gw.start()

    def metrics_ready() -> bool:
        try:
            _, _, text = get(f"http://127.0.0.1:{port}/metrics")
        except OSError:
            return False
        return "d0-2" in text

    gw.wait_for(metrics_ready)
    status, ctype, text = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200 and ctype.startswith("text/plain")
    assert any(line.startswith("citynerve_") for line in text.splitlines())
    status, ctype, page = get(f"http://127.0.0.1:{port}/")
    assert status == 200 and "text/html" in ctype and "<html" in page.lower()
