"""What the entropy guards cost per fetch: the shared quota state and the online health tests.

Workloads:

- **Shared quota** (``qr_sampler.entropy._quota``): one fetch's bookkeeping, i.e. one
  ``admit(calls=1, nbytes=20_480)`` transaction (lock file, read, decide, write + rename,
  unlock), with a rate limit and a daily budget set, against the state file in a temporary
  folder (the same file system as ``~/.local/state`` on most machines), and once more while a
  second process takes turns on the same file (every transaction then re-reads the state), and
  on a RAM file system (``/dev/shm``) where there is one.
  Baseline: the same ledger with the state in memory (``state_dir=None``), i.e. the rules without
  the sharing.
- **Health tests** (``qr_sampler.entropy.health``): both tests at the defaults on one 20,480-byte
  block of ``os.urandom`` bytes, and on a batch of 32 such blocks (one engine step at batch 32).
  Baseline: ``os.urandom(20_480)`` itself, measured in the same run.

Run: ``python benchmarks/bench_entropy_guards.py [--iterations N] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from qr_sampler.entropy._quota import QuotaLedger
from qr_sampler.entropy.health import HealthTests

NBYTES = 20_480
BATCH = 32


def _median_us(fn: Callable[[], object], iterations: int) -> float:
    for _ in range(max(20, iterations // 10)):  # warm-up
        fn()
    times = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        fn()
        times.append(time.perf_counter_ns() - start)
    times.sort()
    return times[len(times) // 2] / 1000.0


def _ledger(folder: Path | None) -> QuotaLedger:
    # Limits far above what the loop uses: every admission succeeds, as on a healthy day.
    return QuotaLedger(limit_per_min=10**9, daily_bytes=10**15, identity="b" * 64,
                       server="127.0.0.1:50051 /qr_entropy.EntropyService/GetEntropy",
                       state_dir=folder)


def _rival(folder: str, stop: mp.synchronize.Event) -> None:
    """A second process using the same state file, one admission every ~100 µs."""
    ledger = _ledger(Path(folder))
    while not stop.is_set():
        ledger.admit(1, NBYTES)
        time.sleep(0.0001)


def run(iterations: int) -> dict[str, float]:
    results: dict[str, float] = {}
    memory = _ledger(None)
    results["quota in memory (baseline) µs"] = _median_us(lambda: memory.admit(1, NBYTES),
                                                          iterations)
    with tempfile.TemporaryDirectory(prefix="qrs-quota-bench-") as folder:
        shared = _ledger(Path(folder))
        results["quota shared file µs"] = _median_us(lambda: shared.admit(1, NBYTES), iterations)
        stop = mp.Event()
        rival = mp.Process(target=_rival, args=(folder, stop), daemon=True)
        rival.start()
        try:
            results["quota shared file, 2nd process active µs"] = _median_us(
                lambda: shared.admit(1, NBYTES), iterations)
        finally:
            stop.set()
            rival.join(10)
        shared.close()
    if Path("/dev/shm").is_dir():  # the same on a RAM file system (no journal, no writeback)
        with tempfile.TemporaryDirectory(prefix="qrs-quota-bench-", dir="/dev/shm") as folder:
            ram = _ledger(Path(folder))
            results["quota shared file on tmpfs µs"] = _median_us(lambda: ram.admit(1, NBYTES),
                                                                  iterations)
            ram.close()
    tests = HealthTests()
    block = os.urandom(NBYTES)
    batch = os.urandom(NBYTES * BATCH)
    results["os.urandom(20480) (baseline) µs"] = _median_us(lambda: os.urandom(NBYTES),
                                                            iterations)
    results["health tests per 20,480 B µs"] = _median_us(lambda: tests.check(block), iterations)
    results[f"health tests per {BATCH} x 20,480 B µs"] = _median_us(
        lambda: tests.check(batch), max(iterations // 10, 50))
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000, help="timed calls per variant")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = run(args.iterations)
    quota_extra = (results["quota shared file µs"]
                   - results["quota in memory (baseline) µs"])
    health_ratio = (results["health tests per 20,480 B µs"]
                    / results["os.urandom(20480) (baseline) µs"])
    if args.json:
        print(json.dumps({"median_us": results, "shared_quota_extra_us": quota_extra,
                          "health_vs_urandom": health_ratio}, indent=2))
        return 0
    print(f"medians of {args.iterations} calls each")
    for name, value in results.items():
        print(f"{name:<46} {value:9.1f}")
    print(f"shared quota: +{quota_extra:.1f} µs per fetch over the in-memory rules")
    print(f"health tests: {health_ratio:.2f} × os.urandom of the same 20,480 bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
