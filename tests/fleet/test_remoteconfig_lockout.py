"""`lockout()` on loaded configs, for what the end-to-end test (tests/integration/
test_run_remoteconfig_lockout.py) does not reach: the table's own key (id `platform`), an Ed25519
key, a key file that cannot be read, another key changed, and a command not through an uplink."""

from __future__ import annotations

from pathlib import Path

from citynerve.gateway.config import GatewayConfig, load_config
from citynerve.gateway.remoteconfig.lockout import lockout
from citynerve.gateway.uplink.commands import Caller
from tests.integration.conftest import gateway_config

ED_KEY = bytes(range(32))  # 32 raw bytes: an Ed25519 public key file


def config(tmp: Path, commands: str) -> GatewayConfig:
    path = gateway_config(tmp, 1502, buses=1, units=1)
    for name, data in (("a.key", b"11" * 32), ("a-copy.key", b"11" * 32), ("b.key", b"22" * 32)):
        (tmp / name).write_bytes(data)
        (tmp / name).chmod(0o600)
    (tmp / "ed.pub").write_bytes(ED_KEY)
    (tmp / "ed.pub").chmod(0o600)
    path.write_text(path.read_text() + '\n[upstream]\nbrokers = ["mqtt://127.0.0.1:1"]\n' + commands)
    return load_config(path)


def test_the_tables_own_key_is_guarded_like_a_named_one(tmp_path: Path) -> None:
    table = '[upstream.commands]\nenabled = true\nhmac_key_file = "{}"\n'
    running = config(tmp_path, table.format("a.key"))
    caller = Caller("platform", "c1", "default")
    assert lockout(running, config(tmp_path, table.format("a-copy.key")), caller) is None
    changed = lockout(running, config(tmp_path, table.format("b.key")), caller)
    assert changed is not None and changed.startswith("the change points key 'platform' at a file with")
    fewer = config(tmp_path, table.format("a.key") + 'classes = ["read"]\n')
    why = lockout(running, fewer, caller)
    assert why is not None and "takes the configure class from key 'platform' (it would grant read)" in why
    # a command not through an uplink: no platform to lock out
    assert lockout(running, fewer, Caller("platform", "c2", None)) is None


def test_another_kind_of_key_an_unreadable_file_and_another_key(tmp_path: Path) -> None:
    def keys(own: str, other: str = "b.key") -> str:
        return (
            "[upstream.commands]\nenabled = true\n"
            f'[[upstream.commands.keys]]\nid = "centre"\n{own}\nclasses = ["configure"]\n'
            f'[[upstream.commands.keys]]\nid = "ops"\nhmac_key_file = "{other}"\nclasses = ["read"]\n'
        )

    running = config(tmp_path, keys('ed25519_public_key_file = "ed.pub"'))
    caller = Caller("centre", "c1", "default")
    why = lockout(running, config(tmp_path, keys('hmac_key_file = "a.key"')), caller)
    assert why is not None and "changes key 'centre' from an ed25519 key to an hmac key" in why
    # another key's file changes: not the caller's, allowed
    assert (
        lockout(running, config(tmp_path, keys('ed25519_public_key_file = "ed.pub"', "a.key")), caller)
        is None
    )
    # the candidate's file cannot be read when it is compared (gone since the config was loaded)
    (tmp_path / "ed2.pub").write_bytes(ED_KEY)
    (tmp_path / "ed2.pub").chmod(0o600)
    moved = config(tmp_path, keys('ed25519_public_key_file = "ed2.pub"'))
    assert lockout(running, moved, caller) is None  # the same key in another file
    (tmp_path / "ed2.pub").unlink()
    why = lockout(running, moved, caller)
    assert why is not None and "points key 'centre' at a key file that cannot be read" in why
