"""Signed commands from the platform: verify, check, carry out through the runtime, answer.

There is no remote shell: the only actions are those in `ACTIONS`. A command is carried out only
when it is signed with the key provisioned at install, not expired, not replayed (nonces persisted
in the outbox's key/value state) and names a device/point/bus the gateway's profiles know.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from citynerve.gateway.api import (
    SYSTEM_CLOCK,
    Clock,
    DeviceTimeoutError,
    GatewayError,
    KeptStore,
    Reading,
    Value,
    WriteRejectedError,
    boot_id,
)
from citynerve.gateway.uplink.encoding import CommandOutcome, CommandResult, RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError
from citynerve.gateway.uplink.junk import JUNK_REASONS, JunkLimiter
from citynerve.gateway.uplink.permissions import (
    ACTION_CLASSES,
    LEGACY_KEY_ID,
    LEGACY_PERMISSIONS,
    RETIRING_PERMISSIONS,
    CommandKey,
    KeyRing,
    Permission,
)
from citynerve.gateway.uplink.signing import CommandVerifier

if TYPE_CHECKING:
    from citynerve.gateway.uplink.command_ids import CommandOutcomes

log = logging.getLogger(__name__)

ACTIONS = ("read_point", "write_point", "resend_inventory", "restart_bus")
NONCES = "uplink.nonces"  # kept set: one row per nonce
FLOOR_KEY = "uplink.command_floor"  # state: the wall clock's floor
NONCE_KEY = "uplink.command_nonces"  # state: every nonce in one value, as versions before NONCES kept them
_NONCE_RE = re.compile(r"^[A-Za-z0-9_-]{16,128}$")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


@dataclass(frozen=True, slots=True)
class PointInfo:
    """What the gateway's profiles say about one point of one device."""

    exists: bool
    writable: bool = False
    domain: Mapping[str, Any] | None = None
    """What a write accepts (`PointConfig.value_domain`): checked before the write runs."""


class CommandTarget(Protocol):
    """What the runtime offers to platform commands. Reads and writes go through the bus owner."""

    async def read_point(self, device_id: str, point: str) -> Reading: ...

    async def write_point(self, device_id: str, point: str, value: Value) -> None: ...

    async def restart_bus(self, bus_id: str) -> None: ...

    def inventory(self) -> list[dict[str, Any]]: ...

    def point_info(self, device_id: str, point: str) -> PointInfo | None:
        """None when the device is unknown; PointInfo(exists=False) when the point is not in its profile."""
        ...

    def bus_ids(self) -> Collection[str]: ...


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent an accepted command: the id of the key that signed it, the command's id, and the
    destination (`[[upstream]] id`) it came through (None: not through an uplink)."""

    key_id: str
    command_id: str
    destination: str | None = None


@dataclass(frozen=True, slots=True)
class Chunked:
    """A result too big for one message: `parts` are published first (each as its own result of the
    same command), then `summary` as the final result."""

    summary: Mapping[str, Any]
    parts: tuple[Mapping[str, Any], ...]


RemoteHandler = Callable[[dict[str, Any], Caller], Awaitable[Mapping[str, Any] | Chunked | None]]


@dataclass(frozen=True, slots=True)
class RemoteAction:
    """An action beyond the built-in ones (operator controls, diagnostics): its permission class
    and its handler. The handler checks its arguments and raises CommandRejectedError (bad_value,
    unknown_device, ...) for a refusal; other GatewayErrors are failures."""

    permission: Permission
    handler: RemoteHandler


class KeyValueState(Protocol):
    """The durable key/value part of the outbox (AsyncOutbox.get / put)."""

    async def get(self, key: str) -> Any: ...

    async def put(self, key: str, value: Any) -> None: ...


def same_boot(stored: object, boot: str) -> bool:
    """Whether monotonic times stored under the boot id `stored` count on the clock of `boot` (this
    boot's id; "" where the kernel has none: then never)."""
    return bool(boot) and stored == boot


class NonceCache:
    """Nonces of accepted commands until they expire, persisted so a replay fails across restarts too,
    and a floor under the wall clock so a clock set back does not make an old command valid again.

    - A nonce is kept until its wall-clock expiry has passed AND, measured on the monotonic clock, as
      long as it had left to live when it was claimed: a wall clock stepped forward cannot prune it.
    - `trusted_now(wall)` is never earlier than the newest `issued_at` of an accepted (signed)
      command plus the monotonic time since: the platform's signed clock bounds how far back the
      wall clock can pretend to be. The command's expiry is checked against it.
    - Across a reboot (the monotonic clock restarts; the boot id tells) every kept nonce is kept
      `max_keep_s` more and the floor counts from the time of loading.
    - One row per nonce (kept set NONCES: [wall expiry, monotonic keep-until, boot id]); a claim
      writes its own and deletes the pruned ones, with the floor (state FLOOR_KEY), in one commit.
    Bounded: commands live at most `max_lifetime_s`, so only that window's nonces are kept.
    """

    def __init__(
        self,
        state: KeptStore,
        *,
        max_entries: int = 10_000,
        max_keep_s: float = 600.0,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self._state = state
        self._seen: dict[str, tuple[float, float]] = {}  # nonce -> (wall expiry, monotonic keep-until)
        self._pruned: set[str] = set()  # nonces whose rows the next claim deletes
        self._floor: tuple[float, float] | None = None  # (wall time known to have passed, at monotonic)
        self._loaded = False
        self._max = max_entries
        self._keep = max_keep_s
        self._clock = clock
        self._boot = boot_id()
        self._lock = asyncio.Lock()

    async def _load(self) -> None:
        if self._loaded:
            return
        # A store that cannot answer now raises (the command is not run) and is asked again by the
        # next command: marked loaded before reading, the cache ran empty for the whole run, and a
        # nonce used before the restart could be replayed.
        rows = await self._state.kept(NONCES)
        mono = self._clock.monotonic()
        try:
            for nonce, row in rows.items():
                exp, until, boot = json.loads(row)
                self._seen[nonce] = (
                    float(exp),
                    float(until) if same_boot(boot, self._boot) else mono + self._keep,
                )
            if floor := await self._state.get(FLOOR_KEY):
                wall, at, boot = json.loads(floor)
                self._floor = (float(wall), float(at) if same_boot(boot, self._boot) else mono)
            if single := await self._state.get(NONCE_KEY):
                self._read_single(single, mono)
                moved = {n: self._row(n) for n in self._seen}
                await self._state.keep(NONCES, moved, state={NONCE_KEY: None, FLOOR_KEY: self._floor_row()})
        except (ValueError, TypeError, KeyError, IndexError):
            log.warning("command nonce cache unreadable; starting empty")
            self._seen, self._floor = {}, None
            await self._state.keep(NONCES, {}, rows, state={NONCE_KEY: None, FLOOR_KEY: None})
        self._loaded = True

    def _read_single(self, raw: str, mono: float) -> None:
        """Every nonce in one value, as versions before the rows stored them (moved into rows)."""
        data = json.loads(raw)
        if isinstance(data, dict) and data.get("v") == 2:
            seen = {str(k): (float(v[0]), float(v[1])) for k, v in dict(data["seen"]).items()}
            floor = data.get("floor")
            if same_boot(data.get("boot"), self._boot):
                self._seen.update(seen)
                self._floor = (float(floor[0]), float(floor[1])) if floor else self._floor
            else:
                self._seen.update({n: (exp, mono + self._keep) for n, (exp, _) in seen.items()})
                self._floor = (float(floor[0]), mono) if floor else self._floor
        else:  # version 1: {nonce: wall expiry}
            self._seen.update({str(k): (float(v), mono + self._keep) for k, v in dict(data).items()})

    def _row(self, nonce: str) -> str:
        exp, until = self._seen[nonce]
        return json.dumps([exp, until, self._boot])

    def _floor_row(self) -> str | None:
        return json.dumps([*self._floor, self._boot]) if self._floor else None

    async def trusted_now(self, wall: float) -> float:
        """`wall`, or later when accepted commands prove that more time has passed."""
        async with self._lock:
            await self._load()
            if self._floor is None:
                return wall
            floor_wall, floor_mono = self._floor
            return max(wall, floor_wall + (self._clock.monotonic() - floor_mono))

    async def claim(self, nonce: str, expires_at: float, now: float, issued_at: float | None = None) -> bool:
        """Record `nonce`; False when it was already used. Persisted before the command runs.

        `now` is the (trusted) wall time; `issued_at` the command's signed issue time."""
        async with self._lock:
            await self._load()
            mono = self._clock.monotonic()
            for n in [n for n, (e, u) in self._seen.items() if e < now and u < mono]:
                del self._seen[n]
                self._pruned.add(n)
            if nonce in self._seen:
                return False
            if len(self._seen) >= self._max:
                # Refusing beats forgetting: a forgotten nonce could be replayed.
                return False
            self._seen[nonce] = (expires_at, mono + max(0.0, expires_at - now))
            self._pruned.discard(nonce)
            if issued_at is not None:
                floor = None if self._floor is None else self._floor[0] + (mono - self._floor[1])
                if floor is None or issued_at > floor:
                    self._floor = (issued_at, mono)
            floor_row = self._floor_row()
            await self._state.keep(
                NONCES, {nonce: self._row(nonce)}, self._pruned, state={FLOOR_KEY: floor_row}
            )
            self._pruned.clear()
            return True


class CommandProcessor:
    """Checks and carries out one command payload; always returns the `CommandResult` to publish."""

    def __init__(
        self,
        *,
        gateway_id: str,
        target: CommandTarget,
        verifier: CommandVerifier | KeyRing | None,
        nonces: NonceCache,
        decode: Callable[[bytes], dict[str, Any]],
        resend_inventory: Callable[[], Awaitable[None]],
        enabled: bool,
        max_clock_skew_s: float = 30.0,
        max_lifetime_s: float = 300.0,
        exec_timeout_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        junk: JunkLimiter | None = None,
        outcomes: CommandOutcomes | None = None,
        extra_actions: Mapping[str, RemoteAction] | None = None,
        destination: str | None = None,
    ) -> None:
        self._gateway_id = gateway_id
        self._destination = destination  # the uplink's: callers say where a command came from
        self._target = target
        if isinstance(verifier, CommandVerifier):  # one key: the platform's, as before key rings
            verifier = KeyRing([CommandKey(LEGACY_KEY_ID, verifier, LEGACY_PERMISSIONS)])
        self._verifier: KeyRing | None = verifier
        self._extra: dict[str, RemoteAction] = dict(extra_actions or {})
        self._classes = {**ACTION_CLASSES, **{a: r.permission for a, r in self._extra.items()}}
        self._nonces = nonces
        self._decode = decode
        self._resend_inventory = resend_inventory
        self._enabled = enabled
        self._skew = max_clock_skew_s
        self._lifetime = max_lifetime_s
        self._exec_timeout = exec_timeout_s
        self._clock = clock
        self._junk = junk or JunkLimiter()
        self._outcomes = outcomes  # None: no idempotence by id (tests of the checks alone)
        self.accepted = 0
        self.rejected = 0

    @property
    def suppressed(self) -> int:
        """Junk rejections counted but neither logged nor answered (rate limit)."""
        return self._junk.suppressed

    async def handle(self, payload: bytes) -> CommandResult:
        cmd: dict[str, Any] = {}
        try:
            cmd = self._decode(payload)
            cid, key = self._authenticate(cmd)
        except CommandRejectedError as err:
            return self._rejected(err, cmd)
        if self._outcomes is None:
            return await self._run(cid, key, cmd)
        # Authenticated: idempotent by id (a repeat gets the first outcome, never a second run).
        now = self._clock()
        return await self._outcomes.once(
            cid, now, lambda: self._run(cid, key, cmd), valid_until=self._valid_until(cmd, now)
        )

    def _valid_until(self, cmd: dict[str, Any], now: float) -> float | None:
        """The last wall time `cmd` can be accepted (its expiry plus the skew allowed), no later
        than the longest any command can be (one of an unchecked expiry must not be kept for ever)."""
        expires = cmd.get("expires_at_ms")
        if not _is_int(expires):
            return None
        assert isinstance(expires, int)
        return min(expires / 1000 + self._skew, now + self._lifetime + 2 * self._skew)

    async def _run(self, cid: str, key: CommandKey, cmd: dict[str, Any]) -> CommandResult:
        try:
            action, args = await self._check(cid, key, cmd)
            self.accepted += 1
            caller = Caller(key.id, cid, self._destination)
            log.info("command %s %s accepted (key %s)", _printable(cid), action, key.id)
            result = await self._execute(action, args, caller)
            if isinstance(result, Chunked):
                return CommandResult(
                    cid, action, CommandOutcome.OK, result=result.summary, parts=result.parts
                )
            return CommandResult(cid, action, CommandOutcome.OK, result=result)
        except CommandRejectedError as err:
            return self._rejected(err, cmd)

    def _rejected(self, err: CommandRejectedError, cmd: dict[str, Any]) -> CommandResult:
        self.rejected += 1
        outcome = CommandOutcome.FAILED if err.reason in _FAILURES else CommandOutcome.REJECTED
        detail = err.detail
        # Junk (nobody authenticated it) is answered and logged once per interval, with counts.
        summary = self._junk.admit(err.reason) if err.reason in JUNK_REASONS else ""
        if summary is not None:
            detail = f"{detail}; {summary}" if summary else detail
            log.warning(
                "command %s %s: %s %s",
                _printable(err.command_id or cmd.get("id")),
                outcome.value,
                err.reason.value,
                detail,
            )
        # Echoed only when well formed: a result carries no text nobody checked (a lone surrogate
        # in an unauthenticated id cannot be encoded as UTF-8).
        cid = err.command_id or cmd.get("id")
        action = cmd.get("action")
        return CommandResult(
            cid if isinstance(cid, str) and _ID_RE.match(cid) else None,
            action if isinstance(action, str) and action in self._classes else None,
            outcome,
            err.reason,
            detail,
            answer=summary is not None,
        )

    def _authenticate(self, cmd: dict[str, Any]) -> tuple[str, CommandKey]:
        """The command's id and the key that signed it, once it is ours, enabled and signed with a
        key of the ring."""
        cid = cmd.get("id")
        if not isinstance(cid, str) or not _ID_RE.match(cid):
            raise CommandRejectedError(RejectReason.MALFORMED, "id must be a short id string")

        def reject(reason: RejectReason, detail: str = "") -> CommandRejectedError:
            return CommandRejectedError(reason, detail, cid)

        if cmd.get("gateway_id") != self._gateway_id:
            raise reject(RejectReason.WRONG_GATEWAY, "gateway_id is not this gateway")
        if not self._enabled or self._verifier is None:
            raise reject(RejectReason.DISABLED, "commands are disabled on this gateway")
        if "sig" not in cmd or "alg" not in cmd:
            raise reject(RejectReason.UNSIGNED, "alg and sig are required")
        key = self._verifier.identify(cmd)
        if key is None:
            raise reject(
                RejectReason.BAD_SIGNATURE, f"signature does not verify ({self._verifier.algorithm})"
            )
        return cid, key

    async def _check(self, cid: str, key: CommandKey, cmd: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        def reject(reason: RejectReason, detail: str = "") -> CommandRejectedError:
            return CommandRejectedError(reason, detail, cid)

        issued, expires, nonce = cmd.get("issued_at_ms"), cmd.get("expires_at_ms"), cmd.get("nonce")
        if (
            not _is_int(issued)
            or not _is_int(expires)
            or not isinstance(nonce, str)
            or not _NONCE_RE.match(nonce)
        ):
            raise reject(
                RejectReason.MALFORMED, "issued_at_ms, expires_at_ms (int ms) and nonce are required"
            )
        assert isinstance(issued, int) and isinstance(expires, int)  # checked just above
        now = await self._nonces.trusted_now(self._clock())
        if expires / 1000 < now - self._skew:
            raise reject(RejectReason.EXPIRED, f"expired {now - expires / 1000:.1f} s ago")
        if issued / 1000 > now + self._skew:
            raise reject(RejectReason.NOT_YET_VALID, "issued in the future (clock skew?)")
        if expires < issued or (expires - issued) / 1000 > self._lifetime:
            raise reject(RejectReason.LIFETIME_TOO_LONG, f"lifetime must be 0..{self._lifetime:g} s")
        if not await self._nonces.claim(nonce, expires / 1000 + self._skew, now, issued / 1000):
            raise reject(RejectReason.REPLAYED, "nonce already used")
        action = cmd.get("action")
        if not isinstance(action, str) or action not in self._classes:
            raise reject(
                RejectReason.UNKNOWN_COMMAND, f"action must be one of {', '.join(sorted(self._classes))}"
            )
        needed = self._classes[action]
        if needed not in key.classes:
            granted = ", ".join(sorted(key.classes)) or "nothing"
            raise reject(
                RejectReason.NOT_PERMITTED,
                f"{action} needs the {needed.value} permission; key {key.id!r} grants {granted}",
            )
        if key.retiring and needed not in RETIRING_PERMISSIONS:
            raise reject(
                RejectReason.RETIRING_KEY,
                f"{action} needs the {needed.value} permission, which the retiring key of {key.id!r} "
                "no longer grants (rotated): sign with its new key",
            )
        args = cmd.get("args", {})
        if not isinstance(args, dict):
            raise reject(RejectReason.MALFORMED, "args must be an object")
        self._check_args(action, args, reject)
        return action, args

    def _check_args(
        self, action: str, args: dict[str, Any], reject: Callable[[RejectReason, str], CommandRejectedError]
    ) -> None:
        if action in ("read_point", "write_point"):
            dev, point = args.get("device_id"), args.get("point")
            if not isinstance(dev, str) or not isinstance(point, str):
                raise reject(RejectReason.MALFORMED, "device_id and point are required strings")
            info = self._target.point_info(dev, point)
            if info is None:
                raise reject(RejectReason.UNKNOWN_DEVICE, f"no device {dev!r}")
            if not info.exists:
                raise reject(
                    RejectReason.UNKNOWN_POINT, f"device {dev!r} has no point {point!r} in its profile"
                )
            if action == "write_point":
                if not info.writable:
                    raise reject(RejectReason.NOT_WRITABLE, f"{dev}.{point} is not writable")
                if "value" not in args or not isinstance(args["value"], bool | int | float | str):
                    raise reject(RejectReason.BAD_VALUE, "value must be a number, boolean or string")
                problem = domain_problem(info.domain, args["value"]) if info.domain else None
                if problem:
                    raise reject(RejectReason.BAD_VALUE, f"{dev}.{point}: {problem}")
        elif action == "restart_bus":
            bus = args.get("bus_id")
            if not isinstance(bus, str):
                raise reject(RejectReason.MALFORMED, "bus_id is required")
            if bus not in self._target.bus_ids():
                raise reject(RejectReason.UNKNOWN_BUS, f"no bus {bus!r}")

    async def _execute(
        self, action: str, args: dict[str, Any], caller: Caller
    ) -> Mapping[str, Any] | Chunked | None:
        cid = None
        try:
            async with asyncio.timeout(self._exec_timeout):
                extra = self._extra.get(action)
                if extra is not None:
                    return await extra.handler(args, caller)
                if action == "read_point":
                    r = await self._target.read_point(args["device_id"], args["point"])
                    return {
                        "device_id": r.device_id,
                        "point": r.point,
                        "value": r.value,
                        "unit": r.unit,
                        "ts_ms": round(r.ts * 1000),
                        "quality": r.quality.value,
                    }
                if action == "write_point":
                    await self._target.write_point(args["device_id"], args["point"], args["value"])
                    return {"device_id": args["device_id"], "point": args["point"], "value": args["value"]}
                if action == "restart_bus":
                    await self._target.restart_bus(args["bus_id"])
                    return {"bus_id": args["bus_id"]}
                await self._resend_inventory()
                return None
        except TimeoutError as err:
            raise CommandRejectedError(
                RejectReason.TIMEOUT, f"no result within {self._exec_timeout:g} s", cid
            ) from err
        except CommandRejectedError as err:  # an extra action refusing its arguments
            raise CommandRejectedError(err.reason, err.detail, caller.command_id) from err
        except WriteRejectedError as err:
            raise CommandRejectedError(RejectReason.BAD_VALUE, err.reason, cid) from err
        except DeviceTimeoutError as err:
            raise CommandRejectedError(RejectReason.TIMEOUT, str(err), cid) from err
        except GatewayError as err:
            raise CommandRejectedError(RejectReason.DEVICE_ERROR, str(err), cid) from err
        except Exception as err:  # a runtime bug must not kill the uplink; answer and log it
            log.exception("command %s failed", action)
            raise CommandRejectedError(RejectReason.INTERNAL, type(err).__name__, cid) from err


_FAILURES = frozenset(
    {RejectReason.DEVICE_ERROR, RejectReason.TIMEOUT, RejectReason.INTERNAL, RejectReason.TOO_LARGE}
)


def domain_problem(domain: Mapping[str, Any], value: object) -> str | None:
    """Why `value` is outside a point's value domain, or None when it is inside."""
    kind = domain.get("type")
    is_number = isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "boolean" and not isinstance(value, bool):
        return "a boolean is required"
    if kind == "string" and not isinstance(value, str):
        return "a string is required"
    if kind in ("integer", "number") and not is_number:
        return "a whole number is required" if kind == "integer" else "a number is required"
    if kind == "integer" and isinstance(value, float) and not value.is_integer():
        return "a whole number is required"
    if "enum" in domain and value not in domain["enum"]:
        return f"must be one of {domain['enum']}"
    if is_number:
        assert isinstance(value, int | float)
        if "min" in domain and value < domain["min"]:
            return f"below the minimum {domain['min']}"
        if "max" in domain and value > domain["max"]:
            return f"above the maximum {domain['max']}"
    if isinstance(value, str) and "max_length" in domain and len(value) > domain["max_length"]:
        return f"longer than {domain['max_length']} characters"
    return None


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _printable(v: object) -> str:
    # A rejected command's id is whatever the sender wrote: quoted and cut, never raw in the log.
    return repr(v)[:80] if v is not None else "?"


def build_command(
    *,
    gateway_id: str,
    action: str,
    args: Mapping[str, Any] | None = None,
    command_id: str,
    nonce: str,
    issued_at: float,
    lifetime_s: float = 60.0,
) -> dict[str, Any]:
    """An unsigned command body (sign it with `signing.sign_hmac` / `sign_ed25519`)."""
    return {
        "schema": "citynerve.command/1",
        "id": command_id,
        "gateway_id": gateway_id,
        "action": action,
        "args": dict(args or {}),
        "issued_at_ms": int(issued_at * 1000),
        "expires_at_ms": int((issued_at + lifetime_s) * 1000),
        "nonce": nonce,
    }
