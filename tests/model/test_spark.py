"""The Spark engine (`audience.model.spark`) against the Polars engine, in local mode
(`local[2]`, Java from Debian's default-jre-headless, which `make test` installs)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from pyspark.sql import functions as fn

from audience.data.generate import generate
from audience.data.schema import CATEGORY, DEFAULT_EVENT_WEIGHTS, TIME, USER
from audience.errors import ConfigError
from audience.model import segments
from audience.model.audiences import AudienceConfig, affinity, build
from audience.model.codes import coded
from audience.model.features import user_features
from audience.model.spark import affinity as spark_affinity
from audience.model.spark import audiences as spark_audiences
from audience.model.spark import codes as spark_codes
from audience.model.spark import features as spark_features
from audience.model.spark import reasons as spark_reasons
from audience.model.spark import scoring as spark_scoring
from audience.model.spark.session import parse_conf, session
from audience.model.train import engagement

#: PySpark's collect leaves its local socket to the garbage collector (a ResourceWarning
#: raised while the object is finalised): not this code's, and harmless.
pytestmark = pytest.mark.filterwarnings(
    "ignore:unclosed <socket.socket:ResourceWarning",
    "ignore::pytest.PytestUnraisableExceptionWarning",
)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    started = session("local[2]", {"spark.sql.shuffle.partitions": "4"})
    yield started
    started.stop()


@pytest.fixture(scope="module", params=["marketplace", "loyal"])
def log(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> tuple[pl.DataFrame, pl.DataFrame, Path]:
    """A sample log and its catalog, and the folder where Spark reads them
    (events.parquet, products.parquet)."""
    events, catalog = generate(request.param, scale=0.02)
    folder = tmp_path_factory.mktemp("spark")
    events.write_parquet(folder / "events.parquet")
    catalog.write_parquet(folder / "products.parquet")
    return events, catalog, folder


def _same(expected: pl.DataFrame, found: pl.DataFrame, tolerance: float = 1e-12) -> None:
    """The same columns and rows: floats to `tolerance` (relative to the column's
    largest value, at least 1), the rest equal."""
    assert found.columns == expected.columns
    assert found.height == expected.height
    for name in expected.columns:
        left, right = expected.get_column(name), found.get_column(name)
        if left.dtype.is_float():
            gap, scale = (left - right).abs().max(), left.abs().max()
            assert gap is None or gap <= tolerance * max(1.0, scale), name
        elif left.dtype.is_integer():
            assert (left.cast(pl.Int64) == right.cast(pl.Int64)).all(), name
        else:
            assert left.to_list() == right.to_list(), name


def _read(frame: Any, folder: Path) -> pl.DataFrame:
    """A Spark frame as Polars reads it: written by Spark as one Parquet file, in order."""
    frame.coalesce(1).write.parquet(str(folder))
    return pl.read_parquet(folder / "*.parquet")


def test_user_features_are_the_polars_engines(
    spark: Any, log: tuple[pl.DataFrame, pl.DataFrame, Path], tmp_path: Path
) -> None:
    events, _, folder = log
    last = events.get_column(TIME).max()
    assert last is not None
    for i, as_of in enumerate((last + timedelta(microseconds=1), last - timedelta(days=30))):
        expected = user_features(events, as_of, DEFAULT_EVENT_WEIGHTS)
        found = spark_features.user_features(
            spark.read.parquet(str(folder / "events.parquet")), as_of, DEFAULT_EVENT_WEIGHTS
        )
        _same(expected, _read(found, tmp_path / str(i)))


@pytest.mark.parametrize("model", ["seed", "fitted"])
def test_engagement_is_the_polars_engines(
    spark: Any, log: tuple[pl.DataFrame, pl.DataFrame, Path], model: str, tmp_path: Path
) -> None:
    """Scores and their components to 1e-9; the fitted scorer's coefficients too (it is
    fitted on the driver from the features Spark computed)."""
    events, _, folder = log
    last = events.get_column(TIME).max()
    assert last is not None
    as_of = last + timedelta(microseconds=1)
    expected = engagement(events, DEFAULT_EVENT_WEIGHTS, model, as_of)
    found = spark_scoring.engagement(
        spark.read.parquet(str(folder / "events.parquet")), DEFAULT_EVENT_WEIGHTS, model, as_of
    )
    params = found.params
    _same(expected.components.collect(), _read(found.components, tmp_path / "scores"), 1e-9)
    if model == "fitted":
        mine, theirs = params["coefficients"], expected.params["coefficients"]
        assert list(mine) == list(theirs)
        for name, row in theirs.items():
            assert mine[name]["coef"] == pytest.approx(row["coef"], rel=1e-9, abs=1e-12)
        assert params["validation"]["auc"] == pytest.approx(expected.params["validation"]["auc"])


def test_the_segment_tables_are_the_polars_engines(
    spark: Any, log: tuple[pl.DataFrame, pl.DataFrame, Path], tmp_path: Path
) -> None:
    """The affinity terms as the artifact holds them (`segments.export`): the same pairs
    with the same event types, direct and category terms to 1e-12, the same related
    products in the same order with the same cosines, the same category codes."""
    events, catalog, folder = log
    read = spark.read.parquet
    numbered = spark_codes.coded(
        read(str(folder / "events.parquet")),
        read(str(folder / "products.parquet")),
        DEFAULT_EVENT_WEIGHTS,
    )
    held = coded(events, catalog, DEFAULT_EVENT_WEIGHTS)
    rows: dict[str, int] = {}
    # Every type excludes (the default), and cart abandoners (direct terms from carts).
    for i, config in enumerate((AudienceConfig(), AudienceConfig(exclude=("purchased",)))):
        expected = segments.export(affinity(held, DEFAULT_EVENT_WEIGHTS, config))
        for name, frame in (
            spark_affinity.terms(numbered, DEFAULT_EVENT_WEIGHTS, config).segment_tables().items()
        ):
            _same(expected[name], _read(frame, tmp_path / f"{name}{i}"))
            rows[name] = rows.get(name, 0) + expected[name].height
    assert min(rows.values()) > 0, rows


@pytest.mark.parametrize("exclude", [None, ("purchased",)])
def test_the_lists_are_the_polars_engines(
    spark: Any, log: tuple[pl.DataFrame, pl.DataFrame, Path], exclude: Any, tmp_path: Path
) -> None:
    """From the same engagement scores: the same users at the same ranks with the same
    totals for every product with a list of its own, the same products taking their
    category's head, the same heads."""
    events, catalog, folder = log
    config = AudienceConfig(exclude=exclude)
    held = coded(events, catalog, DEFAULT_EVENT_WEIGHTS)
    last = events.get_column(TIME).max()
    assert last is not None
    as_of = last + timedelta(microseconds=1)
    engaged = engagement(held.events, DEFAULT_EVENT_WEIGHTS, "fitted", as_of)
    linked = affinity(held, DEFAULT_EVENT_WEIGHTS, config)
    built = build(linked, engaged)
    scores = engaged.scores.select(held.users.gather(engaged.scores.get_column(USER)), "score")
    scores.write_parquet(tmp_path / "scores.parquet")
    read = spark.read.parquet
    numbered = spark_codes.coded(
        read(str(folder / "events.parquet")),
        read(str(folder / "products.parquet")),
        DEFAULT_EVENT_WEIGHTS,
    )
    terms = spark_affinity.terms(numbered, DEFAULT_EVENT_WEIGHTS, config)
    found = spark_audiences.lists(numbered, read(str(tmp_path / "scores.parquet")), terms, config)
    reasons = built.texts.gather(built.ranked.get_column("i")).alias("reasons")
    own = built.ranked.with_columns(reasons).select("p", "rank", "u", "total", "reasons")
    assert own.height > 0
    # The reasons as the Spark engine writes them, from the Polars engine's engagement.
    engaged_ids = spark_scoring.Engaged(
        read(_written(_ids(engaged.components.collect(), held.users), tmp_path / "c.parquet")),
        read(_written(_ids(engaged.features.collect(), held.users), tmp_path / "f.parquet")),
        {},
    )
    keys = ["p", "rank", "u", "total"]
    explained = spark_reasons.explain(
        found.own, keys, numbered, engaged_ids, DEFAULT_EVENT_WEIGHTS, config
    )
    _same(own.sort("p", "rank"), _read(explained.orderBy("p", "rank"), tmp_path / "own"), 0.0)
    plain = _read(found.plain.select("p"), tmp_path / "plain").get_column("p")
    assert plain.cast(pl.Int64).to_list() == built.shared.get_column("p").cast(pl.Int64).to_list()
    named = built.categories.join(linked.names, on=CATEGORY)
    u = held.users.search_sorted(named.get_column(USER))
    heads = named.select("c", "rank", u=u, total="score", reasons="reasons")
    rows = found.heads.select(
        fn.lit(None).cast("long").alias("p"),
        *found.heads.columns,
        fn.lit(0.0).alias("t_direct"),
        fn.lit(0.0).alias("t_co"),
        fn.lit(0).cast("long").alias("r_k"),
    )
    said = spark_reasons.explain(
        rows, ["c", "rank", "u", "total"], numbered, engaged_ids, DEFAULT_EVENT_WEIGHTS, config
    )
    _same(heads.sort("c", "rank"), _read(said.orderBy("c", "rank"), tmp_path / "heads"), 0.0)


def test_the_lists_from_sparks_own_scores_differ_only_at_ties(
    spark: Any, log: tuple[pl.DataFrame, pl.DataFrame, Path], tmp_path: Path
) -> None:
    """End to end on Spark (its features, fitted scorer, terms and lists): every product
    ranks the same users, except where two users' totals tie to 12 decimals (the
    scorers' sums run in another order), and the totals agree to 1e-9."""
    events, catalog, folder = log
    config = AudienceConfig()
    held = coded(events, catalog, DEFAULT_EVENT_WEIGHTS)
    last = events.get_column(TIME).max()
    assert last is not None
    as_of = last + timedelta(microseconds=1)
    engaged = engagement(held.events, DEFAULT_EVENT_WEIGHTS, "fitted", as_of)
    built = build(affinity(held, DEFAULT_EVENT_WEIGHTS, config), engaged)
    read = spark.read.parquet
    raw = read(str(folder / "events.parquet"))
    numbered = spark_codes.coded(raw, read(str(folder / "products.parquet")), DEFAULT_EVENT_WEIGHTS)
    scores = spark_scoring.engagement(raw, DEFAULT_EVENT_WEIGHTS, "fitted", as_of).components
    terms = spark_affinity.terms(numbered, DEFAULT_EVENT_WEIGHTS, config)
    found = spark_audiences.lists(numbered, scores, terms, config)
    mine = _read(found.own.select("p", "rank", "u", "total"), tmp_path / "own")
    theirs = built.ranked.select("p", "rank", "u", "total").sort("p", "rank")
    both = theirs.join(mine, on=["p", "rank"], how="full", suffix="_spark")
    assert both.height == theirs.height == mine.height
    assert (both.get_column("total") - both.get_column("total_spark")).abs().max() <= 1e-9
    moved = both.filter(pl.col("u") != pl.col("u_spark"))
    for p, rank in moved.select("p", "rank").iter_rows():
        # The user ranked here by one engine is ranked next to it by the other, at a tie.
        row = both.filter((pl.col("p") == p) & pl.col("rank").is_between(rank - 1, rank + 1))
        assert row.get_column("total").n_unique() < row.height, (p, rank)
    assert moved.height <= 0.01 * both.height


def _ids(frame: pl.DataFrame, users: pl.Series) -> pl.DataFrame:
    """A frame by user code with the users' ids instead."""
    return frame.with_columns(users.gather(frame.get_column(USER)).alias(USER))


def _written(frame: pl.DataFrame, path: Path) -> str:
    frame.write_parquet(path)
    return str(path)


def test_spark_conf_flags_name_a_bad_pair() -> None:
    assert parse_conf(["spark.executor.memory=2g", " a = b "]) == {
        "spark.executor.memory": "2g",
        "a": "b",
    }
    with pytest.raises(ConfigError, match="spark-conf"):
        parse_conf(["spark.executor.memory"])
