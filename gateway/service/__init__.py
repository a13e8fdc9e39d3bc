"""Install the gateway as a hardened systemd service (`citynerve service install`).

Layout: config in /etc/citynerve, data (the outbox) in /var/lib/citynerve, the control socket in
/run/citynerve, logs in journald. The service runs as the dedicated user `citynerve` (groups dialout
for RS-485 adapters, bluetooth for BlueZ), with the filesystem read-only except its data folder.

Upgrades re-run the same install: the unit is replaced (old one backed up), the config is never
overwritten, and nothing under /var/lib/citynerve is touched, so the buffered outbox survives.
"""

from citynerve.gateway.service.install import InstallPlan, Step, StepKind, install, plan_install
from citynerve.gateway.service.unit import UNIT_NAME, render_unit

__all__ = ["UNIT_NAME", "InstallPlan", "Step", "StepKind", "install", "plan_install", "render_unit"]
