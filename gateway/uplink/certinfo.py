"""Who presented what: the broker's certificate and the configured CA, named when TLS fails.

"certificate verify failed" alone sends a technician in circles. After a failed verification one
more handshake without verification fetches the certificate the broker presents (never used for
anything but this description), so the message can say who issued it, for which name, and whether
it is valid today, next to the CA the gateway was told to trust.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ssl
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography import x509

# cryptography (8 MB of shared library and modules) is imported where a certificate is read: the
# running gateway imports this module, and reads certificates only when TLS files are configured.

MAX_CA_BYTES = 1_000_000


def _name(name: x509.Name) -> str:
    from cryptography.x509.oid import NameOID

    cn = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if cn:
        value = cn[0].value
        return "CN=" + (value.decode(errors="replace") if isinstance(value, bytes) else value)
    return name.rfc4514_string() or "(empty name)"


def describe_certificate(der: bytes, now: dt.datetime | None = None) -> str:
    from cryptography import x509

    cert = x509.load_der_x509_certificate(der)
    now = now or dt.datetime.now(dt.UTC)
    start, end = cert.not_valid_before_utc, cert.not_valid_after_utc
    if now < start:
        validity = f"not valid before {start:%Y-%m-%d %H:%M} UTC (gateway clock behind, or a new cert?)"
    elif now > end:
        validity = f"expired {end:%Y-%m-%d %H:%M} UTC"
    else:
        validity = f"valid {start:%Y-%m-%d} to {end:%Y-%m-%d}"
    return f"{_name(cert.subject)} issued by {_name(cert.issuer)}, {validity}"


def describe_ca_file(path: Path | None) -> str:
    if path is None:
        return "the system's CA bundle"
    from cryptography import x509

    try:
        data = path.read_bytes()[:MAX_CA_BYTES]
        certs = x509.load_pem_x509_certificates(data)
    except (OSError, ValueError) as err:
        return f"{path} (unreadable: {err})"
    names = ", ".join(_name(c.subject) for c in certs[:5])
    return f"{path} ({names})"


async def presented_certificate(
    host: str, port: int, server_hostname: str, timeout_s: float = 5.0
) -> str | None:
    """The broker's certificate, described; None when it cannot be fetched."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        async with asyncio.timeout(timeout_s):
            _, writer = await asyncio.open_connection(host, port, ssl=ctx, server_hostname=server_hostname)
    except (OSError, ssl.SSLError, TimeoutError):
        return None
    try:
        sslobj = writer.get_extra_info("ssl_object")
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        return describe_certificate(der) if der else None
    except ValueError:
        return None
    finally:
        writer.close()
