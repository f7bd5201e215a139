"""The compiled passes against plain-Python versions of the same definitions."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audience.model.kernels.csr import Csr
from audience.model.kernels.pairs import Events, by_category, pairs
from audience.model.kernels.related import relate
from audience.model.kernels.topn import Evidence, best_users

PAIRS = st.lists(st.tuples(st.integers(0, 7), st.integers(0, 9)), max_size=60)


def _csr(pairs: list[tuple[int, int]], rows: int, **values: list[float]) -> Csr:
    frame = pl.DataFrame(
        {"row": [r for r, _ in pairs], "col": [c for _, c in pairs], **values},
        schema={"row": pl.UInt32, "col": pl.UInt32} | dict.fromkeys(values, pl.Float64),
    ).sort("row", "col")
    return Csr.of(frame, "row", rows, ["col", *values])


@settings(max_examples=200, deadline=None)
@given(PAIRS, st.integers(0, 4), st.sampled_from([0.0, 0.3, 0.6]))
def test_related_products_are_the_most_similar_by_cosine(
    pairs: list[tuple[int, int]], related: int, min_cosine: float
) -> None:
    pairs = sorted(set(pairs))
    users_of = {p: {u for q, u in pairs if q == p} for p in range(8)}
    found = relate(_csr(pairs, 8, w=[1.0] * len(pairs)), 10, related, min_cosine)
    for p in range(8):
        expected = []
        for q in range(8):
            shared = len(users_of[p] & users_of[q])
            if q != p and shared:
                cos = shared / math.sqrt(len(users_of[p]) * len(users_of[q]))
                if cos >= min_cosine:
                    expected.append((-cos, q))
        lo, hi = found.ptr[p], found.ptr[p + 1]
        got = list(
            zip(found.columns[0][lo:hi].tolist(), found.columns[1][lo:hi].tolist(), strict=True)
        )
        assert got == [(q, -c) for c, q in sorted(expected)[:related]]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 9), st.integers(0, 2), st.floats(0, 1)), max_size=30),
    st.lists(st.one_of(st.none(), st.floats(0, 1, width=16)), min_size=10, max_size=10),
    st.integers(1, 12),
)
def test_best_users_per_category_rank_by_engagement_plus_affinity(
    terms: list[tuple[int, int, float]], scores: list[float | None], width: int
) -> None:
    terms = list({(u, c): (u, c, t) for u, c, t in terms}.values())
    e = np.array([np.nan if s is None else s for s in scores])
    category = _csr([(u, c) for u, c, _ in terms], 10, t=[t for *_, t in terms])
    evidence = Evidence(category, category, category, category, category, e, 1.0, 1.0)
    near, top = best_users(evidence, 3, width)
    scored = [u for u in range(10) if not np.isnan(e[u])]
    by_e = sorted(scored, key=lambda u: (-e[u], u))[:width]
    assert top.get_column("u").to_list() == by_e
    for c in range(3):
        # Totals are rounded to 12 decimals as Polars' round does (half to even).
        mine = [
            (np.rint((e[u] + t) * 1e12) / 1e12, u) for u, k, t in terms if k == c and u in scored
        ]
        expected = [u for _, u in sorted(mine, key=lambda x: (-x[0], x[1]))[:width]]
        assert near.filter(pl.col("c") == c).get_column("u").to_list() == expected


EVENTS = st.lists(
    st.tuples(
        st.integers(0, 5), st.integers(0, 4), st.sampled_from([0.0, 1.0, 5.0]), st.booleans()
    ),
    max_size=50,
)


def _row(table: Csr, k: int) -> list[list[float]]:
    """Row k's entries, a list per column."""
    lo, hi = table.ptr[k], table.ptr[k + 1]
    return [column[lo:hi].tolist() for column in table.columns]


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_pair_sums_are_the_sums_of_each_products_users_events(
    events: list[tuple[int, int, float, bool]],
) -> None:
    events = sorted(events, key=lambda e: e[1])  # by user, as the coded log holds them
    p, u = (np.array([e[k] for e in events], dtype=np.uint32) for k in (0, 1))
    w, x = (
        np.array([e[2] for e in events], dtype=float),
        np.array([e[3] for e in events], dtype=bool),
    )
    kind = np.arange(len(events), dtype=np.uint32)  # each event its own type
    sums = pairs(Events.of(p, u, kind, w, x), 6, 2.0, 2.0)
    for q in range(6):
        mine = [e for e in events if e[0] == q]
        users = sorted({e[1] for e in mine})
        assert _row(sums.touched, q) == [
            users,
            [sum(e[2] for e in mine if e[1] == v) for v in users],
        ]
        kept = [v for v in users if any(not e[3] for e in mine if e[1] == v)]
        d = [sum(e[2] for e in mine if e[1] == v and not e[3]) for v in kept]
        assert _row(sums.direct, q) == [kept, [2.0 * (s / (s + 2.0)) for s in d]]
        banned = [v for v in users if any(e[3] for e in mine if e[1] == v)]
        assert _row(sums.excluded, q) == [banned]


@settings(max_examples=200, deadline=None)
@given(EVENTS)
def test_category_terms_are_the_sums_of_each_users_events_per_category(
    events: list[tuple[int, int, float, bool]],
) -> None:
    """Product q > 0 is of category 5 - q; product 0 has none."""
    events = sorted(events, key=lambda e: e[1])
    p = np.array([e[0] for e in events], dtype=np.uint32)
    u = np.array([e[1] for e in events], dtype=np.uint32)
    w = np.array([e[2] for e in events], dtype=float)
    kind = np.arange(len(events), dtype=np.uint32)
    of = np.array([5 - q if q > 0 else -1 for q in range(6)], dtype=np.int64)
    found = by_category(Events.of(p, u, kind, w, np.zeros(len(events), bool)), of, 5, 5, 0.5, 2.0)
    for v in range(5):
        mine = [e for e in events if e[1] == v and e[0] > 0]
        cats = sorted({5 - e[0] for e in mine})
        k = [sum(e[2] for e in mine if 5 - e[0] == cat) for cat in cats]
        assert _row(found, v) == [cats, [0.5 * (s / (s + 2.0)) for s in k]]


def test_the_sums_need_the_events_in_user_order() -> None:
    p, u = np.array([0, 1], dtype=np.uint32), np.array([1, 0], dtype=np.uint32)
    with pytest.raises(ValueError, match="sorted by user"):
        Events.of(p, u, p, np.ones(2), np.zeros(2, dtype=bool))
