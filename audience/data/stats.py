"""Summary statistics of a canonical event log: size, mix, activity, retention, split.

These are the figures the reference marketplace log is described by (DESIGN.md),
so the same function summarises an ingested log, checks the generator against
the reference, and feeds the analysis. Definitions are part of the output.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any, Final

import polars as pl

from audience.data.schema import EVENT, PRODUCT, TIME, USER

DEFINITIONS: dict[str, str] = {
    "events": "rows of the canonical event table (after ingest's dedup)",
    "users": "distinct user_id",
    "products": "distinct product_id with at least one event",
    "event_mix": "events per event_type",
    "activity": "share of users with exactly 1, 2 to 5, and more than 5 events",
    "retention_30d": (
        "among users whose first event day is at least 30 days before the log's last "
        "event day, the share with an event on a later day within 30 days of it"
    ),
    "split": (
        "80/20 time split: the cut is the time of the event at the 80th percentile of "
        "event times; early = events before the cut, late = the rest. returning = users "
        "with events in both parts; new_product_share_late = share of late-part products "
        "with no early event"
    ),
}


def _iso(value: object) -> str | None:
    return value.isoformat() if isinstance(value, datetime | date) else None


#: Day 0 of `return_gaps`' day numbers.
EPOCH: Final = date(1970, 1, 1)


def return_gaps(events: pl.DataFrame) -> tuple[pl.DataFrame, date]:
    """Per user: first active day and days until the next active day (null if none).

    With the log's last day, this answers retention for every window at once: a
    user counts for a D-day window if first_day + D <= last day (the window fits
    in the log), and is retained if the gap is at most D. Days are UTC days counted
    from the epoch; the next active day is found by a join and a second group-by,
    which took a seventh of the time of a filter inside one group-by (0.07 s against
    0.44 s on the sample: `audience train --cf auto` asks it of every log).
    """
    active = (
        events.lazy().select(pl.col(USER), day=pl.col(TIME).dt.epoch("d").cast(pl.Int32)).unique()
    )
    first = active.group_by(USER).agg(first_day=pl.col("day").min())
    later = (
        active.join(first, on=USER)
        .filter(pl.col("day") > pl.col("first_day"))
        .group_by(USER)
        .agg(next_day=pl.col("day").min())
    )
    per_user = first.join(later, on=USER, how="left").select(
        USER,
        first_day=pl.col("first_day").cast(pl.Date),
        gap=(pl.col("next_day") - pl.col("first_day")).cast(pl.Int64),
    )
    found, last = pl.collect_all([per_user, active.select(pl.col("day").max())])
    return found, EPOCH + timedelta(days=int(last.item()))


def retention_curve(events: pl.DataFrame, windows: list[int]) -> list[dict[str, Any]]:
    """For each window D: eligible users, retained users and their share."""
    per_user, last_day = return_gaps(events)
    first = per_user.get_column("first_day")
    gap = per_user.get_column("gap")
    curve = []
    for days in windows:
        eligible = first <= last_day - timedelta(days=days)
        retained = eligible & (gap <= days).fill_null(False)
        n_eligible = int(eligible.sum())
        curve.append(
            {
                "days": days,
                "eligible_users": n_eligible,
                "retained_users": int(retained.sum()),
                "share": int(retained.sum()) / n_eligible if n_eligible else None,
            }
        )
    return curve


def retention(events: pl.DataFrame, days: int) -> float:
    """Share of eligible users active again on a later day within `days` of their first day."""
    return float(retention_curve(events, [days])[0]["share"] or 0.0)


def time_split(events: pl.DataFrame, share: float = 0.8) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split at the time of the event at the `share` quantile of event times."""
    times = events.get_column(TIME).sort()
    cut = times[min(int(share * len(times)), len(times) - 1)]
    return events.filter(pl.col(TIME) < cut), events.filter(pl.col(TIME) >= cut)


def split_stats(events: pl.DataFrame, share: float = 0.8) -> dict[str, Any]:
    early, late = time_split(events, share)
    early_users = early.select(USER).unique()
    late_users = late.select(USER).unique()
    returning = early_users.join(late_users, on=USER, how="semi").height
    early_products = early.select(PRODUCT).unique()
    late_products = late.select(PRODUCT).unique()
    new_late = late_products.join(early_products, on=PRODUCT, how="anti").height
    return {
        "cut": _iso(late.get_column(TIME).min()),
        "early_events": early.height,
        "early_users": early_users.height,
        "early_products": early_products.height,
        "late_events": late.height,
        "late_users": late_users.height,
        "late_products": late_products.height,
        "returning_users": returning,
        "returning_share_of_early": returning / max(early_users.height, 1),
        "returning_share_of_late": returning / max(late_users.height, 1),
        "new_product_share_late": new_late / max(late_products.height, 1),
    }


def distinct(ids: pl.Series) -> pl.Series:
    """The distinct non-null values of `ids`, sorted. By sorting, not hashing: for the
    42M user ids of a 100x log a hash table took 26 s, a sort 4.5 s (2x faster at 1x)."""
    ordered = ids.drop_nulls().sort()
    return ordered.filter(ordered.ne_missing(ordered.shift()))


def fingerprint(events: pl.DataFrame) -> str:
    """A content hash of a canonical table (row order matters; stable for a Polars version)."""
    import hashlib

    return hashlib.sha256(events.hash_rows(seed=0).to_numpy().tobytes()).hexdigest()[:16]


def log_stats(events: pl.DataFrame) -> dict[str, Any]:
    """The reference statistics of `events` (a canonical table), with their definitions."""
    if events.height == 0:
        return {"events": 0, "users": 0, "products": 0, "definitions": DEFINITIONS}
    per_user = events.group_by(USER).len()
    n_users = per_user.height
    counts = per_user.get_column("len")
    mix = events.group_by(EVENT).len().sort("len", descending=True)
    return {
        "events": events.height,
        "users": n_users,
        "products": events.get_column(PRODUCT).n_unique(),
        "first_event": _iso(events.get_column(TIME).min()),
        "last_event": _iso(events.get_column(TIME).max()),
        "event_mix": dict(zip(mix.get_column(EVENT), mix.get_column("len"), strict=True)),
        "activity": {
            "1": int((counts == 1).sum()) / n_users,
            "2-5": int(((counts >= 2) & (counts <= 5)).sum()) / n_users,
            ">5": int((counts > 5).sum()) / n_users,
        },
        "retention_30d": retention(events, 30),
        "split": split_stats(events),
        "definitions": DEFINITIONS,
    }


def ceiling(early: pl.DataFrame, late: pl.DataFrame) -> float:
    """The share of `late` interactions whose user and product both appear in `early`:
    the most any method ranking known users for known products could address."""
    known = late.join(early.select(USER).unique(), on=USER, how="semi").join(
        early.select(PRODUCT).unique(), on=PRODUCT, how="semi"
    )
    return known.height / late.height if late.height else 0.0
