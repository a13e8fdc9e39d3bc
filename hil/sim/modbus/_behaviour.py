"""How simulated Modbus devices' values move: engineering values as functions of time and state.

One `Behaviour` per profile id (keyed by point name), plus a fallback by unit so that any other
Modbus profile file can be simulated too. Totals are integrated from their rate on every read,
so they only ever rise; loads follow a daily curve with morning and evening peaks.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

DAY_S = 86400.0


def daily_load(hour: float) -> float:
    """Share of peak load at `hour` (0..24): a night base, a morning and a larger evening peak."""
    morning = 0.35 * math.exp(-(((hour - 7.5) / 1.5) ** 2))
    evening = 0.6 * math.exp(-(((hour - 19.5) / 2.2) ** 2))
    return min(1.0, 0.15 + morning + evening)


@dataclass(slots=True)
class DeviceState:
    """The mutable state of one simulated device (what a real one keeps in its own memory)."""

    seed: int
    rng: random.Random
    smoke: bool = False
    fault: bool = False
    totals: dict[str, float] = field(default_factory=dict)
    last_t: float | None = None
    peak: float = 1.0  # device size: peak kW or peak m3/h
    levels: dict[str, float] = field(default_factory=dict)  # injected faults by name (street devices)


ValueFn = Callable[[DeviceState, float, float], float | int | bool | str]
"""(state, sim_time_s, local_hour) -> engineering value."""


def _wobble(state: DeviceState, t: float, period_s: float, amplitude: float, phase: float = 0.0) -> float:
    return amplitude * math.sin(2 * math.pi * t / period_s + phase + state.seed) + state.rng.uniform(
        -amplitude / 5, amplitude / 5
    )


# -- three-phase meter --------------------------------------------------------------------------


def _phase_voltage(n: int) -> ValueFn:
    return lambda s, t, h: 230.0 + _wobble(s, t, 600.0, 2.5, n * 2.1)


def _power_factor(s: DeviceState, t: float, h: float) -> float:
    return 0.93 + 0.04 * math.sin(2 * math.pi * t / 3600.0 + s.seed)


def _total_power_w(s: DeviceState, t: float, h: float) -> float:
    return s.peak * 1000.0 * daily_load(h) * (1 + 0.03 * math.sin(2 * math.pi * t / 90.0 + s.seed))


_IMBALANCE = (1.05, 0.97, 0.98)


def _phase_power(n: int) -> ValueFn:
    return lambda s, t, h: _total_power_w(s, t, h) / 3 * _IMBALANCE[n]


def _phase_current(n: int) -> ValueFn:
    return lambda s, t, h: (
        float(_phase_power(n)(s, t, h)) / (float(_phase_voltage(n)(s, t, h)) * _power_factor(s, t, h))
    )


def _apparent(s: DeviceState, t: float, h: float) -> float:
    return _total_power_w(s, t, h) / _power_factor(s, t, h)


def _reactive(s: DeviceState, t: float, h: float) -> float:
    p, va = _total_power_w(s, t, h), _apparent(s, t, h)
    return math.sqrt(max(0.0, va * va - p * p))


POWER_METER: dict[str, ValueFn] = {
    **{f"voltage_{'abc'[n]}": _phase_voltage(n) for n in range(3)},
    **{f"current_{'abc'[n]}": _phase_current(n) for n in range(3)},
    **{f"power_{'abc'[n]}": _phase_power(n) for n in range(3)},
    **{f"power_factor_{'abc'[n]}": _power_factor for n in range(3)},
    "power": _total_power_w,
    "apparent_power": _apparent,
    "reactive_power": _reactive,
    "power_factor": _power_factor,
    "frequency": lambda s, t, h: 50.0 + _wobble(s, t, 120.0, 0.03),
    "energy_import": lambda s, t, h: s.totals["energy_kwh"],
    "energy_export": lambda s, t, h: 0.0,
    "voltage_ab": lambda s, t, h: 400.0 + _wobble(s, t, 600.0, 4.0),
    "voltage_bc": lambda s, t, h: 400.0 + _wobble(s, t, 600.0, 4.0, 1.0),
    "voltage_ca": lambda s, t, h: 400.0 + _wobble(s, t, 600.0, 4.0, 2.0),
    "neutral_current": lambda s, t, h: 0.04 * float(_phase_current(0)(s, t, h)),
    "energy_total": lambda s, t, h: s.totals["energy_kwh"],
}

# -- water meter -----------------------------------------------------------------------------

_PIPE_AREA_M2 = math.pi * 0.025**2  # DN50


def _flow_m3h(s: DeviceState, t: float, h: float) -> float:
    return max(0.0, s.peak * daily_load(h) - 0.1 * s.peak + _wobble(s, t, 45.0, 0.03 * s.peak))


WATER_METER: dict[str, ValueFn] = {
    "flow_rate": _flow_m3h,
    "velocity": lambda s, t, h: _flow_m3h(s, t, h) / 3600.0 / _PIPE_AREA_M2,
    "positive_total": lambda s, t, h: math.floor(s.totals["water_m3"]),
    "positive_total_fraction": lambda s, t, h: s.totals["water_m3"] - math.floor(s.totals["water_m3"]),
    "negative_total": lambda s, t, h: 0,
    "net_total": lambda s, t, h: math.floor(s.totals["water_m3"]),
    "net_total_fraction": lambda s, t, h: s.totals["water_m3"] - math.floor(s.totals["water_m3"]),
    "temperature_inlet": lambda s, t, h: (
        14.0 + 3.0 * math.sin(2 * math.pi * (h - 9) / 24) + _wobble(s, t, 900, 0.1)
    ),
    "temperature_outlet": lambda s, t, h: 13.7 + 3.0 * math.sin(2 * math.pi * (h - 9) / 24),
    "error_code": lambda s, t, h: 0x0001 if s.fault else 0,  # bit 0: no signal
    "signal_quality": lambda s, t, h: 0 if s.fault else int(86 + _wobble(s, t, 300.0, 4.0)),
}

# -- smoke detector --------------------------------------------------------------------------

SMOKE_DETECTOR: dict[str, ValueFn] = {
    "smoke_alarm": lambda s, t, h: s.smoke,
    "alarm_state": lambda s, t, h: 1 if s.smoke else 0,
    "baud_code": lambda s, t, h: 2,
}

# -- meter box electrical fire detector (issue 18) ------------------------------------------------
# Natural leakage of a stairwell's circuits is tens of mA and follows the load; an insulation fault
# adds `levels["residual_ma"]`; a loose terminal heats phase A by `levels["terminal_c"]`.


def _residual_ma(s: DeviceState, t: float, h: float) -> float:
    return 25.0 + 30.0 * daily_load(h) + _wobble(s, t, 300.0, 3.0) + s.levels.get("residual_ma", 0.0)


def _cable_c(n: int) -> ValueFn:
    def fn(s: DeviceState, t: float, h: float) -> float:
        hot = s.levels.get("terminal_c", 0.0) if n == 0 else 0.0
        return 24.0 + 18.0 * daily_load(h) + _wobble(s, t, 900.0, 0.4, n * 1.3) + hot

    return fn


METER_BOX: dict[str, ValueFn] = {
    "residual_current": _residual_ma,
    **{f"cable_temp_{c}": _cable_c(n) for n, c in enumerate("abc")},
    "box_temperature": lambda s, t, h: 22.0 + 8.0 * daily_load(h) + _wobble(s, t, 1800.0, 0.3),
    "smoke": lambda s, t, h: s.smoke,
    "door_open": lambda s, t, h: s.levels.get("door_open", 0.0) > 0,
    "residual_alarm": lambda s, t, h: _residual_ma(s, t, h) > 300.0,  # the detector's own setting
    "temperature_alarm": lambda s, t, h: float(_cable_c(0)(s, t, h)) > 80.0,
    "sensor_fault": lambda s, t, h: s.fault,
    "residual_setting": lambda s, t, h: 300,
}

# -- residual current relays on their manuals' maps (Acrel ASJ, Schneider RHU) ---------------------
# The same circuit as the meter box's detector (natural leakage following the load, an insulation
# fault in `levels["residual_ma"]`); alarm at the relay's 300 mA setting, prewarning at 240 mA (an
# 80 % prewarning, a common setting; the ASJ's 0009H and the RHU's pre-alarm are both set per site).
# `fault` = the current transformer (toroid) is disconnected: the relay reads no current and says so
# (the ASJ's break-line bit, the RHU's toroid-connected bit clear).
RELAY_ALARM_MA, RELAY_PREWARN_MA = 300, 240


def _relay_ma(s: DeviceState, t: float, h: float) -> float:
    return 0.0 if s.fault else _residual_ma(s, t, h)


def _relay_max_ma(s: DeviceState, t: float, h: float) -> float:
    """The RHU's maximum since reset (0x01A4): kept in the state, as the relay keeps it."""
    peak = max(s.levels.get("max_ma", 0.0), _relay_ma(s, t, h))
    s.levels["max_ma"] = peak
    return peak


def _relay_memorized(s: DeviceState, t: float, h: float) -> bool:
    """The RHU's alarm memorized (0x00CD): set by an alarm, held until the relay is reset."""
    if _relay_ma(s, t, h) > RELAY_ALARM_MA:
        s.levels["memorized"] = 1.0
    return s.levels.get("memorized", 0.0) > 0


RESIDUAL_RELAY: dict[str, ValueFn] = {
    "residual_current": _relay_ma,
    "residual_alarm": lambda s, t, h: _relay_ma(s, t, h) > RELAY_ALARM_MA,
    "residual_prewarning": lambda s, t, h: _relay_ma(s, t, h) > RELAY_PREWARN_MA,
    "residual_setting": lambda s, t, h: RELAY_ALARM_MA,
    "prewarning_setting": lambda s, t, h: RELAY_PREWARN_MA,
    "sensor_fault": lambda s, t, h: s.fault,  # ASJ 001BH bit 2: break line
    "toroid_connected": lambda s, t, h: not s.fault,  # RHU 0x00CF bit 0
    "alarm_memorized": _relay_memorized,
    "residual_current_max": _relay_max_ma,
}

# -- street lamp controller (issue 18) -----------------------------------------------------------
# Lit from dusk (18:30) to dawn (06:00) local time; a 100 W LED with a driver: 0.45 A at 230 V.
# `fault` = the lamp is out (open circuit): the relay is on and no current flows.
# `levels["undiagnosed"]` > 0: the lamp or its driver failed the same way, but the controller does not
# diagnose it (no open-circuit detection, or a wrong one): no current and its fault bit stays clear -
# only the gateway's own check (relay on, no current: lamp_dark) sees it. `levels["strike_s"]`: the
# lamp draws no current for that long after the evening switch-on (an HPS lamp striking, a hot restrike).


def _lamp_on(s: DeviceState, t: float, h: float) -> bool:
    return h >= 18.5 or h < 6.0


def _lamp_dark(s: DeviceState, h: float) -> bool:
    """Switched on and drawing nothing: failed, or not yet struck after the switch-on."""
    striking = ((h - 18.5) % 24) * 3600.0 < s.levels.get("strike_s", 0.0)
    return s.fault or s.levels.get("undiagnosed", 0.0) > 0 or striking


def _lamp_a(s: DeviceState, t: float, h: float) -> float:
    if not _lamp_on(s, t, h) or _lamp_dark(s, h):
        return max(0.0, 0.002 + _wobble(s, t, 60.0, 0.001))
    return 0.45 + _wobble(s, t, 120.0, 0.005)


LAMP_CONTROLLER: dict[str, ValueFn] = {
    "lamp_on": _lamp_on,
    "voltage": lambda s, t, h: 229.0 + _wobble(s, t, 600.0, 2.0) - s.levels.get("sag_v", 0.0),
    "current": _lamp_a,
    "power": lambda s, t, h: 230.0 * _lamp_a(s, t, h) * 0.96,
    "power_factor": lambda s, t, h: 0.96 if _lamp_a(s, t, h) > 0.1 else 0.3,
    "energy_import": lambda s, t, h: s.totals.get("lamp_kwh", 0.0),
    "lamp_fault": lambda s, t, h: _lamp_on(s, t, h) and s.fault,
    "driver_fault": lambda s, t, h: s.levels.get("driver_fault", 0.0) > 0,
    "relay_fault": lambda s, t, h: False,
    "dimming": lambda s, t, h: 100 if _lamp_on(s, t, h) else 0,
}

# -- street lamp on a DALI LED driver behind a Modbus-DALI gateway (issue 18) ------------------------
# The cabinet keeps the mains on and DALI switches the driver's output: on from dusk (18:30) to dawn
# (06:00), at 100 % and dimmed to 50 % from 23:00 to 05:00 (a midnight dimming schedule; the level is
# the site's). `fault` = the LED module fails open: the driver reports lamp failure and, as an LED
# driver (IEC 62386-207 failure status), open circuit. `levels["driver_fault"]` > 0: control gear
# failure. `levels["overheat"]` > 0: the driver shuts its output down on over-temperature while on
# (the lamp is dark; its lamp failure bit stays clear).


def _dali_level(s: DeviceState, t: float, h: float) -> int:
    if not _lamp_on(s, t, h):
        return 0
    return 50 if h >= 23.0 or h < 5.0 else 100


DALI_LAMP: dict[str, ValueFn] = {
    "lamp_on": _lamp_on,
    "lamp_fault": lambda s, t, h: _lamp_on(s, t, h) and s.fault,
    "driver_fault": lambda s, t, h: s.levels.get("driver_fault", 0.0) > 0,
    "power_cycle_seen": lambda s, t, h: False,
    "dimming": _dali_level,
    "device_type": lambda s, t, h: 6,  # LED module
    "short_circuit": lambda s, t, h: False,
    "open_circuit": lambda s, t, h: _lamp_on(s, t, h) and s.fault,
    "thermal_shutdown": lambda s, t, h: _lamp_on(s, t, h) and s.levels.get("overheat", 0.0) > 0,
}

BEHAVIOURS: dict[str, dict[str, ValueFn]] = {
    "modbus-power-meter-3ph": POWER_METER,
    "modbus-water-meter": WATER_METER,
    "modbus-smoke-detector": SMOKE_DETECTOR,
    "modbus-meter-box-efm": METER_BOX,
    "modbus-lamp-controller": LAMP_CONTROLLER,
    "modbus-acrel-asj-rcm": RESIDUAL_RELAY,
    "modbus-schneider-rhu-rcm": RESIDUAL_RELAY,
    "modbus-intesis-dali-lamp": DALI_LAMP,
}

RATES: dict[str, tuple[str, Callable[[DeviceState, float, float], float]]] = {
    # total name -> (profile, rate per second at (state, t, hour))
    "energy_kwh": ("modbus-power-meter-3ph", lambda s, t, h: _total_power_w(s, t, h) / 1000.0 / 3600.0),
    "water_m3": ("modbus-water-meter", lambda s, t, h: _flow_m3h(s, t, h) / 3600.0),
    "lamp_kwh": ("modbus-lamp-controller", lambda s, t, h: 230.0 * _lamp_a(s, t, h) * 0.96 / 3.6e6),
}

_BY_UNIT: dict[str, ValueFn] = {
    "V": lambda s, t, h: 230.0 + _wobble(s, t, 600.0, 2.5),
    "A": lambda s, t, h: 5.0 * daily_load(h),
    "W": lambda s, t, h: 1000.0 * daily_load(h),
    "Hz": lambda s, t, h: 50.0 + _wobble(s, t, 120.0, 0.03),
    "°C": lambda s, t, h: 20.0 + _wobble(s, t, 3600.0, 1.0),
}


def fallback(unit: str, type_: str) -> ValueFn:
    """A plausible value for a point no behaviour names: by unit, else zero / false / empty."""
    if unit in _BY_UNIT:
        return _BY_UNIT[unit]
    if type_ == "bool":
        return lambda s, t, h: False
    if type_ == "string":
        return lambda s, t, h: "SIM"
    return lambda s, t, h: 0


def advance_totals(profile_id: str, state: DeviceState, t: float, hour: float) -> None:
    """Integrate every total of this profile from the last read to `t` (trapezoid, never down)."""
    for total, (profile, rate) in RATES.items():
        if profile != profile_id:
            continue
        if state.last_t is None:
            continue
        dt = t - state.last_t
        if dt <= 0:
            continue
        # Integrate in steps of at most 5 simulated minutes so the daily curve is followed.
        steps = max(1, math.ceil(dt / 300.0))
        step = dt / steps
        acc = 0.0
        for i in range(steps):
            t0 = state.last_t + i * step
            h0 = (hour - (dt - i * step) / 3600.0) % 24
            h1 = (h0 + step / 3600.0) % 24
            acc += (max(0.0, rate(state, t0, h0)) + max(0.0, rate(state, t0 + step, h1))) / 2 * step
        state.totals[total] = state.totals.get(total, 0.0) + acc
