"""Ranking metrics for the product -> users task, with bootstrap confidence intervals.

Shared by the analysis (CF baseline) and the backtest, so every model is scored by
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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

DEFINITIONS: dict[str, str] = {
    "precision@k": "hits in the top k / k, averaged over products with a relevant user",
    "recall@k": "hits in the top k / relevant users of the product, averaged likewise",
    "ndcg@k": "discounted hits (1/log2(rank+2)) / the best possible for the product",
    "hit_rate@k": "share of products with at least one hit in the top k",
    "user_coverage": "share of candidate users who appear in at least one product's top k",
    "ci95": "percentile bootstrap over products (1000 resamples, fixed seed)",
    "lift": "mean of the model's metric / mean of the baseline's, CI by paired bootstrap",
    "gain": "mean over products of (model's metric - baseline's), CI by bootstrap",
}


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


def _bootstrap(
    data: tuple[FloatArray, ...], statistic: Callable[..., Any], seed: int
) -> tuple[float, float]:
    if data[0].size < 2 or all(np.all(d == d[0]) for d in data):
        value = float(statistic(*data, axis=-1))
        return value, value
    result = stats.bootstrap(
        data,
        statistic,
        paired=len(data) > 1,
        vectorized=True,
        n_resamples=1000,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mean_ci(values: FloatArray, seed: int = 0) -> dict[str, float]:
    low, high = _bootstrap((values,), np.mean, seed)
    return {
        "mean": float(values.mean()) if values.size else 0.0,
        "ci95_low": low,
        "ci95_high": high,
    }


def _ratio(a: FloatArray, b: FloatArray, axis: int = -1) -> Any:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.mean(a, axis=axis) / np.mean(b, axis=axis)


def lift_ci(model: FloatArray, baseline: FloatArray, seed: int = 0) -> dict[str, float | None]:
    """Ratio of means with a paired bootstrap interval; None where the baseline mean is 0.

    A resample whose baseline mean is 0 has an infinite ratio; an interval bound
    that is not finite is reported as None (unbounded).
    """
    if not baseline.size or baseline.mean() == 0:
        return {"lift": None, "ci95_low": None, "ci95_high": None}
    with np.errstate(invalid="ignore"):  # inf - inf in scipy's standard error
        low, high = _bootstrap((model, baseline), _ratio, seed)
    return {
        "lift": float(model.mean() / baseline.mean()),
        "ci95_low": low if np.isfinite(low) else None,
        "ci95_high": high if np.isfinite(high) else None,
    }


def summarize(metrics: dict[str, FloatArray], seed: int = 0) -> dict[str, dict[str, float]]:
    return {name: mean_ci(values, seed) for name, values in metrics.items()}
