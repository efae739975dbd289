"""Batched token selection: shape each row's distribution, then pick by a uniform u.

Pipeline, per row, as tensor operations over all rows at once (on the logits' device):

1. candidates — the k most probable tokens in descending order (top-k is invariant to the
   temperature, so it runs on raw logits). Exact block pruning avoids a full ``topk`` pass.
2. temperature — fixed, or EDT: T = clamp(base · (H / ln V)^exponent, min, max) with H the
   Shannon entropy of the full softmax at T = 1. T = 0 (fixed) means greedy.
3. softmax over the candidates (float64), then min-p, renormalize, then top-p (the smallest
   prefix whose mass reaches p; the first token is always kept), renormalize.
4. choose — the first candidate whose cumulative probability is ≥ u.

So a token's selection probability is exactly its filtered probability when u is uniform.
Shapes: logits [R, V] float (any float dtype); per-row parameters [R]; candidates [R, K].
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from qr_sampler.types import SamplingConfig

#: Block width of the pruning pass. 64 float32 = 256 bytes: wide enough that the block-max pass
#: is a fast vectorized reduction, narrow enough that k blocks hold few candidates.
_BLOCK = 64


@dataclass(frozen=True)
class SelectionParams:
    """Per-row parameters as tensors on the logits' device, built once per batch composition.

    The Python-level summaries (``max_top_k``, ``any_*``) let the hot path skip work without
    reading tensors back from the device.
    """

    fixed_temperature: torch.Tensor  # float64 [R]
    inv_temperature: torch.Tensor  # float64 [R]: 1 / fixed temperature; 1 for greedy rows
    edt: torch.Tensor  # bool [R]
    edt_base: torch.Tensor  # float64 [R]
    edt_exponent: torch.Tensor  # float64 [R]
    edt_min: torch.Tensor  # float64 [R]
    edt_max: torch.Tensor  # float64 [R]
    top_k: torch.Tensor  # int64 [R], 0 = off
    top_p_cut: torch.Tensor  # float64 [R]: top_p, or +inf where top_p = 1 (no cut, no rounding)
    min_p: torch.Tensor  # float64 [R]
    greedy: torch.Tensor  # bool [R]
    max_top_k: int  # 0 when some row has top-k off (then every row needs the full vocabulary)
    any_edt: bool
    any_min_p: bool
    any_top_p: bool
    any_greedy: bool
    #: Cache of "position ≥ row's k" masks by candidate count K; filled on first use.
    _beyond_k: dict[int, torch.Tensor] = field(default_factory=dict, compare=False, repr=False)

    def beyond_k(self, k: int) -> torch.Tensor:
        """bool [R, k]: True where a candidate position is past the row's top-k."""
        mask = self._beyond_k.get(k)
        if mask is None:
            row_k = torch.where(self.top_k > 0, self.top_k, torch.full_like(self.top_k, k))
            positions = torch.arange(k, device=self.top_k.device)
            mask = positions.unsqueeze(0) >= row_k.unsqueeze(1)
            self._beyond_k[k] = mask
        return mask

    @property
    def rows(self) -> int:
        return int(self.top_k.shape[0])

    @classmethod
    def from_configs(
        cls, configs: Sequence[SamplingConfig], device: torch.device | str = "cpu"
    ) -> SelectionParams:
        def f64(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float64, device=device)

        def flag(values: list[bool]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.bool, device=device)

        top_k = [c.top_k for c in configs]
        edt = [c.temperature_strategy == "edt" for c in configs]
        greedy = [c.is_greedy for c in configs]
        return cls(
            fixed_temperature=f64([c.fixed_temperature for c in configs]),
            inv_temperature=f64(
                [1.0 if c.fixed_temperature == 0 else 1.0 / c.fixed_temperature for c in configs]
            ),
            edt=flag(edt),
            edt_base=f64([c.edt_base_temp for c in configs]),
            edt_exponent=f64([c.edt_exponent for c in configs]),
            edt_min=f64([c.edt_min_temp for c in configs]),
            edt_max=f64([c.edt_max_temp for c in configs]),
            top_k=torch.tensor(top_k, dtype=torch.int64, device=device),
            top_p_cut=f64([c.top_p if c.top_p < 1 else math.inf for c in configs]),
            min_p=f64([c.min_p for c in configs]),
            greedy=flag(greedy),
            max_top_k=0 if any(k == 0 for k in top_k) else max(top_k, default=0),
            any_edt=any(edt),
            any_min_p=any(c.min_p > 0 for c in configs),
            any_top_p=any(c.top_p < 1 for c in configs),
            any_greedy=any(greedy),
        )


@dataclass(frozen=True)
class Candidates:
    """Each row's filtered distribution over its candidates, most probable first.

    ``probs`` rows sum to 1 over the kept prefix and are 0 after it. A row whose logits had no
    finite value has NaN probabilities (``valid`` is False): nothing meaningful to choose.
    """

    token_ids: torch.Tensor  # int64 [R, K]
    top_logit: torch.Tensor  # [R], the largest logit (non-finite = invalid row)
    probs: torch.Tensor  # float64 [R, K]
    cdf: torch.Tensor  # float64 [R, K]
    num_kept: torch.Tensor  # int64 [R]
    temperature: torch.Tensor  # float64 [R] (0 for greedy rows)
    edt_entropy: torch.Tensor | None  # float64 [R] when any row uses EDT
    edt: torch.Tensor  # bool [R]

    @property
    def valid(self) -> torch.Tensor:
        return torch.isfinite(self.top_logit)

    def entropy(self) -> torch.Tensor:
        """Nats: of the full softmax for EDT rows, else of the filtered distribution.

        Computed on demand because only the records need it.
        """
        filtered: torch.Tensor = torch.special.entr(self.probs).sum(dim=1)
        if self.edt_entropy is None:
            return filtered
        return torch.where(self.edt, self.edt_entropy, filtered)


@dataclass(frozen=True)
class Selection:
    """The chosen token per row and how likely it was."""

    token_ids: torch.Tensor  # int64 [R]
    ranks: torch.Tensor  # int64 [R], 0 = most probable
    probs: torch.Tensor  # float64 [R]


def top_candidates(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest logits per row, descending, and their token ids. Exact.

    Block pruning: split the row into blocks of ``_BLOCK`` and take each block's max (one fast
    reduction pass). Every element of the row's top-k lies in one of the k blocks with the
    largest maxima — an element outside them is beaten by k block maxima, i.e. by k distinct
    elements. So an exact ``topk`` over those k·_BLOCK candidates gives the row's top-k.
    """
    vocab = logits.shape[1]
    if k >= vocab:
        values, ids = torch.sort(logits, dim=1, descending=True)
        return values, ids
    n_full = vocab // _BLOCK
    if logits.stride(1) != 1 or 4 * k * _BLOCK > vocab:
        # Pruning would keep a large share of the row: a direct topk is as fast.
        values, ids = torch.topk(logits, k, dim=1)
        return values, ids
    main = logits[:, : n_full * _BLOCK].view(logits.shape[0], n_full, _BLOCK)
    block_max = main.amax(dim=2)  # [R, n_full]
    has_tail = vocab > n_full * _BLOCK
    if has_tail:
        tail_max = logits[:, n_full * _BLOCK :].amax(dim=1, keepdim=True)
        block_max = torch.cat([block_max, tail_max], dim=1)
    top_blocks = torch.topk(block_max, k, dim=1, sorted=False).indices  # [R, k]
    offsets = torch.arange(_BLOCK, device=logits.device)
    cand_ids = (top_blocks.unsqueeze(2) * _BLOCK + offsets).flatten(1)  # [R, k·_BLOCK]
    if has_tail:
        past_end = cand_ids >= vocab
        cand_ids.clamp_(max=vocab - 1)  # in place: a fresh tensor; masked below
    cand_vals = logits.gather(1, cand_ids)
    if has_tail:
        cand_vals.masked_fill_(past_end, float("-inf"))  # in place: gather returned a copy
    values, positions = torch.topk(cand_vals, k, dim=1)
    return values, cand_ids.gather(1, positions)


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
    """Steps 1–3: candidates, temperature and filters, for every row of ``logits``.

    Kept to few tensor operations: at small batches each op's fixed cost dominates.
    """
    _, vocab = logits.shape
    k = params.max_top_k if 0 < params.max_top_k < vocab else vocab
    values, token_ids = top_candidates(logits, k)

    temperature = params.fixed_temperature
    inv_temperature = params.inv_temperature
    edt_entropy = None
    if params.any_edt:
        edt_entropy = shannon_entropy(logits)
        temperature = torch.where(
            params.edt, edt_temperature(edt_entropy, vocab, params), temperature
        )
        inv_temperature = torch.where(params.greedy, 1.0, temperature.reciprocal())
    x = values.double() * inv_temperature.unsqueeze(1)
    # In place on our own float64 copy: drop positions past each row's k, and NaN logits.
    x.masked_fill_(params.beyond_k(k), float("-inf")).nan_to_num_(nan=float("-inf"))

    probs = torch.softmax(x, dim=1)
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
        temperature = torch.where(params.greedy, 0.0, temperature)
    return Candidates(
        token_ids=token_ids,
        top_logit=values[:, 0],
        probs=probs,
        cdf=torch.cumsum(probs, dim=1),
        # Probabilities are sorted descending, so the kept ones (> 0) form a prefix.
        num_kept=torch.count_nonzero(probs, dim=1).clamp_(min=1),
        temperature=temperature,
        edt_entropy=edt_entropy,
        edt=params.edt,
    )


def choose(candidates: Candidates, u: torch.Tensor) -> Selection:
    """Step 4: per row, the first candidate whose cumulative probability is ≥ u (float64 [R])."""
    position = torch.searchsorted(candidates.cdf, u.unsqueeze(1).to(candidates.cdf.dtype))
    # Rounding can leave the last cdf a hair below u: clamp to the last kept candidate.
    position = torch.minimum(position.squeeze(1), candidates.num_kept - 1).clamp(min=0)
    pos2 = position.unsqueeze(1)
    return Selection(
        token_ids=candidates.token_ids.gather(1, pos2).squeeze(1),
        ranks=position,
        probs=candidates.probs.gather(1, pos2).squeeze(1),
    )


def force_tokens(
    logits: torch.Tensor, token_ids: torch.Tensor, rows: torch.Tensor | None = None
) -> None:
    """Make each row one-hot: the chosen token 0, everything else -inf. In place on ``logits``.

    ``rows`` (int64 [R']) restricts the write to those rows; None means every row.
    """
    if rows is None:
        logits.fill_(float("-inf"))  # in place: the engine reads the forced logits back
        logits.scatter_(1, token_ids.unsqueeze(1), 0.0)
    else:
        logits.index_fill_(0, rows, float("-inf"))  # in place, only the rows we sample
        logits.index_put_(
            (rows, token_ids), torch.zeros((), dtype=logits.dtype, device=logits.device)
        )
