"""The top-k's order, on the host kernels and on the tensor path (every test runs both):
larger value first, NaN (either sign) first of all, equal values (−0 = +0) by the lower token
id — against a plain numpy sort.

A record's rank must be replayable from its logits on any device, and bf16 logits tie often,
so the order among equal values is part of the result, not an accident of ``torch.topk``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qr_sampler import host_kernels, omp_team
from qr_sampler.selection import SelectionParams, shape, top_candidates
from qr_sampler.types import SamplingConfig


@pytest.fixture(autouse=True, params=["host-kernels", "tensor-path"])
def _path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "host-kernels" and not host_kernels.ready():
        pytest.skip("numba is not installed")
    monkeypatch.setattr(host_kernels, "ENABLED", request.param == "host-kernels")


def reference_top_k(row: np.ndarray, k: int) -> np.ndarray:
    """Token ids of the k best: NaN first (by id), then value descending, then id."""
    values = row.astype(np.float64)
    nan = np.isnan(values)
    ids = np.arange(len(row))
    order = np.lexsort((ids, -np.where(nan, 0.0, values), ~nan))
    return order[:k]


def _rows(vocab: int, rng: np.random.Generator) -> np.ndarray:
    """Rows that stress the order: ties, NaNs, infinities, signed zeros, sorted rows."""
    normal = rng.normal(0, 3, size=vocab).astype(np.float32)
    rows = [
        normal,
        torch.from_numpy(normal).bfloat16().float().numpy(),  # bf16 ties
        np.round(normal * 2) / 2,  # heavy ties
        np.linspace(-5, 5, vocab, dtype=np.float32),  # ascending: the best come last
        np.linspace(5, -5, vocab, dtype=np.float32),
        np.zeros(vocab, dtype=np.float32),  # every token ties
        np.full(vocab, -np.inf, dtype=np.float32),  # nothing finite
    ]
    few = np.full(vocab, -np.inf, dtype=np.float32)
    few[[vocab - 1, 3, vocab // 2]] = [1.0, 2.0, 1.0]  # fewer finite tokens than k
    rows.append(few)
    nans = normal.copy()
    nans[::97] = np.nan  # more NaNs than k at the larger vocabularies
    rows.append(nans)
    one_nan = normal.copy()
    one_nan[vocab // 3] = np.nan
    one_nan[vocab // 5] = np.inf
    rows.append(one_nan)
    negative_nan = normal.copy()
    negative_nan.view(np.uint32)[7] = 0xFFC00000  # the x86 default NaN has its sign bit set
    rows.append(negative_nan)
    zeros = np.full(vocab, -1.0, dtype=np.float32)
    zeros[[11, 5, 900 % vocab]] = [0.0, -0.0, 0.0]  # −0 = +0: by id
    rows.append(zeros)
    return np.stack(rows)


@pytest.mark.parametrize("vocab", [1_000, 2_000, 40_000, 151_936, 151_937])
@pytest.mark.parametrize("k", [1, 50, 200])
def test_top_k_is_the_reference_order(vocab: int, k: int) -> None:
    rows = _rows(vocab, np.random.default_rng(vocab + k))
    rows[2, : vocab // 2] = np.nan if k == 200 else rows[2, : vocab // 2]  # NaN-heavy row
    values, ids = top_candidates(torch.from_numpy(rows), k)
    for r, row in enumerate(rows):
        expected = reference_top_k(row, k)
        assert ids[r].tolist() == expected.tolist(), f"row {r}"
        np.testing.assert_array_equal(values[r].numpy(), row[expected])


def test_bf16_logits_follow_the_same_order() -> None:
    rows = _rows(40_000, np.random.default_rng(5))
    logits = torch.from_numpy(rows).bfloat16()
    values, ids = top_candidates(logits, 50)
    for r, row in enumerate(logits.float().numpy()):
        assert ids[r].tolist() == reference_top_k(row, 50).tolist(), f"row {r}"
    assert values.dtype == torch.bfloat16


def test_a_strided_view_follows_the_same_order() -> None:
    rows = _rows(1_000, np.random.default_rng(9))
    logits = torch.from_numpy(np.ascontiguousarray(rows.T)).T  # columns contiguous
    _, ids = top_candidates(logits, 50)
    for r, row in enumerate(rows):
        assert ids[r].tolist() == reference_top_k(row, 50).tolist(), f"row {r}"


def test_more_ties_at_the_k_th_value_than_k_keep_the_lowest_ids() -> None:
    """``torch.topk`` may take any of the tied tokens; the order takes the lowest ids."""
    row = np.full(1_000, -3.0, dtype=np.float32)
    row[::7] = 1.0  # 143 tokens tie for the top; k = 50 of them
    row[500] = 2.0
    _, ids = top_candidates(torch.from_numpy(row[None, :]), 50)
    assert ids[0].tolist() == [500, *range(0, 7 * 49, 7)]


def test_the_full_vocabulary_group_orders_ties_by_id() -> None:
    """top-k off: the float32 sort is stable, so equal logits keep their id order too."""
    logits = torch.zeros(1, 300)
    logits[0, 200] = 1.0
    params = SelectionParams.from_configs([SamplingConfig(fixed_temperature=1.0, top_k=0,
                                                          top_p=1.0)])  # fmt: skip
    candidates = shape(logits, params)
    assert candidates.token_ids[0, :6].tolist() == [200, 0, 1, 2, 3, 4]



@pytest.mark.parametrize("vocab", [2_000, 151_937])
def test_winners_at_the_edges_of_blocks(vocab: int) -> None:
    """The best tokens sit last in their 64-token blocks and in the short tail block."""
    row = np.full(vocab, -1.0, dtype=np.float32)
    winners = [64 * 3 + 63, 64 * 17 + 63, vocab - 1, 64 * 5]
    row[winners] = [5.0, 4.0, 3.0, 2.0]
    _, ids = top_candidates(torch.from_numpy(row[None, :]), 4)
    assert ids[0].tolist() == winners


@pytest.mark.parametrize("vocab", [20_000, 2_000], ids=["block-pruned", "direct"])
@pytest.mark.parametrize("team", [True, False], ids=["torch-team", "helper-threads"])
def test_rows_shared_between_threads_keep_their_order(
    team: bool, vocab: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows taken in turn by torch's OpenMP team's threads, or without a team (from
    :data:`host_kernels.SPLIT_FROM_ROWS` rows) by helper threads (the block-pruned top-k) or
    this thread (the direct one)."""
    monkeypatch.setattr(omp_team, "ENABLED", team)
    stressed = _rows(vocab, np.random.default_rng(3))
    rows = np.concatenate([stressed] * (host_kernels.SPLIT_FROM_ROWS // len(stressed) + 1))
    assert len(rows) >= host_kernels.SPLIT_FROM_ROWS
    _, ids = top_candidates(torch.from_numpy(rows), 50)
    for r, row in enumerate(rows):
        assert ids[r].tolist() == reference_top_k(row, 50).tolist(), f"row {r}"


@pytest.mark.parametrize("vocab", [64 * 40, 64 * 40 + 17])
@pytest.mark.parametrize("k_from_blocks", [0, 1, 3])
def test_the_block_kernel_at_k_near_the_number_of_blocks(vocab: int, k_from_blocks: int) -> None:
    """The kernel directly, whichever path the fixture picked (the tensor path takes a direct
    top-k there): its lower bound splits the block maxima into k groups, one block each at
    k = blocks; a short tail block too."""
    pytest.importorskip("numba")
    rows = _rows(vocab, np.random.default_rng(vocab + k_from_blocks))
    blocks = -(-vocab // 64)
    k = blocks - k_from_blocks
    padded = np.full((len(rows), blocks * 64), -np.inf, dtype=np.float32)
    padded[:, :vocab] = rows
    maxima = padded.reshape(len(rows), blocks, 64).max(axis=2)  # NaN propagates, as torch's
    values, ids = host_kernels.top_k(np.ascontiguousarray(rows), maxima, 64, k)
    for r, row in enumerate(rows):
        assert ids[r].tolist() == reference_top_k(row, k).tolist(), f"row {r}"
        assert np.array_equal(values[r], row[ids[r]], equal_nan=True)
