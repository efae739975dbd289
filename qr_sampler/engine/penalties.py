"""Presence, frequency and repetition penalties for V1 rows, computed by vLLM's own operator.

Why here: the V1 sampler runs custom (non-argmax-invariant) processors *before* its penalties,
so without this our selection would ignore a request's penalties (vLLM's later pass only sees
our one-hot row, which it cannot change). Calling vLLM's ``apply_penalties`` keeps the exact
semantics of the running vLLM version. Model Runner V2 applies penalties before custom
processors, so its adapter does not use this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qr_sampler.engine.requests import RequestState


def penalize_rows(logits: torch.Tensor, states: Sequence[RequestState]) -> torch.Tensor:
    """Apply each row's penalties in place to ``logits`` [R, V] (row i ↔ ``states[i]``)."""
    from vllm.model_executor.layers.utils import apply_penalties

    vocab = logits.shape[1]
    device = logits.device
    prompt = _padded([s.prompt_token_ids for s in states], vocab, device)
    output = _padded([tuple(s.output_token_ids or ()) for s in states], vocab, device)
    # Async scheduling may leave -1 placeholders in output lists: map them to the pad bin.
    output.masked_fill_(output < 0, vocab)  # in place on our own fresh tensor

    def per_row(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=logits.dtype, device=device)

    result: torch.Tensor = apply_penalties(
        logits,
        prompt,
        output,
        per_row([s.presence_penalty for s in states]),
        per_row([s.frequency_penalty for s in states]),
        per_row([s.repetition_penalty for s in states]),
    )
    return result


def _padded(lists: Sequence[Sequence[int]], pad: int, device: torch.device) -> torch.Tensor:
    """int64 [R, max(len)] padded with ``pad`` (vocab size: a bin no real token uses)."""
    width = max((len(x) for x in lists), default=0) or 1
    out = torch.full((len(lists), width), pad, dtype=torch.int64)
    for i, values in enumerate(lists):
        if values:
            out[i, : len(values)] = torch.tensor(values, dtype=torch.int64)
    return out.to(device)
