"""Hostile per-request values against vLLM's real ``SamplingParams`` and the real V1 loader.

Before: ``qr_top_k=2**63`` passed validation and overflowed inside the step, handing every row
of the batch (other users' too) to vLLM's PRNG; ``qr_fixed_temperature=1e-320`` picked an
unlikely token; ``qr_sample_count=10**7`` could drain a metered QRNG's day in 50 tokens.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from vllm import SamplingParams
from vllm.config import VllmConfig
from vllm.v1.sample.logits_processor import BatchUpdate, build_logitsprocs

from qr_sampler.engine.requests import (
    REQUEST_ID_KEY,
    SEED_BASE_KEY,
    choice_index_of,
    request_state,
    stop_token_of,
)
from qr_sampler.engine.runtime import engine_settings
from qr_sampler.engine.v1 import QRSamplerV1Processor
from qr_sampler.errors import RequestArgumentError


@pytest.fixture
def processor(monkeypatch: pytest.MonkeyPatch) -> Iterator[QRSamplerV1Processor]:
    monkeypatch.setenv("QR_ENTROPY_SOURCE_TYPE", "mock_uniform")
    monkeypatch.setenv("QR_MOCK_SEED", "3")
    engine_settings.cache_clear()
    procs = build_logitsprocs(VllmConfig(), torch.device("cpu"), False, False)
    (proc,) = [p for p in procs.all if isinstance(p, QRSamplerV1Processor)]
    yield proc
    proc.step.close()
    engine_settings.cache_clear()


@pytest.mark.parametrize(
    ("xargs", "fragment"),
    [
        ({"qr_top_k": 2**63}, "qr_top_k"),
        ({"qr_top_k": 2**31}, "2147483647"),
        ({"qr_sample_count": 10**7}, "QR_MAX_REQUEST_SAMPLE_COUNT"),
        ({"qr_sample_count": 65_537}, "QR_MAX_REQUEST_SAMPLE_COUNT"),
        ({"qr_edt_min_temp": 1e-320}, "qr_edt_min_temp"),
        ({"qr_fixed_temperature": 1e300}, "qr_fixed_temperature"),
    ],
)
def test_values_that_could_overflow_starve_or_drain_are_refused(
    processor: QRSamplerV1Processor, xargs: dict[str, object], fragment: str
) -> None:
    with pytest.raises(ValueError, match=fragment) as caught:
        processor.validate_params(SamplingParams(extra_args=xargs))
    assert isinstance(caught.value, RequestArgumentError)  # → HTTP 400 with this message


def test_the_operator_raises_the_sample_count_ceiling(
    processor: QRSamplerV1Processor, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QR_MAX_REQUEST_SAMPLE_COUNT", "200000")
    engine_settings.cache_clear()
    processor.validate_params(SamplingParams(extra_args={"qr_sample_count": 150_000}))


def test_a_temperature_too_small_to_divide_by_is_greedy_and_harmless_to_the_batch(
    processor: QRSamplerV1Processor,
) -> None:
    hostile = SamplingParams(extra_args={REQUEST_ID_KEY: "tiny-t", "qr_fixed_temperature": 1e-320})
    processor.validate_params(hostile)  # accepted: treated as greedy, as vLLM does
    assert request_state(hostile, engine_settings()).config.is_greedy
    neighbour = SamplingParams(extra_args={REQUEST_ID_KEY: "other", "qr_top_k": 5})
    logits = torch.randn(2, 300, generator=torch.Generator().manual_seed(1))
    argmax = int(logits[0].argmax())
    processor.update_state(BatchUpdate(2, [], [(0, hostile, [1], []), (1, neighbour, [1], [])], []))
    out = processor.apply(logits)
    assert int(out[0].argmax()) == argmax and torch.isinf(out[0]).sum() == 299
    top5 = torch.topk(logits[1], 5).indices.tolist()
    assert int(out[1].argmax()) in top5  # the neighbour is still sampled, from its own top-5
    assert processor.step.errors == 0


def test_a_huge_standard_top_k_is_clamped_not_overflowed(processor: QRSamplerV1Processor) -> None:
    params = SamplingParams(top_k=2**40, extra_args={REQUEST_ID_KEY: "big-k"})
    state = request_state(params, engine_settings())
    assert state.config.top_k == 2**31 - 1
    processor.update_state(BatchUpdate(1, [], [(0, params, [1], [])], []))
    out = processor.apply(torch.randn(1, 64))
    assert torch.isinf(out[0]).sum() == 63 and processor.step.errors == 0


def test_the_stop_token_is_the_requests_eos_else_its_first_stop_token() -> None:
    params = SamplingParams(stop_token_ids=[11, 12])
    assert stop_token_of(params) == 11
    params.update_from_generation_config({}, eos_token_id=2)
    assert stop_token_of(params) == 2
    assert stop_token_of(SamplingParams(ignore_eos=True)) == -1


def test_n_choices_are_told_apart_by_vllms_per_choice_seeds(
    processor: QRSamplerV1Processor,
) -> None:
    """vLLM clones an n > 1 request per choice with seed + index (``ParentRequest``)."""
    from vllm.v1.engine.parallel_sampling import ParentRequest

    parent = SamplingParams(n=3)
    processor.validate_params(parent)
    base = parent.extra_args[SEED_BASE_KEY]
    assert parent.seed == base
    request = type("Request", (), {"request_id": "r", "external_req_id": "r", "params": parent})
    fanned = ParentRequest(request())  # type: ignore[arg-type]
    children = [fanned.get_child_info(i)[1] for i in range(3)]
    assert [choice_index_of(c) for c in children] == [0, 1, 2]
    assert choice_index_of(SamplingParams()) == 0
