"""Remote configuration with commit-confirm on a real `citynerve run`, a real Mosquitto and the
reference platform: a bad document is rejected with key paths; a good one is applied hot and
confirmed; one with a wrong broker address is applied, fails its health check and is reverted by
the gateway, which comes back on the old broker and reports; the same across a SIGKILL in the
middle; the platform fetches the running config (redacted); local history and rollback."""

from __future__ import annotations

import asyncio
import base64
import json
import signal
import subprocess
import tomllib
from pathlib import Path
from typing import Any

from citynerve.hil.platform import CommandSigner, MosquittoBroker, PlatformConsumer, free_port
from citynerve.hil.platform.fleet import INLINE_DOCUMENT_BYTES, FleetClient
from tests.integration.conftest import GatewayProcess, gateway_config
from tests.integration.test_run_fleet import CENTRE_KEY, OPS_KEY, cli, socket_up, status, until

GW = "gw-test"
CONFIRM_S = 30.0  # a healthy change confirms as soon as it is healthy (>= 3 s): generous costs nothing
REVERT_S = 6.0  # a change that must fail waits this long before it is reverted
NEW_DEVICE = (
    '\n[[devices]]\nid = "d0-4"\nbus = "tcp-0"\nprofile = "test-counter"\naddress = 4\n'
    'location = { address_code = "310106013007" }\n'
)


def write_config(tmp: Path, modbus_port: int, broker: MosquittoBroker) -> Path:
    config = gateway_config(tmp, modbus_port, buses=1, units=3)
    for name, key in (("ops.key", OPS_KEY), ("centre.key", CENTRE_KEY)):
        (tmp / name).write_text(key.hex())
        (tmp / name).chmod(0o600)
    text = config.read_text()
    text += f'\n[upstream]\nbrokers = ["mqtt://{broker.host}:{broker.port}"]\n'
    text += "[upstream.backoff]\ninitial_s = 0.2\nmax_s = 1.0\n"
    text += "[upstream.commands]\nenabled = true\n"
    text += f'[[upstream.commands.keys]]\nid = "district-ops"\nhmac_key_file = "{tmp / "ops.key"}"\n'
    text += 'classes = ["read", "operate"]\n'
    text += f'[[upstream.commands.keys]]\nid = "ops-centre"\nhmac_key_file = "{tmp / "centre.key"}"\n'
    text += 'classes = ["read", "operate", "configure"]\n'
    config.write_text(text)
    return config


def connected(config: Path) -> bool:
    return (status(config).get("uplink") or {}).get("state") == "connected"


def test_remote_config_rejects_applies_and_reverts_a_broker_it_cannot_reach(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    with MosquittoBroker() as broker:
        config = write_config(tmp_path, modbus_peer, broker)
        original = config.read_text()
        dead_port = free_port()  # nothing listens here

        async def scenario() -> None:
            async with (
                PlatformConsumer(host=broker.host, port=broker.port, db_path=tmp_path / "p.db") as platform,
                FleetClient(
                    broker.host, broker.port, CommandSigner(hmac_key=OPS_KEY), key_id="district-ops"
                ) as ops,
                FleetClient(
                    broker.host, broker.port, CommandSigner(hmac_key=CENTRE_KEY), key_id="ops-centre"
                ) as centre,
            ):
                gw = gateway_process(config)
                gw.start()
                await until(lambda: socket_up(tmp_path))
                await until(lambda: connected(config))
                st = status(config)["config"]
                assert st["version"] == "local" and len(st["sha256"]) == 64

                # a key without the configure class cannot push a config
                r = await ops.push_config(GW, original + NEW_DEVICE, version="v2", confirm_s=CONFIRM_S)
                assert (r["outcome"], r["reason"]) == ("rejected", "not_permitted"), r

                # a bad document: every issue answered with its key path, nothing written
                bad = original + NEW_DEVICE.replace("test-counter", "no-such-profile")
                bad = bad.replace("address = 4", "address = 999")
                r = await centre.push_config(GW, bad, version="bad-1", confirm_s=CONFIRM_S)
                assert (r["outcome"], r["reason"]) == ("rejected", "bad_value"), r
                assert "devices[3]" in r["detail"] and "no-such-profile" in r["detail"], r["detail"]
                assert "address" in r["detail"], r["detail"]
                assert config.read_text() == original
                r = await centre.push_config(GW, original, version="v9", confirm_s=CONFIRM_S, mode="patch")
                assert r["reason"] == "bad_value" and "patch is not JSON" in r["detail"], r

                # a good one, as a patch (the device list): applied hot and confirmed
                devices = tomllib.loads(original + NEW_DEVICE)["devices"]
                patch = json.dumps({"devices": devices})
                out = await centre.apply_config(GW, patch, version="v2", mode="patch", confirm_s=CONFIRM_S)
                assert out["outcome"] == "confirmed", out
                assert out["answer"]["result"]["state"] == "pending"
                assert "d0-4" in [d["id"] for b in status(config)["buses"] for d in b["devices"]]
                st = status(config)["config"]
                assert st["version"] == "v2" and st["last"]["outcome"] == "confirmed"

                # a change a reload cannot apply: the service restarts (exit 75; here the test
                # starts it again, as systemd's Restart=on-failure does) and confirms after the start
                r = await centre.push_config(
                    GW,
                    json.dumps({"log": {"level": "debug"}}),
                    version="v2-debug",
                    mode="patch",
                    confirm_s=CONFIRM_S,
                )
                assert r["result"]["state"] == "pending", r
                assert gw.proc is not None and await asyncio.to_thread(gw.proc.wait, 60) == 75
                gw = gateway_process(config)
                gw.start()
                final = await centre.wait_verdict(r["command_id"], 60)
                assert final["result"]["state"] == "confirmed", final
                assert tomllib.loads(config.read_text())["log"]["level"] == "debug"
                await until(lambda: socket_up(tmp_path))
                assert status(config)["config"]["version"] == "v2-debug"
                running_v2 = config.read_text()
                here, there = f"mqtt://{broker.host}:{broker.port}", f"mqtt://127.0.0.1:{dead_port}"
                assert here in running_v2
                wrong_broker = running_v2.replace(here, there)
                wrong_broker += "".join(
                    f"# padding {i:05d}: the document goes in 8 KiB chunks\n" for i in range(600)
                )

                # the running config, redacted, in chunks with its hash
                final, data = await centre.fetch_upload(GW, "config_get")
                assert final["result"]["version"] == "v2-debug"
                assert [d["id"] for d in tomllib.loads(data.decode())["devices"]][-1] == "d0-4"

                assert len(wrong_broker.encode()) > 3 * INLINE_DOCUMENT_BYTES  # sent as chunks
                # a broker it cannot reach: the gateway reverts by itself and reports on the old one
                out = await centre.apply_config(GW, wrong_broker, version="v3", confirm_s=REVERT_S)
                assert out["outcome"] == "reverted", out
                assert "uplink not connected" in out["verdict"]["result"]["reason"]
                assert out["verdict"]["result"]["running"]["version"] == "v2-debug"
                assert config.read_text() == running_v2
                await until(lambda: connected(config))
                await until(lambda: status(config)["config"]["version"] == "v2-debug")

                # the same with a SIGKILL while the change waits for its health check
                r = await centre.push_config(GW, wrong_broker, version="v4", confirm_s=REVERT_S)
                assert r["result"]["state"] == "pending", r
                assert gw.kill(signal.SIGKILL) == -signal.SIGKILL
                assert f"127.0.0.1:{dead_port}" in config.read_text()  # the unconfirmed config
                gw2 = gateway_process(config)
                gw2.start()
                final = await centre.wait_verdict(r["command_id"], 90)
                assert final["result"]["state"] == "reverted", final
                assert config.read_text() == running_v2
                await until(lambda: socket_up(tmp_path))
                await until(lambda: connected(config))

                # the status message carries the version; the events lane the audit trail
                def birth_version() -> Any:
                    doc = platform.store.document(GW, "status") or {}
                    return (doc.get("gateway") or {}).get("config", {}).get("version")

                await until(lambda: birth_version() == "v2-debug")

                def config_events() -> list[tuple[str, str]]:
                    return [
                        (e["attrs"]["version"], e["attrs"]["what"])
                        for e in platform.store.events(GW)
                        if e["kind"] == "config"
                    ]

                want = [("bad-1", "rejected"), ("v2", "confirmed"), ("v2-debug", "confirmed")]
                want += [("v3", "reverted"), ("v4", "reverted")]
                await until(lambda: all(w in config_events() for w in want))

                # local history and rollback to the first config
                hist = json.loads(cli(config, "config", "history", "--json").stdout)
                whats = ["applied", "confirmed"] * 2 + ["applied", "reverted"] * 2
                assert [e["what"] for e in hist["log"]] == whats
                assert hist["current"]["version"] == "v2-debug" and hist["pending"] is None
                out_cli = cli(config, "config", "rollback", "local", "--json")
                assert out_cli.returncode == 0, out_cli.stderr
                # v2-debug's [log] level is read only at start: the rollback says a restart is due
                rolled = json.loads(out_cli.stdout)
                assert (rolled["reload"], rolled["restart_needed_for"]) == ("restart_needed", ["log"]), rolled
                assert config.read_text() == original
                await until(
                    lambda: "d0-4" not in [d["id"] for b in status(config)["buses"] for d in b["devices"]]
                )

        asyncio.run(scenario())


ROTATED_KEY = bytes.fromhex("66" * 32)  # the command key after `rotate_command_key`
PROVISIONED_KEY = bytes.fromhex("77" * 32)  # the command key a later config change provisions
SITE_KEY = bytes.fromhex("88" * 32)  # a second platform key, added to provision the first again


def password_broker(tmp: Path) -> MosquittoBroker:
    """A Mosquitto that checks passwords of the users gw-a, gw-b and gw-c (pass-a ...) and logs
    each connection with its user; anonymous clients (the platform's) may connect too."""
    pw = tmp / "passwd"
    pw.write_text("")
    for user in ("a", "b", "c"):
        args = ["mosquitto_passwd", "-b", str(pw), f"gw-{user}", f"pass-{user}"]
        subprocess.run(args, check=True, capture_output=True)
    files = {"a.pw": "pass-a", "b.pw": "pass-b", "c.pw": "pass-c", "bad.pw": "not-it"}
    files |= {"centre.key": CENTRE_KEY.hex(), "new.key": PROVISIONED_KEY.hex(), "site.key": SITE_KEY.hex()}
    for name, text in files.items():
        (tmp / name).write_text(text)
        (tmp / name).chmod(0o600)
    extra = f"password_file {pw}\nconnection_messages true\nlog_type notice"
    return MosquittoBroker(extra_config=extra, workdir=tmp)


class Documents:
    """Configs of one gateway that differ in [upstream] alone."""

    def __init__(self, tmp: Path, modbus_port: int, broker: MosquittoBroker) -> None:
        self.tmp, self.url = tmp, f"mqtt://{broker.host}:{broker.port}"
        self.config = gateway_config(tmp, modbus_port, buses=1, units=1)
        self.devices = self.config.read_text()

    def __call__(
        self, user: str, password: str, *, key: str = "centre.key", backup: str | None = None, more: str = ""
    ) -> str:
        text = self.devices + f'\n[[upstream]]\nbrokers = ["{self.url}"]\nusername = "{user}"\n'
        text += f'password_file = "{self.tmp / password}"\n{more}'
        text += "[upstream.backoff]\ninitial_s = 0.2\nmax_s = 1.0\n"
        text += "[upstream.commands]\nenabled = true\n"
        text += f'[[upstream.commands.keys]]\nid = "ops-centre"\nhmac_key_file = "{self.tmp / key}"\n'
        text += 'classes = ["read", "operate", "configure"]\n'
        if backup is not None:  # a second destination with its own user
            text += f'\n[[upstream]]\nid = "backup"\nbrokers = ["{self.url}"]\ntopic_prefix = "backup"\n'
            text += f'username = "gw-c"\npassword_file = "{self.tmp / backup}"\n'
        return text

    def users(self) -> list[str]:
        """The users the gateway's connections named, in order (Mosquitto's connection log)."""
        lines = (self.tmp / "mosquitto.log").read_text().splitlines()
        return [line.split("u'")[1].split("'")[0] for line in lines if " as citynerve-gw-test" in line]


async def start_gateway(docs: Documents, gateway_process: type[GatewayProcess]) -> GatewayProcess:
    gw = gateway_process(docs.config)
    gw.start()
    await until(lambda: socket_up(docs.tmp))
    await until(lambda: connected(docs.config))
    return gw


def test_remote_config_changes_the_upstream_credentials_of_each_destination(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    """[upstream] credentials changed from afar, applied by new uplinks (no restart), against a
    Mosquitto that checks passwords: a new user and password file is what the broker sees; a wrong
    password is reverted; a second destination whose password is wrong is reverted too (it was
    confirmed while it never connected: only the first destination was judged)."""
    with password_broker(tmp_path) as broker:
        docs = Documents(tmp_path, modbus_peer, broker)
        docs.config.write_text(docs("gw-a", "a.pw"))

        async def scenario() -> None:
            signer = CommandSigner(hmac_key=CENTRE_KEY)
            async with FleetClient(broker.host, broker.port, signer, key_id="ops-centre") as centre:
                await start_gateway(docs, gateway_process)
                assert docs.users() == ["gw-a"]

                # a new user and password: the new uplink connects with them, confirmed
                out = await centre.apply_config(GW, docs("gw-b", "b.pw"), version="b", confirm_s=CONFIRM_S)
                assert out["outcome"] == "confirmed", out
                assert docs.users()[-1] == "gw-b"
                # a wrong password: not connected, reverted, back on gw-b
                out = await centre.apply_config(GW, docs("gw-b", "bad.pw"), version="bad", confirm_s=REVERT_S)
                assert out["outcome"] == "reverted", out
                assert "uplink not connected" in out["verdict"]["result"]["reason"]
                await until(lambda: connected(docs.config) and docs.users()[-1] == "gw-b")

                # a second destination with its own user: confirmed once it is connected too
                two = docs("gw-b", "b.pw", backup="c.pw")
                out = await centre.apply_config(GW, two, version="two", confirm_s=CONFIRM_S)
                assert out["outcome"] == "confirmed", out
                assert "gw-c" in docs.users()
                assert status(docs.config)["uplink"]["destinations"]["backup"]["connected"] is True
                # its password wrong: it never connects, and the change is reverted for it
                wrong = docs("gw-b", "b.pw", backup="bad.pw")
                out = await centre.apply_config(GW, wrong, version="two-bad", confirm_s=REVERT_S)
                assert out["outcome"] == "reverted", out
                assert "destinations not connected: backup" in out["verdict"]["result"]["reason"]
                assert status(docs.config)["config"]["version"] == "two"
                await until(lambda: status(docs.config)["uplink"]["destinations"]["backup"]["connected"])

        asyncio.run(scenario())


def test_remote_config_of_the_upstream_keeps_command_key_rotations_as_a_restart_does(
    tmp_path: Path, modbus_peer: int, gateway_process: type[GatewayProcess]
) -> None:
    """A command key rotated from the platform keeps its overlap across an [upstream] change applied
    by new uplinks (the old key was retired at once: the rotation was applied twice); a command key
    provisioned again by such a change is in force at once, the rotation dropped, as a restart does
    (the credentials kept the [upstream] of the start and applied the rotation over the new key).
    The key is provisioned again with a change sent by another key: one signed by the key it
    replaces is refused (the gateway cannot know that the platform holds the new one)."""
    with password_broker(tmp_path) as broker:
        docs = Documents(tmp_path, modbus_peer, broker)
        docs.config.write_text(docs("gw-a", "a.pw"))

        async def scenario() -> None:
            signer = CommandSigner(hmac_key=CENTRE_KEY)
            async with FleetClient(broker.host, broker.port, signer, key_id="ops-centre") as centre:

                async def read_with(key: bytes) -> str:
                    centre.signer = CommandSigner(hmac_key=key)
                    r = await centre.send(GW, "diag_certs")
                    return str(r.get("reason") or r["outcome"])

                await start_gateway(docs, gateway_process)
                # the command key rotated, the old one accepted for an hour more
                new_key = base64.b64encode(ROTATED_KEY).decode()
                args = {"alg": "hmac-sha256", "key": new_key, "overlap_s": 3600}
                assert (await centre.send(GW, "rotate_command_key", args))["outcome"] == "ok"
                assert await read_with(CENTRE_KEY) == "ok"  # in its overlap
                # an [upstream] change (signed with the new key: the old one may only read now)
                centre.signer = CommandSigner(hmac_key=ROTATED_KEY)
                keepalive = docs("gw-a", "a.pw", more="keepalive_s = 20\n")
                out = await centre.apply_config(GW, keepalive, version="keepalive", confirm_s=CONFIRM_S)
                assert out["outcome"] == "confirmed", out
                assert await read_with(CENTRE_KEY) == "ok"  # the overlap goes on
                assert await read_with(ROTATED_KEY) == "ok"

                # the key provisioned again by a config change: in force at once and the rotation
                # dropped, as after a restart (the rotated key stayed in force until a restart).
                # Not by a change it signs itself (refused), but by one of a second key added first
                centre.signer = CommandSigner(hmac_key=ROTATED_KEY)
                site = f'[[upstream.commands.keys]]\nid = "site"\nhmac_key_file = "{tmp_path / "site.key"}"\n'
                site += 'classes = ["read", "configure"]\n'
                again = docs("gw-a", "a.pw", key="new.key")
                r = await centre.push_config(GW, again + site, version="new-key", confirm_s=CONFIRM_S)
                assert "points key 'ops-centre' at a file with another key" in r["detail"], r
                out = await centre.apply_config(GW, keepalive + site, version="site", confirm_s=CONFIRM_S)
                assert out["outcome"] == "confirmed", out
                async with FleetClient(
                    broker.host, broker.port, CommandSigner(hmac_key=SITE_KEY), key_id="site"
                ) as other:
                    out = await other.apply_config(GW, again + site, version="new-key", confirm_s=CONFIRM_S)
                assert out["outcome"] == "confirmed", out
                assert await read_with(PROVISIONED_KEY) == "ok"
                assert await read_with(ROTATED_KEY) == "bad_signature"
                # the new key may configure (a key in an overlap may only read and operate)
                centre.signer = CommandSigner(hmac_key=PROVISIONED_KEY)
                r = await centre.send(GW, "set_log_level", {"level": "info", "for_s": 5})
                assert r["outcome"] == "ok", r

        asyncio.run(scenario())
