"""Two artifacts of the same log compared table by table: what the Spark engine must
match of the Polars engine's (issue #25's parity), reported rather than asserted, so
that a test and a benchmark read the same verdict.

- Every table: the same columns and types, the same number of rows.
- audiences and category_audiences: the same user at every (product or category,
  rank) except where the list's totals tie (equal once rounded to `DIGITS`, as both
  engines round them), the same totals to 1e-9, the same reasons where the user is
  the same.
- user_scores: scores, components and features to 1e-9; the same rank except among
  users whose scores are within 1e-12 of each other (summed in another order).
- products and the segment tables: equal (floats to 1e-12 of the column's scale).

With the collaborative term the engines fit ALS with other solvers, so their lists
differ; what each must hold then is `as_segments`: its stored lists are what a segment
of its own artifact ranks.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from audience.artifact import TABLES, Artifact
from audience.data.schema import CATEGORY, PRODUCT, USER
from audience.model import segments
from audience.model.kernels import scores

SCORES = 1e-9
TIES = 1e-12


def compared(expected: Artifact, found: Artifact) -> dict[str, Any]:
    """The differences of `found` from `expected`, and whether they are allowed (`same`)."""
    tables: dict[str, Any] = {}
    for name in TABLES:
        a, b = expected.tables[name], found.tables[name]
        entry: dict[str, Any] = {"rows": a.height, "schema": a.schema == b.schema}
        entry["same"] = entry["schema"] and a.height == b.height
        if entry["same"]:
            if name in ("audiences", "category_audiences"):
                key = PRODUCT if name == "audiences" else CATEGORY
                entry |= _lists(a, b, key)
            elif name == "user_scores":
                entry |= _scores(a, b)
            else:
                entry["max_gap"] = _gap(a, b, a.columns)
                entry["same"] = entry["max_gap"] <= TIES and _equal(a, b)
        tables[name] = entry
    return {"same": all(t["same"] for t in tables.values()), "tables": tables}


def _lists(a: pl.DataFrame, b: pl.DataFrame, key: str) -> dict[str, Any]:
    """Users moved between ranks, and whether each move is at a tie of the totals."""
    both = a.join(b, on=[key, "rank"], how="left", suffix="_b")
    moved = both.filter(pl.col(USER).ne_missing(pl.col(f"{USER}_b")))
    # A moved row is at a tie when the expected list holds its total at another rank too.
    tied = a.group_by(key, "score").len().filter(pl.col("len") > 1)
    untied = moved.join(tied, on=[key, "score"], how="anti").height
    kept = both.filter(pl.col(USER) == pl.col(f"{USER}_b"))
    reasons = kept.filter(pl.col("reasons") != pl.col("reasons_b")).height
    gap = _gap(both.select(score="score"), both.select(score="score_b"), ["score"])
    return {
        "moved": moved.height,
        "moved_not_at_a_tie": untied,
        "reasons_differ": reasons,
        "max_gap": gap,
        "same": untied == 0 and reasons == 0 and gap <= SCORES,
    }


def _scores(a: pl.DataFrame, b: pl.DataFrame) -> dict[str, Any]:
    """Score gaps, and ranks that differ where no other user's score is that close."""
    floats = [c for c, kind in a.schema.items() if kind.is_float()]
    counts = [c for c, kind in a.schema.items() if kind.is_integer() and c != "rank"]
    by_rank = a.select(USER, "rank", "score").sort("rank")
    near = by_rank.with_columns(
        gap=pl.min_horizontal(
            pl.col("score").diff().abs().fill_null(float("inf")),
            pl.col("score").diff(-1).abs().fill_null(float("inf")),
        )
    )
    moved = near.join(b.select(USER, rank_b="rank"), on=USER, how="left").filter(
        pl.col("rank").ne_missing(pl.col("rank_b"))
    )
    untied = moved.filter(pl.col("gap") > TIES).height
    gap = _gap(a, b, floats)
    same_ids = a.get_column(USER).equals(b.get_column(USER)) and _equal(a, b, counts)
    return {
        "moved": moved.height,
        "moved_not_at_a_tie": untied,
        "max_gap": gap,
        "same": same_ids and untied == 0 and gap <= SCORES,
    }


def _gap(a: pl.DataFrame, b: pl.DataFrame, columns: list[str]) -> float:
    """The largest gap of the float columns, relative to the column's scale (>= 1)."""
    worst = 0.0
    for name in columns:
        left, right = a.get_column(name), b.get_column(name)
        if not left.dtype.is_float() or left.is_empty():
            continue
        gap = (left - right).abs().max()
        scale = max(1.0, float(left.abs().max() or 0.0))  # type: ignore[arg-type]
        worst = max(worst, float(gap or 0.0) / scale)  # type: ignore[arg-type]
    return worst


def _equal(a: pl.DataFrame, b: pl.DataFrame, columns: list[str] | None = None) -> bool:
    """Whether the columns that are not floats are equal (nulls equal nulls)."""
    names = [c for c in (columns or a.columns) if not a.schema[c].is_float()]
    return a.select(names).equals(b.select(names))


def as_segments(found: Artifact) -> dict[str, Any]:
    """Whether every stored list of `found` is its segments' pass at the list's depth
    (`segments.Ranking`, what `audience segment` and `/recommend` rank with): the same
    users in the same order with the same totals, to the bit."""
    ranking = segments.Ranking.of_tables(found.tables, found.model)
    differing = []
    lists = found.tables["audiences"]
    for (product,), stored in lists.group_by(PRODUCT):
        totals = ranking.product(str(product))
        best = scores.top(totals, stored.height)
        same_users = ranking.users.gather(best).to_list() == stored.get_column(USER).to_list()
        if not same_users or totals[best].tolist() != stored.get_column("score").to_list():
            differing.append(str(product))
    return {
        "products": lists.get_column(PRODUCT).n_unique(),
        "differing": len(differing),
        "first_differing": sorted(differing)[:5],
        "same": not differing,
    }
