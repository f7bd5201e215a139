"""Ranking metrics on a ranking small enough to score by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from audience.evidence.metrics import lift_ci, mean_ci
from audience.model.quality import Truth, hits, per_product, user_coverage

# 3 products, 6 users. Rankings of k = 3 (-1 pads a short list).
RANKING = np.array([[0, 1, 2], [3, 4, -1], [5, 0, 1]], dtype=np.int64)
# Relevant: product 0 -> {1, 4}; product 1 -> {} ; product 2 -> {5, 0, 1, 2}
TRUTH = Truth.from_pairs(
    np.array([0, 0, 2, 2, 2, 2]), np.array([1, 4, 5, 0, 1, 2]), n_products=3, n_users=6
)


def test_hits_mark_relevant_ranks_only() -> None:
    assert hits(RANKING, TRUTH).tolist() == [
        [False, True, False],
        [False, False, False],
        [True, True, True],
    ]


def test_per_product_metrics_by_hand() -> None:
    m = per_product(RANKING, TRUTH, ks=(1, 3))
    # Product 1 has no relevant user and is dropped: rows are products 0 and 2.
    assert m["precision@1"].tolist() == [0.0, 1.0]
    assert m["precision@3"].tolist() == pytest.approx([1 / 3, 1.0])
    assert m["recall@3"].tolist() == pytest.approx([1 / 2, 3 / 4])
    assert m["hit_rate@1"].tolist() == [0.0, 1.0]
    # Product 0: one hit at rank 1 -> 1/log2(3); ideal for 2 relevant: 1 + 1/log2(3).
    p0 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    # Product 2: hits at ranks 0, 1, 2 and 4 relevant -> ideal is the same three ranks.
    assert m["ndcg@3"].tolist() == pytest.approx([p0, 1.0])


def test_user_coverage_counts_distinct_ranked_users() -> None:
    assert user_coverage(RANKING, n_candidates=10) == pytest.approx(6 / 10)


def test_intervals_contain_the_mean_and_lift_is_a_ratio() -> None:
    rng = np.random.default_rng(1)
    model = rng.binomial(1, 0.3, 500).astype(float)
    base = rng.binomial(1, 0.1, 500).astype(float)
    ci = mean_ci(model)
    assert ci["ci95_low"] < ci["mean"] < ci["ci95_high"]
    lift = lift_ci(model, base)
    assert lift["lift"] == pytest.approx(model.mean() / base.mean())
    assert lift["ci95_low"] is not None and lift["ci95_low"] > 1.0
    assert lift_ci(model, np.zeros(500))["lift"] is None
    assert mean_ci(np.ones(3)) == {"mean": 1.0, "ci95_low": 1.0, "ci95_high": 1.0}
