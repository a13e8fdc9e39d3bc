"""docs/configuration.md is generated from the config models and must match them; every key has a
type, a default and a meaning; the guides link to it."""

from __future__ import annotations

import re
from pathlib import Path

from citynerve.hil.tools.gen_config_docs import DOC, render

GUIDES = ("installer-guide.md", "technician-guide.md", "rules.md", "modbus.md", "serial-meters.md")


def test_configuration_reference_is_current() -> None:
    current = DOC.read_text(encoding="utf-8") if DOC.exists() else ""
    assert current == render(), (
        "docs/configuration.md does not match the config models: regenerate it with "
        "`python -m citynerve.hil.tools.gen_config_docs` and commit the result"
    )


def test_every_key_has_type_default_and_meaning() -> None:
    rows = [line for line in render().splitlines() if line.startswith("| `")]
    assert len(rows) > 200
    empty = [r.split("|")[1].strip() for r in rows if not r.rstrip("|").split("|")[-1].strip()]
    assert not empty, f"keys without a meaning: {empty}"
    assert all(r.split("|")[2].strip() and r.split("|")[3].strip() for r in rows)


def test_field_defaults_that_matter_are_there() -> None:
    text = render()
    section = text[text.index('## [[buses]] protocol = "dlt645"') :]
    section = section[: section.index("\n## ", 5)]
    assert re.search(r"\| `backoff_initial_s` \| number \| `5.0` \| > 0, <= 3600 \|", section)
    assert re.search(r"\| `backoff_max_s` \| number \| `300.0` \|", section)
    assert "## [[devices]] on a modbus_rtu / modbus_rtu_over_tcp bus" in text and "## Device profiles" in text
    assert "## [[devices]] on a modbus_tcp bus" in text and "`reply_unit`" in text
    assert text.count("## points of a modbus device") == 1
    assert "`identify`" in text and "`device_class`" in text


def test_guides_link_to_the_reference() -> None:
    docs = DOC.parent
    missing = [g for g in GUIDES if "configuration.md" not in (docs / g).read_text(encoding="utf-8")]
    assert not missing, missing
    assert Path(docs.parent / "README.md").read_text(encoding="utf-8").count("docs/configuration.md")


def test_every_table_the_loader_reads_is_documented() -> None:
    from citynerve.gateway.config.loader import TOP_KEYS

    text = render()
    tables = [k for k in TOP_KEYS if k not in ("profile_dirs", "buses", "devices")]
    missing = [k for k in tables if f"\n## [{k}]\n" not in text]
    assert not missing, f"tables the config loader reads with no section in docs/configuration.md: {missing}"
    assert "`profile_dirs`" in text and "## [[buses]]" in text and "## [[devices]]" in text
