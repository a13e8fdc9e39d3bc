"""The local status page and Prometheus metrics, served by the gateway itself.

The runtime starts `StatusServer(config.web, gateway).run()` in its task group when `[web]` is
enabled. Off by default; loopback-only by default; a password when exposed on the LAN.
"""

from citynerve.gateway.web.config import WebConfig, is_loopback
from citynerve.gateway.web.metrics import render_metrics
from citynerve.gateway.web.server import StatusServer, WebServerError
from citynerve.gateway.web.state import page_state

__all__ = ["StatusServer", "WebConfig", "WebServerError", "is_loopback", "page_state", "render_metrics"]
