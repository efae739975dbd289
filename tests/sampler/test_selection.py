"""Selection math: exact candidates, the filters, temperature strategies and forcing."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qr_sampler import host_kernels
from qr_sampler.selection import (
    SelectionParams,
    choose,
    edt_temperature,
    force_tokens,
    shannon_entropy,
    shape,
    top_candidates,
)
from qr_sampler.types import SamplingConfig
from tests.sampler.reference import filtered_distribution


@pytest.fixture(autouse=True, params=["host-kernels", "tensor-path"])
def _selection_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test here runs on both paths: the compiled host kernels (a CPU with numba) and
    the tensor path (what accelerators take, and hosts without numba)."""
    if request.param == "host-kernels" and not host_kernels.ready():
        pytest.skip("numba is not installed")
    monkeypatch.setattr(host_kernels, "ENABLED", request.param == "host-kernels")


@pytest.mark.parametrize("vocab", [151_936, 151_937, 49_152, 32_000, 5_000, 300, 64])
@pytest.mark.parametrize("k", [1, 2, 50, 300])
def test_top_candidates_equals_torch_topk(vocab: int, k: int) -> None:
    if k > vocab:
        pytest.skip("k larger than the vocabulary")
    gen = torch.Generator().manual_seed(vocab + k)
    logits = torch.randn(4, vocab, generator=gen) * 4
    logits[1, -3:] = 50.0  # winners in the partial tail block
    logits[2, :] = torch.linspace(
        -5, 5, vocab
    )  # strictly increasing: winners all in the last blocks
    values, ids = top_candidates(logits, k)
    ref_values, _ = torch.topk(logits, k, dim=1)
    assert torch.equal(values, ref_values)
    assert torch.equal(logits.gather(1, ids), values)  # ids point at those values
    assert all(len(set(row)) == k for row in ids.tolist())  # no duplicates


def test_top_candidates_with_masked_tokens() -> None:
    logits = torch.full((2, 10_000), float("-inf"))
    logits[0, [5, 7000, 9999]] = torch.tensor([1.0, 3.0, 2.0])
    values, ids = top_candidates(logits, 50)
    assert ids[0, :3].tolist() == [7000, 9999, 5]
    assert torch.isinf(values[0, 3:]).all()


def _params(*configs: SamplingConfig) -> SelectionParams:
    return SelectionParams.from_configs(list(configs))


def test_u_extremes_pick_first_and_last_kept_candidate() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]])
    params = _params(SamplingConfig(fixed_temperature=1.0, top_k=3, top_p=1.0))
    cand = shape(logits, params)
    assert cand.token_ids[0, :3].tolist() == [1, 3, 2]
    assert int(cand.num_kept[0]) == 3
    assert int(choose(cand, torch.tensor([1e-10])).token_ids[0]) == 1
    assert int(choose(cand, torch.tensor([1 - 1e-10])).token_ids[0]) == 2


def test_choose_uses_the_cdf_boundaries_exactly() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64))
    params = _params(SamplingConfig(fixed_temperature=1.0, top_k=0, top_p=1.0))
    cand = shape(logits, params)
    picks = choose(cand, torch.tensor([0.49, 0.51, 0.79, 0.81]).repeat(1)[:1]).token_ids
    assert picks.tolist() == [0]
    for u, expected in [(0.49, 0), (0.51, 1), (0.79, 1), (0.81, 2)]:
        assert int(choose(cand, torch.tensor([u], dtype=torch.float64)).token_ids[0]) == expected


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p", "min_p"),
    [
        (0.7, 50, 0.9, 0.0),
        (1.0, 0, 0.8, 0.0),
        (1.3, 20, 1.0, 0.05),
        (0.5, 0, 1.0, 0.0),
        (1.0, 100, 0.95, 0.02),
    ],
)
def test_filtered_probabilities_match_an_independent_reference(
    temperature: float, top_k: int, top_p: float, min_p: float
) -> None:
    rng = np.random.default_rng(7)
    logits = rng.normal(0, 2.5, size=(3, 2000)).astype(np.float32)
    cfg = SamplingConfig(fixed_temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p)
    cand = shape(torch.from_numpy(logits), _params(cfg, cfg, cfg))
    for row in range(3):
        expected = filtered_distribution(logits[row], temperature, top_k, top_p, min_p)
        got = np.zeros_like(expected)
        n = int(cand.num_kept[row])
        got[cand.token_ids[row, :n].numpy()] = cand.probs[row, :n].numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12)
        assert n == int((expected > 0).sum())


def test_greedy_rows_pick_the_argmax_whatever_u() -> None:
    logits = torch.randn(3, 1000, generator=torch.Generator().manual_seed(1))
    cfg = SamplingConfig(fixed_temperature=0.0)
    cand = shape(logits, _params(cfg, cfg, cfg))
    picks = choose(cand, torch.tensor([1e-10, 0.5, 1 - 1e-10], dtype=torch.float64))
    assert picks.token_ids.tolist() == logits.argmax(dim=1).tolist()
    assert picks.probs.tolist() == [1.0, 1.0, 1.0]


def test_mixed_rows_are_independent() -> None:
    """A row's result must not depend on which other rows share the batch."""
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 5000, generator=gen) * 2
    configs = [
        SamplingConfig(top_k=5),
        SamplingConfig(top_k=0, top_p=0.5),
        SamplingConfig(fixed_temperature=0.0),
        SamplingConfig(temperature_strategy="edt"),
    ]
    u = torch.tensor([0.3, 0.7, 0.9, 0.1], dtype=torch.float64)
    together = choose(shape(logits, _params(*configs)), u).token_ids
    for row, cfg in enumerate(configs):
        alone = choose(shape(logits[row : row + 1], _params(cfg)), u[row : row + 1]).token_ids
        assert int(alone[0]) == int(together[row])


def test_edt_temperature_is_monotone_in_entropy_and_clamped() -> None:
    vocab = 1000
    sharpness = torch.linspace(20.0, 0.0, 40)  # from a peaked to a flat distribution
    base = torch.randn(vocab, generator=torch.Generator().manual_seed(5))
    logits = base.unsqueeze(0) * sharpness.unsqueeze(1)
    entropy = shannon_entropy(logits)
    assert torch.all(entropy[1:] >= entropy[:-1] - 1e-6)  # the fixture really spans H
    cfg = SamplingConfig(
        temperature_strategy="edt",
        edt_base_temp=1.0,
        edt_exponent=0.5,
        edt_min_temp=0.5,
        edt_max_temp=0.9,
    )
    params = _params(*[cfg] * 40)
    temps = edt_temperature(entropy, vocab, params)
    assert torch.all(temps[1:] >= temps[:-1])
    assert float(temps.min()) == pytest.approx(0.5) and float(temps.max()) == pytest.approx(0.9)
    # Flat distribution: H = ln V, so T = base (then clamped to max).
    flat = edt_temperature(
        torch.tensor([np.log(vocab)], dtype=torch.float64),
        vocab,
        _params(SamplingConfig(temperature_strategy="edt", edt_base_temp=0.5)),
    )
    assert float(flat[0]) == pytest.approx(0.5)


def test_rows_with_no_finite_logit_are_marked_invalid() -> None:
    logits = torch.randn(2, 500)
    logits[1] = float("-inf")
    cand = shape(logits, _params(SamplingConfig(), SamplingConfig()))
    assert cand.valid.tolist() == [True, False]


def test_nan_logits_are_never_chosen() -> None:
    logits = torch.zeros(1, 300)
    logits[0, 10] = float("nan")
    logits[0, 20] = 5.0
    cand = shape(logits, _params(SamplingConfig(fixed_temperature=1.0, top_k=5, top_p=1.0)))
    for u in (1e-10, 0.5, 1 - 1e-10):
        assert int(choose(cand, torch.tensor([u], dtype=torch.float64)).token_ids[0]) != 10


def test_force_tokens_makes_rows_one_hot_in_place() -> None:
    logits = torch.randn(3, 100)
    untouched = logits[1].clone()
    force_tokens(logits, torch.tensor([4, 9]), rows=torch.tensor([0, 2]))
    for row, token in [(0, 4), (2, 9)]:
        assert logits[row, token] == 0
        assert torch.isinf(logits[row]).sum() == 99
    assert torch.equal(logits[1], untouched)
    force_tokens(logits, torch.tensor([1, 2, 3]))
    assert logits.argmax(dim=1).tolist() == [1, 2, 3]


@pytest.mark.parametrize("top_k", [50, 0], ids=["bounded-group", "full-vocabulary-group"])
def test_a_row_with_every_token_masked_is_left_to_the_engine(top_k: int) -> None:
    """-inf stays -inf when NaN logits are cleaned (torch's nan_to_num would otherwise turn
    -inf into the dtype's lowest finite value and make a fully masked row look valid)."""
    logits = torch.randn(2, 3000)
    logits[1] = float("-inf")
    logits[0, 5:] = float("-inf")  # five tokens allowed
    params = _params(*[SamplingConfig(fixed_temperature=1.0, top_k=top_k, top_p=1.0)] * 2)
    picked = choose(shape(logits, params), torch.tensor([0.3, 0.3], dtype=torch.float64))
    assert int(picked.token_ids[1]) == -1
    assert 0 <= int(picked.token_ids[0]) < 5
