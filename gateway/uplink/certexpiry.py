"""When the uplink's certificates run out: the TLS client certificate and the CA, in status, metrics,
the birth message and `citynerve diag certs`, with a warning alarm ahead of time.

A gateway whose client certificate expired cannot reach the platform any more, and nobody on site
will notice: the platform must hear about it weeks before, while the link still works. `CertWatch`
reads the files the uplink uses (again only when a file changed), and raises one alarm per
certificate (`kind: certificate_expiry`, on the gateway itself) once fewer than `warn_days` are
left; it clears when the certificate is replaced by one with time left.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.uplink.certinfo import MAX_CA_BYTES, _name
from citynerve.gateway.uplink.config import TlsConfig

log = logging.getLogger(__name__)

EXPIRY_KIND = "certificate_expiry"
EXPIRY_RULE = "certificates"
MAX_CERT_BYTES = 64 * 1024  # a client certificate chain
URGENT_DAYS = 7.0  # fewer days left than this (or expired): the alarm is MAJOR
SAME_CERT_S = 43200.0
"""An alarm's certificate is the one now in use when their ends are this close (an alarm restored
from before a restart knows its end only from its raise time and days left, to 0.01 day)."""
GONE = "destination removed or disabled, or it carries the commands now (watched as such)"


@dataclass(frozen=True, slots=True)
class CertExpiry:
    """One certificate the uplink relies on and when it stops being valid."""

    role: str  # "client" or "ca"
    file: str
    subject: str
    issuer: str
    not_after: float  # seconds since the epoch
    days_left: float
    not_before: float = 0.0  # seconds since the epoch: a wall clock before it is wrong

    @property
    def subject_key(self) -> str:
        """The alarm's subject: the client certificate is one; each CA by its name."""
        return "client" if self.role == "client" else f"ca {self.subject}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "file": self.file,
            "subject": self.subject,
            "issuer": self.issuer,
            "not_after": self.not_after,
            "not_after_iso": dt.datetime.fromtimestamp(self.not_after, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "days_left": round(self.days_left, 2),
        }


class CertificateFileError(ValueError):
    """A certificate file the uplink is configured with cannot be read or parsed (which, where)."""

    def __init__(self, path: Path, role: str, reason: str) -> None:
        super().__init__(f"{role} certificate {path}: {reason}")
        self.path = path
        self.role = role
        self.reason = reason


def _read(path: Path, limit: int) -> bytes:
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise ValueError(f"larger than {limit} bytes")
    return data


def read_expiries(tls: TlsConfig, now: float) -> list[CertExpiry]:
    """The client certificate (the first of its file) and every CA of `ca_file`, with days left.
    Raises CertificateFileError for a file that cannot be read or parsed."""
    out: list[CertExpiry] = []
    files: list[tuple[str, Path, int]] = []
    if tls.cert_file is not None:
        files.append(("client", tls.cert_file, MAX_CERT_BYTES))
    if tls.ca_file is not None:
        files.append(("ca", tls.ca_file, MAX_CA_BYTES))
    if not files:
        return out
    from cryptography import x509  # only with TLS files: the running gateway imports this module

    for role, path, limit in files:
        try:
            certs = x509.load_pem_x509_certificates(_read(path, limit))
        except (OSError, ValueError) as err:
            raise CertificateFileError(path, role, str(err)) from err
        for cert in certs[:1] if role == "client" else certs[:50]:
            end = cert.not_valid_after_utc.timestamp()
            start = cert.not_valid_before_utc.timestamp()
            out.append(
                CertExpiry(
                    role, str(path), _name(cert.subject), _name(cert.issuer), end, (end - now) / 86400, start
                )
            )
    return out


class CertWatch:
    """Expiry of the uplink's certificates for status and the warning alarm. `tls()` gives the TLS
    settings in force (they change when the client key is rotated)."""

    def __init__(
        self,
        tls: Callable[[], TlsConfig],
        *,
        gateway_id: str,
        warn_days: float,
        events: Callable[[Event], None],
        wall: Callable[[], float],
        destination: str | None = None,
    ) -> None:
        self._tls = tls
        # None: the command destination's (alarm subjects `client`, `ca CN=…`); another
        # destination's alarms name it first (`city: client`; a destination id has no space, and the
        # command destination's subjects are `client` or start `ca `): one alarm per certificate.
        self.destination = destination
        self._gateway_id = gateway_id
        self.warn_days = warn_days
        self._events = events
        self._wall = wall
        self._stamp: tuple[Any, ...] | None = None
        self._certs: list[CertExpiry] = []
        self._error: str | None = None
        # alarm subject -> (severity, not_after) raised: a certificate of the same subject with
        # another end (the command destination changed, a pair replaced inside the window) is
        # raised again, so the alarm describes the certificate in use.
        self._raised: dict[str, tuple[Severity, float]] = {}
        self._clock_wrong = False  # the last check found the wall clock before an issue date

    def subject(self, cert: CertExpiry) -> str:
        """The alarm subject of `cert` (see `destination`)."""
        return cert.subject_key if self.destination is None else f"{self.destination}: {cert.subject_key}"

    def owns(self, subject: str) -> bool:
        """Whether an alarm subject is one this watch raises."""
        if self.destination is None:
            return subject == "client" or subject.startswith("ca ")
        return subject.startswith(f"{self.destination}: ")

    def release(self, message: str) -> None:
        """Clear every alarm this watch raised (its certificates are watched no more here)."""
        for key in list(self._raised):
            del self._raised[key]
            self._events(self._cleared(key, message))

    def adopt(self, raised: Mapping[str, tuple[Severity, float]]) -> None:
        """Expiry alarms still active from before a restart (subject -> severity and the end of
        the certificate they were raised for): the next check judges them as its own, so one whose
        certificate was replaced while the gateway was stopped clears then, or is raised again for
        the new one still inside the window (it stayed active for good: nothing in this run had
        raised it)."""
        self._raised.update(raised)

    def _file_stamp(self, tls: TlsConfig) -> tuple[Any, ...]:
        stamp: list[Any] = []
        for p in (tls.cert_file, tls.ca_file):
            try:
                st = os.stat(p) if p is not None else None
            except OSError:
                st = None
            stamp.append((str(p), st.st_mtime_ns if st else None, st.st_size if st else None))
        return tuple(stamp)

    def _refresh(self) -> None:
        tls = self._tls()
        stamp = self._file_stamp(tls)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        try:
            certs = read_expiries(tls, 0.0)
            self._error = None
        except CertificateFileError as err:
            certs, self._error = [], str(err)
            log.warning("certificates: %s", err)
        self._certs = certs

    def current(self) -> list[CertExpiry]:
        """The certificates with days left as of now."""
        self._refresh()
        now = self._wall()
        return [
            CertExpiry(
                c.role, c.file, c.subject, c.issuer, c.not_after, (c.not_after - now) / 86400, c.not_before
            )
            for c in self._certs
        ]

    def status(self) -> dict[str, Any]:
        """For status, the birth message and metrics: every certificate, the warning threshold and
        which ones are inside it."""
        certs = self.current()
        return {
            "warn_days": self.warn_days,
            "certificates": [c.to_dict() for c in certs],
            "expiring": [c.subject_key for c in certs if c.days_left <= self.warn_days],
            "error": self._error,
        }

    def check(self) -> None:
        """Raise or clear the warning alarms (call now and then: every minute is plenty)."""
        now = self._wall()
        certs = self.current()
        if any(now < c.not_before for c in certs):
            # The wall clock is before a certificate was issued: a box without an RTC booted in
            # 1970, before NTP. Days left mean nothing yet: no alarm raised or cleared (a restored
            # one cleared as "replaced") until the clock is set (Credentials.rearm checks again).
            if not self._clock_wrong:
                log.warning("certificates: the wall clock is before they were issued; expiry not judged yet")
            self._clock_wrong = True
            return
        self._clock_wrong = False
        seen: set[str] = set()
        for c in certs:
            key = self.subject(c)
            seen.add(key)
            if c.days_left > self.warn_days:
                continue
            severity = Severity.MAJOR if c.days_left <= URGENT_DAYS else Severity.WARNING
            held = self._raised.get(key)
            if held is not None and held[0] == severity and abs(held[1] - c.not_after) <= SAME_CERT_S:
                continue
            self._raised[key] = (severity, c.not_after)
            when = "expired" if c.days_left <= 0 else f"expires in {c.days_left:.1f} days"
            where = f", destination {self.destination}" if self.destination is not None else ""
            attrs: dict[str, Any] = {**c.to_dict(), "certificate": key}
            if self.destination is not None:
                attrs["destination"] = self.destination
            self._events(
                Event(
                    self._gateway_id,
                    EXPIRY_KIND,
                    EventState.RAISED,
                    severity,
                    now,
                    EXPIRY_RULE,
                    round(c.days_left, 2),
                    f"{c.role} certificate {c.subject} {when} ({c.file}{where})",
                    attrs,
                    subject=key,
                )
            )
        for key in [k for k in self._raised if k not in seen or self._still_fine(k)]:
            del self._raised[key]
            self._events(self._cleared(key, "certificate replaced"))

    def _cleared(self, key: str, message: str) -> Event:
        return Event(
            self._gateway_id,
            EXPIRY_KIND,
            EventState.CLEARED,
            Severity.INFO,
            self._wall(),
            EXPIRY_RULE,
            None,
            message,
            {"certificate": key},
            subject=key,
        )

    def _still_fine(self, key: str) -> bool:
        now = self._wall()
        return any(
            self.subject(c) == key and (c.not_after - now) / 86400 > self.warn_days for c in self._certs
        )


class DestinationWatches:
    """Expiry of the certificates of every destination but the command destination (whose watch is
    the credentials' own): each destination's uplink's TLS files, with alarms naming it. A district
    centre's client certificate must not run out unseen either: that centre would be cut off."""

    def __init__(
        self, *, gateway_id: str, events: Callable[[Event], None], wall: Callable[[], float]
    ) -> None:
        self._gateway_id, self._events, self._wall = gateway_id, events, wall
        self.watches: dict[str, CertWatch] = {}
        self._tls: dict[str, TlsConfig] = {}
        self._restored: dict[str, tuple[Severity, float]] = {}  # until the first update

    def adopt(self, raised: Mapping[str, tuple[Severity, float]]) -> None:
        """Alarms of other destinations still active from before a restart (see CertWatch.adopt)."""
        self._restored.update(raised)

    def update(self, tls_of: Mapping[str, TlsConfig]) -> None:
        """The destinations and the TLS settings their uplinks use, as they run now (new uplinks):
        checked at once; the alarms of a destination no longer among them clear."""
        self._tls.clear()  # in place: each watch reads its destination's entry of this dict
        self._tls.update(tls_of)
        for dest in [d for d in self.watches if d not in tls_of]:
            self.watches.pop(dest).release(GONE)
        for dest, tls in tls_of.items():
            watch = self.watches.get(dest)
            if watch is None:
                watch = self.watches[dest] = CertWatch(
                    functools.partial(self._tls.__getitem__, dest),
                    gateway_id=self._gateway_id,
                    warn_days=tls.expiry_warning_days,
                    events=self._events,
                    wall=self._wall,
                    destination=dest,
                )
                watch.adopt({k: v for k, v in self._restored.items() if watch.owns(k)})
            watch.warn_days = tls.expiry_warning_days
            watch.check()
        gone = {k: v for k, v in self._restored.items() if not any(w.owns(k) for w in self.watches.values())}
        self._restored = {}
        if gone:  # restored alarms of destinations removed while the gateway was stopped
            orphans = CertWatch(
                TlsConfig, gateway_id=self._gateway_id, warn_days=0, events=self._events, wall=self._wall
            )
            orphans.adopt(gone)
            orphans.release(GONE)

    def check(self) -> None:
        for watch in self.watches.values():
            watch.check()
