"""A line relay between the gateway and simulated devices that re-times bytes like a real UART.

A pty carries bytes, not bits: a gateway at 9600 baud and a meter at 2400 understand each other
perfectly over a pty pair. This relay puts the physics back. The gateway opens `relay.port` (a pty
it creates); the relay passes every byte to each device-side port (simulators' ptys) and back, but
re-times it: the sender's bits (start, data, parity, stop) at the sender's baud rate are sampled by
a receiver UART at its own baud rate and format. Same settings: bytes pass unchanged. Different
settings: the receiver sees what a real one would (shifted bits, framing and parity errors, bytes
too many or too few), deterministically. Options add seeded bit errors (a noisy line) and
collisions (two device ports transmitting at once: their waveforms AND-ed, the low level winning),
and A/B swapped (`inverted`: every level upside down).

The gateway side's baud rate and stop bits are read from its pty's termios, so a gateway (or a
probe) changing its settings is seen at once. A pty drops the parity flag (PARENB), so the gateway
side's parity is `gateway_parity` (default: the same as each device's, i.e. parity never differs).

    async with LineRelay([(meter_bus.port, LineSettings(2400, "E", 1))]) as relay:
        open relay.port from the gateway at any settings

A device entry with path None gets a pty made by the relay (`relay.device_ports[i]`) for a simulator
that opens its port itself (a pymodbus RTU server).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import random
import termios
import tty
from collections.abc import Sequence
from types import TracebackType

from citynerve.gateway.bus.probe import LineSettings
from citynerve.hil.sim.serial._bus import collide

_SPEEDS = {
    getattr(termios, f"B{b}"): b
    for b in (300, 600, 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)
    if hasattr(termios, f"B{b}")
}


def frame_bits(data: bytes, s: LineSettings) -> list[int]:
    """The line levels of `data` sent back to back: start 0, data LSB first, parity, stop 1s."""
    bits: list[int] = []
    for byte in data:
        d = [(byte >> i) & 1 for i in range(s.bytesize)]
        bits.append(0)
        bits += d
        if s.parity != "N":
            ones = sum(d) & 1
            bits.append(ones if s.parity == "E" else 1 - ones)
        bits += [1] * s.stopbits
    return bits


def sample(bits: Sequence[int], tx_baud: int, rx: LineSettings) -> bytes:
    """What a receiver UART at `rx` reads from `bits` sent at `tx_baud`.

    Linux without IGNPAR / PARMRK delivers a character with a framing or parity error as 00."""
    r = rx.baudrate / tx_baud  # length of one sent bit, in receiver bit times
    n = len(bits)

    def level(t: float) -> int:
        i = math.floor(t / r)
        return bits[i] if 0 <= i < n else 1

    out = bytearray()
    i = 0  # sender bit index to search for the next falling edge from
    while i < n:
        if bits[i] != 0 or (i > 0 and bits[i - 1] != 1):
            i += 1
            continue
        start = i * r
        if level(start + 0.5) != 0:  # a glitch shorter than half a bit: not a start bit
            i += 1
            continue
        byte = 0
        for k in range(rx.bytesize):
            byte |= level(start + 1.5 + k) << k
        pos = 1 + rx.bytesize
        ok = True
        if rx.parity != "N":
            ones = bin(byte).count("1") & 1
            want = ones if rx.parity == "E" else 1 - ones
            ok = level(start + pos + 0.5) == want
            pos += 1
        if level(start + pos + 0.5) != 1:  # framing error: the stop bit is low
            ok = False
        out.append(byte if ok else 0)
        # the receiver looks for the next start bit after the middle of the stop bit
        i = max(i + 1, math.ceil((start + pos + 0.5) / r))
    return bytes(out)


def retime(data: bytes, tx: LineSettings, rx: LineSettings, *, inverted: bool = False) -> bytes:
    """`inverted`: A and B swapped, every level upside down between sender and receiver."""
    if inverted:
        return sample([1 - b for b in frame_bits(data, tx)], tx.baudrate, rx)
    if tx.baudrate == rx.baudrate and tx.parity == rx.parity and tx.bytesize == rx.bytesize:
        return data  # stop bits only matter to the sender's pace
    return sample(frame_bits(data, tx), tx.baudrate, rx)


class LineRelay:
    """The relay: one gateway-side pty, any number of device-side ports, each with its settings."""

    def __init__(
        self,
        devices: Sequence[tuple[str | None, LineSettings]],
        *,
        gateway_parity: str | None = None,
        bit_error_rate: float = 0.0,
        collision_window_s: float = 0.005,
        inverted: bool = False,
        seed: int = 1,
    ) -> None:
        self.devices = list(devices)
        self.gateway_parity = gateway_parity
        self.bit_error_rate = bit_error_rate
        self.collision_window_s = collision_window_s
        self.inverted = inverted  # A/B swapped at the gateway's terminals
        self._rng = random.Random(seed)
        self.port = ""
        self.device_ports: list[str] = []  # what each simulator opens (its own path, or a pty made here)
        self._master = self._slave = -1
        self._dev_fds: list[int] = []
        self._own_slaves: list[int] = []
        self._pending: list[tuple[int, bytes]] = []
        self._flush: asyncio.TimerHandle | None = None
        self.bytes_to_devices = 0
        self.bytes_to_gateway = 0
        self.collisions = 0

    async def __aenter__(self) -> LineRelay:
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        loop = asyncio.get_running_loop()
        for path, _ in self.devices:
            if path is None:  # a simulator that opens a port itself (pymodbus): give it a pty
                fd, dev_slave = os.openpty()
                tty.setraw(dev_slave)
                os.set_blocking(fd, False)
                self._own_slaves.append(dev_slave)
                self.device_ports.append(os.ttyname(dev_slave))
            else:
                fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
                with contextlib.suppress(termios.error):
                    tty.setraw(fd)
                self.device_ports.append(path)
            self._dev_fds.append(fd)
            loop.add_reader(fd, self._from_device, len(self._dev_fds) - 1)
        loop.add_reader(self._master, self._from_gateway)
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        loop = asyncio.get_running_loop()
        if self._flush is not None:
            self._flush.cancel()
        for fd in [self._master, *self._dev_fds]:
            with contextlib.suppress(Exception):
                loop.remove_reader(fd)
        for fd in [self._master, self._slave, *self._dev_fds, *self._own_slaves]:
            with contextlib.suppress(OSError):
                os.close(fd)
        self._dev_fds.clear()

    def gateway_settings(self, device: LineSettings) -> LineSettings:
        """The gateway side as it opened its pty: speed and stop bits from termios."""
        try:
            attrs = termios.tcgetattr(self._slave)
        except (termios.error, OSError):
            return device
        baud = _SPEEDS.get(attrs[5], device.baudrate)
        stop = 2 if attrs[2] & termios.CSTOPB else 1
        parity = self.gateway_parity or device.parity
        return LineSettings(baud, parity, stop, device.bytesize)

    def _noisy(self, data: bytes) -> bytes:
        if not self.bit_error_rate or not data:
            return data
        out = bytearray(data)
        for i in range(len(out)):
            for bit in range(8):
                if self._rng.random() < self.bit_error_rate:
                    out[i] ^= 1 << bit
        return bytes(out)

    def _read(self, fd: int) -> bytes:
        try:
            return os.read(fd, 4096)
        except (BlockingIOError, InterruptedError, OSError):
            return b""

    def _write(self, fd: int, data: bytes) -> None:
        if data:
            with contextlib.suppress(BlockingIOError, OSError):
                os.write(fd, data)

    def _from_gateway(self) -> None:
        data = self._read(self._master)
        if not data:
            return
        for fd, (_, dev) in zip(self._dev_fds, self.devices, strict=True):
            out = self._noisy(retime(data, self.gateway_settings(dev), dev, inverted=self.inverted))
            self.bytes_to_devices += len(out)
            self._write(fd, out)

    def _from_device(self, index: int) -> None:
        data = self._read(self._dev_fds[index])
        if not data:
            return
        self._pending.append((index, data))
        if self._flush is None:
            loop = asyncio.get_running_loop()
            self._flush = loop.call_later(self.collision_window_s, self._deliver)

    def _deliver(self) -> None:
        self._flush = None
        pending, self._pending = self._pending, []
        by_device: dict[int, bytes] = {}
        for index, data in pending:
            by_device[index] = by_device.get(index, b"") + data
        if not by_device:
            return
        if len(by_device) > 1:
            self.collisions += 1
        # each device's waveform at its own settings, re-timed for the gateway; several at once AND
        outs = []
        for index, data in by_device.items():
            dev = self.devices[index][1]
            outs.append(retime(data, dev, self.gateway_settings(dev), inverted=self.inverted))
        out = self._noisy(outs[0] if len(outs) == 1 else collide(outs))
        self.bytes_to_gateway += len(out)
        self._write(self._master, out)
