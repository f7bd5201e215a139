"""The serving index and `model.train` end to end: each cold-start strategy, users, search."""

from __future__ import annotations

import gc
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from audience import artifact
from audience.data.schema import CATALOG_SCHEMA, DEFAULT_EVENT_WEIGHTS, PRODUCT, USER
from audience.model.audiences import AudienceConfig
from audience.model.codes import coded
from audience.model.train import train
from audience.serving.index import Index, _Map
from tests.model.test_audiences import EVENTS

CATALOG = pl.DataFrame(
    [
        ("p1", "Veyra Phone A1", "Phones", 199.0),
        ("p2", "Orbix Flip S2", "Phones", 99.0),
        ("p3", "Atlas of Birds", "Books", 20.0),
        ("p8", "Quill Novel X8", "Books", 12.0),  # listed, never interacted with
    ],
    schema=CATALOG_SCHEMA,
    orient="row",
)


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Index:
    root = tmp_path_factory.mktemp("artifacts")
    trained = train(
        coded(EVENTS, CATALOG, DEFAULT_EVENT_WEIGHTS), DEFAULT_EVENT_WEIGHTS, model="seed"
    )
    artifact.publish(root, trained.tables, trained.model, {"config": {"n": 10}})
    return Index.open(root)


def users(answer_members: list[object]) -> list[str]:
    return [m.user_id for m in answer_members]  # type: ignore[attr-defined]


def test_personalized_for_a_product_with_interactions(index: Index) -> None:
    answer = index.recommend("p2", 10)
    assert answer.strategy == "personalized"
    assert users(answer.audience) == ["dan", "cat"]
    assert [m.rank for m in answer.audience] == [1, 2]
    assert answer.model_version == index.version


def test_n_truncates(index: Index) -> None:
    assert len(index.recommend("p1", 1).audience) == 1


def test_lookalike_merges_the_named_products(index: Index) -> None:
    answer = index.recommend("new-phone", 10, like=("p2", "nope"))
    assert answer.strategy == "lookalike"
    assert users(answer.audience) == users(index.recommend("p2", 10).audience)
    assert answer.notes == ["unknown similar products ignored: ['nope']"]


def test_category_from_the_caller_or_the_catalog(index: Index) -> None:
    given = index.recommend("new-book", 3, category="Books")
    listed = index.recommend("p8", 3)  # in the catalog, no interactions yet
    assert given.strategy == listed.strategy == "category"
    assert users(given.audience) == users(listed.audience)
    assert users(given.audience)[0] == "dan"  # a Books purchase and engaged


def test_cold_start_is_the_global_ranking(index: Index) -> None:
    answer = index.recommend("unknown", 2, category="Garden")
    assert answer.strategy == "cold_start"
    assert answer.notes == ["unknown category 'Garden'"]
    top = index.users.sort("rank").head(2).get_column("user_id").to_list()
    assert users(answer.audience) == top


def test_user_lookup(index: Index) -> None:
    ann = index.user("ann")
    assert ann is not None and ann["rank"] >= 1
    assert set(ann) >= {"score", "c_interactions", "interactions", "recency"}
    assert index.user("nobody") is None


def test_search_by_id_prefix_or_name(index: Index) -> None:
    assert index.search("P", 10).get_column("product_id").to_list()[:3] == ["p1", "p2", "p3"]
    assert index.search("novel", 10).get_column("product_id").to_list() == ["p8"]
    assert index.search("zzz", 10).is_empty()


def test_train_reports_what_it_built(tmp_path: Path) -> None:
    trained = train(
        coded(EVENTS, CATALOG, DEFAULT_EVENT_WEIGHTS), DEFAULT_EVENT_WEIGHTS, model="seed"
    )
    assert trained.stats["products"] == 3 and trained.stats["users_scored"] == 4
    scores = (
        trained.tables["user_scores"].lazy().collect()
    )  # in user_id order, ranked by score then user_id
    assert scores.get_column("user_id").is_sorted()
    ranked = scores.sort("rank")
    assert ranked.get_column("rank").to_list() == [1, 2, 3, 4]
    assert ranked.equals(scores.sort(["score", "user_id"], descending=[True, False]))
    p8 = trained.tables["products"].lazy().filter(pl.col("product_id") == "p8").collect()
    assert p8.get_column("interactions").to_list() == [0]


def test_a_product_whose_audience_is_its_categorys_is_stored_once(tmp_path: Path) -> None:
    """p4's only user touched nothing else and is not in Books' top 2, so p4's audience
    is exactly Books' head: the artifact names the category instead of copying the
    list, and the index still answers it as p4's own."""
    eve = pl.DataFrame(
        [("eve", "p4", "search_keyword", datetime(2022, 10, 1, tzinfo=UTC))],
        schema=EVENTS.schema,
        orient="row",
    )
    book = pl.DataFrame([("p4", "Fern Guide", "Books", 9.0)], schema=CATALOG_SCHEMA, orient="row")
    events = pl.concat([EVENTS, eve])
    trained = train(
        coded(events, pl.concat([CATALOG, book]), DEFAULT_EVENT_WEIGHTS),
        DEFAULT_EVENT_WEIGHTS,
        model="seed",
        config=AudienceConfig(n=2),
    )
    tables = trained.tables
    own = tables["audiences"].lazy().collect()  # spelled out as it is written
    assert "p4" not in own.get_column("product_id")
    p4 = tables["products"].lazy().filter(pl.col("product_id") == "p4").collect()
    assert p4.get_column("audience_category").to_list() == ["Books"]
    artifact.publish(tmp_path, tables, trained.model, {"config": {"n": 2}})
    index = Index.open(tmp_path)
    answer = index.recommend("p4", 2)
    books = tables["category_audiences"].filter(pl.col("category") == "Books")
    assert answer.strategy == "personalized" and index.knows("p4")
    assert [(m.user_id, m.score, list(m.reasons)) for m in answer.audience] == books.select(
        "user_id", "score", "reasons"
    ).rows()
    assert users(index.recommend("new-book", 2, like=("p4",)).audience) == users(answer.audience)
    assert "p4" in index.sample(10, seed=0)


def test_an_artifact_where_every_product_shares_its_categorys_audience_loads(
    tmp_path: Path,
) -> None:
    """Regression (helper review): an empty audiences table crashed the serving index.
    Zero-weight views that exclude nobody give no product any evidence of its own."""
    start = datetime(2024, 1, 1, tzinfo=UTC)
    views = pl.DataFrame(
        [(f"u{i % 5}", f"p{i % 7}", "view", start + timedelta(days=i)) for i in range(30)],
        schema=EVENTS.schema,
        orient="row",
    )
    weights = DEFAULT_EVENT_WEIGHTS | {"view": 0.0}
    config = AudienceConfig(n=3, exclude=("purchased",))
    trained = train(coded(views, None, weights), weights, model="seed", config=config)
    assert trained.tables["audiences"].lazy().collect().is_empty()
    artifact.publish(tmp_path, trained.tables, trained.model, {"config": {"n": 3}})
    answer = Index.open(tmp_path).recommend("p1", 3)
    assert answer.strategy == "personalized" and len(answer.audience) == 3


def test_every_stored_row_is_found_by_its_key(index: Index) -> None:
    audiences = index.artifact.tables["audiences"]
    for (product,), rows in audiences.group_by(PRODUCT, maintain_order=True):
        members = index.recommend(str(product), 1_000).audience
        assert [(m.user_id, m.rank, m.score, list(m.reasons)) for m in members] == rows.select(
            USER, "rank", "score", "reasons"
        ).rows()
    users = index.users.get_column(USER).to_list()
    assert index.mask(users).all() and index.mask(users[:1]).sum() == 1
    assert not index.mask(["no such user"]).any() and not index.knows("")


def test_lookups_of_keys_between_and_beyond_the_stored_ones() -> None:
    keys = _Map(pl.DataFrame({"k": ["b", "d", "é", "b"], "v": [1, 2, 3, 4]}), "k", "v")
    assert [keys.get(k) for k in ("a", "b", "c", "d", "e", "é", "z", None, 1)] == [
        None, 4, None, 2, None, 3, None, None, None
    ]  # fmt: skip
    assert list(keys) == ["b", "d", "é"] and len(keys) == 3


def test_a_loaded_index_is_a_few_columns_not_an_object_per_row(tmp_path: Path) -> None:
    trained = train(
        coded(EVENTS, CATALOG, DEFAULT_EVENT_WEIGHTS), DEFAULT_EVENT_WEIGHTS, model="seed"
    )
    artifact.publish(tmp_path, trained.tables, trained.model, {"config": {"n": 10}})
    loaded = artifact.load(tmp_path)
    stored = loaded.tables["audiences"]
    rows = stored.gather(np.repeat(np.arange(stored.height), 5_000))  # each row 5,000 times
    gc.collect()
    before = len(gc.get_objects())
    index = Index(replace(loaded, tables=loaded.tables | {"audiences": rows}))
    # a list of reasons per row would be tens of thousands of objects for the collector
    assert rows.height >= 10_000 and len(gc.get_objects()) - before < 1_000
    assert (
        len(index.recommend("p2", 50_000).audience)
        == 5_000 * stored.filter(pl.col(PRODUCT) == "p2").height
    )
