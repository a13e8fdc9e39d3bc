"""Binding the rules to the devices (gateway/rules/binding.py, nesting.py): composites listed before
the rules they name, composites naming each other, chains of composites; through the real config
loader, the `citynerve` command and a real `citynerve run` against a pymodbus server."""

from __future__ import annotations

import contextlib
import json
import logging
import subprocess
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
from pymodbus.server import ModbusTcpServer

from citynerve.gateway.api import DeviceConfig, EventState, Reading, Sample, SampleBatch, Value
from citynerve.gateway.config import load_config
from citynerve.gateway.pipeline import Pipeline
from citynerve.gateway.rules import RuleEngine, build_engine
from citynerve.gateway.rules.binding import RuleBinding
from citynerve.gateway.rules.coincidence import CoincidenceCondition
from citynerve.gateway.rules.conditions import BooleanCondition
from citynerve.gateway.rules.instance import device_attrs
from citynerve.hil.eval.harness import CollectingSink
from tests.integration.run_process import Run
from tests.rules.conftest import T0, feed

HEAD = """
[gateway]
id = "gw-build"
org = {{ city = "310100", district = "310106", street = "310106013" }}

[store]
path = "var/gw.db"

[control]
socket = "var/gw.sock"

[web]
enabled = false

[log]
format = "json"
level = "info"

[[buses]]
id = "tcp"
protocol = "modbus_tcp"
host = "127.0.0.1"
port = {port}
timeout_s = 0.5
"""

DETECTOR = """
[[devices]]
id = "sd-{unit}"
bus = "tcp"
profile = "modbus-smoke-detector"
address = {unit}
poll_interval_s = 1
tags = ["zone:a", "building:b1"]
location = {{ address_code = "310106013007", building = "b1" }}
"""


def _toml(v: object) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    return json.dumps(v)  # strings, numbers, lists of strings read the same in TOML


def rule(rule_id: str, **keys: object) -> str:
    body = "".join(f"{k} = {_toml(v)}\n" for k, v in keys.items())
    return f'\n[[rules.rules]]\nid = "{rule_id}"\n{body}'


SMOKE = rule("s", kind="boolean", point="smoke_alarm", severity="critical")
STATE = rule("t", kind="boolean", point="alarm_state")


def site_config(folder: Path, rules: str, port: int = 1, units: int = 2) -> Path:
    text = HEAD.format(port=port) + "".join(DETECTOR.format(unit=u) for u in range(1, units + 1))
    path = folder / "gw.toml"
    path.write_text(text + rules)
    return path


def check(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "citynerve.gateway.cli", "config", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=path.parent,
        check=False,
    )


# -- a composite before the rules it names ---------------------------------------------------------


class Detectors:
    """A pymodbus server: smoke detectors at units 1.., holding register 0 their alarm state."""

    def __init__(self, units: int = 2) -> None:
        self.registers = {u: ModbusSequentialDataBlock(0, [0] * 2010) for u in range(1, units + 1)}
        for u, block in self.registers.items():
            block.setValues(2001, [u, 1])  # device address, baud code (blocks are 1-based)
        devices = {u: ModbusDeviceContext(hr=b) for u, b in self.registers.items()}
        context = ModbusServerContext(devices=devices, single=False)
        self.server = ModbusTcpServer(context, address=("127.0.0.1", 0))

    @property
    def port(self) -> int:
        return int(self.server.transport.sockets[0].getsockname()[1])  # type: ignore[attr-defined]

    def smoke(self, unit: int) -> None:
        self.registers[unit].setValues(1, [1])


@contextlib.asynccontextmanager
async def detectors(units: int = 2) -> AsyncIterator[Detectors]:
    d = Detectors(units)
    await d.server.serve_forever(background=True)
    try:
        yield d
    finally:
        await d.server.shutdown()


async def test_composites_listed_before_their_rules_raise_in_a_real_run(short_dir: Path) -> None:
    """`late` (all of s and t) and `pair` (coincidence of s, blocked alone by `lone`) stand before
    the rules they name: `config check` said valid, and the gateway bound them to nothing (looked
    up in file order), so they never raised. Now they are bound after their rules."""
    rules = (
        rule("late", kind="composite", mode="all", of=["s", "t"], severity="critical")
        + rule("pair", kind="composite", mode="coincidence", of=["s"], alone_unless=["lone"], count=2)
        + SMOKE
        + STATE
        + rule("lone", kind="boolean", point="tamper")
    )
    async with detectors() as site:
        path = site_config(short_dir, rules, site.port)
        assert check(path).returncode == 0
        async with Run(path) as run:
            built = await run.until("rule instances on 2 devices")
            assert built.startswith("rules: 8 rule instances"), built  # s, t, late, pair on each
            site.smoke(1)
            await run.until("rule late on sd-1: raised")
            site.smoke(2)
            await run.until("rule pair on sd-2: raised")
            await run.until("rule pair on sd-1: raised")
            assert any("rule lone applies to no device" in m for m in run.messages), run.messages[:10]


def test_a_coincidence_is_wired_to_rules_listed_after_it(tmp_path: Path) -> None:
    """The coincidence's `confirmed_by`, `alone_unless` and `relays` rules, listed after it, are
    wired too (the engine built from the real loader)."""
    rules = (
        rule(
            "conf",
            kind="composite",
            mode="coincidence",
            of=["s"],
            confirmed_by=["t"],
            alone_unless=["u"],
            relays=["t"],
            count=2,
        )
        + rule("u", kind="composite", mode="unwanted", of=["s"], count=2, quiet_s=600)
        + SMOKE
        + STATE
    )
    cfg = load_config(site_config(tmp_path, rules))
    assert cfg.rules is not None
    e = RuleEngine(cfg.rules, cfg.devices)
    conf = e.instances["conf|sd-1"].cond
    assert isinstance(conf, CoincidenceCondition)
    assert [c.key for c in conf.children] == ["s|sd-1", "t|sd-2"]  # own, then the area's confirming
    assert [c.key for c in conf.blockers] == ["u|sd-1"]
    assert [c.key for c in conf.relayed] == ["t|sd-2"]
    out = feed(e, [(T0, True)], "alarm_state", "sd-2") + feed(e, [(T0 + 1, True)], "smoke_alarm", "sd-1")
    assert ("conf", "sd-1", EventState.RAISED) in [(ev.rule, ev.device_id, ev.state) for ev in out]


def test_a_rule_bound_to_no_device_is_logged_once_at_build(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rules = SMOKE + rule("late", kind="composite", mode="all", of=["s", "nowhere"])
    rules += rule("nowhere", kind="boolean", point="no_such_point")
    cfg = load_config(site_config(tmp_path, rules))
    assert cfg.rules is not None
    with caplog.at_level(logging.INFO, "citynerve.gateway.rules"):
        e = RuleEngine(cfg.rules, cfg.devices)
        e.tick(T0)
    unbound = [r.getMessage() for r in caplog.records if "applies to no device" in r.getMessage()]
    assert len(unbound) == 2, unbound
    assert unbound[0].startswith("rule nowhere applies to no device"), unbound
    assert unbound[1].startswith("rule late applies to no device"), unbound  # bound after nowhere


# -- composites naming each other -------------------------------------------------------------------


def test_composites_naming_each_other_are_refused_with_their_ids(tmp_path: Path) -> None:
    """a -> b -> a passed `config check` ("valid") and neither was ever bound."""
    rules = (
        rule("a", kind="composite", mode="any", of=["b", "s"])
        + rule("b", kind="composite", mode="coincidence", of=["s"], confirmed_by=["c"])
        + rule("c", kind="composite", mode="any", of=["s", "a"])
        + SMOKE
    )
    proc = check(site_config(tmp_path, rules))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "gw.toml: rules: expected: composites name each other in a cycle: " in out, out
    assert "a --of--> b --confirmed_by--> c --of--> a" in out, out
    assert "Traceback" not in out


# -- chains of composites ---------------------------------------------------------------------------


def chain(depth: int) -> str:
    """`t`, then composites c0 .. c<depth-1>, each of the one below (and t)."""
    out = STATE + rule("c0", kind="composite", mode="any", of=["t", "t"])
    return out + "".join(
        rule(f"c{i}", kind="composite", mode="any", of=[f"c{i - 1}", "t"]) for i in range(1, depth)
    )


def test_composites_nested_too_deep_are_refused_with_the_chain(tmp_path: Path) -> None:
    """A chain of 500 composites passed `config check`; in the running gateway a raise at its
    bottom ended in RecursionError and the whole batch's events (its smoke alarm too) were lost."""
    assert check(site_config(tmp_path, SMOKE + chain(16))).returncode == 0  # 16 levels: allowed
    proc = check(site_config(tmp_path, SMOKE + chain(500)))
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "rules: expected: composites nested 500 deep, at most 16: c499 --of--> c498 " in out, out
    assert "--of--> c0 --of--> t; too deep: c16, c17, c18, c19, c20, ... (484 rules)" in out, out
    assert "Traceback" not in out


def test_a_long_chain_of_composites_raises_without_recursion(tmp_path: Path) -> None:
    """Propagation up the composites is a worklist: a chain far longer than the config allows (built
    here past the check, as an engine of an older config or a pack could be) raises every level."""
    cfg = load_config(site_config(tmp_path, SMOKE + chain(16)))
    assert cfg.rules is not None
    c15 = cfg.rules.rules[-1]
    deep = [*cfg.rules.rules]
    for i in range(16, 2000):
        deep.append(c15.model_copy(update={"id": f"c{i}", "of": (f"c{i - 1}", "t")}))
    unchecked = cfg.rules.model_copy(update={"rules": tuple(deep)})  # past RulesConfig's validation
    e = RuleEngine(unchecked, cfg.devices)
    out = e.evaluate(
        [Reading("sd-1", "smoke_alarm", True, "", T0), Reading("sd-1", "alarm_state", 1, "", T0)]
    )
    raised = [ev.rule for ev in out if ev.state is EventState.RAISED]
    assert raised == ["s", "t", *(f"c{i}" for i in range(2000))]


class BrokenCondition(BooleanCondition):
    """A rule's condition with a bug: it raises on every reading."""

    def on_reading(self, value: Value, ts: float) -> bool | None:
        raise ZeroDivisionError("a bug in a rule")


def test_a_rule_that_raises_keeps_the_batch_s_smoke_alarm(tmp_path: Path) -> None:
    """A rule raising on a batch lost every event of the batch: the smoke detector's critical
    alarm beside it never went out. Now the smoke alarm goes out and the device is faulted, the
    failed rule named."""
    cfg = load_config(site_config(tmp_path, STATE + SMOKE))
    assert cfg.rules is not None
    e = RuleEngine(cfg.rules, cfg.devices)
    broken = e.instances["t|sd-1"]
    broken.cond = BrokenCondition(broken.rule)  # type: ignore[arg-type]
    sink = CollectingSink()
    pipe = Pipeline({d.id: d for d in cfg.devices}, sink, e)
    pipe.submit(SampleBatch("sd-1", T0, (Sample("smoke_alarm", True), Sample("alarm_state", 1))))
    got = [(ev.kind, ev.rule, ev.state) for ev in sink.events]
    assert ("s", "s", EventState.RAISED) in got, got  # the smoke alarm
    assert ("device_fault", "pipeline.rules", EventState.RAISED) in got, got
    fault = next(ev for ev in sink.events if ev.kind == "device_fault")
    assert "t|sd-1" in fault.message, fault.message


# -- binding many devices ---------------------------------------------------------------------------


class CountedDevices(dict[str, DeviceConfig]):
    """The devices, counting the walks over them."""

    walks = 0

    def values(self) -> Any:
        CountedDevices.walks += 1
        return super().values()


def test_binding_walks_the_devices_once_per_rule_not_once_per_device(tmp_path: Path) -> None:
    """Each coincidence and unwanted instance scanned every device for its area (and copied the
    device list first): 4,000 detectors with the smoke-fire pack took 15 s, a reload of 5,000
    held the event loop 16 s. Now the devices are indexed by tag once."""
    text = "".join(DETECTOR.format(unit=u).replace('"zone:a"', f'"zone:z{u // 2}"') for u in range(3, 201))
    path = site_config(tmp_path, text + '\n[[rules.packs]]\nname = "smoke-fire"\n')
    cfg = load_config(path)
    assert cfg.rules is not None
    devices = CountedDevices((d.id, d) for d in cfg.devices)
    CountedDevices.walks = 0
    bound = RuleBinding(cfg.rules, devices, {d.id: device_attrs(d) for d in cfg.devices})
    assert CountedDevices.walks <= len(cfg.rules.all_rules()) + 1, CountedDevices.walks
    conf = bound.instances["smoke-fire.smoke_confirmed|sd-4"].cond
    assert isinstance(conf, CoincidenceCondition)
    assert [c.key for c in conf.children] == [
        "smoke-fire.smoke_register|sd-4",
        "smoke-fire.smoke_register|sd-5",
    ]


def test_an_area_is_the_devices_sharing_a_tag_in_config_order(tmp_path: Path) -> None:
    """A device in two areas of a group (two `zone:` tags) is confirmed by either's devices, each
    once, in config order; a device without the tag is alone."""
    tags = {1: '"zone:a", "zone:b"', 2: '"zone:b"', 3: '"zone:a"', 4: '"zone:b", "zone:a"', 5: ""}
    text = "".join(DETECTOR.format(unit=u).replace('"zone:a", "building:b1"', tags[u]) for u in range(1, 6))
    rules = SMOKE + rule("pair", kind="composite", mode="coincidence", of=["s"], alone_s=60)
    path = site_config(tmp_path, rules, units=0)
    path.write_text(path.read_text() + text)
    cfg = load_config(path)
    assert cfg.rules is not None
    e = RuleEngine(cfg.rules, cfg.devices)

    def area(device: str) -> list[str]:
        cond = e.instances[f"pair|{device}"].cond
        assert isinstance(cond, CoincidenceCondition)
        return [c.device_id for c in cond.children]

    assert area("sd-1") == ["sd-1", "sd-2", "sd-3", "sd-4"]
    assert area("sd-2") == ["sd-2", "sd-1", "sd-4"]
    assert area("sd-3") == ["sd-3", "sd-1", "sd-4"]
    assert area("sd-4") == ["sd-4", "sd-1", "sd-2", "sd-3"]
    assert area("sd-5") == ["sd-5"]


async def test_the_runtime_builds_the_engine_off_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """At start and at every reload the engine was built on the event loop: no polling, no alarm
    out, for as long as binding took. Now in a worker thread (build_engine, rebind_rules)."""
    cfg = load_config(site_config(tmp_path, SMOKE))
    assert cfg.rules is not None
    threads: list[threading.Thread] = []
    real = RuleBinding.__init__

    def recorded(self: RuleBinding, *args: Any) -> None:
        threads.append(threading.current_thread())
        real(self, *args)

    monkeypatch.setattr(RuleBinding, "__init__", recorded)
    engine = await build_engine(cfg.rules, cfg.devices, state=MemoryState())
    assert len(engine.instances) == 2
    assert threads and threading.main_thread() not in threads, threads


class MemoryState:
    async def get(self, key: str) -> str | None:
        return None

    async def put(self, key: str, value: str) -> None:
        return None
