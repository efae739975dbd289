"""Batched token selection: shape each row's distribution, then pick by a uniform u.

Pipeline, per row, as tensor operations over rows at once (on the logits' device):

1. candidates — the row's tokens in descending order, as far as they can matter (top-k is
   invariant to the temperature, so it runs on raw logits);
2. temperature — fixed, or EDT: T = clamp(base · (H / ln V)^exponent, min, max) with H the
   Shannon entropy of the full softmax at T = 1. T = 0 (fixed) means greedy;
3. softmax (float64 where it decides), then min-p, renormalize, then top-p (the smallest
   prefix whose mass reaches p; the first token is always kept), renormalize;
4. choose — the first candidate whose cumulative probability is ≥ u.

So a token's selection probability is exactly its filtered probability when u is uniform.

Cost per row is bounded by the row's own settings, never by its neighbours': rows are split
into two groups on the host (from settings alone, no device read):

- **bounded** — greedy rows and rows with 0 < top-k ≤ :data:`BOUNDED_K_LIMIT`: exact block-pruned
  top-k over the group's largest k, then float64 over those k candidates only;
- **full vocabulary** — top-k off or large: one float32 sort per row, float64 only on the prefix
  that carries probability (tokens more than :data:`_TAIL_GAP` below the top in scaled logit
  weigh < e⁻⁶⁰ each, below float64's resolution of the cdf; they still count in the softmax
  normalizer, summed in float32). Sizing that prefix reads one number back from the device:
  the only device sync here, and only in steps that have such rows.

Shapes: logits [R, V] float (any float dtype); per-row parameters [R]; a group's candidates
[Rg, Kg].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import torch

from qr_sampler import host_kernels
from qr_sampler.types import SamplingConfig

#: Block width of the pruning pass. 64 float32 = 256 bytes: wide enough that the block-max pass
#: is a fast vectorized reduction, narrow enough that k blocks hold few candidates.
_BLOCK = 64
#: Largest top-k served by block pruning; above it a sort of the row is as cheap.
BOUNDED_K_LIMIT = 1024
#: Logits dtypes that float32 holds exactly, so :func:`order_keys` can rank them.
_KEYED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
#: Scaled-logit gap below the row's top beyond which a token's probability (< e⁻⁶⁰ ≈ 9e-27,
#: times any vocabulary < 1e-20) is below float64's resolution of the cdf.
_TAIL_GAP = 60.0

#: Token id meaning "this row is not forced": the engine's own sampler picks it.
NOT_FORCED = -1

#: Rows of :attr:`SelectionParams.floats`, in order.
FLOAT_FIELDS = (
    "fixed_temperature",
    "inv_temperature",  # 1 / fixed temperature; 1 for greedy rows
    "edt_base",
    "edt_exponent",
    "edt_min",
    "edt_max",
    "top_p_cut",  # top_p, or +inf where top_p = 1 (no cut, no rounding)
    "min_p",
)
_F = {name: i for i, name in enumerate(FLOAT_FIELDS)}


def host_rows(configs: Sequence[SamplingConfig]) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                          np.ndarray]:
    """Per-row settings as host arrays: floats [8, R] float64, top_k, greedy, edt [R]."""
    floats = np.empty((len(FLOAT_FIELDS), len(configs)), dtype=np.float64)
    for j, c in enumerate(configs):
        floats[:, j] = row_floats(c)
    top_k = np.array([c.top_k for c in configs], dtype=np.int64)
    greedy = np.array([c.is_greedy for c in configs], dtype=bool)
    edt = np.array([c.temperature_strategy == "edt" for c in configs], dtype=bool)
    return floats, top_k, greedy, edt


def row_floats(c: SamplingConfig) -> tuple[float, ...]:
    """One config's column of :data:`FLOAT_FIELDS`."""
    t = c.fixed_temperature
    return (
        t,
        1.0 if t == 0 else 1.0 / t,
        c.edt_base_temp,
        c.edt_exponent,
        c.edt_min_temp,
        c.edt_max_temp,
        c.top_p if c.top_p < 1 else math.inf,
        c.min_p,
    )


@dataclass(frozen=True)
class SelectionParams:
    """Per-row parameters on the logits' device, and the host copies that decide the work.

    The host arrays let the step choose groups and skip stages without reading tensors back
    from the device.
    """

    floats: torch.Tensor  # float64 [8, R] on the device, rows per FLOAT_FIELDS
    ints: torch.Tensor  # int64 [3, R] on the device: top-k (0 = off), greedy, edt
    host_floats: np.ndarray  # float64 [8, R]
    host_top_k: np.ndarray  # int64 [R]
    host_greedy: np.ndarray  # bool [R]
    host_edt: np.ndarray  # bool [R]
    #: Cache of "position ≥ row's k" masks by candidate count K; filled on first use.
    _beyond_k: dict[int, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_host(
        cls,
        floats: np.ndarray,
        top_k: np.ndarray,
        greedy: np.ndarray,
        edt: np.ndarray,
        device: torch.device | str = "cpu",
    ) -> SelectionParams:
        """From host arrays (see :func:`host_rows`); two small copies to the device."""
        device = torch.device(device)
        ints = torch.from_numpy(np.stack([top_k, greedy, edt]).astype(np.int64))
        dev_floats = torch.from_numpy(np.ascontiguousarray(floats))
        if device.type != "cpu":
            dev_floats = dev_floats.pin_memory().to(device, non_blocking=True)
            ints = ints.pin_memory().to(device, non_blocking=True)
        return cls(
            floats=dev_floats,
            ints=ints,
            host_floats=floats,
            host_top_k=top_k,
            host_greedy=greedy,
            host_edt=edt,
        )

    @classmethod
    def from_configs(
        cls, configs: Sequence[SamplingConfig], device: torch.device | str = "cpu"
    ) -> SelectionParams:
        return cls.from_host(*host_rows(configs), device=device)

    def subset(self, host_index: np.ndarray, index: torch.Tensor) -> SelectionParams:
        """The parameters of some rows (``host_index`` on the host, ``index`` on the device)."""
        return SelectionParams(
            floats=self.floats.index_select(1, index),
            ints=self.ints.index_select(1, index),
            host_floats=self.host_floats[:, host_index],
            host_top_k=self.host_top_k[host_index],
            host_greedy=self.host_greedy[host_index],
            host_edt=self.host_edt[host_index],
        )

    @property
    def top_k(self) -> torch.Tensor:
        """int64 [R], 0 = off."""
        return self.ints[0]

    @cached_property
    def greedy(self) -> torch.Tensor:
        """bool [R] (made on first use: most steps never need it)."""
        return self.ints[1].bool()

    @cached_property
    def edt(self) -> torch.Tensor:
        """bool [R] (made on first use)."""
        return self.ints[2].bool()

    def _row(self, name: str) -> torch.Tensor:
        return self.floats[_F[name]]

    @property
    def fixed_temperature(self) -> torch.Tensor:
        return self._row("fixed_temperature")

    @property
    def inv_temperature(self) -> torch.Tensor:
        return self._row("inv_temperature")

    @property
    def edt_base(self) -> torch.Tensor:
        return self._row("edt_base")

    @property
    def edt_exponent(self) -> torch.Tensor:
        return self._row("edt_exponent")

    @property
    def edt_min(self) -> torch.Tensor:
        return self._row("edt_min")

    @property
    def edt_max(self) -> torch.Tensor:
        return self._row("edt_max")

    @property
    def top_p_cut(self) -> torch.Tensor:
        return self._row("top_p_cut")

    @property
    def min_p(self) -> torch.Tensor:
        return self._row("min_p")

    @property
    def rows(self) -> int:
        return int(self.host_top_k.shape[0])

    @cached_property
    def any_edt(self) -> bool:
        return bool(self.host_edt.any())

    @cached_property
    def any_greedy(self) -> bool:
        return bool(self.host_greedy.any())

    @cached_property
    def any_min_p(self) -> bool:
        return bool((self.host_floats[_F["min_p"]] > 0).any())

    @cached_property
    def any_top_p(self) -> bool:
        return bool(np.isfinite(self.host_floats[_F["top_p_cut"]]).any())

    def candidate_counts(self, vocab: int) -> np.ndarray:
        """Host: how many candidates each row can need (1 for greedy, top-k, else V)."""
        k = np.where(self.host_top_k > 0, np.minimum(self.host_top_k, vocab), vocab)
        return np.where(self.host_greedy, 1, k)

    def beyond_k(self, k: int) -> torch.Tensor:
        """bool [R, k]: True where a candidate position is past the row's top-k."""
        mask = self._beyond_k.get(k)
        if mask is None:
            row_k = torch.where(self.top_k > 0, self.top_k, torch.full_like(self.top_k, k))
            positions = torch.arange(k, device=self.top_k.device)
            mask = positions.unsqueeze(0) >= row_k.unsqueeze(1)
            self._beyond_k[k] = mask
        return mask


@dataclass(frozen=True)
class CandidateGroup:
    """One group's filtered distributions over its candidates, most probable first.

    ``probs`` rows sum to 1 over the kept prefix and are 0 after it. A row whose logits had no
    finite value has NaN probabilities (``valid`` is False): nothing meaningful to choose.
    """

    rows: torch.Tensor | None  # int64 [Rg]: the group's rows among all rows; None = all rows
    token_ids: torch.Tensor  # int64 [Rg, Kg]
    top_logit: torch.Tensor  # [Rg], the largest logit (non-finite = invalid row)
    probs: torch.Tensor  # float64 [Rg, Kg]
    cdf: torch.Tensor  # float64 [Rg, Kg]
    num_kept: torch.Tensor  # int64 [Rg]
    temperature: torch.Tensor  # float64 [Rg] (0 for greedy rows)
    edt_entropy: torch.Tensor | None  # float64 [Rg] when a row of the group uses EDT
    edt: torch.Tensor | None  # bool [Rg], with ``edt_entropy``

    def entropy(self) -> torch.Tensor:
        """Nats: of the full softmax for EDT rows, else of the filtered distribution."""
        filtered: torch.Tensor = torch.special.entr(self.probs).sum(dim=1)
        if self.edt_entropy is None or self.edt is None:
            return filtered
        return torch.where(self.edt, self.edt_entropy, filtered)


@dataclass(frozen=True)
class Candidates:
    """Every row's candidates, as one or two groups (see the module docstring).

    The merged properties (``token_ids``, ``probs``, ``num_kept``, …) pad the groups into one
    [R, K] view for inspection and tests; the hot path works per group and never merges.
    """

    groups: tuple[CandidateGroup, ...]
    num_rows: int

    def _merged(self, name: str) -> torch.Tensor:
        parts: list[tuple[torch.Tensor | None, torch.Tensor]] = [
            (g.rows, getattr(g, name)) for g in self.groups
        ]
        if len(parts) == 1 and parts[0][0] is None:
            return parts[0][1]
        first = parts[0][1]
        width = max(p.shape[1] for _, p in parts) if first.dim() == 2 else 0
        shape = (self.num_rows, width) if first.dim() == 2 else (self.num_rows,)
        fill = -1 if first.dtype == torch.int64 and first.dim() == 2 else 0
        out = torch.full(shape, fill, dtype=first.dtype, device=first.device)
        for rows, values in parts:
            assert rows is not None
            if values.dim() == 2:
                out[rows, : values.shape[1]] = values
            else:
                out[rows] = values
        return out

    @property
    def token_ids(self) -> torch.Tensor:
        return self._merged("token_ids")

    @property
    def probs(self) -> torch.Tensor:
        return self._merged("probs")

    @property
    def num_kept(self) -> torch.Tensor:
        return self._merged("num_kept")

    @property
    def top_logit(self) -> torch.Tensor:
        return self._merged("top_logit")

    @property
    def temperature(self) -> torch.Tensor:
        return self._merged("temperature")

    @property
    def valid(self) -> torch.Tensor:
        return torch.isfinite(self.top_logit)

    def entropy(self) -> torch.Tensor:
        """float64 [R]; see :meth:`CandidateGroup.entropy`. Only the records need it."""
        if len(self.groups) == 1 and self.groups[0].rows is None:
            return self.groups[0].entropy()
        out = torch.zeros(self.num_rows, dtype=torch.float64, device=self.groups[0].probs.device)
        for g in self.groups:
            assert g.rows is not None
            out.index_copy_(0, g.rows, g.entropy())  # in place on our own fresh tensor
        return out


@dataclass(frozen=True)
class Selection:
    """The chosen token per row and how likely it was. ``token_ids`` is -1 for invalid rows."""

    token_ids: torch.Tensor  # int64 [R]
    ranks: torch.Tensor  # int64 [R], 0 = most probable
    probs: torch.Tensor  # float64 [R]


def top_candidates(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits per row and their token ids, in :func:`order_keys`' order:
    larger value first, NaN first of all, equal values by the lower token id. Exact, and the
    same on every device (so a record's rank can be replayed from its logits).

    Block pruning: split the row into blocks of ``_BLOCK`` and take each block's max (one fast
    reduction pass). Every element of the row's top-k lies in one of the k blocks that come
    first in the same order (a block ranked by its best element; equal maxima by the lower
    block, whose ids are all lower): an element outside them is beaten by those k blocks' best
    elements. So the top-k over those k·_BLOCK candidates is the row's top-k.

    On a CPU with the host kernels, float32 rows go from the block maxima to
    :func:`host_kernels.top_k` (the same result).
    """
    rows, vocab = logits.shape
    if k >= vocab or logits.dtype not in _KEYED_DTYPES:
        # Every token, or a dtype the keys cannot hold exactly: a stable sort (equal values
        # keep their id order; NaN sorts first).
        values, ids = torch.sort(logits, dim=1, descending=True, stable=True)
        return values[:, :k], ids[:, :k]
    if logits.stride(1) != 1 or 4 * k * _BLOCK > vocab:
        # Pruning would keep a large share of the row: a direct top-k is as fast.
        return _direct_top_k(logits, k)
    n_full = vocab // _BLOCK
    main = logits[:, : n_full * _BLOCK].view(rows, n_full, _BLOCK)
    block_max = main.amax(dim=2)  # [R, n_full]; NaN propagates
    has_tail = vocab > n_full * _BLOCK
    if has_tail:
        tail_max = logits[:, n_full * _BLOCK :].amax(dim=1, keepdim=True)
        block_max = torch.cat([block_max, tail_max], dim=1)
    if logits.device.type == "cpu" and logits.dtype == torch.float32 and host_kernels.ready():
        # The selection from the block maxima, compiled: a few passes over small arrays
        # instead of two topk and two gathers of the candidates.
        host_values, host_ids = host_kernels.top_k(logits.numpy(), block_max.numpy(), _BLOCK, k)
        return torch.from_numpy(host_values), torch.from_numpy(host_ids)
    blocks = block_max.shape[1]
    positions = torch.arange(vocab, device=logits.device)
    block_keys = order_keys(block_max, positions[:blocks], blocks)
    top_blocks = torch.topk(block_keys, k, dim=1, sorted=False).indices  # [R, k]
    cand_ids = (top_blocks.unsqueeze(2) * _BLOCK + positions[:_BLOCK]).flatten(1)  # [R, k·B]
    past_end = cand_ids >= vocab
    cand_ids.clamp_(max=vocab - 1)  # in place: a fresh tensor; its keys are masked below
    keys = order_keys(logits.gather(1, cand_ids), cand_ids, vocab)
    if has_tail:
        keys.masked_fill_(past_end, torch.iinfo(torch.int64).min)  # in place: our fresh keys
    ids = cand_ids.gather(1, torch.topk(keys, k, dim=1).indices)
    return logits.gather(1, ids), ids


def _direct_top_k(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k of every token of each row, in :func:`order_keys`' order: a top-k of the
    order keys; on the host, where those int64 keys would cost more than the rest of a
    small-vocabulary step, :func:`host_kernels.direct_top_k` (a binned pass per row, on torch's
    team; ≈ 2× faster than ``torch.topk`` alone at 256 × 1,024)."""
    if (
        logits.device.type == "cpu"
        and logits.dtype == torch.float32
        and logits.is_contiguous()
        and host_kernels.ready()
    ):
        host_values, host_ids = host_kernels.direct_top_k(logits.numpy(), k)
        return torch.from_numpy(host_values), torch.from_numpy(host_ids)
    positions = torch.arange(logits.shape[1], device=logits.device)
    ids = torch.topk(order_keys(logits, positions, logits.shape[1]), k, dim=1).indices
    return logits.gather(1, ids), ids


def order_keys(values: torch.Tensor, ids: torch.Tensor, id_limit: int) -> torch.Tensor:
    """int64 keys whose descending order is the selection order: larger value first, NaN
    (either sign) first of all, equal values (−0 = +0) by the lower id. ``values`` of a dtype
    float32 holds exactly; ``ids`` (broadcast against ``values``) below ``id_limit`` ≤ 2³²."""
    canonical = values.float() + 0.0  # a fresh float32 tensor; −0 + 0 = +0
    bits = canonical.view(torch.int32).to(torch.int64)
    ordered = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)  # negative floats: bits reversed
    ordered.masked_fill_(canonical.isnan(), 0x7FFFFFFF)  # in place: where's fresh tensor
    return ordered * (1 << 32) + (id_limit - 1 - ids)


def shannon_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy in nats of softmax(logits) per row, float64 [R]. Masked (-inf) tokens add 0."""
    probs = torch.softmax(logits.float(), dim=1)
    entropy: torch.Tensor = torch.special.entr(probs).sum(dim=1).double()
    return entropy


def edt_temperature(entropy: torch.Tensor, vocab: int, params: SelectionParams) -> torch.Tensor:
    """T = clamp(base · (H / ln V)^exponent, min, max); monotone non-decreasing in H."""
    normalized = (entropy / math.log(vocab)).clamp(min=0.0)
    temps = params.edt_base * normalized.pow(params.edt_exponent)
    return torch.minimum(torch.maximum(temps, params.edt_min), params.edt_max)


def shape(logits: torch.Tensor, params: SelectionParams) -> Candidates:
    """Steps 1–3 for every row of ``logits`` [R, V], grouped by the work a row needs."""
    rows, vocab = logits.shape
    counts = params.candidate_counts(vocab)
    bounded = counts <= min(BOUNDED_K_LIMIT, vocab - 1)
    if bounded.all():
        return Candidates((_shape_bounded(logits, params, counts, None),), rows)
    if not bounded.any():
        return Candidates((_shape_full(logits, params, None),), rows)
    low, high = np.flatnonzero(bounded), np.flatnonzero(~bounded)
    low_index = torch.from_numpy(low).to(logits.device, non_blocking=True)
    high_index = torch.from_numpy(high).to(logits.device, non_blocking=True)
    groups = (
        _shape_bounded(logits.index_select(0, low_index), params.subset(low, low_index),
                       counts[low], low_index),
        _shape_full(logits.index_select(0, high_index), params.subset(high, high_index),
                    high_index),
    )  # fmt: skip
    return Candidates(groups, rows)


def _temperatures(
    logits: torch.Tensor, params: SelectionParams
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Each row's temperature, its reciprocal (1 for greedy rows) and, with EDT, H at T = 1."""
    temperature = params.fixed_temperature
    inv_temperature = params.inv_temperature
    edt_entropy = None
    if params.any_edt:
        edt_entropy = shannon_entropy(logits)
        temperature = torch.where(
            params.edt, edt_temperature(edt_entropy, logits.shape[1], params), temperature
        )
        inv_temperature = torch.where(params.greedy, 1.0, temperature.reciprocal())
    return temperature, inv_temperature, edt_entropy


def _shape_bounded(
    logits: torch.Tensor, params: SelectionParams, counts: np.ndarray, rows: torch.Tensor | None
) -> CandidateGroup:
    """Block-pruned top-k (k = the group's largest of ``counts``, the rows' candidate counts on
    the host), then float64 over those k only."""
    k = int(counts.max(initial=1))
    values, token_ids = top_candidates(logits, k)
    temperature, inv_temperature, edt_entropy = _temperatures(logits, params)
    if values.device.type == "cpu" and host_kernels.ready():
        # The scaled softmax, the filters and the cdf in compiled passes per row: no torch
        # operation here (a parallel one would wait for torch's worker threads, which the
        # step's fetch thread may be holding a core from).
        f = params.host_floats
        row_k = np.where(params.host_top_k > 0, np.minimum(params.host_top_k, k), k)
        host_values = values.numpy() if values.dtype == torch.float32 else values.double().numpy()
        host_probs = host_kernels.softmax_rows(host_values, inv_temperature.numpy(), row_k)
        filtered = host_kernels.filter_rows(
            host_probs, f[_F["min_p"]], f[_F["top_p_cut"]], params.host_greedy
        )
        return _group(rows, token_ids, values[:, 0], torch.from_numpy(host_probs), temperature,
                      edt_entropy, params, filtered)  # fmt: skip
    # float64 (the float64 temperatures promote the product), one operation.
    x = torch.mul(values, inv_temperature.unsqueeze(1))
    # In place on our own float64 copy: drop positions past each row's k (when rows differ in
    # k; the host knows), and NaN logits.
    if not (counts == k).all():
        x.masked_fill_(params.beyond_k(k), float("-inf"))
    x.nan_to_num_(nan=float("-inf"), neginf=float("-inf"))
    probs = _filter(torch.softmax(x, dim=1), params)
    return _group(rows, token_ids, values[:, 0], probs, temperature, edt_entropy, params)


def _shape_full(
    logits: torch.Tensor, params: SelectionParams, rows: torch.Tensor | None
) -> CandidateGroup:
    """Top-k off (or large): a float32 sort per row; float64 only where probability is."""
    vocab = logits.shape[1]
    x: torch.Tensor = logits.float().nan_to_num(nan=float("-inf"), neginf=float("-inf"))
    # Stable: equal values keep their id order, as in the bounded group.
    values, token_ids = torch.sort(x, dim=1, descending=True, stable=True)
    temperature, inv_temperature, edt_entropy = _temperatures(x, params)
    top = values[:, :1]
    scaled = (values - top) * inv_temperature.float().unsqueeze(1)  # float32 [Rg, V], ≤ 0
    positions = torch.arange(vocab, device=x.device)
    cap = torch.where(params.top_k > 0, params.top_k.clamp(max=vocab), vocab)
    in_topk = positions.unsqueeze(0) < cap.unsqueeze(1)
    # Sorted rows: the tokens within the gap form a prefix of each row.
    prefix = ((scaled >= -_TAIL_GAP) & in_topk).sum(dim=1)
    width = max(int(prefix.max()), 1)  # the one device read of this group
    x64 = (values[:, :width].double() - top.double()) * inv_temperature.unsqueeze(1)
    x64.masked_fill_(positions[:width].unsqueeze(0) >= prefix.unsqueeze(1), float("-inf"))
    weights = torch.exp(x64)  # 0 past each row's prefix
    tail = torch.where(
        (positions.unsqueeze(0) >= prefix.unsqueeze(1)) & in_topk, torch.exp(scaled), 0.0
    ).sum(dim=1, dtype=torch.float64)
    probs = weights / (weights.sum(dim=1, keepdim=True) + tail.unsqueeze(1))
    probs = _filter(probs, params)
    return _group(
        rows, token_ids[:, :width], values[:, 0], probs, temperature, edt_entropy, params
    )


def _filter(probs: torch.Tensor, params: SelectionParams) -> torch.Tensor:
    """min-p then top-p on float64 probabilities sorted descending, each renormalized."""
    if params.any_min_p:
        probs = probs * (probs >= params.min_p.unsqueeze(1) * probs[:, :1])
        probs = probs / probs.sum(dim=1, keepdim=True)
    if params.any_top_p:
        mass_before = torch.cumsum(probs, dim=1) - probs
        probs = probs * (mass_before < params.top_p_cut.unsqueeze(1))  # first is always kept
        probs = probs / probs.sum(dim=1, keepdim=True)
    if params.any_greedy:
        # Greedy rows: all mass on the argmax (the record shows probability 1, and the cdf is 1
        # from the first candidate on, so any u picks it).
        probs = probs.masked_fill(params.greedy.unsqueeze(1), 0.0)
        probs[:, 0].masked_fill_(params.greedy, 1.0)  # in place on the fresh masked copy
    return probs


def _group(
    rows: torch.Tensor | None,
    token_ids: torch.Tensor,
    top_logit: torch.Tensor,
    probs: torch.Tensor,
    temperature: torch.Tensor,
    edt_entropy: torch.Tensor | None,
    params: SelectionParams,
    filtered: tuple[np.ndarray, np.ndarray] | None = None,
) -> CandidateGroup:
    """``filtered``: the cdf and kept counts when the host kernels computed them already."""
    if params.any_greedy:
        temperature = torch.where(params.greedy, 0.0, temperature)
    if filtered is not None:
        cdf, num_kept = torch.from_numpy(filtered[0]), torch.from_numpy(filtered[1])
    else:
        cdf = torch.cumsum(probs, dim=1)
        # Probabilities are sorted descending, so the kept ones (> 0) form a prefix.
        num_kept = torch.count_nonzero(probs, dim=1).clamp_(min=1)
    return CandidateGroup(
        rows=rows,
        token_ids=token_ids,
        top_logit=top_logit,
        probs=probs,
        cdf=cdf,
        num_kept=num_kept,
        temperature=temperature,
        edt_entropy=edt_entropy,
        edt=params.edt if edt_entropy is not None else None,
    )


def choose(candidates: Candidates, u: torch.Tensor) -> Selection:
    """Step 4: per row, the first candidate whose cumulative probability is ≥ u (float64 [R]).

    Rows whose logits had no finite value get token -1 (nothing to choose from).
    """
    picks = [(g.rows, _choose_group(g, u if g.rows is None else u.index_select(0, g.rows)))
             for g in candidates.groups]
    if len(picks) == 1 and picks[0][0] is None:
        return picks[0][1]
    device = candidates.groups[0].probs.device
    n = candidates.num_rows
    token_ids = torch.full((n,), -1, dtype=torch.int64, device=device)
    ranks = torch.zeros(n, dtype=torch.int64, device=device)
    probs = torch.zeros(n, dtype=torch.float64, device=device)
    for rows, part in picks:
        assert rows is not None
        # In place on our own fresh tensors.
        token_ids.index_copy_(0, rows, part.token_ids)
        ranks.index_copy_(0, rows, part.ranks)
        probs.index_copy_(0, rows, part.probs)
    return Selection(token_ids=token_ids, ranks=ranks, probs=probs)


def _choose_group(group: CandidateGroup, u: torch.Tensor) -> Selection:
    if group.cdf.device.type == "cpu" and host_kernels.ready():
        tokens, ranks, probs = host_kernels.choose(
            group.cdf.numpy(), group.num_kept.numpy(), group.token_ids.numpy(),
            group.probs.numpy(), group.top_logit.float().numpy(), u.numpy(),
        )  # fmt: skip
        return Selection(token_ids=torch.from_numpy(tokens), ranks=torch.from_numpy(ranks),
                         probs=torch.from_numpy(probs))  # fmt: skip
    position = torch.searchsorted(group.cdf, u.unsqueeze(1).to(group.cdf.dtype))
    # Rounding can leave the last cdf a hair below u: clamp to the last kept candidate
    # (num_kept ≥ 1, and searchsorted is ≥ 0, so the result is a valid position).
    pos2 = torch.minimum(position, (group.num_kept - 1).unsqueeze(1))
    position = pos2.squeeze(1)
    token_ids = group.token_ids.gather(1, pos2).squeeze(1)
    valid = torch.isfinite(group.top_logit)
    return Selection(
        token_ids=torch.where(valid, token_ids, -1),
        ranks=position,
        probs=group.probs.gather(1, pos2).squeeze(1),
    )


def force_tokens(
    logits: torch.Tensor, token_ids: torch.Tensor, rows: torch.Tensor | None = None
) -> None:
    """Make each row one-hot: the chosen token 0, everything else -inf. In place on ``logits``.

    ``rows`` (int64 [R']) restricts the write to those rows; None means every row. Token ids
    must be valid (≥ 0); for rows that may carry -1 use ``engine.distributed.force_rows``.
    """
    if rows is None:
        logits.fill_(float("-inf"))  # in place: the engine reads the forced logits back
        logits.scatter_(1, token_ids.unsqueeze(1), 0.0)
    else:
        logits.index_fill_(0, rows, float("-inf"))  # in place, only the rows we sample
        logits.index_put_(
            (rows, token_ids), torch.zeros((), dtype=logits.dtype, device=logits.device)
        )


def force_rows(logits: torch.Tensor, token_ids: torch.Tensor) -> None:
    """Make every row with ``token_ids[row] >= 0`` one-hot on that token, in place.

    ``logits`` [B, V]; ``token_ids`` int64 [B] on the same device, -1 (:data:`NOT_FORCED`) for
    rows to leave as they are. On an accelerator no host sync: the row mask is applied with
    tensor ops.
    """
    forced = token_ids >= 0
    if token_ids.device.type == "cpu":
        # On the host a look at the mask is free: one fill where every row is forced (the
        # common case), index writes on the forced rows otherwise.
        if bool(forced.all()):
            force_tokens(logits, token_ids)
        elif bool(forced.any()):
            rows = forced.nonzero().squeeze(1)
            force_tokens(logits, token_ids.index_select(0, rows), rows)
        return
    index = token_ids.clamp(min=0).unsqueeze(1)
    kept = logits.gather(1, index)  # unforced rows get their own value back below
    # In place: the engine reads the forced logits back.
    logits.masked_fill_(forced.unsqueeze(1), float("-inf"))
    logits.scatter_(1, index, torch.where(forced.unsqueeze(1), torch.zeros_like(kept), kept))
