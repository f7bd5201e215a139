"""What a log can support: behaviour statistics, a real ALS baseline, and a CF verdict.

The seed 004 report argued that collaborative filtering cannot work on a
high-churn marketplace, but its "CF attempt" ranked random users. Here the
argument is made with measurements: how often users return (retention), how
much of the future a history-based method could address at all (the ceiling),
and how a tuned ALS model actually ranks users per product against random and
popularity rankings on the same candidates, with bootstrap intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from audience.data.schema import PRODUCT, TIME, USER
from audience.data.stats import DEFINITIONS as LOG_DEFINITIONS
from audience.data.stats import log_stats, retention_curve, time_split
from audience.evidence import baselines, cf, metrics

Progress = Callable[[str], None]
RETENTION_WINDOWS = [1, 3, 7, 14, 21, 30, 45, 60, 90]
PERCENTILES = (50, 75, 90, 95, 99)
K = 10
#: Products ranked per tuning trial (a seeded sample when there are more).
VALIDATION_PRODUCTS = 2000

#: The verdict's criteria and thresholds: CF is viable only if every value exceeds its
#: threshold. Retention and the ceiling say whether there is a history to learn from and
#: a future it covers; the gain says whether ALS actually learned something from it.
CRITERIA = {
    "retention_30d": "30-day retention (users with a history to learn from)",
    "ceiling": "the share of late interactions by known users on known products",
    "als_gain_ci_low": (
        f"the lower 95% bound of ALS's NDCG@{K} gain over the better of random and popularity"
    ),
}
THRESHOLDS = {"retention_30d": 0.10, "ceiling": 0.30, "als_gain_ci_low": 0.0}

DEFINITIONS = (
    LOG_DEFINITIONS
    | {
        "retention_Nd": (
            "among users whose first active day d0 satisfies d0 + N <= the log's last day "
            "(the window fits in the log), the share active again on a day in (d0, d0 + N]"
        ),
        "monthly_active_users": "distinct users with an event in the calendar month (UTC)",
        "cohorts": (
            "users grouped by the month of their first event; month_k = share of the cohort "
            "active in the k-th month after it (null where that month is past the log's end)"
        ),
        "ceiling": (
            "share of late-period interactions whose user and product both appear in the early "
            "period: the most any method ranking known users for known products could address"
        ),
        "density": "distinct (user, product) pairs / (users x products)",
        "percentiles": "percentiles of events per user and per product",
    }
    | {f"cf.{k}": v for k, v in metrics.DEFINITIONS.items()}
)


def _quiet(_: str) -> None:
    return None


def _percentiles(counts: pl.Series) -> dict[str, float]:
    values = counts.to_numpy()
    out = {f"p{q}": float(np.percentile(values, q)) for q in PERCENTILES}
    return out | {"mean": float(values.mean()), "max": float(values.max())}


def _months(events: pl.DataFrame) -> pl.DataFrame:
    """Distinct (user, month) with months as consecutive integers (year * 12 + month - 1)."""
    month = pl.col(TIME).dt.year().cast(pl.Int64) * 12 + pl.col(TIME).dt.month() - 1
    return events.select(USER, month=month).unique()


def _label(month: int) -> str:
    return f"{month // 12}-{month % 12 + 1:02d}"


def monthly_active(events: pl.DataFrame) -> list[dict[str, Any]]:
    mau = _months(events).group_by("month").len().sort("month")
    return [{"month": _label(m), "active_users": n} for m, n in mau.iter_rows()]


def cohorts(events: pl.DataFrame, horizon: int = 5) -> list[dict[str, Any]]:
    months = _months(events).with_columns(cohort=pl.col("month").min().over(USER))
    last = int(months.get_column("month").max())  # type: ignore[arg-type]
    offset = pl.col("month") - pl.col("cohort")
    table = (
        months.group_by("cohort")
        .agg(
            pl.col(USER).n_unique().alias("users"),
            *((offset == k).sum().alias(f"month_{k}") for k in range(1, horizon + 1)),
        )
        .sort("cohort")
    )
    return [
        {"cohort": _label(row["cohort"]), "users": row["users"]}
        | {
            f"month_{k}": None if row["cohort"] + k > last else row[f"month_{k}"] / row["users"]
            for k in range(1, horizon + 1)
        }
        for row in table.iter_rows(named=True)
    ]


def ceiling(early: pl.DataFrame, late: pl.DataFrame) -> float:
    known = late.join(early.select(USER).unique(), on=USER, how="semi").join(
        early.select(PRODUCT).unique(), on=PRODUCT, how="semi"
    )
    return known.height / late.height if late.height else 0.0


def statistics(events: pl.DataFrame) -> dict[str, Any]:
    """Every behaviour statistic of the analysis (the data_statistics.json body)."""
    base = log_stats(events)
    early, late = time_split(events)
    pairs = events.select(USER, PRODUCT).unique().height
    return base | {
        "retention": retention_curve(events, RETENTION_WINDOWS),
        "monthly_active_users": monthly_active(events),
        "cohorts": cohorts(events),
        "split": base["split"] | {"ceiling": ceiling(early, late)},
        "density": pairs / (base["users"] * base["products"]),
        "percentiles": {
            "events_per_user": _percentiles(events.group_by(USER).len().get_column("len")),
            "events_per_product": _percentiles(events.group_by(PRODUCT).len().get_column("len")),
        },
        "activity_histogram": _histogram(events.group_by(USER).len().get_column("len")),
        "definitions": DEFINITIONS,
    }


def _histogram(counts: pl.Series) -> dict[str, int]:
    edges = [(1, 1), (2, 2), (3, 3), (4, 5), (6, 10), (11, 20), (21, 50), (51, None)]
    out = {}
    for lo, hi in edges:
        label = f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi else f">{lo - 1}")
        mask = counts >= lo if hi is None else (counts >= lo) & (counts <= hi)
        out[label] = int(mask.sum())
    return out


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
        self.index = cf.Index.of(train)
        coded = self.index.codes(train)
        self.items = cf.matrix(coded, self.index, weights)
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
        self.truth = metrics.Truth.from_pairs(
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

    def rankings(self, params: cf.AlsParams, seed: int) -> dict[str, baselines.IntArray]:
        model = cf.fit(self.items, params, seed)
        n = self.rows.size
        return {
            "random": baselines.random(self.n_users, self.excluded, n, K, seed),
            "popularity": baselines.popularity(self.activity, self.excluded, n, K),
            "als": cf.rank(model, self.items, self.rows, K, self.repeat),
        }


def tune(
    train: pl.DataFrame,
    weights: dict[str, float],
    seed: int,
    progress: Progress,
    repeat: bool = False,
) -> dict[str, Any]:
    """Pick ALS parameters by NDCG@10 on the last 20% (by time) of the training period,
    on the task of the same mode (`Task`'s `repeat`).

    At most VALIDATION_PRODUCTS products (a seeded sample) are ranked per trial. When
    the validation slice has nothing to judge, `best` is None and `skipped` says why.
    """
    fit_part, validation = time_split(train)
    task = Task(fit_part, validation, weights, VALIDATION_PRODUCTS, seed, repeat)
    if task.empty is not None:
        return {"best": None, "skipped": f"validation slice: {task.empty}"}
    trials: list[tuple[cf.AlsParams, float]] = []

    def trial(params: cf.AlsParams) -> None:
        progress(f"tuning ALS on the validation slice ({len(trials) + 1}): {params.as_dict()}")
        model = cf.fit(task.items, params, seed)
        ranking = cf.rank(model, task.items, task.rows, K, repeat)
        trials.append(
            (params, float(metrics.per_product(ranking, task.truth, (K,))[f"ndcg@{K}"].mean()))
        )

    for params in cf.FIRST_STAGE:
        trial(params)
    for params in cf.second_stage(max(trials, key=lambda t: t[1])[0]):
        trial(params)
    best = max(trials, key=lambda t: t[1])[0]
    return {
        "best": best,
        "trials": [p.as_dict() | {f"validation_ndcg@{K}": v} for p, v in trials],
        "validation_products": int(task.rows.size),
    }


def cf_baseline(
    events: pl.DataFrame, weights: dict[str, float], seed: int = 0, progress: Progress = _quiet
) -> dict[str, Any]:
    """ALS vs random vs popularity on the 80/20 time split, with CIs and lifts; `skipped`
    with the reason instead when the log leaves nothing to judge (e.g. one product)."""
    early, late = time_split(events)
    task = Task(early, late, weights)
    setup = {
        "split": "80/20 by event time (audience.data.stats.time_split)",
        "candidates": "users with an early-period event",
        "excluded": "users who interacted with the product in the early period",
        "relevant": "candidates who interacted with the product in the late period",
        "k": K,
        "candidate_users": task.n_users,
        "evaluated_products": int(task.rows.size),
        "late_products": task.test_products,
        "relevant_pairs": int(task.truth.codes.size),
    }
    tuning = tune(early, weights, seed, progress) if task.empty is None else {}
    skipped = task.empty or tuning.get("skipped")
    if skipped:
        progress(f"ALS baseline skipped: {skipped}")
        return {"task": setup, "skipped": skipped, "seed": seed}
    progress("fitting ALS on the early 80% and ranking users for late-period products")
    rankings = task.rankings(tuning["best"], seed)
    progress("bootstrapping confidence intervals")
    scored = {name: metrics.per_product(r, task.truth) for name, r in rankings.items()}
    models = {
        name: metrics.summarize(per, seed)
        | {"user_coverage": metrics.user_coverage(rankings[name], task.n_users)}
        for name, per in scored.items()
    }
    lifts = {
        f"als_over_{base}": {
            m: metrics.lift_ci(scored["als"][m], scored[base][m], seed) for m in scored["als"]
        }
        for base in ("random", "popularity")
    }
    gains = {
        f"als_over_{base}": metrics.mean_ci(
            scored["als"][f"ndcg@{K}"] - scored[base][f"ndcg@{K}"], seed
        )
        for base in ("random", "popularity")
    }
    return {
        "task": setup,
        "tuning": {
            "method": (
                f"factors x alpha grid, then regularization on the winner; NDCG@{K} on "
                "the last 20% of the early period"
            ),
            "validation_products": tuning["validation_products"],
            "trials": tuning["trials"],
            "chosen": tuning["best"].as_dict(),
        },
        "models": models,
        "lifts": lifts,
        "gains": gains,
        "seed": seed,
    }


def verdict(stats: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Whether CF is viable for this log, criterion by criterion (all must pass). When the
    ALS baseline could not run, its criterion is untested and CF is not called viable."""
    untested = baseline.get("skipped")
    gains = baseline.get("gains", {})
    values = {
        "retention_30d": stats["retention_30d"],
        "ceiling": stats["split"]["ceiling"],
        "als_gain_ci_low": None
        if untested
        else min(gains[f"als_over_{b}"]["ci95_low"] for b in ("random", "popularity")),
    }
    checks = {
        name: {
            "value": value,
            "threshold": THRESHOLDS[name],
            "passed": None if value is None else value > THRESHOLDS[name],
        }
        for name, value in values.items()
    }
    failing = [
        f"{CRITERIA[name]} is {c['value']:.3g}, needs > {c['threshold']:g}"
        for name, c in checks.items()
        if c["passed"] is False
    ]
    viable = not failing and not untested
    if viable:
        summary = (
            "CF is viable: users return, most late interactions involve known users and "
            "products, and ALS beats both baselines with intervals that exclude no gain."
        )
    elif untested:
        summary = f"CF could not be tested on this log: {untested}." + (
            " Besides: " + "; ".join(failing) + "." if failing else ""
        )
    else:
        summary = "CF is not viable for this log: " + "; ".join(failing) + "."
    return {
        "viable": viable,
        "tested": not untested,
        "checks": checks,
        "criteria": CRITERIA,
        "summary": summary,
    }


def analyze(
    events: pl.DataFrame, weights: dict[str, float], seed: int = 0, progress: Progress = _quiet
) -> dict[str, Any]:
    progress("computing log statistics")
    stats = statistics(events)
    baseline = cf_baseline(events, weights, seed, progress)
    return {"statistics": stats, "cf": baseline, "verdict": verdict(stats, baseline)}
