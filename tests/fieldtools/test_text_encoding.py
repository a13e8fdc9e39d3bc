"""Text a person wrote on Windows: a UTF-8 file that starts with a byte order mark (Notepad) reads
as the same file without it, in every reader of config, profile, rule pack and secret text; a GBK
file (what an editor on a Chinese Windows writes) is refused naming the line, the byte column and
"save the file as UTF-8"."""

from __future__ import annotations

import base64
import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from citynerve.gateway.api import ConfigError
from citynerve.gateway.cli import main
from citynerve.gateway.commissioning.bussettings import save_bus_settings
from citynerve.gateway.config import load_config
from citynerve.gateway.remoteconfig.document import candidate_text
from citynerve.gateway.remoteconfig.history import ConfigHistory
from citynerve.gateway.remoteconfig.profiles import candidate
from citynerve.gateway.rules.packs import load_pack
from citynerve.gateway.runtime import Gateway
from citynerve.gateway.service.install import ServiceInstallError, StepKind, plan_install
from citynerve.gateway.uplink import UpstreamConfig
from citynerve.gateway.uplink.signing import read_hmac_key
from citynerve.gateway.web import StatusServer, WebConfig
from tests.config.test_config_errors import BUS, HEAD

from .test_web import get

BOM = b"\xef\xbb\xbf"
REPO = Path(__file__).resolve().parents[2]
PROFILES = REPO / "config" / "profiles"
CONFIG = HEAD + '[store]\npath = "gw.db"\n[control]\nsocket = "gw.sock"\n' + BUS


def write(path: Path, text: str, *, bom: bool = False, encoding: str = "utf-8") -> Path:
    path.write_bytes((BOM if bom else b"") + text.encode(encoding))
    return path


def check(path: Path) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["config", "check", str(path)])
    return result.exit_code, result.output


def test_a_config_with_a_bom_is_valid(tmp_path: Path) -> None:
    path = write(tmp_path / "gw.toml", CONFIG, bom=True)
    code, output = check(path)
    assert code == 0, output
    assert load_config(path).gateway.id == "gw-1"


def test_a_gbk_config_names_the_line_and_says_save_as_utf8(tmp_path: Path) -> None:
    text = CONFIG.replace('id = "gw-1"', 'id = "gw-1"\nname = "大宁路七号"')
    path = write(tmp_path / "gw.toml", text, encoding="gbk")
    code, output = check(path)
    line = text.splitlines().index('name = "大宁路七号"') + 1
    assert code == 2
    assert f"not UTF-8 text: line {line}, byte 9 (0xb4)" in output
    assert "save the file as UTF-8" in output and "GBK/GB18030" in output


def test_a_utf16_config_says_what_it_is(tmp_path: Path) -> None:
    path = write(tmp_path / "gw.toml", CONFIG, encoding="utf-16")
    code, output = check(path)
    assert code == 2 and "line 1, byte 1" in output and "UTF-16" in output


def test_a_profile_and_a_rule_pack_with_a_bom(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    name = "modbus-smoke-detector.toml"
    write(profiles / name, (PROFILES / name).read_text(encoding="utf-8"), bom=True)
    device = '[[devices]]\nid = "sd-1"\nbus = "rs485-1"\nprofile = "modbus-smoke-detector"\naddress = 1\n'
    device += 'location = { address_code = "310106013007" }\n'
    path = write(tmp_path / "gw.toml", 'profile_dirs = ["profiles"]\n' + CONFIG + device)
    assert load_config(path).profiles["modbus-smoke-detector"].id == "modbus-smoke-detector"
    pack = next((REPO / "config" / "rules").glob("*.toml"))
    bom_pack = write(tmp_path / pack.name, pack.read_text(encoding="utf-8"), bom=True)
    assert load_pack(bom_pack) == load_pack(pack)


def test_store_stats_reads_a_config_with_a_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "gw.toml", CONFIG, bom=True)
    result = CliRunner().invoke(main, ["store", "stats", "-c", str(path), "--json"])
    # The config is read: the outbox it names is looked for (none made yet), not "not valid TOML".
    assert json.loads(result.output)["path"] == str(tmp_path / "gw.db"), result.output


def test_bus_settings_saved_into_a_config_with_a_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "gw.toml", CONFIG, bom=True)
    cfg, _ = save_bus_settings(path, "rs485-1", {"baudrate": 19200})
    assert cfg.buses[0].baudrate == 19200  # type: ignore[union-attr]
    assert tomllib.loads(path.read_text(encoding="utf-8"))["buses"][0]["baudrate"] == 19200


def test_remote_config_patch_of_a_config_with_a_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "gw.toml", CONFIG, bom=True)
    current = ConfigHistory(path).read_config()
    text = candidate_text(current, b'{"web": {"port": 8081}}', "patch")
    assert tomllib.loads(text)["web"]["port"] == 8081
    pushed = candidate_text(current, BOM + CONFIG.encode(), "replace")  # a file uploaded from Windows
    assert tomllib.loads(pushed)["gateway"]["id"] == "gw-1"
    pushed, _ = candidate(current, {}, BOM + CONFIG.encode(), "replace")
    assert tomllib.loads(pushed)["gateway"]["id"] == "gw-1"


def test_service_install_copies_a_config_with_a_bom_without_it(tmp_path: Path) -> None:
    config = write(tmp_path / "gw.toml", CONFIG, bom=True)
    plan = plan_install(prefix=tmp_path / "root", config=config, exec_start="/usr/bin/citynerve")
    [step] = [s for s in plan.steps if s.kind is StepKind.CONFIG]
    assert step.content.startswith(HEAD) and "[gateway]" in step.content
    gbk = write(tmp_path / "gbk.toml", CONFIG + "# 大宁路\n", encoding="gbk")
    with pytest.raises(ServiceInstallError, match="save the file as UTF-8"):
        plan_install(prefix=tmp_path / "root", config=gbk, exec_start="/usr/bin/citynerve")


# -- secret text ------------------------------------------------------------------------------------


def test_upstream_password_file_with_a_bom(tmp_path: Path) -> None:
    pw = write(tmp_path / "mqtt.pass", "right-password\r\n", bom=True)
    cfg = UpstreamConfig(brokers=("mqtt://x",), username="gw", password_file=pw)
    assert cfg.password().get_secret_value() == "right-password"  # type: ignore[union-attr]
    gbk = write(tmp_path / "gbk.pass", "密码\n", encoding="gbk")
    with pytest.raises(ConfigError) as err:
        UpstreamConfig(brokers=("mqtt://x",), username="gw", password_file=gbk).password()
    [issue] = err.value.issues
    assert issue.path == "upstream.password_file" and "save the file as UTF-8" in issue.message


def test_hmac_key_file_with_a_bom(tmp_path: Path) -> None:
    key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
    assert read_hmac_key(write(tmp_path / "a.key", key + "\n", bom=True)) == bytes.fromhex(key)
    assert read_hmac_key(write(tmp_path / "b.key", "a text key\n", bom=True)) == b"a text key"


async def test_web_password_file_with_a_bom(gateway: Gateway, short_dir: Path) -> None:
    pw = write(short_dir / "web.pw", "correct horse\r\n", bom=True)
    cfg = WebConfig(enabled=True, bind="127.0.0.1", port=0, password_file=pw, username="tech")
    async with StatusServer(cfg, gateway) as server:
        assert server.port
        auth = {"Authorization": "Basic " + base64.b64encode(b"tech:correct horse").decode()}
        assert (await get(server.port, "/api/status", auth))[0] == 200
        bom_auth = {
            "Authorization": "Basic " + base64.b64encode("tech:\ufeffcorrect horse".encode()).decode()
        }
        assert (await get(server.port, "/api/status", bom_auth))[0] == 401
