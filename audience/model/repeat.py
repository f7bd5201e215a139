"""Repeat mode: how likely each past user of a product is to come back to it now.

For consumables (coffee, pet food, printer ink) a product's best audience is often its
own past buyers, due for a refill. In repeat mode (`audience train --repeat`) nothing
excludes a user from a product, and a user's own events on it are evidence (the direct
term), scaled by

    refill(p, u) = returning(p) x due(p, u)

- returning(p): the share of p's users who came back to it on a later day, shrunk
  towards its category's share (and that towards the log's) by PRIOR_USERS pseudo-users,
  so a product with few users borrows its neighbours' habit. Near 1 for coffee, near 0
  for a television: past buyers of a product nobody buys twice do not crowd out new
  candidates.
- due(p, u) = min(1, days since u's last event on p / cycle(p)), cycle(p) the product's
  refill interval: the median gap between consecutive active days of the users who came
  back to it; a product with fewer than PRIOR_USERS gaps takes its category's median,
  else the log's. A user who has just bought is barely due (near 0), one whose interval
  has passed is fully due (1). With no gap anywhere in the log, returning is 0 anyway.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import polars as pl

from audience.data.schema import PRODUCT, TIME, USER

#: Users (or gaps) a product needs before its own habit outweighs its category's.
PRIOR_USERS: Final = 5
DAY_SECONDS: Final = 86_400.0


def _habits(pairs: pl.LazyFrame, by: str) -> pl.LazyFrame:
    """Per `by`: its users, those who came back, and the median gap of those."""
    return pairs.group_by(by).agg(
        pl.len().alias(f"users_{by}"),
        (pl.col("gaps") > 0).sum().alias(f"returners_{by}"),
        pl.col("gap").explode().median().alias(f"cycle_{by}"),
        pl.col("gaps").sum().alias(f"gaps_{by}"),
    )


def _shrunk(returners: pl.Expr, users: pl.Expr, prior: pl.Expr) -> pl.Expr:
    return (returners + PRIOR_USERS * prior) / (users + PRIOR_USERS)


def refill(events: pl.DataFrame, of: pl.Series, as_of: datetime) -> pl.DataFrame:
    """Per (p, u) pair of the coded `events`, sorted by p then u: `refill` in [0, 1] and
    what it is made of: `returning`, `due`, the `days` since u's last event on p and the
    `cycle` (days) it was judged by. `of` is each product code's category code."""
    categories = pl.LazyFrame({"p": pl.int_range(of.len(), dtype=pl.UInt32, eager=True), "c": of})
    pairs = (
        events.lazy()
        .select(p=PRODUCT, u=USER, t=TIME)
        .group_by("p", "u")
        .agg(
            last=pl.col("t").max(),
            gap=pl.col("t").dt.truncate("1d").unique().sort().diff().drop_nulls().dt.total_seconds()
            / DAY_SECONDS,
        )
        .with_columns(gaps=pl.col("gap").list.len())
        .join(categories, on="p", how="left")
    )
    overall = (
        pairs.select(rate=(pl.col("gaps") > 0).mean(), cycle=pl.col("gap").explode().median())
        .collect()
        .row(0, named=True)
    )
    own_cycle = pl.when(pl.col("gaps_p") >= PRIOR_USERS).then("cycle_p")
    category_cycle = pl.when(pl.col("gaps_c") >= PRIOR_USERS).then("cycle_c")
    category_rate = _shrunk(pl.col("returners_c"), pl.col("users_c"), pl.lit(overall["rate"]))
    elapsed = (pl.lit(as_of) - pl.col("last")).dt.total_seconds() / DAY_SECONDS
    return (
        pairs.join(_habits(pairs, "p"), on="p", how="left")
        .join(_habits(pairs, "c"), on="c", how="left")
        .select(
            "p",
            "u",
            returning=_shrunk(pl.col("returners_p"), pl.col("users_p"), category_rate),
            days=elapsed,
            cycle=pl.coalesce(own_cycle, category_cycle, pl.lit(overall["cycle"], pl.Float64)),
        )
        .with_columns(due=(pl.col("days") / pl.col("cycle")).clip(0.0, 1.0).fill_null(1.0))
        .with_columns(refill=pl.col("returning") * pl.col("due"))
        .sort("p", "u")
        .collect()
    )
