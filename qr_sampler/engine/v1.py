"""The adapter for vLLM's V1 logits-processor interface (the CPU runner, and GPUs with V1).

Contract with vLLM (``vllm/v1/sample/logits_processor/interface.py``):

- ``update_state(batch_update)`` runs before every step; ``None`` means "nothing changed".
  Changes are applied removed → added → moved (see :mod:`qr_sampler.engine.slots`).
- ``apply(logits)`` gets ``logits`` [num_reqs, V] in persistent-batch order and runs *before*
  vLLM's penalties and temperature; we apply the rows' penalties ourselves, choose, and return
  the rows one-hot, which every later vLLM stage (penalties, temperature, min-p, top-k/top-p,
  greedy argmax or random draw) leaves with the same single finite token. vLLM uses the tensor
  ``apply`` returns: on the host, when nothing after us can write into it
  (:func:`~qr_sampler.engine.runtime.canvas_is_safe`), that is a reused one-hot canvas and the
  input logits are left as they were (:mod:`qr_sampler.canvas`); otherwise the input, forced
  in place.
- ``is_argmax_invariant()`` is False: forcing changes the argmax, so vLLM must call ``apply``
  even when every request is greedy.

Assumptions: one instance per engine (the entry point loads it for every request); calls come
from one thread. Guarantees: ``update_state`` and ``apply`` never raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from vllm.v1.sample.logits_processor import BatchUpdate
from vllm.v1.sample.logits_processor import LogitsProcessor as V1LogitsProcessor

from qr_sampler import omp_team
from qr_sampler.engine.distributed import ReplicaLink
from qr_sampler.engine.runtime import (
    engine_forcing,
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


class QRSamplerV1Processor(V1LogitsProcessor):
    """Chooses every sampled row's token with entropy fetched once per step."""

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool) -> None:
        route_logs_through_vllm()
        settings = engine_settings()
        link = ReplicaLink.from_vllm(vllm_config)
        forcing, how = engine_forcing(settings, vllm_config, device)
        self.step = EngineStep(
            settings,
            device,
            apply_penalties=True,
            link=link,
            capacity=max_requests(vllm_config),
            model=model_name(vllm_config),
            forcing=forcing,
        )
        team = omp_team.describe() if self.step.device.type == "cpu" else ""
        role = ", ".join(part for part in (link.describe(), how, team) if part)
        log_startup("V1 model runner", settings, role)

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Reject bad ``qr_*`` keys with ValueError (→ HTTP 400); stamp the request id."""
        validate_and_stamp(sampling_params)

    def is_argmax_invariant(self) -> bool:
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None or not self.step.link.draws:
            return  # a follower rank forces what the drawer sends; it keeps no requests
        try:
            added = [
                (index, self.step.request_state(params, prompt_ids, output_ids))
                for index, params, prompt_ids, output_ids in batch_update.added
            ]
            self.step.table.apply_batch_update(
                batch_update.batch_size, batch_update.removed, added, batch_update.moved
            )
        except Exception as exc:  # never kill the engine; forget the table instead
            self.step.table.clear()  # its rows are then left to vLLM until re-added
            self.step.log_once("update_state", f"batch update failed ({exc!r}); table reset")

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        return self.step.run(logits, _identity_layout(logits.shape[0]))


_LAYOUTS: dict[int, np.ndarray] = {}


def _identity_layout(rows: int) -> np.ndarray:
    """V1 rows are persistent-batch indices: row i belongs to index (slot) i."""
    layout = _LAYOUTS.get(rows)
    if layout is None:
        layout = _LAYOUTS[rows] = np.arange(rows, dtype=np.int64)
    return layout
