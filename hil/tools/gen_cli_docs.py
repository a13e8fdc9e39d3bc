"""Generate docs/cli.md from the `citynerve` click tree, so the reference never drifts from the CLI.

    python -m citynerve.hil.tools.gen_cli_docs          # rewrite docs/cli.md
    python -m citynerve.hil.tools.gen_cli_docs --check  # exit 1 when docs/cli.md is stale (a CI test)

The text is built from each command's help, usage and options (not click's terminal-width help
screen), so it is the same on every machine.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Iterator
from pathlib import Path

import click

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"

INTRO = """# `citynerve` command reference

Generated from the CLI itself by `python -m citynerve.hil.tools.gen_cli_docs`; do not edit by hand (a test
fails when this file and the CLI disagree). Every command takes `-h/--help`. Commands with `--json`
print one JSON object for programs; checks exit 0 when fine, 1 when the check failed, 2 on bad input.
"""


def walk(cmd: click.Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command and group under `cmd`, parents first, children in name order."""
    yield path, cmd
    if isinstance(cmd, click.Group):
        for name in sorted(cmd.commands):
            yield from walk(cmd.commands[name], (*path, name))


def _help(cmd: click.Command) -> str:
    text = inspect.cleandoc(cmd.help or cmd.short_help or "")
    return text.split("\f")[0].strip()


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _options(cmd: click.Command, ctx: click.Context) -> list[str]:
    rows = []
    for param in cmd.get_params(ctx):
        if isinstance(param, click.Argument):
            continue
        record = param.get_help_record(ctx)
        if record is None:
            continue
        names, help_ = record
        rows.append(f"| `{_escape(names)}` | {_escape(help_)} |")
    if not rows:
        return []
    return ["| option | meaning |", "| --- | --- |", *rows, ""]


def render() -> str:
    """docs/cli.md as it should be now."""
    import citynerve.gateway.cli
    from citynerve.gateway.cli import main

    load = getattr(citynerve.gateway.cli, "load_command_modules", None)
    if load is not None:  # the CLI may load its command modules lazily: the docs need all of them
        load()
    out = [INTRO]
    settings = {**main.context_settings, "terminal_width": 100}
    root = click.Context(main, info_name="citynerve", **settings)
    for path, cmd in walk(main, ("citynerve",)):
        # The root context carries main's settings (-h as well as --help), as the real CLI does;
        # building the root's context without them made the output depend on click's caches.
        ctx = click.Context(cmd, info_name=path[-1], parent=root) if len(path) > 1 else root
        # The usage line of a subcommand names its parents: build it from the path.
        pieces = " ".join(cmd.collect_usage_pieces(ctx))
        level = min(len(path) + 1, 4)
        out.append(f"{'#' * level} `{' '.join(path)}`\n")
        out.append(f"```\n{' '.join(path)} {pieces}\n```\n")
        help_ = _help(cmd)
        if help_:
            out.append(help_ + "\n")
        if isinstance(cmd, click.Group) and cmd.commands:
            out.append("Commands: " + ", ".join(f"`{name}`" for name in sorted(cmd.commands)) + ".\n")
        out.extend(_options(cmd, ctx))
    return "\n".join(out).rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/cli.md is stale")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
        if current != text:
            print(f"{DOC} is stale: run `python -m citynerve.hil.tools.gen_cli_docs`", file=sys.stderr)
            return 1
        return 0
    DOC.write_text(text, encoding="utf-8")
    print(f"wrote {DOC}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
