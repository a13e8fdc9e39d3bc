"""`config check` reads the key, certificate and password files as `run` does. It checked only that
they exist and their mode, and said "valid" for a BTHome key file of 31 hex digits (every node on that
BLE bus then went offline), a tls.ca_file that is not PEM (the uplink never connected) and an empty
web.password_file (the status page silently did not start). Each problem names the key and the file,
never what is in it; `run` and a reload log the same as warnings."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.gateway.config import load_config
from tests.config.test_config_errors import HEAD, write
from tests.uplink.certs import make_pki

KEY = "00112233445566778899aabbccddeeff"
STORE = """
[store]
path = "var/gw.db"
[control]
socket = "var/gw.sock"
"""
BLE = """
[[buses]]
id = "ble"
protocol = "bthome"
[[devices]]
id = "mh-1"
bus = "ble"
profile = "bthome-manhole-cover"
address = "A4:C1:38:00:00:01"
key_file = "mh1.key"
location = { address_code = "310106013007" }
"""


def secret(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        path.write_text(text)
    else:
        path.write_bytes(text)
    path.chmod(0o600)
    return path


def check(path: Path) -> tuple[int, dict[str, str], str]:
    """Exit code, {key path: message} of `config check --json`, and its plain output."""
    runner = CliRunner()
    result = runner.invoke(main, ["config", "check", str(path), "--json"])
    doc = json.loads(result.stdout)
    plain = runner.invoke(main, ["config", "check", str(path)])
    found = {i["path"]: i["message"] for i in doc.get("issues", [])}
    return result.exit_code, found, plain.stdout + plain.stderr


def upstream(tls: str, extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        [upstream]
        brokers = ["mqtts://127.0.0.1:8883"]
        tls = {{ {tls} }}
        {extra}
        """
    )


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (KEY[:31] + "\n", "31 hex digits, expected 32"),
        (KEY + "0\n", "33 hex digits, expected 32"),
        ("0011223344556677889x" + KEY[20:] + "\n", "character 20 is not a hex digit"),
        ("", "0 hex digits, expected 32"),
    ],
)
def test_a_bad_bthome_key_file_is_refused_in_words(tmp_path: Path, text: str, words: str) -> None:
    key = secret(tmp_path / "mh1.key", text)
    code, found, plain = check(write(tmp_path, HEAD + STORE + BLE))
    assert code == 2, plain
    message = found["devices[0].key_file"]
    assert str(key) in message and words in message, message
    assert "(id 'mh-1').key_file" in plain and "fromhex" not in plain and ": :" not in plain, plain
    if text.strip():
        assert text.strip()[:16] not in plain  # never the key


def test_not_pem_tls_files_are_refused_naming_each(tmp_path: Path) -> None:
    pki = make_pki(tmp_path / "pki")
    pki.client_key.chmod(0o600)
    pki.server_key.chmod(0o600)
    junk = secret(tmp_path / "junk.pem", "garbage\n")

    def tls(ca: Path, cert: Path | None = None, key: Path | None = None) -> Path:
        pair = f', cert_file = "{cert}", key_file = "{key}"' if cert else ""
        return write(tmp_path, HEAD + STORE + upstream(f'ca_file = "{ca}"{pair}'))

    code, found, plain = check(tls(junk))
    assert code == 2, plain
    ca = found["upstream.tls.ca_file"]
    assert str(junk) in ca and "no PEM certificate" in ca, ca
    code, found, plain = check(tls(pki.ca, junk, pki.client_key))
    assert code == 2 and list(found) == ["upstream.tls.cert_file"], plain
    assert str(junk) in found["upstream.tls.cert_file"]
    code, found, plain = check(tls(pki.ca, pki.client_cert, junk))
    assert code == 2 and list(found) == ["upstream.tls.key_file"], plain
    assert str(junk) in found["upstream.tls.key_file"] and "PEM private key" in found["upstream.tls.key_file"]
    code, found, plain = check(tls(pki.ca, pki.client_cert, pki.server_key))
    assert code == 2, plain
    assert (
        f"{pki.server_key} is not the private key of the certificate {pki.client_cert}"
        in (found["upstream.tls.key_file"])
    )
    code, found, plain = check(tls(pki.ca, pki.client_cert, pki.client_key))
    assert code == 0 and "valid" in plain, plain


def test_empty_password_files_and_a_short_command_key_are_refused(tmp_path: Path) -> None:
    secret(tmp_path / "empty.pw", "")
    secret(tmp_path / "short.key", "x")
    extra = textwrap.dedent(
        """
        [web]
        enabled = true
        bind = "0.0.0.0"
        port = 0
        password_file = "empty.pw"
        [upstream]
        brokers = ["mqtt://127.0.0.1:1883"]
        username = "gw"
        password_file = "empty.pw"
        commands = { enabled = true, hmac_key_file = "short.key" }
        """
    )
    code, found, plain = check(write(tmp_path, HEAD + STORE + extra))
    assert code == 2, plain
    keys = {"web.password_file", "upstream.password_file", "upstream.commands.hmac_key_file"}
    assert set(found) == keys, found
    assert "empty.pw is empty" in found["web.password_file"], found
    assert "empty.pw is empty" in found["upstream.password_file"], found
    assert "short.key" in found["upstream.commands.hmac_key_file"], found
    assert "shorter than 16 bytes" in found["upstream.commands.hmac_key_file"], found


def test_run_starts_with_a_warning_naming_the_file(tmp_path: Path) -> None:
    """`run` (and a reload) starts without the file, as for a missing one: the other nodes, the
    rules and the outbox go on; the warning is logged at start."""
    secret(tmp_path / "mh1.key", KEY[:31])
    cfg = load_config(write(tmp_path, HEAD + STORE + BLE))
    (warning,) = [w for w in cfg.warnings if w.path == "devices[0].key_file"]
    assert warning.message.startswith("warning: ") and "31 hex digits, expected 32" in warning.message
