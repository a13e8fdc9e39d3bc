"""The systemd unit of the gateway, rendered for one install (where the `citynerve` command is)."""

from __future__ import annotations

import re

from citynerve.gateway.api import PermanentError

UNIT_NAME = "citynerve.service"
CONFIG_DIR = "/etc/citynerve"
CONFIG_FILE = "/etc/citynerve/gateway.toml"
DATA_DIR = "/var/lib/citynerve"
RUNTIME_DIR = "/run/citynerve"

_TEMPLATE = """\
# CityNerve edge gateway. Installed by `citynerve service install`; re-running it upgrades this
# file (the previous one is kept as .bak) and never touches {data_dir} (the outbox lives there).
[Unit]
Description=CityNerve edge gateway (field buses -> rules -> outbox -> MQTT)
Documentation=file://{config_file}
After=network-online.target bluetooth.target
Wants=network-online.target
# A crash loop stops after 10 starts in 5 minutes (see `systemctl status citynerve`).
StartLimitIntervalSec=300
StartLimitBurst=10

[Service]
# The gateway says READY=1 once its outbox is open and every bus owner started, then pings the
# watchdog only while its event loop, its outbox writer and every bus owner make progress: a hung
# one stops the pings and systemd restarts the gateway (Restart=on-failure covers the watchdog).
Type=notify
NotifyAccess=main
WatchdogSec=60
# Opening a large outbox after a power cut (WAL recovery, migration) may take a while.
TimeoutStartSec=300
# Descriptors: buses, the uplink, the status page's connections (capped by the gateway itself).
LimitNOFILE=4096
User={user}
Group={user}
# RS-485 adapters (/dev/ttyUSB*) belong to dialout; BlueZ allows the bluetooth group.
SupplementaryGroups={groups}
{resume_hook}ExecStart={exec_start} run --config {config_file}
# `systemctl reload citynerve`: the file is checked, then the running gateway re-reads it (the buses
# whose settings changed restart; [upstream], [rules] and a few others need a restart, and say so).
# A SIGHUP to the gateway (kill -HUP) reloads the same way, its outcome in the journal.
ExecReload={exec_start} config reload --config {config_file}
WorkingDirectory={data_dir}
Environment=PYTHONUNBUFFERED=1 CITYNERVE_CONFIG={config_file}
StateDirectory=citynerve
StateDirectoryMode=0750
RuntimeDirectory=citynerve
RuntimeDirectoryMode=0750
ConfigurationDirectory=citynerve
# root:{user} 2770 (`service install`): the service replaces its config there when the platform
# sends one (remote config), with the history and the platform's profiles beside it.
ConfigurationDirectoryMode=2770
UMask=0027
# SIGTERM: bus owners stop, the outbox writer commits what it holds, then the process exits.
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=5
StandardOutput=journal
StandardError=journal
SyslogIdentifier=citynerve

# Hardening: nothing but the data folder and the config folder is writable; no privileges can be
# gained.
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths={data_dir} {config_dir}
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictSUIDSGID=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=no
SystemCallArchitectures=native
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK AF_BLUETOOTH
# No capabilities. A bumble HCI-socket BLE transport needs CAP_NET_RAW CAP_NET_ADMIN: add them in
# a drop-in (systemctl edit citynerve) rather than here.
CapabilityBoundingSet=
AmbientCapabilities=

[Install]
WantedBy=multi-user.target
"""


_USER = re.compile(r"[a-z_][a-z0-9_-]{0,31}")  # POSIX portable user names, as useradd takes them
_PLAIN = re.compile(r"[A-Za-z0-9_./+:,@=-]+")  # needs no quoting in a systemd command line


class UnitValueError(PermanentError):
    """A value that cannot go into the unit: `what` names the option, `reason` says why."""

    def __init__(self, what: str, reason: str) -> None:
        self.what = what
        self.reason = reason
        super().__init__(f"{what}: {reason}")


def exec_arg(arg: str) -> str:
    """One argument of an Exec*= line, quoted as systemd.syntax(7) and systemd.service(5) read it:
    double quotes with C escapes for spaces and quotes, `%%` for a specifier, `$$` for a variable."""
    if any(ord(c) < 0x20 or c == "\x7f" for c in arg):
        raise UnitValueError("--exec", f"{arg!r} has a control character (a newline would add unit lines)")
    arg = arg.replace("%", "%%").replace("$", "$$")
    if _PLAIN.fullmatch(arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_unit(
    exec_start: str, *, user: str = "citynerve", groups: tuple[str, ...] = ("dialout", "bluetooth")
) -> str:
    """The unit text. `exec_start` is the absolute path of the `citynerve` command. Raises
    UnitValueError for a user name that is not a POSIX user name or a path with a control character."""
    if not _USER.fullmatch(user):
        raise UnitValueError("--user", f"{user!r} is not a user name (lower case letters, digits, _ and -)")
    resume_hook = ""
    if exec_start.endswith("/current/bin/citynerve"):
        # Installed from a bundle: before each start, the known-good release rolls back an update
        # that a power cut interrupted before it was confirmed ('+': outside the sandbox, it writes
        # the install root; '-': a failing hook never keeps the gateway from starting).
        root = exec_start.removesuffix("/current/bin/citynerve")
        known_good = exec_arg(f"{root}/known-good/bin/citynerve")
        resume_hook = f"ExecStartPre=+-{known_good} update resume --root {exec_arg(root)}\n"
    return _TEMPLATE.format(
        resume_hook=resume_hook,
        exec_start=exec_arg(exec_start),
        user=user,
        groups=" ".join(groups),
        config_dir=CONFIG_DIR,
        config_file=CONFIG_FILE,
        data_dir=DATA_DIR,
    )
