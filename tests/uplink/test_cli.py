"""`citynerve diag uplink`: every step's verdict against a real Mosquitto (plain and TLS), JSON output,
exit codes, one clear line for bad input."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.hil.platform import MosquittoBroker, free_port
from tests.uplink.certs import make_pki

HEAD = """[gateway]
id = "gw-diag"
org = { city = "310100", district = "310106", street = "310106013" }
[store]
path = "gw.db"
"""


def _config(tmp_path: Path, upstream: str) -> Path:
    f = tmp_path / "gw.toml"
    f.write_text(HEAD + "[upstream]\n" + upstream)
    return f


def _run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(main, ["diag", "uplink", *args])
    return r.exit_code, r.output


def test_help() -> None:
    code, out = _run("--help")
    assert code == 0 and "DNS, TCP, TLS, MQTT connect" in out and "--json" in out


def test_all_steps_pass(broker: MosquittoBroker, tmp_path: Path) -> None:
    cfg = _config(tmp_path, f'brokers = ["{broker.url}"]\n')
    code, out = _run("-c", str(cfg), "--json")
    assert code == 0, out
    rep = json.loads(out)
    assert rep["ok"] is True
    verdicts = {c["step"]: c["verdict"] for c in rep["brokers"][0]["checks"]}
    assert verdicts == {
        "dns": "pass",
        "tcp": "pass",
        "tls": "skip",
        "mqtt_connect": "pass",
        "round_trip": "pass",
    }
    code, out = _run("-c", str(cfg))
    assert code == 0 and "round_trip" in out and "reachable" in out


def test_failover_list_one_dead_one_alive(broker: MosquittoBroker, tmp_path: Path) -> None:
    cfg = _config(tmp_path, f'brokers = ["mqtt://127.0.0.1:{free_port()}", "{broker.url}"]\n')
    code, out = _run("-c", str(cfg), "--json")
    rep = json.loads(out)
    assert code == 0 and [b["ok"] for b in rep["brokers"]] == [False, True]
    tcp = rep["brokers"][0]["checks"][1]
    assert tcp["step"] == "tcp" and tcp["verdict"] == "fail" and "refused" in tcp["detail"]


def test_a_hung_broker_is_named_in_the_connect_step(broker: MosquittoBroker, tmp_path: Path) -> None:
    # TCP accepted, no CONNACK: the detail read "no MQTT session: " and nothing more.
    cfg = _config(tmp_path, f'brokers = ["{broker.url}"]\n')
    broker.freeze()
    try:
        code, out = _run("-c", str(cfg), "--json", "--timeout", "1")
    finally:
        broker.thaw()
    connect = json.loads(out)["brokers"][0]["checks"][3]
    assert code == 1 and (connect["step"], connect["verdict"]) == ("mqtt_connect", "fail")
    assert connect["detail"] == "no MQTT session: no CONNACK within 1 s", connect


def test_dns_failure(tmp_path: Path) -> None:
    cfg = _config(tmp_path, 'brokers = ["mqtt://no-such-broker.invalid:1883"]\n')
    code, out = _run("-c", str(cfg), "--json", "--timeout", "3")
    rep = json.loads(out)
    assert code == 1
    assert [c["verdict"] for c in rep["brokers"][0]["checks"]] == ["fail", "skip", "skip", "skip", "skip"]


@pytest.fixture
def tls_broker(tmp_path: Path):  # type: ignore[no-untyped-def]
    pki = make_pki(tmp_path / "pki")
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run(["mosquitto_passwd", "-b", str(pw), "gw", "pw-right"], check=True, capture_output=True)
    b = MosquittoBroker(
        workdir=tmp_path,
        extra_config="\n".join(
            [
                f"cafile {pki.ca}",
                f"certfile {pki.server_cert}",
                f"keyfile {pki.server_key}",
                f"password_file {pw}",
                "allow_anonymous false",
            ]
        ),
    )
    b.start()
    try:
        yield b, pki
    finally:
        b.close()


def test_tls_steps(tls_broker, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    broker, pki = tls_broker
    (tmp_path / "pw").write_text("pw-right")
    (tmp_path / "bad").write_text("pw-wrong")
    for secret in ("pw", "bad"):
        (tmp_path / secret).chmod(0o600)  # secret files are the gateway user's alone
    url = f"mqtts://127.0.0.1:{broker.port}"
    cfg = _config(
        tmp_path,
        f'brokers = ["{url}"]\nusername = "gw"\npassword_file = "{tmp_path / "pw"}"\n'
        f'tls = {{ ca_file = "{pki.ca}" }}\n',
    )
    code, out = _run("-c", str(cfg), "--json")
    assert code == 0, out
    checks = {c["step"]: c for c in json.loads(out)["brokers"][0]["checks"]}
    assert checks["tls"]["verdict"] == "pass" and "verified" in checks["tls"]["detail"]
    # untrusted server certificate: TLS fails, nothing after it runs
    cfg = _config(
        tmp_path,
        f'brokers = ["{url}"]\nusername = "gw"\npassword_file = "{tmp_path / "pw"}"\n'
        f'tls = {{ ca_file = "{pki.other_ca}" }}\n',
    )
    code, out = _run("-c", str(cfg), "--json")
    checks = {c["step"]: c for c in json.loads(out)["brokers"][0]["checks"]}
    assert code == 1 and checks["tls"]["verdict"] == "fail" and "not trusted" in checks["tls"]["detail"]
    # it names what was presented and what the gateway trusts
    assert "presented: CN=" in checks["tls"]["detail"] and " issued by CN=" in checks["tls"]["detail"]
    assert f"configured CA: {pki.other_ca} (CN=" in checks["tls"]["detail"]
    assert checks["mqtt_connect"]["verdict"] == "skip"
    # wrong password: the broker refuses the MQTT connection, and the password is never printed
    cfg = _config(
        tmp_path,
        f'brokers = ["{url}"]\nusername = "gw"\npassword_file = "{tmp_path / "bad"}"\n'
        f'tls = {{ ca_file = "{pki.ca}" }}\n',
    )
    code, out = _run("-c", str(cfg), "--json")
    checks = {c["step"]: c for c in json.loads(out)["brokers"][0]["checks"]}
    assert (
        code == 1
        and checks["mqtt_connect"]["verdict"] == "fail"
        and "refused" in checks["mqtt_connect"]["detail"]
    )
    assert "pw-wrong" not in out


def test_bad_input_is_one_line(tmp_path: Path) -> None:
    code, out = _run("-c", str(tmp_path / "missing.toml"))
    assert code == 2 and "Traceback" not in out
    f = tmp_path / "gw.toml"
    f.write_text(HEAD)
    code, out = _run("-c", str(f))
    assert code == 2 and "no [upstream] table" in out and "Traceback" not in out
    code, out = _run("-c", str(_config(tmp_path, 'brokers = ["http://x"]\n')))
    assert code == 2 and "upstream.brokers" in out
