"""Probe a serial line's settings with the configured devices: baud x parity x stop bits.

For each candidate setting a fresh driver is opened on the same port with only the settings
changed, and every configured device (its address, never a wildcard: several meters would answer
at once and collide) is asked for its first poll request with a short timeout and no retry. A valid
reply means "devices answer at this setting"; a garbled reply (checksum, framing, another address)
still means "something answers at this speed" (wrong parity, or line noise); silence means nothing
understood the request. The probe stops at the first setting where every device answers.

The bus owner runs a probe as one job, so polling pauses meanwhile and its own driver is reopened
with the configured settings afterwards (gateway/bus/owner.py); with no gateway running the
diagnostic route runs it on the port directly.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from citynerve.gateway.api import (
    BusConfig,
    ChannelError,
    DeviceConfig,
    DiagParamError,
    Driver,
    GatewayError,
    PermanentError,
    PollDriver,
)
from citynerve.gateway.bus.verdict import FailureKind, kind_of

PROBE = "probe_line"  # the diag action name (drivers own "probe": a meter search's partial address)
WITH_SETTINGS = "settings"  # params key: run any diag action under other line settings
BAUDS = (9600, 2400, 4800, 19200, 1200, 38400, 115200)
PARITIES = ("N", "E", "O")
MAX_CANDIDATES = 64

MakeDriver = Callable[[BusConfig], Driver[Any, Any]]


@dataclass(frozen=True, slots=True, order=True)
class LineSettings:
    baudrate: int
    parity: str
    stopbits: int
    bytesize: int = 8

    def __str__(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"

    def update(self) -> dict[str, Any]:
        return {"baudrate": self.baudrate, "parity": self.parity, "stopbits": self.stopbits}


def settings_of(bus: BusConfig) -> LineSettings | None:
    baud = getattr(bus, "baudrate", None)
    if not isinstance(baud, int):
        return None
    return LineSettings(
        baud,
        str(getattr(bus, "parity", "N")),
        int(getattr(bus, "stopbits", 1)),
        int(getattr(bus, "bytesize", 8)),
    )


def with_settings(bus: BusConfig, update: dict[str, Any]) -> BusConfig:
    """A copy of `bus` with other line settings (validated like the config would be)."""
    if settings_of(bus) is None:
        raise PermanentError(f"bus {bus.id} is not a serial line: it has no baud rate or parity to change")
    allowed = {k: v for k, v in update.items() if k in ("baudrate", "parity", "stopbits", "timeout_s")}
    return type(bus).model_validate({**bus.model_dump(), **allowed})


def candidates(
    configured: LineSettings,
    bauds: Iterable[int] | None = None,
    parities: Iterable[str] | None = None,
    stopbits: Iterable[int] | None = None,
) -> list[LineSettings]:
    """Settings to try, most likely first: the configured one, then by baud (configured parity first)."""
    bauds = list(dict.fromkeys([configured.baudrate, *(bauds or BAUDS)]))
    pars = list(dict.fromkeys([configured.parity, *(parities or PARITIES)]))
    stops = list(dict.fromkeys([configured.stopbits, *(stopbits or (1,))]))
    out = [LineSettings(b, p, s, configured.bytesize) for b in bauds for p in pars for s in stops]
    return out[:MAX_CANDIDATES]


@dataclass(slots=True)
class Trial:
    settings: LineSettings
    answered: list[str]
    garbled: list[str]
    silent: list[str]
    errors: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": str(self.settings),
            **self.settings.update(),
            "answered": self.answered,
            "garbled": self.garbled,
            "silent": self.silent,
            "errors": self.errors,
        }


async def probe_line(
    make_driver: MakeDriver,
    bus: BusConfig,
    devices: Sequence[DeviceConfig],
    tries: Sequence[LineSettings],
    *,
    timeout_s: float,
) -> dict[str, Any]:
    """Try each setting in turn; return the trials and a one-line conclusion for the technician."""
    configured = settings_of(bus)
    if configured is None:
        raise PermanentError(f"bus {bus.id} is not a serial line: nothing to probe")
    if not devices:
        raise PermanentError(f"bus {bus.id} has no configured devices to probe with")
    trials: list[Trial] = []
    for setting in tries:
        trial = Trial(setting, [], [], [], {})
        trials.append(trial)
        driver = make_driver(with_settings(bus, {**setting.update(), "timeout_s": timeout_s}))
        try:
            await driver.open()
            if not isinstance(driver, PollDriver):
                raise PermanentError(f"bus {bus.id}: a listen-only bus cannot be probed")
            for device in devices:
                plan = list(driver.plan(device))
                if not plan:
                    continue
                try:
                    await driver.read(device, plan[0])
                except ChannelError:
                    raise
                except GatewayError as err:
                    kind = kind_of(err)
                    if kind is FailureKind.EXCEPTION:
                        trial.answered.append(device.id)  # it understood the request
                    elif kind is FailureKind.TIMEOUT:
                        trial.silent.append(device.id)
                    else:
                        trial.garbled.append(device.id)
                        trial.errors[device.id] = str(err)
                else:
                    trial.answered.append(device.id)
        finally:
            await driver.close()
        if len(trial.answered) == len(devices):
            break
    return {
        "bus": bus.id,
        "configured": str(configured),
        "trials": [t.to_dict() for t in trials],
        **conclude(configured, trials, len(devices)),
    }


def conclude(configured: LineSettings, trials: Sequence[Trial], n_devices: int) -> dict[str, Any]:
    best = max(trials, key=lambda t: (len(t.answered), len(t.garbled)), default=None)
    if best is None or (not best.answered and not best.garbled):
        return {
            "found": None,
            "fix": None,
            "conclusion": (
                f"configured {configured}; no device answered at any of the {len(trials)} settings tried: "
                "check A/B wiring, the adapter, power and addresses"
            ),
        }
    if not best.answered:
        speeds = sorted({t.settings.baudrate for t in trials if t.garbled})
        return {
            "found": None,
            "fix": None,
            "conclusion": (
                f"configured {configured}; something answers at {', '.join(map(str, speeds))} baud but every "
                "reply is garbled: parity or stop bits differ, or the line is noisy (termination, earthing)"
            ),
        }
    who = (
        "all devices answer"
        if len(best.answered) == n_devices
        else (f"{len(best.answered)} of {n_devices} devices answer ({', '.join(best.answered)})")
    )
    if best.settings == configured:
        return {
            "found": str(best.settings),
            "fix": None,
            "conclusion": f"configured {configured}: {who} at it",
        }
    return {
        "found": str(best.settings),
        "fix": best.settings.update(),
        "conclusion": f"configured {configured}, devices answer at {best.settings} ({who})",
    }


def probe_params(params: dict[str, Any], bus: BusConfig) -> tuple[list[LineSettings], float]:
    """The settings a probe tries and its timeout per try, from a diag request's parameters
    (`bauds`, `parities`, `stopbits`: lists; `timeout_s`). Raises DiagParamError naming the one
    that is not what a serial line takes."""
    configured = settings_of(bus)
    if configured is None:
        raise PermanentError(f"bus {bus.id} is not a serial line: nothing to probe")
    tries = candidates(
        configured,
        _listed(params, "bauds", BAUDS),
        _listed(params, "parities", ("N", "E", "O")),
        _listed(params, "stopbits", (1, 2)),
    )
    timeout_s = params.get("timeout_s", 0.3)
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not math.isfinite(timeout_s)
        or not 0 < timeout_s <= 5
    ):
        raise DiagParamError("probe", "timeout_s", f"seconds in (0, 5], not {timeout_s!r}")
    return tries, float(timeout_s)


def _listed(params: dict[str, Any], name: str, allowed: tuple[Any, ...]) -> list[Any] | None:
    """A probe parameter: absent or empty (the defaults), or a list of values from `allowed`."""
    raw = params.get(name)
    if raw is None or raw == []:
        return None
    ok = isinstance(raw, list) and len(raw) <= len(allowed)
    if ok and all(type(v) is type(allowed[0]) and v in allowed for v in raw):
        return list(dict.fromkeys(raw))
    shown = ", ".join(str(a) for a in allowed)
    raise DiagParamError("probe", name, f"a list of values from {shown}, not {raw!r}")


async def run_elsewhere(
    make_driver: MakeDriver,
    bus: BusConfig,
    devices: Sequence[DeviceConfig],
    action: str,
    params: dict[str, Any],
) -> dict[str, Any]:
    """`probe`, or any other diag action under other settings (params["settings"]), on fresh drivers.
    The caller has closed its own driver and reopens it afterwards."""
    if action == PROBE:
        tries, timeout_s = probe_params(params, bus)
        return await probe_line(make_driver, bus, devices, tries, timeout_s=timeout_s)
    update = dict(params.get(WITH_SETTINGS) or {})
    rest = {k: v for k, v in params.items() if k != WITH_SETTINGS}
    driver = make_driver(with_settings(bus, update))
    try:
        await driver.open()
        result: dict[str, Any] = await driver.diag(action, rest)
    finally:
        await driver.close()
    result["settings"] = str(settings_of(with_settings(bus, update)))
    return result


def needs_other_driver(action: str, params: dict[str, Any]) -> bool:
    return action == PROBE or bool(params.get(WITH_SETTINGS))
