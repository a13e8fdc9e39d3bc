# Alarms with a hold time and hysteresis: raise only after the condition held `hold_ms`, clear
# only after it has been off (below the clear level) for `hold_ms`. A passing lorry rocks a cover
# for a fraction of a second; a lifted cover stays tilted.


import time

ticks_diff = time.ticks_diff  # wraps correctly on MicroPython's ticks


class HoldAlarm:
    def __init__(self, raise_at, clear_at, hold_ms, active=False):
        if clear_at > raise_at:
            raise ValueError("clear level above raise level")
        self.raise_at = raise_at
        self.clear_at = clear_at
        self.hold_ms = hold_ms
        self.active = active
        self._since = None  # ticks when the pending change started

    def pending(self):
        return self._since is not None

    def update(self, value, now_ms):
        """Feed one sample; returns True when the alarm state changed with this sample."""
        if value is None:
            return False
        if not self.active:
            going = value > self.raise_at
        else:
            going = value < self.clear_at
        if not going:
            self._since = None
            return False
        if self._since is None:
            self._since = now_ms
        if self.hold_ms <= 0 or ticks_diff(now_ms, self._since) >= self.hold_ms:
            self.active = not self.active
            self._since = None
            return True
        return False
