"""The Spark engine (`audience.model.spark`) against the Polars engine, in local mode
(`local[2]`, Java from Debian's default-jre-headless, which `make test` installs)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from pyspark.sql import functions as fn

from audience.artifact import load
from audience.data.generate import generate
from audience.data.schema import (
    AUDIENCE_CATEGORY,
    CATEGORY,
    DEFAULT_EVENT_WEIGHTS,
    PRODUCT,
    TIME,
    USER,
)
from audience.errors import ConfigError, InputError
from audience.model import cf, hybrid, segments
from audience.model.audiences import CF_REASON, AudienceConfig, affinity, build
from audience.model.codes import coded
from audience.model.features import user_features
from audience.model.fitted import FittedScorer
from audience.model.hybrid import WEIGHTS
from audience.model.spark import affinity as spark_affinity
from audience.model.spark import audiences as spark_audiences
from audience.model.spark import codes as spark_codes
from audience.model.spark import features as spark_features
from audience.model.spark import hybrid as spark_hybrid
from audience.model.spark import reasons as spark_reasons
from audience.model.spark import scoring as spark_scoring
from audience.model.spark import train as spark_train
from audience.model.spark.parity import as_segments, compared
from audience.model.spark.session import LOCAL_CONF, parse_conf, session
from audience.model.train import engagement
from audience_cli import commands, spark_job
from audience_cli.main import main, parser
from tests.serving.test_api import KEY, free_port, serve, stop, users, wait_ready

#: PySpark's collect leaves its local socket to the garbage collector (a ResourceWarning
#: raised while the object is finalised): not this code's, and harmless.
pytestmark = pytest.mark.filterwarnings(
    "ignore:unclosed <socket.socket:ResourceWarning",
    "ignore::pytest.PytestUnraisableExceptionWarning",
    # PySpark's check of pandas' version on Arrow transfers (`session` silences it for a
    # train; pytest restores its own filters for each test): no pandas is used.
    "ignore:PySpark does not yet fully support pandas:FutureWarning",
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


def test_the_fit_samples_the_polars_engines_users(
    spark: Any, log: tuple[pl.DataFrame, pl.DataFrame, Path]
) -> None:
    """Past `max_users` users both engines fit on the same seeded sample
    (`fitted.sampled`), so their coefficients agree as closely as without one."""
    events, _, folder = log
    users = events.get_column(USER).n_unique()
    fitted = FittedScorer.fit(events, DEFAULT_EVENT_WEIGHTS, max_users=users // 2, seed=3)
    raw = spark.read.parquet(str(folder / "events.parquet"))
    found = spark_scoring.fit(raw, DEFAULT_EVENT_WEIGHTS, seed=3, max_users=users // 2)
    assert found.params()["users_sampled"] == users // 2 < users
    for name, coefficient in fitted.coefficients.items():
        assert found.coefficients[name] == pytest.approx(coefficient, rel=1e-9, abs=1e-12), name


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


@pytest.fixture(scope="module")
def trained(
    spark: Any,
    log: tuple[pl.DataFrame, pl.DataFrame, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, Path]:
    """The artifact roots of `audience train LOG --cf off` by each engine: the Polars
    one in this process, the Spark one by spark-submit (as on a cluster, its own
    driver), through the engine's entry point."""
    _, _, folder = log
    roots = tmp_path_factory.mktemp("trained")
    assert main(["train", str(folder), "--cf", "off", "--out", str(roots / "polars")]) == 0
    submit = Path(sys.executable).with_name("spark-submit")
    settings = {"spark.sql.shuffle.partitions": "4"} | LOCAL_CONF  # on 127.0.0.1 only
    conf = [f"--conf={key}={value}" for key, value in settings.items()]
    command = [str(submit), "--master", "local[2]", *conf]
    job = [spark_job.__file__, str(folder), "--cf", "off", "--out", str(roots / "spark")]
    env = os.environ | {"PYSPARK_PYTHON": sys.executable, "PYSPARK_DRIVER_PYTHON": sys.executable}
    done = subprocess.run([*command, *job], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    # spark-submit passes on its Python program's stderr (the progress lines) as stdout.
    said = [line for line in done.stdout.splitlines() if line.startswith("[")]
    assert any("on local[2]: driver heap" in line for line in said), said
    return roots / "polars", roots / "spark"


def test_the_spark_artifact_is_the_polars_engines(trained: tuple[Path, Path]) -> None:
    """Every table (`spark.parity.compared`: lists equal but at ties, scores to 1e-9,
    the same reasons; the rest equal), and the same model."""
    expected, found = (load(root) for root in trained)
    report = compared(expected, found)
    assert report["same"], report
    assert min(report["tables"][t]["rows"] for t in ("audiences", "user_scores", "products")) > 0
    for key in ("audiences", "event_weights", "event_types", "as_of"):
        assert found.model[key] == expected.model[key], key
    theirs, mine = expected.model["scorer"], found.model["scorer"]
    for name, row in theirs["coefficients"].items():
        assert mine["coefficients"][name]["coef"] == pytest.approx(row["coef"], rel=1e-9)
    assert found.manifest["config"]["engine"] == "spark"
    assert found.manifest["stats"]["rows"] == expected.manifest["stats"]["rows"]


def test_audience_serve_serves_a_spark_made_artifact(trained: tuple[Path, Path]) -> None:
    """`audience serve` over the Spark artifact answers /recommend as the Polars one
    holds it: a product with a list of its own, and one taking its category's."""
    expected = load(trained[0])
    products = expected.tables["products"]
    own = expected.tables["audiences"].get_column(PRODUCT)[0]
    shared = products.filter(pl.col(AUDIENCE_CATEGORY).is_not_null()).get_column(PRODUCT)
    port = free_port()
    server = serve(
        "--artifact", str(trained[1]), "--port", str(port), env={"AUDIENCE_API_KEYS": KEY}
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, server)
        for product in (own, *shared.head(1)):
            answer = httpx.get(f"{base}/recommend/{product}?n=5", headers={"X-API-Key": KEY})
            assert answer.status_code == 200, answer.text
            held = audience_of(expected, product).head(5)
            assert users(answer.json()) == held.get_column(USER).to_list(), product
    finally:
        stop(server)


def audience_of(found: Any, product: str) -> pl.DataFrame:
    """`product`'s stored list in an artifact: its own, or its category's."""
    own = found.tables["audiences"].filter(pl.col(PRODUCT) == product)
    if own.height:
        return own
    row = found.tables["products"].filter(pl.col(PRODUCT) == product)
    category = row.get_column(AUDIENCE_CATEGORY)[0]
    return found.tables["category_audiences"].filter(pl.col(CATEGORY) == category)


def test_the_spark_engine_names_what_it_does_not_do(
    spark: Any, log: tuple[pl.DataFrame, pl.DataFrame, Path], tmp_path: Path
) -> None:
    _, _, folder = log
    out = str(tmp_path / "art")
    for flags, said in (
        (["--engine", "spark", "--cf", "off", "--cap", "3"], "--cap"),
        (["--engine", "spark", "--repeat"], "--repeat"),
        (["--engine", "spark", "--cf", "off", "--spark-conf", "x"], "key=value"),
        (["--master", "local[2]"], "--engine spark"),
    ):
        with pytest.raises(ConfigError, match=said):
            commands.train(parser().parse_args(["train", str(folder), "--out", out, *flags]))
    assert not (tmp_path / "art" / "current").exists()
    with pytest.raises(InputError, match="no column 'user_id'"):
        spark_train.read(spark, str(folder / "products.parquet"))
    with pytest.raises(InputError, match=r"none\.parquet: cannot be read as Parquet"):
        spark_train.read(spark, str(folder / "none.parquet"))


def test_the_cf_criteria_are_the_polars_engines(
    spark: Any, log: tuple[pl.DataFrame, pl.DataFrame, Path]
) -> None:
    """`--cf auto`'s criteria (30-day retention, the ceiling), judged by the same
    `hybrid.judged`: on Spark as on Polars."""
    events, catalog, folder = log
    expected = hybrid.criteria(coded(events, catalog, DEFAULT_EVENT_WEIGHTS))
    found = spark_hybrid.criteria(spark.read.parquet(str(folder / "events.parquet")))
    assert found == pytest.approx(expected, abs=1e-12)
    assert set(found) == set(hybrid.CHEAP)


@pytest.fixture(scope="module")
def loyal(tmp_path_factory: pytest.TempPathFactory) -> tuple[pl.DataFrame, pl.DataFrame, Path]:
    """The loyal sample at a tenth of its size, where `--cf auto` turns the term on."""
    events, catalog = generate("loyal", scale=0.1)
    folder = tmp_path_factory.mktemp("loyal")
    events.write_parquet(folder / "events.parquet")
    catalog.write_parquet(folder / "products.parquet")
    return events, catalog, folder


def test_the_collaborative_term_ranks_as_a_segment_does(
    spark: Any, loyal: tuple[pl.DataFrame, pl.DataFrame, Path], tmp_path: Path
) -> None:
    """`--engine spark --cf auto` on a log that supports CF: MLlib's ALS, the weight
    chosen on the validation slice, and every product's stored list equal, users and
    totals to the bit, to the segments' pass over every user of the artifact it wrote
    (`segments.Ranking`, what `audience segment` and `/recommend` rank with)."""
    _, _, folder = loyal
    out = tmp_path / "art"
    flags = ["--engine", "spark", "--master", "local[2]", "--cf", "auto", "--out", str(out)]
    commands.train(parser().parse_args(["train", str(folder), *flags]))
    found = load(out)
    said = found.model["cf"]
    assert said["on"] and said["why"].startswith("the log supports CF"), said
    assert said["solver"].startswith("Spark MLlib")
    assert set(said["validation"][f"ndcg@{cf.K}_by_weight"]) == {f"{w:g}" for w in WEIGHTS}
    assert said["weight"] in WEIGHTS and said["weight"] > 0, said
    users, products = found.tables["segment_cf_users"], found.tables["segment_cf_products"]
    factors = said["als"]["factors"]
    assert users.schema["x"] == pl.Array(pl.Float32, factors)
    assert (users.height, products.height) == (
        found.tables["user_scores"].height,
        found.tables["products"].height,
    )
    report = as_segments(found)
    assert report["same"] and report["products"] > 0, report
    lists = found.tables["audiences"]
    reasons = lists.get_column("reasons").explode()
    assert (reasons == CF_REASON).any()


def test_the_spark_hybrid_is_judged_beside_the_polars_one(
    loyal: tuple[pl.DataFrame, pl.DataFrame, Path], spark: Any, tmp_path: Path
) -> None:
    """`audience evaluate --engine spark`: the Spark engine's hybrid (MLlib's ALS) on the
    same backtest as the Polars engine's (implicit's): its NDCG@10 within the Polars
    hybrid's 95% interval."""
    _, _, folder = loyal
    out = tmp_path / "eval"
    flags = ["--engine", "spark", "--master", "local[2]", "--out", str(out)]
    commands.evaluate(parser().parse_args(["evaluate", str(folder), *flags]))
    models = json.loads((out / "model_metrics.json").read_text())["task_a"]["models"]
    polars, on_spark = models["audiences_hybrid"], models["audiences_hybrid_spark"]
    assert on_spark["collaborative_term"]["solver"].startswith("Spark MLlib")
    interval = polars["metrics"][f"ndcg@{cf.K}"]
    found = on_spark["metrics"][f"ndcg@{cf.K}"]["mean"]
    assert interval["ci95_low"] <= found <= interval["ci95_high"], (interval, found)
    assert on_spark["lift_over_random"][f"ndcg@{cf.K}"]["lift"] > 1
