"""A V1 logits processor that only drives :mod:`qr_sampler.metrics`, for the real-engine tests.

It calls ``start_metrics`` and ``on_step`` exactly as the plugin's engine step does, in the
process where vLLM runs logits processors, and leaves the logits untouched. Counting its own
source name (``probe``) keeps its figures apart from whatever the installed plugin counts in
the same process. It writes its pid to ``QR_TEST_PROBE_PID_FILE`` so a test can show that the
series come from a process other than the API server's. Load it with
``--logits-processors tests.engine.metrics_probe:MetricsProbe`` (``PYTHONPATH`` = the repository).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from vllm.v1.sample.logits_processor import LogitsProcessor

from qr_sampler.metrics import start_metrics
from qr_sampler.settings import load_settings

PROBE_SOURCE = "probe"
PROBE_BYTES_PER_ROW = 1000
PROBE_LATENCY_S = 0.003


def probe_health() -> dict[str, Any]:
    return {"circuit": "half_open", "quota_calls_left": 41, "health_test_failures": 0}


class MetricsProbe(LogitsProcessor):
    def __init__(self, vllm_config: Any, device: torch.device, is_pin_memory: bool) -> None:
        self.metrics = start_metrics(load_settings(), probe_health)
        pid_file = os.environ.get("QR_TEST_PROBE_PID_FILE")
        if pid_file:
            Path(pid_file).write_text(str(os.getpid()), encoding="utf-8")

    @classmethod
    def validate_params(cls, sampling_params: Any) -> None:
        return None

    def is_argmax_invariant(self) -> bool:
        return False  # so vLLM calls apply() on every step, greedy or not

    def update_state(self, batch_update: Any) -> None:
        return None

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        rows = int(logits.shape[0])
        self.metrics.on_step(
            tokens_by_source={PROBE_SOURCE: rows},
            fallback_kind="",
            fallback_tokens=0,
            left_to_vllm=0,
            bytes_fetched=rows * PROBE_BYTES_PER_ROW,
            fetch_latency_s=PROBE_LATENCY_S,
        )
        return logits
