"""The engine-neutral sampler: one call per engine step picks every sampled row's token.

Per step (``TokenSampler.sample``):

1. shape every sampled row's distribution (selection.shape) — the logits already exist;
2. fetch entropy once for all rows that need it (greedy rows need none), *after* step 1, so the
   bytes are drawn just-in-time for distributions that are already fixed;
3. amplify each row's bytes to u (amplification.amplify);
4. choose each row's token (selection.choose);
5. force it: the row becomes one-hot in place (selection.force_tokens);
6. record provenance (diagnostics.TokenRecorder), when a recorder is attached.

Engine adapters (vLLM V1, Model Runner V2) keep a :class:`SamplingBatch` per batch composition
and call :meth:`TokenSampler.sample`. ``sample`` raises only EntropyError, and only when no
fallback is configured (``QR_FALLBACK_MODE=error``); adapters decide what the engine does then.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qr_sampler.amplification import Amplified, amplify
from qr_sampler.diagnostics import TokenRecorder
from qr_sampler.entropy.base import EntropySource
from qr_sampler.selection import (
    SelectionParams,
    choose,
    force_tokens,
    shape,
)
from qr_sampler.types import EntropyBatch, SamplingConfig, TokenRecord


@dataclass(frozen=True)
class SamplingBatch:
    """What stays fixed while the engine's batch composition does not change.

    ``rows`` are the logits rows this sampler decides (bypass rows are left to the engine);
    ``entropy_rows`` index into ``rows`` for the rows that need entropy (not greedy).
    """

    configs: tuple[SamplingConfig, ...]  # one per entry of ``rows``
    request_ids: tuple[str, ...]
    rows: tuple[int, ...]
    row_index: torch.Tensor | None  # int64 [len(rows)], None when rows == all rows
    params: SelectionParams
    entropy_rows: tuple[int, ...]
    entropy_index: torch.Tensor  # int64 [len(entropy_rows)]
    counts: tuple[int, ...]  # bytes per entropy row
    mean: np.ndarray  # float64 [len(entropy_rows)]
    std: np.ndarray
    epsilon: np.ndarray

    @classmethod
    def build(
        cls,
        configs: Sequence[SamplingConfig],
        request_ids: Sequence[str] | None = None,
        total_rows: int | None = None,
        device: torch.device | str = "cpu",
    ) -> SamplingBatch:
        """``configs[i]`` belongs to logits row i; ``total_rows`` defaults to len(configs)."""
        total_rows = len(configs) if total_rows is None else total_rows
        ids = (
            tuple(request_ids)
            if request_ids is not None
            else tuple(str(i) for i in range(len(configs)))
        )
        rows = tuple(i for i, c in enumerate(configs) if not c.bypass)
        kept = tuple(configs[i] for i in rows)
        entropy_rows = tuple(j for j, c in enumerate(kept) if not c.is_greedy)
        entropy_configs = [kept[j] for j in entropy_rows]
        all_rows = len(rows) == total_rows
        return cls(
            configs=kept,
            request_ids=tuple(ids[i] for i in rows),
            rows=rows,
            row_index=None if all_rows else torch.tensor(rows, dtype=torch.int64, device=device),
            params=SelectionParams.from_configs(kept, device=device),
            entropy_rows=entropy_rows,
            entropy_index=torch.tensor(entropy_rows, dtype=torch.int64),
            counts=tuple(c.sample_count for c in entropy_configs),
            mean=np.array([c.population_mean for c in entropy_configs], dtype=np.float64),
            std=np.array([c.population_std for c in entropy_configs], dtype=np.float64),
            epsilon=np.array([c.uniform_clamp_epsilon for c in entropy_configs], dtype=np.float64),
        )


@dataclass(frozen=True)
class StepResult:
    """What one step chose. Tensors are on CPU, indexed like ``SamplingBatch.rows``."""

    rows: tuple[int, ...]
    token_ids: torch.Tensor  # int64 [R]
    u: torch.Tensor  # float64 [R]; 0.5 placeholder for greedy rows
    #: The chosen tokens on the logits' device (int64 [R]), for engines that force elsewhere.
    device_token_ids: torch.Tensor
    entropy: EntropyBatch | None
    records: tuple[TokenRecord, ...]


class TokenSampler:
    """Runs the per-step pipeline for any engine. Thread-compatible: one step at a time."""

    def __init__(self, source: EntropySource, recorder: TokenRecorder | None = None) -> None:
        self.source = source
        self.recorder = recorder
        self.steps = 0

    def sample(
        self,
        logits: torch.Tensor,
        batch: SamplingBatch,
        output_index: Sequence[int] | None = None,
        *,
        force: bool = True,
    ) -> StepResult:
        """Choose and force a token for every row in ``batch.rows`` of ``logits`` [B, V].

        ``output_index[i]`` (optional, one per entry of ``batch.rows``) is how many tokens row
        i's request had generated before this step; it goes into the records. ``force=False``
        leaves ``logits`` as they are (a tensor-parallel engine forces on every rank itself).
        """
        if not batch.rows:
            empty = torch.empty(0, dtype=torch.int64)
            return StepResult((), empty, torch.empty(0, dtype=torch.float64), empty, None, ())
        self.steps += 1
        sub = logits if batch.row_index is None else logits.index_select(0, batch.row_index)
        candidates = shape(sub, batch.params)

        u = torch.full((len(batch.rows),), 0.5, dtype=torch.float64)
        fetched: EntropyBatch | None = None
        amplified: Amplified | None = None
        if batch.entropy_rows:
            fetched = self.source.get_random_bytes_batch(batch.counts)
            amplified = amplify(fetched.data, batch.counts, batch.mean, batch.std, batch.epsilon)
            u[batch.entropy_index] = torch.from_numpy(amplified.u)
        selection = choose(candidates, u.to(sub.device))
        if force:
            force_tokens(logits, selection.token_ids, batch.row_index)

        if self.recorder is None:
            return StepResult(
                batch.rows, selection.token_ids.cpu(), u, selection.token_ids, fetched, ()
            )
        # Two device-to-host copies per step for everything the records need.
        ints = torch.stack([selection.token_ids, selection.ranks, candidates.num_kept]).cpu()
        floats = torch.stack(
            [selection.probs, candidates.temperature.to(selection.probs), candidates.entropy()]
        ).cpu()
        records = self._records(
            batch, ints, floats, u, fetched, amplified, output_index, self.steps
        )
        self.recorder.record(records)
        return StepResult(batch.rows, ints[0], u, selection.token_ids, fetched, records)

    def close(self) -> None:
        self.source.close()
        if self.recorder is not None:
            self.recorder.close()

    @staticmethod
    def _records(
        batch: SamplingBatch,
        ints: torch.Tensor,
        floats: torch.Tensor,
        u: torch.Tensor,
        fetched: EntropyBatch | None,
        amplified: Amplified | None,
        output_index: Sequence[int] | None,
        step: int = 0,
    ) -> tuple[TokenRecord, ...]:
        """One record per row from CPU tensors: ``ints`` [3, R] = token id, rank, candidates;
        ``floats`` [3, R] = probability, temperature, entropy."""
        n = len(batch.rows)
        positions = list(output_index) if output_index is not None else [-1] * n
        z = [0.0] * n
        means = [0.0] * n
        counts = [0] * n
        if amplified is not None:
            for j, zj, mj, cj in zip(
                batch.entropy_rows,
                amplified.z.tolist(),
                amplified.sample_mean.tolist(),
                batch.counts,
                strict=True,
            ):
                z[j], means[j], counts[j] = zj, mj, cj
        token_ids, ranks, num_kept = ints.tolist()
        probs, temps, ents = floats.tolist()
        us = u.tolist()
        now = time.time_ns()
        src = fetched or EntropyBatch(data=b"", counts=(), source="none")
        return tuple(
            TokenRecord(
                request_id=batch.request_ids[i],
                token_id=token_ids[i],
                rank=ranks[i],
                probability=probs[i],
                num_candidates=num_kept[i],
                temperature=temps[i],
                entropy_nats=ents[i],
                u=us[i],
                z=z[i],
                sample_mean=means[i],
                sample_count=counts[i],
                source=src.source if counts[i] else "none",
                fallback=src.fallback and counts[i] > 0,
                fallback_reason=src.fallback_reason,
                device_id=src.device_id,
                server_timestamp_ns=src.generation_timestamp_ns,
                fetch_latency_us=src.latency_ns / 1000.0,
                timestamp_ns=now,
                config_hash=batch.configs[i].config_hash,
                greedy=batch.configs[i].is_greedy,
                output_index=positions[i],
                step=step,
            )
            for i in range(n)
        )
