"""Capped, jittered exponential backoff, shared by everything that retries a connection: the
uplink's broker sessions and a bus owner's open of its channel. Jitter matters in the field: a
power cut restarts a whole district's gateways at once, and retries without it stay in step."""

from __future__ import annotations

import random


class Backoff:
    """Delay n is min(max, initial * 2**n), minus up to `jitter` of it drawn at random: never more
    than `max_s`, never less than (1 - jitter) of the doubling delay."""

    def __init__(self, initial_s: float, max_s: float, jitter: float, *, rng: random.Random | None = None):
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.max_s, self.initial_s * (2 ** min(self.attempt, 30)))
        self.attempt += 1
        return base * (1 - self.jitter * self._rng.random())

    def reset(self) -> None:
        self.attempt = 0
