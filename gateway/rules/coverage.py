"""What the rules cover: warnings for a gateway that raises no alarm, or a pack that reaches nobody.

A config without `[rules]` is valid (a meter-reading gateway), and a pack whose selector names only
devices of classes it is not written for loads fine: the engine gives those devices none of its
rules (they lack its points). Both leave someone unprotected without a word, so `config check`,
`diag rules check` and `report` say so (warnings, never errors).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from citynerve.gateway.api import ConfigIssue, DeviceConfig

if TYPE_CHECKING:
    from citynerve.gateway.rules.config import RulesConfig

NO_RULES = (
    "warning: no [rules]: no alarms will be raised "
    "(turn on the rule packs for the devices: docs/installer-guide.md)"
)


def coverage_warnings(
    rules: RulesConfig | None,
    devices: Sequence[DeviceConfig],
    classes: Mapping[str, str],
    file: str = "",
) -> list[ConfigIssue]:
    """No `[rules]` at all; and each pack that selects no device, or only devices of which none has
    a class the pack is written for (`classes`: profile id -> device_class). A pack without classes,
    or selecting devices whose profile has no class, is not judged."""
    if rules is None:
        return [ConfigIssue(file, "rules", NO_RULES)]
    out: list[ConfigIssue] = []
    for i, ref in enumerate(rules.packs):
        pack = ref.pack
        if ref.select.empty:
            chosen = list(devices)
            how = "every device"
        else:
            chosen = [d for d in devices if ref.select.matches(d)]
            how = _count(len(chosen))
        where = f"rules.packs[{i}]"
        if not chosen:
            why = f"warning: pack {pack.id} selects no device: it raises nothing"
            out.append(ConfigIssue(file, where, why))
            continue
        if not pack.classes:
            continue
        device_classes = [classes.get(d.profile, "") for d in chosen]
        if any(c in pack.classes or not c for c in device_classes):
            continue
        wanted = " or ".join(pack.classes)
        names = ", ".join(d.id for d in chosen[:5]) + (", ..." if len(chosen) > 5 else "")
        out.append(
            ConfigIssue(
                file,
                where,
                f"warning: pack {pack.id} selects {how} ({names}), none of class {wanted}: "
                "it raises nothing for them",
            )
        )
    return out


def _count(n: int) -> str:
    return f"{n} device" if n == 1 else f"{n} devices"
