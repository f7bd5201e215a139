"""The collaborative term: ALS in the audience score where the log supports it.

`audience train --cf auto|on|off`. With CF on, implicit's ALS is fitted on the
product x user matrix (`audience.model.cf`), and every (product, user) pair gets one
more saturating term in its audience score:

    cf(p, u) = weight * s / (s + half),   s = ALS's score of u for p (> 0)

with `half` the median score of the `CANDIDATES` best users of a sample of products (a
typical top user gets half the weight). A user with an event on the product is
excluded when the term is on (`decide`), so the term sits beside the direct one, never
with it. The factors go into the artifact (`segment_cf_users`, `segment_cf_products`):
one product's scores for every user are one pass over the user factors
(`kernels.scores`), so the stored lists, `audience segment` at any depth and
`/recommend` rank with it alike, and a product in a cold category gains users it had no
evidence for. Its reason reads "shoppers like this one buy it".

The weight is chosen on a validation slice cut from the training period (its last 20%
of events by time, as `audience analyze` tunes ALS): the model is trained on the first
80%, each weight of `WEIGHTS` ranks the slice's products, and the one with the best
NDCG@10 wins (0 when CF does not help: the hybrid is then the plain model). ALS's own
parameters come from the analysis of the same log when given, else from the same
small search `analyze` runs (`cf.tune`). The test period of a backtest is never seen:
`audience evaluate` trains on the events before its cutoff, and the slice is cut
from those.

`auto` turns CF on only when the verdict's cheap criteria pass (30-day retention and
the ceiling, `CHEAP`): on a log where users do not come back it costs one pass over
the events and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl
from scipy import sparse
from threadpoolctl import threadpool_limits

from audience.data.schema import CATALOG_SCHEMA, EVENT, PRODUCT, TIME, USER
from audience.data.stats import time_split
from audience.errors import ConfigError
from audience.model import cf, quality, segments
from audience.model.audiences import Affinity, AudienceConfig, affinity
from audience.model.codes import Log, coded, spelled
from audience.model.kernels.topn import Collaborative
from audience.model.scoring import Engagement

MODES: Final = ("auto", "on", "off")
#: The verdict's criteria that need no model, and their thresholds (`audience analyze`
#: adds ALS's measured gain): a history to learn from, and a future it covers.
CHEAP: Final = {"retention_30d": 0.10, "ceiling": 0.30}
#: The term's half point is the median score of each sampled product's this many best users.
CANDIDATES: Final = 100
#: The weights tried on the validation slice (the other terms' weights: direct 2,
#: co-interaction 2, category 0.5).
WEIGHTS: Final = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
#: Products of the validation slice ranked per weight (a seeded sample when there are
#: more): the weight is one number, and 500 products judge it within a few thousandths
#: of NDCG while costing a quarter of `cf.VALIDATION_PRODUCTS`.
WEIGHT_PRODUCTS: Final = 500
#: implicit's CPU solver on both cores.
ALS_THREADS: Final = 2
#: ALS's iterations on the whole log, from the factors fitted on the first 80% of the
#: validation slice's log: the products and users it knew start near their answer.
WARM_ITERATIONS: Final = 3
#: Up to this many products x users, the whole log's ALS is fitted while the weight is
#: chosen (see `fit`): about two seconds on the loyal sample (4e8).
BESIDE: Final = 10**9
Progress = Callable[[str], None]
DAY_US: Final = 86_400_000_000
#: Scores a coded log's users as train does: (events, as of) -> engagement.
Engage = Callable[[pl.DataFrame, datetime], Engagement]


@dataclass(frozen=True)
class Verdict:
    """Whether train uses CF, and why."""

    mode: str
    on: bool
    why: str
    criteria: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "on": self.on, "why": self.why, "criteria": self.criteria}


def criteria(log: Log) -> dict[str, float]:
    """The cheap criteria of the CF verdict on `log` (`CHEAP`'s keys), as `audience
    analyze` defines them (`data.stats.retention`, 30 days; `data.stats.ceiling` at
    `time_split`'s cut), in a few linear NumPy passes over the coded log, whose events
    come sorted by user: at 10x the sample, the analysis' Polars statistics took 1.2 s,
    these a tenth of it. A test checks that both agree."""
    events = log.events
    users = events.get_column(USER).to_numpy()
    products = events.get_column(PRODUCT).to_numpy()
    times = events.get_column(TIME).dt.epoch("us").to_numpy()
    if times.size == 0:
        return {"retention_30d": 0.0, "ceiling": 0.0}
    # The ceiling: late events by a user and on a product both seen before the cut.
    at = min(int(0.8 * times.size), times.size - 1)  # as `time_split` cuts
    early = times < np.partition(times, at)[at]
    known_users = np.zeros(log.users.len(), dtype=np.bool_)
    known_users[users[early]] = True
    known_products = np.zeros(log.products.height, dtype=np.bool_)
    known_products[products[early]] = True
    late = ~early
    known = known_users[users[late]] & known_products[products[late]]
    # 30-day retention: per user, the first active day and the next one after it.
    day = times // DAY_US
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    first = np.minimum.reduceat(day, starts)
    spans = np.diff(np.r_[starts, day.size])
    later = np.where(day > np.repeat(first, spans), day, np.iinfo(np.int64).max)
    gap = np.minimum.reduceat(later, starts) - first
    eligible = first <= day.max() - 30
    retained = eligible & (gap <= 30)
    return {
        "retention_30d": float(retained.sum() / eligible.sum()) if eligible.any() else 0.0,
        "ceiling": float(known.mean()) if known.size else 0.0,
    }


def decide(mode: str, log: Log, config: AudienceConfig | None = None) -> Verdict:
    """`--cf`'s answer for this log and audience config (`judged`, on `criteria`)."""
    types = [str(t) for t in log.events.get_column(EVENT).unique().to_list()]
    return judged(mode, config or AudienceConfig(), types, lambda: criteria(log))


def judged(
    mode: str, config: AudienceConfig, types: list[str], measure: Callable[[], dict[str, float]]
) -> Verdict:
    """`--cf`'s answer for a log of event `types` and an audience config, on either
    engine: `auto` follows the cheap criteria (`measure`d only then). Repeat mode, and
    an `--exclude` that keeps some past users as candidates, leave CF off: the
    validation slice judges only users new to a product (a past user's return is no hit
    there), so it would favour a term that crowds out the very users the merchant chose
    to keep."""
    if mode not in MODES:
        raise ConfigError("cf", f"unknown mode {mode!r}; choose {', '.join(MODES)}")
    if config.repeat:
        why = "repeat mode: CF proposes only users new to a product"
    elif set(config.excluding(types)) < set(types):
        why = "--exclude keeps past users as candidates, which the CF term cannot be judged on"
    elif config.cap is not None:
        why = "--cap deals users from category pools, which know no collaborative term"
    else:
        why = ""
    if why:
        if mode == "on":
            raise ConfigError("cf", f"{why}: use --cf off or auto")
        return Verdict(mode, False, why)
    if mode != "auto":
        return Verdict(mode, mode == "on", f"--cf {mode}")
    found = measure()
    failed = [k for k, low in CHEAP.items() if not found[k] > low]
    if failed:
        said = ", ".join(f"{k} {found[k]:.1%} <= {CHEAP[k]:.0%}" for k in failed)
        return Verdict(mode, False, f"the log does not support CF: {said}", found)
    said = ", ".join(f"{k} {found[k]:.1%} > {CHEAP[k]:.0%}" for k in CHEAP)
    return Verdict(mode, True, f"the log supports CF: {said}", found)


def factors(
    model: Any, items: npt.NDArray[np.float32], weight: float, half: float
) -> Collaborative:
    """The term of an implicit ALS `model` fitted on rows = products (its "users"):
    `items` are the products' factors by product code (a zero row: no term), the
    model's item factors are the users', by user code."""
    users = np.ascontiguousarray(np.asarray(model.item_factors, dtype=np.float32).T)
    return Collaborative(users, np.ascontiguousarray(items, dtype=np.float32), weight, half)


def half_of(model: Any, items: sparse.csr_matrix, rows: npt.NDArray[np.int64]) -> float:
    """The term's half point: the median ALS score of the `CANDIDATES` best users
    (scores above 0, users new to the product) of each product row of `rows`."""
    found = cf.scored(model, items, rows, CANDIDATES)[1]
    kept = found[np.isfinite(found) & (found > 0)]
    return float(np.median(kept)) if kept.size else 1.0


@dataclass(frozen=True)
class Whole:
    """ALS on the whole log (rows: every product code) and the term's half point."""

    model: Any
    half: float

    def term(self, weight: float) -> Collaborative:
        """The term at `weight`."""
        items = np.asarray(self.model.user_factors, dtype=np.float32)
        return factors(self.model, items, weight, self.half)

    @classmethod
    def fit(cls, log: Log, weights: dict[str, float], cut: Slice, model: Any) -> Whole:
        """Fitted on every product with an event, from the factors of `model` (ALS on
        the validation slice's first part, `cut`) for the products and users it knows,
        in `WARM_ITERATIONS` (the others start as implicit starts them); the half point
        from a seeded sample of at most `WEIGHT_PRODUCTS` of the products."""
        pairs = log.events.select(p=PRODUCT, u=USER, event_type=EVENT)
        shape = (log.products.height, log.users.len())
        items = cf.matrix(pairs, shape, weights)
        rng = np.random.default_rng(cut.seed)
        start = [rng.random((n, cut.params.factors), np.float32) * np.float32(0.01) for n in shape]
        ids = log.products.get_column(PRODUCT)
        start[0][ids.search_sorted(cut.task.index.products).to_numpy()] = model.user_factors
        start[1][log.users.search_sorted(cut.task.index.users).to_numpy()] = model.item_factors
        params = replace(cut.params, iterations=min(WARM_ITERATIONS, cut.params.iterations))
        whole = cf.fit(items, params, cut.seed, ALS_THREADS, (start[0], start[1]))
        rows = np.flatnonzero(np.diff(items.indptr)).astype(np.int64)  # with an event
        if rows.size > WEIGHT_PRODUCTS:
            rows = np.sort(rng.choice(rows, WEIGHT_PRODUCTS, replace=False))
        return cls(whole, half_of(whole, items, rows))


@dataclass(frozen=True)
class Hybrid:
    """The collaborative term as trained: ALS's parameters, the weight and how it was
    chosen, and the terms of the whole log."""

    params: cf.AlsParams
    weight: float
    half: float | None  # None when the weight is 0
    factors: Collaborative | None  # the whole log's; None when the weight is 0
    validation: dict[str, Any]

    def applied(self, linked: Affinity) -> Affinity:
        """`linked` with the term (as it is when the weight is 0)."""
        return linked if self.factors is None else replace(linked, collaborative=self.factors)

    def as_dict(self) -> dict[str, Any]:
        return {
            "als": self.params.as_dict(),
            "whole_log": {
                "iterations": min(WARM_ITERATIONS, self.params.iterations),
                "start": "the factors fitted on the validation slice's first part",
            },
            "weight": self.weight,
            "half": self.half,
            "half_from_top_users": CANDIDATES,
            "validation": self.validation,
        }


@dataclass(frozen=True)
class Slice:
    """The validation slice (`sliced`): ALS's parameters, the task the weight is judged
    on, the events before it, and ALS fitted on those when the parameters were tuned
    there (else None)."""

    params: cf.AlsParams
    task: cf.Task
    fit_part: pl.DataFrame
    validation: pl.DataFrame
    model: Any
    seed: int


def sliced(
    log: Log,
    weights: dict[str, float],
    params: cf.AlsParams | None = None,
    seed: int = 0,
    progress: Progress | None = None,
) -> Slice:
    """The validation slice of `log` and ALS's parameters: `params`, else those of the
    same small search `audience analyze` runs (`cf.tune`, quick). It needs the log
    alone: `audience train` starts it beside the scoring."""
    say = progress or (lambda _: None)
    events = _named(log)
    fit_part, validation = time_split(events)  # the slice `cf.tune` cuts too
    if params is None:
        tuned = cf.tune(events, weights, seed, say, quick=True)
        if tuned["best"] is None:
            raise ConfigError("cf", f"ALS cannot be tuned on this log: {tuned['skipped']}")
        return Slice(tuned["best"], tuned["task"], fit_part, validation, tuned["model"], seed)
    task = cf.Task(fit_part, validation, weights, cf.VALIDATION_PRODUCTS, seed)
    if task.empty is not None:
        raise ConfigError("cf", f"the validation slice has nothing to judge: {task.empty}")
    return Slice(params, task, fit_part, validation, None, seed)


def fit(
    log: Log,
    weights: dict[str, float],
    linked: Affinity,
    engage: Engage,
    cut: Slice,
    progress: Progress | None = None,
) -> Hybrid:
    """The collaborative term of `log`, its weight chosen on the validation slice `cut`
    (`sliced`). `engage(events, as_of)` scores a coded log's users as train does (the
    validation slice's model is trained like the real one); `linked` is the whole log's
    affinity."""
    say = progress or (lambda _: None)
    params, task, model, seed = cut.params, cut.task, cut.model, cut.seed
    say("choosing the collaborative term's weight on the validation slice")
    # ALS (implicit's solver) runs beside the Polars and numba passes of the choice: the
    # slice's model when it was not tuned, and the whole log's when that is cheap. On a
    # large log the whole log's waits for a weight above 0: its scores for every product
    # and user took minutes on the marketplace sample, for nothing when the weight is 0.
    cheap = log.products.height * log.users.len() <= BESIDE
    # The BLAS limit is held here, for both threads: each fit's own limit then saves and
    # restores one thread, instead of two threads interleaving the process-wide setting.
    with threadpool_limits(1, "blas"), ThreadPoolExecutor(2) as aside:
        if model is None:
            model = aside.submit(cf.fit, task.items, params, seed, ALS_THREADS)

        def fitted() -> Any:
            return model.result() if isinstance(model, Future) else model

        whole = aside.submit(lambda: Whole.fit(log, weights, cut, fitted())) if cheap else None
        chosen, trials, judged = _choose(
            log, cut.fit_part, task, model, weights, linked, engage, seed
        )
        found = whole.result() if whole is not None else None
    said = {
        "slice": {
            "fit": _span(cut.fit_part),
            "validation": _span(cut.validation),
            "products": judged,
        },
        f"ndcg@{cf.K}_by_weight": trials,
    }
    if chosen == 0.0:
        return Hybrid(params, 0.0, None, None, said)
    if found is None:
        say("fitting ALS on the whole log for the collaborative term")
        found = Whole.fit(log, weights, cut, fitted())
    return Hybrid(params, chosen, found.half, found.term(chosen), said)


def _choose(
    log: Log,
    fit_part: pl.DataFrame,
    task: cf.Task,
    model: Any,
    weights: dict[str, float],
    linked: Affinity,
    engage: Engage,
    seed: int,
) -> tuple[float, dict[str, float], int]:
    """(the weight with the best validation NDCG (ties: the smaller), NDCG by weight,
    products judged): the model trained on `fit_part` like the real one, with `model`'s
    (ALS on `fit_part`, or its future) collaborative terms, ranks at most
    `WEIGHT_PRODUCTS` of the slice's products (a seeded sample of `task`'s)."""
    rows = np.arange(task.rows.size)
    if rows.size > WEIGHT_PRODUCTS:
        rows = np.sort(np.random.default_rng(seed).choice(rows, WEIGHT_PRODUCTS, replace=False))
    truth = task.truth.subset(rows)
    early = coded(fit_part, log.table().select(*CATALOG_SCHEMA), weights)
    # The task numbers the same users (those of `fit_part`) in the same (id) order.
    assert early.users.equals(task.index.users)
    last = fit_part.get_column(TIME).max()
    assert isinstance(last, datetime)
    try:
        engaged = engage(early.events, last + timedelta(microseconds=1))
    except ConfigError as exc:  # e.g. too short a slice for the fitted scorer's horizons
        raise ConfigError(
            "cf", f"the validation slice's model cannot be trained ({exc}): use --cf off"
        ) from None
    base = affinity(early, weights, linked.config)
    ids = early.products.get_column(PRODUCT)
    codes = ids.search_sorted(task.index.products.gather(task.rows[rows])).to_numpy()
    if isinstance(model, Future):
        model = model.result()
    half = half_of(model, task.items, task.rows[rows])
    # The model's products are the task's; the slice's codes number the catalog's too.
    items = np.zeros((ids.len(), model.user_factors.shape[1]), np.float32)
    items[ids.search_sorted(task.index.products).to_numpy()] = model.user_factors
    term = factors(model, items, 1.0, half)
    trials: dict[str, float] = {}
    for weight in WEIGHTS:
        tried = base if weight == 0 else replace(base, collaborative=replace(term, weight=weight))
        top = segments.best_users(tried, engaged, codes.astype(np.int64), cf.K)
        ndcg = quality.per_product(top, truth, (cf.K,))[f"ndcg@{cf.K}"]
        trials[f"{weight:g}"] = float(ndcg.mean())
    best = max(WEIGHTS, key=lambda w: (trials[f"{w:g}"], -w))
    return best, trials, int(rows.size)


def _named(log: Log) -> pl.DataFrame:
    """The log's events with ids and type names again (as `coded` takes them)."""
    return log.events.select(
        spelled(USER, log.users),
        spelled(PRODUCT, log.products.get_column(PRODUCT)),
        pl.col(EVENT).cast(pl.String),
        TIME,
    )


def _span(events: pl.DataFrame) -> dict[str, Any]:
    times = events.get_column(TIME)
    return {"events": events.height, "first": str(times.min()), "last": str(times.max())}
