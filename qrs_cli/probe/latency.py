"""Stage 9, latency: what one token's entropy costs, fetched exactly as the sampler fetches it.

One *fetch* is ``sample_count`` bytes split into the sampler's chunks
(QR_GRPC_MAX_BYTES_PER_REQUEST, at most 1 MiB) and asked for in the profile's mode: sequential
unary calls, one server-streaming call per chunk, or all chunks pipelined on a long-lived bidi
stream (one stream per worker).
``warmup`` fetches open connections and streams and are not measured; then ``total`` fetches run
on ``concurrency`` workers. Reported like ghz: percentiles of successful fetches only, calls/s,
bytes/s, and errors by status code.

The call budget is asked before every fetch, so the run is shortened (and says so) rather than
break the profile's rate limit or byte allowance. A RESOURCE_EXHAUSTED reply stops every worker:
hammering a server that already refuses only makes things worse.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from qrs_cli.probe.call_budget import BudgetSpent
from qrs_cli.probe.calls import BidiSession, CallOutcome, EntropyCaller, is_quota_refusal
from qrs_cli.probe.context import (
    ProbeContext,
    StageOutcome,
    calls_per_token,
    chunk_size,
    fail,
    ms,
    ok,
    size,
    skipped,
    warn,
)
from qrs_cli.probe.stages_calls import quota_hint
from qrs_cli.probe.types import EXIT_QUOTA

#: Stop after this many failed fetches: the errors are already clear.
MAX_ERRORS = 10
#: The percentiles reported, like ghz's.
PERCENTILES = (50, 90, 99)


def fetches_needed(q: int) -> int:
    """Fetches a q-th percentile needs to be more than the slowest one: 1 / (1 − q/100)
    (p50: 2, p90: 10, p99: 100)."""
    return round(100 / (100 - q))


class _Run:
    """Shared state of the workers: next fetch number, results, stop flag. Thread-safe."""

    def __init__(self, total: int) -> None:
        self.total = total
        self._next = 0
        self._lock = threading.Lock()
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()
        self.calls = 0
        self.stopped = ""
        self.quota_refused = False

    def claim(self) -> bool:
        with self._lock:
            if self.stopped or self._next >= self.total:
                return False
            self._next += 1
            return True

    def record(self, out: CallOutcome, calls: int) -> None:
        with self._lock:
            self.calls += calls
            if out.ok:
                self.latencies.append(out.latency_s)
                return
            label = out.code if out.code != "OK" else "BAD_REPLY"
            self.errors[label] += 1
            if is_quota_refusal(out.code, out.details):
                self.quota_refused = True
                self.stopped = "the server answered RESOURCE_EXHAUSTED (rate limit or quota)"
            elif sum(self.errors.values()) >= MAX_ERRORS:
                self.stopped = f"{MAX_ERRORS} fetches failed"

    def stop(self, reason: str) -> None:
        with self._lock:
            self.stopped = self.stopped or reason


class _Fetcher:
    """Fetches one token's bytes in the profile's mode; a worker owns one (and its stream)."""

    def __init__(self, ctx: ProbeContext, sizes: list[int], planned: int) -> None:
        self._ctx = ctx
        self._caller: EntropyCaller = ctx.caller
        self._sizes = sizes
        self._planned = planned
        self._session: BidiSession | None = None

    def fetch(self) -> CallOutcome:
        t = self._ctx.target
        if t.mode == "bidi_streaming":
            if self._session is None or self._session.broken is not None:
                self.close()
                self._session = self._caller.open_bidi(
                    t.stream_method_path, messages=self._planned * len(self._sizes))
            return self._session.exchange(self._sizes)
        data: list[bytes] = []
        spent = 0.0
        for n in self._sizes:  # chunks one after another, as the sampler's transports do
            out = self._caller.exchange(t.mode, t.active_method_path, n)
            if not out.ok:
                return out
            data.append(out.data)
            # The calls' own times: the call budget's bookkeeping between chunks (a file lock
            # of the shared quota) is the probe's cost, not the server's.
            spent += out.latency_s
        return CallOutcome("OK", data=b"".join(data), latency_s=spent, replies=len(data))

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


def run_latency(ctx: ProbeContext) -> StageOutcome:
    """Warm-up, then ``total`` fetches of ``sample_count`` bytes at ``concurrency``."""
    from qr_sampler.entropy.quantum_grpc import chunk_sizes

    t, opts = ctx.target, ctx.options
    sizes = chunk_sizes(t.sample_count, chunk_size(t))
    per_fetch = len(sizes)
    workers = max(1, min(opts.concurrency, opts.total))
    affordable = _affordable_fetches(ctx, per_fetch, opts.total + opts.warmup * workers)
    warmup = min(opts.warmup * workers, max(affordable - 1, 0))  # each worker warms its stream
    total = min(opts.total, affordable - warmup)
    if total < 1:
        return skipped("the call budget leaves no room for a latency run", {},
                       "the profile's rate limit or daily budget is used up by the earlier "
                       "stages; rerun in a minute")
    workers = min(workers, total)
    measured = _Run(total)
    warm = _Run(warmup)
    wall = 0.0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qrs-probe") as pool:
        fetchers = [_Fetcher(ctx, sizes, planned=(total + warmup) // workers + 1)
                    for _ in range(workers)]
        try:
            list(pool.map(lambda f: _work(f, warm, per_fetch), fetchers))
            if warm.stopped:
                measured.stop(warm.stopped)
            start = time.perf_counter()
            list(pool.map(lambda f: _work(f, measured, per_fetch), fetchers))
            wall = time.perf_counter() - start
        finally:
            for fetcher in fetchers:
                fetcher.close()
    return _latency_outcome(ctx, measured, warm, wall, per_fetch, workers,
                            shortened=total < opts.total)


def _affordable_fetches(ctx: ProbeContext, per_fetch: int, wanted: int) -> int:
    """Fetches the call budget allows now (the rate limit's free permits, the byte allowance)."""
    limits = [wanted]
    calls_left = ctx.budget.calls_left()
    if calls_left is not None:
        limits.append(calls_left // per_fetch)
    bytes_left = ctx.budget.bytes_left()
    if bytes_left is not None:
        limits.append(bytes_left // ctx.target.sample_count)
    return max(min(limits), 0)


def _work(fetcher: _Fetcher, run: _Run, per_fetch: int) -> None:
    while run.claim():
        try:
            out = fetcher.fetch()
        except BudgetSpent as spent:
            run.stop(f"call budget: {spent.reason}")
            return
        run.record(out, per_fetch)


def _latency_outcome(ctx: ProbeContext, run: _Run, warm: _Run, wall: float, per_fetch: int,
                     workers: int, *, shortened: bool) -> StageOutcome:
    t = ctx.target
    done = len(run.latencies)
    failed = sum(run.errors.values())
    details: dict[str, Any] = {
        "mode": t.mode, "fetches": done + failed, "planned": run.total, "ok": done,
        "warmup_fetches": len(warm.latencies) + sum(warm.errors.values()),
        "bytes_per_fetch": t.sample_count, "calls_per_fetch": per_fetch,
        "concurrency": workers, "errors": dict(run.errors), "stopped": run.stopped,
        "wall_s": round(wall, 6),
    }
    if warm.errors and not done:
        details["warmup_errors"] = dict(warm.errors)
    refused = run.quota_refused or warm.quota_refused
    if done == 0:
        shown = ", ".join(f"{k} ×{v}" for k, v in (run.errors or warm.errors).items())
        if refused:
            return fail(f"no fetch succeeded: the server answered RESOURCE_EXHAUSTED ({shown})",
                        details, quota_hint(t), EXIT_QUOTA)
        return fail(f"no fetch succeeded ({shown or run.stopped or 'nothing ran'})", details,
                    "the shape and streaming stages above say why calls fail")
    lat = np.asarray(run.latencies)
    fetches_per_s = done / wall if wall > 0 else 0.0
    ctx.fetches_per_s = fetches_per_s
    shown_percentiles = []
    thin = []
    for q in PERCENTILES:
        value = float(np.percentile(lat, q))
        details[f"p{q}_ms"] = round(value * 1000, 3)
        marked = done < fetches_needed(q)
        thin += [f"p{q}"] if marked else []
        shown_percentiles.append(f"p{q} {ms(value)}{'*' if marked else ''}")
    details.update({
        "min_ms": round(float(lat.min()) * 1000, 3),
        "max_ms": round(float(lat.max()) * 1000, 3),
        "fetches_per_s": round(fetches_per_s, 3),
        "calls_per_s": round(fetches_per_s * per_fetch, 3),
        "bytes_per_s": round(fetches_per_s * t.sample_count, 1),
        # Percentiles from fewer fetches than they need to mean anything (p99 from 20 fetches is
        # just the slowest one): marked with * in the summary.
        "unreliable_percentiles": thin,
    })
    head = (f"{done} × {size(t.sample_count)}"
            + (f" ({per_fetch} calls each)" if per_fetch > 1 else "")
            + (f", concurrency {workers}" if workers > 1 else "")
            + f": {', '.join(shown_percentiles)}; "
            f"{fetches_per_s * per_fetch:,.0f} calls/s, {size(fetches_per_s * t.sample_count)}/s")
    if thin:
        needs = ", ".join(f"{p} ≥ {fetches_needed(int(p[1:]))}" for p in thin)
        head += f" (* from {done} fetch{'es' if done != 1 else ''}; needs {needs})"
    if shortened and not run.stopped:
        head += f" (shortened to fit the call budget; {calls_per_token(t)} calls per token)"
    if refused:
        shown = ", ".join(f"{k} ×{v}" for k, v in run.errors.items()) or "in the warm-up"
        return fail(f"{head}; stopped: the server answered RESOURCE_EXHAUSTED ({shown})",
                    details, quota_hint(t), EXIT_QUOTA)
    if failed or run.stopped:
        shown = ", ".join(f"{k} ×{v}" for k, v in run.errors.items()) or "none"
        return warn(f"{head}; errors: {shown}" + (f"; stopped: {run.stopped}"
                                                   if run.stopped else ""), details,
                    "errors by status code above; a stop by the call budget means the "
                    "profile's limits or --calls left no more calls")
    return ok(f"{head}; no errors", details)
