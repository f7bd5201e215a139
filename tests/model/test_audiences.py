"""Per-product audiences on tiny hand-made logs: candidates, exclusions, affinity, ties, cap."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest.mock import patch

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from audience.data.schema import DEFAULT_EVENT_WEIGHTS, EVENT_SCHEMA
from audience.errors import ConfigError
from audience.model import audiences
from audience.model.audiences import (
    Affinity,
    AudienceConfig,
    Audiences,
    affinity,
    build,
    reason_text,
)
from audience.model.codes import coded
from audience.model.features import SEED_FEATURES
from audience.model.kernels import topn
from audience.model.kernels.scores import SAMPLE, top
from audience.model.scoring import SEED_WEIGHTS, Engagement

START = datetime(2022, 10, 1, tzinfo=UTC)
CATALOG = pl.DataFrame(
    {"product_id": ["p1", "p2", "p3", "p4"], "category": ["Phones", "Phones", "Books", "Books"]}
)


def log(rows: list[tuple[str, str, str, int]]) -> pl.DataFrame:
    """(user, product, event, day) rows as a canonical event table."""
    return pl.DataFrame(
        [(u, p, e, START + timedelta(days=d)) for u, p, e, d in rows],
        schema=EVENT_SCHEMA,
        orient="row",
    )


def flat(users: pl.Series, **scores: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Engagement by user code where every user scores 0.5 unless named in `scores`
    (components: 0.5 split evenly), and the features its reasons quote."""
    codes = pl.Series("user_id", range(users.len()), dtype=pl.UInt32)
    parts = {f"c_{k}": [0.5 * w] * users.len() for k, w in SEED_WEIGHTS.items()}
    score = users.replace_strict(scores, default=0.5, return_dtype=pl.Float64)
    engagement = pl.DataFrame({"user_id": codes, "score": score, **parts})
    quoted = ("interactions", "unique_products", "mean_weight", "per_active_day", "days_since_last")
    features = pl.DataFrame({"user_id": codes, **{k: [1.0] * users.len() for k in quoted}})
    return engagement, features


def related(events: pl.DataFrame, catalog: pl.DataFrame, config: AudienceConfig) -> Affinity:
    """The affinity terms of `events` over a catalog of product_id and category only."""
    names = {"product_name": pl.String, "price": pl.Float64}
    listed = catalog.with_columns(pl.lit(None, t).alias(n) for n, t in names.items())
    return affinity(coded(events, listed, DEFAULT_EVENT_WEIGHTS), DEFAULT_EVENT_WEIGHTS, config)


def run(
    events: pl.DataFrame,
    config: AudienceConfig | None = None,
    catalog: pl.DataFrame = CATALOG,
    **scores: float,
) -> Audiences:
    linked = related(events, catalog, config or AudienceConfig())
    engagement, features = flat(linked.users, **scores)
    return build(linked, Engagement.of(engagement.lazy(), features.lazy(), {}))


def audience(result: Audiences, product: str) -> list[str]:
    rows = result.rows().filter(pl.col("product_id") == product).sort("rank")
    return rows.get_column("user_id").to_list()


EVENTS = log(
    [
        ("ann", "p1", "purchased", 1),
        ("ann", "p2", "purchased", 2),  # ann links p1 and p2
        ("bob", "p2", "cart", 3),
        ("cat", "p3", "search_keyword", 4),
        ("dan", "p1", "cart", 5),
        ("dan", "p3", "purchased", 6),  # dan links p1 and p3
    ]
)


def test_rows_of_some_products_are_those_of_all_rows() -> None:
    """Unknown ids and repeats are ignored; categorical ids are ids."""
    result = run(EVENTS)
    everything = result.rows()
    for asked in (["p2", "nope", "p2", ""], ["p3", "p1"]):
        wanted = everything.filter(pl.col("product_id").is_in(asked))
        assert not wanted.is_empty()
        assert_frame_equal(result.rows(pl.Series(asked)), wanted)
        assert_frame_equal(result.rows(pl.Series(asked, dtype=pl.Categorical)), wanted)


def test_users_who_interacted_are_excluded_by_default() -> None:
    result = run(EVENTS)
    assert "ann" not in audience(result, "p1") and "dan" not in audience(result, "p1")
    assert set(audience(result, "p1")) == {"bob", "cat"}
    assert result.rows().get_column("product_id").unique().sort().to_list() == ["p1", "p2", "p3"]


def test_exclusion_by_event_type_keeps_cart_abandoners_with_a_reason() -> None:
    result = run(EVENTS, AudienceConfig(exclude=("purchased",)))
    p1 = result.rows().filter(pl.col("product_id") == "p1")
    assert "ann" not in p1.get_column("user_id").to_list()  # purchased p1
    dan = p1.filter(pl.col("user_id") == "dan").row(0, named=True)  # only carted p1
    assert dan["rank"] == 1
    assert "1 cart on this product" in dan["reasons"]


def test_co_interaction_and_category_affinity_rank_and_explain() -> None:
    # p2: bob carted it (excluded); ann purchased it (excluded). Candidates: cat, dan.
    # dan purchased p3? no link to p2; cat neither. p1 is related to p2 through ann,
    # and dan carted p1, so dan ranks first with a "related product" reason.
    result = run(EVENTS)
    p2 = result.rows().filter(pl.col("product_id") == "p2").sort("rank")
    assert p2.get_column("user_id").to_list() == ["dan", "cat"]
    reasons = p2.row(0, named=True)["reasons"]
    assert reasons[0] == "1 related product"
    assert "1 cart in Phones" in reasons
    # category affinity: for p3 (Books), ann and bob have no Books history, dan and cat
    # interacted with p3 itself (excluded); ann (2 Phones purchases) and bob tie on
    # engagement and have no Books affinity, so user_id breaks the tie.
    assert audience(result, "p3") == ["ann", "bob"]


def test_a_category_named_with_the_reason_separator_keeps_its_reasons() -> None:
    """Reasons are joined with a control character and split into a list; a category
    name holding that character must not be split."""
    catalog = CATALOG.with_columns(pl.col("category").str.replace("Phones", "Pho\x1fnes"))
    p2 = run(EVENTS, catalog=catalog).rows().filter(pl.col("product_id") == "p2")
    reasons = p2.sort("rank").row(0, named=True)["reasons"]
    assert reasons == ["1 related product", "1 cart in Pho\x1fnes"]


def test_ties_break_by_user_id_whatever_the_input_order() -> None:
    events = log([(u, "p3", "search_keyword", 1) for u in ("zed", "amy", "kim")])
    events = events.vstack(log([("bea", "p4", "search_keyword", 2)]))
    result = run(events.sample(fraction=1.0, shuffle=True, seed=3))
    assert audience(result, "p4") == ["amy", "kim", "zed"]


def test_engagement_orders_users_without_affinity() -> None:
    events = log([(u, "p3", "search_keyword", 1) for u in ("amy", "kim", "zed")])
    events = events.vstack(log([("bea", "p4", "search_keyword", 2)]))
    result = run(events, kim=0.9, zed=0.7, amy=0.1)
    assert audience(result, "p4") == ["kim", "zed", "amy"]


def test_cap_limits_appearances_and_keeps_each_users_best_products() -> None:
    events = log(
        [("amy", "p1", "cart", 1), ("amy", "p2", "cart", 1)]
        + [(u, "p3", "search_keyword", 2) for u in ("u1", "u2", "u3")]
        + [("u4", "p4", "search_keyword", 3)]
    )
    tops = {p: audience(run(events, AudienceConfig(n=1)), p) for p in ("p1", "p2", "p3", "p4")}
    assert tops == {"p1": ["u1"], "p2": ["u1"], "p3": ["u4"], "p4": ["u1"]}
    capped = run(events, AudienceConfig(n=1, cap=1))
    # u1 keeps p4, where Books affinity makes its score highest; p1 and p2 take the
    # next candidates by user_id, and u2 (tied on p1 and p2) keeps the first product.
    tops = {p: audience(capped, p) for p in ("p1", "p2", "p3", "p4")}
    assert tops == {"p1": ["u2"], "p2": ["u3"], "p3": ["u4"], "p4": ["u1"]}
    assert capped.stats["products_short"] == 0


def test_cap_deals_a_categorys_users_to_its_products_in_turns() -> None:
    """With a cap, p1 and p2 take turns (each gets its first user before either gets its
    second) instead of both getting the same best users; A to D are excluded from p9,
    whose place waits for the first users who may take it."""
    holders = [("z1", "p1", "cart", 1), ("z2", "p2", "cart", 1)]
    events = log(holders + [(u, "p9", "search_keyword", 2) for u in "ABCD"])
    scores = {"A": 0.9, "B": 0.8, "C": 0.7, "D": 0.6, "z1": 0.1, "z2": 0.1}
    uncapped = run(events, AudienceConfig(n=2), **scores)
    assert [audience(uncapped, p) for p in ("p1", "p2")] == [["A", "B"], ["A", "B"]]
    capped = run(events, AudienceConfig(n=2, cap=1), **scores)
    tops = {p: audience(capped, p) for p in ("p1", "p2", "p9")}
    assert tops == {"p1": ["A", "C"], "p2": ["B", "D"], "p9": ["z1", "z2"]}
    assert capped.stats["products_short"] == 0


def test_capacity_goes_to_the_best_category_even_deep_in_a_pool() -> None:
    """y scores 0.877 in A, deeper in A's pool than its first pass reaches (six users
    with evidence come first), and 0.52 in B: its one place must still go to A."""
    holders = [f"s{i}" for i in range(1, 7)]
    catalog = pl.DataFrame(
        {
            "product_id": ["a1", "a2", "b1", "b2"] + [f"c{i}" for i in range(1, 7)],
            "category": ["A", "A", "B", "B"] + ["A"] * 6,
        }
    )
    rows = [(s, f"c{i}", "cart", d) for i, s in enumerate(holders, 1) for d in range(3)]
    buyers = [("y", "a1"), ("z", "a2"), ("w", "b1"), ("t", "b1"), ("v", "b2")]
    events = log(rows + [(u, p, "purchased", 1) for u, p in buyers])
    scores = {"y": 0.52, "z": 0.15, "w": 0.1, "t": 0.05, "v": 0.05}
    config = AudienceConfig(n=1, cap=1, exclude=("purchased",))
    result = run(events, config, catalog, **scores)
    tops = {p: audience(result, p) for p in ("a1", "a2", "b1", "b2")}
    assert tops == {"a1": ["z"], "a2": ["y"], "b1": ["v"], "b2": ["w"]}


def test_category_audiences_for_cold_start() -> None:
    result = run(EVENTS)
    books = result.categories.filter(pl.col("category") == "Books").sort("rank")
    # cat and dan have Books history, so they lead; the rest follow by engagement, user_id
    assert books.get_column("user_id").to_list()[:2] == ["dan", "cat"]
    assert books.row(0, named=True)["reasons"][0] == "1 purchase in Books"


def test_bad_config_names_the_parameter() -> None:
    with pytest.raises(ConfigError, match=r"^n:"):
        run(EVENTS, AudienceConfig(n=0))
    with pytest.raises(ConfigError, match=r"^exclude: unknown event types \['view'\]"):
        run(EVENTS, AudienceConfig(exclude=("view",)))
    with pytest.raises(ConfigError, match=r"^cap:"):
        run(EVENTS, AudienceConfig(cap=0))


def test_reason_texts_render_the_features() -> None:
    features = pl.DataFrame(
        {
            "user_id": ["a"],
            "interactions": [3],
            "unique_products": [2],
            "mean_weight": [3.6667],
            "per_active_day": [0.2727],
            "recency": [0.98],
            "days_since_last": [1.4],
        }
    )
    texts = features.select(reason_text(n).alias(f"r_{n}") for n in SEED_FEATURES).row(
        0, named=True
    )
    assert texts == {
        "r_interactions": "3 interactions",
        "r_unique_products": "2 products",
        "r_mean_weight": "avg event weight 3.7",
        "r_per_active_day": "0.3 events per active day",
        "r_recency": "active 1 days ago",
    }


#: Small random logs: (user, product, event, day) rows over six users and four products.
ROWS = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3", "u4", "u5", "u6"]),
        st.sampled_from(["p1", "p2", "p3", "p4"]),
        st.sampled_from(sorted(DEFAULT_EVENT_WEIGHTS)),
        st.integers(0, 30),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=40, deadline=None)
@given(
    rows=ROWS,
    n=st.integers(1, 4),
    cap=st.one_of(st.none(), st.integers(1, 3)),
)
def test_invariants(rows: list[tuple[str, str, str, int]], n: int, cap: int | None) -> None:
    """Top-n sorted, unique, never an excluded user, within the cap, ranks 1..k."""
    events = log(rows)
    result = run(events, AudienceConfig(n=n, cap=cap))
    touched = events.select("product_id", "user_id").unique()
    assert result.rows().join(touched, on=["product_id", "user_id"]).is_empty()
    for _, group in result.rows().group_by("product_id"):
        group = group.sort("rank")
        assert group.get_column("rank").to_list() == list(range(1, group.height + 1))
        assert group.height <= n and group.get_column("user_id").is_unique().all()
        scores = group.get_column("score").to_list()
        assert scores == sorted(scores, reverse=True)
    if cap is not None and not result.rows().is_empty():
        assert result.rows().group_by("user_id").len().get_column("len").max() <= cap


@settings(max_examples=60, deadline=None)
@given(
    rows=ROWS,
    n=st.integers(1, 3),
    scores=st.lists(st.sampled_from([0.1, 0.5, 0.9]), min_size=6, max_size=6),
)
def test_top_n_is_the_head_of_the_full_ranking(
    rows: list[tuple[str, str, str, int]], n: int, scores: list[float]
) -> None:
    """Pools and rounds change nothing: with n >= the users, every candidate is ranked."""
    events = log(rows)
    engagement = {f"u{i + 1}": s for i, s in enumerate(scores)}
    small = run(events, AudienceConfig(n=n), **engagement)
    full = run(events, AudienceConfig(n=6), **engagement)
    assert_frame_equal(small.rows(), full.rows().filter(pl.col("rank") <= n))
    assert_frame_equal(small.categories, full.categories.filter(pl.col("rank") <= n))


@settings(max_examples=40, deadline=None)
@given(rows=ROWS, n=st.integers(1, 3))
def test_units_of_work_change_nothing(rows: list[tuple[str, str, str, int]], n: int) -> None:
    """Products ranked one per unit of work, on both threads, and reasons written a row at
    a time give the same audiences."""
    events = log([*rows, ("u6", "p5", "wishlist", 3), ("u5", "p1", "cart", 4)])
    whole = run(events, AudienceConfig(n=n, exclude=("purchased",)))
    with patch.object(topn, "CHUNK", 1), patch.object(audiences, "SLICE_ROWS", 1):
        sliced = run(events, AudienceConfig(n=n, exclude=("purchased",)))
    assert_frame_equal(sliced.rows(), whole.rows())
    assert sliced.stats == whole.stats


def test_engagement_must_score_the_logs_users_in_order() -> None:
    linked = related(EVENTS, CATALOG, AudienceConfig())
    engagement, features = flat(linked.users)
    with pytest.raises(ValueError, match="exactly the log's users"):
        build(linked, Engagement.of(engagement.slice(1).lazy(), features.lazy(), {}))


def test_a_scorer_without_components_still_gives_reasons() -> None:
    """A fitted scorer may keep no feature: the rows are then explained by affinity alone."""
    linked = related(EVENTS, CATALOG, AudienceConfig())
    engagement, features = flat(linked.users)
    scores = engagement.select("user_id", "score").lazy()
    result = build(linked, Engagement.of(scores, features.lazy(), {}))
    rows = result.rows()
    assert rows.height > 0
    said = set(rows.get_column("reasons").explode().drop_nulls().to_list())
    assert said and not any("interactions" in text or "days ago" in text for text in said)


@pytest.mark.parametrize("k", [1, 2, 5, 10, 64, 65, 500])
def test_the_best_k_values_are_taken_alike_at_every_k(k: int) -> None:
    """`kernels.scores.top`: the compiled pass for a small k and the sampled threshold
    for a large one agree with a full sort: finite values only, best first, ties by code."""
    rng = np.random.default_rng(k)
    for _ in range(50):
        values = np.round(rng.normal(size=int(rng.integers(1, 2000))), 1)  # many ties
        values[rng.random(values.size) < 0.3] = -np.inf
        values[rng.random(values.size) < 0.05] = np.nan
        finite = np.flatnonzero(np.isfinite(values))
        expected = finite[np.lexsort((finite, -values[finite]))][:k]
        assert top(values, k).tolist() == expected.tolist()


@pytest.mark.parametrize(
    "shape",
    ["normal", "ties", "ascending", "descending", "mostly_inf", "sampled_high", "signed"],
)
def test_the_best_k_values_are_exact_when_the_sample_guesses_wrong(shape: str) -> None:
    """Past `SAMPLE` values, `top` guesses the k-th best from a strided sample and radix
    sorts what it keeps: sorted values (the best all at one end), heavy ties, every
    sign and exponent with both zeros, a
    mostly non-finite vector and a sample that holds the best values and nothing else
    still give the full sort's answer at every k."""
    rng = np.random.default_rng(len(shape))
    values = rng.normal(size=50_000)
    if shape == "ties":
        values = np.round(values, 1)
    if shape in ("ascending", "descending"):
        values = np.sort(values)[:: 1 if shape == "ascending" else -1]
    if shape == "mostly_inf":
        values[rng.random(values.size) < 0.97] = -np.inf
    if shape == "sampled_high":  # the sample sees only the best: its guess is too high
        values[:: values.size // SAMPLE] += 10
    if shape == "signed":  # every sign and exponent, and -0.0 beside 0.0 (one value)
        values *= 10.0 ** rng.integers(-300, 300, size=values.size)
        values[rng.random(values.size) < 0.05] = 0.0
        values[rng.random(values.size) < 0.05] = -0.0
    values[rng.random(values.size) < 0.01] = np.nan
    finite = np.flatnonzero(np.isfinite(values))
    expected = finite[np.lexsort((finite, -values[finite]))]
    for k in (65, 100, 1000, 10_000, 49_000, 60_000):
        assert top(values, k).tolist() == expected[:k].tolist()
