"""The events a bus owner raises about its devices: offline (not answering) and faulted (the
gateway's own handling of the device raised). Both are alarms in the gateway's registry until the
matching clear."""

from __future__ import annotations

from dataclasses import dataclass

from citynerve.gateway.api import DeviceConfig, Event, EventState, GatewayError, Severity

OFFLINE_KIND = "device_offline"
FAULT_KIND = "device_fault"
FAULT_RULE = "bus.supervisor"


@dataclass(frozen=True, slots=True)
class DeviceEventKind:
    kind: str
    rule: str
    severity: Severity


OFFLINE = DeviceEventKind(OFFLINE_KIND, "bus.offline", Severity.MAJOR)
FAULT = DeviceEventKind(FAULT_KIND, FAULT_RULE, Severity.MAJOR)


class DeviceFaultError(GatewayError):
    """The gateway's own handling of one device raised (a driver's plan or decode bug): the device
    is faulted and restarted with backoff; the bus and its other devices go on."""

    def __init__(self, device_id: str, reason: str) -> None:
        self.device_id = device_id
        self.reason = reason
        super().__init__(f"device {device_id} faulted: {reason}")


def device_event(
    device: DeviceConfig, what: DeviceEventKind, state: EventState, ts: float, reason: str
) -> Event:
    """An offline or fault event of `device`, carrying its location attributes."""
    return Event(
        device_id=device.id,
        kind=what.kind,
        state=state,
        severity=what.severity,
        ts=ts,
        rule=what.rule,
        message=reason,
        attrs=device.event_attrs(),
    )
