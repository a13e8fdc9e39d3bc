"""A broker password file saved by Windows Notepad (a UTF-8 BOM, CRLF) logs in to a real Mosquitto
that checks the password: the BOM is not sent as part of it."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from citynerve.gateway.store import AsyncOutbox
from citynerve.gateway.uplink import Uplink
from citynerve.hil.platform import MosquittoBroker
from tests.uplink.conftest import INVENTORY, readings, upstream, wait_for


@pytest.fixture
def auth_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    pw = tmp_path / "passwd"
    pw.write_text("")
    subprocess.run(
        ["mosquitto_passwd", "-b", str(pw), "gw", "right-password"], check=True, capture_output=True
    )
    with MosquittoBroker(workdir=tmp_path, extra_config=f"password_file {pw}\nallow_anonymous false") as b:
        yield b


async def test_a_password_file_with_a_bom_logs_in(
    auth_broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path
) -> None:
    pwf = tmp_path / "gw.password"
    pwf.write_bytes(b"\xef\xbb\xbfright-password\r\n")
    cfg = upstream(auth_broker, username="gw", password_file=str(pwf))
    await outbox.append(readings(5), [])
    async with Uplink(cfg, gateway_id="gw-bom", outbox=outbox, inventory=lambda: INVENTORY) as up:

        async def connected() -> bool:
            return up.snapshot().connected

        await wait_for(connected, timeout_s=10)


async def test_an_empty_password_file_is_refused_before_the_broker_is_asked(
    auth_broker: MosquittoBroker, outbox: AsyncOutbox, tmp_path: Path
) -> None:
    """An empty (or blank) password file is an installation left half done: `config check` refuses
    it, and `run` says the same instead of logging in with an empty password the broker refuses as
    "not authorised" (which reads as a wrong password, or an ACL)."""
    pwf = tmp_path / "gw.password"
    pwf.write_bytes(b" \r\n")
    cfg = upstream(auth_broker, username="gw", password_file=str(pwf))
    async with Uplink(cfg, gateway_id="gw-empty", outbox=outbox, inventory=lambda: INVENTORY) as up:

        async def refused() -> bool:
            return "ConfigError" in (up.snapshot().last_error or "")

        await wait_for(refused, timeout_s=10)
        assert f"{pwf} is empty: write the broker password in it" in (up.snapshot().last_error or "")
        assert not up.snapshot().connected
