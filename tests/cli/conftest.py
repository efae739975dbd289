"""Fixtures for the ``qrs profile`` tests: a throwaway project and ways to run ``qrs`` on it.

``project`` copies the repository's ``deployments/`` (base Compose file, shipped profiles) into
a temporary folder and points ``QRS_ROOT`` at it, so no test touches the real repository.
``qrs`` runs the real entry point (``main``: error translation, exit codes) in-process;
``cli`` runs the Typer app through typer's CliRunner (scripted prompts, hidden input).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner, Result

from qrs_cli.main import app, main
from tests.conftest import REPO_ROOT

#: The key used wherever a test configures an API key; no output may ever contain it.
API_KEY = "k3y-Sup3r-S3cret-7f9d2a"


@dataclass(frozen=True)
class Outcome:
    """What one ``qrs`` run produced."""

    code: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project root with a copy of the repository's deployments/; QRS_ROOT points at it."""
    root = tmp_path / "project"
    shutil.copytree(
        REPO_ROOT / "deployments",
        root / "deployments",
        ignore=shutil.ignore_patterns("secrets.env", "*.secret"),
    )
    monkeypatch.setenv("QRS_ROOT", str(root))
    return root


@pytest.fixture
def qrs(capsys: pytest.CaptureFixture[str]) -> Callable[..., Outcome]:
    """Run ``qrs ARGS`` through the real entry point and capture what it printed."""

    def run(*args: str) -> Outcome:
        capsys.readouterr()
        code = main(list(args))
        captured = capsys.readouterr()
        return Outcome(code, captured.out, captured.err)

    return run


@pytest.fixture
def cli() -> Callable[..., Result]:
    """Run the Typer app with typer's CliRunner (stdin scripted with ``input``)."""
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, list(args), input=input)

    return run


@pytest.fixture
def git_project(project: Path) -> Path:
    """``project`` as a git repository with its profiles committed."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    for args in (
        ["init", "-q"],
        ["-c", "user.email=t@example.invalid", "-c", "user.name=t", "add", "-A"],
        ["-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "init"],
    ):
        subprocess.run(["git", "-C", str(project), *args], check=True, capture_output=True)
    return project


def write_profile(root: Path, name: str, env_text: str, **files: str) -> Path:
    """A hand-written profile: ``.env`` text plus other files by name (``override=`` etc.)."""
    folder = root / "deployments" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ".env").write_text(f"QRS_PROFILE={name}\n{env_text}", encoding="utf-8")
    names = {"override": "compose.override.yaml", "secrets": "secrets.env"}
    for key, text in files.items():
        path = folder / names.get(key, key)
        path.write_text(text, encoding="utf-8")
        if key == "secrets":
            path.chmod(0o600)
    return folder


def assert_one_line_error(outcome: Outcome, code: int, fragment: str) -> None:
    """Exit ``code``; stderr says ``Error: …fragment…`` on one line plus a Hint; no traceback."""
    assert outcome.code == code, outcome
    assert "Traceback" not in outcome.text
    errors = [ln for ln in outcome.err.splitlines() if ln.startswith("Error: ")]
    hints = [ln for ln in outcome.err.splitlines() if ln.startswith("Hint: ")]
    assert len(errors) == 1, outcome.err
    assert len(hints) == 1 and len(hints[0]) > len("Hint: "), outcome.err
    assert fragment in errors[0], (fragment, outcome.err)


def installed_qrs() -> str:
    """The ``qrs`` console script of the interpreter running the tests."""
    script = Path(sys.executable).with_name("qrs")
    found = str(script) if script.exists() else shutil.which("qrs")
    if not found:
        pytest.skip("the qrs script is not installed")
    return found
