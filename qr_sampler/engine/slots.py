"""Per-request state in slots, columnar, the way vLLM keeps its own sampling state.

V1 describes batch changes with a ``BatchUpdate``: ``removed`` indices, ``added`` (index, params,
prompt ids, live output ids) and ``moved`` (a, b, UNIDIRECTIONAL | SWAP), to be applied in that
order; an add or a one-way move onto an occupied index replaces its occupant, and a one-way
move empties its source. Model Runner V2 instead puts a request into a recycled *slot*
(``add_request``) and maps rows to slots per step (``LogitsContext``). Either way a slot is an
index into the columns below.

:class:`SlotTable` keeps every per-request setting as a column sized for the most requests
(host numpy arrays; on a GPU the selection columns are mirrored in device tensors, refreshed by
one non-blocking copy only when a slot changed). A step gathers its rows' columns by the
row→slot mapping (numpy on the host, ``index_select`` on the device): no per-row Python on the
hot path, and nothing rebuilt while the layout and the slots stay the same.

Invariants: after :meth:`SlotTable.apply_batch_update` the table matches vLLM's persistent batch
exactly (indices ≥ ``batch_size`` hold nothing); :meth:`SlotTable.batch_for` returns a batch whose
rows are the layout's rows in order, with rows of unknown requests left to vLLM.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from qr_sampler.engine.requests import RequestState
from qr_sampler.sampler import SamplingBatch
from qr_sampler.selection import FLOAT_FIELDS, SelectionParams, row_floats

#: Name of ``MoveDirectionality.SWAP`` (compared by name so this module needs no vLLM import).
_SWAP = "SWAP"


class SlotTable:
    """``slot → request`` as columns, plus the cached sampling batch of the current layout.

    ``version`` increases on every change; the cache is keyed by (version, layout).
    """

    def __init__(self, capacity: int = 256, device: torch.device | str = "cpu") -> None:
        self.device = torch.device(device)
        self.states: dict[int, RequestState] = {}
        self.version = 0
        self.unknown_rows = 0  # rows seen in a step with no request in their slot (should stay 0)
        self._capacity = 0
        self._cache_key: tuple[int, Any] | None = None
        self._cache: SamplingBatch | None = None
        self._device_dirty = True
        self._grow(max(capacity, 1))

    # --- columns ------------------------------------------------------------------------------
    def _grow(self, capacity: int) -> None:
        """(Re)allocate every column for ``capacity`` slots, keeping the current contents."""
        old = self._capacity

        def grown(array: np.ndarray | None, fill: Any, dtype: Any, rows: int = 0) -> np.ndarray:
            shape = (rows, capacity) if rows else (capacity,)
            new = np.full(shape, fill, dtype=dtype)
            if array is not None and old:
                new[..., :old] = array
            return new

        get = self.__dict__.get
        self.floats = grown(get("floats"), 0.0, np.float64, len(FLOAT_FIELDS))
        self.top_k = grown(get("top_k"), 0, np.int64)
        self.greedy = grown(get("greedy"), False, bool)
        self.edt = grown(get("edt"), False, bool)
        self.active = grown(get("active"), False, bool)  # a request is in the slot
        self.sampled = grown(get("sampled"), False, bool)  # ... and we choose its tokens
        self.penalized = grown(get("penalized"), False, bool)  # V1 applies its penalties
        self.mean = grown(get("mean"), 0.0, np.float64)
        self.std = grown(get("std"), 0.0, np.float64)
        self.epsilon = grown(get("epsilon"), 0.0, np.float64)
        self.counts = grown(get("counts"), 0, np.int64)  # entropy bytes; 0 for greedy
        self.stop_tokens = grown(get("stop_tokens"), -1, np.int64)
        self.choice_index = grown(get("choice_index"), 0, np.int64)
        self.request_ids = grown(get("request_ids"), "", object)
        self.config_hash = grown(get("config_hash"), "", object)
        self._capacity = capacity
        self._device_dirty = True
        if self.device.type != "cpu":
            # The device mirror and its pinned staging buffers: allocated here, once per size,
            # so a change costs two host copies and two non-blocking device copies.
            self._staged_floats = torch.empty(
                (len(FLOAT_FIELDS), capacity), dtype=torch.float64, pin_memory=True
            )
            self._staged_ints = torch.empty((3, capacity), dtype=torch.int64, pin_memory=True)
            self._staged_index = torch.empty(capacity, dtype=torch.int64, pin_memory=True)
            self._device_floats = torch.empty_like(self._staged_floats, device=self.device)
            self._device_ints = torch.empty_like(self._staged_ints, device=self.device)

    def _write(self, slot: int, state: RequestState | None) -> None:
        if slot >= self._capacity:
            self._grow(max(slot + 1, 2 * self._capacity))
        if state is None:
            self.states.pop(slot, None)
            self.active[slot] = self.sampled[slot] = self.penalized[slot] = False
            return
        c = state.config
        self.states[slot] = state
        self.floats[:, slot] = row_floats(c)
        self.top_k[slot] = c.top_k
        self.greedy[slot] = c.is_greedy
        self.edt[slot] = c.temperature_strategy == "edt"
        self.active[slot] = True
        self.sampled[slot] = not c.bypass
        self.penalized[slot] = state.penalized
        self.mean[slot] = c.population_mean
        self.std[slot] = c.population_std
        self.epsilon[slot] = c.uniform_clamp_epsilon
        self.counts[slot] = 0 if c.is_greedy else c.sample_count
        self.stop_tokens[slot] = state.stop_token
        self.choice_index[slot] = state.choice_index
        self.request_ids[slot] = state.request_id
        self.config_hash[slot] = c.config_hash

    def _changed(self) -> None:
        self.version += 1
        self._device_dirty = True

    # --- V1: BatchUpdate ------------------------------------------------------------------
    def apply_batch_update(
        self,
        batch_size: int,
        removed: Iterable[int],
        added: Iterable[tuple[int, RequestState]],
        moved: Iterable[tuple[int, int, Any]],
    ) -> None:
        """Apply one V1 batch update: removed, then added, then moved, as vLLM specifies."""
        for index in removed:
            self._write(index, None)
        for index, state in added:
            self._write(index, state)  # replaces any previous occupant of the index
        for a, b, direction in moved:
            a_state, b_state = self.states.get(a), self.states.get(b)
            self._write(b, a_state)
            if _name(direction) == _SWAP:
                self._write(a, b_state)
            else:
                self._write(a, None)  # UNIDIRECTIONAL: b's occupant is discarded, a emptied
        if self.states and max(self.states) >= batch_size:
            for index in [i for i in self.states if i >= batch_size]:
                self._write(index, None)  # condensed away: nothing lives past batch_size
        self._changed()

    # --- V2: slots --------------------------------------------------------------------------
    def put(self, slot: int, state: RequestState) -> None:
        """Store a request in a (possibly recycled) slot, replacing whatever was there."""
        self._write(slot, state)
        self._changed()

    # --- both -------------------------------------------------------------------------------
    def clear(self) -> None:
        """Forget every request (after an unexpected error: better unknown than wrong)."""
        for slot in list(self.states):
            self._write(slot, None)
        self._changed()

    def batch_for(self, layout: np.ndarray | tuple[int, ...]) -> SamplingBatch:
        """The sampling batch for rows whose slots are ``layout[row]`` (int array [B]).

        Cached while neither the slots nor the layout change. Gathers are numpy on the host and
        one ``index_select`` per column group on the device.
        """
        slots = np.asarray(layout, dtype=np.int64)
        key = (self.version, slots.tobytes())
        if key == self._cache_key and self._cache is not None:
            return self._cache
        if len(slots) and int(slots.max()) >= self._capacity:
            self._grow(int(slots.max()) + 1)
        active = self.active[slots]
        self.unknown_rows += int(len(slots) - np.count_nonzero(active))
        sampled = self.sampled[slots]
        rows = np.flatnonzero(sampled)
        chosen = slots[rows]
        bypass = np.flatnonzero(active & ~sampled)
        batch = SamplingBatch.assemble(
            total_rows=len(slots),
            rows=rows,
            device=self.device,
            params=self._params(chosen),
            counts=self.counts[chosen],
            mean=self.mean[chosen],
            std=self.std[chosen],
            epsilon=self.epsilon[chosen],
            stop_tokens=self.stop_tokens[chosen],
            request_ids=self.request_ids[chosen],
            choice_index=self.choice_index[chosen],
            config_hash=self.config_hash[chosen],
            bypass_rows=bypass,
            bypass_ids=self.request_ids[slots[bypass]],
        )
        self._cache_key, self._cache = key, batch
        return batch

    def _params(self, chosen: np.ndarray) -> SelectionParams:
        """The rows' selection parameters: host gathers, and device gathers from the mirror."""
        host_floats = self.floats[:, chosen]
        top_k, greedy, edt = self.top_k[chosen], self.greedy[chosen], self.edt[chosen]
        if self.device.type == "cpu":
            return SelectionParams.from_host(host_floats, top_k, greedy, edt, self.device)
        if self._device_dirty:
            self._sync_device()
        staged = self._staged_index[: len(chosen)]
        staged.copy_(torch.from_numpy(chosen))  # in place: our own pinned staging buffer
        index = staged.to(self.device, non_blocking=True)
        return SelectionParams(
            floats=self._device_floats.index_select(1, index),
            ints=self._device_ints.index_select(1, index),
            host_floats=host_floats,
            host_top_k=top_k,
            host_greedy=greedy,
            host_edt=edt,
        )

    def _sync_device(self) -> None:
        """Refresh the device mirror of the selection columns, only after a change: host copies
        into the pinned staging buffers, then non-blocking copies (in place, persistent)."""
        self._staged_floats.copy_(torch.from_numpy(self.floats))
        ints = self._staged_ints.numpy()
        ints[0], ints[1], ints[2] = self.top_k, self.greedy, self.edt
        self._device_floats.copy_(self._staged_floats, non_blocking=True)
        self._device_ints.copy_(self._staged_ints, non_blocking=True)
        self._device_dirty = False

    def rows_of(self, layout: np.ndarray | tuple[int, ...], rows: np.ndarray) -> list[RequestState]:
        """The request states of the given logits rows (rows known to hold a request)."""
        return [self.states[int(layout[r])] for r in rows]


def _name(direction: Any) -> str:
    return str(getattr(direction, "name", direction))
