"""Every float option of the CLI refuses NaN: click's FloatRange lets `nan` through (each
comparison with NaN is false), and a NaN timeout or duration hangs a search or spins a loop."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from click.testing import CliRunner

from citynerve.gateway.cli import main
from citynerve.gateway.cli._common import FiniteRange


def _commands(
    group: click.Group, ctx: click.Context, path: tuple[str, ...]
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None, name
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, click.Context(cmd, parent=ctx, info_name=name), (*path, name))


def _float_options() -> list[tuple[tuple[str, ...], click.Option]]:
    ctx = click.Context(main, info_name="citynerve")
    return [
        (path, p)
        for path, cmd in _commands(main, ctx, ())
        for p in cmd.params
        if isinstance(p, click.Option) and isinstance(p.type, click.types.FloatParamType | click.FloatRange)
    ]


def test_every_float_option_refuses_nan() -> None:
    options = _float_options()
    assert len(options) >= 20  # the walk reached the lazily loaded commands
    plain = [f"{' '.join(path)} {p.opts[0]}" for path, p in options if not isinstance(p.type, FiniteRange)]
    assert plain == [], f"float options that accept NaN: {plain}"


@pytest.mark.parametrize("value", ["nan", "NaN", "-nan"])
def test_a_nan_search_timeout_is_a_usage_error(value: str) -> None:
    result = CliRunner().invoke(main, ["init", "--search-timeout", value])
    assert result.exit_code == 2, result.output
    assert "is not a number" in result.output, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_in_range_values_still_pass() -> None:
    t = FiniteRange(0.02, 5)
    assert t.convert("0.5", None, None) == 0.5
    with pytest.raises(click.BadParameter):
        t.convert("inf", None, None)


def test_probe_timeouts_are_bounded_where_the_probe_action_bounds_them() -> None:
    """The probe action takes a timeout in (0, 5] s: a larger one is refused by the CLI at once
    (exit 2), not after loading the config as a failed action (exit 1)."""

    probes = {path: p for path, p in _float_options() if path[-1] == "probe" and p.name == "timeout_s"}
    assert set(probes) == {("diag", family, "probe") for family in ("cjt188", "dlt645", "modbus")}
    for path, p in probes.items():
        assert isinstance(p.type, FiniteRange) and p.type.max == 5, path
    result = CliRunner().invoke(main, ["diag", "modbus", "probe", "--bus", "b", "--timeout", "8"])
    assert result.exit_code == 2 and "0.05<=x<=5" in result.output, result.output
