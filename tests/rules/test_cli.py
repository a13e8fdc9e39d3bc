"""`citynerve diag rules packs | check`: help, JSON, exit codes, one clear line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from citynerve.gateway.cli import main


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(main, ["diag", "rules", *args])
    return r.exit_code, r.stdout, r.stderr


def test_help_texts() -> None:
    code, out, _ = run("--help")
    assert code == 0 and "packs" in out and "check" in out
    for cmd in ("packs", "check"):
        code, out, _ = run(cmd, "--help")
        assert code == 0 and "--json" in out


def test_packs_json_lists_every_shipped_pack() -> None:
    code, out, _ = run("packs", "--json")
    assert code == 0
    packs = {p["id"]: p for p in json.loads(out)["packs"]}
    street = ["curtain-wall", "elderly-bed", "entrance", "fire-hydrant", "fire-lane", "litter-bin"]
    street += ["meter-box", "street-lamp"]  # issue 18
    assert sorted(packs) == sorted(["elderly-water", "electricity", "manhole", "smoke-fire", *street])
    smoke = {r["id"]: r for r in packs["smoke-fire"]["rules"]}
    assert smoke["smoke-fire.smoke"]["severity"] == "critical" and smoke["smoke-fire.smoke"]["hold_s"] == 0
    code, out, _ = run("packs")
    assert code == 0 and "manhole" in out


def test_check_pack_and_rules_table(tmp_path: Path) -> None:
    code, out, _ = run("check", str(Path("config/rules/manhole.toml").resolve()), "--json")
    assert code == 0 and json.loads(out)["valid"] and "manhole.cover_open" in json.loads(out)["rules"]
    bad = tmp_path / "gw.toml"
    bad.write_text('[rules]\n[[rules.rules]]\nid = "x"\nkind = "threshold"\npoint = "p"\nhold_s = -1\n')
    code, out, _ = run("check", str(bad), "--json")
    assert code == 2
    paths = [i["path"] for i in json.loads(out)["issues"]]
    assert "rules.0.threshold.hold_s" in paths
    code, out, _ = run("check", str(bad))
    assert code == 2 and "rules.rules.0.threshold.hold_s" in out


def test_bad_input_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    code, _, err = run("check", str(tmp_path / "missing.toml"))
    assert code == 2 and "no such file" in err and "Traceback" not in err
    broken = tmp_path / "broken.toml"
    broken.write_text("[rules\n")
    code, _, err = run("check", str(broken))
    assert code == 2 and "cannot read TOML" in err
    other = tmp_path / "other.toml"
    other.write_text("x = 1\n")
    code, _, err = run("check", str(other))
    assert code == 2 and "neither a rule pack" in err


def test_an_error_naming_a_file_with_brackets_is_printed_as_it_is(tmp_path: Path) -> None:
    """fail() prints plain text: '[/x]' in a path is not rich markup (it raised MarkupError)."""
    odd = tmp_path / "[/x] [rules].toml"
    code, _, err = run("check", str(odd))
    assert code == 2 and "no such file" in err and "[/x] [rules].toml" in err and "Traceback" not in err
