"""Plan and carry out the service install: user, folders, config, unit, enable.

`plan_install` only decides (so `--dry-run` prints exactly what `install` would do); `install`
carries out a plan. With a `prefix` other than "/", everything is written under it and nothing on
the running system changes: no user is created, and the unit is enabled with `systemctl --root`.
"""

from __future__ import annotations

import enum
import grp
import os
import pwd
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from citynerve.gateway.api import PermanentError, read_text
from citynerve.gateway.atomicfile import NewFileOwner, replace_file
from citynerve.gateway.service.unit import CONFIG_FILE, DATA_DIR, RUNTIME_DIR, UNIT_NAME, render_unit

UNIT_DIR = "/etc/systemd/system"
CONFIG_DIR_MODE = 0o2770  # root:citynerve, as the unit's ConfigurationDirectoryMode
WANTED_GROUPS = ("dialout", "bluetooth")


class ServiceInstallError(PermanentError):
    """A step of the install failed; `step` names it."""

    def __init__(self, step: str, reason: str) -> None:
        self.step = step
        self.reason = reason
        super().__init__(f"service install: {step}: {reason}")


class StepKind(enum.Enum):
    USER = "user"
    FOLDER = "folder"
    CONFIG = "config"
    CONFIG_ACCESS = "config_access"  # an existing config: group and mode only, content untouched
    UNIT = "unit"
    ENABLE = "enable"
    SKIP = "skip"
    WARN = "warning"  # nothing to do: something the installer must fix by hand (printed last)


@dataclass(frozen=True, slots=True)
class Step:
    kind: StepKind
    what: str  # for people: "create user citynerve in groups dialout"
    command: tuple[str, ...] = ()  # a program to run, if any
    path: str = ""
    content: str = ""  # file content for UNIT / CONFIG steps
    mode: int = 0o644
    owner: str = ""  # user:group to chown to (real root installs only)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "what": self.what,
            "command": list(self.command),
            "path": self.path,
            "mode": oct(self.mode),
        }


@dataclass(slots=True)
class InstallPlan:
    prefix: Path
    steps: list[Step] = field(default_factory=list)
    done: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"prefix": str(self.prefix), "steps": [s.to_dict() for s in self.steps], "done": self.done}


def citynerve_command() -> str:
    """The absolute path of this install's `citynerve` command (beside the running Python)."""
    beside = Path(sys.executable).parent / "citynerve"
    if beside.exists():
        # Installed from a bundle (<root>/releases/<version>/bin): the unit runs whatever `current`
        # points at, so that `citynerve update` can switch releases under it.
        release = beside.parent.parent
        if release.parent.name == "releases" and (release.parent.parent / "current").is_symlink():
            return str(release.parent.parent / "current" / "bin" / "citynerve")
        return str(beside)
    found = shutil.which("citynerve")
    if found:
        return str(Path(found).resolve())
    raise ServiceInstallError("unit", "cannot find the citynerve command; give --exec PATH")


def _existing_groups(names: tuple[str, ...]) -> tuple[str, ...]:
    out = []
    for name in names:
        try:
            grp.getgrnam(name)
        except KeyError:
            continue
        out.append(name)
    return tuple(out)


def _user_exists(user: str) -> bool:
    try:
        pwd.getpwnam(user)
    except KeyError:
        return False
    return True


def _under(prefix: Path, path: str) -> Path:
    return prefix / path.lstrip("/")


def _config_access(target: Path, config: Path | None, user: str, real: bool) -> Step:
    """An existing config stays as it is, except that the service must read it: `citynerve init`
    run with sudo wrote it root:root 0640."""
    try:
        mode = target.stat().st_mode & 0o7777
    except OSError as err:
        raise ServiceInstallError("config", f"{target}: {err.strerror or err}") from err
    kept = f"keep config {CONFIG_FILE} as it is" + (f" (not replaced by {config})" if config else "")
    if real:
        return Step(
            StepKind.CONFIG_ACCESS,
            f"{kept}; give it group {user}, readable by the group (the service reads it)",
            path=CONFIG_FILE,
            mode=mode | 0o040,
            owner=f":{user}",
        )
    return Step(
        StepKind.CONFIG_ACCESS,
        f"{kept}; make it readable by its group (group {user} is given only when installing into /)",
        path=CONFIG_FILE,
        mode=mode | 0o040,
    )


# Where the installed config's outbox and control socket go when the given config leaves them unset
# or relative (as `citynerve init` writes them for /etc/citynerve).
SYSTEM_PATHS = (
    ("store", "path", f"{DATA_DIR}/outbox.db"),
    ("control", "socket", f"{RUNTIME_DIR}/control.sock"),
)


def with_system_paths(text: str, source: Path) -> tuple[str, list[str]]:
    """The config text with `[store] path` and `[control] socket` absolute, and what was changed.

    Relative paths resolve against the config file's folder: copied to /etc/citynerve, the outbox
    would land in /etc/citynerve/var/ (not /var/lib/citynerve, which upgrades keep) and the socket
    beside it. Comments and layout are kept; a table written inline or as dotted keys, which this
    line edit cannot place a key into, is refused with the key to set by hand.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ServiceInstallError("config", f"{source} is not TOML: {err}") from err
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    changed: list[str] = []
    for table, key, system in SYSTEM_PATHS:
        section = data.get(table, {})
        value = section.get(key) if isinstance(section, dict) else None
        if isinstance(value, str) and Path(value).is_absolute():
            continue
        was = f"{value!r}, relative to the config's folder" if value is not None else "unset"
        setting = f'{key} = "{system}"  # set by `citynerve service install` (was {was})\n'
        header = next((i for i, ln in enumerate(lines) if re.match(rf"^\s*\[{table}\]\s*(#.*)?$", ln)), None)
        if header is None and table not in data:
            lines += ["\n", f"[{table}]\n", setting]
        elif header is None:
            raise ServiceInstallError(
                "config", f"{source}: set {table}.{key} to an absolute path (e.g. {system}) and install again"
            )
        else:
            end = next(
                (i for i in range(header + 1, len(lines)) if re.match(r"^\s*\[", lines[i])), len(lines)
            )
            at = next((i for i in range(header + 1, end) if re.match(rf"^\s*{key}\s*=", lines[i])), None)
            if at is None:
                lines.insert(header + 1, setting)
            else:
                lines[at] = setting
        changed.append(f"{table}.{key} = {system} (was {was})")
    out = "".join(lines)
    try:
        check = tomllib.loads(out)
    except tomllib.TOMLDecodeError as err:  # a multi-line value under the key: not ours to edit
        raise ServiceInstallError("config", f"{source}: cannot set {', '.join(changed)}: {err}") from err
    for table, key, system in SYSTEM_PATHS:
        section = check.get(table, {})
        if not isinstance(section, dict) or not Path(str(section.get(key, ""))).is_absolute():
            raise ServiceInstallError("config", f"{source}: set {table}.{key} to {system} by hand")
    return (out if changed else text), changed


def plan_install(
    *,
    prefix: Path = Path("/"),
    config: Path | None = None,
    exec_start: str | None = None,
    user: str = "citynerve",
    enable: bool = True,
) -> InstallPlan:
    """Decide every step (nothing is changed here)."""
    real = prefix.resolve() == Path("/")
    plan = InstallPlan(prefix)
    groups = _existing_groups(WANTED_GROUPS)
    if real:
        if _user_exists(user):
            if groups:
                plan.steps.append(
                    Step(
                        StepKind.USER,
                        f"add user {user} to {', '.join(groups)}",
                        ("usermod", "-aG", ",".join(groups), user),
                    )
                )
        else:
            cmd = [
                "useradd",
                "--system",
                "--home-dir",
                DATA_DIR,
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ]
            if groups:
                cmd += ["--groups", ",".join(groups)]
            plan.steps.append(
                Step(
                    StepKind.USER,
                    f"create system user {user} ({', '.join(groups) or 'no groups'})",
                    (*cmd, user),
                )
            )
    else:
        plan.steps.append(
            Step(StepKind.SKIP, f"user {user}: created only when installing into / (not {prefix})")
        )
    owner = f"{user}:{user}" if real else ""
    config_dir = str(Path(CONFIG_FILE).parent)

    def folder(path: str) -> str:  # every step says what it does: "would create folder ..."
        return f"create folder {path}" if not _under(prefix, path).is_dir() else f"set up folder {path}"

    plan.steps.append(
        Step(
            StepKind.FOLDER,
            # Group-writable: the service writes remote config changes, their history and the
            # platform's profiles here; setgid: what root writes here gets the service's group.
            f"{folder(config_dir)} (config; the service writes remote config changes here)",
            path=config_dir,
            mode=CONFIG_DIR_MODE,
            owner=f"root:{user}" if real else "",
        )
    )
    plan.steps.append(
        Step(
            StepKind.FOLDER,
            f"{folder(DATA_DIR)} (outbox; contents never touched)",
            path=DATA_DIR,
            mode=0o750,
            owner=owner,
        )
    )
    target = _under(prefix, CONFIG_FILE)
    if target.exists():
        plan.steps.append(_config_access(target, config, user, real))
    warnings: list[Step] = []
    if config is not None:
        if not target.exists():
            try:
                text = read_text(config)
            except (OSError, UnicodeDecodeError) as err:
                raise ServiceInstallError("config", f"cannot read {config}: {err}") from err
            text, changed = with_system_paths(text, config)
            plan.steps.append(
                Step(
                    StepKind.CONFIG,
                    f"install config {CONFIG_FILE} from {config}"
                    + (f", with {'; '.join(changed)}" if changed else ""),
                    path=CONFIG_FILE,
                    content=text,
                    mode=0o640,
                    owner=f"root:{user}" if real else "",
                )
            )
            warnings = installed_config_problems(text, target)
    elif not target.exists():
        plan.steps.append(
            Step(
                StepKind.SKIP,
                f"no config at {CONFIG_FILE} yet: write one with `citynerve init -c {CONFIG_FILE}`",
            )
        )
    unit_text = render_unit(exec_start or citynerve_command(), user=user, groups=groups)
    unit_path = f"{UNIT_DIR}/{UNIT_NAME}"
    current = _under(prefix, unit_path)
    if current.exists() and current.read_text(encoding="utf-8") == unit_text:
        plan.steps.append(Step(StepKind.SKIP, f"unit {unit_path} is up to date"))
    else:
        verb = "upgrade" if current.exists() else "write"
        plan.steps.append(
            Step(StepKind.UNIT, f"{verb} unit {unit_path}", path=unit_path, content=unit_text, mode=0o644)
        )
    if enable:
        if real:
            plan.steps.append(Step(StepKind.ENABLE, "reload systemd", ("systemctl", "daemon-reload")))
            plan.steps.append(Step(StepKind.ENABLE, "enable at boot", ("systemctl", "enable", UNIT_NAME)))
            if target.exists() or config is not None:
                plan.steps.append(
                    Step(StepKind.ENABLE, "(re)start the service", ("systemctl", "restart", UNIT_NAME))
                )
            else:
                # Starting without a config would only fill the journal with a refusal.
                plan.steps.append(
                    Step(StepKind.SKIP, f"not started: write {CONFIG_FILE}, then `systemctl start citynerve`")
                )
        else:
            plan.steps.append(
                Step(
                    StepKind.ENABLE,
                    f"enable under {prefix}",
                    ("systemctl", f"--root={prefix}", "enable", UNIT_NAME),
                )
            )
    plan.steps += warnings
    return plan


MAX_CONFIG_WARNINGS = 10


def installed_config_problems(text: str, target: Path) -> list[Step]:
    """What `config check` would refuse in the config once it is at `target` (warnings: the files
    are still written). Relative paths resolve against the config's folder, so a secret file written
    as `password_file = "broker.pw"` beside the given config is looked for beside the installed one:
    without this the service starts, cannot log in to the broker, and only the journal says why."""
    import tempfile

    from citynerve.gateway.api import ConfigError
    from citynerve.gateway.config import load_config

    fd, tmp = tempfile.mkstemp(prefix="citynerve-install-", suffix=".toml")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        load_config(tmp, as_path=target, secrets_must_exist=True)
    except ConfigError as err:
        issues = [i for i in err.issues if i.message]
    else:
        return []
    finally:
        os.unlink(tmp)
    steps = [
        Step(StepKind.WARN, f"the installed config {CONFIG_FILE}: {issue.shown}: {issue.message}")
        for issue in issues[:MAX_CONFIG_WARNINGS]
    ]
    if len(issues) > MAX_CONFIG_WARNINGS:
        steps.append(Step(StepKind.WARN, f"and {len(issues) - MAX_CONFIG_WARNINGS} more problems"))
    steps.append(
        Step(
            StepKind.WARN,
            f"the installed config does not pass `citynerve config check {CONFIG_FILE}`: fix it there, "
            "then `systemctl restart citynerve`",
        )
    )
    return steps


def _run(step: Step) -> None:
    try:
        proc = subprocess.run(list(step.command), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as err:
        raise ServiceInstallError(step.what, str(err)) from err
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        raise ServiceInstallError(step.what, reason[-1] if reason else f"exit code {proc.returncode}")


def _chown(path: Path, owner: str) -> None:
    if not owner or os.geteuid() != 0:
        return
    user, _, group = owner.partition(":")
    if user:
        shutil.chown(path, user=user, group=group or None)
    elif group:
        shutil.chown(path, group=group)


def _write(path: Path, text: str, mode: int) -> None:
    """Atomically, durably (file and folder fsynced), keeping the previous file as a backup that a
    second install in the same second does not overwrite."""
    replace_file(path, text, mode=mode, backup=True, new_owner=NewFileOwner.WRITER)


def install(plan: InstallPlan) -> InstallPlan:
    """Carry out a plan. Raises ServiceInstallError naming the failed step (earlier steps stay)."""
    real = plan.prefix.resolve() == Path("/")
    if real and os.geteuid() != 0:
        raise ServiceInstallError("start", "installing into / needs root (sudo citynerve service install)")
    for step in plan.steps:
        if step.kind in (StepKind.SKIP, StepKind.WARN):
            continue
        try:
            if step.kind in (StepKind.USER, StepKind.ENABLE):
                if step.kind is StepKind.ENABLE and shutil.which("systemctl") is None:
                    raise ServiceInstallError(step.what, "systemctl not found (not a systemd system)")
                _run(step)
            elif step.kind is StepKind.CONFIG_ACCESS:
                target = _under(plan.prefix, step.path)
                _chown(target, step.owner)
                os.chmod(target, step.mode)
            elif step.kind is StepKind.FOLDER:
                target = _under(plan.prefix, step.path)
                # Only the folder itself: a recursive chown/chmod of the data folder on upgrade is
                # exactly what must never happen to a live outbox.
                target.mkdir(parents=True, exist_ok=True)
                _chown(target, step.owner)
                os.chmod(target, step.mode)  # after the chown, which may clear the setgid bit
            else:
                target = _under(plan.prefix, step.path)
                target.parent.mkdir(parents=True, exist_ok=True)
                _write(target, step.content, step.mode)
                _chown(target, step.owner)
        except OSError as err:
            raise ServiceInstallError(step.what, err.strerror or str(err)) from err
        plan.done.append(step.what)
    return plan
