"""`citynerve run`'s own argument parser (gateway/cli/_run.py) against the click command `run`.

The console entry point parses `run` without click (issue 17: the running gateway's memory); the
click command stays for `citynerve --help`, the CLI docs and programs invoking the group. Both must
accept the same options with the same values and give the same result.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import click
import pytest

from citynerve.gateway.cli import _run, main
from citynerve.gateway.cli._exit import DEFAULT_CONFIG


def _click_run() -> click.Command:
    command = main.get_command(click.Context(main), "run")
    assert command is not None
    return command


def test_the_options_are_the_same_as_the_click_commands() -> None:
    click_opts = {}
    parent = click.Context(main, **main.context_settings)  # -h / --help, as `citynerve` has
    for param in _click_run().get_params(click.Context(_click_run(), parent=parent)):
        assert isinstance(param, click.Option)
        choices = tuple(param.type.choices) if isinstance(param.type, click.Choice) else None
        dest = "help" if "--help" in param.opts else param.name
        click_opts[dest] = (tuple(sorted(param.opts)), choices, not param.is_flag, param.help)
    ours = {opt.dest: (tuple(sorted(opt.names)), opt.choices, opt.takes_value) for opt in _run.OPTIONS}
    assert ours.keys() == click_opts.keys()
    for dest, (names, choices, takes_value) in ours.items():
        assert click_opts[dest][:3] == (names, choices, takes_value), dest
    for opt in _run.OPTIONS:  # the help text says the same (ours adds the config's env var and default)
        assert opt.help.startswith(str(click_opts[opt.dest][3]).rstrip(".")), opt.dest
    assert _run.SUMMARY in str(_click_run().help) and _run.DETAIL in str(_click_run().help)
    assert _run.RELOAD in str(_click_run().help) and _run.RELOAD in _run.help_text()


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["-c", "gw.toml"],
        ["-cgw.toml", "--log-level", "debug"],
        ["--config=gw.toml", "--log-format=json", "--allow-insecure-secrets"],
        ["--dry-run-actions", "--config", "a b.toml", "--log-level=error", "--log-format", "text"],
        ["-c", "first.toml", "-c", "second.toml"],
    ],
)
@pytest.mark.parametrize("env", [{}, {"CITYNERVE_CONFIG": "/from/env.toml"}])
def test_the_parsed_arguments_are_clicks(argv: list[str], env: dict[str, str], monkeypatch) -> None:
    monkeypatch.delenv("CITYNERVE_CONFIG", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    ctx = _click_run().make_context("run", list(argv))
    ours = _run.parse_args(argv, environ=env)
    assert ours is not None
    assert ours == _run.RunArgs(**ctx.params)
    if not env and not any(a.startswith(("-c", "--config")) for a in argv):
        assert ours.config_path == Path(DEFAULT_CONFIG)


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--log-level", "loud"], "'--log-level': 'loud'"),
        (["--log-format"], "'--log-format' requires an argument"),
        (["--no-such"], "No such option: --no-such"),
        (["extra"], "No such argument: extra"),
        (["--dry-run-actions=yes"], "'--dry-run-actions' does not take a value"),
    ],
)
def test_bad_arguments_are_refused_like_click_refuses_them(argv: list[str], named: str) -> None:
    with pytest.raises(_run.RunUsageError, match=named):
        _run.parse_args(argv, environ={})
    with pytest.raises(click.UsageError):
        _click_run().make_context("run", list(argv))


def test_the_console_command_uses_its_own_parser_without_click() -> None:
    code = (
        "import sys\n"
        "sys.argv = ['citynerve', 'run', '--help']\n"
        "from citynerve.gateway.cli import entry\n"
        "entry()\n"
        "print('click' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: citynerve run [OPTIONS]")
    for opt in _run.OPTIONS:
        assert ", ".join(opt.names) in done.stdout
    assert done.stdout.rstrip().endswith("False")
    bad = [sys.executable, "-m", "citynerve.gateway.cli", "run", "--log-level", "loud"]
    done = subprocess.run(bad, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Error: Invalid value for '--log-level'" in done.stderr
    missing = [sys.executable, "-m", "citynerve.gateway.cli", "run", "-c", "/nonexistent/gw.toml"]
    done = subprocess.run(missing, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "/nonexistent/gw.toml" in done.stderr
