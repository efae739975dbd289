"""The engine-neutral sampler: one call per engine step picks every sampled row's token.

Per step (``TokenSampler.sample``):

1. start the entropy fetch for every row that needs it (greedy rows need none) — the logits
   already exist, so the bytes are drawn just-in-time; a worker thread waits for them while
2. this thread shapes every sampled row's distribution (selection.shape) — except for a
   generator's bytes on a CPU host, drawn inline first (see ``TokenSampler._start_fetch``);
3. amplify each row's bytes to u (amplification.amplify), on the host, into a reused buffer;
4. choose each row's token (selection.choose);
5. force it: the row becomes one-hot, in place or on a reused canvas (:mod:`qr_sampler.canvas`);
   optional: a tensor-parallel engine forces on every rank itself;
6. hand the step's columnar result to the recorder, which builds records off this thread only
   when a sink wants them.

Failures: a fetch that fails with a fallback configured comes back as flagged fallback bytes
(the source wrapper decides). With ``QR_FALLBACK_MODE=error`` no other randomness may choose:
rows that needed entropy are *force-stopped* (their request's stop token is forced; a request
that ignores EOS and has no stop token gets its argmax, deterministic) and their records say
why. A row whose logits have no finite value is left to the engine (token -1) and recorded.

Engine adapters keep per-request state in slots and hand :meth:`TokenSampler.sample` a
:class:`SamplingBatch` built from it each step; tools and tests build one from configs.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch

from qr_sampler.amplification import Amplified, amplify
from qr_sampler.canvas import Forcing, force_in_place
from qr_sampler.entropy.base import EntropySource
from qr_sampler.errors import EntropyError
from qr_sampler.omp_team import engine_thread
from qr_sampler.selection import NOT_FORCED, SelectionParams, choose, shape
from qr_sampler.types import EntropyBatch, SamplingConfig

if TYPE_CHECKING:
    from qr_sampler.diagnostics import TokenRecorder


@dataclass(frozen=True)
class SamplingBatch:
    """The rows one step samples and their settings, columnar (index i = ``rows[i]``).

    Rows that opt out (``bypass``) are not in ``rows``; they are listed in ``bypass_rows`` so
    they can still be recorded.
    """

    total_rows: int
    rows: np.ndarray  # int64 [S]: the logits rows this sampler decides, ascending
    row_index: torch.Tensor | None  # int64 [S] on the device; None when rows == all rows
    params: SelectionParams  # [S]
    counts: np.ndarray  # int64 [S]: entropy bytes per row, 0 for greedy rows
    mean: np.ndarray  # float64 [S]
    std: np.ndarray  # float64 [S]
    epsilon: np.ndarray  # float64 [S]
    stop_tokens: np.ndarray  # int64 [S]: token that ends the request, -1 = none known
    request_ids: np.ndarray  # object [S]
    choice_index: np.ndarray  # int64 [S]
    config_hash: np.ndarray  # object [S]
    bypass_rows: np.ndarray  # int64: rows left to the engine by request
    bypass_ids: np.ndarray  # object: their request ids

    @cached_property
    def entropy_rows(self) -> np.ndarray:
        """Indices into ``rows`` of the rows that need entropy (once per batch)."""
        return np.flatnonzero(self.counts)

    @classmethod
    def build(
        cls,
        configs: Sequence[SamplingConfig],
        request_ids: Sequence[str] | None = None,
        total_rows: int | None = None,
        device: torch.device | str = "cpu",
    ) -> SamplingBatch:
        """``configs[i]`` belongs to logits row i; ``total_rows`` defaults to len(configs)."""
        ids = np.array(
            list(request_ids) if request_ids is not None else [str(i) for i in range(len(configs))],
            dtype=object,
        )
        bypass = np.array([c.bypass for c in configs], dtype=bool)
        rows = np.flatnonzero(~bypass)
        kept = [configs[i] for i in rows]
        return cls.assemble(
            total_rows=len(configs) if total_rows is None else total_rows,
            rows=rows,
            params=SelectionParams.from_configs(kept, device=device),
            counts=np.array([0 if c.is_greedy else c.sample_count for c in kept], np.int64),
            mean=np.array([c.population_mean for c in kept], dtype=np.float64),
            std=np.array([c.population_std for c in kept], dtype=np.float64),
            epsilon=np.array([c.uniform_clamp_epsilon for c in kept], dtype=np.float64),
            stop_tokens=np.full(len(kept), -1, dtype=np.int64),
            request_ids=ids[rows],
            choice_index=np.zeros(len(kept), dtype=np.int64),
            config_hash=np.array([c.config_hash for c in kept], dtype=object),
            bypass_rows=np.flatnonzero(bypass),
            bypass_ids=ids[bypass],
            device=device,
        )

    @classmethod
    def assemble(cls, *, total_rows: int, rows: np.ndarray, device: torch.device | str,
                 **columns: object) -> SamplingBatch:
        """From columns already gathered (the engine's slot table builds them per step)."""
        all_rows = len(rows) == total_rows  # rows ascending and unique: then 0..total-1
        row_index = None
        if not all_rows:
            row_index = torch.from_numpy(rows).to(torch.device(device), non_blocking=True)
        return cls(total_rows=total_rows, rows=rows, row_index=row_index, **columns)  # type: ignore[arg-type]


@dataclass
class StepResult:
    """What one step chose, columnar; index i belongs to ``batch.rows[i]``.

    Tensors stay where the step computed them (the logits' device); records are built from
    them later, off the engine's thread, and only when a sink wants them.
    """

    step: int
    batch: SamplingBatch
    device_token_ids: torch.Tensor  # int64 [S]: the chosen token, -1 = left to the engine
    ranks: torch.Tensor  # int64 [S]
    probs: torch.Tensor  # float64 [S]
    num_kept: torch.Tensor  # int64 [S]
    temperature: torch.Tensor  # float64 [S]
    entropy_nats: torch.Tensor | None  # float64 [S], computed only when records are wanted
    u: np.ndarray  # float64 [S]; 0.5 where no entropy was used
    z: np.ndarray  # float64 [S]; 0 where no entropy was used
    sample_mean: np.ndarray  # float64 [S]
    entropy: EntropyBatch | None  # the step's bytes and their provenance
    error: EntropyError | None  # the fetch failed and no fallback served (forced stop)
    forced_stop: np.ndarray  # bool [S]
    nonce: bytes
    timestamp_ns: int
    output_index: np.ndarray | None = None  # int64 [S]: tokens the request had before
    #: Set by the recorder when it copies the device columns to the host (non-blocking).
    host_columns: object = None

    @property
    def rows(self) -> tuple[int, ...]:
        return tuple(self.batch.rows.tolist())

    @property
    def token_ids(self) -> torch.Tensor:
        """The chosen tokens on the host (a device read: tools and tests, not the hot path)."""
        return self.device_token_ids.cpu()


class TokenSampler:
    """Runs the per-step pipeline for any engine. One step at a time (not re-entrant).

    ``run_id`` names this sampler's run in the nonces (a fresh random id by default).
    ``forcing`` makes the chosen rows one-hot (in place by default; see :mod:`qr_sampler.canvas`);
    after a forcing step, :attr:`forced_logits` is the tensor the engine should use.
    """

    def __init__(
        self,
        source: EntropySource,
        recorder: TokenRecorder | None = None,
        *,
        run_id: str | None = None,
        concurrent_fetch: bool = True,
        forcing: Forcing = force_in_place,
    ) -> None:
        self.source = source
        self.forcing = forcing
        self.forced_logits: torch.Tensor | None = None
        self.recorder = recorder
        self.run_id = run_id or os.urandom(8).hex()
        self.steps = 0
        self._run_bytes = self.run_id.encode()
        # The previous step's chosen ids, where that step left them: read when the next nonce
        # is made, by which time the engine has long finished that step (no sync per step).
        self._previous_tokens: torch.Tensor | None = None
        self._pinned_u: torch.Tensor | None = None
        self._fetcher = _FetchWorker(source) if concurrent_fetch else None

    def nonce_for(self, step: int) -> bytes:
        """SHA-256 over the run id, the step and the previous step's chosen token ids."""
        h = hashlib.sha256(self._run_bytes)
        h.update(step.to_bytes(8, "little"))
        if self._previous_tokens is not None:
            h.update(self._previous_tokens.cpu().numpy().astype("<i8").tobytes())
        return h.digest()

    def sample(
        self,
        logits: torch.Tensor,
        batch: SamplingBatch,
        output_index: Sequence[int] | np.ndarray | None = None,
        *,
        force: bool = True,
    ) -> StepResult:
        """Choose (and with ``force``, force) a token for every row in ``batch.rows``.

        ``logits`` [B, V]. ``output_index[i]`` (optional) is how many tokens the request of
        ``batch.rows[i]`` had generated before this step; it goes into the records. Raises only
        on a programming error; entropy failures become fallback or forced stops (see module).
        """
        self.steps += 1
        step = self.steps
        self.forced_logits = None
        entropy_rows = batch.entropy_rows
        nonce = self.nonce_for(step) if len(entropy_rows) else b""
        job = (self._start_fetch(batch, entropy_rows, nonce, logits.device)
               if len(entropy_rows) else None)  # fmt: skip

        sub = logits if batch.row_index is None else logits.index_select(0, batch.row_index)
        candidates = shape(sub, batch.params)

        n = len(batch.rows)
        u = np.full(n, 0.5, dtype=np.float64)
        z = np.zeros(n, dtype=np.float64)
        mean = np.zeros(n, dtype=np.float64)
        forced_stop = np.zeros(n, dtype=bool)
        fetched: EntropyBatch | None = None
        error: EntropyError | None = None
        if job is not None:
            job.done.wait()
            fetched, error, amplified = job.result, job.error, job.amplified
            if amplified is not None:
                rows = entropy_rows
                u[rows], z[rows], mean[rows] = amplified.u, amplified.z, amplified.sample_mean
            else:
                # No randomness may choose: u = 0 picks the argmax, replaced below by the
                # request's stop token where one is known.
                forced_stop[entropy_rows] = True
                u[entropy_rows] = 0.0
        selection = choose(candidates, self._u_on(sub.device, u))
        token_ids = selection.token_ids
        if forced_stop.any():
            token_ids = self._stop_tokens(token_ids, batch, forced_stop)
        if force:
            self.forced_logits = self.forcing(
                logits, per_row_tokens(token_ids, batch, logits.shape[0])
            )

        result = StepResult(
            step=step,
            batch=batch,
            device_token_ids=token_ids,
            ranks=selection.ranks,
            probs=selection.probs,
            num_kept=candidates.num_kept,
            temperature=candidates.temperature,
            entropy_nats=None,
            u=u,
            z=z,
            sample_mean=mean,
            entropy=fetched,
            error=error,
            forced_stop=forced_stop,
            nonce=nonce,
            timestamp_ns=time.time_ns(),
            output_index=None if output_index is None else np.asarray(output_index, np.int64),
        )
        if self.recorder is not None and self.recorder.wants_records:
            result.entropy_nats = candidates.entropy()
        self._previous_tokens = token_ids
        if self.recorder is not None:
            self.recorder.submit(result)
        return result

    def _u_on(self, device: torch.device, u: np.ndarray) -> torch.Tensor:
        """u on the logits' device; on an accelerator through one reused pinned buffer, so
        the copy is non-blocking and no step allocates page-locked memory. (The buffer is
        rewritten only at the next step, after the engine synchronised on this one.)"""
        host = torch.from_numpy(u)
        if device.type == "cpu":
            return host
        if self._pinned_u is None or self._pinned_u.numel() < len(u):
            self._pinned_u = torch.empty(max(len(u), 256), dtype=torch.float64, pin_memory=True)
        staged = self._pinned_u[: len(u)]
        staged.copy_(host)  # in place: our own pinned staging buffer
        return staged.to(device, non_blocking=True)

    def _start_fetch(
        self, batch: SamplingBatch, rows: np.ndarray, nonce: bytes, device: torch.device
    ) -> _FetchJob:
        """The step's fetch: on the worker thread when it is a wait (or the tensor work is on an
        accelerator); inline when it is CPU work on a CPU host. There a thread of ours would
        share the cores with torch's OpenMP threads, which spin for milliseconds after the
        model's parallel passes (vLLM's CPU worker binds them, and ours inherit the binding);
        so this thread draws first, and hands a large draw to torch's team itself
        (:func:`qr_sampler.omp_team.engine_thread`)."""
        job = _FetchJob(
            batch.counts[rows], nonce, (batch.mean[rows], batch.std[rows], batch.epsilon[rows])
        )
        if self.source.fetch_uses_cpu and device.type == "cpu":
            with engine_thread():  # the other cores are torch's team's, spinning
                job.run(self.source)
        elif self._fetcher is None:
            job.run(self.source)
        else:
            self._fetcher.submit(job)
        return job

    @staticmethod
    def _stop_tokens(
        token_ids: torch.Tensor, batch: SamplingBatch, forced_stop: np.ndarray
    ) -> torch.Tensor:
        """Rows whose entropy failed: their stop token, or their argmax (u = 0) when none is
        known (a request that ignores EOS and has no stop token cannot be stopped)."""
        stop = batch.stop_tokens
        known = forced_stop & (stop >= 0)
        if not known.any():
            return token_ids
        values = torch.from_numpy(np.where(known, stop, -1)).to(token_ids.device)
        return torch.where(values >= 0, values, token_ids)

    def close(self) -> None:
        if self._fetcher is not None:
            self._fetcher.close()
        self.source.close()
        if self.recorder is not None:
            self.recorder.close()


def per_row_tokens(token_ids: torch.Tensor, batch: SamplingBatch, rows: int) -> torch.Tensor:
    """int64 [rows]: ``token_ids`` [S] placed at their logits rows, -1 elsewhere."""
    if batch.row_index is None:
        return token_ids
    out = torch.full((rows,), NOT_FORCED, dtype=torch.int64, device=token_ids.device)
    out.index_copy_(0, batch.row_index, token_ids)  # in place on our own fresh tensor
    return out


class _FetchJob:
    """One step's fetch and its amplification: filled by the worker thread (or inline), waited
    on by the step. The byte sums release the GIL too, so they overlap like the fetch."""

    __slots__ = ("amplified", "done", "error", "nonce", "population", "result", "sizes")

    def __init__(
        self,
        sizes: np.ndarray,
        nonce: bytes,
        population: tuple[np.ndarray, np.ndarray, np.ndarray],
    ) -> None:
        self.sizes = sizes  # int64 [rows]: bytes per row
        self.nonce = nonce
        self.population = population  # per row: mean, std, epsilon
        self.done = threading.Event()
        self.result: EntropyBatch | None = None
        self.amplified: Amplified | None = None
        self.error: EntropyError | None = None

    def run(self, source: EntropySource) -> None:
        try:
            self.result = source.fetch_batch(tuple(self.sizes.tolist()), self.nonce)
            self.amplified = amplify(self.result.data, self.sizes, *self.population)
        except EntropyError as exc:
            self.error = exc
        except Exception as exc:  # a source bug must not kill the engine: treat as a failure
            self.result = None
            self.error = EntropyError(f"{type(exc).__name__}: {exc}")
        finally:
            self.done.set()


class _FetchWorker:
    """A daemon thread that runs fetches while the engine thread shapes the distributions.

    Fetching blocks on I/O (gRPC) or the kernel (``getrandom``), both without the GIL, so the
    wait overlaps with the tensor work of the same step. One job at a time, in order.
    """

    def __init__(self, source: EntropySource) -> None:
        self._source = source
        self._jobs: queue.SimpleQueue[_FetchJob | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def submit(self, job: _FetchJob) -> None:
        if self._thread is None:
            with self._lock:
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._loop, name="qr-sampler-fetch", daemon=True
                    )
                    self._thread.start()
        self._jobs.put(job)

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            job.run(self._source)

    def close(self) -> None:
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join(timeout=5)
            self._thread = None
