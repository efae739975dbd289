"""Per-token cost of the sampler core, next to a baseline measured in the same run.

Workload (issue 2): entropy from the ``system`` source, 20,480 bytes per token, vocabulary
151,936, top-k 50 / top-p 0.9, temperature 0.7, batch 1 and batch 32, float32 logits.

Baseline: a plain numpy one-pass row max over the same logits — roughly the cost of reading
every logit once, the least any sampler must do. Forcing overwrites the logits, so each
iteration restores them first, outside the timed region.

Run: ``python benchmarks/bench_sampler.py [--iterations N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from qr_sampler.amplification import amplify
from qr_sampler.entropy.system import SystemEntropySource
from qr_sampler.sampler import SamplingBatch, TokenSampler
from qr_sampler.selection import choose, force_tokens, shape
from qr_sampler.types import SamplingConfig

VOCAB = 151_936
SAMPLE_COUNT = 20_480


def _median_us(
    fn: Callable[[], object], iterations: int, setup: Callable[[], object] | None = None
) -> float:
    """Median wall time of ``fn`` in µs; ``setup`` runs before each call, outside the timing."""
    for _ in range(max(3, iterations // 10)):  # warm-up: allocator, caches, thread pool
        if setup is not None:
            setup()
        fn()
    times = []
    for _ in range(iterations):
        if setup is not None:
            setup()
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000.0


def bench_batch(rows: int, iterations: int) -> dict[str, float]:
    gen = torch.Generator().manual_seed(rows)
    pristine = torch.randn(rows, VOCAB, generator=gen) * 3.0
    work = pristine.clone()
    config = SamplingConfig(fixed_temperature=0.7, top_k=50, top_p=0.9, sample_count=SAMPLE_COUNT)
    batch = SamplingBatch.build([config] * rows)
    sampler = TokenSampler(SystemEntropySource())
    counts = (SAMPLE_COUNT,) * rows
    data = os.urandom(SAMPLE_COUNT * rows)
    half = torch.full((rows,), 0.5, dtype=torch.float64)
    chosen = choose(shape(pristine, batch.params), half).token_ids

    def restore() -> None:  # forcing overwrote the logits: put them back, untimed
        work.copy_(pristine)

    as_numpy = pristine.numpy()
    baseline = _median_us(lambda: as_numpy.max(axis=1), iterations)
    core = _median_us(lambda: sampler.sample(work, batch), iterations, setup=restore)
    stages = {
        "shape": _median_us(lambda: shape(pristine, batch.params), iterations),
        "entropy": _median_us(lambda: sampler.source.get_random_bytes_batch(counts), iterations),
        "amplify": _median_us(
            lambda: amplify(data, counts, batch.mean, batch.std, batch.epsilon), iterations
        ),
        "force": _median_us(lambda: force_tokens(work, chosen), iterations),
    }
    return {
        "rows": rows,
        "baseline_us_per_token": baseline / rows,
        "core_us_per_token": core / rows,
        "ratio_core_to_baseline": core / baseline,
        **{f"{k}_us_per_token": v / rows for k, v in stages.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    results = [bench_batch(rows, args.iterations) for rows in (1, 32)]
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, numpy {np.__version__}; "
        f"vocab {VOCAB}, {SAMPLE_COUNT} bytes/token, top-k 50, top-p 0.9; medians"
    )
    for r in results:
        print(
            f"batch {r['rows']:>2}: core {r['core_us_per_token']:7.1f} µs/token   "
            f"baseline (numpy row max) {r['baseline_us_per_token']:6.1f} µs/token   "
            f"ratio {r['ratio_core_to_baseline']:5.2f}x"
        )
        print(
            f"          stages µs/token: shape {r['shape_us_per_token']:.1f}, "
            f"entropy {r['entropy_us_per_token']:.1f}, amplify {r['amplify_us_per_token']:.1f}, "
            f"force {r['force_us_per_token']:.1f}"
        )


if __name__ == "__main__":
    main()
