"""One engine step for either adapter: penalties (V1), sample, force — and never raise.

:class:`EngineStep` owns what an adapter instance needs for its lifetime: the settings loaded
once, the :class:`~qr_sampler.engine.slots.SlotTable` of requests, and — on the one rank per
model replica that draws (:mod:`~qr_sampler.engine.distributed`) — the entropy source, the
recorder (with the run's manifest), the metrics and the
:class:`~qr_sampler.sampler.TokenSampler`. ``run`` is the body of both adapters' ``apply``:

1. look up the sampling batch for this step's row layout (rebuilt only on a change);
2. V1 only: apply the rows' presence/frequency/repetition penalties with vLLM's own operator,
   because V1 runs custom processors *before* its penalties (V2 runs them after);
3. ``TokenSampler.sample``: fetch (concurrently), shape, amplify, choose, force, record;
4. under tensor parallelism: the drawer chooses without forcing, every rank receives its tokens
   over the TP group and forces them.

Nothing escapes ``run``: an exception leaves every row of the step to vLLM's own sampling (the
logits are restored if penalties had touched them), writes one flagged record per affected row
(``source="vllm"``, ``token_id=-1``: the token is vLLM's), and is logged once per kind.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from qr_sampler import host_kernels, omp_team
from qr_sampler.canvas import Forcing, force_in_place
from qr_sampler.diagnostics import TokenRecorder
from qr_sampler.engine.distributed import ReplicaLink
from qr_sampler.engine.penalties import PenaltyPlan, penalize_rows, plan_penalties
from qr_sampler.engine.requests import LEFT_TO_VLLM, RequestState, request_state
from qr_sampler.engine.slots import SlotTable
from qr_sampler.entropy.base import EntropySource
from qr_sampler.entropy.registry import build_entropy_source
from qr_sampler.entropy.system import warm_up_team
from qr_sampler.errors import EntropyUnavailableError
from qr_sampler.sampler import SamplingBatch, TokenSampler, per_row_tokens
from qr_sampler.settings import Settings

logger = logging.getLogger("qr_sampler.engine")


@dataclass(frozen=True)
class _BatchView:
    """Per-batch facts: the penalty plan of its penalized rows (V1), and where the request
    states of its rows are, for the records' output positions."""

    batch: SamplingBatch
    layout: np.ndarray
    penalties: PenaltyPlan | None

    def output_positions(self, table: SlotTable) -> np.ndarray | None:
        """Tokens each row's request had generated before this step (-1: unknown); None when
        the engine keeps no output lists (Model Runner V2). O(rows): only when recording."""
        states = table.rows_of(self.layout, self.batch.rows)
        if not any(s.output_token_ids is not None for s in states):
            return None
        return np.fromiter(
            (-1 if s.output_token_ids is None else len(s.output_token_ids) for s in states),
            dtype=np.int64,
            count=len(states),
        )


class EngineStep:
    """Per-adapter-instance state and the guarded per-step pipeline."""

    def __init__(
        self,
        settings: Settings,
        device: torch.device | str = "cpu",
        *,
        apply_penalties: bool = False,
        link: ReplicaLink | None = None,
        capacity: int = 256,
        model: str = "",
        forcing: Forcing = force_in_place,
    ) -> None:
        self.settings = settings
        self.forcing = forcing
        self.device = torch.device(device)
        self.apply_penalties = apply_penalties
        self.link = link or ReplicaLink.single()
        self.table = SlotTable(capacity, self.device)
        self.steps = 0
        self.errors = 0
        self._logged: set[str] = set()
        self._view: _BatchView | None = None
        # Only the drawing rank of a replica fetches, records and spends quota; a follower
        # never opens a channel to the entropy server.
        self.recorder: TokenRecorder | None = None
        if self.link.draws:
            # One engine per process; torch's team runs host kernels, so it follows them.
            host_kernels.ENABLED = omp_team.ENABLED = settings.host_kernels
            if self.device.type == "cpu":
                host_kernels.warm_up()  # compile now, not in the first request's step
                if settings.entropy_source_type == "system":  # drawn inline, on the team
                    warm_up_team()
            source = build_entropy_source(settings)
            self.recorder = _recorder(settings, source, self.link, model)
            self.sampler = TokenSampler(
                source, self.recorder, run_id=self.recorder.run_id, forcing=forcing
            )
        else:
            self.sampler = TokenSampler(_NoEntropy(), None, concurrent_fetch=False)

    def run(self, logits: torch.Tensor, layout: np.ndarray) -> torch.Tensor:
        """Force a token in every sampled row of ``logits`` [B, V]; ``layout[row]`` = slot.

        Returns the logits vLLM should use: ``logits`` forced in place, or the adapter's canvas
        (:mod:`qr_sampler.canvas`); ``logits`` untouched when nothing was forced. Never raises.
        """
        if not self.link.plan:
            self._draw(logits, layout, force=True)
            forced = self.sampler.forced_logits
            self.sampler.forced_logits = None  # hold no tensor of the engine's past this step
            return logits if forced is None else forced
        token_ids = self._draw(logits, layout, force=False) if self.link.draws else None
        token_ids = self.link.exchange(token_ids, logits.shape[0], logits.device)
        if token_ids is not None:
            try:
                return self.forcing(logits, token_ids)
            except Exception as exc:  # the engine dies on any exception here
                self.log_once("force", f"could not force the replica's tokens: {exc!r}")
        return logits

    def _draw(
        self, logits: torch.Tensor, layout: np.ndarray, *, force: bool
    ) -> torch.Tensor | None:
        """Choose (and with ``force`` force) every sampled row's token. Never raises.

        Without ``force``: the chosen token of every logits row (int64 [B] on the logits'
        device, -1 where not forced), or None when no row is forced this step. With ``force``
        the rows are forced here and None is returned.
        """
        batch: SamplingBatch | None = None
        saved: tuple[torch.Tensor, torch.Tensor] | None = None
        try:
            if len(layout) != logits.shape[0]:
                raise ValueError(f"{logits.shape[0]} logits rows but {len(layout)} row owners")
            unknown_before = self.table.unknown_rows
            batch = self.table.batch_for(layout)
            if self.table.unknown_rows != unknown_before:
                self.log_once(
                    "unknown-rows",
                    "some logits rows belong to no request this processor knows; "
                    "they are left to vLLM's sampling",
                )
            if not len(batch.rows):
                self._record_bypass_only(batch)
                return None
            view = self._view_of(batch, layout, logits)
            if view.penalties is not None:
                saved = self._penalize(logits, view.penalties)
            recorder = self.recorder
            positions = (
                view.output_positions(self.table)
                if recorder is not None and recorder.wants_records
                else None
            )
            result = self.sampler.sample(logits, batch, positions, force=force)
            self.steps += 1
            if force:  # already forced: nothing to hand on
                return None
            return per_row_tokens(result.device_token_ids, batch, logits.shape[0])
        except Exception as exc:  # the engine dies on any exception here: contain it
            self.errors += 1
            # A canvas this step may have written is not handed on: vLLM samples these rows
            # itself, as their records will say.
            self.sampler.forced_logits = None
            if saved is not None:
                logits.index_copy_(0, saved[0], saved[1])  # in place: undo our penalties
            reason = f"{type(exc).__name__}: {exc}"
            self.log_once(
                type(exc).__name__,
                f"step failed, rows left to vLLM's own sampling and flagged: {reason}",
            )
            if batch is not None and self.recorder is not None:
                try:
                    self.recorder.left_to_engine(
                        self.sampler.steps,
                        batch.request_ids.tolist(),
                        batch.config_hash.tolist(),
                        reason,
                    )
                except Exception:  # the recorder guards its I/O; this guards everything else
                    self.log_once("recorder", "could not record a failed step")
            return None

    def _record_bypass_only(self, batch: SamplingBatch) -> None:
        """A step with only opted-out rows still accounts for them (source "vllm")."""
        if self.recorder is not None and len(batch.bypass_rows):
            self.recorder.bypassed(self.sampler.steps, batch.bypass_ids.tolist())

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
        self, batch: SamplingBatch, layout: np.ndarray, logits: torch.Tensor
    ) -> _BatchView:
        """Per-batch facts, computed once per batch composition (the table caches ``batch``).

        Only the penalized rows' states are looked at (a numpy column says which), so a batch
        without penalties costs no per-row Python.
        """
        if self._view is None or self._view.batch is not batch:
            penalties = None
            if self.apply_penalties:
                slots = np.asarray(layout, dtype=np.int64)[batch.rows]
                picked = np.flatnonzero(self.table.penalized[slots])
                if len(picked):
                    rows = batch.rows[picked]
                    states = self.table.rows_of(layout, rows)
                    penalties = plan_penalties(rows.tolist(), states, logits)
            self._view = _BatchView(batch, np.asarray(layout, dtype=np.int64), penalties)
        return self._view

    def _penalize(
        self, logits: torch.Tensor, plan: PenaltyPlan
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Apply vLLM's penalties to the plan's rows; return what to restore on failure."""
        original = logits.index_select(0, plan.index)
        penalized = penalize_rows(original.clone(), plan)
        logits.index_copy_(0, plan.index, penalized)  # in place: the sampler reads these rows
        return plan.index, original

    def log_once(self, kind: str, message: str) -> None:
        if kind not in self._logged:
            self._logged.add(kind)
            logger.error("qr_sampler: %s", message)

    def states(self) -> dict[int, RequestState]:
        return self.table.states

    def close(self) -> None:
        self.sampler.close()


def _recorder(
    settings: Settings, source: EntropySource, link: ReplicaLink, model: str
) -> TokenRecorder:
    """The drawing rank's recorder: the run's manifest, and metrics when configured."""
    from qr_sampler.engine.runtime import vllm_version
    from qr_sampler.metrics import start_metrics
    from qr_sampler.provenance.manifest import build_manifest, new_run_id

    lay = link.layout
    manifest = build_manifest(
        settings,
        run_id=new_run_id(),
        model=model,
        vllm_version=vllm_version(),
        parallel={
            "tp": lay.tp_size,
            "pp": lay.pp_size,
            "dp": lay.dp_size,
            "dp_rank": lay.dp_rank,
        },
    )
    metrics = start_metrics(settings, source.health)
    return TokenRecorder.from_settings(settings, manifest=manifest, metrics=metrics)


class _NoEntropy(EntropySource):
    """The source of a follower rank: it never fetches (the drawer does), so asking is a bug."""

    name = "none"
    health_tested = False

    def get_random_bytes(self, n: int) -> bytes:
        raise EntropyUnavailableError("a follower rank does not fetch entropy")
