"""Staged rollouts: run an async per-gateway action over a fleet in waves (1, 10 %, the rest),
stop when a wave's failure rate passes a threshold, report per gateway.

The engine knows nothing of configs or updates: `action(gateway_id)` does the work and returns a
`GatewayOutcome`; an exception or a timeout counts as a failure of that gateway. A config push
(`config_action`) and a software update (`update_action`) use the same engine.

    report = await rollout(gateways, config_action(fleet, text, version="v7"),
                           waves=parse_waves("1,10%,rest"), max_failure_rate=0.2)
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from citynerve.hil.platform.fleet import FleetClient
from citynerve.hil.platform.fleet_update import WINDOW, Bundle, update_gateway

MAX_WAVES = 20


class WaveSpecError(ValueError):
    """A --waves value that cannot be understood (what and where)."""


@dataclass(frozen=True, slots=True)
class GatewayOutcome:
    """What happened on one gateway: `ok`, and the outcome's name (confirmed, reverted, rejected,
    failed, error, timeout, skipped) with a detail."""

    ok: bool
    outcome: str
    detail: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)  # shown in the report (an update's versions)


@dataclass
class GatewayReport:
    gateway: str
    wave: int | None
    outcome: str
    ok: bool
    detail: str = ""
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {
            "gateway": self.gateway,
            "wave": self.wave,
            "outcome": self.outcome,
            "ok": self.ok,
            "detail": self.detail,
            "seconds": round(self.seconds, 3),
        }
        return {**out, **self.info} if self.info else out


@dataclass
class WaveReport:
    index: int
    gateways: list[str]
    failed: int
    seconds: float

    @property
    def failure_rate(self) -> float:
        return self.failed / len(self.gateways) if self.gateways else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "wave": self.index,
            "size": len(self.gateways),
            "failed": self.failed,
            "failure_rate": round(self.failure_rate, 4),
            "seconds": round(self.seconds, 3),
        }


@dataclass
class RolloutReport:
    waves: list[WaveReport]
    gateways: list[GatewayReport]
    stopped: bool
    reason: str
    seconds: float

    @property
    def outcomes(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for g in self.gateways:
            out[g.outcome] = out.get(g.outcome, 0) + 1
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "stopped": self.stopped,
            "reason": self.reason,
            "seconds": round(self.seconds, 3),
            "outcomes": self.outcomes,
            "waves": [w.to_dict() for w in self.waves],
            "gateways": [g.to_dict() for g in self.gateways],
        }


def parse_waves(spec: str) -> list[str]:
    """`1,10%,rest` -> ["1", "10%", "rest"], checked: counts >= 1, percentages in (0, 100],
    `rest` only last."""
    parts = [p.strip() for p in spec.split(",") if p.strip()]
    if not parts:
        raise WaveSpecError("--waves is empty")
    if len(parts) > MAX_WAVES:
        raise WaveSpecError(f"at most {MAX_WAVES} waves")
    for i, p in enumerate(parts):
        if p == "rest":
            if i != len(parts) - 1:
                raise WaveSpecError(f"wave {i + 1}: 'rest' must be the last wave")
        elif p.endswith("%"):
            try:
                pct = float(p[:-1])
            except ValueError:
                raise WaveSpecError(f"wave {i + 1}: {p!r} is not a percentage") from None
            if not 0 < pct <= 100:
                raise WaveSpecError(f"wave {i + 1}: {p!r} must be in (0, 100] %")
        elif not p.isdigit() or int(p) < 1:
            raise WaveSpecError(f"wave {i + 1}: {p!r} must be a count >= 1, a percentage or 'rest'")
    return parts


def plan_waves(gateways: Sequence[str], waves: Sequence[str]) -> list[list[str]]:
    """The gateways of each wave, in order. A percentage is of the whole fleet (rounded up, at
    least one); empty waves are dropped; gateways left after the last wave form one more wave
    only when the last is `rest`, else they are not touched."""
    left = list(dict.fromkeys(gateways))
    total = len(left)
    out: list[list[str]] = []
    for w in waves:
        if not left:
            break
        if w == "rest":
            n = len(left)
        elif w.endswith("%"):
            n = max(1, math.ceil(total * float(w[:-1]) / 100))
        else:
            n = int(w)
        out.append(left[:n])
        left = left[n:]
    return out


async def rollout(
    gateways: Sequence[str],
    action: Callable[[str], Awaitable[GatewayOutcome]],
    *,
    waves: Sequence[str],
    max_failure_rate: float,
    concurrency: int = 50,
    gateway_timeout_s: float = 600.0,
    on_gateway: Callable[[GatewayReport], None] | None = None,
) -> RolloutReport:
    """Run `action` on every gateway, wave by wave (a wave's gateways in parallel, at most
    `concurrency` at once). After a wave whose failure rate is above `max_failure_rate`, stop: the
    gateways of later waves are reported `skipped`."""
    if not 0 <= max_failure_rate <= 1:
        raise ValueError("max_failure_rate must be in 0..1")
    plan = plan_waves(gateways, waves)
    planned = {g for w in plan for g in w}
    started = time.monotonic()
    limit = asyncio.Semaphore(max(1, concurrency))
    reports: dict[str, GatewayReport] = {}
    wave_reports: list[WaveReport] = []
    stopped, reason = False, "all waves done"

    async def one(gw: str, wave: int) -> GatewayReport:
        async with limit:
            t0 = time.monotonic()
            try:
                async with asyncio.timeout(gateway_timeout_s):
                    res = await action(gw)
                rep = GatewayReport(gw, wave, res.outcome, res.ok, res.detail, info=dict(res.info))
            except TimeoutError:
                rep = GatewayReport(gw, wave, "timeout", False, f"no outcome within {gateway_timeout_s:g} s")
            except Exception as err:  # one gateway's trouble is that gateway's failure
                rep = GatewayReport(gw, wave, "error", False, f"{type(err).__name__}: {err}")
            rep.seconds = time.monotonic() - t0
            if on_gateway is not None:
                on_gateway(rep)
            return rep

    for i, members in enumerate(plan, start=1):
        t0 = time.monotonic()
        done = await asyncio.gather(*(one(g, i) for g in members))
        for rep in done:
            reports[rep.gateway] = rep
        wave = WaveReport(i, members, sum(1 for r in done if not r.ok), time.monotonic() - t0)
        wave_reports.append(wave)
        if wave.failure_rate > max_failure_rate:
            stopped = True
            reason = (
                f"wave {i}: failure rate {wave.failure_rate:.0%} ({wave.failed}/{len(members)}) "
                f"above {max_failure_rate:.0%}"
            )
            break
    for g in dict.fromkeys(gateways):
        if g not in reports:
            why = "rollout stopped" if stopped or g in planned else "not in any wave"
            reports[g] = GatewayReport(g, None, "skipped", False, why)
    ordered = [reports[g] for g in dict.fromkeys(gateways)]
    return RolloutReport(wave_reports, ordered, stopped, reason, time.monotonic() - started)


def config_action(
    fleet: FleetClient,
    document: str | Callable[[str], str],
    *,
    version: str,
    mode: str = "replace",
    confirm_s: float = 120.0,
) -> Callable[[str], Awaitable[GatewayOutcome]]:
    """The per-gateway action of a config rollout: push, wait for the verdict. `document` may be a
    function of the gateway id (each gateway's own config). Confirmed or unchanged is success."""

    async def act(gateway_id: str) -> GatewayOutcome:
        doc = document(gateway_id) if callable(document) else document
        out = await fleet.apply_config(gateway_id, doc, version=version, mode=mode, confirm_s=confirm_s)
        outcome = str(out["outcome"])
        answer = out.get("answer") or {}
        verdict = out.get("verdict") or {}
        detail = (verdict.get("result") or {}).get("reason") or answer.get("detail") or ""
        return GatewayOutcome(outcome in ("confirmed", "unchanged"), outcome, str(detail), out)

    return act


def update_action(
    fleet: FleetClient,
    bundle: Bundle,
    *,
    update_id: str,
    timeout_s: float = 900.0,
    window: int = WINDOW,
) -> Callable[[str], Awaitable[GatewayOutcome]]:
    """The per-gateway action of an update rollout: `update_gateway` (chunks or URL, resumed when
    the gateway goes away) up to its verdict. Only `confirmed` is success; the outcome is the final
    phase (`confirmed`, `rolled-back`, `failed`, or `refused` with the reject reason in `detail`,
    e.g. `no_space: ...`). The same `update_id` on every gateway, so its events are one rollout's."""

    async def act(gateway_id: str) -> GatewayOutcome:
        out = await update_gateway(
            fleet, gateway_id, bundle, update_id=update_id, timeout_s=timeout_s, window=window
        )
        detail = f"{out.rejected}: {out.reason}" if out.rejected else out.reason
        release = {k: out.release.get(k) for k in ("from", "to", "current") if out.release.get(k)}
        info = {
            "update_id": out.update_id,
            "chunks_sent": out.chunks_sent,
            "commands_sent": out.commands_sent,
        }
        if release:
            info["release"] = release
        return GatewayOutcome(out.ok, out.phase, detail, out.to_dict(), info)

    return act
