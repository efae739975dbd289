"""Which request owns which logits row: the one helper both adapters use.

V1 describes batch changes with a ``BatchUpdate``: ``removed`` indices, ``added`` (index, params,
prompt ids, live output ids) and ``moved`` (a, b, UNIDIRECTIONAL | SWAP), to be applied in
that order; an add or a one-way move onto an occupied index replaces its occupant, and a
one-way move empties its source. Model Runner V2 instead puts a request into a recycled *slot*
(``add_request``) and maps rows to slots per step (``LogitsContext``).

:class:`RowTable` holds ``index → RequestState`` for either scheme and caches the
:class:`~qr_sampler.sampler.SamplingBatch` for the current row layout, so the per-step path
rebuilds nothing until the layout changes.

Invariants: after :meth:`apply_batch_update` the table matches vLLM's persistent batch exactly
(indices ≥ ``batch_size`` hold nothing); :meth:`batch_for` returns a batch whose rows are the
layout's rows in order, with rows of unknown requests left to vLLM.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qr_sampler.engine.requests import LEFT_TO_VLLM, RequestState
from qr_sampler.types import SamplingConfig

#: The config of a row that belongs to no known request: left to vLLM, never forced.
_UNKNOWN_ROW = LEFT_TO_VLLM.config

#: Name of ``MoveDirectionality.SWAP`` (compared by name so this module needs no vLLM import).
_SWAP = "SWAP"


@dataclass
class RowTable:
    """``index → RequestState`` plus the cached sampling batch of the current layout.

    ``version`` increases on every change; the cache is keyed by (version, layout).
    """

    build_batch: Callable[[Sequence[SamplingConfig], Sequence[str], int], Any]
    states: dict[int, RequestState] = field(default_factory=dict)
    version: int = 0
    unknown_rows: int = 0  # rows seen in apply() with no request state (should stay 0)
    _cache_key: tuple[int, tuple[int, ...]] | None = None
    _cache: Any = None

    # --- V1: BatchUpdate ------------------------------------------------------------------
    def apply_batch_update(
        self,
        batch_size: int,
        removed: Iterable[int],
        added: Iterable[tuple[int, RequestState]],
        moved: Iterable[tuple[int, int, Any]],
    ) -> None:
        """Apply one V1 batch update: removed, then added, then moved, as vLLM specifies."""
        states = self.states
        for index in removed:
            states.pop(index, None)
        for index, state in added:
            states[index] = state  # replaces any previous occupant of the index
        for a, b, direction in moved:
            a_state = states.pop(a, None)
            b_state = states.pop(b, None)
            if a_state is not None:
                states[b] = a_state
            if b_state is not None and _name(direction) == _SWAP:
                states[a] = b_state
            # UNIDIRECTIONAL: b's previous occupant is discarded and a is left empty.
        for index in [i for i in states if i >= batch_size]:
            del states[index]  # condensed away: vLLM guarantees nothing lives past batch_size
        self.version += 1

    # --- V2: slots --------------------------------------------------------------------------
    def put(self, index: int, state: RequestState) -> None:
        """Store a request in a (possibly recycled) slot, replacing whatever was there."""
        self.states[index] = state
        self.version += 1

    # --- both -------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every request (after an unexpected error: better unknown than wrong)."""
        self.states.clear()
        self.version += 1

    def batch_for(self, layout: tuple[int, ...]) -> Any:
        """The sampling batch for rows whose owners are ``layout[row]`` (indices or slots)."""
        key = (self.version, layout)
        if key != self._cache_key:
            configs: list[SamplingConfig] = []
            ids: list[str] = []
            unknown = 0
            for index in layout:
                state = self.states.get(index)
                if state is None:
                    unknown += 1
                    configs.append(_UNKNOWN_ROW)
                    ids.append("")
                else:
                    configs.append(state.config)
                    ids.append(state.request_id)
            self.unknown_rows += unknown
            self._cache = self.build_batch(configs, ids, len(layout))
            self._cache_key = key
        return self._cache

    def rows_of(self, layout: tuple[int, ...], rows: Sequence[int]) -> list[RequestState]:
        """The request states of the given logits rows (rows known to hold a request)."""
        return [self.states[layout[r]] for r in rows]


def _name(direction: Any) -> str:
    return str(getattr(direction, "name", direction))
