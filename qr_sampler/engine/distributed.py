"""One entropy draw per model replica: which rank draws, and how the others learn its tokens.

Under tensor parallelism every rank of a replica's TP group computes the same (all-gathered)
logits, runs the sampler and keeps the token it chose in its own KV cache; vLLM returns rank 0's
token to the user. If each rank drew its own entropy, the ranks would force different tokens and
silently diverge. So exactly one rank per replica — the *drawer* — shapes, fetches, amplifies,
chooses, records and spends quota; it then broadcasts the chosen token of every logits row
(int64 [B], -1 = "not forced, left to vLLM") over the TP process group vLLM already created,
and every rank forces exactly those tokens. Sending the tokens rather than u makes agreement
exact: no rank re-derives a choice from floating-point sums that could round differently.

Roles (:func:`replica_role`):

- pipeline parallel: only the last stage computes logits and samples (vLLM's
  ``gpu_model_runner``: non-last stages return intermediate tensors, and Model Runner V2's
  non-last stages receive the sampled tokens from the last one). Its TP rank 0 draws; its other
  TP ranks follow; earlier stages are idle. vLLM's torchrun mode (``external_launcher`` with
  PP > 1) broadcasts the logits to every stage, which then all sample: there every non-drawer
  follows, and the tokens go on from the last stage over the PP group as well.
- data parallel: each replica has its own TP group and draws on its own.

Invariant: on every rank that samples, :meth:`ReplicaLink.exchange` runs the same collectives in
the same order once per ``apply`` call, whatever happened before it (a failed fetch still sends
its fallback's tokens; a failed step sends -1 rows). A rank that skipped one would hang the
engine.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

import torch

from qr_sampler.selection import NOT_FORCED

logger = logging.getLogger("qr_sampler.engine")

Role = Literal["single", "draw", "follow", "idle"]



@dataclass(frozen=True)
class ParallelLayout:
    """Where this process sits in its replica (ranks are within the respective group)."""

    tp_rank: int = 0
    tp_size: int = 1
    pp_rank: int = 0
    pp_size: int = 1
    dp_rank: int = 0
    dp_size: int = 1
    #: vLLM's torchrun mode: every pipeline stage samples (``broadcast_pp_output``).
    all_stages_sample: bool = False

    @property
    def last_stage(self) -> bool:
        return self.pp_rank == self.pp_size - 1


def replica_role(layout: ParallelLayout) -> Role:
    """This process's part in its replica's draw (pure: unit-tested over whole grids)."""
    if layout.tp_size == 1 and (layout.pp_size == 1 or not layout.all_stages_sample):
        return "single" if layout.last_stage else "idle"
    if not layout.last_stage and not layout.all_stages_sample:
        return "idle"
    if layout.last_stage and layout.tp_rank == 0:
        return "draw"
    return "follow"


def collective_plan(layout: ParallelLayout) -> tuple[str, ...]:
    """The broadcasts every sampling rank of the replica runs per step, in order.

    ``"tp"``: from TP rank 0 within the TP group (on the last stage that is the drawer);
    ``"pp"``: then from the last stage within the PP group (torchrun mode only).
    """
    if replica_role(layout) == "idle":
        return ()
    plan: list[str] = []
    if layout.tp_size > 1:
        plan.append("tp")
    if layout.all_stages_sample and layout.pp_size > 1:
        plan.append("pp")
    return tuple(plan)


class ReplicaLink:
    """This process's role plus the process groups to run :func:`collective_plan` on.

    ``groups`` maps ``"tp"`` / ``"pp"`` to vLLM ``GroupCoordinator``-like objects with
    ``broadcast(tensor, src)`` (``src`` is the rank *within* the group) and ``world_size``.
    """

    def __init__(self, layout: ParallelLayout, groups: dict[str, Any] | None = None) -> None:
        self.layout = layout
        self.role: Role = replica_role(layout)
        self.plan = collective_plan(layout)
        self._groups = groups or {}
        missing = [name for name in self.plan if name not in self._groups]
        if missing:
            raise ValueError(f"process groups missing for {missing}")
        self.failed = 0

    @property
    def draws(self) -> bool:
        """True on the one rank per replica that fetches entropy, records and spends quota."""
        return self.role in ("single", "draw")

    @classmethod
    def single(cls) -> ReplicaLink:
        return cls(ParallelLayout())

    @classmethod
    def from_vllm(cls, vllm_config: Any) -> ReplicaLink:
        """The link for this worker, from vLLM's initialised process groups.

        Without initialised groups (a processor built outside a running engine, e.g. by
        tests or tools) the process is a replica of its own.
        """
        from vllm.distributed import parallel_state as ps

        if not ps.model_parallel_is_initialized():
            return cls.single()
        tp, pp = ps.get_tp_group(), ps.get_pp_group()
        parallel = getattr(vllm_config, "parallel_config", None)
        backend = getattr(parallel, "distributed_executor_backend", None)
        layout = ParallelLayout(
            tp_rank=tp.rank_in_group,
            tp_size=tp.world_size,
            pp_rank=pp.rank_in_group,
            pp_size=pp.world_size,
            dp_rank=int(getattr(parallel, "data_parallel_rank", 0) or 0),
            dp_size=int(getattr(parallel, "data_parallel_size", 1) or 1),
            all_stages_sample=backend == "external_launcher" and pp.world_size > 1,
        )
        return cls(layout, {"tp": tp, "pp": pp})

    def exchange(
        self, token_ids: torch.Tensor | None, rows: int, device: torch.device
    ) -> torch.Tensor | None:
        """Every rank's tokens for this step: the drawer's ``token_ids`` (int64 [rows]).

        The drawer passes its tokens (None when it forces nothing this step: then -1 rows are
        sent, so the collective still runs); followers pass None and receive. Never raises: a
        failed collective is logged and counted and returns None, which leaves this step's
        rows to vLLM (the engine may still fail on its own next collective).
        """
        if not self.plan:
            return token_ids
        try:
            buffer = token_ids
            if buffer is None:
                buffer = torch.full((rows,), NOT_FORCED, dtype=torch.int64, device=device)
            elif not self.draws:  # a follower never sends its own choice
                buffer = torch.full_like(buffer, NOT_FORCED)
            for name in self.plan:
                group = self._groups[name]
                # In place: the collective writes the source's values into ``buffer``.
                group.broadcast(buffer, src=0 if name == "tp" else group.world_size - 1)
            return buffer
        except Exception as exc:
            self.failed += 1
            if self.failed == 1:
                logger.error(
                    "qr_sampler: token broadcast within the model replica failed (%s: %s); "
                    "rows left to vLLM",
                    type(exc).__name__,
                    exc,
                )
            return None

    def describe(self) -> str:
        """One phrase for the start-up log line."""
        lay = self.layout
        if lay.tp_size == 1 and lay.pp_size == 1:
            where = "one rank per replica"
        else:
            where = f"TP rank {lay.tp_rank}/{lay.tp_size}, PP stage {lay.pp_rank}/{lay.pp_size}"
        if lay.dp_size > 1:
            where += f", DP replica {lay.dp_rank}/{lay.dp_size}"
        return f"{where}: {self.role}"
