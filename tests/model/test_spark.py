"""The Spark engine (`audience.model.spark`) against the Polars engine, in local mode
(`local[2]`, Java from Debian's default-jre-headless, which `make test` installs)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from audience.data.generate import generate
from audience.data.schema import DEFAULT_EVENT_WEIGHTS, TIME, USER
from audience.errors import ConfigError
from audience.model.features import user_features
from audience.model.spark import features as spark_features
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
) -> tuple[pl.DataFrame, Path]:
    """A sample log, and the canonical table Spark reads (a Parquet file)."""
    events, _ = generate(request.param, scale=0.02)
    path = tmp_path_factory.mktemp("spark") / "events.parquet"
    events.write_parquet(path)
    return events, path


def _same(polars: pl.DataFrame, spark: pl.DataFrame, tolerance: float = 1e-12) -> None:
    """The same columns and rows, integers equal, floats to `tolerance` (relative to the
    column's largest value, at least 1)."""
    assert spark.columns == polars.columns
    assert spark.get_column(USER).to_list() == polars.get_column(USER).to_list()
    for name in polars.columns[1:]:
        left, right = polars.get_column(name), spark.get_column(name)
        if left.dtype.is_float():
            scale = max(1.0, float(left.abs().max()))  # type: ignore[arg-type]
            assert (left - right).abs().max() <= tolerance * scale, name
        else:
            assert (left.cast(pl.Int64) == right.cast(pl.Int64)).all(), name


def _read(frame: Any, folder: Path) -> pl.DataFrame:
    """A Spark frame as Polars reads it: written by Spark as one Parquet file, in order."""
    frame.coalesce(1).write.parquet(str(folder))
    return pl.read_parquet(folder / "*.parquet")


def test_user_features_are_the_polars_engines(
    spark: Any, log: tuple[pl.DataFrame, Path], tmp_path: Path
) -> None:
    events, path = log
    last = events.get_column(TIME).max()
    assert last is not None
    for i, as_of in enumerate((last + timedelta(microseconds=1), last - timedelta(days=30))):
        expected = user_features(events, as_of, DEFAULT_EVENT_WEIGHTS)
        found = spark_features.user_features(
            spark.read.parquet(str(path)), as_of, DEFAULT_EVENT_WEIGHTS
        )
        _same(expected, _read(found, tmp_path / str(i)))


@pytest.mark.parametrize("model", ["seed", "fitted"])
def test_engagement_is_the_polars_engines(
    spark: Any, log: tuple[pl.DataFrame, Path], model: str, tmp_path: Path
) -> None:
    """Scores and their components to 1e-9; the fitted scorer's coefficients too (it is
    fitted on the driver from the features Spark computed)."""
    events, path = log
    last = events.get_column(TIME).max()
    assert last is not None
    as_of = last + timedelta(microseconds=1)
    expected = engagement(events, DEFAULT_EVENT_WEIGHTS, model, as_of)
    found, params = spark_scoring.engagement(
        spark.read.parquet(str(path)), DEFAULT_EVENT_WEIGHTS, model, as_of
    )
    _same(expected.components.collect(), _read(found, tmp_path / "scores"), 1e-9)
    if model == "fitted":
        mine, theirs = params["coefficients"], expected.params["coefficients"]
        assert list(mine) == list(theirs)
        for name, row in theirs.items():
            assert mine[name]["coef"] == pytest.approx(row["coef"], rel=1e-9, abs=1e-12)
        assert params["validation"]["auc"] == pytest.approx(expected.params["validation"]["auc"])


def test_spark_conf_flags_name_a_bad_pair() -> None:
    assert parse_conf(["spark.executor.memory=2g", " a = b "]) == {
        "spark.executor.memory": "2g",
        "a": "b",
    }
    with pytest.raises(ConfigError, match="spark-conf"):
        parse_conf(["spark.executor.memory"])
