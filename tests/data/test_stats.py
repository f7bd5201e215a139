"""Log statistics on a tiny log whose answers are worked out by hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from audience.data.schema import EVENT_SCHEMA
from audience.data.stats import distinct, log_stats, retention, split_stats

DAY0 = datetime(2022, 10, 1, 12, tzinfo=UTC)


def log(rows: list[tuple[str, str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(
        [(u, p, e, DAY0 + timedelta(days=d)) for u, p, e, d in rows],
        schema=EVENT_SCHEMA,
        orient="row",
    )


# a: days 0, 0, 10 -> retained at 30 days; b: day 0 only; c: days 5 and 50 -> not within 30;
# d: first day 170 -> not eligible (170 + 30 > 180); e: day 180 sets the log's last day.
EVENTS = log(
    [
        ("a", "p1", "cart", 0),
        ("a", "p1", "purchased", 0),
        ("b", "p2", "cart", 0),
        ("c", "p2", "cart", 5),
        ("a", "p3", "rating", 10),
        ("c", "p3", "wishlist", 50),
        ("d", "p4", "cart", 170),
        ("d", "p1", "cart", 171),
        ("d", "p5", "cart", 172),
        ("d", "p5", "purchased", 173),
        ("d", "p5", "rating", 174),
        ("d", "p6", "rating", 175),
        ("e", "p6", "search_keyword", 180),
    ]
)


def test_retention_counts_only_eligible_users_and_later_days() -> None:
    assert retention(EVENTS, 30) == pytest.approx(1 / 3)  # a of {a, b, c}
    assert retention(EVENTS, 60) == pytest.approx(2 / 3)  # a and c of {a, b, c}
    # For 5 days d is eligible too (170 + 5 <= 180) and the only one back (day 171).
    assert retention(EVENTS, 5) == pytest.approx(1 / 4)


def test_split_overlap_and_new_products() -> None:
    split = split_stats(EVENTS)
    # 13 events: the cut is the 11th event by time (index int(0.8 * 13) = 10) at day 174.
    assert (split["early_events"], split["late_events"]) == (10, 3)
    assert (split["early_users"], split["late_users"], split["returning_users"]) == (4, 2, 1)
    assert split["returning_share_of_early"] == pytest.approx(1 / 4)
    assert split["returning_share_of_late"] == pytest.approx(1 / 2)
    # late products: p5 (seen early) and p6 (new) -> half are new.
    assert split["new_product_share_late"] == pytest.approx(1 / 2)


def test_log_stats_sizes_mix_and_activity() -> None:
    stats = log_stats(EVENTS)
    assert (stats["events"], stats["users"], stats["products"]) == (13, 5, 6)
    assert stats["event_mix"]["cart"] == 6
    # events per user: a 3, b 1, c 2, d 6, e 1
    assert stats["activity"] == {"1": 2 / 5, "2-5": 2 / 5, ">5": 1 / 5}
    assert stats["first_event"] == DAY0.isoformat()
    assert set(stats["definitions"]) >= {"retention_30d", "split", "activity"}


def test_distinct_sorts_and_drops_repeats_and_nulls() -> None:
    ids = pl.Series(["u2", None, "u10", "u2", "u1", None, "u10"])
    assert distinct(ids).to_list() == ["u1", "u10", "u2"]
    assert distinct(ids.clear()).to_list() == []
