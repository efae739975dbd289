"""An engine-like process for the multiprocess metrics tests.

``python -m tests.sampler.metrics_child SOURCE TOKENS CIRCUIT QUOTA [--late-env DIR]``: starts
the metrics as an engine process would, counts one step of TOKENS tokens from SOURCE, reports
the breaker state CIRCUIT and QUOTA calls left, prints ``ready <pid>``, then waits for a line on
stdin (or its end) and shuts its metrics down.

``--late-env DIR`` imports prometheus_client *before* setting ``PROMETHEUS_MULTIPROC_DIR=DIR``,
like an engine forked from a vLLM parent that set the variable after its own import.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str]) -> int:
    source, tokens, circuit, quota = argv[0], int(argv[1]), argv[2], int(argv[3])
    if len(argv) > 5 and argv[4] == "--late-env":
        import prometheus_client  # noqa: F401 - chooses in-process values: no variable yet

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = argv[5]

    from qr_sampler.metrics import _sampler, start_metrics
    from qr_sampler.settings import Settings

    _sampler.REFRESH_INTERVAL_S = 0.05  # the parent polls; keep its wait short
    metrics = start_metrics(Settings(), lambda: {"circuit": circuit, "quota_calls_left": quota})
    metrics.on_step(
        tokens_by_source={source: tokens},
        fallback_kind="",
        fallback_tokens=0,
        left_to_vllm=0,
        bytes_fetched=tokens * 100,
        fetch_latency_s=0.002,
    )
    print(f"ready {os.getpid()} {metrics.multiprocess_dir}", flush=True)
    sys.stdin.readline()
    metrics.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
