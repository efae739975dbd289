"""Where each step's results go: counters on the engine thread, records off it.

The engine thread hands :meth:`TokenRecorder.submit` one columnar
:class:`~qr_sampler.sampler.StepResult` per step and pays only for counting (and, on a GPU, for
issuing one non-blocking copy of the step's device columns). Everything per token — the record
dicts, each row's ``entropy_sha256``, the raw-byte archive (``QR_ENTROPY_ARCHIVE_PATH``), the
hash-chained JSONL file (``QR_DIAGNOSTICS_PATH``, see :mod:`qr_sampler.provenance`), per-token
log lines — happens on one background writer thread, and only when one of those sinks is on
(:attr:`TokenRecorder.wants_records`).

Records are therefore written shortly *after* the step, in step order; :meth:`flush` waits for
them (tests, shutdown). The writer never raises into the engine: a sink's I/O error switches
that sink off, is logged once and shows in :meth:`health`. The queue is bounded: when the disk
cannot keep up, the engine waits rather than losing provenance (logged once).

Log levels (``QR_LOG_LEVEL``): ``none``; ``summary`` — one INFO line per ``summary_every``
tokens with totals; ``full`` — one INFO line per token (for debugging; slow).
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import math
import queue
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qr_sampler.provenance.chain import encode_body
from qr_sampler.types import TokenRecord

if TYPE_CHECKING:
    import torch

    from qr_sampler.metrics import SamplerMetrics
    from qr_sampler.provenance.archive import EntropyArchive
    from qr_sampler.provenance.journal import RecordJournal
    from qr_sampler.sampler import StepResult
    from qr_sampler.settings import Settings

logger = logging.getLogger("qr_sampler.tokens")

#: Steps that may wait for the writer before the engine blocks on it.
_QUEUE_STEPS = 256
_TOKEN_FIELDS = tuple(f.name for f in fields(TokenRecord))


@dataclass(frozen=True)
class _Columns:
    """A step's device columns on the host, as numpy arrays (index = position in the batch)."""

    token_ids: np.ndarray
    ranks: np.ndarray
    num_kept: np.ndarray
    probs: np.ndarray
    temperature: np.ndarray
    entropy: np.ndarray


class TokenRecorder:
    """Counts every step; builds, hashes, archives and writes records in the background.

    ``capacity`` bounds the in-memory window of recent records (:meth:`recent`); 0 keeps none.
    """

    def __init__(
        self,
        log_level: str = "summary",
        diagnostics_path: str | Path = "",
        capacity: int = 1024,
        summary_every: int = 1000,
        *,
        diagnostics_max_bytes: int = 0,
        archive_path: str | Path = "",
        archive_max_bytes: int = 0,
        manifest: Mapping[str, Any] | None = None,
        metrics: SamplerMetrics | None = None,
    ) -> None:
        self.log_level = log_level
        self.path = Path(diagnostics_path) if diagnostics_path else None
        self.archive_path = Path(archive_path) if archive_path else None
        self.summary_every = summary_every
        self.metrics = metrics
        self._manifest = dict(manifest or {})
        self.run_id = str(self._manifest.get("run_id", ""))
        self._diagnostics_max_bytes = diagnostics_max_bytes
        self._archive_max_bytes = archive_max_bytes
        self._recent: deque[bytes] = deque(maxlen=max(capacity, 0) or 1)
        self._keep_recent = capacity > 0
        self.wants_records = bool(
            self.path or self.archive_path or log_level == "full" or self._keep_recent
        )
        self._lock = threading.Lock()
        self._journal: RecordJournal | None = None
        self._archive: EntropyArchive | None = None
        self._queue: queue.Queue[StepResult | list[dict[str, Any]] | None] = queue.Queue(
            _QUEUE_STEPS
        )
        self._pending = 0
        self._idle = threading.Condition(self._lock)
        self._thread: threading.Thread | None = None
        self._closed = False
        self._warned_full = False
        self.total = 0
        self.fallback_total = 0
        self.forced_stops = 0
        self.records_written = 0
        self._since_summary = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        manifest: Mapping[str, Any] | None = None,
        metrics: SamplerMetrics | None = None,
    ) -> TokenRecorder:
        """The engine's recorder: an in-memory window only when records are built anyway."""
        records_wanted = bool(
            settings.diagnostics_path
            or settings.entropy_archive_path
            or settings.log_level == "full"
        )
        return cls(
            log_level=settings.log_level,
            diagnostics_path=settings.diagnostics_path,
            capacity=1024 if records_wanted else 0,
            diagnostics_max_bytes=settings.diagnostics_max_bytes,
            archive_path=settings.entropy_archive_path,
            archive_max_bytes=settings.entropy_archive_max_bytes,
            manifest=manifest,
            metrics=metrics,
        )

    # --- engine thread ----------------------------------------------------------------------

    def submit(self, result: StepResult) -> None:
        """Count one step and queue it for the writer. Cheap; never raises on I/O."""
        batch = result.batch
        sampled = len(batch.rows)
        entropy_rows = len(batch.entropy_rows)
        fetched = result.entropy
        failed = result.error is not None or (fetched is not None and fetched.fallback)
        fallback = entropy_rows if failed else 0
        stops = int(result.forced_stop.sum()) if result.error is not None else 0
        self._count(sampled + len(batch.bypass_rows), fallback, stops)
        if self.metrics is not None:
            self._observe(result, sampled, entropy_rows, fallback)
        if self.wants_records:
            result.host_columns = _start_host_copy(result)
            self._enqueue(result)

    def left_to_engine(
        self, step: int, request_ids: Sequence[str], config_hashes: Sequence[str], reason: str
    ) -> None:
        """Record rows that a failed step left to the engine's own sampler (token_id -1)."""
        n = len(request_ids)
        self._count(n, n, 0)
        if self.metrics is not None:
            self.metrics.on_step(
                tokens_by_source={"vllm": n}, fallback_kind="error", fallback_tokens=n,
                left_to_vllm=n, bytes_fetched=0, fetch_latency_s=None,
            )  # fmt: skip
        self._enqueue_left(step, request_ids, config_hashes, reason, "error", fallback=True)

    def bypassed(self, step: int, request_ids: Sequence[str]) -> None:
        """Record rows whose requests opted out (``qr_bypass``) in a step nothing else sampled."""
        self._count(len(request_ids), 0, 0)
        self._enqueue_left(step, request_ids, [""] * len(request_ids), "qr_bypass", "",
                           fallback=False)  # fmt: skip

    def _enqueue_left(
        self, step: int, request_ids: Sequence[str], config_hashes: Sequence[str], reason: str,
        kind: str, *, fallback: bool,
    ) -> None:  # fmt: skip
        if not self.wants_records or not request_ids:
            return
        now = time.time_ns()
        self._enqueue([
            _left_record(self.run_id, step, rid, chash, reason, kind, fallback, now)
            for rid, chash in zip(request_ids, config_hashes, strict=True)
        ])  # fmt: skip

    def _count(self, tokens: int, fallback: int, stops: int) -> None:
        with self._lock:
            self.total += tokens
            self.fallback_total += fallback
            self.forced_stops += stops
            self._since_summary += tokens
            due = self.log_level == "summary" and self._since_summary >= self.summary_every
            if due:
                self._since_summary = 0
        if due:
            logger.info(
                "qr_sampler: %d tokens, %d served by fallback, %d forced stops",
                self.total,
                self.fallback_total,
                self.forced_stops,
            )

    def _observe(self, result: StepResult, sampled: int, entropy_rows: int, fallback: int) -> None:
        assert self.metrics is not None
        fetched = result.entropy
        by_source: dict[str, int] = {}
        if entropy_rows:
            name = fetched.source if fetched is not None else "none"
            by_source[name] = entropy_rows
        if sampled - entropy_rows:
            by_source["none"] = by_source.get("none", 0) + sampled - entropy_rows
        if len(result.batch.bypass_rows):
            by_source["vllm"] = len(result.batch.bypass_rows)
        kind = ""
        if result.error is not None:
            kind = getattr(result.error, "kind", "error")
        elif fetched is not None and fetched.fallback:
            kind = fetched.fallback_kind or "error"
        self.metrics.on_step(
            tokens_by_source=by_source,
            fallback_kind=kind,
            fallback_tokens=fallback,
            left_to_vllm=len(result.batch.bypass_rows),
            bytes_fetched=len(fetched.data) if fetched is not None else 0,
            fetch_latency_s=fetched.latency_ns / 1e9 if fetched is not None else None,
        )

    def _enqueue(self, item: StepResult | list[dict[str, Any]]) -> None:
        with self._lock:
            if self._closed:
                return
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(
                    target=self._run, name="qr-sampler-records", daemon=True
                )
                self._thread.start()
                # vLLM never closes logits processors: write what is queued, and end the chain
                # with its closing event, when the engine process exits normally.
                atexit.register(self.close)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            if not self._warned_full:
                self._warned_full = True
                logger.warning(
                    "qr_sampler: the diagnostics writer is behind; the engine waits for it "
                    "rather than lose records (a slow disk?)"
                )
            self._queue.put(item)

    # --- writer thread ----------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                if isinstance(item, list):
                    bodies = [encode_body(record) for record in item]
                else:
                    bodies = self._token_bodies(item)
                self._write(bodies)
            except Exception as exc:  # never let one bad step stop the writer
                logger.exception("qr_sampler: could not write a step's records: %s", exc)
            finally:
                with self._idle:
                    self._pending -= 1
                    if self._pending == 0:
                        self._idle.notify_all()

    def _token_bodies(self, result: StepResult) -> list[bytes]:
        """One serialised token record per row (C2 key order; the journal adds ``prev_hash``).

        Formatted straight from the step's columns with one template: the same bytes
        ``encode_body`` would write for the dict (a test pins that), at a fraction of the cost.
        """
        cols = _finish_host_copy(result)
        batch = result.batch
        fetched = result.entropy
        counts = batch.counts
        entropy_rows = batch.entropy_rows
        hashes = ['""'] * len(counts)
        refs = ['""'] * len(counts)
        if fetched is not None and len(entropy_rows):
            view = memoryview(fetched.data)
            need = counts[entropy_rows]
            ends = np.cumsum(need)
            for j, end, n in zip(entropy_rows.tolist(), ends.tolist(), need.tolist(), strict=True):
                hashes[j] = '"' + hashlib.sha256(view[end - n : end]).hexdigest() + '"'
            archive = self._archive_for()
            if archive is not None:
                stored = archive.append(fetched.data, need.tolist())
                for j, ref in zip(entropy_rows.tolist(), stored, strict=True):
                    refs[j] = _text(ref)
        step, stamp, run_id = result.step, result.timestamp_ns, _text(self.run_id)
        error = result.error
        if fetched is not None:
            used = (_text(fetched.source), _bool(fetched.fallback), _text(fetched.fallback_kind),
                    _text(fetched.fallback_reason), "false", _text(fetched.device_id),
                    fetched.generation_timestamp_ns, _float(fetched.latency_ns / 1000.0),
                    _text(result.nonce.hex()), _json(fetched.echo_verified))  # fmt: skip
        else:  # the fetch failed and nothing served: every row that needed bytes stops
            reason = f"{type(error).__name__}: {error}" if error is not None else ""
            kind = getattr(error, "kind", "error") if error is not None else ""
            used = ('"none"', "true", _text(kind), _text(reason), "true", '""', 0, "0.0",
                    _text(result.nonce.hex()), "null")  # fmt: skip
        greedy = ('"none"', "false", '""', '""', "false", '""', 0, "0.0", '""', "null")
        left = ('"vllm"', "true", '"error"', _text(_NO_FINITE_LOGIT))
        positions = result.output_index
        ids, ranks, kept = cols.token_ids.tolist(), cols.ranks.tolist(), cols.num_kept.tolist()
        probs, temps, ents = cols.probs.tolist(), cols.temperature.tolist(), cols.entropy.tolist()
        us, zs, means = result.u.tolist(), result.z.tolist(), result.sample_mean.tolist()
        request_ids, hashes_cfg = batch.request_ids, batch.config_hash
        choices = batch.choice_index.tolist()
        out: list[bytes] = []
        for i, count in enumerate(counts.tolist()):
            if i and not i % _ROWS_PER_SLICE:
                time.sleep(0)  # hand the GIL back: the engine thread goes first
            source, fb, fb_kind, fb_reason, stop, device, server_ts, latency, nonce, echo = (
                used if count else greedy
            )
            if ids[i] < 0:
                source, fb, fb_kind, fb_reason = left
            n_used = count if count and fetched is not None else 0
            out.append((_TOKEN_LINE % (
                run_id, step, _text(request_ids[i]), choices[i],
                -1 if positions is None else int(positions[i]), ids[i], ranks[i],
                _float(probs[i]), kept[i], _float(temps[i]), _float(ents[i]), _float(us[i]),
                _float(zs[i]), _float(means[i]), n_used, source, fb, fb_kind, fb_reason, stop,
                device, server_ts, latency, stamp, _text(hashes_cfg[i]), _bool(not count),
                nonce, echo, hashes[i], refs[i],
            )).encode("ascii"))  # fmt: skip
        for rid in batch.bypass_ids.tolist():
            out.append(encode_body(
                _left_record(self.run_id, step, rid, "", "qr_bypass", "", False, stamp)
            ))  # fmt: skip
        return out

    def _write(self, bodies: list[bytes]) -> None:
        if not bodies:
            return
        journal = self._journal_for()
        if journal is not None:
            journal.append_encoded(bodies)
        with self._lock:
            self.records_written += len(bodies)
            if self._keep_recent:
                self._recent.extend(bodies)
        if self.log_level == "full":
            for body in bodies:
                logger.info("token %s", body.decode("ascii"))

    def _journal_for(self) -> RecordJournal | None:
        if self.path is None:
            return None
        if self._journal is None:
            from qr_sampler.provenance.journal import RecordJournal

            self._journal = RecordJournal(
                self.path, max_bytes=self._diagnostics_max_bytes, manifest=self._manifest
            )
        return self._journal

    def _archive_for(self) -> EntropyArchive | None:
        if self.archive_path is None:
            return None
        if self._archive is None:
            from qr_sampler.provenance.archive import EntropyArchive

            journal = self._journal_for()
            self._archive = EntropyArchive(
                self.archive_path,
                max_bytes=self._archive_max_bytes,
                run_id=self.run_id or "run",
                on_event=(lambda event: journal.append([event])) if journal else None,
            )
        return self._archive

    # --- queries and lifecycle --------------------------------------------------------------

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until every queued step is written; False if ``timeout`` passed first."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._pending:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return True

    def recent(self) -> list[TokenRecord]:
        """The most recent token records (at most ``capacity``), oldest first, once written."""
        self.flush()
        with self._lock:
            bodies = list(self._recent)
        rows = [r for r in map(json.loads, bodies) if r.get("kind") == "token"]
        return [TokenRecord(**{k: r[k] for k in _TOKEN_FIELDS if k in r}) for r in rows]

    @property
    def file_error(self) -> str:
        return self._journal.error if self._journal is not None else ""

    def health(self) -> dict[str, Any]:
        return {
            "tokens": self.total,
            "fallback_tokens": self.fallback_total,
            "forced_stops": self.forced_stops,
            "records_written": self.records_written,
            "diagnostics_path": str(self.path) if self.path else "",
            "diagnostics_error": self.file_error,
            "archive_path": str(self.archive_path) if self.archive_path else "",
            "archive_error": self._archive.error if self._archive is not None else "",
        }

    def close(self) -> None:
        """Write what is queued, then close the sinks. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            thread = self._thread
        atexit.unregister(self.close)
        if thread is not None:
            self.flush()
            self._queue.put(None)
            thread.join(timeout=30)
        if self._archive is not None:
            self._archive.close()
        if self._journal is not None:
            self._journal.close()


#: A token line without its link, in C2's key order (``encode_body`` writes the same bytes).
_TOKEN_LINE = (
    '{"kind":"token","run_id":%s,"step":%d,"request_id":%s,"choice_index":%d,'
    '"output_index":%d,"token_id":%d,"rank":%d,"probability":%s,"num_candidates":%d,'
    '"temperature":%s,"entropy_nats":%s,"u":%s,"z":%s,"sample_mean":%s,"sample_count":%d,'
    '"source":%s,"fallback":%s,"fallback_kind":%s,"fallback_reason":%s,"forced_stop":%s,'
    '"device_id":%s,"server_timestamp_ns":%d,"fetch_latency_us":%s,"timestamp_ns":%d,'
    '"config_hash":%s,"greedy":%s,"nonce":%s,"echo_verified":%s,"entropy_sha256":%s,'
    '"entropy_ref":%s}'
)
#: Rows the writer formats before it lets the engine thread take the GIL: pure-Python work
#: holds the GIL, and an engine thread waiting for it would otherwise wait up to the switch
#: interval (5 ms) between two tensor operations.
_ROWS_PER_SLICE = 8
_NO_FINITE_LOGIT = "no finite logit in this row: left to vLLM's own sampler"
_text = json.JSONEncoder(ensure_ascii=True).encode  # a JSON string literal, as json.dumps


def _float(value: float) -> str:
    """A float as json.dumps writes it (``repr``); non-finite as ``null`` (as encode_body)."""
    return repr(value) if math.isfinite(value) else "null"


def _bool(value: bool) -> str:
    return "true" if value else "false"


def _json(value: bool | None) -> str:
    return "null" if value is None else _bool(value)


def _left_record(
    run_id: str, step: int, request_id: str, config_hash: str, reason: str, kind: str,
    fallback: bool, timestamp_ns: int,
) -> dict[str, Any]:
    """A row whose token vLLM's own sampler chose (by request, or after a failed step)."""
    return {
        "kind": "token", "run_id": run_id, "step": step, "request_id": request_id,
        "choice_index": 0, "output_index": -1, "token_id": -1, "rank": -1,
        "probability": 0.0, "num_candidates": 0, "temperature": 0.0, "entropy_nats": 0.0,
        "u": 0.0, "z": 0.0, "sample_mean": 0.0, "sample_count": 0, "source": "vllm",
        "fallback": fallback, "fallback_kind": kind, "fallback_reason": reason,
        "forced_stop": False, "device_id": "", "server_timestamp_ns": 0,
        "fetch_latency_us": 0.0, "timestamp_ns": timestamp_ns, "config_hash": config_hash,
        "greedy": False, "nonce": "", "echo_verified": None, "entropy_sha256": "",
        "entropy_ref": "",
    }  # fmt: skip


def _start_host_copy(result: StepResult) -> object:
    """On a GPU: one non-blocking copy of the device columns into pinned memory, plus an event
    the writer waits on. On the CPU nothing to do (the writer reads the tensors directly)."""
    import torch

    ids = result.device_token_ids
    if ids.device.type == "cpu":
        return None
    ints = torch.stack([ids, result.ranks, result.num_kept])
    floats = torch.stack([
        result.probs, result.temperature.to(result.probs.dtype),
        result.entropy_nats if result.entropy_nats is not None else torch.zeros_like(result.probs),
    ])  # fmt: skip
    host_ints = torch.empty(ints.shape, dtype=ints.dtype, pin_memory=True)
    host_floats = torch.empty(floats.shape, dtype=floats.dtype, pin_memory=True)
    host_ints.copy_(ints, non_blocking=True)
    host_floats.copy_(floats, non_blocking=True)
    event = torch.cuda.Event()  # type: ignore[no-untyped-call]
    event.record()
    return _PendingCopy(host_ints, host_floats, event)


@dataclass(frozen=True)
class _PendingCopy:
    """A step's device columns on their way into pinned host memory."""

    ints: torch.Tensor  # int64 [3, S]: token ids, ranks, candidates
    floats: torch.Tensor  # float64 [3, S]: probability, temperature, entropy
    event: Any  # torch.cuda.Event recorded after the copies


def _finish_host_copy(result: StepResult) -> _Columns:
    copied = result.host_columns
    if isinstance(copied, _PendingCopy):
        copied.event.synchronize()
        ints, floats = copied.ints.numpy(), copied.floats.numpy()
        return _Columns(ints[0], ints[1], ints[2], floats[0], floats[1], floats[2])

    def host(t: torch.Tensor | None, like: torch.Tensor) -> np.ndarray:
        return (t if t is not None else like.new_zeros(like.shape)).numpy()

    return _Columns(
        token_ids=result.device_token_ids.numpy(),
        ranks=result.ranks.numpy(),
        num_kept=result.num_kept.numpy(),
        probs=result.probs.numpy(),
        temperature=result.temperature.double().numpy(),
        entropy=host(result.entropy_nats, result.probs),
    )
