"""The collaborative-filtering baseline: implicit-feedback ALS (benfred/implicit).

ALS is fitted on the product x user matrix (products play implicit's "users"),
so `recommend` ranks users for a product and filters those who already
interacted with it, in implicit's own batched top-k. Confidence is the summed
event weight of a (product, user) pair, scaled by `alpha` (Hu, Koren & Volinsky
2008). Hyper-parameters are tuned on a validation slice cut from the training
period only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray
from scipy import sparse
from threadpoolctl import threadpool_limits

from audience.data.schema import EVENT, PRODUCT, USER
from audience.data.stats import distinct

IntArray = NDArray[np.int64]


@dataclass(frozen=True)
class AlsParams:
    factors: int = 32
    regularization: float = 0.1
    alpha: float = 5.0
    iterations: int = 8

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


#: The search on the validation slice, in two stages since a fit costs ~0.5 s per
#: iteration on the sample log (cost grows with users + products, not events):
#: first factors x alpha at the first regularization, then the other
#: regularizations on the winner.
FACTORS = (16, 32)
ALPHAS = (5.0, 20.0)
REGULARIZATIONS = (0.1, 0.01)
FIRST_STAGE: tuple[AlsParams, ...] = tuple(
    AlsParams(factors=f, regularization=REGULARIZATIONS[0], alpha=a)
    for f in FACTORS
    for a in ALPHAS
)


def second_stage(best: AlsParams) -> tuple[AlsParams, ...]:
    return tuple(replace(best, regularization=r) for r in REGULARIZATIONS[1:])


@dataclass(frozen=True)
class Index:
    """Integer ids for the users and products known in a training period (sorted by id)."""

    users: pl.Series
    products: pl.Series

    @classmethod
    def of(cls, events: pl.DataFrame) -> Index:
        return cls(
            users=distinct(events.get_column(USER)),
            products=distinct(events.get_column(PRODUCT)),
        )

    def codes(self, events: pl.DataFrame) -> pl.DataFrame:
        """`events` with integer `u` and `p` columns; unknown users or products dropped."""
        users = pl.DataFrame({USER: self.users, "u": np.arange(self.users.len(), dtype=np.int64)})
        products = pl.DataFrame(
            {PRODUCT: self.products, "p": np.arange(self.products.len(), dtype=np.int64)}
        )
        return events.join(users, on=USER, how="inner").join(products, on=PRODUCT, how="inner")


def matrix(coded: pl.DataFrame, index: Index, weights: dict[str, float]) -> sparse.csr_matrix:
    """Product x user confidence matrix: summed event weights per pair."""
    weighted = coded.with_columns(
        w=pl.col(EVENT).replace_strict(weights, default=1.0, return_dtype=pl.Float32)
    )
    pairs = weighted.group_by("p", "u").agg(pl.col("w").sum())
    return sparse.csr_matrix(
        (pairs["w"].to_numpy(), (pairs["p"].to_numpy(), pairs["u"].to_numpy())),
        shape=(index.products.len(), index.users.len()),
    )


def fit(items: sparse.csr_matrix, params: AlsParams, seed: int = 0, num_threads: int = 1) -> Any:
    """An implicit ALS model fitted on rows = products.

    One BLAS thread is implicit's advice; one OpenMP thread by default too, since on a
    2-core machine implicit's parallel solver measured 1.2-1.6x slower than the
    serial one on the sample log (`python benchmarks/als_threads.py`).
    """
    from implicit.cpu.als import AlternatingLeastSquares

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=params.factors,
            regularization=params.regularization,
            alpha=params.alpha,
            iterations=params.iterations,
            random_state=seed,
            num_threads=num_threads,
        )
        model.fit(items, show_progress=False)
    return model


def rank(
    model: Any, items: sparse.csr_matrix, rows: IntArray, k: int, repeat: bool = False
) -> IntArray:
    """Top-k users for each product row, excluding users already in that row (kept, as
    candidates for a repeat, with `repeat`)."""
    out = np.full((rows.size, k), -1, dtype=np.int64)
    if rows.size == 0:
        return out
    with threadpool_limits(1, "blas"):
        ids, _ = model.recommend(rows, items[rows], N=k, filter_already_liked_items=not repeat)
    ids = np.asarray(ids, dtype=np.int64).reshape(rows.size, -1)
    out[:, : ids.shape[1]] = ids
    return out
