"""The analyst's DuckDB retention query agrees with audience.data.stats on random logs."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from audience.data.schema import EVENT_SCHEMA
from audience.data.stats import retention_curve

SQL = (Path(__file__).parents[2] / "analysis" / "retention.sql").read_text()
DAY0 = datetime(2022, 10, 1, tzinfo=UTC)


def duckdb_retention(path: Path, window: int) -> tuple[int, int]:
    con = duckdb.connect()
    con.execute(f"SET VARIABLE events = '{path}'")
    con.execute(f"SET VARIABLE window_days = {window}")
    row = con.execute(SQL).fetchone()
    assert row is not None
    return int(row[1]), int(row[2])


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(st.sampled_from("abcdef"), st.integers(0, 60), st.integers(0, 23)),
        min_size=1,
        max_size=40,
    ),
    window=st.sampled_from([1, 7, 30]),
)
def test_sql_and_polars_retention_agree(
    tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[str, int, int]], window: int
) -> None:
    events = pl.DataFrame(
        [(u, "p", "cart", DAY0 + timedelta(days=d, hours=h)) for u, d, h in rows],
        schema=EVENT_SCHEMA,
        orient="row",
    )
    path = tmp_path_factory.mktemp("sql") / "events.parquet"
    events.write_parquet(path)
    (point,) = retention_curve(events, [window])
    assert duckdb_retention(path, window) == (point["eligible_users"], point["retained_users"])
