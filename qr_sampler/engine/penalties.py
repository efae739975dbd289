"""Presence, frequency and repetition penalties for V1 rows, computed by vLLM's own operator.

Why here: the V1 sampler runs custom (non-argmax-invariant) processors *before* its penalties,
so without this our selection would ignore a request's penalties (vLLM's later pass only sees
our one-hot row, which it cannot change). Calling vLLM's ``apply_penalties`` keeps the exact
semantics of the running vLLM version. Model Runner V2 applies penalties before custom
processors, so its adapter does not use this module.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qr_sampler.engine.requests import RequestState


@dataclass(frozen=True)
class PenaltyPlan:
    """What stays fixed while the batch composition does not: which logits rows have penalties,
    their requests, padded prompts and penalty values. Only the output lists change per step."""

    index: torch.Tensor  # int64 [P]: logits rows with any penalty
    states: tuple[RequestState, ...]  # [P]
    prompt: torch.Tensor  # int64 [P, L], padded with the vocabulary size
    presence: torch.Tensor  # [P], logits dtype
    frequency: torch.Tensor
    repetition: torch.Tensor


def plan_penalties(
    rows: Sequence[int], states: Sequence[RequestState], logits: torch.Tensor
) -> PenaltyPlan | None:
    """The plan for the penalized rows among ``rows`` (None when no row has a penalty)."""
    picked = [(row, s) for row, s in zip(rows, states, strict=True) if s.penalized]
    if not picked:
        return None
    device, dtype, vocab = logits.device, logits.dtype, logits.shape[1]
    chosen = tuple(s for _, s in picked)

    def per_row(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=dtype, device=device)

    return PenaltyPlan(
        index=torch.tensor([row for row, _ in picked], dtype=torch.int64, device=device),
        states=chosen,
        prompt=_padded([s.prompt_token_ids for s in chosen], vocab, device),
        presence=per_row([s.presence_penalty for s in chosen]),
        frequency=per_row([s.frequency_penalty for s in chosen]),
        repetition=per_row([s.repetition_penalty for s in chosen]),
    )


def penalize_rows(logits: torch.Tensor, plan: PenaltyPlan) -> torch.Tensor:
    """Apply the plan's penalties to ``logits`` [P, V] (row i ↔ ``plan.states[i]``), in place."""
    from vllm.model_executor.layers.utils import apply_penalties

    vocab = logits.shape[1]
    output = _padded([tuple(s.output_token_ids or ()) for s in plan.states], vocab, logits.device)
    # Async scheduling may leave -1 placeholders in output lists: map them to the pad bin.
    output.masked_fill_(output < 0, vocab)  # in place on our own fresh tensor
    result: torch.Tensor = apply_penalties(
        logits, plan.prompt, output, plan.presence, plan.frequency, plan.repetition
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
