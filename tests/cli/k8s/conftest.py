"""Fixtures for ``qrs render k8s``: profiles in a throwaway project and the real validator.

``kubernetes-validate`` (the dev extra) checks manifests offline against Kubernetes' own JSON
schemas; it runs as the installed command, exactly as a user would run it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

#: The bar's Kubernetes version.
K8S_VERSION = "1.33.0"
#: A test key value: no file or output of a render may contain it.
TEST_KEY = "kq-Test-Key-Value-93c1e7"


def validator() -> str:
    script = Path(sys.executable).with_name("kubernetes-validate")
    found = str(script) if script.exists() else shutil.which("kubernetes-validate")
    assert found, "kubernetes-validate is a test dependency: pip install -e '.[dev]'"
    return found


def kubernetes_validate(*files: Path) -> subprocess.CompletedProcess[str]:
    """``kubernetes-validate --strict -k 1.33.0 FILES`` (the real command, offline)."""
    return subprocess.run(
        [validator(), "--strict", "-k", K8S_VERSION, *map(str, files)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_profile(root: Path, source: str, name: str, **changes: str) -> Path:
    """A copy of a shipped profile under ``name`` with stack/sampler keys replaced or added."""
    folder = root / "deployments" / name
    shutil.copytree(root / "deployments" / source, folder)
    lines = (folder / ".env").read_text(encoding="utf-8").splitlines()
    changes = {"QRS_PROFILE": name, **changes}
    for key, value in changes.items():
        at = [i for i, line in enumerate(lines) if line.startswith(f"{key}=")]
        if at:
            lines[at[-1]] = f"{key}={value}"
        else:
            lines.append(f"{key}={value}")
    (folder / ".env").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


@pytest.fixture
def keyed_tp2(project: Path) -> Path:
    """A firefly-1 copy with QRS_TENSOR_PARALLEL_SIZE=2 and its API key in secrets.env."""
    folder = copy_profile(project, "firefly-1", "ff-tp2", QRS_TENSOR_PARALLEL_SIZE="2")
    (folder / "secrets.env").write_text(f"QR_GRPC_API_KEY={TEST_KEY}\n", encoding="utf-8")
    (folder / "secrets.env").chmod(0o600)
    return folder

