"""`citynerve init`: write a gateway's first config, then find its devices and add them."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from citynerve.gateway.api import ConfigError, ConfigIssue, GatewayError, read_text
from citynerve.gateway.cli._common import (
    EXIT_FAILED,
    EXIT_INVALID,
    FiniteRange,
    config_option,
    console,
    err_console,
    esc,
    fail,
    json_option,
    print_config_issues,
    print_json,
)
from citynerve.gateway.cli._groups import main
from citynerve.gateway.commissioning import (
    BusSpecError,
    DeviceListEditor,
    Proposal,
    available_profiles,
    discover,
    dump_toml,
    identify_found,
    parse_bus_spec,
    propose,
    write_atomically,
)
from citynerve.gateway.commissioning.configfile import ConfigEditError, cannot_write, validate_text
from citynerve.gateway.commissioning.initconfig import (
    HEADER,
    InitAnswers,
    default_paths,
    fitting_packs,
    initial_config,
    rules_text,
)
from citynerve.gateway.commissioning.meter_search import DIGITS, SearchProgress, estimate_s
from citynerve.gateway.config import GatewayConfig


def _ask(value: str | None, prompt: str, interactive: bool, flag: str, default: str | None = None) -> str:
    if value:
        return value
    if interactive:
        return str(click.prompt(prompt, default=default, err=True))
    if default is not None:
        return default
    fail(f"{flag} is required (or run `citynerve init` on a terminal to be asked)", EXIT_INVALID)


def _gather(
    interactive: bool,
    gateway_id: str | None,
    name: str | None,
    city: str | None,
    district: str | None,
    street: str | None,
    upstream: tuple[str, ...],
    buses: tuple[str, ...],
) -> tuple[InitAnswers, list[str]]:
    answers = InitAnswers(
        gateway_id=_ask(gateway_id, "gateway id (e.g. gw-310106-daning-0007)", interactive, "--gateway-id"),
        name=name
        if name is not None
        else (click.prompt("name", default="", err=True) if interactive else ""),
        city=_ask(city, "city code (6 digits, GB/T 2260)", interactive, "--city"),
        district=_ask(district, "district code (6 digits)", interactive, "--district"),
        street=_ask(street, "street code (9 or 12 digits)", interactive, "--street"),
    )
    urls = list(upstream)
    if not urls and interactive:
        url = click.prompt("platform broker URL (mqtts://host:8883, empty: none)", default="", err=True)
        urls = [url] if url else []
    answers.upstream = urls
    specs = list(buses)
    if not specs and interactive:
        err_console.print(
            "buses as ID:PROTOCOL:PORT[:BAUD[:PARITY[:STOPBITS]]], "
            "e.g. rs485-1:modbus_rtu:/dev/ttyUSB0:9600:N:1"
        )
        while spec := click.prompt("bus (empty when done)", default="", err=True, show_default=False):
            try:
                parse_bus_spec(spec)
            except BusSpecError as err:
                err_console.print(f"[red]{esc(err)}[/] - try again", highlight=False)
                continue
            specs.append(spec)
    return answers, specs


def _parse_buses(specs: list[str]) -> list[dict[str, Any]]:
    out = []
    for spec in specs:
        try:
            out.append(parse_bus_spec(spec))
        except BusSpecError as err:
            fail(str(err), EXIT_INVALID)
    ids = [b["id"] for b in out]
    if len(set(ids)) != len(ids):
        fail(f"bus ids must be unique: {ids}", EXIT_INVALID)
    return out


def _profile_overrides(items: tuple[str, ...]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        family, sep, profile = item.partition("=")
        if not sep or not family or not profile:
            fail(
                f"--profile {item!r}: expected FAMILY=PROFILE_ID, e.g. modbus=modbus-water-meter",
                EXIT_INVALID,
            )
        out[family] = profile
    return out


def _discover(
    cfg: GatewayConfig,
    first: int,
    last: int,
    ble_s: float,
    quiet: bool,
    search_timeout_s: float | None = None,
) -> tuple[list[Any], list[Any], dict[str, str]]:
    progress = Progress(
        TextColumn("discovering on {task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        disable=quiet,
        transient=True,
    )
    tasks: dict[str, Any] = {}

    def step(bus_id: str, done: int, total: int) -> None:
        if bus_id not in tasks:
            tasks[bus_id] = progress.add_task(bus_id, total=total)
        progress.update(tasks[bus_id], completed=done, total=total)

    def search(bus_id: str, p: SearchProgress) -> None:
        # A meter search: questions asked, meters found, and the time left at this baud rate.
        if bus_id in tasks:
            progress.update(
                tasks[bus_id],
                description=f"{bus_id} (meter search: {p.found} found, ~{p.seconds_left:.0f} s left)",
            )

    if not quiet:
        for bus in cfg.buses:
            family = cfg.drivers[bus.protocol].family if bus.protocol in cfg.drivers else ""
            if family in DIGITS:
                baud = int(getattr(bus, "baudrate", 2400))
                timeout = search_timeout_s or float(bus.timeout_s)
                err_console.print(
                    f"meter search on {bus.id} ({baud} baud, {timeout:g} s per silent question): about "
                    f"{estimate_s(family, 10, baud, timeout):.0f} s for 10 meters, "
                    f"{estimate_s(family, 30, baud, timeout):.0f} s for 30",
                    highlight=False,
                )
    with progress:
        result = asyncio.run(
            discover(
                cfg,
                modbus_first=first,
                modbus_last=last,
                ble_duration_s=ble_s,
                progress=step,
                search_note=search,
                search_timeout_s=search_timeout_s,
            )
        )
    return list(result.found), list(result.problems), result.route


def _choose(
    proposals: list[Proposal], interactive: bool, accept_all: bool, overrides: dict[str, str]
) -> tuple[list[Proposal], list[Proposal]]:
    """(the devices to add, the ones left out). A profile is only ever the identified one, the
    installer's choice at the prompt, or a --profile FAMILY=ID given for the whole family."""
    chosen: list[Proposal] = []
    left: list[Proposal] = []
    for p in proposals:
        if not p.candidates:
            left.append(p)
            continue
        if p.found.family in overrides:
            wanted = overrides[p.found.family]
            if wanted not in [c.id for c in p.candidates]:
                fail(
                    f"--profile {p.found.family}={wanted}: no such {p.found.family} profile installed",
                    EXIT_INVALID,
                )
            p = p.with_profile(wanted)
        if interactive and not accept_all:
            what = f"{p.found.family} device at {p.found.address} on {p.found.bus}"
            if p.profile is not None:
                if click.confirm(f"add {what} as {p.draft['id']} ({p.profile})?", default=True, err=True):
                    chosen.append(p)
                else:
                    left.append(p)
                continue
            err_console.print(f"{what}: {p.reason}", highlight=False, markup=False)
            ids = [c.id for c in p.candidates]
            for i, c in enumerate(p.candidates, 1):
                v = p.verdict(c.id)
                score = f"score {v.score:>3}" if v else "no evidence"
                err_console.print(
                    f"  {i}. {c.id}  ({score})  {c.vendor} {c.model}", highlight=False, markup=False
                )
            n = click.prompt(
                "profile (0: leave it out)", type=click.IntRange(0, len(ids)), default=0, err=True
            )
            if n:
                chosen.append(p.with_profile(ids[n - 1]))
            else:
                left.append(p)
        elif accept_all and p.profile is not None:
            chosen.append(p)
        else:
            left.append(p)  # scripted: only identified devices, and only when told to (--yes)
    return chosen, left


@main.command("init")
@config_option
@click.option("--gateway-id", help="Gateway id, e.g. gw-310106-daning-0007.")
@click.option("--name", help="Readable name, e.g. 'Daning Road No. 7, meter room'.")
@click.option("--city", help="6-digit city code (GB/T 2260), e.g. 310100.")
@click.option("--district", help="6-digit district code, e.g. 310106.")
@click.option("--street", help="9- or 12-digit street (township) code.")
@click.option(
    "--upstream", multiple=True, help="Platform broker URL, mqtt(s)://host[:port] (repeat for failover)."
)
@click.option("--username", help="Broker user name.")
@click.option("--password-file", help="File holding the broker password (never the password itself).")
@click.option(
    "--bus",
    "buses",
    multiple=True,
    help="Bus spec ID:PROTOCOL:PORT[:BAUD[:PARITY[:STOPBITS]]] for serial lines "
    "(or ID:PROTOCOL:HOST[:PORT], ID:bthome[:ADAPTER]).",
)
@click.option("--profile-dir", "profile_dirs", multiple=True, help="Extra folder of device profiles.")
@click.option("--store", "store_path", help="Outbox file (default: /var/lib/citynerve/outbox.db for /etc).")
@click.option("--socket", help="Control socket (default: /run/citynerve/control.sock for /etc).")
@click.option(
    "--discover/--no-discover", default=False, help="Look for devices on the buses and propose them."
)
@click.option(
    "--from", "first", type=click.IntRange(1, 247), default=1, show_default=True, help="Modbus scan start."
)
@click.option(
    "--to", "last", type=click.IntRange(1, 247), default=247, show_default=True, help="Modbus scan end."
)
@click.option(
    "--ble-duration", type=FiniteRange(1, 300), default=10.0, show_default=True, help="BLE scan (s)."
)
@click.option(
    "--search-timeout",
    type=FiniteRange(0.02, 5),
    help="Meter search (DL/T 645, CJ/T 188): seconds to wait for a reply to each address pattern "
    "(default: the bus's timeout_s). Most patterns get no reply, so this sets the search's length.",
)
@click.option(
    "--profile", "profiles", multiple=True, help="FAMILY=PROFILE_ID for discovered devices of a family."
)
@click.option("-y", "--yes", "accept_all", is_flag=True, help="Add every discovered device without asking.")
@click.option("--force", is_flag=True, help="Replace an existing config (a timestamped backup is kept).")
@click.option(
    "--interactive/--no-interactive",
    default=None,
    help="Ask for what is missing (default: when on a terminal).",
)
@json_option
def init(
    config_path: Path,
    gateway_id: str | None,
    name: str | None,
    city: str | None,
    district: str | None,
    street: str | None,
    upstream: tuple[str, ...],
    username: str | None,
    password_file: str | None,
    buses: tuple[str, ...],
    profile_dirs: tuple[str, ...],
    store_path: str | None,
    socket: str | None,
    discover: bool,
    first: int,
    last: int,
    ble_duration: float,
    search_timeout: float | None,
    profiles: tuple[str, ...],
    accept_all: bool,
    force: bool,
    interactive: bool | None,
    as_json: bool,
) -> None:
    """Write a new gateway config: identity, org codes, uplink, buses; then (--discover) find the
    devices on the buses and add the ones accepted, with fitting profiles, and turn their alarms on:
    a [rules] table with the shipped rule pack of each device class added (packs that need a
    household's settings first, such as elderly-water, are written commented out, saying what to set).

    Interactive on a terminal; for scripted installs give everything as flags, e.g.
    `citynerve init -c gw.toml --gateway-id gw-1 --city 310100 --district 310106 --street 310106013
    --bus rs485-1:modbus_rtu:/dev/ttyUSB0:9600:N --discover --yes`. The result passes `config check`.
    """
    if interactive is None:
        interactive = sys.stdin.isatty() and not as_json
    if config_path.exists() and not force:
        fail(f"{config_path} exists; use `citynerve devices add` to change it, or --force to replace it")
    overrides = _profile_overrides(profiles)
    answers, specs = _gather(interactive, gateway_id, name, city, district, street, upstream, buses)
    answers.buses = _parse_buses(specs)
    answers.username, answers.password_file = username, password_file
    answers.profile_dirs = list(profile_dirs)
    sys_store, sys_socket = default_paths(config_path)
    answers.store_path = store_path or sys_store
    answers.socket = socket or sys_socket
    text = dump_toml(initial_config(answers), HEADER)
    try:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        cfg = validate_text(config_path, text)
        backup = write_atomically(config_path, text)
    except ConfigError as err:
        print_config_issues(err)
        sys.exit(EXIT_INVALID)
    except OSError as err:  # the folder or the disk refused the write
        fail(str(cannot_write(config_path, err)))
    summary: dict[str, Any] = {
        "config": str(config_path),
        "backup": str(backup) if backup else None,
        "gateway_id": answers.gateway_id,
        "buses": [b["id"] for b in answers.buses],
        "discovered": [],
        "added": [],
        "problems": [],
        "rules": [],  # the rule packs written for the devices added: on, or commented out
    }
    summary["warnings"] = [str(w) for w in cfg.warnings]
    if not as_json:
        console.print(f"[green]wrote[/] {esc(config_path)} ({len(answers.buses)} buses)", highlight=False)
        for warning in cfg.warnings:  # a password file not there yet: `config check` refuses it
            err_console.print(str(warning), style="yellow", highlight=False, markup=False, soft_wrap=True)
    if discover and answers.buses:
        try:
            found, problems, _routes = _discover(cfg, first, last, ble_duration, as_json, search_timeout)
        except GatewayError as err:
            fail(str(err))
        left_out: list[ConfigIssue] = []
        choices = available_profiles(config_path, answers.profile_dirs, left_out)
        summary["profile_problems"] = [str(i) for i in left_out]
        for issue in left_out:
            if not as_json:
                err_console.print(
                    f"[yellow]profile left out[/]: {esc(str(issue))}", highlight=False, soft_wrap=True
                )
        verdicts = asyncio.run(identify_found(cfg, found, choices))
        proposals = propose(found, choices, verdicts=verdicts, address_code=answers.street)
        summary["discovered"] = [p.to_dict() for p in proposals]
        summary["problems"] = [{"bus": p.bus, "message": p.message} for p in problems]
        if not as_json:
            _show_proposals(proposals, problems)
        chosen, left = _choose(proposals, interactive, accept_all, overrides)
        summary["left_out"] = [
            {
                "bus": p.found.bus,
                "address": p.found.address,
                "reason": p.reason,
                "candidates": [c.id for c in p.candidates],
            }
            for p in left
        ]
        if chosen:
            editor = DeviceListEditor(config_path)
            try:
                # The file this command wrote: a backup of it would be its own half-written config
                # (the file replaced by --force was kept by the first write).
                editor.save(editor.add(*(p.entry for p in chosen if p.entry is not None)), backup=False)
            except ConfigError as err:
                print_config_issues(err)
                sys.exit(EXIT_INVALID)
            except ConfigEditError as err:
                fail(str(err))
            summary["added"] = [p.entry["id"] for p in chosen if p.entry]
            summary["rules"] = _turn_on_alarms(config_path)
    if as_json:
        print_json(summary)
    else:
        if summary["added"]:
            console.print(
                f"[green]added[/] {len(summary['added'])} devices: {esc(', '.join(summary['added']))}"
            )
        for item in summary.get("rules", []):
            if item["on"]:
                console.print(
                    f"[green]alarms on[/]: rule pack {esc(item['pack'])} "
                    f"for {esc(', '.join(item['devices']))}",
                    highlight=False,
                    soft_wrap=True,
                )
            else:
                console.print(
                    f"[yellow]alarms off[/]: rule pack {esc(item['pack'])} is written commented out: "
                    f"set first {esc(item['per_household'])}",
                    highlight=False,
                    soft_wrap=True,
                )
        for item in summary.get("left_out", []):
            console.print(
                f"[yellow]left out[/] {esc(item['bus'])} {esc(item['address'])}: {esc(item['reason'])}; "
                f"candidates: {esc(', '.join(item['candidates']) or 'none')} "
                "(add it: `citynerve devices add`)",
                highlight=False,
                soft_wrap=True,
            )
        console.print(
            f"next: `citynerve config check {config_path}`, then `citynerve service install`",
            highlight=False,
            markup=False,
        )
    if discover and summary["problems"] and not summary["discovered"]:
        raise SystemExit(EXIT_FAILED)


def _turn_on_alarms(config_path: Path) -> list[dict[str, Any]]:
    """Append `[rules]` with the shipped packs that fit the added devices' classes (initconfig.py):
    a gateway with a smoke detector and no pack raises no alarm. Checked like every edit first."""
    from citynerve.gateway.rules.packs import PACKS_DIR, load_pack

    text = read_text(config_path)
    try:
        cfg = validate_text(config_path, text)
        if cfg.rules is not None:
            return []
        packs = [load_pack(f) for f in sorted(PACKS_DIR.glob("*.toml"))]
        classes = {pid: prof.device_class for pid, prof in cfg.profiles.items()}
        devices = [(d.id, d.profile, classes.get(d.profile, "")) for d in cfg.devices]
        choices = fitting_packs(devices, packs)
        block = rules_text(choices)
        if not block:
            return []
        new = text.rstrip("\n") + "\n" + block
        validate_text(config_path, new)
        mode = config_path.stat().st_mode & 0o777
        write_atomically(config_path, new, backup=False, mode=mode)
    except ConfigError as err:
        print_config_issues(err)
        sys.exit(EXIT_INVALID)
    except OSError as err:
        fail(str(cannot_write(config_path, err)))
    return [
        {"pack": c.pack, "on": c.on, "devices": list(c.devices), "per_household": c.per_household}
        for c in choices
    ]


CANDIDATES_SHOWN = 3


def _show_proposals(proposals: list[Proposal], problems: list[Any]) -> None:
    for p in problems:
        err_console.print(f"[yellow]bus {esc(p.bus)}[/]: {esc(p.message)}", highlight=False)
    if not proposals:
        console.print("no new devices found")
        return
    t = Table(title="devices found")
    for col in ("bus", "address", "family", "proposed id", "profile", "why", "candidates (score)"):
        t.add_column(col, overflow="fold")  # an 80-column terminal: ids wrap, never "em-00000…"
    for p in proposals:
        # The best few: a list of every installed profile of the family, most scoring 0 or less,
        # buried the table (`--json` has every verdict).
        ranked = sorted(p.verdicts, key=lambda v: -v.score)[:CANDIDATES_SHOWN]
        t.add_row(
            esc(p.found.bus),
            esc(p.found.address),
            esc(p.found.family),
            esc(p.draft.get("id", "-")),
            esc(p.profile) if p.profile else "[yellow]not assigned[/]",
            esc(p.reason),
            esc(
                ", ".join(f"{v.profile} ({v.score})" for v in ranked) or ", ".join(c.id for c in p.candidates)
            ),
        )
    console.print(t)
