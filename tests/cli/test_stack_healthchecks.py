"""The healthcheck commands in the Compose files work, run here against loopback servers.

Compose runs them inside the containers; here the same code runs on the host with the port
swapped for a free loopback port: the reference entropy server's grpc.health.v1 check (urandom
profile) and vLLM's ``/health`` check (base stack).
"""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO_ROOT


def healthcheck_code(compose_file: Path, service: str) -> str:
    test = yaml.safe_load(compose_file.read_text())["services"][service]["healthcheck"]["test"]
    assert test[0] == "CMD" and test[2] == "-c"
    return str(test[3])


def run_check(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)


def test_entropy_server_healthcheck_passes_against_the_reference_server() -> None:
    from qr_sampler.server import EntropyServer, ServerConfig

    code = healthcheck_code(
        REPO_ROOT / "deployments/urandom/compose.override.yaml", "entropy-server"
    )
    assert "127.0.0.1:50051" in code
    with EntropyServer(ServerConfig(address="127.0.0.1:0")) as server:
        proc = run_check(code.replace("127.0.0.1:50051", server.address))
    assert proc.returncode == 0, proc.stderr


def test_entropy_server_healthcheck_fails_without_a_server() -> None:
    code = healthcheck_code(
        REPO_ROOT / "deployments/urandom/compose.override.yaml", "entropy-server"
    )
    proc = run_check(code.replace("127.0.0.1:50051", "127.0.0.1:1"))
    assert proc.returncode != 0


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_vllm_healthcheck_calls_health(health_server: str) -> None:
    code = healthcheck_code(REPO_ROOT / "deployments/compose.yaml", "vllm")
    assert "127.0.0.1:8000/health" in code
    assert run_check(code.replace("127.0.0.1:8000", health_server)).returncode == 0
    broken = code.replace("127.0.0.1:8000/health", f"{health_server}/missing")
    assert run_check(broken).returncode != 0
