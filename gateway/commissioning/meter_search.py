"""Find every DL/T 645 or CJ/T 188 meter on one RS-485 line without knowing any address.

The meter search concentrators do: ask the all-wildcard pattern (AAAAAAAAAAAA); silence means no
meter, one clean reply names the only meter, a collision (overlapping replies: garbage or a bad
checksum) means several. On a collision the search fixes the next wildcard digit, from the least
significant (where the addresses of one riser differ), to 0..9 and asks each of those patterns:
a depth-first walk of the address tree that only descends where meters collide.

Each question costs its wire time at the line's baud rate, and a silent one its reply timeout; the
estimate from those two figures is shown as the search goes (`SearchProgress`).

A full address that still collides is two meters with one address: rare, one or two on a line. On a
noisy line (or wrong line settings: every reply garbled) every question "collides" and each waits its
full timeout; the search stops once more full addresses collide than a real line has
(MAX_UNRESOLVED), with `stop = Stop.NOISY`, instead of walking on to MAX_QUESTIONS (90 minutes
at 2400 baud).
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

WILDCARD = "A"
DIGITS = {"dlt645": 12, "cjt188": 14}
# Request and reply sizes in bytes (preamble included), for the wire-time estimate.
FRAME_BYTES = {"dlt645": (20, 24), "cjt188": (20, 22)}
MAX_QUESTIONS = 5000  # a line that collides without end (two meters with one address, noise): stop
MAX_UNRESOLVED = 3
"""Full addresses that still collide before the line is judged noisy: one full address is one meter,
so more than a few are not meters sharing addresses but garbled replies."""


class Stop(enum.Enum):
    """Why a search stopped before it had asked every pattern."""

    QUESTIONS = "questions"  # MAX_QUESTIONS asked
    NOISY = "noisy"  # more than MAX_UNRESOLVED full addresses collide: noise or wrong line settings


Probe = Callable[[str], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class SearchProgress:
    asked: int
    pending: int  # patterns known to be still to ask (ten per unresolved collision)
    found: int
    seconds_left: float  # estimate: pending questions x (wire time + reply timeout)


@dataclass(slots=True)
class SearchResult:
    found: dict[str, dict[str, Any]] = field(default_factory=dict)  # address -> the probe's detail
    asked: int = 0
    collisions: int = 0
    unresolved: list[str] = field(default_factory=list)  # full addresses that still collide
    stopped: str = ""  # why the search stopped early, if it did, for people
    stop: Stop | None = None  # the same, for code

    def to_dict(self) -> dict[str, Any]:
        return {
            "found": sorted(self.found),
            "asked": self.asked,
            "collisions": self.collisions,
            "unresolved": self.unresolved,
            "stopped": self.stopped,
            "stop": self.stop.value if self.stop else None,
        }


def question_s(family: str, baudrate: int, timeout_s: float, bits_per_byte: int = 11) -> tuple[float, float]:
    """(seconds for a question that is answered, for one that is not) at this baud rate."""
    request, reply = FRAME_BYTES[family]
    byte_s = bits_per_byte / max(1, baudrate)
    return (request + reply) * byte_s, request * byte_s + timeout_s


def estimate_s(family: str, meters: int, baudrate: int, timeout_s: float) -> float:
    """Before a search: about how long `meters` meters take to find. Each collision costs ten
    questions, most of them silent; a line of n meters has about n collisions to resolve."""
    answered, silent = question_s(family, baudrate, timeout_s)
    questions = 1 + 10 * max(0, meters - 1) + meters
    return meters * answered + (questions - meters) * silent


async def search(
    family: str,
    probe: Probe,
    *,
    baudrate: int,
    timeout_s: float,
    progress: Callable[[SearchProgress], None] | None = None,
) -> SearchResult:
    """Walk the address tree with `probe(pattern) -> {"outcome": "silent"|"one"|"collision", ...}`."""
    digits = DIGITS[family]
    answered_s, silent_s = question_s(family, baudrate, timeout_s)
    result = SearchResult()
    stack = [WILDCARD * digits]
    while stack:
        if result.asked >= MAX_QUESTIONS:
            result.stop = Stop.QUESTIONS
            result.stopped = f"stopped after {MAX_QUESTIONS} questions; {len(stack)} patterns not asked"
            break
        if len(result.unresolved) > MAX_UNRESOLVED:
            result.stop = Stop.NOISY
            result.stopped = (
                f"line noisy or settings wrong: {len(result.unresolved)} full addresses collide (one address "
                f"is one meter); stopped after {result.asked} questions: run `citynerve diag {family} probe`"
            )
            break
        pattern = stack.pop()
        answer = await probe(pattern)
        result.asked += 1
        outcome = answer.get("outcome")
        if outcome == "one":
            address = str(answer["address"])
            result.found[address] = {k: v for k, v in answer.items() if k not in ("outcome", "address")}
        elif outcome == "collision":
            result.collisions += 1
            at = pattern.rfind(WILDCARD)
            if at < 0:
                result.unresolved.append(pattern)  # two meters with one address, or a noisy line
            else:
                # Pushed 9..0 so 0 is asked first: the order an installer reads the addresses in.
                stack += [pattern[:at] + d + pattern[at + 1 :] for d in "9876543210"]
        if progress:
            progress(
                SearchProgress(
                    result.asked, len(stack), len(result.found), len(stack) * silent_s + answered_s
                )
            )
    return result
