"""A serial bus's USB adapter plugged (back) in while the gateway runs: the bus owner looks for the
missing port about once a second and opens it as soon as it is there, whatever the open's backoff
(which doubles up to backoff_max_s, 5 minutes by default: the technician waited that long and
rebooted the box). A port that is there and still cannot be opened keeps the backoff: no spinning.
While it is missing, `citynerve status`, the status page and /metrics say the bus waits for it.

Real peers: the real bus owner and drivers on pty pairs, the configured path a symlink that is
missing, then put in place (as udev does for /dev/serial/by-id); a real `citynerve run`."""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import random
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from serial_support import Collector, dlt_device

from citynerve.drivers.dlt645 import Dlt645Driver
from citynerve.drivers.firepanel import FirePanelBusConfig, FirePanelDevice, FirePanelDriver
from citynerve.drivers.serialio import MeterSerialSettings, SerialBusConfig, SerialLine
from citynerve.gateway.bus import BusOwner
from citynerve.hil.platform import free_port
from citynerve.hil.sim.serial import FirePanelStream, SerialMeterBus, SimDlt645Meter
from tests.bus.owner_support import running, wait_for

# The open's backoff is long from its first retry (backoff_initial_s / 4 = 30 s, doubling to 300 s,
# less up to half of it at random): without looking for the port, nothing would be read for at
# least 15 s after the adapter is back.
# With it, the read comes within about 2 s (one check a second, the offline meter's probe within
# a second); BACK_WITHIN_S leaves a wide margin either way.
LONG_BACKOFF = {"backoff_initial_s": 120.0, "backoff_max_s": 300.0}
BACK_WITHIN_S = 8.0


def meter_bus_owner(link: Path, sink: Collector, **bus: float) -> tuple[BusOwner, Dlt645Driver]:
    cfg = SerialBusConfig(
        id="rs485-1", protocol="dlt645", timeout_s=0.3, retries=0, offline_after=1, port=str(link), **bus
    )
    device = dlt_device(points={"e": {"di": "00010000"}}, poll_interval_s=0.5)
    driver = Dlt645Driver(cfg, [device])
    return BusOwner(cfg, [device], driver, sink, rng=random.Random(1)), driver


def read_since(sink: Collector, seen: int) -> bool:
    return any(s.value == 5.5 for b in sink.batches[seen:] for s in b.samples)


async def test_a_meter_bus_whose_adapter_is_missing_at_start_reads_within_seconds_of_it_appearing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="citynerve.bus")
    link = tmp_path / "ttyUSB0"
    sink = Collector()
    owner, driver = meter_bus_owner(link, sink, **LONG_BACKOFF)
    async with SerialMeterBus(
        meters=[SimDlt645Meter("000000000161", values={0x00010000: 5.5})], link=link
    ) as bus:
        bus.unplug()  # no /dev/ttyUSB0 when the gateway starts
        async with running(owner):
            await wait_for(lambda: owner.health["em-0161"].online is False, 5.0, "offline")
            await asyncio.sleep(2.0)  # a few checks while the port is missing: nothing opened
            assert owner.channel_open is False and owner.counters.channel_errors == 1
            bus.replug()
            took = await wait_for(lambda: read_since(sink, 0), BACK_WITHIN_S, "first read after the adapter")
    assert took < BACK_WITHIN_S and driver.line.opens == 1
    back = [r.getMessage() for r in caplog.records if "reopening" in r.getMessage()]
    assert back == [f"bus rs485-1: adapter {link} is back; reopening"]


async def test_a_meter_bus_whose_adapter_is_pulled_and_plugged_back_reads_within_seconds(
    tmp_path: Path,
) -> None:
    """Pulled mid-run: EIO on the open port, then the node is gone; plugged back, read at once (the
    reopen after the loss fails, and the open's backoff is 15 s to 30 s by then)."""
    link = tmp_path / "ttyUSB0"
    sink = Collector()
    owner, driver = meter_bus_owner(link, sink, **LONG_BACKOFF)
    meter = SimDlt645Meter("000000000161", values={0x00010000: 5.5})
    async with SerialMeterBus(meters=[meter], link=link) as bus, running(owner):
        await wait_for(lambda: read_since(sink, 0), 5.0, "first read")
        bus.unplug()
        await wait_for(lambda: owner.health["em-0161"].online is False, 5.0, "offline")
        await asyncio.sleep(2.0)
        assert owner.channel_open is False
        seen = len(sink.batches)
        bus.replug()
        await wait_for(lambda: read_since(sink, seen), BACK_WITHIN_S, "read after plugging back")
    assert driver.line.opens == 2


def _panel_bus_owner(link: Path, sink: Collector) -> BusOwner:
    cfg = FirePanelBusConfig(id="panel-1", protocol="firepanel", port=str(link), **LONG_BACKOFF)
    device = FirePanelDevice.model_validate(
        {"id": "fp-1", "bus": "panel-1", "profile": "firepanel-gst", "address": "GST-01",
         "location": {"address_code": "320508001"}, "points": {"alarms": {"field": "alarms_active"}}}
    )  # fmt: skip
    return BusOwner(cfg, [device], FirePanelDriver(cfg, [device]), sink, rng=random.Random(1))


async def test_a_fire_panel_bus_listens_within_seconds_of_its_adapter_appearing(tmp_path: Path) -> None:
    """A listening bus (the fire panel's printer port) alike: a fire alarm is not left unheard for
    the open's backoff."""
    link = tmp_path / "ttyPANEL"
    sink = Collector()
    owner = _panel_bus_owner(link, sink)
    async with running(owner):
        await wait_for(lambda: owner.channel_error is not None, 5.0, "open tried")
        await asyncio.sleep(2.0)
        async with FirePanelStream(link=link) as panel:
            await wait_for(lambda: owner.channel_open, BACK_WITHIN_S, "panel port opened")
            await panel.alarm(4, 4, location="一层大厅东侧")
            await wait_for(lambda: any(e.kind == "smoke" for e in sink.events), 5.0, "fire alarm heard")


async def test_a_fire_panel_bus_pulled_mid_run_says_so_at_once_and_listens_when_plugged_back(
    tmp_path: Path,
) -> None:
    """Pulled while listening: the status says the bus waits for its adapter as soon as the loss is
    seen (it used to show only after the first reopen, which a listening bus tried after the open's
    backoff: 30 s here, 1.25 s by default), and the panel is heard within seconds of the replug, not
    after that backoff."""
    link = tmp_path / "ttyPANEL"
    sink = Collector()
    owner = _panel_bus_owner(link, sink)
    async with running(owner):
        async with FirePanelStream(link=link):
            await wait_for(lambda: owner.channel_open, 5.0, "panel port opened")
        # The adapter pulled: its node went with it, before the listener saw the port fail.
        await wait_for(lambda: owner.counters.channel_errors == 1, 5.0, "loss seen")
        assert owner.snapshot()["adapter_missing"] == str(link)  # at the loss, no reopen waited for
        async with FirePanelStream(link=link) as panel:
            await wait_for(lambda: owner.channel_open, BACK_WITHIN_S, "panel port opened again")
            await panel.alarm(4, 4, location="一层大厅东侧")
            await wait_for(lambda: any(e.kind == "smoke" for e in sink.events), 5.0, "fire alarm heard")
            assert owner.snapshot()["adapter_missing"] is None


@pytest.mark.parametrize("port", ["in use by another program", "not a tty", "appears in use"])
async def test_a_port_that_is_there_but_cannot_be_opened_keeps_the_backoff(
    tmp_path: Path, port: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Busy, not a terminal, or a missing port that appears busy: the open is tried once (once more
    when it appears), then at the backoff (5 s to 10 s, then 10 s to 20 s here), not at every
    check of the port."""
    link, held = tmp_path / "ttyUSB0", tmp_path / "ttyHELD"
    sink = Collector()
    owner, _ = meter_bus_owner(link, sink, backoff_initial_s=40.0, backoff_max_s=300.0)
    other_program = SerialLine("other", MeterSerialSettings(port=str(held)))  # holds the port's lock
    async with SerialMeterBus(link=held), other_program:
        if port == "in use by another program":
            link.symlink_to(held.readlink())
        elif port == "not a tty":
            link.write_bytes(b"")
        async with running(owner):
            await wait_for(lambda: owner.counters.channel_errors == 1, 5.0, "first open tried")
            if port == "appears in use":
                await asyncio.sleep(1.5)
                link.symlink_to(held.readlink())  # in place at once, already locked
                await wait_for(lambda: owner.counters.channel_errors == 2, 5.0, "open tried when it appeared")
            await asyncio.sleep(3.0)  # three checks of the port, well before the open's next retry
            assert owner.channel_open is False
            assert owner.counters.channel_errors == (2 if port == "appears in use" else 1)
            if port != "not a tty":  # the status in the field's words, the journal with the errno too
                assert owner.snapshot()["channel_error"] == f"serial port {link} is in use by another program"
                logged = [r.getMessage() for r in caplog.records if "cannot open channel" in r.getMessage()]
                assert logged and "in use by another program ([Errno 11]" in logged[-1], logged


class HalfGoneAdapter:
    """A port whose node is there but whose open fails with EIO, as a USB adapter's half-gone after
    a glitch: a real pseudo-terminal not unlocked yet (the kernel refuses its slave with EIO);
    `recover()` unlocks it, the adapter working again under the same node."""

    def __init__(self, link: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.ptsname.restype = ctypes.c_char_p
        self.master = self._libc.posix_openpt(os.O_RDWR | os.O_NOCTTY)
        assert self.master >= 0 and self._libc.grantpt(self.master) == 0
        link.symlink_to(self._libc.ptsname(self.master).decode())

    def recover(self) -> None:
        assert self._libc.unlockpt(self.master) == 0

    def close(self) -> None:
        os.close(self.master)


async def test_a_port_that_is_there_but_fails_with_eio_names_it_and_opens_as_soon_as_it_works(
    tmp_path: Path,
) -> None:
    """The node is there, the open fails with EIO (ENODEV, ENXIO alike): the status names the errno
    and the port and says what to do, and the open is tried again every second, not at the open's
    backoff (15 s to 30 s here): a half-gone adapter that works again (re-plugged, or recovered in
    place) is read at once."""
    link = tmp_path / "ttyUSB0"
    adapter = HalfGoneAdapter(link)
    owner, driver = meter_bus_owner(link, Collector(), **LONG_BACKOFF)
    try:
        async with running(owner):
            await wait_for(lambda: owner.counters.channel_errors == 1, 5.0, "first open tried")
            status = owner.snapshot()
            assert status["adapter_missing"] is None and status["channel"] == "down"
            assert status["channel_error"] == (
                f"adapter {link} is there but does not work (EIO: Input/output error): unplug it and "
                "plug it back in"
            )
            adapter.recover()
            await wait_for(lambda: owner.channel_open, BACK_WITHIN_S, "opened once the adapter works")
            assert owner.snapshot()["channel_error"] is None and driver.line.opens == 1
    finally:
        adapter.close()


CITYNERVE = str(Path(sys.executable).with_name("citynerve"))


def _status(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`citynerve status` through the running gateway's control socket, on a wide terminal."""
    env = {**os.environ, "COLUMNS": "250"}
    return subprocess.run(
        [CITYNERVE, "status", "-c", str(config), *args], capture_output=True, text=True, timeout=30, env=env
    )


def _bus(config: Path) -> dict[str, object] | None:
    out = _status(config, "--json")
    if out.returncode != 0:
        return None  # the gateway is still starting
    bus: dict[str, object] = json.loads(out.stdout)["buses"][0]
    return bus


def _until(proc: subprocess.Popen[bytes], log: Path, predicate: Callable[[], object], what: str) -> None:
    deadline = time.monotonic() + 30.0
    while not predicate():
        assert proc.poll() is None, f"gateway exited {proc.returncode}:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"{what}: not within 30 s\n{log.read_text()[-3000:]}"
        time.sleep(0.2)


def test_status_says_the_bus_waits_for_its_adapter_until_it_is_plugged_in(tmp_path: Path) -> None:
    """A real `citynerve run` whose meter bus has no port: `citynerve status` says "waiting for
    adapter <port> — plug it in" (and `adapter_missing` in JSON, on the status page, in /metrics),
    not only a channel error; once a port is there the bus opens and the words go."""
    link, web = tmp_path / "ttyUSB0", free_port()
    config = tmp_path / "gw.toml"
    config.write_text(
        textwrap.dedent(
            f"""
            [gateway]
            id = "gw-adapter"
            org = {{ city = "320500", district = "320508", street = "320508001" }}
            [store]
            path = "var/gw.db"
            [control]
            socket = "var/gw.sock"
            [web]
            enabled = true
            bind = "127.0.0.1"
            port = {web}
            [[buses]]
            id = "rs485-1"
            protocol = "dlt645"
            port = "{link}"
            timeout_s = 0.3
            [[devices]]
            id = "em-0161"
            bus = "rs485-1"
            profile = "dlt645-single-phase"
            address = "000000000161"
            poll_interval_s = 1
            location = {{ address_code = "320508001007" }}
            """
        )
    )
    log = tmp_path / "gateway.log"
    with log.open("ab") as out:
        proc = subprocess.Popen([CITYNERVE, "run", "-c", str(config)], stdout=out, stderr=subprocess.STDOUT)
    master, slave = os.openpty()
    try:
        _until(proc, log, lambda: (_bus(config) or {}).get("adapter_missing") == str(link), "adapter missing")
        bus = _bus(config)
        assert bus is not None and bus["channel"] == "down" and bus["channel_error"]
        words = "".join(_status(config).stdout.split())  # a long tmp path may wrap: compare unwrapped
        assert "".join(f"bus rs485-1: waiting for adapter {link} — plug it in".split()) in words
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/status", timeout=5) as resp:
            assert json.loads(resp.read())["buses"][0]["adapter_missing"] == str(link)
        with urllib.request.urlopen(f"http://127.0.0.1:{web}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        assert 'citynerve_bus_adapter_missing{bus="rs485-1",protocol="dlt645"} 1\n' in metrics

        link.symlink_to(os.ttyname(slave))  # the adapter plugged in (no meter answers: the port opens)
        _until(proc, log, lambda: (_bus(config) or {}).get("channel") == "open", "port opened")
        bus = _bus(config)
        assert bus is not None and bus["adapter_missing"] is None
        assert "waiting for adapter" not in _status(config).stdout
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        os.close(master)
        os.close(slave)
