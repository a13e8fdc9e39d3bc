"""A simulated RS-485 bus on a pty pair: the gateway opens the slave side, meters answer on the master."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import random
import termios
import time
import tty
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from citynerve.drivers.cjt188 import codec as cjt
from citynerve.drivers.dlt645 import codec as dlt
from citynerve.hil.sim.serial._meters import SimCjt188Meter, SimDlt645Meter


class Fault(enum.StrEnum):
    """Errors the bus can inject into the next replies."""

    BAD_CHECKSUM = "bad_checksum"  # checksum byte off by one
    TRUNCATED = "truncated"  # only the first half of the reply
    SILENCE = "silence"  # no reply at all
    NOISE = "noise"  # random bytes (including 68) before the reply
    NO_PREAMBLE = "no_preamble"  # reply without its FE bytes
    WRONG_ADDRESS = "wrong_address"  # a reply from another meter (address changed, valid checksum)


@dataclass
class _Injection:
    fault: Fault
    count: int
    address: str | None


def _open_pty() -> tuple[int, int, str]:
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no CR/LF translation: a serial line carries bytes
    os.set_blocking(master, False)
    return master, slave, os.ttyname(slave)


class SerialMeterBus:
    """DL/T 645 and CJ/T 188 meters on one simulated line.

    `async with SerialMeterBus(meters=[...], baudrate=2400, wire_time=True) as bus:` then open
    `bus.port` from the gateway (a symlink `link` if given, else the pty slave path).
    `wire_time`: each reply byte arrives when it would on a real line at `baudrate`
    (`bits_per_byte`, 11 for 8E1), and a request occupies the line for its own wire time first.
    `reply_delay_s`: the meter's think time before answering. `enforce_baud`: meters answer only
    when the gateway opened the line at `baudrate` (a pty carries the setting, not the timing).
    `echo`: the line hears every request back (adapters without echo suppression).
    """

    def __init__(
        self,
        *,
        meters: Sequence[SimDlt645Meter | SimCjt188Meter] = (),
        baudrate: int = 2400,
        bits_per_byte: int = 11,
        wire_time: bool = False,
        reply_delay_s: float = 0.0,
        link: str | Path | None = None,
        echo: bool = False,
        enforce_baud: bool = False,
        seed: int = 1,
    ) -> None:
        self.meters = list(meters)
        self.baudrate = baudrate
        self.bits_per_byte = bits_per_byte
        self.wire_time = wire_time
        self.reply_delay_s = reply_delay_s
        self.link = Path(link) if link else None
        self.echo = echo  # an RS-485 adapter that hears its own transmission
        self.enforce_baud = enforce_baud
        self.requests = 0  # complete request frames received
        self.replies = 0
        self.collisions = 0  # requests that several meters answered at once
        self.bytes_in = 0
        self.bytes_out = 0
        self._rng = random.Random(seed)
        self._faults: list[_Injection] = []
        self._master = -1
        self._slave = -1
        self._slave_path = ""
        self._queue: asyncio.Queue[tuple[bytes, int, float]] = asyncio.Queue()
        self._rx_since_frame = 0  # bytes heard since the last request frame (its FE preamble too)
        self._task: asyncio.Task[None] | None = None
        self._dlt = dlt.StreamParser()
        self._cjt = cjt.StreamParser()

    @property
    def byte_time_s(self) -> float:
        return self.bits_per_byte / self.baudrate

    @property
    def port(self) -> str:
        """What the gateway opens."""
        return str(self.link) if self.link else self._slave_path

    async def __aenter__(self) -> SerialMeterBus:
        self._plug()
        self._task = asyncio.create_task(self._respond(), name="sim.serial-bus.respond")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._unplug()

    def _plug(self) -> None:
        self._master, self._slave, self._slave_path = _open_pty()
        asyncio.get_running_loop().add_reader(self._master, self._on_readable)
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self._slave_path)

    def _unplug(self) -> None:
        if self._master >= 0:
            asyncio.get_running_loop().remove_reader(self._master)
            os.close(self._master)
            os.close(self._slave)
        self._master = self._slave = -1
        if self.link:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def unplug(self) -> None:
        """Pull the USB adapter: the gateway's next read fails with EIO and the device node goes."""
        self._unplug()

    def replug(self) -> None:
        """Plug it back: a new device node behind the same `link` path."""
        self._dlt, self._cjt = dlt.StreamParser(), cjt.StreamParser()
        self._rx_since_frame = 0
        self._plug()

    def inject(self, fault: Fault, count: int = 1, *, address: str | None = None) -> None:
        """Apply `fault` to the next `count` replies (of the meter at `address`, or any)."""
        self._faults.append(_Injection(fault, count, address))

    def _on_readable(self) -> None:
        try:
            data = os.read(self._master, 4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:  # nobody holds the slave side open; nothing to hear
            return
        self.bytes_in += len(data)
        if self.echo:
            self._write(data)
        raws = [f.raw for f in self._dlt.feed(data) if not f.is_reply]
        raws += [f.raw for f in self._cjt.feed(data) if not f.is_reply]
        self._rx_since_frame += len(data)
        for raw in raws:
            self.requests += 1
            # the request held the line for every byte heard since the previous one (FE included)
            self._queue.put_nowait((raw, max(len(raw), self._rx_since_frame), time.monotonic()))
            self._rx_since_frame = 0
        self._dlt.rejected()
        self._cjt.rejected()

    async def _respond(self) -> None:
        while True:
            raw, wire_bytes, heard_at = await self._queue.get()
            # The request held the line for its own wire time from when it was heard; the reply is
            # timed from that instant, not from when a timer woke us (the event loop's timers round
            # up to the millisecond, which a real line does not add).
            due = heard_at + wire_bytes * self.byte_time_s if self.wire_time else time.monotonic()
            if self.wire_time:
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            if self.enforce_baud and not self._speed_matches():
                continue  # at another baud rate the meter hears noise, not a frame: no reply
            reply, address = self._answer(raw)
            if reply is None:
                continue
            reply = self._apply_faults(reply, address)
            if not reply:
                continue
            if self.reply_delay_s:
                due += self.reply_delay_s
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            await self._send(reply, due)
            self.replies += 1

    def _answer(self, raw: bytes) -> tuple[bytes | None, str]:
        """Every meter that takes the request answers; two or more at once (a search's partial
        address, or two meters on one address) collide on the line (`collide`), so the gateway hears
        garbage with a bad checksum."""
        replies: list[tuple[bytes, str]] = []
        for meter in self.meters:
            reply = None
            if isinstance(meter, SimDlt645Meter):
                with contextlib.suppress(Exception):
                    reply = meter.answer(dlt.parse_frame(raw))
            else:
                with contextlib.suppress(Exception):
                    reply = meter.answer(cjt.parse_frame(raw))
            if reply is not None:
                replies.append((reply, meter.address))
        if not replies:
            return None, ""
        if len(replies) == 1:
            return replies[0]
        self.collisions += 1
        addresses = {a for _, a in replies}
        return collide([r for r, _ in replies]), addresses.pop() if len(addresses) == 1 else ""

    def _speed_matches(self) -> bool:
        """The speed the gateway set on the line (the tty's termios, shared with our slave fd)."""
        try:
            speed = termios.tcgetattr(self._slave)[5]
        except (termios.error, OSError):
            return False
        return bool(speed == getattr(termios, f"B{self.baudrate}", None))

    def _apply_faults(self, reply: bytes, address: str) -> bytes:
        for injection in self._faults:
            if injection.count <= 0 or injection.address not in (None, address):
                continue
            injection.count -= 1
            fault = injection.fault
            body = reply.lstrip(b"\xfe")
            if fault is Fault.SILENCE:
                return b""
            if fault is Fault.BAD_CHECKSUM:
                return reply[:-2] + bytes([(reply[-2] + 1) & 0xFF]) + reply[-1:]
            if fault is Fault.TRUNCATED:
                return reply[: len(reply) - len(body) // 2]
            if fault is Fault.NOISE:
                junk = bytes(
                    self._rng.choice([0x68, 0x16, 0x00, 0xFF, self._rng.randrange(256)]) for _ in range(7)
                )
                return junk + reply
            if fault is Fault.NO_PREAMBLE:
                return body
            if fault is Fault.WRONG_ADDRESS:
                return _readdress(body)
        self._faults = [i for i in self._faults if i.count > 0]
        return reply

    async def _send(self, data: bytes, started: float) -> None:
        """Send `data` as if its first byte began at `started` (monotonic): byte n is complete and
        written n + 1 byte times later; bytes already due go out at once."""
        if self._master < 0:
            return
        if not self.wire_time:
            self._write(data)
            return
        bt = self.byte_time_s
        sent = 0
        while sent < len(data):
            due = min(len(data), int((time.monotonic() - started) / bt))
            if due > sent:
                self._write(data[sent:due])
                sent = due
            if sent < len(data):
                # a byte is complete on the wire one byte time after it started
                await asyncio.sleep(max(0.0, started + (sent + 1) * bt - time.monotonic()))

    def _write(self, data: bytes) -> None:
        if self._master >= 0:
            with contextlib.suppress(OSError):
                os.write(self._master, data)
                self.bytes_out += len(data)


def collide(replies: Sequence[bytes]) -> bytes:
    """What the master hears when several meters drive the line at once. On RS-485 a driven 0
    (space) wins over the idle 1 more often than not: model each byte time as the AND of what the
    drivers send, so overlapping frames turn into one run of bytes whose checksum does not hold.
    (The meters start together: each one's think time is the same in this model.)"""
    longest = max(len(r) for r in replies)
    out = bytearray(b"\xff" * longest)
    for reply in replies:
        for i, byte in enumerate(reply):
            out[i] &= byte
    # Now and then the AND of two frames is itself a valid frame (identical replies, or a lucky
    # checksum): a real line garbles them anyway (drivers are never in step to the bit), so the
    # model damages the checksum byte until neither parser finds a frame.
    while _any_frame(bytes(out)):
        out[-2] ^= 0x5A
        out[-2] = (out[-2] + 1) & 0xFF
    return bytes(out)


def _any_frame(data: bytes) -> bool:
    return bool(dlt.StreamParser().feed(data)) or bool(cjt.StreamParser().feed(data))


def _readdress(body: bytes) -> bytes:
    """The same reply as if another meter sent it: first address byte +1, checksum recomputed."""
    changed = bytearray(body)
    idx = 1 if changed[7] == 0x68 else 2  # DL/T 645 address at 1..6, CJ/T 188 at 2..8
    changed[idx] = (changed[idx] + 1) & 0xFF
    changed[-2] = sum(changed[:-2]) & 0xFF
    return bytes(changed)
