"""``qrs init``: a project from the installed package, for users without a checkout.

The decisive test builds a wheel from a copy of the sources (with a planted ``secrets.env`` and
a developer's own profile, which must not travel), unpacks it the way pip installs a pure-Python
wheel, and runs ``init → profile new → validate → up --dry-run`` from a fresh folder outside the
checkout with that package alone.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest

from qrs_cli.profiles.project import PROJECT_TEMPLATES, project_files
from tests.cli.conftest import Outcome, assert_one_line_error
from tests.cli.fresh import assert_clean, run_fresh
from tests.conftest import REPO_ROOT

SHIPPED_FILES = {
    "deployments/compose.yaml", "deployments/compose.api-key.yaml", "deployments/.gitignore",
    "deployments/README.md", "deployments/_template/.env", "deployments/_template/README.md",
    "deployments/urandom/.env", "deployments/urandom/README.md",
    "deployments/urandom/compose.override.yaml", "deployments/firefly-1/.env",
    "deployments/firefly-1/README.md",
}


@pytest.fixture(scope="module")
def wheel_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package as a wheel installs it: built from a copy of the sources, unpacked."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "secrets.env")
    for name in ("qr_sampler", "qrs_cli", "templates", "deployments"):
        shutil.copytree(REPO_ROOT / name, src / name, symlinks=True, ignore=ignore)
    # What a developer's checkout may hold and a wheel must never carry.
    (src / "deployments" / "firefly-1" / "secrets.env").write_text("QR_GRPC_API_KEY=leak-me\n")
    (src / "deployments" / "my-own").mkdir()
    (src / "deployments" / "my-own" / ".env").write_text("QRS_PROFILE=my-own\n")
    dist = tmp / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "SetuptoolsDeprecationWarning" not in proc.stderr + proc.stdout
    (wheel,) = dist.glob("qr_sampler-*.whl")
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        zf.extractall(site)
    packed = {n.removeprefix("qrs_cli/_deployments/") for n in names
              if n.startswith("qrs_cli/_deployments/")}
    assert {f"deployments/{n}" for n in packed} == SHIPPED_FILES
    assert not any("secrets.env" in n or "my-own" in n for n in names)
    return site


def test_init_from_the_wheel_in_a_fresh_folder(wheel_site: Path, tmp_path: Path) -> None:
    work = tmp_path / "fresh"
    work.mkdir()

    def qrs(*args: str, cwd: Path = work, stdin: str | None = None) -> Outcome:
        outcome = run_fresh(cwd, *args, pythonpath=wheel_site, stdin=stdin)
        assert_clean(outcome)
        return outcome

    where = run_fresh(work, "--version", pythonpath=wheel_site)
    assert where.code == 0, where
    origin = subprocess.run([sys.executable, "-c", "import qrs_cli; print(qrs_cli.__file__)"],
                            env={**os.environ, "PYTHONPATH": str(wheel_site)}, cwd=work,
                            capture_output=True, text=True, check=True).stdout
    assert origin.startswith(str(wheel_site)), origin  # the wheel, not the checkout

    # Before init: no project here, and the error says how to get one.
    before = qrs("profile", "new", "mine", "--defaults")
    assert_one_line_error(before, 2, "no deployments/compose.yaml")
    assert "qrs init" in before.err

    made = qrs("init", "proj")
    assert made.code == 0, made
    project = work / "proj"
    written = {p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()}
    assert written == SHIPPED_FILES | set(PROJECT_TEMPLATES.values())
    for name in SHIPPED_FILES:  # byte for byte what the repository ships
        assert (project / name).read_bytes() == (REPO_ROOT / name).read_bytes(), name
    assert "qr-sampler==" in (project / "Dockerfile.vllm").read_text()
    assert "!wheels/**" in (project / ".dockerignore").read_text()

    new = qrs("profile", "new", "mine", "--defaults", cwd=project)
    assert new.code == 0, new
    valid = qrs("profile", "validate", "--all", cwd=project)
    assert valid.code == 0, valid
    assert "✓ mine: valid" in valid.out and "✓ urandom: valid" in valid.out
    assert "docker compose" in valid.err  # the real Compose checked the files
    plan = qrs("up", "urandom", "--dry-run", "--json", cwd=project)
    assert plan.code == 0, plan
    steps = json.loads(plan.out)["steps"]
    assert str(project / "deployments" / "compose.yaml") in steps[0]["argv"]

    again = qrs("init", "proj")
    assert_one_line_error(again, 2, "never overwrites files")
    assert (project / "deployments" / "mine" / ".env").is_file()


def test_init_refuses_to_overwrite_and_writes_nothing(
    tmp_path: Path, qrs: Callable[..., Outcome]
) -> None:
    target = tmp_path / "half"
    (target / "deployments").mkdir(parents=True)
    (target / "deployments" / "compose.yaml").write_text("# mine\n")
    outcome = qrs("init", str(target))
    assert_one_line_error(outcome, 2, "deployments/compose.yaml")
    assert (target / "deployments" / "compose.yaml").read_text() == "# mine\n"
    assert sorted(p.name for p in target.rglob("*")) == ["compose.yaml", "deployments"]


def test_init_into_a_file_is_a_usage_error(tmp_path: Path, qrs: Callable[..., Outcome]) -> None:
    path = tmp_path / "a-file"
    path.write_text("x")
    assert_one_line_error(qrs("init", str(path)), 2, "is not a folder")


def test_init_json_and_the_project_works_without_root(
    tmp_path: Path, qrs: Callable[..., Outcome], monkeypatch: pytest.MonkeyPatch
) -> None:
    outcome = qrs("init", str(tmp_path / "p"), "--json")
    assert outcome.code == 0, outcome
    result = json.loads(outcome.out)
    assert set(result["files"]) == {f.path for f in project_files()}
    assert result["profiles"] == ["_template", "urandom", "firefly-1"]
    monkeypatch.chdir(tmp_path / "p" / "deployments" / "urandom")  # found from a subfolder
    listed = qrs("profile", "list", "--json")
    assert [p["name"] for p in json.loads(listed.out)] == ["firefly-1", "urandom"]
    mode = stat.S_IMODE((tmp_path / "p" / "deployments" / "compose.yaml").stat().st_mode)
    assert mode == 0o644


def test_profile_new_where_the_base_stack_is_missing_points_to_init(
    tmp_path: Path, qrs: Callable[..., Outcome]
) -> None:
    (tmp_path / "bare" / "deployments").mkdir(parents=True)
    outcome = qrs("profile", "new", "mine", "--defaults", "--root", str(tmp_path / "bare"))
    assert_one_line_error(outcome, 2, "the base stack) is missing")
    assert f"qrs init {tmp_path / 'bare'}" in outcome.err
    assert not (tmp_path / "bare" / "deployments" / "mine").exists()
