"""The adapter for Model Runner V2's logits-processor interface (the GPU default).

Contract with vLLM (``vllm/v1/worker/gpu/sample/logits_processor/interface.py``):

- ``add_request(slot, params)`` puts a request into a *slot*; slots are recycled without a
  removal call, so each add fully replaces the slot's state. Returns whether we act on it.
- ``apply(logits, ctx)`` gets ``logits`` [num_logits_rows, V] after vLLM's bias, penalties,
  bad words and grammar, and before temperature, min-p and top-k/top-p; ``ctx`` maps rows to
  slots (``expanded_idx_mapping``; on the host ``idx_mapping_np`` when each request has one
  row). It is called for the whole batch, including rows we declined.

Penalties are therefore already in the logits: this adapter does not apply them. Guarantees:
``add_request`` and ``apply`` never raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from vllm.v1.worker.gpu.sample.logits_processor import LogitsProcessor as V2LogitsProcessor

from qr_sampler.engine.distributed import ReplicaLink
from qr_sampler.engine.runtime import (
    engine_settings,
    log_startup,
    max_requests,
    model_name,
    route_logs_through_vllm,
    validate_and_stamp,
)
from qr_sampler.engine.step import EngineStep

if TYPE_CHECKING:
    from vllm.config import VllmConfig
    from vllm.sampling_params import SamplingParams
    from vllm.v1.worker.gpu.sample.logits_processor import (
        LogitsContext,
        LogitsProcRequestState,
    )


class QRSamplerV2Processor(V2LogitsProcessor):
    """Chooses every sampled row's token with entropy fetched once per step."""

    def __init__(self, vllm_config: VllmConfig, req_states: LogitsProcRequestState) -> None:
        route_logs_through_vllm()
        settings = engine_settings()
        link = ReplicaLink.from_vllm(vllm_config)
        self.step = EngineStep(
            settings,
            req_states.device,
            apply_penalties=False,
            link=link,
            capacity=int(getattr(req_states, "max_num_reqs", 0) or max_requests(vllm_config)),
            model=model_name(vllm_config),
        )
        log_startup("Model Runner V2", settings, link.describe())

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Reject bad ``qr_*`` keys with ValueError (→ HTTP 400); stamp the request id."""
        validate_and_stamp(sampling_params)

    def add_request(self, req_idx: int, sampling_params: SamplingParams) -> bool:
        # vLLM calls apply() only when some slot of the step said True. Under tensor
        # parallelism every rank must then say the same, or one rank would skip the step's
        # broadcast and hang the others: all ranks say True, whatever the request.
        replicated = bool(self.step.link.plan)
        if not self.step.link.draws:
            return True  # a follower keeps no requests: it forces what the drawer sends
        state = self.step.request_state(sampling_params)
        try:
            self.step.table.put(req_idx, state)
        except Exception as exc:
            self.step.log_once("add_request", f"add_request failed: {exc!r}")
            return replicated
        return replicated or not state.config.bypass

    def apply(self, logits: torch.Tensor, ctx: LogitsContext) -> torch.Tensor:
        try:
            layout = _row_slots(logits, ctx)
        except Exception as exc:
            self.step.log_once("layout", f"cannot map rows to requests ({exc!r}); rows left")
            return logits
        return self.step.run(logits, layout)


def _row_slots(logits: torch.Tensor, ctx: LogitsContext) -> np.ndarray:
    """Slot of each logits row; the host copy when there is one row per request."""
    rows = int(logits.shape[0])
    host = ctx.idx_mapping_np
    if len(host) == rows:
        return np.asarray(host, dtype=np.int64)
    # Several rows per request (speculative decoding): one device read per step.
    return np.asarray(ctx.expanded_idx_mapping.cpu().numpy(), dtype=np.int64)
