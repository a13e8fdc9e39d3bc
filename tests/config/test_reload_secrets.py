"""A reload compares what is in the secret files a part reads at start, not only their paths: a new
key written into a BLE node's existing key file was ignored by `config reload` (the models, which
hold the path, compared equal), which still answered that the gateway took the change. The uplink's
broker password and TLS files are not compared: it reads them again at every connection."""

from __future__ import annotations

import textwrap
from pathlib import Path

from citynerve.gateway.config import load_config
from citynerve.gateway.reload_plan import plan_reload, secret_digests
from tests.config.test_config_errors import HEAD, write
from tests.config.test_secret_contents import BLE, KEY, STORE, secret

OTHER = "ffeeddccbbaa99887766554433221100"
EXTRA = textwrap.dedent(
    """
    [web]
    enabled = true
    bind = "127.0.0.1"
    port = 0
    password_file = "web.pw"
    [upstream]
    brokers = ["mqtt://127.0.0.1:1883"]
    username = "gw"
    password_file = "broker.pw"
    commands = { enabled = true, hmac_key_file = "cmd.key" }
    """
)


def _files(tmp_path: Path) -> None:
    secret(tmp_path / "mh1.key", KEY + "\n")
    secret(tmp_path / "web.pw", "web-password-1\n")
    secret(tmp_path / "broker.pw", "broker-password-1\n")
    secret(tmp_path / "cmd.key", "0123456789abcdef0123456789abcdef\n")


def test_a_new_key_in_a_ble_key_file_restarts_that_bus(tmp_path: Path) -> None:
    _files(tmp_path)
    path = write(tmp_path, HEAD + STORE + BLE + EXTRA)
    running = load_config(path)
    at_start = secret_digests(running)
    unchanged = plan_reload(running, load_config(path), at_start)
    assert (unchanged.changed, unchanged.restart_needed_for) == ([], [])

    secret(tmp_path / "mh1.key", OTHER + "\n")  # the node provisioned anew: the same file, a new key
    plan = plan_reload(running, load_config(path), at_start)
    assert plan.changed == ["ble"] and plan.restart_needed_for == []
    # what runs now is the new key: the same file at the next reload is no change
    again = plan_reload(plan.config, load_config(path), plan.secrets)
    assert (again.changed, again.restart_needed_for) == ([], [])
    assert OTHER not in str(plan.secrets) and KEY not in str(at_start)  # digests, never the key


def test_secret_files_read_only_at_start_ask_for_a_restart_and_the_broker_password_does_not(
    tmp_path: Path,
) -> None:
    _files(tmp_path)
    path = write(tmp_path, HEAD + STORE + BLE + EXTRA)
    running = load_config(path)
    at_start = secret_digests(running)
    secret(tmp_path / "broker.pw", "broker-password-2\n")  # read at the next connection anyway
    assert plan_reload(running, load_config(path), at_start).restart_needed_for == []
    secret(tmp_path / "web.pw", "web-password-2\n")  # the status page reads it again itself
    assert plan_reload(running, load_config(path), at_start).restart_needed_for == []
    secret(tmp_path / "cmd.key", "fedcba9876543210fedcba9876543210\n")
    plan = plan_reload(running, load_config(path), at_start)
    assert plan.restart_needed_for == ["upstream"] and plan.changed == []
    # until the restart they run as read at start: the next reload asks again
    assert plan_reload(plan.config, load_config(path), plan.secrets).restart_needed_for == ["upstream"]
