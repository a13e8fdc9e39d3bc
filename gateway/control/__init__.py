"""Local control socket: the running gateway answers the CLI and the status page here."""

from citynerve.gateway.control.client import ask, gateway_running
from citynerve.gateway.control.protocol import ControlError, GatewayNotRunningError, typed_error
from citynerve.gateway.control.server import ControlServer

__all__ = [
    "ControlError",
    "ControlServer",
    "GatewayNotRunningError",
    "ask",
    "gateway_running",
    "typed_error",
]
