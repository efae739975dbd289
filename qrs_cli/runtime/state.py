"""Where a running stack is remembered: one state directory per profile.

``qrs up`` writes ``state.json`` there (pids with their kernel start times, ports, the start
time, the Compose project), and the native runtime's logs and token records live beside it, so
``qrs down``, ``status`` and ``logs`` find the stack from any shell. The directory is
``$QRS_STATE_DIR/<profile>``, else ``$XDG_STATE_HOME/qrs/<profile>``, else
``~/.local/state/qrs/<profile>``.

The state file is written atomically (temporary file + rename) after every process start, so
an interrupted ``up`` still leaves enough behind for ``down`` to stop what it started. It holds
no secrets: command lines never carry them (they travel in the children's environment).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from qrs_cli.errors import EXIT_USAGE
from qrs_cli.profiles.writer import atomic_write
from qrs_cli.runtime.errors import LaunchError
from qrs_cli.runtime.types import ReadinessCheck, RuntimeName

STATE_DIR_VAR = "QRS_STATE_DIR"
STATE_FILE = "state.json"
_FORMAT = 1


def state_root() -> Path:
    """The folder holding every profile's state directory (see the module docstring)."""
    explicit = os.environ.get(STATE_DIR_VAR, "")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "qrs"


def profile_state_dir(profile: str) -> Path:
    """``state_root()/profile``; a name with a path in it would reach outside that folder."""
    from qrs_cli.profiles.discovery import name_problem

    problem = name_problem(profile, allow_template=True)
    if problem:
        raise LaunchError(problem, "name a profile folder, e.g. `qrs status urandom`",
                          exit_code=EXIT_USAGE)
    return state_root() / profile


@dataclass(frozen=True)
class ProcessRecord:
    """A child process of the native runtime. ``start_ticks`` (the kernel's start time of the
    pid) tells the same process from a later one that reused its pid."""

    service: str
    pid: int
    start_ticks: int
    port: int
    log: str
    argv: tuple[str, ...] = ()


@dataclass(frozen=True)
class StackState:
    """What ``qrs up`` left for the other commands."""

    profile: str
    runtime: RuntimeName
    started_at: float
    project_root: str
    endpoint: str = ""
    model: str = ""
    processes: tuple[ProcessRecord, ...] = ()
    project: str = ""
    services: tuple[str, ...] = ()
    ports: tuple[tuple[str, int], ...] = ()
    checks: tuple[ReadinessCheck, ...] = ()
    diagnostics: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        return profile_state_dir(self.profile)

    def with_process(self, record: ProcessRecord) -> StackState:
        """This state with ``record`` added (replacing an earlier record of its service)."""
        kept = tuple(p for p in self.processes if p.service != record.service)
        return replace(self, processes=(*kept, record))

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["format"] = _FORMAT
        return data


def write_state(state: StackState) -> Path:
    """Atomically write ``state.json`` (mode 0600) in the profile's state directory."""
    folder = state.state_dir
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / STATE_FILE
    try:
        atomic_write(target, json.dumps(state.to_json(), indent=2) + "\n", secret=True)
    except OSError as exc:
        raise LaunchError(
            f"cannot write {target}: {exc.strerror or exc}",
            f"check that {folder} is writable, or set {STATE_DIR_VAR} to another folder",
        ) from exc
    return target


def read_state(profile: str) -> StackState | None:
    """The profile's state, or None when nothing was started (or the file was removed)."""
    path = profile_state_dir(profile) / STATE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return _from_json(data)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LaunchError(
            f"the state file {path} is unreadable ({type(exc).__name__})",
            "if nothing of this profile runs any more, delete that file",
        ) from exc


def remove_state(profile: str) -> None:
    (profile_state_dir(profile) / STATE_FILE).unlink(missing_ok=True)


def known_profiles() -> list[str]:
    """Profiles that have a state file, sorted."""
    root = state_root()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / STATE_FILE).is_file())


def _from_json(data: dict[str, Any]) -> StackState:
    processes = tuple(
        ProcessRecord(
            service=str(p["service"]),
            pid=int(p["pid"]),
            start_ticks=int(p["start_ticks"]),
            port=int(p["port"]),
            log=str(p["log"]),
            argv=tuple(p.get("argv", ())),
        )
        for p in data.get("processes", ())
    )
    checks = tuple(
        ReadinessCheck(str(c["service"]), c["kind"], str(c["target"]))
        for c in data.get("checks", ())
    )
    runtime = data["runtime"]
    if runtime not in ("compose", "native"):
        raise ValueError(f"unknown runtime {runtime!r}")
    return StackState(
        profile=str(data["profile"]),
        runtime=runtime,
        started_at=float(data["started_at"]),
        project_root=str(data.get("project_root", "")),
        endpoint=str(data.get("endpoint", "")),
        model=str(data.get("model", "")),
        processes=processes,
        project=str(data.get("project", "")),
        services=tuple(data.get("services", ())),
        ports=tuple((str(n), int(p)) for n, p in data.get("ports", ())),
        checks=checks,
        diagnostics=str(data.get("diagnostics", "")),
        extra=dict(data.get("extra", {})),
    )
