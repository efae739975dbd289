"""Fixtures for the doctor tests: a PATH of fake tools, and ways to run one category.

Missing binaries are simulated by the PATH: ``fake_path`` holds only the tools a test writes
(shell scripts with absolute paths inside), so ``docker`` or ``nvidia-smi`` are absent unless
the test provides them. The interpreter is always called by its absolute path.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.doctor import CHECKS, Check, DoctorContext, run_doctor

SLEEP = shutil.which("sleep") or "/bin/sleep"


@pytest.fixture
def fake_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty folder that is the whole PATH; ``tool()`` puts fake commands in it."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def tool(folder: Path, name: str, body: str) -> Path:
    """Write an executable ``/bin/sh`` script ``name`` into ``folder``."""
    path = folder / name
    path.write_text("#!/bin/sh\n" + body + "\n", encoding="utf-8")
    path.chmod(0o755)
    return path


def echo_json(text: str, code: int = 0) -> str:
    """A script body printing ``text`` (single-quoted) and exiting with ``code``."""
    return f"echo '{text}'\nexit {code}"


def hang(seconds: int = 30) -> str:
    return f"exec {SLEEP} {seconds}"


@pytest.fixture
def category() -> Callable[..., list[Check]]:
    """Run one category with the current environment (after the test's changes)."""

    def run(key: str, root: str | None = None) -> list[Check]:
        report = run_doctor(DoctorContext(environ=dict(os.environ), root=root),
                            checks={key: CHECKS[key]})
        (found,) = report.categories
        return list(found.checks)

    return run


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}
