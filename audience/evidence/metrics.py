"""Confidence intervals of the ranking metrics (`audience.model.quality`): bootstrap over
products, for a mean, a paired ratio (lift) and a paired difference (gain).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import stats

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
