"""The collaborative-filtering baseline: implicit-feedback ALS (benfred/implicit).

ALS is fitted on the product x user matrix (products play implicit's "users"),
so `recommend` ranks users for a product and filters those who already
interacted with it, in implicit's own batched top-k. Confidence is the summed
event weight of a (product, user) pair, scaled by `alpha` (Hu, Koren & Volinsky
2008). Hyper-parameters are tuned on a validation slice cut from the training
period only.
"""

from __future__ import annotations

import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from multiprocessing import forkserver
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray
from scipy import sparse
from threadpoolctl import threadpool_limits

from audience.data.schema import EVENT, PRODUCT, USER
from audience.data.stats import distinct, time_split
from audience.model import quality

IntArray = NDArray[np.int64]
Progress = Callable[[str], None]
#: The cut-off of the validation metric (NDCG@K).
K = 10
#: Products ranked per tuning trial (a seeded sample when there are more).
VALIDATION_PRODUCTS = 2000


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


#: The quick search (`tune(quick=True)`, what `audience train --cf` runs without an
#: analysis): the first stage's trials at the larger factors, one step of two fits in
#: parallel, a third of the full search's time on two cores.
QUICK: tuple[AlsParams, ...] = tuple(p for p in FIRST_STAGE if p.factors == FACTORS[-1])


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

    @property
    def shape(self) -> tuple[int, int]:
        """(products, users): the shape of `matrix` in these codes."""
        return self.products.len(), self.users.len()

    def codes(self, events: pl.DataFrame) -> pl.DataFrame:
        """`events` with integer `u` and `p` columns; unknown users or products dropped."""
        users = pl.DataFrame({USER: self.users, "u": np.arange(self.users.len(), dtype=np.int64)})
        products = pl.DataFrame(
            {PRODUCT: self.products, "p": np.arange(self.products.len(), dtype=np.int64)}
        )
        return events.join(users, on=USER, how="inner").join(products, on=PRODUCT, how="inner")


def matrix(
    coded: pl.DataFrame, shape: tuple[int, int], weights: dict[str, float]
) -> sparse.csr_matrix:
    """Product x user confidence matrix of `shape` (products, users): summed event
    weights per (p, u) pair of `coded`."""
    weighted = coded.with_columns(
        w=pl.col(EVENT).replace_strict(weights, default=1.0, return_dtype=pl.Float32)
    )
    pairs = weighted.group_by("p", "u").agg(pl.col("w").sum())
    return sparse.csr_matrix(
        (pairs["w"].to_numpy(), (pairs["p"].to_numpy(), pairs["u"].to_numpy())),
        shape=shape,
    )


def fit(
    items: sparse.csr_matrix,
    params: AlsParams,
    seed: int = 0,
    num_threads: int = 1,
    start: tuple[NDArray[np.float32], NDArray[np.float32]] | None = None,
) -> Any:
    """An implicit ALS model fitted on rows = products; from `start` (the rows' and the
    columns' factors) when given, else from implicit's random start.

    One BLAS thread is implicit's advice; one OpenMP thread by default too, since on a
    2-core machine implicit's parallel solver measured 1.2-1.6x slower than the
    serial one (`python benchmarks/als_threads.py`): both cores serve `fits`.
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
        if start is not None:
            model.user_factors, model.item_factors = start
        model.fit(items, show_progress=False)
    return model


def fits(
    items: sparse.csr_matrix,
    trials: Sequence[AlsParams],
    seed: int = 0,
    rows: IntArray | None = None,
    repeat: bool = False,
) -> list[tuple[Any, IntArray]]:
    """(model, `rank` of `rows` at K) for each of `trials`: `fit` of `items`, then the
    model's top K users of each product row of `rows` (none when not given), in one
    process per core when there are several trials.

    implicit's solver does not scale within a process here: its parallel solver, or
    two fits in two threads, ran slower than one serial fit, while two processes
    fitted four models in 0.55x the time of one after the other
    (`python benchmarks/als_threads.py`). The workers are forked from a fresh server
    process (`forkserver`) that has imported this module, not from this process, whose
    Polars threads may hold locks. Like any multiprocessing, a script that calls this
    needs the `if __name__ == "__main__":` guard.
    """
    rows = np.zeros(0, np.int64) if rows is None else rows
    if len(trials) == 1:
        return [_trial(items, trials[0], seed, rows, repeat)]
    cores = len(os.sched_getaffinity(0))
    with ProcessPoolExecutor(min(len(trials), cores), mp_context=_forkserver()) as pool:
        done = [pool.submit(_trial, items, params, seed, rows, repeat) for params in trials]
        return [future.result() for future in done]


def _trial(
    items: sparse.csr_matrix, params: AlsParams, seed: int, rows: IntArray, repeat: bool
) -> tuple[Any, IntArray]:
    model = fit(items, params, seed)
    return model, rank(model, items, rows, K, repeat)


def warm() -> None:
    """Start `fits`' server process now, for a search to come: it imports this module and
    the program's main module (~0.6 s for `audience`) while the caller goes on."""
    _forkserver()
    forkserver.ensure_running()


def _forkserver() -> multiprocessing.context.ForkServerContext:
    """The server imports the main module too: a worker forked from it then finds it
    imported, instead of importing it again (each of `audience`'s two took 0.6 s)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["__main__", __name__])
    return context


def rank(
    model: Any, items: sparse.csr_matrix, rows: IntArray, k: int, repeat: bool = False
) -> IntArray:
    """Top-k users for each product row, excluding users already in that row (kept, as
    candidates for a repeat, with `repeat`)."""
    return scored(model, items, rows, k, repeat)[0]


def scored(
    model: Any, items: sparse.csr_matrix, rows: IntArray, k: int, repeat: bool = False
) -> tuple[IntArray, NDArray[np.float64]]:
    """`rank`'s users (-1 past the end) and their scores (-inf past the end)."""
    out = np.full((rows.size, k), -1, dtype=np.int64)
    values = np.full((rows.size, k), -np.inf)
    if rows.size == 0:
        return out, values
    with threadpool_limits(1, "blas"):
        ids, found = model.recommend(rows, items[rows], N=k, filter_already_liked_items=not repeat)
    ids = np.asarray(ids, dtype=np.int64).reshape(rows.size, -1)
    found = np.asarray(found, dtype=np.float64).reshape(rows.size, -1)
    out[:, : ids.shape[1]] = ids
    values[:, : ids.shape[1]] = np.where(ids >= 0, found, -np.inf)
    return out, values


def _nothing_to_judge(test: pl.DataFrame, known: pl.DataFrame, new: pl.DataFrame) -> str:
    """Why no product has a relevant user: where the test period's pairs went instead."""
    pairs = test.select(PRODUCT, USER).unique().height
    repeats = known.height - new.height
    said = (
        f"no product has a relevant user: of the {pairs:,} user-product pairs of the test "
        f"period, {pairs - known.height:,} involve a user or a product unseen before it"
    )
    if repeats:
        said += (
            f" and {repeats:,} are by users who had already interacted with the product "
            "(repeats, which `audience evaluate --repeat` and `audience train --repeat` count)"
        )
    return said


class Task:
    """The product -> users task between a training and a test period.

    Candidates are the users known in training; a product's excluded users are
    those who interacted with it in training; its relevant users are candidates
    who interacted with it in the test period and are not excluded. With `repeat`
    nothing is excluded, and a past interactor who comes back to the product is
    relevant too (a refill). Only products with at least one relevant user are
    ranked (rows), at most `max_products` of them (a seeded sample); `empty` says
    why none is, when none is.
    """

    def __init__(
        self,
        train: pl.DataFrame,
        test: pl.DataFrame,
        weights: dict[str, float],
        max_products: int | None = None,
        seed: int = 0,
        repeat: bool = False,
    ):
        self.repeat = repeat
        self.index = Index.of(train)
        coded = self.index.codes(train)
        self.items = matrix(coded, self.index.shape, weights)
        self.n_users = self.index.users.len()
        test_pairs = self.index.codes(test).select("p", "u").unique()
        past = coded.select("p", "u").unique()
        new_pairs = test_pairs.join(past, on=["p", "u"], how="anti")
        relevant = test_pairs if repeat else new_pairs
        self.empty = (
            None if not relevant.is_empty() else _nothing_to_judge(test, test_pairs, new_pairs)
        )
        self.rows = np.unique(relevant.get_column("p").to_numpy()).astype(np.int64)
        if max_products is not None and self.rows.size > max_products:
            rng = np.random.default_rng(seed)
            self.rows = np.sort(rng.choice(self.rows, max_products, replace=False))
            relevant = relevant.filter(pl.col("p").is_in(self.rows))
        row_of = np.full(self.index.products.len(), -1, dtype=np.int64)
        row_of[self.rows] = np.arange(self.rows.size)
        self.truth = quality.Truth.from_pairs(
            row_of[relevant.get_column("p").to_numpy()],
            relevant.get_column("u").to_numpy(),
            self.rows.size,
            self.n_users,
        )
        self.excluded = np.zeros(0, dtype=np.int64)  # repeat: past users stay candidates
        if not repeat:
            sub = self.items[self.rows]
            row_ids = np.repeat(np.arange(self.rows.size, dtype=np.int64), np.diff(sub.indptr))
            self.excluded = np.sort(row_ids * self.n_users + sub.indices.astype(np.int64))
        self.activity = np.bincount(coded.get_column("u").to_numpy(), minlength=self.n_users)
        self.test_products = test.get_column(PRODUCT).n_unique()


def tune(
    train: pl.DataFrame,
    weights: dict[str, float],
    seed: int,
    progress: Progress,
    repeat: bool = False,
    quick: bool = False,
) -> dict[str, Any]:
    """Pick ALS parameters by NDCG@10 on the last 20% (by time) of the training period,
    on the task of the same mode (`Task`'s `repeat`): FIRST_STAGE, then `second_stage`
    of its best, or, `quick`, QUICK alone.

    At most VALIDATION_PRODUCTS products (a seeded sample) are ranked per trial. When
    the validation slice has nothing to judge, `best` is None and `skipped` says why.
    Besides the parameters: the `task` and the best trial's fitted `model` (on the
    first 80% of `train`), for whoever goes on on the same slice.
    """
    fit_part, validation = time_split(train)
    task = Task(fit_part, validation, weights, VALIDATION_PRODUCTS, seed, repeat)
    if task.empty is not None:
        return {"best": None, "skipped": f"validation slice: {task.empty}"}
    trials: list[tuple[AlsParams, float]] = []
    kept: list[Any] = [None, -1.0]  # the best trial's model and NDCG so far

    def stage(grid: tuple[AlsParams, ...]) -> None:
        first = len(trials) + 1
        said = "; ".join(f"({first + i}) {p.as_dict()}" for i, p in enumerate(grid))
        progress(f"tuning ALS on the validation slice: {said}")
        done = fits(task.items, grid, seed, task.rows, repeat)
        for params, (model, top) in zip(grid, done, strict=True):
            ndcg = float(quality.per_product(top, task.truth, (K,))[f"ndcg@{K}"].mean())
            trials.append((params, ndcg))
            if ndcg > kept[1]:
                kept[:] = [model, ndcg]

    if quick:
        stage(QUICK)
    else:
        stage(FIRST_STAGE)
        stage(second_stage(max(trials, key=lambda t: t[1])[0]))
    best = max(trials, key=lambda t: t[1])[0]
    return {
        "best": best,
        "trials": [p.as_dict() | {f"validation_ndcg@{K}": v} for p, v in trials],
        "validation_products": int(task.rows.size),
        "task": task,
        "model": kept[0],
    }
