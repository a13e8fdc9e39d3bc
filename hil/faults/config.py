"""Fault scenarios for config, secrets and local actions (docs/reliability.md, "Config, secrets and
local actions"). Every one runs the real `citynerve` command as a separate process."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path
from typing import Any

import tomli_w

from citynerve.hil.faults import Broken, scenario
from citynerve.hil.faults.config_cases import BASES, MISTAKES, base

REPO = Path(__file__).resolve().parents[2]
# A sample of the generated mistakes, each for every protocol: one process per case.
SAMPLE = ("point_scale_nan", "point_not_a_table", "device_missing_location", "profile_id_is_a_path")


def citynerve(*args: str, cwd: Path, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        check=False,
    )


def _expect(cond: bool, what: str) -> None:
    if not cond:
        raise Broken(what)


@scenario(
    "config.broken_configs_every_protocol",
    area="config",
    promise="a config mistake, for every protocol, ends `config check` with exit 2 and the entry's "
    "id and key path, never a traceback",
)
def broken_configs_every_protocol(tmp: Path) -> str:
    runs = 0
    for protocol in sorted(BASES):
        for mistake in SAMPLE:
            cfg = base(protocol)
            mutate, where = MISTAKES[mistake]
            mutate(cfg, protocol)
            path = tmp / f"{protocol}-{mistake}.toml"
            path.write_text(tomli_w.dumps(cfg))
            proc = citynerve("config", "check", str(path), cwd=tmp)
            out = proc.stdout + proc.stderr
            case = f"{protocol}/{mistake}"
            _expect("Traceback" not in out, f"{case}: traceback in the output:\n{out[-800:]}")
            _expect(proc.returncode == 2, f"{case}: exit {proc.returncode}, expected 2")
            line = f"{path}: {where.format(point=BASES[protocol][2])}"
            _expect(line in out, f"{case}: no line starting {line!r} in:\n{out[-800:]}")
            runs += 1
    return f"{runs} broken configs over {len(BASES)} protocols: exit 2, id and key path, no traceback"


GATEWAY_HEAD = """
[gateway]
id = "gw-fault"
org = { city = "310100", district = "310106", street = "310106013" }

[store]
path = "var/gw.db"
synchronous = "normal"

[control]
socket = "var/gw.sock"
"""


@scenario(
    "config.world_readable_secret",
    area="config",
    promise="a secret file that group or others can read is refused by `config check` and `run` "
    "(exit 2), and only an explicit flag turns the refusal into a warning",
)
def world_readable_secret(tmp: Path) -> str:
    secret = tmp / "mqtt.pass"
    secret.write_text("s3cret-pass\n")
    secret.chmod(0o644)
    path = tmp / "gw.toml"
    upstream = (
        '\n[upstream]\nbrokers = ["mqtts://127.0.0.1:1"]\nusername = "gw"\npassword_file = "mqtt.pass"\n'
    )
    path.write_text(GATEWAY_HEAD + upstream)
    for command in (("config", "check"), ("run", "-c")):
        proc = citynerve(*command, str(path), cwd=tmp)
        out = proc.stdout + proc.stderr
        _expect(
            proc.returncode == 2, f"{' '.join(command)}: exit {proc.returncode}, expected 2:\n{out[-500:]}"
        )
        _expect(
            "upstream.password_file: secret file" in out and "(mode 0644)" in out, f"no clear line: {out}"
        )
        _expect("s3cret-pass" not in out, "the secret itself was printed")
    proc = citynerve("config", "check", "--allow-insecure-secrets", str(path), cwd=tmp)
    _expect(proc.returncode == 0, f"with --allow-insecure-secrets: exit {proc.returncode}")
    _expect("warning: secret file" in proc.stdout + proc.stderr, "no warning with --allow-insecure-secrets")
    secret.chmod(0o600)
    proc = citynerve("config", "check", str(path), cwd=tmp)
    _expect(proc.returncode == 0, f"mode 0600 refused: {proc.stdout}{proc.stderr}")
    return "0644 refused by check and run (exit 2); warning with --allow-insecure-secrets; 0600 accepted"


@scenario(
    "config.bundle_symlink",
    area="config",
    promise="`diag bundle -o` never follows a symlink or reuses an existing file, and a config that "
    "does not parse is left out of the bundle instead of being guessed at",
)
def bundle_symlink(tmp: Path) -> str:
    path = tmp / "gw.toml"
    path.write_text(GATEWAY_HEAD)
    victim = tmp / "victim"
    victim.write_bytes(b"precious")
    link = tmp / "bundle.tar.gz"
    link.symlink_to(victim)
    proc = citynerve("diag", "bundle", "-c", str(path), "-o", str(link), cwd=tmp)
    _expect(proc.returncode == 1, f"symlink: exit {proc.returncode}, expected 1")
    _expect(victim.read_bytes() == b"precious", "the symlink's target was overwritten")
    planted = tmp / "planted.tar.gz"
    planted.write_bytes(b"theirs")
    proc = citynerve("diag", "bundle", "-c", str(path), "-o", str(planted), cwd=tmp)
    _expect(proc.returncode == 1 and planted.read_bytes() == b"theirs", "an existing file was reused")
    broken = tmp / "broken.toml"
    broken.write_text('[gateway\n"mqtt pw" = "hunter2"\nbrokers = [mqtt://u:zebra9@h]\n')
    out = tmp / "broken.tar.gz"
    proc = citynerve("diag", "bundle", "-c", str(broken), "-o", str(out), "--json", cwd=tmp)
    _expect(proc.returncode == 0, f"broken config: exit {proc.returncode}: {proc.stderr[-500:]}")
    with tarfile.open(out) as tar:
        names = tar.getnames()
        data = b"".join(f.read() for m in tar.getmembers() if (f := tar.extractfile(m)) is not None)
    _expect("config/gateway.toml" not in names, "a config that does not parse went into the bundle")
    _expect(b"hunter2" not in data and b"zebra9" not in data, "a secret of the broken config leaked")
    _expect("left out" in json.loads(proc.stdout)["missing"]["config"], "the bundle does not say why")
    return "symlink and existing file refused (exit 1, untouched); unparsable config left out, nothing leaked"


# -- local actions against a real gateway process and a real Modbus server -----------------------

PROFILE = """
id = "valve-controller"
family = "modbus"
source = "hil/faults/config.py: a riser valve controller with leak and smoke inputs"
poll_interval_s = 0.2
[points.leak]
table = "discrete"
address = 0
[points.smoke]
table = "discrete"
address = 1
[points.valve]
table = "coil"
address = 3
writable = true
"""

RULES = """
[rules]
[[rules.rules]]
id = "leak"
kind = "boolean"
point = "leak"
severity = "major"
[[rules.rules]]
id = "smoke"
kind = "boolean"
point = "smoke"
severity = "critical"
[[rules.actions]]
id = "close_valve"
on = ["leak"]
point = "valve"
value = false
verify_after_s = 0.2
verify_retries = 2
"""


class ValveSite:
    """A pymodbus server holding a riser's open valve (coil 3) and its leak and smoke inputs, and a
    real `citynerve run` process polling it; `until(text)` waits for a log message of the gateway."""

    def __init__(self, tmp: Path, *, stuck: bool = False, args: tuple[str, ...] = ()) -> None:
        from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext

        class Coils(ModbusSequentialDataBlock):
            refuse = False

            def setValues(self, address: int, values: Any) -> None:
                if not self.refuse:
                    super().setValues(address, values)

            async def async_setValues(self, address: int, values: Any) -> None:
                self.setValues(address, values)

        self.tmp, self.stuck, self.args = tmp, stuck, args
        self.coils = Coils(0, [0] * 16)
        self.inputs = ModbusSequentialDataBlock(0, [0] * 16)
        self.context = ModbusServerContext(
            devices={1: ModbusDeviceContext(co=self.coils, di=self.inputs)}, single=False
        )
        self.messages: list[str] = []
        self.socket = tmp / "var" / "gw.sock"
        self._proc: asyncio.subprocess.Process | None = None

    def valve_open(self) -> bool:
        coil = self.coils.getValues(4, 1)  # coil 3; the block is 1-based
        return isinstance(coil, list) and bool(coil[0])

    async def __aenter__(self) -> ValveSite:
        from pymodbus.server import ModbusTcpServer

        self.server = ModbusTcpServer(self.context, address=("127.0.0.1", 0))
        await self.server.serve_forever(background=True)
        port = self.server.transport.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
        self.coils.setValues(4, [1])  # the valve is open ...
        self.coils.refuse = self.stuck  # ... and, when stuck, stays so whatever is written
        (self.tmp / "profiles").mkdir()
        (self.tmp / "profiles" / "valve-controller.toml").write_text(PROFILE)
        config = self.tmp / "gw.toml"
        config.write_text(
            GATEWAY_HEAD
            + '\n[log]\nformat = "json"\nlevel = "info"\n'
            + RULES
            + textwrap.dedent(
                f"""
                [[buses]]
                id = "tcp-1"
                protocol = "modbus_tcp"
                host = "127.0.0.1"
                port = {port}
                timeout_s = 0.5

                [[devices]]
                id = "riser-1"
                bus = "tcp-1"
                profile = "valve-controller"
                address = 1
                location = {{ address_code = "310106013007", building = "7" }}
                """
            )
        )
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", str(config), *self.args,
            cwd=self.tmp, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(REPO), "PYTHONUNBUFFERED": "1"},
        )  # fmt: skip
        await self.until("rules: ")
        return self

    async def until(self, text: str, timeout_s: float = 60.0) -> str:
        """Wait for a log message containing `text` and return it."""
        assert self._proc is not None and self._proc.stderr is not None
        async with asyncio.timeout(timeout_s):
            while True:
                for m in self.messages:
                    if text in m:
                        return m
                line = await self._proc.stderr.readline()
                if not line:
                    tail = "\n".join(self.messages[-20:])
                    raise Broken(f"the gateway ended before logging {text!r}:\n{tail}")
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    self.messages.append(str(json.loads(line)["msg"]))

    async def control_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the gateway answers on its control socket."""
        from citynerve.gateway.control import GatewayNotRunningError, ask

        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    await ask(self.socket, "ping", timeout_s=2.0)
                    return
                except GatewayNotRunningError:
                    await asyncio.sleep(0.05)  # the socket is not there yet: the gateway is starting

    async def __aexit__(self, *exc: object) -> None:
        proc = self._proc
        if proc is not None and proc.returncode is None:
            proc.terminate()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), 30)
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        await self.server.shutdown()


@scenario(
    "actions.interlock_fire_blocks_valve",
    area="actions",
    promise="no water valve closes while a fire or smoke alarm is raised in the same building "
    "(shipped interlock); the blocked action is logged and reported as an event",
)
async def interlock_fire_blocks_valve(tmp: Path) -> str:
    async with ValveSite(tmp) as site:
        site.inputs.setValues(2, [1])  # smoke in building 7
        await site.until("rule smoke on riser-1: raised")
        site.inputs.setValues(1, [1])  # a leak at the riser
        action = await site.until("action close_valve on riser-1.valve")
        _expect(": interlocked interlock water_on_during_fire: smoke raised on riser-1" in action, action)
        _expect(site.valve_open(), "the valve closed during the fire")
        site.inputs.setValues(2, [0])  # the smoke clears; the pipe still leaks: the held action runs
        released = await site.until("action close_valve on riser-1.valve = False: done")
        _expect(not site.valve_open(), "the valve did not close once the smoke cleared")
    return f"{action}; then {released}"


@scenario(
    "actions.device_did_not_follow",
    area="actions",
    promise="every actuation is read back with bounded retries; a device that does not follow raises "
    "an event",
)
async def device_did_not_follow(tmp: Path) -> str:
    async with ValveSite(tmp, stuck=True) as site:
        site.inputs.setValues(1, [1])  # a leak at the riser
        action = await site.until("action close_valve on riser-1.valve")
        _expect(": not_followed reads True (good), expected False after 3 read-backs" in action, action)
        _expect(site.valve_open(), "the stuck valve moved")
    return action


@scenario(
    "actions.dry_run_writes_nothing",
    area="actions",
    promise="`citynerve run --dry-run-actions` logs and reports what an action would write and "
    "writes nothing to the device",
)
async def dry_run_writes_nothing(tmp: Path) -> str:
    async with ValveSite(tmp, args=("--dry-run-actions",)) as site:
        await site.until("dry run: local actions write nothing")
        site.inputs.setValues(1, [1])  # a leak at the riser
        action = await site.until("action close_valve on riser-1.valve")
        _expect(": dry_run dry run: nothing written" in action, action)
        _expect(site.valve_open(), "the valve moved in dry run")
    return action


@scenario(
    "config.raw_write_needs_flag_and_is_logged",
    area="config",
    promise="a raw write on the control socket needs raw=true, stays within points marked writable "
    "unless forced, and every attempt leaves an audit line naming who, where and what",
)
async def raw_write_needs_flag_and_is_logged(tmp: Path) -> str:
    from citynerve.gateway.control import ControlError, ask

    async with ValveSite(tmp) as site:
        await site.control_ready()
        coil = {"unit": 1, "table": "coil", "address": 5, "value": 1}
        for params, why in (
            (coil, "needs the explicit flag raw=true"),
            ({**coil, "raw": True}, "not within points marked writable"),
        ):
            try:
                await ask(site.socket, "diag", bus="tcp-1", action="write", params=params)
            except ControlError as err:
                _expect(why in err.message, f"refused, but not saying {why!r}: {err.message}")
            else:
                raise Broken(f"a raw write {params} was not refused")
        refused = await site.until("raw write by uid ")
        _expect(f"pid {os.getpid()} (control socket)" in refused, f"who is missing: {refused}")
        await ask(
            site.socket,
            "diag",
            bus="tcp-1",
            action="write",
            params={**coil, "address": 3, "value": 0, "raw": True},
        )
        written = await site.until("coil 3 = 0: written")
        _expect(not site.valve_open(), "the writable valve coil was not written")
        await ask(
            site.socket, "diag", bus="tcp-1", action="write", params={**coil, "raw": True, "force": True}
        )
        await site.until("coil 5 = 1 (forced): written")
    return f"refused twice, then: {written}"
