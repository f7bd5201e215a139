"""The stored lists of a model with a collaborative term: each product ranked over every
user, as a segment ranks it.

With the term every user has product-level evidence for every product, so no category
pool can stand in for a list's tail (`topn`): each product's top n is taken from every
user's total (`scores.scored`, the segments' own pass), ~0.55 ms a product on the loyal
sample (50,000 users), two products at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from audience.model.kernels.csr import Csr, in_threads
from audience.model.kernels.scores import scored, top
from audience.model.kernels.topn import CHOSEN, TERMS, Evidence

#: Products per unit of work.
UNIT = 256
#: The terms of each stored row: `topn.TERMS` and the collaborative one.
TERMS_CF = TERMS | pl.Schema({"t_cf": pl.Float64})


def top_n(
    evidence: Evidence,
    turned: Csr,
    products: npt.NDArray[np.int64],
    of: npt.NDArray[np.int64],
    n: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each of `products`' (codes) top n, in their order: the rows (`topn.CHOSEN`, all
    with evidence) and their terms (`TERMS_CF`, in their order). `of`: category code by
    product code (< 0: none); `turned` is `scores.by_category(evidence.category)`."""

    def unit(at: int, _: None) -> list[dict[str, npt.NDArray[Any]]]:
        return [
            _rows(evidence, turned, int(p), int(of[p]), n) for p in products[at * UNIT :][:UNIT]
        ]

    parts = [
        part for done in in_threads(-(-products.size // UNIT), lambda: None, unit) for part in done
    ]
    if not parts:
        return pl.DataFrame(schema=CHOSEN), pl.DataFrame(schema=TERMS_CF)
    rows = pl.DataFrame({key: np.concatenate([part[key] for part in parts]) for key in parts[0]})
    chosen = rows.with_columns(slot=pl.lit(None, pl.UInt32))
    return (
        chosen.select(pl.col(key).cast(t) for key, t in CHOSEN.items()),
        rows.select(pl.col(key).cast(t) for key, t in TERMS_CF.items()),
    )


def _rows(evidence: Evidence, turned: Csr, p: int, c: int, n: int) -> dict[str, npt.NDArray[Any]]:
    """Product p's top n rows and their terms (`top_n`'s columns)."""
    found = scored(evidence, turned, p, c)
    users = top(found.totals, n)
    at = found.slot[users]
    has = at >= 0
    at = np.where(has, at, 0)

    def by_slot(values: npt.NDArray[Any]) -> npt.NDArray[Any]:
        return np.where(has, values[at], 0) if values.size else np.zeros(users.size, values.dtype)

    r, k = by_slot(found.co), by_slot(found.related)
    cf = evidence.cf
    assert cf is not None and found.s.size  # the pass had the term
    return {
        "p": np.full(users.size, p, np.uint32),
        "c": np.full(users.size, max(c, 0), np.uint32),
        "u": users.astype(np.uint32),
        "total": found.totals[users],
        "explicit": np.ones(users.size, np.bool_),
        "rank": np.arange(1, users.size + 1, dtype=np.uint32),
        "t_direct": by_slot(found.direct),
        "t_co": np.where(k > 0, evidence.co * (r / (r + evidence.half)), 0.0),
        "r_k": k.astype(np.uint32),
        "t_category": found.category[users],
        "t_cf": cf.term(found.s[users]),
    }
