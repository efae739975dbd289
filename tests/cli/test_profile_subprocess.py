"""The installed ``qrs`` script, run as a user would: real processes, real exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import API_KEY, installed_qrs
from tests.conftest import REPO_ROOT


def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [installed_qrs(), *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
        env={**os.environ, **(env or {})},
    )


def test_validate_all_on_the_repository(tmp_path: Path) -> None:
    proc = run(
        "profile", "validate", "--all", "--json", cwd=tmp_path, env={"QRS_ROOT": str(REPO_ROOT)}
    )
    assert proc.returncode == 0, proc.stderr
    assert {p["profile"] for p in json.loads(proc.stdout)["profiles"]} == {"firefly-1", "urandom"}


def test_new_then_validate_from_inside_the_project(project: Path) -> None:
    env = {"QRS_ROOT": "", "QRS_TEST_KEY": API_KEY}
    made = run(
        "profile",
        "new",
        "sub",
        "--source",
        "quantum_grpc",
        "--address",
        "qrng:50051",
        "--api-key-env",
        "QRS_TEST_KEY",
        cwd=project / "deployments",
        env=env,
    )
    assert made.returncode == 0, made.stderr
    checked = run("profile", "validate", "sub", "--strict", cwd=project, env=env)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    shown = run("profile", "show", "sub", cwd=project, env=env)
    assert shown.returncode == 0
    for proc in (made, checked, shown):
        assert API_KEY not in proc.stdout + proc.stderr


def test_bad_input_is_one_error_line_exit_2(project: Path) -> None:
    proc = run("profile", "new", "../escape", cwd=project)
    assert proc.returncode == 2
    assert proc.stderr.splitlines()[0].startswith("Error: invalid profile name")
    assert proc.stderr.splitlines()[1].startswith("Hint: ")
    assert "Traceback" not in proc.stderr and not (project.parent / "escape").exists()


def test_failed_validation_exits_1(project: Path) -> None:
    (project / "deployments" / "urandom" / ".env").write_text("QRS_PROFILE=urandom\nQR_TOP_K=x\n")
    proc = run("profile", "validate", "urandom", cwd=project)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "deployments/urandom/.env:2: QR_TOP_K=x" in proc.stdout


def test_help_does_not_import_the_profile_machinery() -> None:
    """`qrs --help` stays fast: jinja2, yaml, jsonschema and the profile library load lazily."""
    probe = (
        "import sys\nfrom qrs_cli.main import main\n"
        "main(['--help']); main(['profile', '--help']); main(['profile', 'new', '--help'])\n"
        "heavy = sorted({m.split('.')[0] for m in sys.modules if m.split('.')[0] in "
        "('jinja2', 'yaml', 'jsonschema', 'check_jsonschema')} | "
        "{m for m in sys.modules if m.startswith('qrs_cli.profiles')})\n"
        "print('HEAVY', heavy)\n"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in proc.stdout, proc.stdout + proc.stderr


def test_startup_benchmark_reports_baseline_and_ratio() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "benchmarks/bench_cli_startup.py"),
            "--runs",
            "1",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    figures = json.loads(proc.stdout)
    assert figures["baseline_python_pass_ms"] > 0 and figures["qrs_help_ms"] > 0
    assert figures["ratio_help_to_baseline"] > 0
