"""Latency of fetching 20,480 bytes over loopback: our client in each mode vs a raw grpcio call.

Workload (issue 3): the reference server (``python -m qr_sampler.server``, os.urandom) in its own
process on 127.0.0.1; one fetch of 20,480 bytes per iteration, no chunking.

Baseline: a plain grpcio synchronous unary call through the generated stub, on its own channel,
in the same run against the same server: the least a unary fetch can cost. Variants run in short
back-to-back blocks (steady state, like a sampler fetching once per step), and the blocks are
interleaved in a freshly shuffled order each round, so load from anything else on the machine
hits all variants alike.

A second reference, "raw grpcio bidi": a bare synchronous stream_stream call fed by a queue-backed
request iterator, the caller reading each reply itself (no timeout, no sequence-id matching, no
concurrency): the floor any bidi client on grpcio's sync API can reach.

Guard variants (issues 11/12), same server, same run: "unary+nonce" / "bidi+nonce" send a
32-byte nonce with every request and verify the server's echo (``fetch_batch(counts, nonce)``);
"unary+quota" keeps a rate limit and a daily budget in the host's shared quota state file (a
temporary folder), i.e. one locked read-modify-write of that file per fetch.

Targets: bidi p50 ≤ 150 µs; unary p50 within 15 % of the raw grpcio call.

Run: ``python benchmarks/bench_grpc.py [--iterations N] [--in-process] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import grpc

from qr_sampler.entropy._grpc_config import GrpcClientConfig
from qr_sampler.entropy.quantum_grpc import QuantumGrpcEntropySource
from qr_sampler.proto.entropy_service_pb2 import EntropyRequest
from qr_sampler.proto.entropy_service_pb2_grpc import EntropyServiceStub
from qr_sampler.server import EntropyServer, ServerConfig

NBYTES = 20_480
BLOCK = 50
BIDI_P50_TARGET_US = 150.0
UNARY_RATIO_TARGET = 1.15


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _percentile(sorted_us: list[float], q: float) -> float:
    return sorted_us[min(int(q * len(sorted_us)), len(sorted_us) - 1)]


def _measure(variants: dict[str, Callable[[], object]], iterations: int) -> dict[str, list[float]]:
    """Per variant, ``iterations`` timings in µs, in shuffled rounds of BLOCK calls each."""
    for fn in variants.values():  # warm-up: connections, streams, allocator
        for _ in range(max(50, iterations // 10)):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants.items())
    shuffle = random.Random(20_480).shuffle
    for _ in range(max(1, iterations // BLOCK)):
        shuffle(order)
        for name, fn in order:
            times = samples[name]
            for _ in range(BLOCK):
                start = time.perf_counter_ns()
                fn()
                times.append((time.perf_counter_ns() - start) / 1000.0)
    return samples


def run(iterations: int, in_process: bool) -> dict[str, dict[str, float]]:
    address = f"127.0.0.1:{_free_port()}"
    embedded: EntropyServer | None = None
    process: subprocess.Popen[bytes] | None = None
    if in_process:
        embedded = EntropyServer(ServerConfig(address=address))
        embedded.start()
    else:
        process = subprocess.Popen(
            [sys.executable, "-m", "qr_sampler.server", "--address", address,
             "--log-level", "WARNING"])
    sources: list[QuantumGrpcEntropySource] = []
    quota_dir = tempfile.mkdtemp(prefix="qrs-bench-quota-")
    channel = grpc.insecure_channel(address)
    feed: queue.SimpleQueue[EntropyRequest | None] = queue.SimpleQueue()
    try:
        grpc.channel_ready_future(channel).result(timeout=20)
        stub = EntropyServiceStub(channel)
        request = EntropyRequest(bytes_needed=NBYTES)
        raw_stream = stub.StreamEntropy(iter(feed.get, None), timeout=3600)

        def raw_bidi() -> object:
            feed.put(request)
            return next(raw_stream)

        variants: dict[str, Callable[[], object]] = {
            "raw grpcio unary": lambda: stub.GetEntropy(request, timeout=5),
            "raw grpcio bidi": raw_bidi,
        }
        for mode in ("unary", "server_streaming", "bidi_streaming"):
            source = QuantumGrpcEntropySource(GrpcClientConfig(address=address, mode=mode))
            sources.append(source)
            variants[mode] = lambda source=source: source.get_random_bytes(NBYTES)
        nonce = bytes(range(32))
        for name, mode in (("unary+nonce", "unary"), ("bidi+nonce", "bidi_streaming")):
            source = QuantumGrpcEntropySource(GrpcClientConfig(address=address, mode=mode))
            sources.append(source)
            variants[name] = lambda source=source: source.fetch_batch((NBYTES,), nonce)
        quota = QuantumGrpcEntropySource(GrpcClientConfig(
            address=address, rate_limit_per_min=10**9, daily_byte_budget=10**15,
            quota_state_dir=quota_dir))
        sources.append(quota)
        variants["unary+quota"] = lambda: quota.get_random_bytes(NBYTES)
        samples = _measure(variants, iterations)
    finally:
        feed.put(None)  # ends the raw stream
        for source in sources:
            source.close()
        shutil.rmtree(quota_dir, ignore_errors=True)
        channel.close()
        if embedded is not None:
            embedded.stop(0)
        if process is not None:
            process.terminate()
            process.wait(30)
    results = {}
    for name, times in samples.items():
        times.sort()
        results[name] = {"p50_us": _percentile(times, 0.50), "p99_us": _percentile(times, 0.99),
                         "mean_us": sum(times) / len(times), "n": float(len(times))}
    return results


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=3000, help="timed fetches per variant")
    parser.add_argument("--in-process", action="store_true",
                        help="run the server in this process (shares the GIL with the client)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    results = run(args.iterations, args.in_process)
    raw = results["raw grpcio unary"]
    for row in results.values():
        row["p50_ratio"] = row["p50_us"] / raw["p50_us"]
        row["p99_ratio"] = row["p99_us"] / raw["p99_us"]
    checks = {
        "bidi p50 <= 150 us": results["bidi_streaming"]["p50_us"] <= BIDI_P50_TARGET_US,
        "unary p50 within 15 % of raw": results["unary"]["p50_ratio"] <= UNARY_RATIO_TARGET,
    }
    if args.json:
        print(json.dumps({"nbytes": NBYTES, "results": results, "targets_met": checks},
                         indent=2))
        return 0
    server = "in-process" if args.in_process else "separate process"
    print(f"fetch {NBYTES:,} bytes over 127.0.0.1, server in a {server}, "
          f"{int(raw['n'])} timed fetches per variant")
    print(f"{'variant':<18} {'p50 µs':>8} {'p99 µs':>8} {'mean µs':>8} {'p50/raw':>8} "
          f"{'p99/raw':>8}")
    for name, row in results.items():
        print(f"{name:<18} {row['p50_us']:8.1f} {row['p99_us']:8.1f} {row['mean_us']:8.1f} "
              f"{row['p50_ratio']:8.2f} {row['p99_ratio']:8.2f}")
    for guarded, plain in (("unary+nonce", "unary"), ("bidi+nonce", "bidi_streaming"),
                           ("unary+quota", "unary")):
        extra = results[guarded]["p50_us"] - results[plain]["p50_us"]
        print(f"{guarded} p50 - {plain} p50: {extra:+.1f} µs")
    bidi_vs_floor = results["bidi_streaming"]["p50_us"] / results["raw grpcio bidi"]["p50_us"]
    print(f"bidi_streaming p50 / raw grpcio bidi p50: {bidi_vs_floor:.2f}")
    for check, ok in checks.items():
        print(f"target {check}: {'met' if ok else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
