"""`citynerve run` without click: its own small argument parser and the service's start.

The running gateway is the long-lived process on a small box; click (and what it imports) is
~1.3 MB of its RSS for a command line read once. The console entry point (`citynerve.gateway.cli.
entry`) sends `run` here and every other command to the click CLI. The click command `run` in
cmd_run.py has the same options (for `citynerve --help`, the CLI docs and programs that invoke the
click group) and calls the same `start`; tests/fieldtools/test_run_args.py keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from citynerve.gateway.cli._exit import DEFAULT_CONFIG, EXIT_INVALID

LOG_LEVELS = ("debug", "info", "warning", "error")
LOG_FORMATS = ("auto", "text", "json")
CONFIG_ENVVAR = "CITYNERVE_CONFIG"

SUMMARY = "Run the gateway: poll buses, detect, store, forward. Stops cleanly on SIGTERM / Ctrl-C."
DETAIL = "An invalid config is refused with the same messages as `config check` (exit 2)."
RELOAD = "SIGHUP re-reads the config, as `config reload` does (the answer goes to the log)."


@dataclasses.dataclass(frozen=True, slots=True)
class RunOption:
    """One option of `citynerve run`: its names, the argument's field, its values."""

    names: tuple[str, ...]
    dest: str
    help: str
    choices: tuple[str, ...] | None = None
    takes_value: bool = True
    metavar: str = ""


OPTIONS: tuple[RunOption, ...] = (
    RunOption(
        ("-c", "--config"),
        "config_path",
        f"Gateway config file (TOML).  [env var: {CONFIG_ENVVAR}; default: {DEFAULT_CONFIG}]",
        metavar="FILE",
    ),
    RunOption(("--log-level",), "log_level", "Override [log].", choices=LOG_LEVELS),
    RunOption(("--log-format",), "log_format", "Override [log].", choices=LOG_FORMATS),
    RunOption(
        ("--allow-insecure-secrets",),
        "allow_insecure_secrets",
        "Accept secret files that group or others may read, with a warning (else refused).",
        takes_value=False,
    ),
    RunOption(
        ("--dry-run-actions",),
        "dry_run_actions",
        "Local actions log and report what they would write, write nothing ([rules] dry_run_actions).",
        takes_value=False,
    ),
    RunOption(("-h", "--help"), "help", "Show this message and exit.", takes_value=False),
)


@dataclasses.dataclass(frozen=True, slots=True)
class RunArgs:
    config_path: Path
    log_level: str | None = None
    log_format: str | None = None
    allow_insecure_secrets: bool = False
    dry_run_actions: bool = False


class RunUsageError(Exception):
    """A bad argument to `citynerve run`: what was given and what is accepted."""


def _metavar(opt: RunOption) -> str:
    if not opt.takes_value:
        return ""
    return " [" + "|".join(opt.choices) + "]" if opt.choices else f" {opt.metavar}"


def help_text() -> str:
    rows = [(", ".join(opt.names) + _metavar(opt), opt.help) for opt in OPTIONS]
    width = max(len(left) for left, _ in rows) + 2
    lines = ["Usage: citynerve run [OPTIONS]", "", f"  {SUMMARY}", "", f"  {DETAIL}", "", f"  {RELOAD}", ""]
    lines += ["Options:"]
    lines += [f"  {left.ljust(width)}{text}" for left, text in rows]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str], environ: dict[str, str] | None = None) -> RunArgs | None:
    """`run`'s arguments (after the word `run`), or None when help was asked for.

    Accepts what click accepts for these options: `--opt value`, `--opt=value`, `-c value`, `-cvalue`,
    and the config path from $CITYNERVE_CONFIG. Raises RunUsageError naming the bad argument.
    """
    by_name = {name: opt for opt in OPTIONS for name in opt.names}
    env = os.environ if environ is None else environ
    values: dict[str, object] = {}
    args = list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if not arg.startswith("--") and arg.startswith("-") and len(arg) > 2 and arg[:2] in by_name:
            name, eq, inline = arg[:2], "=", arg[2:]
        opt = by_name.get(name)
        if opt is None:
            what = "option" if arg.startswith("-") else "argument"
            raise RunUsageError(f"No such {what}: {arg}")
        if opt.dest == "help":
            return None
        if not opt.takes_value:
            if eq:
                raise RunUsageError(f"Option '{name}' does not take a value.")
            values[opt.dest] = True
            continue
        if not eq:
            if i >= len(args):
                raise RunUsageError(f"Option '{name}' requires an argument.")
            inline = args[i]
            i += 1
        if opt.choices is not None and inline not in opt.choices:
            choices = ", ".join(f"'{c}'" for c in opt.choices)
            raise RunUsageError(f"Invalid value for '{name}': '{inline}' is not one of {choices}.")
        values[opt.dest] = inline
    config = values.pop("config_path", None) or env.get(CONFIG_ENVVAR) or DEFAULT_CONFIG
    return RunArgs(config_path=Path(str(config)), **values)  # type: ignore[arg-type]


def start(args: RunArgs) -> None:
    """Run the gateway until SIGTERM / SIGINT (SIGHUP reloads the config); exit 2 on an invalid
    config, 1 on a gateway error."""
    import asyncio
    import logging
    import signal

    from citynerve.gateway import heap

    heap.tune()  # before any thread starts (the outbox's worker, asyncio's executor)
    from citynerve.gateway.api import GatewayError
    from citynerve.gateway.cli._exit import EXIT_INVALID, fail, load_or_exit
    from citynerve.gateway.logs import setup_logging
    from citynerve.gateway.remoteconfig import prepare_start

    pending = prepare_start(args.config_path)  # a remote config change not confirmed yet: count or revert
    cfg = load_or_exit(args.config_path, allow_insecure_secrets=args.allow_insecure_secrets)
    setup_logging(args.log_level or cfg.log.level, args.log_format or cfg.log.format)
    if pending:
        logging.getLogger("citynerve.remoteconfig").warning("%s", pending)
    for warning in cfg.warnings:  # allowed, but an operator must see it in the journal
        logging.getLogger("citynerve.gateway.config").warning("%s", warning)
    from citynerve.gateway.config.runnable import socket_path_problem

    if (problem := socket_path_problem(cfg.control.socket)) is not None:  # the kernel would refuse the bind
        fail(f"{args.config_path}: control.socket {problem}", EXIT_INVALID)
    if args.dry_run_actions and cfg.rules is not None:
        cfg = dataclasses.replace(cfg, rules=cfg.rules.model_copy(update={"dry_run_actions": True}))
    if cfg.rules is not None and cfg.rules.dry_run_actions:
        logging.getLogger("citynerve.gateway.rules.actions").warning(
            "dry run: local actions write nothing to devices"
        )
    from citynerve.gateway.runtime import Gateway

    async def main_() -> bool:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        gateway = Gateway(cfg)
        # SIGHUP's default ends the process (exit 129: no clean stop, and systemd's Restart=on-failure
        # takes it as clean, so no restart). Unix daemons re-read their config on it: so does this one.
        loop.add_signal_handler(signal.SIGHUP, gateway.reload_soon, "SIGHUP")
        await gateway.run(stop)
        return gateway.restart_requested

    try:
        if asyncio.run(main_()):  # the platform asked for a restart: the service manager restarts us
            from citynerve.gateway.fleet import RESTART_EXIT_CODE

            sys.exit(RESTART_EXIT_CODE)
    except GatewayError as err:
        fail(str(err))
    except ExceptionGroup as group:  # from the task group: report our own errors plainly
        matched, rest = group.split(GatewayError)
        if rest is not None or matched is None:
            raise
        fail("; ".join(str(e) for e in matched.exceptions))


def main(argv: Sequence[str]) -> None:
    """`citynerve run ARGS`: parse, print help or a usage error (exit 2), else run the gateway."""
    try:
        args = parse_args(argv)
    except RunUsageError as err:
        usage = "Usage: citynerve run [OPTIONS]\nTry 'citynerve run -h' for help.\n"
        sys.stderr.write(f"{usage}\nError: {err}\n")
        sys.exit(EXIT_INVALID)
    if args is None:
        sys.stdout.write(help_text())
        return
    start(args)
