"""The vLLM plugin: adapters that let vLLM's engine use the qr-sampler core for every token.

This package is the only place that imports vLLM, and importing the package itself does not:
the adapters live in submodules that vLLM loads through the entry point
``qr_sampler = "qr_sampler.engine.plugin:QRSamplerLogitsProcessor"``
(group ``vllm.logits_processors``).

- :mod:`~qr_sampler.engine.plugin` — the registered class; picks the adapter for the running
  model runner.
- :mod:`~qr_sampler.engine.v1` / :mod:`~qr_sampler.engine.v2` — the two thin adapters.
- :mod:`~qr_sampler.engine.slots` — per-request state in slots, columnar (vLLM's pattern).
- :mod:`~qr_sampler.engine.distributed` — one entropy draw per model replica (TP/PP/DP).
- :mod:`~qr_sampler.engine.requests` — ``SamplingParams`` → per-request config (precedence).
- :mod:`~qr_sampler.engine.step` — one guarded step: penalties, sample, force, record.
"""

from __future__ import annotations

ENTRY_POINT_GROUP = "vllm.logits_processors"
ENTRY_POINT = "qr_sampler.engine.plugin:QRSamplerLogitsProcessor"

__all__ = ["ENTRY_POINT", "ENTRY_POINT_GROUP"]
