"""Seed 004's engagement formula, checked against values worked out by hand."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from audience.data.schema import DEFAULT_EVENT_WEIGHTS, EVENT_SCHEMA
from audience.model.features import user_features
from audience.model.scoring import SeedScorer

AS_OF = datetime(2022, 11, 1, tzinfo=UTC)


def at(days_before: float) -> datetime:
    return AS_OF - timedelta(days=days_before)


# a: purchased p1 10 days before, cart p2 1 day before, cart p1 1 day before -> 3 events.
# b: search p3 30 days before. c: wishlist p1 0.5 days before, rating p2 0.5 days before.
# Events at or after AS_OF are ignored.
EVENTS = pl.DataFrame(
    [
        ("a", "p1", "purchased", at(10)),
        ("a", "p2", "cart", at(1)),
        ("a", "p1", "cart", at(1)),
        ("b", "p3", "search_keyword", at(30)),
        ("c", "p1", "wishlist", at(0.5)),
        ("c", "p2", "rating", at(0.5)),
        ("c", "p9", "purchased", AS_OF),
    ],
    schema=EVENT_SCHEMA,
    orient="row",
)


def test_features_by_hand() -> None:
    f = user_features(EVENTS, AS_OF, DEFAULT_EVENT_WEIGHTS)
    rows = {r["user_id"]: r for r in f.iter_rows(named=True)}
    assert rows["a"]["interactions"] == 3 and rows["a"]["unique_products"] == 2
    assert rows["a"]["mean_weight"] == pytest.approx((5 + 3 + 3) / 3)
    assert rows["a"]["per_active_day"] == pytest.approx(3 / (9 + 1))  # 9 whole days apart
    assert rows["a"]["recency"] == pytest.approx(math.exp(-1 / 90))
    assert rows["b"]["per_active_day"] == pytest.approx(1.0)
    assert rows["b"]["recency"] == pytest.approx(math.exp(-30 / 90))
    assert rows["c"]["interactions"] == 2  # the event at AS_OF is not before it
    assert rows["c"]["mean_weight"] == pytest.approx((2.0 + 2.5) / 2)


def test_seed_score_by_hand() -> None:
    scores = SeedScorer().score(user_features(EVENTS, AS_OF, DEFAULT_EVENT_WEIGHTS))
    got = dict(zip(scores["user_id"], scores["score"], strict=True))
    # interactions a3 b1 c2 -> 1, 0, .5; unique a2 b1 c2 -> 1, 0, 1
    # mean weight a 11/3, b 1, c 2.25 -> 1, 0, (2.25-1)/(11/3-1) = .46875
    # per day a .3, b 1, c 2 -> (0.3-.3)/1.7 = 0, .7/1.7, 1
    # recency a e^(-1/90), b e^(-1/3), c e^(-.5/90) -> (x - min)/(max - min)
    rmin, rmax = math.exp(-30 / 90), math.exp(-0.5 / 90)
    rec = {
        u: (math.exp(-d / 90) - rmin) / (rmax - rmin) for u, d in (("a", 1), ("b", 30), ("c", 0.5))
    }
    expected = {
        "a": 0.35 * 1 + 0.25 * 1 + 0.20 * 1 + 0.15 * 0 + 0.05 * rec["a"],
        "b": 0.35 * 0 + 0.25 * 0 + 0.20 * 0 + 0.15 * (0.7 / 1.7) + 0.05 * 0,
        "c": 0.35 * 0.5 + 0.25 * 1 + 0.20 * 0.46875 + 0.15 * 1 + 0.05 * 1,
    }
    assert got == pytest.approx(expected)
    row = scores.filter(pl.col("user_id") == "c").row(0, named=True)
    assert row["c_interactions"] == pytest.approx(0.175)


def test_constant_feature_normalises_to_half() -> None:
    one = EVENTS.filter(pl.col("user_id") == "b")
    scores = SeedScorer().score(user_features(one, AS_OF, DEFAULT_EVENT_WEIGHTS))
    assert scores["score"].to_list() == pytest.approx([0.5])
