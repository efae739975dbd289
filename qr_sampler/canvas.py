"""How a step's chosen tokens reach the engine: one-hot logits, written in place or on a canvas.

Forcing a row one-hot in place writes every element of it: at batch 32 and a 152k vocabulary
that is 19 MB per step, a full memory pass that on a CPU costs about as much as reading the
logits to choose. :class:`OneHotCanvas` avoids it: it keeps one reused tensor that is ``-inf``
everywhere except the tokens forced in the last step, so each step only resets last step's
positions and writes this step's — O(rows), not O(rows · vocabulary). The canvas, not the input
logits, is handed back to the engine (vLLM's contract: the returned tensor is used, in-place
changes are optional).

Safe only when everything that touches the returned tensor afterwards leaves ``-inf`` as
``-inf`` and writes nothing else (vLLM's penalties, temperature, min-p, top-k/top-p and greedy
or random draw do; a later custom processor or the thinking-budget forcer may not). The engine
adapter decides (:func:`qr_sampler.engine.runtime.canvas_is_safe`); positions the engine may
have changed at the tokens we forced are reset anyway.

Both forms take ``token_ids`` int64 [B] (-1 = leave the row as the engine gave it) and return
the logits the engine should use.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

from qr_sampler.selection import force_rows

#: Logits smaller than this (elements) are forced in place: filling them costs less than the
#: canvas's bookkeeping (measured crossover on a 2-core host: about 1M elements, 4 MB).
CANVAS_FROM_ELEMENTS = 1 << 20


class Forcing(Protocol):
    def __call__(self, logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor: ...


def force_in_place(logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """The default: the rows of ``logits`` themselves become one-hot."""
    force_rows(logits, token_ids)
    return logits


class OneHotCanvas:
    """A reused ``-inf`` tensor on which each step forces its rows (see the module docstring).

    One per engine adapter; one step at a time; host tensors of at least ``min_elements``
    (others are forced in place). It grows in powers of two up to the largest batch seen
    (at most ``max_rows``): rows × vocab of the logits' dtype, at most twice the size of the
    engine's own logits at that batch.
    """

    def __init__(
        self, min_elements: int = CANVAS_FROM_ELEMENTS, max_rows: int | None = None
    ) -> None:
        self.min_elements = min_elements
        self.max_rows = max_rows  # the engine's largest batch (rows), when known
        self._canvas: torch.Tensor | None = None
        self._row_starts: np.ndarray | None = None  # int64 [capacity]: row · vocab
        self._forced_at: np.ndarray | None = None  # flat positions made finite last step
        self._copied_rows: torch.Tensor | None = None  # rows copied whole last step

    @property
    def capacity(self) -> int:
        """Rows allocated so far (0 before the first step that used the canvas)."""
        return 0 if self._canvas is None else int(self._canvas.shape[0])

    def __call__(self, logits: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
        if logits.device.type != "cpu" or logits.numel() < self.min_elements:
            # On an accelerator the full write is a few microseconds, and a small batch is
            # cheaper to fill than to track: force in place (the canvas keeps its own state).
            return force_in_place(logits, token_ids)
        rows, vocab = logits.shape
        # The index arithmetic on the host in numpy: each small torch operation costs more
        # than the whole of it at these sizes.
        ids = token_ids.numpy()
        if len(ids) and int(ids.max()) >= vocab:  # flat indexing would not notice
            raise ValueError(f"token id {int(ids.max())} is outside the vocabulary")
        canvas = self._ready(rows, vocab, logits.dtype, logits.device)
        assert self._row_starts is not None
        out = canvas[:rows]
        forced = ids >= 0
        if forced.all():
            flat = self._row_starts[:rows] + ids
        else:  # rows left to the engine get their own logits back
            kept = torch.from_numpy(np.flatnonzero(~forced))
            out.index_copy_(0, kept, logits.index_select(0, kept))  # in place: our canvas
            self._copied_rows = kept
            chosen = np.flatnonzero(forced)
            flat = self._row_starts[chosen] + ids[chosen]
        self._forced_at = flat  # before the write: a failed write is reset at the next step
        _write(canvas, flat, 0.0)
        return out

    def _ready(
        self, rows: int, vocab: int, dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """The canvas, all ``-inf`` again, with at least ``rows`` rows of this shape."""
        canvas = self._canvas
        if canvas is not None and self._matches(canvas, rows, vocab, dtype, device):
            try:
                self._reset(canvas)
                return canvas
            except Exception:  # a failed step left positions we cannot reset: start afresh
                pass
        capacity = max(self._capacity_for(rows), canvas.shape[0] if canvas is not None else 0)
        self._canvas = self._forced_at = self._copied_rows = None
        canvas = torch.full((capacity, vocab), float("-inf"), dtype=dtype, device=device)
        self._row_starts = np.arange(capacity, dtype=np.int64) * vocab
        self._canvas = canvas
        return canvas

    def _capacity_for(self, rows: int) -> int:
        """Rows to allocate: the next power of two, so a batch that grows one request at a time
        reallocates a few times, not at every step; never past the engine's largest batch."""
        capacity = 1 << max(rows - 1, 0).bit_length()
        if self.max_rows is not None:
            capacity = min(capacity, self.max_rows)
        return max(capacity, rows)

    @staticmethod
    def _matches(
        canvas: torch.Tensor, rows: int, vocab: int, dtype: torch.dtype, device: torch.device
    ) -> bool:
        return (
            canvas.shape[0] >= rows
            and canvas.shape[1] == vocab
            and canvas.dtype == dtype
            and canvas.device == device
        )

    def _reset(self, canvas: torch.Tensor) -> None:
        """Last step's finite positions back to ``-inf``. Whatever the engine did to the rows
        after we handed them over, only those can be finite now (see the module docstring)."""
        if self._forced_at is not None:
            _write(canvas, self._forced_at, float("-inf"))
            self._forced_at = None
        if self._copied_rows is not None:
            canvas.index_fill_(0, self._copied_rows, float("-inf"))  # in place: ours
            self._copied_rows = None


def _write(canvas: torch.Tensor, flat: np.ndarray, value: float) -> None:
    """``value`` at the flat positions ``flat`` of our canvas, in place: through numpy where it
    has the dtype (these few scattered writes cost a fraction of ``index_fill_``'s fixed cost),
    else torch (bf16)."""
    if canvas.dtype in _NUMPY_DTYPES:
        canvas.view(-1).numpy()[flat] = value
    else:
        canvas.view(-1).index_fill_(0, torch.from_numpy(flat), value)


_NUMPY_DTYPES = (torch.float32, torch.float64, torch.float16)
