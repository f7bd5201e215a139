"""Segments: the stored lists' ranking to any depth, filtered; `audience segment`."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from fastapi.testclient import TestClient

from audience import artifact
from audience.data.generate import generate
from audience.data.schema import DEFAULT_EVENT_WEIGHTS
from audience.errors import ConfigError
from audience.model import hybrid
from audience.model.audiences import CF_REASON, AudienceConfig
from audience.model.codes import coded
from audience.model.kernels import dense, scores
from audience.model.train import train
from audience.serving.api import create_app, segment_routes
from audience.serving.index import Index
from audience.serving.segment import Filters, audience, segment, size_of
from audience.settings import Settings
from tests.cli.test_cli import run


def _published(
    root: Path, config: AudienceConfig, preset: str = "marketplace", cf: str = "auto"
) -> Path:
    events, catalog = generate(preset, scale=0.02)
    trained = train(
        coded(events, catalog, DEFAULT_EVENT_WEIGHTS), DEFAULT_EVENT_WEIGHTS, config=config, cf=cf
    )
    artifact.publish(root, trained.tables, trained.model, {"config": {"n": config.n}})
    return root


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _published(tmp_path_factory.mktemp("segments"), AudienceConfig())


@pytest.fixture(scope="module")
def index(root: Path) -> Index:
    return Index.open(root)


def _cases(index: Index) -> list[tuple[str, tuple[str, ...], str | None]]:
    """Products of every kind: own lists, shared category heads, a new product named by
    its category or by similar products, and one nobody knows."""
    own = index.sample(150, seed=0)
    shared = sorted(index._shared)[:50]
    categories = sorted(index._categories)
    return [
        *((p, (), None) for p in own + shared),
        *(("new-product", (), c) for c in categories),
        *(("new-product", tuple(own[i : i + 3]), None) for i in range(0, 30, 3)),
        ("nobody-knows-it", (), None),
    ]


def test_a_segments_first_rows_are_the_stored_list(index: Index) -> None:
    _prefix_holds(index)


@pytest.fixture(scope="module")
def cf(tmp_path_factory: pytest.TempPathFactory) -> Index:
    """A model with the collaborative term (`audience train --cf on`)."""
    root = tmp_path_factory.mktemp("segments-cf")
    return Index.open(_published(root, AudienceConfig(), preset="loyal", cf="on"))


def test_with_the_collaborative_term_too(cf: Index) -> None:
    """CF on: its terms are in the stored lists and in every segment alike, and the rows
    it brought say so."""
    _prefix_holds(cf)
    said = {r for p in cf.sample(100, seed=1) for m in cf.recommend(p, cf.n).audience
            for r in m.reasons}  # fmt: skip
    assert "shoppers like this one buy it" in said
    # Every user with an ALS score above 0 has the term, at any depth: a product's
    # totals with it are those without it plus weight * s / (s + half).
    ranking = cf.ranking
    term = ranking.evidence.cf
    assert term is not None and term.weight > 0
    plain = replace(ranking, evidence=replace(ranking.evidence, cf=None))
    for product in cf.sample(20, seed=2):
        with_term, without = ranking.product(product), plain.product(product)
        s = term.items[ranking.code(product)].astype(float) @ term.users.astype(float)
        named = np.isfinite(with_term)
        assert (np.isfinite(without) == named).all()
        expected = np.where(s > 0, term.weight * s / (s + term.half), 0.0)
        assert np.allclose(with_term[named] - without[named], expected[named], atol=1e-9)
        assert (named & (s > 0)).sum() > hybrid.CANDIDATES
    # Past the stored list, a row names the term exactly when it has one.
    tail = segment(cf, product, 300, reasons=True).rows.filter(pl.col("rank") > cf.n)
    codes = ranking.users.search_sorted(tail.get_column("user_id")).to_numpy()
    s = term.items[ranking.code(product)].astype(float) @ term.users[:, codes].astype(float)
    names = tail.get_column("reasons").list.contains(CF_REASON).to_numpy()
    assert names.any() and (names == (s > 0)).all()


@pytest.mark.parametrize("ties", [False, True])
def test_the_bounded_lists_are_the_segments_pass(cf: Index, ties: bool) -> None:
    """`kernels.dense` (float32 estimates and bounds, exact sums for the few users they
    leave) ranks every product as the segments' exact pass does, at the stored lists'
    depth and deeper, with the same totals and ALS scores. `ties`: engagement rounded to
    a tenth and a product without factors, so that many totals tie at the tail."""
    ranking = cf.ranking
    evidence = ranking.evidence
    assert evidence.cf is not None
    if ties:
        items = evidence.cf.items.copy()
        items[0] = 0.0
        evidence = replace(
            evidence, e=np.round(evidence.e, 1), cf=replace(evidence.cf, items=items)
        )
    products = np.arange(ranking.products.len(), dtype=np.int64)
    for n in (cf.n, 300):
        found = dense.lists(evidence, ranking.turned, products, ranking.of, n)
        for p in products[:: 7 if n > cf.n else 1]:
            exact = scores.scored(evidence, ranking.turned, int(p), int(ranking.of[p]))
            best = scores.top(exact.totals, n)
            rows = found.at == p
            assert (found.u[rows] == best).all(), (p, n)
            assert (found.total[rows] == exact.totals[best]).all()
            assert (found.s[rows] == exact.s[best]).all()


def _prefix_holds(index: Index) -> None:
    strategies = set()
    for product, like, category in _cases(index):
        stored = index.recommend(product, index.n, like, category)
        deep = segment(index, product, 500, like, category)
        strategies.add(deep.strategy)
        assert deep.strategy == stored.strategy
        head = list(deep.rows.head(len(stored.audience)).iter_rows())
        assert head == [(m.rank, m.user_id, m.score) for m in stored.audience], product
    assert strategies == {"personalized", "category", "lookalike", "cold_start"}


def test_a_segment_is_sorted_unique_and_ties_go_to_the_smaller_user_id(index: Index) -> None:
    for product, like, category in _cases(index)[::20]:
        rows = segment(index, product, index.users.height, like, category).rows
        assert rows.get_column("user_id").is_unique().all()
        assert rows.get_column("rank").to_list() == list(range(1, rows.height + 1))
        ordered = rows.sort(["score", "user_id"], descending=[True, False])
        assert rows.equals(ordered)


def test_share_one_is_every_user_the_product_may_name(index: Index) -> None:
    product = index.sample(1, seed=3)[0]
    whole = segment(index, product, size_of(index, None, 1.0))
    excluded = index.ranking.touched_with(product, index.ranking.types).size
    assert whole.rows.height == whole.ranked_users == index.users.height - excluded
    assert size_of(index, None, 0.5) == int(np.ceil(index.users.height / 2))


@pytest.mark.parametrize(
    ("size", "share", "parameter"),
    [
        (0, None, "size"),
        (None, 0.0, "share"),
        (None, 1.5, "share"),
        (None, None, "size/share"),
        (5, 0.5, "size/share"),
    ],
)
def test_size_and_share_out_of_bounds_name_the_parameter(
    index: Index, size: int | None, share: float | None, parameter: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        size_of(index, size, share)
    assert raised.value.parameter == parameter


def test_each_filter_removes_users_and_says_how_many(index: Index) -> None:
    product = index.sample(1, seed=5)[0]
    whole = segment(index, product, index.users.height).rows
    cut = float(whole.get_column("score").quantile(0.5))
    first = whole.get_column("user_id")[0]
    filters = Filters(min_score=cut, active_within_days=60, exclude_users=frozenset({first}))
    kept = segment(index, product, index.users.height, filters=filters)
    below = int((whole.get_column("score") < cut).sum())
    assert kept.removed["min_score"] == below
    assert kept.removed["exclude_users"] == 1
    days = dict(
        zip(
            index.users.get_column("user_id"),
            index.users.get_column("days_since_last"),
            strict=True,
        )
    )
    users = kept.rows.get_column("user_id").to_list()
    assert first not in users and all(days[u] <= 60 for u in users)
    assert kept.rows.height == whole.height - sum(kept.removed.values())
    assert kept.rows.get_column("score").min() >= cut
    # The survivors keep their order: a filtered segment is the ranking with holes.
    assert users == [u for u in whole.get_column("user_id").to_list() if u in set(users)]


def test_unknown_event_types_name_the_parameter(index: Index) -> None:
    product = index.sample(1, seed=5)[0]
    with pytest.raises(ConfigError, match="exclude_events: unknown event types \\['view'\\]"):
        segment(index, product, 10, filters=Filters(exclude_events=("view",)))


def test_exclude_events_leaves_out_the_products_buyers_only(tmp_path: Path) -> None:
    # Trained with --exclude purchased: cart abandoners are candidates, buyers are not;
    # excluding carts too leaves out the abandoners.
    index = Index.open(_published(tmp_path, AudienceConfig(exclude=("purchased",))))
    for product in index.sample(40, seed=2):
        carts = set(
            index.users.get_column("user_id")
            .gather(index.ranking.touched_with(product, ["cart"]))
            .to_list()
        )
        whole = segment(index, product, index.users.height)
        named = set(whole.rows.get_column("user_id").to_list())
        if not carts & named:
            continue
        kept = segment(
            index, product, index.users.height, filters=Filters(exclude_events=("cart",))
        )
        assert kept.removed["exclude_events"] == len(carts & named)
        assert not carts & set(kept.rows.get_column("user_id").to_list())
        return
    pytest.fail("no sampled product has a cart abandoner in its segment")


def test_reasons_of_the_stored_rows_are_the_stored_reasons(index: Index) -> None:
    product = index.sample(1, seed=7)[0]
    rows = segment(index, product, 50, reasons=True).rows
    stored = index.recommend(product, index.n).audience
    assert rows.get_column("reasons").head(len(stored)).to_list() == [
        list(m.reasons) for m in stored
    ]
    assert rows.get_column("reasons").list.len().min() >= 1


def test_audience_segment_writes_csv_and_parquet_and_a_summary(
    root: Path, index: Index, tmp_path: Path
) -> None:
    products = index.sample(3, seed=9)
    (tmp_path / "products.txt").write_text("\n".join([*products, "new-one"]) + "\n")
    (tmp_path / "optout.txt").write_text("user_id\nU000001\n")
    done = run(
        "segment",
        "--artifact",
        root,
        "--products",
        tmp_path / "products.txt",
        "--size",
        "200",
        "--exclude-users",
        tmp_path / "optout.txt",
        "--reasons",
        "--out",
        tmp_path / "s.csv",
        "--json",
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["products"] == 4 and summary["rows"] == 800
    assert summary["strategies"] == {"personalized": 3, "cold_start": 1}
    written = pl.read_csv(tmp_path / "s.csv")
    assert written.columns == ["product_id", "rank", "user_id", "score", "reasons"]
    first = segment(
        index, products[0], 200, filters=Filters(exclude_users=frozenset({"U000001"}))
    ).rows
    mine = written.filter(pl.col("product_id") == products[0]).select("rank", "user_id", "score")
    assert mine.equals(first.select("rank", "user_id", "score"))
    done = run(
        "segment",
        "--artifact",
        root,
        "--product",
        products[0],
        "--share",
        "0.5",
        "--out",
        tmp_path / "s.parquet",
    )
    assert done.returncode == 0, done.stderr
    assert pl.read_parquet(tmp_path / "s.parquet").columns == [
        "product_id",
        "rank",
        "user_id",
        "score",
    ]


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--size", "0"], "size"),
        (["--share", "2"], "share"),
        (["--size", "5", "--exclude-users", "/nonexistent/users.txt"], "--exclude-users"),
        (["--size", "5", "--exclude-events", "view"], "exclude_events"),
    ],
)
def test_audience_segment_refuses_bad_parameters_naming_them(
    root: Path, tmp_path: Path, args: list[str], named: str
) -> None:
    out = tmp_path / "s.csv"
    done = run("segment", "--artifact", root, "--product", "P000001", *args, "--out", out)
    assert done.returncode == 2
    assert named in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()


# --- the API ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api(root: Path) -> Iterator[TestClient]:
    config = Settings(artifact=root, reload_seconds=0, api_keys=frozenset({"k"}))
    with TestClient(
        create_app(config, signals=False, log_fd=os.open(os.devnull, os.O_WRONLY))
    ) as c:
        c.headers["X-API-Key"] = "k"
        yield c


def test_get_segments_json_csv_and_parquet_are_the_same_segment(
    api: TestClient, index: Index
) -> None:
    product = index.sample(1, seed=11)[0]
    wanted = segment(index, product, 300).rows
    body = api.get(f"/segments/{product}", params={"size": 300}).json()
    assert body["strategy"] == "personalized" and body["size"] == 300
    assert [(m["rank"], m["user_id"], m["score"]) for m in body["audience"]] == list(
        wanted.iter_rows()
    )
    as_csv = api.get(f"/segments/{product}", params={"size": 300, "format": "csv"})
    assert as_csv.headers["content-type"].startswith("text/csv")
    frame = pl.read_csv(io.BytesIO(as_csv.content), schema_overrides={"user_id": pl.String})
    assert frame.select("rank", "user_id", "score").equals(wanted)
    as_parquet = api.get(f"/segments/{product}", params={"share": 1, "format": "parquet"})
    whole = pl.read_parquet(io.BytesIO(as_parquet.content))
    assert whole.columns == ["product_id", "rank", "user_id", "score"]
    assert whole.height == segment(index, product, index.users.height).rows.height


@pytest.mark.parametrize("chunk_rows", [7, 300, 50_000])
def test_csv_is_the_same_sent_whole_or_in_chunks(
    api: TestClient, index: Index, monkeypatch: pytest.MonkeyPatch, chunk_rows: int
) -> None:
    """A CSV of one chunk is sent at once, a longer one streamed in chunks: the header
    comes once and every row once, in order, either way."""
    monkeypatch.setattr(segment_routes, "CHUNK_ROWS", chunk_rows)
    product = index.sample(1, seed=11)[0]
    as_csv = api.get(f"/segments/{product}", params={"size": 300, "format": "csv"})
    assert as_csv.content.count(b"product_id") == 1
    frame = pl.read_csv(io.BytesIO(as_csv.content), schema_overrides={"user_id": pl.String})
    assert frame.select("rank", "user_id", "score").equals(segment(index, product, 300).rows)


def test_json_is_bounded_and_the_error_names_the_other_formats(
    api: TestClient, index: Index
) -> None:
    product = index.sample(1, seed=11)[0]
    answer = api.get(f"/segments/{product}", params={"size": 10_001})
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "format"
    assert (
        "10,000" in answer.json()["error"]["message"]
        and "format=csv" in answer.json()["error"]["message"]
    )


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"size": 0}, "size"),
        ({"share": 0}, "share"),
        ({"share": 1.5}, "share"),
        ({}, "size/share"),
        ({"size": 5, "share": 0.5}, "size/share"),
        ({"size": 5, "exclude_events": "view"}, "exclude_events"),
    ],
)
def test_bad_segment_parameters_are_422_naming_them(
    api: TestClient, params: dict[str, Any], field: str
) -> None:
    answer = api.get("/segments/P000001", params=params)
    assert answer.status_code == 422, answer.text
    assert field in answer.json()["error"]["message"]


def test_post_segments_takes_users_to_leave_out_and_needs_a_key(
    api: TestClient, index: Index
) -> None:
    product = index.sample(1, seed=12)[0]
    first = segment(index, product, 5).rows.get_column("user_id").to_list()
    body = {"product_id": product, "size": 5, "exclude_users": first[:2], "reasons": True}
    answer = api.post("/segments", json=body).json()
    assert answer["removed"] == {"exclude_users": 2}
    assert [m["user_id"] for m in answer["audience"]][:3] == first[2:]
    assert all(m["reasons"] for m in answer["audience"])
    assert api.post("/segments", json=body | {"exclude_users": ["u"] * 10_001}).status_code == 422
    unkeyed = api.get(f"/segments/{product}", params={"size": 5}, headers={"X-API-Key": ""})
    assert unkeyed.status_code == 401


def test_an_unknown_product_gets_a_fallback_segment_naming_its_strategy(
    api: TestClient, index: Index
) -> None:
    category = sorted(index._categories)[0]
    by_category = api.get("/segments/new-thing", params={"size": 50, "category": category}).json()
    assert by_category["strategy"] == "category"
    assert api.get("/segments/new-thing", params={"size": 50}).json()["strategy"] == "cold_start"


def test_with_opt_outs_an_answer_is_the_ranking_without_them(index: Index) -> None:
    """Opted-out users leave every answer, and the next users in the ranking take their
    places: /recommend's answer is the first n of the segment that skips them."""
    cases = _cases(index)
    heads = [index.recommend(p, index.n, like, c).audience for p, like, c in cases]
    named = sorted({m.user_id for members in heads[::7] for m in members[:2]})
    served = index.excluding(frozenset(named))
    changed = 0
    for product, like, category in cases:
        deep = segment(index, product, index.n + len(named), like, category).rows
        kept = deep.filter(~pl.col("user_id").is_in(named)).head(index.n)
        answer = audience(served, product, index.n, like, category)
        assert [(m.user_id, m.score) for m in answer.audience] == list(
            kept.select("user_id", "score").iter_rows()
        ), product
        assert [m.rank for m in answer.audience] == list(range(1, len(answer.audience) + 1))
        changed += answer.audience != index.recommend(product, index.n, like, category).audience
        rows = segment(served, product, 1_000, like, category).rows
        assert not set(rows.get_column("user_id")) & set(named)
    assert changed > 20  # the opted-out users were in many lists, and were replaced
    found = segment(served, cases[0][0], 1_000)
    assert found.removed["opted_out"] >= 1
