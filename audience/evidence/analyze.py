"""What a log can support: behaviour statistics, a real ALS baseline, and a CF verdict.

The seed 004 report argued that collaborative filtering cannot work on a
high-churn marketplace, but its "CF attempt" ranked random users. Here the
argument is made with measurements: how often users return (retention), how
much of the future a history-based method could address at all (the ceiling),
and how a tuned ALS model actually ranks users per product against random and
popularity rankings on the same candidates, with bootstrap intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from audience.data.schema import PRODUCT, TIME, USER
from audience.data.stats import DEFINITIONS as LOG_DEFINITIONS
from audience.data.stats import ceiling, log_stats, retention_curve, time_split
from audience.evidence import baselines, metrics
from audience.model import cf, hybrid, quality
from audience.model.train import Progress, quiet

RETENTION_WINDOWS = [1, 3, 7, 14, 21, 30, 45, 60, 90]
PERCENTILES = (50, 75, 90, 95, 99)
K = cf.K

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
#: The first two are `audience train --cf auto`'s (`hybrid.CHEAP`).
THRESHOLDS = hybrid.CHEAP | {"als_gain_ci_low": 0.0}

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


def rankings(task: cf.Task, params: cf.AlsParams, seed: int) -> dict[str, baselines.IntArray]:
    """Random, popularity and ALS (fitted with `params`) top K for the task's products."""
    model = cf.fit(task.items, params, seed)
    n = task.rows.size
    return {
        "random": baselines.random(task.n_users, task.excluded, n, K, seed),
        "popularity": baselines.popularity(task.activity, task.excluded, n, K),
        "als": cf.rank(model, task.items, task.rows, K, task.repeat),
    }


def cf_baseline(
    events: pl.DataFrame, weights: dict[str, float], seed: int = 0, progress: Progress = quiet
) -> dict[str, Any]:
    """ALS vs random vs popularity on the 80/20 time split, with CIs and lifts; `skipped`
    with the reason instead when the log leaves nothing to judge (e.g. one product)."""
    early, late = time_split(events)
    task = cf.Task(early, late, weights)
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
    tuning = cf.tune(early, weights, seed, progress) if task.empty is None else {}
    skipped = task.empty or tuning.get("skipped")
    if skipped:
        progress(f"ALS baseline skipped: {skipped}")
        return {"task": setup, "skipped": skipped, "seed": seed}
    progress("fitting ALS on the early 80% and ranking users for late-period products")
    ranked = rankings(task, tuning["best"], seed)
    progress("bootstrapping confidence intervals")
    scored = {name: quality.per_product(r, task.truth) for name, r in ranked.items()}
    models = {
        name: metrics.summarize(per, seed)
        | {"user_coverage": quality.user_coverage(ranked[name], task.n_users)}
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
    events: pl.DataFrame, weights: dict[str, float], seed: int = 0, progress: Progress = quiet
) -> dict[str, Any]:
    progress("computing log statistics")
    stats = statistics(events)
    baseline = cf_baseline(events, weights, seed, progress)
    return {"statistics": stats, "cf": baseline, "verdict": verdict(stats, baseline)}
