"""TLS client key rotation where the private key never leaves the gateway.

1. `tls_csr`: the gateway makes a new EC P-256 key (kept 0600 in its credentials folder as the
   pending key) and answers with a certificate signing request for it.
2. The platform's CA signs the CSR; `tls_install_cert` brings the certificate back.
3. The gateway checks that the certificate is for the pending key and valid now, then connects to
   the broker once more with the new key and certificate (client id `<client id>-rotate`) while
   the uplink keeps its connection. If the broker accepts it, the new pair becomes the uplink's
   (persisted: a restart keeps it) and the uplink reconnects with it. If not, nothing changes: the
   uplink stays on the old pair, the answer says why, and the pending key stays for a
   correctly signed certificate.

Every switch and refusal is an audit event (`kind: credentials`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import json
import logging
import os
from collections.abc import Callable, Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiomqtt

from citynerve.gateway.api import Event, EventState, Severity
from citynerve.gateway.uplink._connection import make_client
from citynerve.gateway.uplink.commands import Caller, KeyValueState
from citynerve.gateway.uplink.config import UpstreamConfig
from citynerve.gateway.uplink.encoding import RejectReason
from citynerve.gateway.uplink.errors import CommandRejectedError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

# cryptography (8 MB) is imported by the two commands that need it, not by the running gateway.

log = logging.getLogger(__name__)

STATE_KEY = "uplink.tls_identity"
# Recorded in place of the configured certificate's hash when the destination named none at the
# rotation (a password over TLS): a certificate named later is one provisioned again.
NO_CERTIFICATE = "none"
PENDING_KEY = "pending.key"
MAX_CERT_PEM = 12 * 1024  # a leaf and its intermediates; a command is at most 16 KiB (json_v1)
CREDENTIALS_KIND = "credentials"
CREDENTIALS_RULE = "credentials"


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to `path` readable by the owner only, atomically (temp file, fsync, rename)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def decode_state(text: object) -> object:
    """A JSON value of the store's key/value state (None when absent or damaged)."""
    if not isinstance(text, str):
        return None
    try:
        return json.loads(text)
    except ValueError:
        log.error("damaged key/value state ignored")
        return None


def _both_files(*paths: Path) -> bool:
    return all(p.is_file() for p in paths)


def _cert_sha256(path: Path | None) -> str | None:
    """The configured client certificate file's hash (None: none configured, or unreadable)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest() if path is not None else None
    except OSError:
        return None


def _configured_mark(upstream: UpstreamConfig) -> str | None:
    """What a rotation records of the configured client certificate: its hash, NO_CERTIFICATE when
    none is named, None when it cannot be read (not known)."""
    cert = upstream.tls.cert_file
    return NO_CERTIFICATE if cert is None else _cert_sha256(cert)


def _issued(path: Path | None) -> float | None:
    """When the (first) certificate in `path` was issued: its notBefore, in seconds since the epoch
    (None: no file, unreadable, not a certificate)."""
    if path is None:
        return None
    from cryptography import x509

    try:
        return x509.load_pem_x509_certificate(path.read_bytes()).not_valid_before_utc.timestamp()
    except (OSError, ValueError):
        return None


def _public_der(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    der: bytes = key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return der


def credentials_event(gateway_id: str, what: str, who: str, message: str, **attrs: Any) -> Event:
    """An audit record of a key or certificate change (never an active alarm)."""
    import time

    return Event(
        gateway_id,
        CREDENTIALS_KIND,
        EventState.RAISED,
        Severity.INFO,
        time.time(),
        CREDENTIALS_RULE,
        None,
        message,
        {"who": who, "what": what, **attrs},
        one_shot=True,
    )


class TlsRotation:
    """The gateway's TLS client identity: the configured pair, or the last one rotated to."""

    def __init__(
        self,
        *,
        state: KeyValueState,
        directory: Path,
        gateway_id: str,
        upstream: Callable[[], UpstreamConfig | None],
        switch: Callable[[UpstreamConfig], None],
        events: Callable[[Event], None],
        trial_timeout_s: float = 15.0,
        configured: Callable[[], UpstreamConfig] | None = None,
    ) -> None:
        self._state = state
        # The [upstream] as configured (not rotated): a rotation records its client certificate's
        # hash (or NO_CERTIFICATE), and gives way to a certificate provisioned again (replaced_by).
        # None: not known (a record from before hashes were kept, or the file was unreadable).
        self._configured = configured
        self._configured_sha256: str | None = None
        self.directory = directory
        self._gateway_id = gateway_id
        self._upstream = upstream
        self._switch = switch
        self._events = events
        self._trial_timeout_s = trial_timeout_s
        self.active: tuple[Path, Path] | None = None  # (cert, key) rotated to; None: as configured
        # The destination (`[[upstream]] id`) `active` was rotated for: only its uplink uses it, only
        # its certificate replaces it. None: recorded before ids were, the command destination's.
        self.destination: str | None = None
        # Until the uplink has connected with a new pair: the pair before it and its [upstream].
        self.previous: tuple[tuple[Path, Path] | None, UpstreamConfig] | None = None
        self._lock = asyncio.Lock()

    async def load(self) -> None:
        """The identity rotated to before a restart, when its files are still there."""
        data = decode_state(await self._state.get(STATE_KEY))
        if not isinstance(data, dict):
            return
        cert, key = Path(str(data.get("cert_file"))), Path(str(data.get("key_file")))
        if _both_files(cert, key):
            self.active = (cert, key)
            sha, destination = data.get("configured_sha256"), data.get("destination")
            self._configured_sha256 = sha if isinstance(sha, str) else None
            self.destination = destination if isinstance(destination, str) else None
            log.info("TLS client certificate: %s (rotated)", cert)
        else:
            log.error("rotated TLS client certificate %s is gone; using the configured one", cert)

    def destination_gone(self, ids: Collection[str]) -> None:
        """The destination the pair was rotated for is configured no more (renamed: one `[upstream]`
        turned into `[[upstream]] id = "city"` to feed a second centre): the pair counts as the
        command destination's again, as a record naming none, rather than left unused while that
        destination connects with its configured pair (perhaps revoked since the rotation)."""
        if self.active is not None and self.destination is not None and self.destination not in ids:
            log.warning(
                "rotated TLS client pair: destination %s is configured no more; the command "
                "destination takes it",
                self.destination,
            )
            self.destination = None

    def rotated_for(self, upstream: UpstreamConfig) -> bool:
        """The rotated pair is `upstream`'s destination's (a record without a destination counts as
        the command destination's: pass only that one's)."""
        return self.active is not None and self.destination in (None, upstream.id)

    def replaced_by(self, configured: UpstreamConfig) -> bool:
        """`configured` names a client certificate put in place since the rotation (on site, or by
        a remote config change): that pair, not the rotated one, is the one to connect with. Only
        `provisioned_again` forgets the rotated pair: until then a revert of the change finds it.
        Another destination's certificate never replaces it (commands moved to that destination)."""
        if self.active is None or not self.rotated_for(configured):
            return False
        sha = _cert_sha256(configured.tls.cert_file)
        # No configured certificate to use (none named: a Sparkplug destination with a password;
        # unreadable): the rotated pair stays, and is in force again when the pair comes back.
        if sha is None:
            return False
        if self._configured_sha256 is not None:
            return sha != self._configured_sha256
        # Which certificate the rotation replaced is not known: one issued after the rotated one
        # was put in place after the rotation (an installer's new pair).
        configured_at, rotated_at = _issued(configured.tls.cert_file), _issued(self.active[0])
        return configured_at is not None and rotated_at is not None and configured_at > rotated_at

    async def provisioned_again(self, configured: UpstreamConfig) -> bool:
        """At a start with no remote config change waiting for its health check, and when such a
        change is confirmed: a client certificate provisioned again (replaced_by) wins, as a
        command key provisioned again does; the rotated pair is forgotten (recorded, audited).
        Otherwise a record that did not know the configured certificate gets its hash now, so a
        later change of that file wins."""
        if not self.rotated_for(configured):
            return False
        if self.replaced_by(configured):
            await self._configured_wins(configured)
            return True
        sha = _cert_sha256(configured.tls.cert_file)
        if self._configured_sha256 is None and sha is not None:
            data = decode_state(await self._state.get(STATE_KEY))
            if isinstance(data, dict):
                await self._state.put(STATE_KEY, json.dumps({**data, "configured_sha256": sha}))
            self._configured_sha256 = sha
        return False

    async def _configured_wins(self, configured: UpstreamConfig) -> None:
        rotated, self.active, self.previous = self.active, None, None
        self._configured_sha256 = self.destination = None
        await self._state.put(STATE_KEY, json.dumps(None))
        self._forget(rotated)
        cert = configured.tls.cert_file
        message = f"configured TLS client certificate {cert} changed: it replaces the rotated one"
        self._events(credentials_event(self._gateway_id, "tls_configured", "config", message))
        log.warning("%s", message)

    def effective(self, upstream: UpstreamConfig) -> UpstreamConfig:
        """`upstream` with the rotated certificate and key in place of the configured ones when the
        pair was rotated for its destination (rotated_for), unless it names a pair provisioned
        since the rotation (replaced_by)."""
        if self.active is None or not self.rotated_for(upstream) or self.replaced_by(upstream):
            return upstream
        cert, key = self.active
        tls = upstream.tls.model_copy(update={"cert_file": cert, "key_file": key})
        return upstream.model_copy(update={"tls": tls})

    # -- the two commands ---------------------------------------------------------------------

    def _check_tls(self) -> None:
        upstream = self._upstream()
        if upstream is None or not any(b.tls for b in upstream.broker_urls()):
            raise CommandRejectedError(
                RejectReason.BAD_VALUE, "the uplink does not use TLS (no mqtts:// broker): no client key"
            )

    async def make_csr(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        self._check_tls()
        cn = args.get("common_name", self._gateway_id)
        if not isinstance(cn, str) or not 0 < len(cn) <= 64:
            raise CommandRejectedError(RejectReason.BAD_VALUE, "common_name must be 1..64 characters")
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        async with self._lock:
            key = ec.generate_private_key(ec.SECP256R1())
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            write_private(self.directory / PENDING_KEY, pem)
            csr = (
                x509.CertificateSigningRequestBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
                .sign(key, hashes.SHA256())
            )
        fingerprint = hashlib.sha256(_public_der(key.public_key())).hexdigest()
        self._events(
            credentials_event(
                self._gateway_id,
                "tls_csr",
                f"platform key {caller.key_id}",
                f"new TLS client key made (public key sha256 {fingerprint[:16]})",
                public_key_sha256=fingerprint,
            )
        )
        return {
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode("ascii"),
            "public_key_sha256": fingerprint,
            "key_type": "ec-p256",
        }

    def _pending_key(self) -> ec.EllipticCurvePrivateKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        path = self.directory / PENDING_KEY
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except FileNotFoundError as err:
            raise CommandRejectedError(
                RejectReason.BAD_VALUE, "no pending key: ask for a CSR (tls_csr) first"
            ) from err
        except (OSError, ValueError) as err:
            raise CommandRejectedError(RejectReason.INTERNAL, f"pending key unreadable: {err}") from err
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CommandRejectedError(RejectReason.INTERNAL, "pending key is not an EC key")
        return key

    async def install(self, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
        text = args.get("certificate")
        if not isinstance(text, str) or not 0 < len(text) <= MAX_CERT_PEM:
            raise CommandRejectedError(
                RejectReason.BAD_VALUE, f"certificate must be PEM text of at most {MAX_CERT_PEM} bytes"
            )
        who = f"platform key {caller.key_id}"
        self._check_tls()
        configured = self._configured() if self._configured is not None else None
        if configured is not None and self.replaced_by(configured):
            # A revert of that change goes back to the rotated pair, which this one would replace.
            raise CommandRejectedError(
                RejectReason.BAD_VALUE,
                "a config change naming another client certificate waits for its health check; "
                "send the certificate after its verdict",
            )
        upstream = self._upstream()
        if upstream is not None and self.active is not None and not self.rotated_for(upstream):
            # Kept for that destination (commands moved away on site): a rotation here would end
            # its record, and it would come back on its configured pair, perhaps revoked.
            raise CommandRejectedError(
                RejectReason.BAD_VALUE,
                f"the rotated TLS client pair is destination {self.destination}'s, which does not "
                f"carry commands now: provision {upstream.id}'s certificate on site",
            )
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization

        async with self._lock:
            key = self._pending_key()
            try:
                # UTF-8: explanatory text beside the PEM blocks may be anything (a CA tool writes
                # `subject=O = Stadtwerke Zürich`); only the certificates themselves are kept.
                chain = x509.load_pem_x509_certificates(text.encode("utf-8"))
            except ValueError as err:
                raise CommandRejectedError(RejectReason.BAD_VALUE, f"not a PEM certificate: {err}") from err
            cert = chain[0]
            if _public_der(cert.public_key()) != _public_der(key.public_key()):
                raise CommandRejectedError(
                    RejectReason.BAD_VALUE, "the certificate is not for the pending key (an older CSR?)"
                )
            now = dt.datetime.now(dt.UTC)
            if not cert.not_valid_before_utc <= now + dt.timedelta(minutes=5) < cert.not_valid_after_utc:
                raise CommandRejectedError(
                    RejectReason.BAD_VALUE,
                    f"not valid now ({cert.not_valid_before_utc:%Y-%m-%d} "
                    f"to {cert.not_valid_after_utc:%Y-%m-%d})",
                )
            stamp = now.strftime("%Y%m%dT%H%M%S")
            cert_file = self.directory / f"client-{stamp}.pem"
            key_file = self.directory / f"client-{stamp}.key"
            write_private(cert_file, b"".join(c.public_bytes(serialization.Encoding.PEM) for c in chain))
            write_private(key_file, (self.directory / PENDING_KEY).read_bytes())
            upstream = self._upstream()
            if upstream is None:
                raise CommandRejectedError(RejectReason.INTERNAL, "no [upstream]")
            tls = upstream.tls.model_copy(update={"cert_file": cert_file, "key_file": key_file})
            candidate = upstream.model_copy(update={"tls": tls})
            error = await self._trial(candidate)
            subject = cert.subject.rfc4514_string()
            if error is not None:
                for p in (cert_file, key_file):
                    p.unlink(missing_ok=True)
                self._events(
                    credentials_event(
                        self._gateway_id,
                        "tls_fallback",
                        who,
                        f"new TLS client certificate refused by the broker; still on the old one: {error}",
                        subject=subject,
                    )
                )
                log.error("new TLS client certificate %s refused: %s; keeping the old one", subject, error)
                raise CommandRejectedError(
                    RejectReason.BAD_VALUE,
                    f"the broker refused the new certificate ({error}); still on the old one",
                )
            if self.previous is not None:  # a switch not confirmed yet: that one is the fallback
                self._forget(self.active)
            else:
                self.previous = (self.active, upstream)
            sha = _configured_mark(configured) if configured is not None else None
            record = {"cert_file": str(cert_file), "key_file": str(key_file), "since": now.timestamp()}
            mark = {"configured_sha256": sha, "destination": upstream.id}
            await self._state.put(STATE_KEY, json.dumps({**record, **mark}))
            self.active = (cert_file, key_file)
            self._configured_sha256, self.destination = sha, upstream.id
            (self.directory / PENDING_KEY).unlink(missing_ok=True)
            self._switch(candidate)
        not_after = cert.not_valid_after_utc
        self._events(
            credentials_event(
                self._gateway_id,
                "tls_switch",
                who,
                f"TLS client certificate switched to {subject} (valid to {not_after:%Y-%m-%d})",
                subject=subject,
                not_after=not_after.timestamp(),
            )
        )
        log.warning("TLS client certificate switched to %s (valid to %s)", subject, not_after)
        return {"switched": True, "subject": subject, "not_after": not_after.timestamp()}

    def confirmed(self) -> None:
        """The uplink is connected with the new pair: the pair before it is deleted (rotated files
        only, never the configured ones)."""
        if self.previous is not None:
            self._forget(self.previous[0])
        self.previous = None

    async def fall_back(self, reason: str) -> UpstreamConfig | None:
        """The uplink did not connect with the new pair: back to the one before (the [upstream]
        to use again), recorded and audited. None when there is nothing to go back to."""
        if self.previous is None:
            return None
        (before, upstream), failed = self.previous, self.active
        self.previous = None
        record: dict[str, str | None] | None = None
        if before is not None:
            record = {"cert_file": str(before[0]), "key_file": str(before[1])}
            record["configured_sha256"] = self._configured_sha256
            record["destination"] = self.destination
        await self._state.put(STATE_KEY, json.dumps(record))
        self.active = before
        self._forget(failed)
        self._events(
            credentials_event(
                self._gateway_id,
                "tls_fallback",
                "gateway",
                f"uplink did not connect with the new TLS client certificate ({reason}); back to the old one",
            )
        )
        log.error(
            "uplink did not connect with the new TLS client certificate (%s); back to the old one", reason
        )
        return upstream

    @staticmethod
    def _forget(pair: tuple[Path, Path] | None) -> None:
        for p in pair or ():
            with contextlib.suppress(OSError):
                p.unlink()

    async def _trial(self, candidate: UpstreamConfig) -> str | None:
        """Connect once with the candidate identity: None when a broker accepted it, else why not."""
        client_id = f"{candidate.effective_client_id(self._gateway_id)}-rotate"[:128]
        errors: list[str] = []
        for broker in candidate.broker_urls():
            try:
                client = make_client(candidate, broker, client_id=client_id, will=None)
                async with asyncio.timeout(self._trial_timeout_s):
                    async with client:
                        pass
                return None
            except (aiomqtt.MqttError, OSError, TimeoutError, ValueError) as err:
                errors.append(f"{broker}: {type(err).__name__}" + (f": {err}" if str(err) else ""))
        return "; ".join(errors) or "no broker"
