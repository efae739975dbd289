"""Per-token cost of the plugin's step, next to baselines measured in the same run.

Workloads (issue 14):

- **full step**, batch 1 / 32 / 256, vocabulary 151,936, float32 logits, top-k 50, top-p 0.9,
  temperature 0.7, 20,480 bytes of ``system`` entropy per token. *Ours* is our V1 processor's
  ``apply`` as vLLM's V1 runner calls it (built by vLLM's own loader, requests added through
  vLLM's ``BatchUpdate``); without vLLM installed, the engine-neutral ``TokenSampler`` on the
  same batch. *Baseline*: a sampler in the style of the fastest public implementation before
  ours — numpy, one row at a time: ``os.urandom`` per token, byte mean → z → u, ``argpartition``
  top-k, softmax, top-p, sort, cdf search, then the row forced one-hot.
- **host bookkeeping**, batch 256, vocabulary 1,024 (the tensor math is negligible there), one
  request replaced per step as in continuous batching, 1,024 bytes per token from a source that
  hands out pre-drawn bytes (so neither side pays for randomness). *Baseline*: a minimal torch
  sampler on the same logits (top-k, temperature, top-p, multinomial, one-hot).
- ``--device cuda``: the same full-step workload on a GPU, ours next to vLLM's own ``Sampler``
  on the same logits (its top-k/top-p and random draw). CI runs the CPU path.
- **system source**: its bytes through the vDSO's getrandom next to one getrandom system call
  per request (``os.urandom``), per token (20,480 bytes) and per batch of 32; and a batch's
  bytes right after a parallel torch operation, on torch's OpenMP team vs by one thread.

Ours and its baseline are timed in alternating rounds, so a drift of the machine's speed hits
both. Forcing may overwrite the logits (our canvas leaves them alone, the baselines do not), so
each iteration restores them first, outside the timed region.
Run: ``python benchmarks/bench_sampler.py [--iterations N] [--device cpu|cuda] [--json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from qr_sampler.entropy.base import EntropySource
from qr_sampler.types import UNIFORM_BYTE_STD, EntropyBatch

VOCAB = 151_936
SAMPLE_COUNT = 20_480
TOP_K, TOP_P, TEMPERATURE = 50, 0.9, 0.7


def _median_us(fn: Callable[[], object], iterations: int,
               setup: Callable[[], object] | None = None) -> float:
    """Median wall time of ``fn`` in µs; ``setup`` runs before each call, outside the timing."""
    for _ in range(max(3, iterations // 10)):  # warm-up: allocator, caches, thread pools
        if setup is not None:
            setup()
        fn()
    times = []
    for _ in range(iterations):
        if setup is not None:
            setup()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter_ns()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000.0


def _paired_medians(ours: Callable[[], object], baseline: Callable[[], object], rounds: int,
                    setup: Callable[[], object], ours_per_round: int = 1) -> tuple[float, float]:
    """Median µs of ``ours`` and ``baseline``, measured in alternating rounds (``ours`` is run
    ``ours_per_round`` times per round), so both see the same machine: on a shared VM the
    speed drifts by tens of percent within a minute, and measuring one after the other would
    put that drift into the ratio."""
    ours_times: list[int] = []
    base_times: list[int] = []
    for i in range(rounds + 2):  # the first two rounds warm up both
        for _ in range(ours_per_round):
            setup()
            start = time.perf_counter_ns()
            ours()
            if i >= 2:
                ours_times.append(time.perf_counter_ns() - start)
        setup()
        start = time.perf_counter_ns()
        baseline()
        if i >= 2:
            base_times.append(time.perf_counter_ns() - start)
    return statistics.median(ours_times) / 1000.0, statistics.median(base_times) / 1000.0


# --- the baseline: numpy, one row at a time --------------------------------------------------

def numpy_row_sampler(logits: np.ndarray, forced: np.ndarray, pre_drawn: bytes = b"") -> None:
    """Choose and force every row of ``logits`` [B, V] one at a time (writes ``forced``).

    ``pre_drawn`` (optional) replaces ``os.urandom`` with bytes drawn beforehand."""
    for row in range(logits.shape[0]):
        raw = (pre_drawn[row * SAMPLE_COUNT : (row + 1) * SAMPLE_COUNT] if pre_drawn
               else os.urandom(SAMPLE_COUNT))
        data = np.frombuffer(raw, dtype=np.uint8)
        z = (data.mean() - 127.5) / (UNIFORM_BYTE_STD / math.sqrt(SAMPLE_COUNT))
        u = min(max(0.5 * math.erfc(-z / math.sqrt(2)), 1e-10), 1 - 1e-10)
        x = logits[row]
        top = np.argpartition(x, x.size - TOP_K)[x.size - TOP_K:]
        scaled = x[top].astype(np.float64) / TEMPERATURE
        p = np.exp(scaled - scaled.max())
        p /= p.sum()
        order = np.argsort(-p)
        p, top = p[order], top[order]
        before = np.cumsum(p) - p
        keep = before < TOP_P
        p, top = p[keep] / p[keep].sum(), top[keep]
        position = min(int(np.searchsorted(np.cumsum(p), u)), len(p) - 1)
        forced[row].fill(-np.inf)
        forced[row, top[position]] = 0.0


# --- ours: the V1 processor as vLLM calls it -------------------------------------------------

def _our_step(rows: int, vocab: int, sample_count: int, source: str, device: torch.device,
              provenance_dir: str = "") -> tuple[Callable[[torch.Tensor], Any], Callable[[], None]]:
    """(apply, replace_one): our processor's apply, and a continuous-batching batch update.

    ``provenance_dir``: write the hash-chained diagnostics file and the raw-byte archive there.
    """
    os.environ.update({
        "QR_ENTROPY_SOURCE_TYPE": "system", "QR_SAMPLE_COUNT": str(sample_count),
        "QR_TOP_K": str(TOP_K), "QR_TOP_P": str(TOP_P), "QR_FIXED_TEMPERATURE": str(TEMPERATURE),
        "QR_LOG_LEVEL": "none", "QR_METRICS_PORT": "0",
        "QR_DIAGNOSTICS_PATH": f"{provenance_dir}/diag.jsonl" if provenance_dir else "",
        "QR_ENTROPY_ARCHIVE_PATH": f"{provenance_dir}/archive" if provenance_dir else "",
    })  # fmt: skip
    try:
        from vllm import SamplingParams
        from vllm.config import VllmConfig
        from vllm.v1.sample.logits_processor import BatchUpdate, build_logitsprocs

        from qr_sampler.engine.runtime import engine_settings
        from qr_sampler.engine.v1 import QRSamplerV1Processor
    except ImportError:
        return _sampler_step(rows, sample_count, source)
    engine_settings.cache_clear()
    procs = build_logitsprocs(VllmConfig(), device, False, False)
    (proc,) = [p for p in procs.all if isinstance(p, QRSamplerV1Processor)]
    if source == "replay":
        proc.step.sampler.source = ReplaySource(rows * sample_count)
        proc.step.sampler._fetcher = None
    added = [(i, SamplingParams(), [1, 2], []) for i in range(rows)]
    proc.update_state(BatchUpdate(rows, [], added, []))
    counter = [rows]
    # Requests arrive with their SamplingParams built by vLLM's frontend: build them here, so
    # the timed update is our processor's work, not SamplingParams' constructor.
    arriving = [SamplingParams() for _ in range(1024)]

    def replace_one() -> None:
        slot = counter[0] % rows
        params = arriving[counter[0] % len(arriving)]
        counter[0] += 1
        proc.update_state(BatchUpdate(rows, [slot], [(slot, params, [1, 2], [])], []))

    return proc.apply, replace_one


def _sampler_step(rows: int, sample_count: int,
                  source: str) -> tuple[Callable[[torch.Tensor], Any], Callable[[], None]]:
    """Without vLLM: the engine-neutral sampler on an equivalent batch."""
    from qr_sampler.entropy.system import SystemEntropySource
    from qr_sampler.sampler import SamplingBatch, TokenSampler
    from qr_sampler.types import SamplingConfig

    cfg = SamplingConfig(fixed_temperature=TEMPERATURE, top_k=TOP_K, top_p=TOP_P,
                         sample_count=sample_count)
    src: EntropySource = ReplaySource(rows * sample_count) if source == "replay" else (
        SystemEntropySource())
    sampler = TokenSampler(src, concurrent_fetch=source != "replay")
    batch = SamplingBatch.build([cfg] * rows)
    return (lambda logits: sampler.sample(logits, batch)), (lambda: None)


class ReplaySource(EntropySource):
    """Pre-drawn bytes: the bookkeeping benchmark measures everything but randomness."""

    name = "replay"
    health_tested = False

    def __init__(self, size: int) -> None:
        self._data = os.urandom(size)

    def get_random_bytes(self, n: int) -> bytes:
        return self._data[:n]

    def get_random_bytes_batch(self, counts: Sequence[int]) -> EntropyBatch:
        return EntropyBatch(data=self._data[: sum(counts)], counts=tuple(counts), source=self.name)


def bench_full_step(rows: int, iterations: int, device: torch.device,
                    source: str = "system") -> dict[str, Any]:
    """``source="replay"``: both sides read bytes drawn beforehand (randomness excluded)."""
    gen = torch.Generator().manual_seed(rows)
    pristine = (torch.randn(rows, VOCAB, generator=gen) * 3.0).to(device)
    work = pristine.clone()
    apply, _ = _our_step(rows, VOCAB, SAMPLE_COUNT, source, device)
    restore = lambda: work.copy_(pristine)  # noqa: E731
    if device.type == "cpu":
        host = pristine.numpy()
        forced = host.copy()
        pre_drawn = os.urandom(rows * SAMPLE_COUNT) if source == "replay" else b""
        ours, base = _paired_medians(lambda: apply(work),
                                     lambda: numpy_row_sampler(host, forced, pre_drawn),
                                     max(iterations // 4, 5), restore, ours_per_round=4)
    else:
        ours = _median_us(lambda: apply(work), iterations, setup=restore)
    result: dict[str, Any] = {"rows": rows, "entropy": source, "ours_us_per_token": ours / rows}
    if device.type == "cpu":
        result["baseline"] = "numpy, one row at a time"
        result["baseline_us_per_token"] = base / rows
        result["speedup"] = base / ours
    vllm_sampler = None
    # vLLM's own sampler on the same logits (its top-k/top-p and random draw). It draws no
    # entropy, so it is measured once per batch size, with the system-bytes workload.
    if source == "system" or device.type != "cpu":
        with contextlib.suppress(ImportError):
            vllm_sampler = _vllm_sampler(rows, device)
    if vllm_sampler is not None:
        # On a CPU vLLM's sampler sorts every row (tens of ms per step): fewer rounds.
        rounds = iterations if device.type != "cpu" else max(3, iterations // 10)
        theirs = _median_us(lambda: vllm_sampler(work), rounds, setup=restore)
        result["vllm_sampler_us_per_token"] = theirs / rows
        result["ours_to_vllm_sampler"] = ours / theirs
    if device.type != "cpu":
        result["baseline"] = "vLLM's own Sampler"
        result["baseline_us_per_token"] = result["vllm_sampler_us_per_token"]
        result["speedup"] = 1 / result["ours_to_vllm_sampler"]
    return result


def _vllm_sampler(rows: int, device: torch.device) -> Callable[[torch.Tensor], Any]:
    """vLLM's V1 sampler with top-k 50, top-p 0.9, temperature 0.7 (random sampling)."""
    from vllm.v1.sample.logits_processor import LogitsProcessors
    from vllm.v1.sample.metadata import SamplingMetadata
    from vllm.v1.sample.sampler import Sampler

    sampler = Sampler()
    full = lambda v: torch.full((rows,), v, device=device)  # noqa: E731
    meta = SamplingMetadata(
        temperature=full(TEMPERATURE), all_greedy=False, all_random=True,
        top_p=full(TOP_P), top_k=full(TOP_K).int(), generators={}, max_num_logprobs=None,
        no_penalties=True, prompt_token_ids=None, frequency_penalties=full(0.0),
        presence_penalties=full(0.0), repetition_penalties=full(1.0),
        output_token_ids=[[] for _ in range(rows)], allowed_token_ids_mask=None,
        bad_words_token_ids={}, logitsprocs=LogitsProcessors(),
    )  # fmt: skip
    return lambda logits: sampler(logits, meta)


def bench_provenance(rows: int, steps: int) -> dict[str, Any]:
    """Per-token cost with per-token hashes, the hash chain and the raw-byte archive on vs
    off, same logits, same run. The records are written by a background thread: the time
    counted is the whole run including the final flush, so a writer that falls behind shows."""
    import tempfile

    gen = torch.Generator().manual_seed(11)
    pristine = torch.randn(rows, VOCAB, generator=gen) * 3.0
    work = pristine.clone()
    result: dict[str, Any] = {"rows": rows, "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        for label, directory in (("off", ""), ("on", tmp)):
            apply, _ = _our_step(rows, VOCAB, SAMPLE_COUNT, "system", torch.device("cpu"),
                                 provenance_dir=directory)
            recorder = apply.__self__.step.recorder  # type: ignore[attr-defined]
            for _ in range(5):  # warm-up
                work.copy_(pristine)
                apply(work)
            recorder.flush()
            total = 0
            for _ in range(steps):
                work.copy_(pristine)
                start = time.perf_counter_ns()
                apply(work)
                total += time.perf_counter_ns() - start
            start = time.perf_counter_ns()
            recorder.flush()
            total += time.perf_counter_ns() - start
            result[f"{label}_us_per_token"] = total / steps / rows / 1000
            apply.__self__.step.close()  # type: ignore[attr-defined]
    result["added_percent"] = 100 * (result["on_us_per_token"] / result["off_us_per_token"] - 1)
    return result


def bench_system_source(iterations: int) -> dict[str, Any]:
    """The ``system`` source's two ways to the kernel's CSPRNG, alternating: one getrandom
    system call per request (``os.urandom``) and the vDSO (when this kernel offers it), for
    one token's bytes and for a batch of 32 tokens (drawn in parallel slices)."""
    from qr_sampler.entropy.system import SystemEntropySource

    syscall = SystemEntropySource(getrandom="syscall")
    fast = SystemEntropySource()
    result: dict[str, Any] = {"backend": fast.backend}
    for label, size in (("token", SAMPLE_COUNT), ("batch_32", 32 * SAMPLE_COUNT)):
        ours, base = _paired_medians(lambda n=size: fast.get_random_bytes(n),
                                     lambda n=size: syscall.get_random_bytes(n),
                                     iterations, lambda: None)
        result[f"{label}_us"] = ours
        result[f"{label}_syscall_us"] = base
    fast.close()
    syscall.close()
    return result


def bench_team_draw(iterations: int) -> dict[str, Any] | None:
    """A batch of 32's system bytes right after a parallel torch operation (as in a CPU host's
    step, after the forward pass): drawn on torch's OpenMP team vs by the calling thread alone,
    alternating. None where there is no team (one torch thread, another OpenMP, no numba)."""
    from qr_sampler import omp_team
    from qr_sampler.entropy.system import SystemEntropySource

    source = SystemEntropySource()
    if omp_team.team() is None or source.backend != "vDSO getrandom":
        return None
    logits = torch.randn(32, VOCAB)
    target = logits.clone()
    size = 32 * SAMPLE_COUNT

    def draw(on_team: bool) -> None:
        omp_team.ENABLED = on_team
        try:
            with omp_team.engine_thread():
                source.get_random_bytes(size)
        finally:
            omp_team.ENABLED = True

    team, alone = _paired_medians(lambda: draw(True), lambda: draw(False), iterations,
                                  lambda: target.copy_(logits))  # fmt: skip
    source.close()
    return {"team_us": team, "alone_us": alone, "threads": torch.get_num_threads()}


def bench_bookkeeping(rows: int, vocab: int, iterations: int) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(7)
    pristine = torch.randn(rows, vocab, generator=gen) * 3.0
    work = pristine.clone()
    apply, replace_one = _our_step(rows, vocab, 1024, "replay", torch.device("cpu"))

    def ours_step() -> None:
        replace_one()
        apply(work)

    temperature = torch.full((rows, 1), TEMPERATURE)

    def minimal_torch() -> None:
        values, ids = torch.topk(work, TOP_K, dim=1)
        probs = torch.softmax(values / temperature, dim=1)
        before = torch.cumsum(probs, dim=1) - probs
        probs = probs * (before < TOP_P)
        pick = torch.multinomial(probs, 1)
        work.fill_(float("-inf"))
        work.scatter_(1, ids.gather(1, pick), 0.0)

    ours, base = _paired_medians(ours_step, minimal_torch, iterations,
                                 lambda: work.copy_(pristine))
    return {"rows": rows, "vocab": vocab, "ours_us_per_token": ours / rows,
            "baseline": "minimal torch sampler", "baseline_us_per_token": base / rows,
            "ratio_ours_to_baseline": ours / base}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batches", default="1,32,256", help="comma-separated batch sizes")
    parser.add_argument("--json", action="store_true", help="print results as JSON")
    args = parser.parse_args()
    device = torch.device(args.device)
    batches = [int(b) for b in args.batches.split(",")]
    full = [bench_full_step(b, args.iterations, device) for b in batches]
    # The same without generating randomness (both sides read bytes drawn beforehand): what
    # the sampler itself costs, whatever this machine's os.urandom costs.
    full += [bench_full_step(b, args.iterations, device, "replay") for b in batches if b > 1]
    book = bench_bookkeeping(256, 1024, args.iterations) if device.type == "cpu" else None
    prov = bench_provenance(32, max(args.iterations, 100)) if device.type == "cpu" else None
    system = bench_system_source(args.iterations)
    team = bench_team_draw(args.iterations) if device.type == "cpu" else None
    if args.json:
        print(json.dumps({"full_step": full, "bookkeeping": book, "provenance": prov,
                          "system_source": system, "team_draw": team}, indent=2))
        return
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {device}; "
          f"vocab {VOCAB}, {SAMPLE_COUNT} system bytes/token, top-k {TOP_K}, top-p {TOP_P}")
    for r in full:
        print(f"  batch {r['rows']:>3}, {r['entropy']:>6} bytes: "
              f"ours {r['ours_us_per_token']:7.1f} µs/token   "
              f"{r['baseline']} {r['baseline_us_per_token']:7.1f} µs/token   "
              f"→ {r['speedup']:.2f}× faster")
        if "vllm_sampler_us_per_token" in r and device.type == "cpu":
            print(f"            vLLM's own sampler on the same logits "
                  f"{r['vllm_sampler_us_per_token']:7.1f} µs/token (no entropy fetch): "
                  f"ours / vLLM = {r['ours_to_vllm_sampler']:.2f}")
    if book is not None:
        print(f"  bookkeeping, batch {book['rows']}, vocab {book['vocab']}, one request replaced "
              f"per step: ours {book['ours_us_per_token']:.2f} µs/token, minimal torch sampler "
              f"{book['baseline_us_per_token']:.2f} µs/token "
              f"→ {book['ratio_ours_to_baseline']:.2f}×")
    print(f"  system source ({system['backend']}): "
          f"{system['token_us']:.1f} µs per token's bytes, {system['batch_32_us']:.0f} µs per "
          f"batch of 32; one getrandom syscall per request (os.urandom) "
          f"{system['token_syscall_us']:.1f} and {system['batch_32_syscall_us']:.0f} µs "
          f"→ {system['token_syscall_us'] / system['token_us']:.2f}× and "
          f"{system['batch_32_syscall_us'] / system['batch_32_us']:.2f}×")
    if team is not None:
        print(f"  a batch of 32's system bytes right after a parallel torch operation: on "
              f"torch's OpenMP team ({team['threads']} threads) {team['team_us']:.0f} µs, by "
              f"the calling thread alone {team['alone_us']:.0f} µs "
              f"→ {team['alone_us'] / team['team_us']:.2f}×")
    if prov is not None:
        print(f"  provenance, batch {prov['rows']}, {prov['steps']} steps: "
              f"hashes + chain + archive on {prov['on_us_per_token']:.1f} µs/token, "
              f"off {prov['off_us_per_token']:.1f} "
              f"µs/token → {prov['added_percent']:+.1f} %")


if __name__ == "__main__":
    main()
