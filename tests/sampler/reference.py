"""An independent, slow, float64 numpy model of the filtered distribution (for tests only).

Written from the definition, not from the torch code, so the two can disagree if one is wrong.
"""

from __future__ import annotations

import numpy as np


def filtered_distribution(
    logits: np.ndarray, temperature: float, top_k: int, top_p: float, min_p: float
) -> np.ndarray:
    """Probabilities over the whole vocabulary after temperature → top-k → softmax → min-p →
    top-p, each renormalized; zero for removed tokens."""
    x = logits.astype(np.float64)
    order = np.argsort(-x, kind="stable")
    keep = np.zeros(x.size, dtype=bool)
    k = x.size if top_k == 0 else min(top_k, x.size)
    keep[order[:k]] = True
    scaled = np.where(keep, x / temperature, -np.inf)
    p = np.exp(scaled - scaled.max())
    p /= p.sum()
    if min_p > 0:
        p = np.where(p >= min_p * p.max(), p, 0.0)
        p /= p.sum()
    if top_p < 1:
        sorted_p = p[order]
        before = np.cumsum(sorted_p) - sorted_p
        drop = order[before >= top_p]
        p[drop] = 0.0
        p /= p.sum()
    return p
