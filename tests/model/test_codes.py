"""Numbering ids in id order, and the coded log built from it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from audience.data.schema import CATALOG_SCHEMA, DEFAULT_EVENT_WEIGHTS, EVENT_SCHEMA
from audience.model.codes import coded, number

# Short ids take the 16-byte-key path, long ones (over 11 bytes) the string sort; NULs,
# prefixes and multi-byte characters are where a key could order differently.
IDS = st.lists(st.text(alphabet="ab\0é", max_size=14), max_size=40)


@settings(deadline=None)  # the first example may compile the numbering pass (numba)
@given(IDS)
def test_codes_are_ranks_in_string_order(ids: list[str]) -> None:
    codes, distinct = number(pl.Series("id", ids, dtype=pl.String))
    assert distinct.to_list() == sorted(set(ids))  # Python orders str like UTF-8 bytes
    assert [distinct[c] for c in codes.to_list()] == ids


def test_a_prefix_and_its_nul_padded_twin_are_different_ids() -> None:
    codes, distinct = number(pl.Series("id", ["ab\0", "ab", "b", "ab"]))
    assert distinct.to_list() == ["ab", "ab\0", "b"]
    assert codes.to_list() == [1, 0, 2, 0]


@pytest.mark.parametrize("scanned", [False, True])
def test_the_product_table_holds_the_catalog_and_the_log(scanned: bool, tmp_path: Path) -> None:
    at = datetime(2022, 10, 1, tzinfo=UTC)
    events = pl.DataFrame(
        [("u2", "p3", "cart", at), ("u1", "p1", "view", at), ("u2", "p1", "cart", at)],
        schema=EVENT_SCHEMA,
        orient="row",
    )
    catalog = pl.DataFrame(
        [("p2", "Lamp", "Home", 9.5), ("p1", "Phone", "Phones", 99.0)],
        schema=CATALOG_SCHEMA,
        orient="row",
    )
    if scanned:  # as `audience train` reads it: names and prices as the table is written
        catalog.write_parquet(tmp_path / "products.parquet")
        catalog = pl.scan_parquet(tmp_path / "products.parquet")
    log = coded(events, catalog, DEFAULT_EVENT_WEIGHTS | {"view": 0.5})
    assert log.users.to_list() == ["u1", "u2"]
    # By user, each user's events in log order.
    assert log.events.get_column("user_id").to_list() == [0, 1, 1]
    assert log.events.get_column("product_id").to_list() == [0, 2, 0]
    assert log.table().collect().rows() == [
        ("p1", "Phone", "Phones", 99.0, 2),
        ("p2", "Lamp", "Home", 9.5, 0),
        ("p3", None, None, None, 1),
    ]
    assert "view" in log.events.get_column("event_type").dtype.categories  # type: ignore[attr-defined]


def test_a_catalog_in_id_order_is_read_as_it_is(tmp_path: Path) -> None:
    """As ingest writes it (every product listed, in id order): nothing gathered."""
    at = datetime(2022, 10, 1, tzinfo=UTC)
    events = pl.DataFrame([("u1", "p2", "cart", at)], schema=EVENT_SCHEMA, orient="row")
    catalog = pl.DataFrame(
        [("p1", "Phone", "Phones", 99.0), ("p2", "Lamp", None, None)],
        schema=CATALOG_SCHEMA,
        orient="row",
    )
    catalog.write_parquet(tmp_path / "products.parquet")
    log = coded(events, pl.scan_parquet(tmp_path / "products.parquet"), DEFAULT_EVENT_WEIGHTS)
    assert log.table().collect().rows() == [
        ("p1", "Phone", "Phones", 99.0, 0),
        ("p2", "Lamp", None, None, 1),
    ]
