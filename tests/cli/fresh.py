"""Running ``qrs`` as a new user would: a fresh folder outside the checkout, a clean environment.

``run_fresh`` starts the installed console script (or ``python -m qrs_cli`` with an extra
``PYTHONPATH``, for a wheel unpacked in a test) in ``cwd`` with a private HOME and state
folder, no ``QRS_*``/``QR_*`` variables and no ``QRS_ROOT``, so nothing of the checkout or the
developer's machine leaks in. ``assert_clean`` is the bar every such run must pass: no
traceback and no "this is a bug" anywhere in its output.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from tests.cli.conftest import Outcome, installed_qrs
from tests.conftest import REPO_ROOT

#: Variables a fresh run keeps from the test process (tools, locale, the venv's PATH).
_KEPT = ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")


def fresh_env(home: Path, **extra: str) -> dict[str, str]:
    """A minimal environment: PATH and locale, a private HOME and state folder, plain output."""
    env = {k: v for k, v in os.environ.items() if k in _KEPT}
    env.update({
        "HOME": str(home), "QRS_STATE_DIR": str(home / "state"), "NO_COLOR": "1",
        "XDG_STATE_HOME": str(home / "xdg-state"), "XDG_CACHE_HOME": str(home / "cache"),
        "_TYPER_FORCE_DISABLE_TERMINAL": "1", "TERMINAL_WIDTH": "200",
    })
    env.update(extra)
    return env


def run_fresh(cwd: Path, *args: str, home: Path | None = None, stdin: str | None = None,
              env: Mapping[str, str] | None = None, pythonpath: Path | None = None,
              timeout: float = 180) -> Outcome:
    """``qrs ARGS`` in ``cwd`` (outside the checkout), through a real process."""
    assert REPO_ROOT not in (cwd, *cwd.parents), "a fresh run must start outside the checkout"
    home = home or cwd.parent / "home"
    home.mkdir(parents=True, exist_ok=True)
    environ = fresh_env(home, **dict(env or {}))
    if pythonpath is not None:
        environ["PYTHONPATH"] = str(pythonpath)
        argv = [sys.executable, "-m", "qrs_cli", *args]
    else:
        argv = [installed_qrs(), *args]
    proc = subprocess.run(argv, cwd=cwd, env=environ, input=stdin, capture_output=True,
                          text=True, timeout=timeout, check=False)
    return Outcome(proc.returncode, proc.stdout, proc.stderr)


def assert_clean(outcome: Outcome) -> None:
    """The bar of issue 13: whatever the exit code, no traceback and no bug report."""
    assert "Traceback" not in outcome.text, outcome
    assert "this is a bug" not in outcome.text, outcome
