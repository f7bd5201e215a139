"""Ranking metrics for the product -> users task.

Shared by `audience train`'s validation (the collaborative term's weight, ALS's
parameters), the analysis (CF baseline) and the backtest, so every model is scored by
the same code. A ranking is a (products x k) array of user indices, -1 where a
product has fewer than k candidates; the truth is the set of (product, user)
pairs that happened in the evaluation period. Metrics are computed per product,
then averaged over products that have at least one relevant user (a product
nobody could have been right about says nothing about a model).

Definitions (k = cut-off, T = relevant users of the product, R = its ranked list):
- precision@k = |R[:k] ∩ T| / k
- recall@k    = |R[:k] ∩ T| / |T|
- ndcg@k      = sum over hits at rank i (0-based) of 1/log2(i+2), divided by the
                same sum for a perfect list of min(k, |T|) hits
- hit_rate@k  = 1 if R[:k] ∩ T is not empty
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Truth:
    """Relevant (product, user) pairs as sorted codes product * n_users + user."""

    codes: IntArray
    n_users: int
    counts: IntArray  # relevant users per product (row of the ranking)

    @classmethod
    def from_pairs(
        cls, products: IntArray, users: IntArray, n_products: int, n_users: int
    ) -> Truth:
        codes = np.unique(products.astype(np.int64) * n_users + users.astype(np.int64))
        counts = np.bincount(codes // n_users, minlength=n_products).astype(np.int64)
        return cls(codes=codes, n_users=n_users, counts=counts)

    def subset(self, rows: IntArray) -> Truth:
        """The truth of the ranking rows `rows` (ascending), numbered 0.. in that order."""
        row = self.codes // self.n_users
        keep = np.isin(row, rows)
        at = np.searchsorted(rows, row[keep])
        return Truth.from_pairs(at, self.codes[keep] % self.n_users, rows.size, self.n_users)


def hits(ranking: IntArray, truth: Truth) -> NDArray[np.bool_]:
    """Boolean (products x k): whether the user at each rank is relevant."""
    rows = np.arange(ranking.shape[0], dtype=np.int64)[:, None]
    codes = rows * truth.n_users + ranking
    pos = np.searchsorted(truth.codes, codes).clip(max=max(len(truth.codes) - 1, 0))
    found = truth.codes[pos] == codes if len(truth.codes) else np.zeros(codes.shape, bool)
    return found & (ranking >= 0)


def per_product(
    ranking: IntArray, truth: Truth, ks: tuple[int, ...] = (5, 10)
) -> dict[str, FloatArray]:
    """Each metric for each product with a relevant user (rows without one are dropped)."""
    hit = hits(ranking, truth)
    keep = truth.counts > 0
    hit, relevant = hit[keep], truth.counts[keep].astype(np.float64)
    discount = 1.0 / np.log2(np.arange(hit.shape[1]) + 2.0)
    out: dict[str, FloatArray] = {}
    for k in ks:
        top = hit[:, :k]
        n_hits = top.sum(axis=1).astype(np.float64)
        ideal = np.cumsum(discount[:k])[np.minimum(relevant, k).astype(np.int64) - 1]
        out[f"precision@{k}"] = n_hits / k
        out[f"recall@{k}"] = n_hits / relevant
        out[f"ndcg@{k}"] = (top * discount[:k]).sum(axis=1) / ideal
        out[f"hit_rate@{k}"] = (n_hits > 0).astype(np.float64)
    return out


def user_coverage(ranking: IntArray, n_candidates: int) -> float:
    return float(np.unique(ranking[ranking >= 0]).size / max(n_candidates, 1))
