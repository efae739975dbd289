"""One engine step for either adapter: penalties (V1), sample, force — and never raise.

:class:`EngineStep` owns what an adapter instance needs for its lifetime: the settings loaded
once, the entropy source, the recorder, the :class:`~qr_sampler.sampler.TokenSampler` and the
:class:`~qr_sampler.engine.rows.RowTable`. ``run`` is the body of both adapters' ``apply``:

1. look up the cached sampling batch for this step's row layout (rebuilt only on a change);
2. V1 only: apply the rows' presence/frequency/repetition penalties with vLLM's own operator,
   because V1 runs custom processors *before* its penalties (V2 runs them after);
3. ``TokenSampler.sample``: shape, one entropy fetch for all rows, amplify, choose, force, record.

Nothing escapes ``run``: an exception leaves every row of the step to vLLM's own sampling (the
logits are restored if penalties had touched them), writes one flagged record per affected row
(``source="vllm"``, ``token_id=-1``: the token is vLLM's), and is logged once per kind.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from qr_sampler.diagnostics import TokenRecorder
from qr_sampler.engine.distributed import NOT_FORCED, ReplicaLink, force_rows
from qr_sampler.engine.penalties import PenaltyPlan, penalize_rows, plan_penalties
from qr_sampler.engine.requests import LEFT_TO_VLLM, RequestState, request_state
from qr_sampler.engine.rows import RowTable
from qr_sampler.entropy.base import EntropySource
from qr_sampler.entropy.registry import build_entropy_source
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.sampler import SamplingBatch, TokenSampler
from qr_sampler.settings import Settings
from qr_sampler.types import SamplingConfig, TokenRecord

logger = logging.getLogger("qr_sampler.engine")


@dataclass(frozen=True)
class _BatchView:
    """The request states of a cached batch's sampled rows, and its penalty plan (V1)."""

    batch: SamplingBatch
    states: tuple[RequestState, ...]  # one per entry of batch.rows
    penalties: PenaltyPlan | None
    tracks_output: bool  # some row has vLLM's live output list (V1); none do under V2

    def output_positions(self) -> list[int] | None:
        """Tokens each row's request had generated before this step (-1: unknown); None when
        no row has an output list, so nothing is computed per step under Model Runner V2."""
        if not self.tracks_output:
            return None
        return [-1 if s.output_token_ids is None else len(s.output_token_ids) for s in self.states]


class EngineStep:
    """Per-adapter-instance state and the guarded per-step pipeline."""

    def __init__(
        self,
        settings: Settings,
        device: torch.device | str = "cpu",
        *,
        apply_penalties: bool = False,
        link: ReplicaLink | None = None,
    ) -> None:
        self.settings = settings
        self.device = torch.device(device)
        self.apply_penalties = apply_penalties
        self.link = link or ReplicaLink.single()
        # Only the drawing rank of a replica fetches, records and spends quota; a follower
        # never opens a channel to the entropy server.
        self.recorder = TokenRecorder.from_settings(settings)
        self.sampler = TokenSampler(
            build_entropy_source(settings) if self.link.draws else _NoEntropy(),
            self.recorder if self.link.draws else None,
        )
        self.table = RowTable(build_batch=self._build_batch)
        self.steps = 0
        self.errors = 0
        self._logged: set[str] = set()
        self._view: _BatchView | None = None

    def _build_batch(
        self, configs: Sequence[SamplingConfig], ids: Sequence[str], total: int
    ) -> SamplingBatch:
        return SamplingBatch.build(configs, ids, total_rows=total, device=self.device)

    def run(self, logits: torch.Tensor, layout: tuple[int, ...]) -> torch.Tensor:
        """Force a token in every sampled row of ``logits`` [B, V]; ``layout[row]`` = owner.

        Returns ``logits`` (modified in place). Never raises. Under tensor parallelism the
        drawer chooses without forcing, every rank receives its tokens, and every rank forces
        them (see :mod:`qr_sampler.engine.distributed`).
        """
        if not self.link.plan:
            return self._draw(logits, layout, force=True)[0]
        token_ids = self._draw(logits, layout, force=False)[1] if self.link.draws else None
        token_ids = self.link.exchange(token_ids, logits.shape[0], logits.device)
        if token_ids is not None:
            try:
                force_rows(logits, token_ids)
            except Exception as exc:  # the engine dies on any exception here
                self.log_once("force", f"could not force the replica's tokens: {exc!r}")
        return logits

    def _draw(
        self, logits: torch.Tensor, layout: tuple[int, ...], *, force: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Choose (and with ``force`` force) every sampled row's token. Never raises.

        Returns ``logits`` and the chosen token of every logits row (int64 [B] on the logits'
        device, -1 where not forced), or None when no row is forced this step.
        """
        batch: SamplingBatch | None = None
        chosen: torch.Tensor | None = None
        saved: tuple[torch.Tensor, torch.Tensor] | None = None
        try:
            if len(layout) != logits.shape[0]:
                raise ValueError(f"{logits.shape[0]} logits rows but {len(layout)} row owners")
            batch = self.table.batch_for(layout)
            if not batch.rows:
                return logits, None
            if self.table.unknown_rows:
                self.log_once(
                    "unknown-rows",
                    "some logits rows belong to no request this processor knows; "
                    "they are left to vLLM's sampling",
                )
            view = self._view_of(batch, layout, logits)
            if view.penalties is not None:
                saved = self._penalize(logits, view.penalties)
            result = self.sampler.sample(logits, batch, view.output_positions(), force=force)
            self.steps += 1
            if not force:
                chosen = _per_row(result.device_token_ids, batch, logits.shape[0])
        except Exception as exc:  # the engine dies on any exception here: contain it
            self.errors += 1
            if saved is not None:
                logits.index_copy_(0, saved[0], saved[1])  # in place: undo our penalties
            reason = f"{type(exc).__name__}: {exc}"
            self.log_once(
                type(exc).__name__,
                f"step failed, rows left to vLLM's own sampling and flagged: {reason}",
            )
            if batch is not None:
                self._record_left_to_vllm(batch, reason)
        return logits, chosen

    def request_state(
        self, params: Any, prompt_ids: list[int] | None = None, output_ids: list[int] | None = None
    ) -> RequestState:
        """The state an adapter keeps for a new request; on any error, a row left to vLLM."""
        try:
            return request_state(params, self.settings, prompt_ids, output_ids)
        except Exception as exc:  # validate_params should have refused it; leave it to vLLM
            self.log_once("request", f"request left to vLLM's sampling: {exc}")
            return LEFT_TO_VLLM

    def _view_of(
        self, batch: SamplingBatch, layout: tuple[int, ...], logits: torch.Tensor
    ) -> _BatchView:
        """Per-batch facts, computed once per batch composition (the table caches ``batch``)."""
        if self._view is None or self._view.batch is not batch:
            states = tuple(self.table.rows_of(layout, batch.rows))
            penalties = plan_penalties(batch.rows, states, logits) if self.apply_penalties else None
            tracks_output = any(s.output_token_ids is not None for s in states)
            self._view = _BatchView(batch, states, penalties, tracks_output)
        return self._view

    def _penalize(
        self, logits: torch.Tensor, plan: PenaltyPlan
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply vLLM's penalties to the plan's rows; return what to restore on failure."""
        original = logits.index_select(0, plan.index)
        penalized = penalize_rows(original.clone(), plan)
        logits.index_copy_(0, plan.index, penalized)  # in place: the sampler reads these rows
        return plan.index, original

    def _record_left_to_vllm(self, batch: SamplingBatch, reason: str) -> None:
        now = time.time_ns()
        records = tuple(
            TokenRecord(
                request_id=rid,
                token_id=-1,
                rank=-1,
                probability=0.0,
                num_candidates=0,
                temperature=0.0,
                entropy_nats=0.0,
                u=0.0,
                z=0.0,
                sample_mean=0.0,
                sample_count=0,
                source="vllm",
                fallback=True,
                fallback_reason=reason,
                device_id="",
                server_timestamp_ns=0,
                fetch_latency_us=0.0,
                timestamp_ns=now,
                config_hash=config.config_hash,
                greedy=config.is_greedy,
            )
            for rid, config in zip(batch.request_ids, batch.configs, strict=True)
        )
        try:
            self.recorder.record(records)
        except Exception:  # the recorder guards its I/O; this guards everything else
            self.log_once("recorder", "could not record a failed step")

    def log_once(self, kind: str, message: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            logger.error("qr_sampler: %s", message)

    def states(self) -> dict[int, RequestState]:
        return self.table.states

    def close(self) -> None:
        self.sampler.close()


def _per_row(token_ids: torch.Tensor, batch: SamplingBatch, rows: int) -> torch.Tensor:
    """int64 [rows]: ``token_ids`` [len(batch.rows)] placed at their logits rows, -1 elsewhere."""
    if batch.row_index is None:
        return token_ids
    out = torch.full((rows,), NOT_FORCED, dtype=torch.int64, device=token_ids.device)
    out.index_copy_(0, batch.row_index, token_ids)  # in place on our own fresh tensor
    return out


class _NoEntropy(EntropySource):
    """The source of a follower rank: it never fetches (the drawer does), so asking is a bug."""

    name = "none"

    def get_random_bytes(self, n: int) -> bytes:
        raise EntropyUnavailableError("a follower rank does not fetch entropy")
