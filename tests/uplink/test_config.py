"""`UpstreamConfig`: defaults, every validation error, secrets kept out of reprs and logs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from citynerve.gateway.api import ConfigError
from citynerve.gateway.uplink import UpstreamConfig
from citynerve.gateway.uplink.config import load_upstream_table, parse_broker_url


def test_defaults() -> None:
    c = UpstreamConfig(brokers=("mqtts://broker.city.example",))
    assert c.topic_prefix == "citynerve" and c.protocol == "5" and c.tls.verify is True
    assert c.effective_client_id("gw-7") == "citynerve-gw-7"
    (b,) = c.broker_urls()
    assert (b.scheme, b.host, b.port, b.tls) == ("mqtts", "broker.city.example", 8883, True)
    assert str(parse_broker_url("mqtt://[::1]")) == "mqtt://[::1]:1883"


@pytest.mark.parametrize(
    "table",
    [
        {"brokers": []},
        {"brokers": ["http://x"]},
        {"brokers": ["mqtt://user:pw@x"]},
        {"brokers": ["mqtt://x:99999"]},
        {"brokers": ["mqtt://x/path"]},
        {"brokers": ["mqtt://x"], "protocol": "4"},
        {"brokers": ["mqtt://x"], "unknown": 1},
        {"brokers": ["mqtt://x"], "password_env": "PW"},
        {"brokers": ["mqtt://x"], "username": "u", "password_env": "PW", "password_file": "/x"},
        {"brokers": ["mqtt://x"], "tls": {"cert_file": "/c.pem"}},
        {"brokers": ["mqtt://x"], "backoff": {"initial_s": 10, "max_s": 1}},
        {"brokers": ["mqtt://x"], "commands": {"enabled": True}},
        {"brokers": ["mqtt://x"], "commands": {"hmac_key_file": "/a", "ed25519_public_key_file": "/b"}},
        {"brokers": ["mqtt://x"], "topic_prefix": "a/+/b"},
        {"brokers": ["mqtt://x"], "max_batch_bytes": 10},
    ],
)
def test_invalid(table: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        UpstreamConfig.model_validate(table)


def test_password_from_file_and_env_never_in_repr(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "pw"
    f.write_text("s3cret-file\n")
    c = UpstreamConfig(brokers=("mqtt://x",), username="gw", password_file=f)
    pw = c.password()
    assert pw is not None and pw.get_secret_value() == "s3cret-file"
    assert "s3cret" not in repr(c) and "s3cret" not in repr(pw) and "s3cret" not in c.model_dump_json()
    monkeypatch.setenv("CN_PW", "s3cret-env")
    c = UpstreamConfig(brokers=("mqtt://x",), username="gw", password_env="CN_PW")
    assert c.password().get_secret_value() == "s3cret-env"  # type: ignore[union-attr]
    monkeypatch.delenv("CN_PW")
    with pytest.raises(ConfigError) as err:
        c.password()
    assert err.value.issues[0].path == "upstream.password_env"
    c = UpstreamConfig(brokers=("mqtt://x",), username="gw", password_file=tmp_path / "missing")
    with pytest.raises(ConfigError):
        c.password()


def test_load_upstream_table(tmp_path: Path) -> None:
    f = tmp_path / "gw.toml"
    f.write_text('[upstream]\nbrokers = ["mqtt://127.0.0.1:1883"]\nmax_batch_readings = 0\nbogus = 1\n')
    with pytest.raises(ConfigError) as err:
        load_upstream_table(f)
    paths = sorted(i.path for i in err.value.issues)
    assert paths == ["upstream.bogus", "upstream.max_batch_readings"]
    f.write_text('[upstream]\nbrokers = ["mqtt://127.0.0.1:1883"]\n')
    assert load_upstream_table(f).brokers == ("mqtt://127.0.0.1:1883",)
    f.write_text("[gateway]\n")
    with pytest.raises(ConfigError):
        load_upstream_table(f)
    f.write_text("not toml [")
    with pytest.raises(ConfigError):
        load_upstream_table(f)


def test_secret_files_are_read_bounded_with_typed_errors(tmp_path: Path) -> None:
    """A password or command key setting pointed at the wrong file (a log, /dev/zero) is refused
    with the setting named, never read whole."""
    from citynerve.gateway.api import MAX_SECRET_FILE_BYTES
    from citynerve.gateway.uplink.config import CommandsConfig
    from citynerve.gateway.uplink.keys import load_key_ring

    big = tmp_path / "syslog"
    big.write_bytes(b"x" * (MAX_SECRET_FILE_BYTES + 1))
    for wrong in (big, Path("/dev/zero")):
        c = UpstreamConfig(brokers=("mqtt://x",), username="gw", password_file=wrong)
        with pytest.raises(ConfigError) as err:
            c.password()
        assert err.value.issues[0].path == "upstream.password_file"
        assert f"longer than {MAX_SECRET_FILE_BYTES} bytes" in err.value.issues[0].message
        for key in ("hmac_key_file", "ed25519_public_key_file"):
            cmds = CommandsConfig.model_validate({"enabled": True, key: str(wrong)})
            with pytest.raises(ConfigError) as err:
                load_key_ring(cmds)
            assert err.value.issues[0].path == f"upstream.commands.{key}"
    latin = tmp_path / "pw-latin1"
    latin.write_bytes("pässword".encode("latin-1"))
    c = UpstreamConfig(brokers=("mqtt://x",), username="gw", password_file=latin)
    with pytest.raises(ConfigError) as err:
        c.password()
    assert err.value.issues[0].path == "upstream.password_file"
    at_bound = tmp_path / "pw-long"
    at_bound.write_bytes(b"p" * MAX_SECRET_FILE_BYTES)
    c = UpstreamConfig(brokers=("mqtt://x",), username="gw", password_file=at_bound)
    assert c.password().get_secret_value() == "p" * MAX_SECRET_FILE_BYTES  # type: ignore[union-attr]


def test_load_upstream_table_is_bounded(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_upstream_table(Path("/dev/zero"))
    assert "not a regular file" in err.value.issues[0].message
