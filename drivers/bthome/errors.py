"""Typed errors of the BTHome driver. Advert errors are FrameErrors: a bad advert is a transient thing."""

from __future__ import annotations

import enum

from citynerve.gateway.api import FrameError, FrameFault

PROTOCOL = "bthome"


class RejectReason(enum.StrEnum):
    """Why an advertisement of a configured device was not delivered (counted per device)."""

    MALFORMED = "malformed"  # not a BTHome v2 payload, truncated, unknown object id
    WRONG_KEY = "wrong_key"  # encrypted, but the MIC does not verify with the configured key
    NO_KEY = "no_key"  # encrypted, but no key is configured for the device
    UNENCRYPTED = "unencrypted"  # plaintext from a device that has a key (downgrade attempt)
    REPLAY = "replay"  # counter not above the last accepted one
    STORE_UNAVAILABLE = "store_unavailable"  # the last accepted counter could not be read: no check


class BTHomeFrameError(FrameError):
    """A BTHome service-data payload that cannot be used. `reason_code` says why, as data."""

    reason_code: RejectReason = RejectReason.MALFORMED

    def __init__(self, reason: str, data: bytes = b"") -> None:
        fault = FrameFault.DECRYPT if self.reason_code is RejectReason.WRONG_KEY else FrameFault.FRAMING
        super().__init__(PROTOCOL, reason, data, fault=fault)


class MalformedAdvertError(BTHomeFrameError):
    """Not a valid BTHome v2 payload: bad version, truncated object, unknown object id."""

    def __init__(self, reason: str, data: bytes = b"", *, offset: int | None = None) -> None:
        self.offset = offset
        where = f" at byte {offset}" if offset is not None else ""
        super().__init__(f"{reason}{where}", data)


class DecryptionError(BTHomeFrameError):
    """The MIC does not verify: wrong key, wrong MAC, or a forged/corrupted payload."""

    reason_code = RejectReason.WRONG_KEY

    def __init__(self, mac: str, data: bytes = b"") -> None:
        self.mac = mac
        super().__init__(f"MIC check failed for {mac} (wrong key or forged advert)", data)


class MissingKeyError(BTHomeFrameError):
    """The payload is encrypted and no key was given."""

    reason_code = RejectReason.NO_KEY

    def __init__(self, mac: str, data: bytes = b"") -> None:
        self.mac = mac
        super().__init__(f"advert from {mac} is encrypted and no key is configured", data)


class UnencryptedAdvertError(BTHomeFrameError):
    """Plaintext payload from a device configured with a key: refused (it could be forged)."""

    reason_code = RejectReason.UNENCRYPTED

    def __init__(self, mac: str, data: bytes = b"") -> None:
        self.mac = mac
        super().__init__(f"plaintext advert from {mac}, which has a key: refused", data)


COUNTER_RESTART_GAP = 64
"""A counter at least this far below the last accepted one, and below half of it, looks like a node
whose counter started again (its flash erased: device_fw reserves counters in blocks of 64), not a
re-ordered advert. It is refused all the same: only the technician can tell it from a replay."""


class ReplayError(BTHomeFrameError):
    """The encryption counter did not increase: a replayed (or re-ordered) advert. `restarted`: the
    counter is far below the last accepted one, as a node's is after its flash was erased."""

    reason_code = RejectReason.REPLAY

    def __init__(self, mac: str, counter: int, last_counter: int, data: bytes = b"") -> None:
        self.mac = mac
        self.counter = counter
        self.last_counter = last_counter
        self.restarted = last_counter - counter >= COUNTER_RESTART_GAP and counter * 2 < last_counter
        why = (
            ": far below it, as when a node's flash was erased (or an old advert replayed)"
            if self.restarted
            else ""
        )
        super().__init__(
            f"counter {counter} from {mac} is not above the last accepted {last_counter}{why}", data
        )


class CounterUnavailableError(BTHomeFrameError):
    """The node's last accepted counter could not be read from the gateway's store, so a replay
    could not be told from a fresh advert: refused, and the read is tried again at the next one.
    Nothing is wrong with the advert itself; `cause` is what the store raised."""

    reason_code = RejectReason.STORE_UNAVAILABLE

    def __init__(self, mac: str, cause: BaseException) -> None:
        self.mac = mac
        self.cause = cause
        super().__init__(
            f"cannot read the last counter of {mac} from the gateway's store ({cause}): refused until "
            "it can be read"
        )
