"""The commissioning report: the installer's hand-over document for one gateway.

Every configured device with its identification evidence for the profile it has (the same checks
as discovery: identify.py), its first values and their plausibility, the bus statistics of the
running gateway (transactions, timeouts, CRC / frame errors) and what is still open (a check that
failed, a device offline or never read, no component code, no room). `build_report` gathers it as a
dict (`--json`); `render_html` makes one self-contained page that reads on a phone and prints on A4.
"""

from __future__ import annotations

import html
import time
from pathlib import Path
from typing import Any

from citynerve.gateway.api import GatewayError
from citynerve.gateway.commissioning import identify as idf
from citynerve.gateway.commissioning.assign import judge
from citynerve.gateway.commissioning.profiles import ProfileInfo, available_profiles
from citynerve.gateway.config import GatewayConfig
from citynerve.gateway.control import ask
from citynerve.gateway.diagbus import DiagSession


async def _status(cfg: GatewayConfig) -> dict[str, Any] | None:
    try:
        return await ask(Path(cfg.control.socket), "status", timeout_s=10.0)
    except (GatewayError, OSError):
        return None


async def _verdict(session: DiagSession, device: Any, profile: ProfileInfo) -> idf.Verdict:
    """The device against its profile, scored as discovery scores it (assign.judge), from what the
    device says now (DL/T 645: its version, asked; CJ/T 188: its read-address reply)."""
    detail: dict[str, Any] = {}
    if profile.family == "dlt645":
        detail = await session.run("identify", {"address": str(device.address)})
    elif profile.family == "cjt188":
        detail = await session.run("probe", {"pattern": str(device.address)})
        if detail.get("outcome") != "one":
            v = idf.Verdict(profile.id)
            v.add("answers read-address at its own address", False, str(detail.get("outcome")), yes=0, no=-6)
            return v
    elif profile.family != "modbus":
        return idf.Verdict(profile.id)  # listening devices (BLE, panels): their values are the evidence
    [verdict] = await judge(session.run, profile.family, device.address, [profile], detail)
    return verdict


async def build_report(cfg: GatewayConfig) -> dict[str, Any]:
    """Ask every device, read the running gateway's status, list what is open."""
    profiles = {p.id: p for p in available_profiles(cfg.source)}
    status = await _status(cfg)
    buses_status = {b["id"]: b for b in (status or {}).get("buses", [])}
    health = {d["id"]: d for b in buses_status.values() for d in b.get("devices", [])}
    devices: list[dict[str, Any]] = []
    open_items: list[str] = []
    if status is None:
        open_items.append(
            "the gateway is not running: no bus statistics (start it, then run the report again)"
        )
    for bus in cfg.buses:
        on_bus = cfg.devices_on(bus.id)
        verdicts: dict[str, idf.Verdict | str] = {}
        if on_bus:
            try:
                async with DiagSession(cfg, bus.id) as session:
                    for d in on_bus:
                        p = profiles.get(d.profile)
                        try:
                            verdicts[d.id] = await _verdict(session, d, p) if p else "profile not found"
                        except GatewayError as err:
                            verdicts[d.id] = f"cannot ask the device: {err}"
            except GatewayError as err:
                open_items.append(f"bus {bus.id}: {err}")
        for d in on_bus:
            devices.append(
                _device(d, bus.id, verdicts.get(d.id, "bus not reachable"), health.get(d.id), status)
            )
    for dev in devices:
        open_items += [f"{dev['id']}: {item}" for item in dev["open"]]
    # No alarms at all, or a pack that reaches none of the devices it was meant for (rules/coverage.py).
    open_items += [
        f"{w.path}: {w.message.removeprefix('warning: ')}" for w in cfg.warnings if w.path.startswith("rules")
    ]
    return {
        "gateway": {"id": cfg.gateway.id, "name": cfg.gateway.name, "config": str(cfg.source)},
        "created": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "running": status is not None,
        "buses": [
            {
                "id": b.id,
                "protocol": b.protocol,
                "devices": len(cfg.devices_on(b.id)),
                "counters": buses_status.get(b.id, {}).get("counters"),
                "channel": buses_status.get(b.id, {}).get("channel"),
            }
            for b in cfg.buses
        ],
        "devices": devices,
        "open": open_items,
        "summary": {
            "devices": len(devices),
            "identified": sum(1 for d in devices if d["identified"]),
            "open": len(open_items),
        },
    }


def _device(
    d: Any,
    bus_id: str,
    verdict: idf.Verdict | str,
    health: dict[str, Any] | None,
    status: dict[str, Any] | None,
) -> dict[str, Any]:
    loc = d.location
    place = " / ".join(str(x) for x in (loc.building, loc.floor, loc.room, loc.text) if x)
    out: dict[str, Any] = {
        "id": d.id,
        "name": d.name,
        "bus": bus_id,
        "address": d.address,
        "profile": d.profile,
        "place": place,
        "component_code": d.component_code or "",
        "online": health.get("online") if health else None,
        "errors": health.get("errors") if health else None,
        "last_error": health.get("last_error") if health else None,
        "readings": {},
        "open": [],
    }
    readings = (health or {}).get("readings") or {}
    out["readings"] = {k: {"value": v.get("value"), "unit": v.get("unit", "")} for k, v in readings.items()}
    if isinstance(verdict, str):
        out.update(score=None, evidence=[], first_values={}, identified=False)
        out["open"].append(verdict)
    else:
        checks = [e.to_dict() for e in verdict.evidence]
        out.update(score=verdict.score, evidence=checks, first_values=verdict.first_values)
        failed = [c["check"] for c in checks if c["passed"] is False]
        out["identified"] = not failed and (verdict.score >= idf.CONFIDENT or not checks)
        out["open"] += [f"check failed: {c}" for c in failed]
        if checks and not failed and verdict.score < idf.CONFIDENT:
            out["open"].append(f"identification weak (score {verdict.score})")
    if status is not None and health is None:
        out["open"].append("the running gateway does not poll it (reload or restart it)")
    elif health is not None and health.get("online") is False:
        out["open"].append(f"offline: {health.get('last_error') or 'no reply'}")
    elif health is not None and not readings:
        out["open"].append("no reading yet")
    if not d.component_code:
        out["open"].append("no component code")
    if not (loc.room or loc.text or loc.floor):
        out["open"].append("no floor or room")
    return out


_CSS = """
:root { font-family: system-ui, sans-serif; color: #1b1f24; }
body { margin: 0; padding: 12px; max-width: 960px; margin-inline: auto; }
h1 { font-size: 1.3rem; margin: 0 0 4px; } h2 { font-size: 1.1rem; margin: 18px 0 6px; }
.meta { color: #555; font-size: .9rem; }
.summary { display: flex; flex-wrap: wrap; gap: 8px; margin: 10px 0; }
.summary div { background: #eef2f6; border-radius: 6px; padding: 6px 10px; }
.card { border: 1px solid #ccd3da; border-radius: 8px; padding: 10px; margin: 10px 0; break-inside: avoid; }
.card h3 { margin: 0 0 4px; font-size: 1rem; overflow-wrap: anywhere; }
.ok { color: #176b2c; } .bad { color: #a4161a; } .none { color: #666; }
table { border-collapse: collapse; width: 100%; font-size: .85rem; table-layout: fixed; }
td, th { border-bottom: 1px solid #e3e7eb; padding: 3px 4px; text-align: left; overflow-wrap: anywhere; }
ul.open li { color: #a4161a; }
@media print {
  body { max-width: none; padding: 0; font-size: 10pt; }
  .card { border-color: #999; }
  a { color: inherit; text-decoration: none; }
}
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def render_html(report: dict[str, Any]) -> str:
    g = report["gateway"]
    s = report["summary"]
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>Commissioning report {_e(g['id'])}</title><style>{_CSS}</style></head><body>",
        f"<h1>Commissioning report: {_e(g['name'] or g['id'])}</h1>",
        f"<div class='meta'>gateway {_e(g['id'])} &middot; {_e(report['created'])} &middot; "
        f"config {_e(g['config'])}</div>",
        "<div class='summary'>",
        f"<div id='n-devices'>{s['devices']} devices</div>",
        f"<div id='n-identified'>{s['identified']} identified</div>",
        f"<div id='n-open' class='{'bad' if s['open'] else 'ok'}'>{s['open']} open items</div>",
        "</div><h2>Open items</h2>",
    ]
    if report["open"]:
        parts.append(
            "<ul class='open' id='open'>" + "".join(f"<li>{_e(i)}</li>" for i in report["open"]) + "</ul>"
        )
    else:
        parts.append("<p class='ok' id='open'>nothing open</p>")
    parts.append("<h2>Buses</h2><table id='buses'><tr><th>bus</th><th>protocol</th><th>devices</th>")
    parts.append("<th>requests</th><th>time&shy;outs</th><th>CRC/ frame</th><th>excep&shy;tions</th></tr>")
    for b in report["buses"]:
        c = b["counters"] or {}
        parts.append(
            f"<tr><td>{_e(b['id'])}</td><td>{_e(b['protocol'])}</td><td>{b['devices']}</td>"
            + "".join(
                f"<td>{_e(c.get(k, '-'))}</td>"
                for k in ("transactions", "timeouts", "frame_errors", "exceptions")
            )
            + "</tr>"
        )
    parts.append("</table><h2>Devices</h2>")
    for d in report["devices"]:
        state = "ok" if d["identified"] and not d["open"] else "bad"
        online = {True: "online", False: "offline", None: "not polled"}[d["online"]]
        parts.append(f"<section class='card device {state}' data-id='{_e(d['id'])}'>")
        parts.append(
            f"<h3>{_e(d['id'])} <span class='{state}'>{'&#10003;' if state == 'ok' else '!'}</span></h3>"
        )
        parts.append(
            f"<div class='meta'>{_e(d['profile'])} &middot; bus {_e(d['bus'])} address {_e(d['address'])} "
            f"&middot; {_e(d['place'] or 'no place')} &middot; {online}"
            f"{' &middot; component ' + _e(d['component_code']) if d['component_code'] else ''}</div>"
        )
        if d["evidence"]:
            parts.append(
                f"<table class='evidence'><tr><th>identification (score {_e(d['score'])})</th>"
                "<th>found</th></tr>"
            )
            for e in d["evidence"]:
                mark = {True: "ok", False: "bad", None: "none"}[e["passed"]]
                sign = {True: "&#10003;", False: "&#10007;", None: "&ndash;"}[e["passed"]]
                parts.append(
                    f"<tr><td class='{mark}'>{sign} {_e(e['check'])}</td><td>{_e(e['found'])}</td></tr>"
                )
            parts.append("</table>")
        values = {**{k: {"value": v, "unit": ""} for k, v in d["first_values"].items()}, **d["readings"]}
        if values:
            parts.append("<table class='values'><tr><th>point</th><th>value</th></tr>")
            for k, v in sorted(values.items()):
                parts.append(f"<tr><td>{_e(k)}</td><td>{_e(v['value'])} {_e(v['unit'])}</td></tr>")
            parts.append("</table>")
        if d["open"]:
            parts.append("<ul class='open'>" + "".join(f"<li>{_e(i)}</li>" for i in d["open"]) + "</ul>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)
