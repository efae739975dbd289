"""The compiled host kernels against the tensor path they replace on a CPU, and their warm-up.

The tensor path is what accelerators run; the kernels must give the same distributions, the
same choices and the same amplified u. Seeds are fixed; float64 results agree to rounding.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from qr_sampler import host_kernels, omp_team
from qr_sampler.amplification import amplify
from qr_sampler.selection import Candidates, Selection, SelectionParams, choose, shape
from qr_sampler.types import UNIFORM_BYTE_STD, SamplingConfig

pytestmark = pytest.mark.skipif(not host_kernels.ready(), reason="numba is not installed")


def _mixed_batch(rows: int, vocab: int, seed: int) -> tuple[torch.Tensor, list[SamplingConfig]]:
    """Rows with every kind of setting and a few hostile logits rows."""
    rng = np.random.default_rng(seed)
    logits = torch.from_numpy(rng.normal(0, 3, size=(rows, vocab)).astype(np.float32))
    logits[1] = logits[1].bfloat16().float()  # many ties, as bf16 logits have
    logits[2, ::7] = float("nan")  # some NaN logits
    logits[3] = float("-inf")  # nothing finite
    logits[4, :-5] = float("-inf")  # five tokens left
    configs = []
    for _ in range(rows):
        temperature = float(rng.choice([0.0, 0.3, 0.7, 1.0, 1.8]))
        configs.append(
            SamplingConfig(
                fixed_temperature=temperature,
                temperature_strategy="edt" if rng.random() < 0.2 else "fixed",
                top_k=int(rng.choice([1, 3, 50, 200, 0])),
                top_p=float(rng.choice([1.0, 0.95, 0.6])),
                min_p=float(rng.choice([0.0, 0.02, 0.3])),
            )
        )
    return logits, configs


def _run(logits: torch.Tensor, params: SelectionParams, u: torch.Tensor,
         kernels: bool) -> tuple[Candidates, Selection]:  # fmt: skip
    saved = host_kernels.ENABLED
    host_kernels.ENABLED = kernels
    try:
        candidates = shape(logits.clone(), params)
        return candidates, choose(candidates, u)
    finally:
        host_kernels.ENABLED = saved


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("vocab", [64, 1024, 40_000])
def test_kernels_choose_what_the_tensor_path_chooses(seed: int, vocab: int) -> None:
    rows = 48
    logits, configs = _mixed_batch(rows, vocab, seed)
    params = SelectionParams.from_configs(configs)
    for u_value in (None, 1e-10, 0.5, 1 - 1e-10):
        u = (torch.from_numpy(np.random.default_rng(seed + 1).random(rows))
             if u_value is None else torch.full((rows,), u_value, dtype=torch.float64))  # fmt: skip
        fast, fast_pick = _run(logits, params, u, kernels=True)
        slow, slow_pick = _run(logits, params, u, kernels=False)
        assert torch.equal(fast_pick.token_ids, slow_pick.token_ids)
        # Rows left to the engine (-1) have no meaningful rank or probability.
        valid = slow_pick.token_ids >= 0
        assert torch.equal(fast_pick.ranks[valid], slow_pick.ranks[valid])
        torch.testing.assert_close(fast_pick.probs[valid], slow_pick.probs[valid],
                                   rtol=1e-12, atol=1e-15)  # fmt: skip
        assert torch.equal(fast.num_kept, slow.num_kept)
        torch.testing.assert_close(fast.probs, slow.probs, rtol=1e-12, atol=1e-15,
                                   equal_nan=True)  # fmt: skip
    assert int(slow_pick.token_ids[3]) == -1  # nothing finite: left to the engine


def test_kernels_apply_each_filter_by_its_definition() -> None:
    """Hand-checked rows: min-p drops below the floor, top-p keeps the prefix whose mass before
    is below p, greedy keeps the first candidate, a NaN row stays NaN."""
    probs = np.array([
        [0.5, 0.3, 0.15, 0.05],  # min-p 0.2: floor 0.1 drops 0.05
        [0.5, 0.3, 0.15, 0.05],  # top-p 0.8: mass before = 0, .5, .8 → keeps two
        [0.5, 0.3, 0.15, 0.05],  # greedy
        [np.nan] * 4,
    ])  # fmt: skip
    cdf, kept = host_kernels.filter_rows(
        probs, np.array([0.2, 0, 0, 0]), np.array([np.inf, 0.8, np.inf, np.inf]),
        np.array([False, False, True, False]),
    )  # fmt: skip
    np.testing.assert_allclose(probs[0], [0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0])
    np.testing.assert_allclose(probs[1], [0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0])
    assert probs[2].tolist() == [1.0, 0.0, 0.0, 0.0] and cdf[2].tolist() == [1.0] * 4
    assert np.isnan(probs[3]).all() and kept.tolist() == [3, 2, 1, 4]
    np.testing.assert_allclose(cdf[1], [0.625, 1.0, 1.0, 1.0])


def test_amplify_kernel_matches_the_definition_path() -> None:
    """Same sample means and z exactly (integer sums), u to float64 rounding; rows of any size
    and per-row population parameters. (A row without bytes never reaches amplify: the kernel
    gives it NaN.)"""
    rng = np.random.default_rng(5)
    sizes = np.array([1, 7, 1024, 20_480, 333, 4096], dtype=np.int64)
    data = os.urandom(int(sizes.sum()))
    mean = rng.uniform(120, 135, size=len(sizes))
    std = np.full(len(sizes), UNIFORM_BYTE_STD)
    fast = amplify(data, sizes, mean, std, 1e-10)
    host_kernels.ENABLED = False
    try:
        slow = amplify(data, sizes, mean, std, 1e-10)
    finally:
        host_kernels.ENABLED = True
    np.testing.assert_array_equal(fast.sample_mean, slow.sample_mean)
    np.testing.assert_array_equal(fast.z, slow.z)
    np.testing.assert_allclose(fast.u, slow.u, rtol=0, atol=4e-16)
    empty = host_kernels.amplify_rows(np.frombuffer(b"a", np.uint8), np.array([0, 1]),
                                      mean[:2], std[:2], np.full(2, 1e-10))  # fmt: skip
    assert np.isnan(empty[0][0]) and not np.isnan(empty[0][1])


def test_a_real_step_compiles_nothing_after_the_engine_warmed_up() -> None:
    """EngineStep compiles the kernels for the argument types a step uses, so no request pays
    a compilation (seconds) in its first step."""
    from qr_sampler.engine.step import EngineStep
    from qr_sampler.settings import settings_from_mapping

    step = EngineStep(settings_from_mapping({"QR_LOG_LEVEL": "none", "QR_METRICS_PORT": "0"}))
    dispatchers = host_kernels._kernels()
    assert dispatchers is not None
    compiled = [len(d.signatures) for d in dispatchers]
    assert all(compiled)
    params = [SamplingConfig(top_k=50, top_p=0.9), SamplingConfig(top_k=0, min_p=0.05),
              SamplingConfig(fixed_temperature=0.0), SamplingConfig(top_k=0)]  # fmt: skip
    from qr_sampler.sampler import SamplingBatch

    batch = SamplingBatch.build(params)
    logits = torch.randn(4, 2000)
    logits[:, 1000:] -= 1000.0  # the full group keeps a prefix: its token ids are a slice
    result = step.sampler.sample(logits, batch)
    step.close()
    assert (result.device_token_ids >= 0).all()
    assert [len(d.signatures) for d in dispatchers] == compiled


def test_qr_host_kernels_false_puts_the_engine_on_the_tensor_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from qr_sampler.engine.step import EngineStep
    from qr_sampler.settings import settings_from_mapping

    monkeypatch.setattr(host_kernels, "ENABLED", True)  # restored after the test
    monkeypatch.setattr(omp_team, "ENABLED", True)
    step = EngineStep(settings_from_mapping({"QR_HOST_KERNELS": "false", "QR_LOG_LEVEL": "none",
                                             "QR_METRICS_PORT": "0"}))  # fmt: skip
    step.close()
    assert not host_kernels.ready() and omp_team.team() is None  # torch's team with them


def test_two_threads_may_load_the_kernels_at_once() -> None:
    """The first step can reach the kernels from the engine thread and the fetch thread at the
    same time; loading them twice (or at once) must work."""
    import threading

    host_kernels._kernels.cache_clear()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            assert host_kernels._kernels() is not None
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    host_kernels._kernels.cache_clear()
    load()  # once more, with the helpers already compiled
    assert errors == []
    host_kernels.warm_up()
