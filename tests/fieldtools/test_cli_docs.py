"""The CLI reference (docs/cli.md) is generated from the click tree and must match it; every command
has help text, and the field-tools commands document every option."""

from __future__ import annotations

import click

from citynerve.hil.tools.gen_cli_docs import DOC, render, walk

FIELD_TOOLS = (
    ("citynerve", "diag", "ports"),
    ("citynerve", "diag", "modbus"),
    ("citynerve", "diag", "store"),
    ("citynerve", "diag", "bundle"),
    ("citynerve", "init"),
    ("citynerve", "devices"),
    ("citynerve", "service"),
)


def _tree() -> list[tuple[tuple[str, ...], click.Command]]:
    import citynerve.gateway.cli

    load = getattr(citynerve.gateway.cli, "load_command_modules", None)
    if load is not None:
        load()
    return list(walk(citynerve.gateway.cli.main, ("citynerve",)))


def test_cli_reference_is_current() -> None:
    expected = render()
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert current == expected, (
        "docs/cli.md does not match the CLI: regenerate it with `python -m citynerve.hil.tools.gen_cli_docs` "
        "and commit the result"
    )


def test_every_command_has_help() -> None:
    missing = [" ".join(path) for path, cmd in _tree() if not (cmd.help or cmd.short_help or "").strip()]
    assert not missing, f"commands without help text: {missing}"


def test_field_tools_options_all_have_help() -> None:
    tree = _tree()
    checked = 0
    for path, cmd in tree:
        if not any(path[: len(prefix)] == prefix for prefix in FIELD_TOOLS):
            continue
        for param in cmd.params:
            if isinstance(param, click.Option):
                assert (param.help or "").strip(), f"{' '.join(path)} {param.opts[0]} has no help"
                checked += 1
    assert checked > 40


def test_reference_names_every_command() -> None:
    text = DOC.read_text(encoding="utf-8")
    for path, _ in _tree():
        assert f"`{' '.join(path)}`" in text
