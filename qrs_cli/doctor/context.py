"""What the checks share: the environment, the project, and facts gathered once.

Several categories need the same slow-ish fact (``docker info`` feeds Docker, GPU and disk; the
profiles' values feed ports, profiles and Hugging Face): each is computed once, on first use,
under a lock, since categories run in parallel threads. Every external command runs through
:func:`run_tool` with a short timeout, so a dead Docker socket or a hung ``nvidia-smi`` costs
at most that timeout and never hangs the doctor.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

#: Upper bound of any one external command the doctor runs.
TOOL_TIMEOUT_S = 1.0

T = TypeVar("T")


@dataclass(frozen=True)
class ToolResult:
    """The outcome of one external command; ``missing`` / ``timed_out`` when it did not run."""

    code: int = -1
    stdout: str = ""
    stderr: str = ""
    missing: bool = False
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.code == 0

    def reason(self) -> str:
        if self.missing:
            return "not found"
        if self.timed_out:
            return "did not answer in time"
        lines = (self.stderr or self.stdout).strip().splitlines()
        return lines[-1] if lines else f"exit {self.code}"


def run_tool(argv: list[str], timeout_s: float = TOOL_TIMEOUT_S,
             env: Mapping[str, str] | None = None) -> ToolResult:
    """Run ``argv`` with a timeout; never raises."""
    exe = argv[0] if os.sep in argv[0] else shutil.which(argv[0], path=(env or os.environ)
                                                          .get("PATH"))
    if not exe or not os.path.exists(exe):
        return ToolResult(missing=True)
    try:
        done = subprocess.run([exe, *argv[1:]], capture_output=True, text=True, errors="replace",
                              timeout=timeout_s, check=False, stdin=subprocess.DEVNULL,
                              env=dict(env) if env is not None else None)
    except subprocess.TimeoutExpired:
        return ToolResult(timed_out=True)
    except OSError as exc:
        return ToolResult(stderr=str(exc))
    return ToolResult(done.returncode, done.stdout, done.stderr)


@dataclass
class DoctorContext:
    """Inputs of one doctor run and its memoised facts."""

    environ: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    root: str | None = None
    _memo: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _pending: dict[str, threading.Event] = field(default_factory=dict)

    def once(self, key: str, compute: Callable[[], T]) -> T:
        """``compute()`` the first time ``key`` is asked for; the same value afterwards."""
        with self._lock:
            if key in self._memo:
                return self._memo[key]  # type: ignore[no-any-return]
            event = self._pending.get(key)
            owner = event is None
            if owner:
                event = self._pending[key] = threading.Event()
        assert event is not None
        if not owner:
            event.wait()
            return self._memo[key]  # type: ignore[no-any-return]
        try:
            value = compute()
            self._memo[key] = value
        finally:
            event.set()
        return value

    def which(self, name: str) -> str:
        return shutil.which(name, path=self.environ.get("PATH")) or ""

    def tool(self, argv: list[str], timeout_s: float = TOOL_TIMEOUT_S) -> ToolResult:
        return run_tool(argv, timeout_s, self.environ)

    def docker_info(self) -> tuple[ToolResult, dict[str, Any]]:
        """``docker info`` as JSON (once): the daemon's answer, or why there is none."""
        def compute() -> tuple[ToolResult, dict[str, Any]]:
            result = self.tool(["docker", "info", "--format", "{{json .}}"])
            try:
                data = json.loads(result.stdout) if result.stdout.strip() else {}
            except ValueError:
                data = {}
            return result, data if isinstance(data, dict) else {}

        return self.once("docker_info", compute)

    def layout(self) -> Any:
        """The project layout, or None outside a checkout (profiles are then not checked)."""
        def compute() -> Any:
            from qrs_cli.profiles.discovery import find_project
            from qrs_cli.profiles.errors import ProfileError

            try:
                return find_project(self.root or self.environ.get("QRS_ROOT") or None)
            except ProfileError:
                return None

        return self.once("layout", compute)

    def profile_values(self) -> dict[str, dict[str, str]]:
        """Each profile's merged values (files + environment), by name; {} outside a checkout."""
        def compute() -> dict[str, dict[str, str]]:
            from qrs_cli.profiles.discovery import profile_names
            from qrs_cli.profiles.errors import ProfileError
            from qrs_cli.profiles.sources import load_sources

            layout = self.layout()
            if layout is None:
                return {}
            values = {}
            for name in profile_names(layout):
                try:
                    values[name] = load_sources(layout, name, self.environ).merged()
                except ProfileError:  # reported by the profiles category
                    values[name] = {}
            return values

        return self.once("profile_values", compute)

    def hf_home(self) -> Path:
        base = self.environ.get("HF_HOME") or str(Path(self.home()) / ".cache" / "huggingface")
        return Path(base).expanduser()

    def hf_hub_cache(self) -> Path:
        explicit = self.environ.get("HF_HUB_CACHE") or self.environ.get("HUGGINGFACE_HUB_CACHE")
        return Path(explicit).expanduser() if explicit else self.hf_home() / "hub"

    def home(self) -> str:
        return self.environ.get("HOME") or str(Path.home())
