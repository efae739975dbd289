"""Templates work from a built wheel, not only from the checkout.

``templates/`` is the source of truth; ``qrs_cli/_templates`` is a symlink to it that setuptools
follows when it builds a wheel. This test builds a wheel from a copy of the sources, unpacks it
(which is what installing a pure-Python wheel does) and renders a profile from it in a fresh
interpreter that cannot see the checkout.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from qrs_cli.profiles.render import template_names
from tests.conftest import REPO_ROOT


def test_checkout_templates_are_what_the_package_reads() -> None:
    link = REPO_ROOT / "qrs_cli" / "_templates"
    assert link.is_symlink() and link.resolve() == (REPO_ROOT / "templates").resolve()
    assert template_names() == sorted(p.name for p in (REPO_ROOT / "templates").glob("*.j2"))


def test_wheel_carries_the_templates_and_renders_from_them(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("qr_sampler", "qrs_cli", "templates"):
        shutil.copytree(REPO_ROOT / name, src / name, symlinks=True, ignore=ignore)
    dist = tmp_path / "dist"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
            str(src),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    (wheel,) = dist.glob("qr_sampler-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        packed = {n for n in zf.namelist() if n.startswith("qrs_cli/_templates/")}
        assert packed == {f"qrs_cli/_templates/{n}" for n in template_names()}
        for name in packed:
            template = REPO_ROOT / "templates" / Path(name).name
            assert zf.read(name).decode() == template.read_text(), name
        site = tmp_path / "site"
        zf.extractall(site)
    assert not (site / "qrs_cli" / "_templates").is_symlink()
    probe = (
        "import qrs_cli, sys\n"
        "from qrs_cli.profiles.answers import ProfileAnswers\n"
        "from qrs_cli.profiles.render import render_profile\n"
        "files = render_profile(ProfileAnswers('w').with_entropy_server(True).completed())\n"
        "print(qrs_cli.__file__)\n"
        "print(sorted(f.name for f in files))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    origin, names = proc.stdout.splitlines()
    assert origin.startswith(str(site))
    assert names == "['.env', 'README.md', 'compose.override.yaml']"
