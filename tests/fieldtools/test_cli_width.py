"""The installer's tables on an 80-column terminal (an SSH session, output piped to a file): device
ids, addresses and profiles wrap in their cell and are never cut to "…". `devices list` showed three
meters as "meter-0000…" with their addresses "0000000000…", telling them apart impossible."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner, Result

from citynerve.gateway.cli import main

IDENTITY = ("--gateway-id", "gw-1", "--city", "310100", "--district", "310106", "--street", "310106013")


def cli(*args: str) -> Result:
    return CliRunner(env={"COLUMNS": "80"}).invoke(main, list(args), catch_exceptions=False)


def _column(output: str, index: int, key: int) -> list[str]:
    """Cell `index` of each row of a rich table, its wrapped lines joined; a row starts where cell
    `key` is not empty."""
    rows: list[str] = []
    for line in output.splitlines():
        if not line.startswith("│"):
            continue
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if cells[key]:
            rows.append(cells[index])
        elif rows:
            rows[-1] += cells[index]
    return rows


def test_devices_list_keeps_every_id_and_address_whole(short_dir: Path) -> None:
    path = short_dir / "gw.toml"
    r = cli("init", "-c", str(path), *IDENTITY, "--bus", "water-riser-b:cjt188:/dev/ttyUSB-x")
    assert r.exit_code == 0, r.output
    addresses = ["00000000000301", "00000000000302", "00000000000303"]
    for a in addresses:
        r = cli(
            "devices", "add", "-c", str(path), "--id", f"meter-{a}", "--bus", "water-riser-b",
            "--profile", "cjt188-water-cold", "--address", a,
        )  # fmt: skip
        assert r.exit_code == 0, r.output
    r = cli("devices", "list", "-c", str(path))
    assert r.exit_code == 0, r.output
    assert "…" not in r.output, r.output
    assert max(len(line) for line in r.output.splitlines()) <= 80
    assert _column(r.output, 1, 5) == ["water-riser-b"] * 3, r.output
    assert _column(r.output, 0, 5) == [f"meter-{a}" for a in addresses], r.output
    assert _column(r.output, 2, 5) == ["cjt188-water-cold"] * 3, r.output
    assert _column(r.output, 3, 5) == addresses, r.output
