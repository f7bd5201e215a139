"""Repeat mode: past buyers stay candidates, ranked by how due they are for a refill."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl
import pytest

from audience.data.schema import CATALOG_SCHEMA, DEFAULT_EVENT_WEIGHTS, EVENT_SCHEMA
from audience.errors import ConfigError
from audience.model.audiences import AudienceConfig, affinity, build
from audience.model.codes import coded
from audience.model.repeat import PRIOR_USERS, refill
from audience.model.train import engagement

START = datetime(2023, 1, 1, tzinfo=UTC)
#: The refill interval of each category of the refill-shaped log, in days.
CYCLES = {"Coffee": 14, "Pet food": 30, "Ink": 60}


def refill_log(users: int = 1200, days: int = 180, seed: int = 0) -> tuple[pl.DataFrame, ...]:
    """(events, catalog) of a shop of consumables: each user buys one or two products again
    and again, every category's interval apart (+-15%), from a random first day."""
    rng = np.random.default_rng(seed)
    products = [(f"{c[:3].upper()}{i}", c) for c in CYCLES for i in range(4)]
    rows = []
    for u in range(users):
        for k in rng.choice(len(products), rng.integers(1, 3), replace=False):
            product, category = products[k]
            cycle = CYCLES[category]
            t = rng.uniform(0, cycle)
            while t < days:
                rows.append((f"U{u:05d}", product, "purchased", START + timedelta(days=t)))
                t += cycle * rng.uniform(0.85, 1.15)
    events = pl.DataFrame(rows, schema=EVENT_SCHEMA, orient="row").sort("event_time")
    catalog = pl.DataFrame(
        [(p, f"{c} {p}", c, 10.0) for p, c in products], schema=CATALOG_SCHEMA, orient="row"
    )
    return events, catalog


def _day(d: float) -> datetime:
    return START + timedelta(days=d)


def test_refill_is_the_products_return_share_times_how_due_the_user_is() -> None:
    # Product 0: five users back every 10 days (its own interval, 10). Product 1, same
    # category: one user back after 4 days, too few gaps of its own, so it takes the
    # category's median gap (10). Product 2, another category: one user, never back.
    rows = [(u, 0, _day(d)) for u in range(PRIOR_USERS) for d in (0, 10)]
    rows += [(9, 1, _day(20)), (9, 1, _day(24)), (8, 2, _day(27))]
    events = pl.DataFrame(rows, schema=["user_id", "product_id", "event_time"], orient="row")
    events = events.cast({"user_id": pl.UInt32, "product_id": pl.UInt32})
    got = refill(events, pl.Series([0, 0, 1], dtype=pl.UInt32), _day(30))
    # Returning shares, each shrunk by 5 pseudo-users towards the next level's:
    log_rate = 6 / 7  # 6 of the 7 (product, user) pairs came back
    category = [(6 + 5 * log_rate) / (6 + 5), (0 + 5 * log_rate) / (1 + 5)]
    returning = [(5 + 5 * category[0]) / 10, (1 + 5 * category[0]) / 6, 5 * category[1] / 6]
    expected = [(0, u, returning[0], 20.0, 10.0, 1.0) for u in range(PRIOR_USERS)]
    expected += [(1, 9, returning[1], 6.0, 10.0, 0.6), (2, 8, returning[2], 3.0, 10.0, 0.3)]
    assert got.select("p", "u", "returning", "days", "cycle", "due").rows() == [
        tuple(pytest.approx(v) for v in row) for row in expected
    ]
    assert got.get_column("refill").to_list() == pytest.approx([r[2] * r[5] for r in expected])


def test_a_log_where_nobody_returns_gives_past_users_no_refill_evidence() -> None:
    events = pl.DataFrame(
        [(0, 0, _day(0)), (1, 0, _day(5))],
        schema=["user_id", "product_id", "event_time"],
        orient="row",
    ).cast({"user_id": pl.UInt32, "product_id": pl.UInt32})
    got = refill(events, pl.Series([0], dtype=pl.UInt32), _day(6))
    assert got.get_column("refill").to_list() == [0.0, 0.0]
    assert got.get_column("cycle").null_count() == 2


def test_repeat_cannot_be_combined_with_exclude() -> None:
    with pytest.raises(ConfigError, match="repeat"):
        AudienceConfig(repeat=True, exclude=("purchased",)).check(frozenset(DEFAULT_EVENT_WEIGHTS))


def _audiences(
    events: pl.DataFrame, catalog: pl.DataFrame, repeat: bool, model: str = "fitted"
) -> pl.DataFrame:
    log = coded(events, catalog, DEFAULT_EVENT_WEIGHTS)
    linked = affinity(log, DEFAULT_EVENT_WEIGHTS, AudienceConfig(repeat=repeat))
    last = events.get_column("event_time").max()
    assert isinstance(last, datetime)
    as_of = last + timedelta(microseconds=1)  # as `audience train` scores: at the log's end
    return build(linked, engagement(log.events, DEFAULT_EVENT_WEIGHTS, model, as_of)).rows()


def test_repeat_mode_finds_the_buyers_due_for_a_refill_and_the_default_does_not() -> None:
    events, catalog = refill_log()
    now = events.get_column("event_time").max()
    assert isinstance(now, datetime)
    last = events.group_by("product_id", "user_id").agg(pl.col("event_time").max())
    for repeat in (False, True):
        audience = _audiences(events, catalog, repeat).join(
            last, on=["product_id", "user_id"], how="left"
        )
        past = audience.filter(pl.col("event_time").is_not_null())
        if not repeat:
            assert past.is_empty()  # a product's past buyers are never named
            continue
        assert past.height == audience.height  # every name is a past buyer
        ink = past.filter(pl.col("product_id").str.starts_with("INK"))
        elapsed = (pl.lit(now) - pl.col("event_time")).dt.total_days()
        # Ink is bought every ~60 days: those named last bought it close to that long ago.
        assert ink.select(elapsed.min()).item() >= 0.8 * CYCLES["Ink"]


def test_a_past_buyers_reason_says_when_they_last_bought() -> None:
    events, catalog = refill_log()
    # The seed scorer's components are at most 1, so the product's own history (up to 2)
    # is among the two largest contributions of every due buyer named.
    reasons = _audiences(events, catalog, True, "seed").get_column("reasons")
    said = r"^\d+ purchases? on this product, the last \d+ days ago$"
    assert reasons.list.eval(pl.element().str.contains(said).any()).list.first().all()
