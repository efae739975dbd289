"""No row can make another pay or fail: grouped selection, per-row failures, forced stops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qr_sampler.diagnostics import TokenRecorder
from qr_sampler.entropy.mock import MockUniformEntropySource
from qr_sampler.sampler import SamplingBatch, TokenSampler
from qr_sampler.selection import (
    BOUNDED_K_LIMIT,
    SelectionParams,
    choose,
    force_rows,
    shape,
)
from qr_sampler.types import SamplingConfig
from tests.sampler.reference import filtered_distribution

VOCAB = 20_000


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, VOCAB, generator=torch.Generator().manual_seed(seed)) * 3


def test_a_full_vocabulary_row_does_not_widen_the_bounded_rows() -> None:
    """One request with top-k off used to make every row of the batch sort the vocabulary."""
    configs = [SamplingConfig(top_k=50)] * 3 + [SamplingConfig(top_k=0, top_p=0.9)]
    candidates = shape(_logits(4) * 10, SelectionParams.from_configs(configs))
    bounded, full = candidates.groups
    assert bounded.rows is not None and bounded.rows.tolist() == [0, 1, 2]
    assert bounded.probs.shape == (3, 50)  # the bounded rows' own k, not the vocabulary
    assert full.rows is not None and full.rows.tolist() == [3]
    # The full row materialises only the prefix that carries probability.
    assert full.probs.shape[1] < VOCAB


@pytest.mark.parametrize(("top_k", "top_p", "temperature"), [(0, 1.0, 1.0), (0, 0.95, 0.5),
                                                             (BOUNDED_K_LIMIT + 1, 1.0, 2.0)])
def test_the_full_vocabulary_group_matches_the_reference(
    top_k: int, top_p: float, temperature: float
) -> None:
    """Sorted in float32, float64 only on the prefix: still the exact filtered distribution
    (tokens past the prefix weigh < e^-60 and are below float64's resolution of the cdf)."""
    logits = _logits(2, seed=5).numpy() * 4  # wide: many tokens fall past the prefix
    cfg = SamplingConfig(fixed_temperature=temperature, top_k=top_k, top_p=top_p)
    candidates = shape(torch.from_numpy(logits), SelectionParams.from_configs([cfg, cfg]))
    for row in range(2):
        expected = filtered_distribution(logits[row], temperature, top_k, top_p, 0.0)
        got = np.zeros_like(expected)
        n = int(candidates.num_kept[row])
        got[candidates.token_ids[row, :n].numpy()] = candidates.probs[row, :n].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-15)


def test_mixed_groups_choose_what_each_row_would_alone() -> None:
    logits = _logits(5, seed=2)
    configs = [SamplingConfig(top_k=0, top_p=0.8), SamplingConfig(top_k=7),
               SamplingConfig(fixed_temperature=0.0), SamplingConfig(top_k=2000, top_p=0.99),
               SamplingConfig(temperature_strategy="edt", top_k=0)]  # fmt: skip
    u = torch.tensor([0.1, 0.5, 0.9, 0.7, 0.3], dtype=torch.float64)
    together = choose(shape(logits, SelectionParams.from_configs(configs)), u).token_ids
    for row, cfg in enumerate(configs):
        alone = choose(shape(logits[row : row + 1], SelectionParams.from_configs([cfg])),
                       u[row : row + 1]).token_ids
        assert int(alone[0]) == int(together[row])


def test_a_row_without_a_finite_logit_is_left_to_the_engine_alone() -> None:
    recorder = TokenRecorder(log_level="none")
    sampler = TokenSampler(MockUniformEntropySource(seed=4), recorder)
    logits = _logits(3)
    logits[1] = float("-inf")
    broken = logits[1].clone()
    result = sampler.sample(logits, SamplingBatch.build([SamplingConfig()] * 3, ["a", "b", "c"]))
    assert result.device_token_ids[1] == -1
    assert torch.equal(logits[1], broken)  # untouched: vLLM's own sampler takes it
    assert all(torch.isinf(logits[r]).sum() == VOCAB - 1 for r in (0, 2))  # neighbours forced
    records = recorder.recent()
    assert [r.source for r in records] == ["mock_uniform", "vllm", "mock_uniform"]
    assert records[1].token_id == -1 and records[1].fallback
    assert "finite" in records[1].fallback_reason


def test_force_rows_on_the_host_takes_the_one_fill_path_only_when_every_row_is_forced() -> None:
    logits = torch.randn(3, 50)
    before = logits.clone()
    force_rows(logits, torch.tensor([-1, -1, -1]))
    assert torch.equal(logits, before)
    force_rows(logits, torch.tensor([3, 4, 5]))
    assert logits.argmax(dim=1).tolist() == [3, 4, 5] and torch.isinf(logits).sum() == 3 * 49


def test_greedy_rows_cost_no_entropy_and_keep_choosing_when_the_source_fails() -> None:
    from qr_sampler.entropy.fallback import FallbackEntropySource
    from tests.sampler.test_sampler import BrokenSource

    sampler = TokenSampler(FallbackEntropySource(BrokenSource(), None))
    logits = _logits(2)
    argmax = logits.argmax(dim=1).tolist()
    batch = SamplingBatch.build([SamplingConfig(fixed_temperature=0.0)] * 2)
    result = sampler.sample(logits, batch)
    assert result.entropy is None and result.error is None and not result.forced_stop.any()
    assert logits.argmax(dim=1).tolist() == argmax
