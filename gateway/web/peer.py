"""Who is on the other end of a loopback connection: the same rule as the control socket.

The control socket is mode 0660: the gateway's user and group (and root) may ask, other local users
may not. A status page on loopback without a password follows that rule: the kernel's socket table
(/proc/net/tcp, tcp6) names the user owning the client's end of the connection, and that user must
be root, the gateway's user, or a member of the gateway's group.
"""

from __future__ import annotations

import grp
import ipaddress
import os
import pwd
import socket
import struct
from pathlib import Path

PROC_NET = Path("/proc/net")


def _hex_addr(host: str, port: int) -> tuple[str, str]:
    """`ADDR:PORT` as /proc/net/tcp{,6} writes it, and which table holds it. An IPv4-mapped address
    (a dual-stack listener) is the IPv4 client's own socket, in the IPv4 table."""
    ip = ipaddress.ip_address(host.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.version == 4:
        return f"{struct.unpack('<I', ip.packed)[0]:08X}:{port:04X}", "tcp"
    words = struct.unpack("<4I", ip.packed)  # four host-order 32-bit words
    return "".join(f"{w:08X}" for w in words) + f":{port:04X}", "tcp6"


def peer_uid(peer: tuple[str, int], local: tuple[str, int], *, proc: Path = PROC_NET) -> int | None:
    """The uid owning the client's end (`peer`) of our connection at `local`, or None when the
    kernel's table does not show it (not Linux, or the client is already gone)."""
    try:
        client, table = _hex_addr(peer[0], peer[1])
        server, _ = _hex_addr(local[0], local[1])
    except ValueError:
        return None
    tables = [table] if table == "tcp" else ["tcp6", "tcp"]
    needle = f" {client} {server} "
    for name in tables:
        try:
            text = (proc / name).read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        at = text.find(needle)
        if at < 0:
            continue
        fields = text[at : text.find("\n", at)].split()
        # local rem st tx:rx tr:when retrnsmt uid ...
        try:
            return int(fields[6])
        except (IndexError, ValueError):
            return None
    return None


def may_use_gateway(uid: int) -> bool:
    """Root, the gateway's own user, or a member of the gateway's group (like the 0660 control socket)."""
    if uid in (0, os.geteuid()):
        return True
    gid = os.getegid()
    try:
        user = pwd.getpwuid(uid)
    except KeyError:
        return False
    if user.pw_gid == gid:
        return True
    try:
        return user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:
        return False


def loopback_peer_allowed(sock: socket.socket | None) -> bool:
    """True when the local user behind `sock`'s client may use the gateway (see the module doc)."""
    if sock is None:
        return False
    try:
        peer = sock.getpeername()
        local = sock.getsockname()
    except OSError:
        return False
    uid = peer_uid((peer[0], peer[1]), (local[0], local[1]))
    return uid is not None and may_use_gateway(uid)


__all__ = ["loopback_peer_allowed", "may_use_gateway", "peer_uid"]
