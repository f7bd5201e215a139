"""Time-split backtest: does each model name the users who go on to engage?

Seed 004 argued that offline metrics "don't apply" to activity-based targeting.
They do: cut the log at a time, train every model on the events before it, and
judge it on the events after it. Two tasks, both on the users known at the cut:

(a) Product audiences (`audience.model.cf.Task`): for every product with a
    relevant known user after the cut, rank the known users (minus those who
    already interacted with it); relevant = known users who interact with it
    after the cut. Scored by `audience.evidence.metrics` at N and at 1% of the
    candidates, with bootstrap intervals over products and lifts over random.
(b) Activity targeting, the seed's own claim: the top N users by a global score;
    precision@N = share of them with any event after the cut. Bootstrap
    intervals over users, lifts over the base rate.

Every model sees the same candidates and exclusions. Global scorers (popularity,
seed, fitted) give every product the same list minus its excluded users;
product-aware audiences are `audience.model.audiences.build` on the early events, as
`audience train` builds them; ALS is the analysis's tuned baseline.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime
from typing import Any

import numpy as np
import polars as pl
from numpy.typing import NDArray
from scipy import special
from scipy.stats import binomtest

from audience.data.schema import PRODUCT, TIME, USER
from audience.data.stats import ceiling as known_pairs
from audience.data.stats import time_split
from audience.data.times import parse_time
from audience.errors import ConfigError
from audience.evidence import baselines, metrics
from audience.model import cf, hybrid, quality, segments
from audience.model.audiences import Affinity, AudienceConfig, affinity, build
from audience.model.codes import Log, coded
from audience.model.scoring import Engagement
from audience.model.train import MODELS, Progress, engagement, quiet

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]

ONE_PERCENT = 0.01
#: Products scored at the 1% depth (a seeded sample, the same for every model).
ONE_PERCENT_PRODUCTS = 2000
ACTIVITY_NS = (100, 1000, 10000)
NO_AFFINITY = AudienceConfig(direct=0.0, co=0.0, category=0.0)

DEFINITIONS: dict[str, str] = {
    "cutoff": "models see events strictly before it; events at or after it are the truth",
    "candidates": "users with an event before the cutoff (the same for every model)",
    "excluded": "a product's users who interacted with it before the cutoff",
    "relevant": "candidates who interact with the product after the cutoff, not excluded",
    "evaluated_products": "products known at the cutoff with at least one relevant user",
    "k_1pct": "ceil(1% of candidate users): the depth of the 1% audience",
    "hits@1%": "whether any relevant user is in the top 1% of candidates: the share of "
    "products where one is",
    "recall@1%": "relevant users in the top 1% / relevant users, mean over products",
    "concentration": "share of all top-N audience slots held by the 1% of candidate users "
    "with the most slots (1.0: the same few users everywhere)",
    "random": "exact expectation of a uniformly random ranking of each product's allowed "
    "candidates (no sampling noise); its coverage and concentration from one seeded draw",
    "lift_over_random": "model mean / random mean, 95% CI by paired bootstrap over products",
    "activity_precision@N": "share of the top N users by the model's score with any event "
    "after the cutoff; ties by user_id; 95% CI by bootstrap over those N users",
    "activity_base_rate": "share of all candidates with an event after the cutoff: random's "
    "exact precision at any N, 95% CI exact binomial (Clopper-Pearson)",
    "activity_lift": "precision@N / base rate; 95% CI from 1000 bootstrap resamples of the "
    "top N and of all candidates drawn independently",
    "ceiling": "share of post-cutoff interactions by users known at the cutoff",
    "ceiling_known_pairs": "share of post-cutoff interactions whose user and product are both "
    "known at the cutoff (audience.data.stats.ceiling)",
} | {f"metric.{k}": v for k, v in metrics.DEFINITIONS.items()}


def parse_cutoff(text: str) -> datetime:
    """A cutoff written as a date or an ISO time (UTC unless it has an offset)."""
    value = pl.DataFrame({"t": [text]}).select(parse_time("t", pl.String())).item()
    if not isinstance(value, datetime):
        raise ConfigError("--cutoff", f"cannot read {text!r} as a date or time (2023-02-01)")
    return value


def split(
    events: pl.DataFrame, cutoff: datetime | None = None
) -> tuple[pl.DataFrame, pl.DataFrame, datetime]:
    """(early, late, cutoff); the default cutoff is the time of the 80th-percentile event."""
    if cutoff is None:
        early, late = time_split(events)
        cut = late.get_column(TIME).min()
        assert isinstance(cut, datetime)
        cutoff = cut
    else:
        early, late = events.filter(pl.col(TIME) < cutoff), events.filter(pl.col(TIME) >= cutoff)
    if early.is_empty() or late.is_empty():
        raise ConfigError("--cutoff", f"{cutoff} leaves no events on one side of the log")
    return early, late, cutoff


def ceiling(early: pl.DataFrame, late: pl.DataFrame) -> dict[str, float]:
    known = late.join(early.select(USER).unique(), on=USER, how="semi").height
    return {
        "known_users": known / late.height,
        "known_pairs": known_pairs(early, late),
    }


def one_percent(n_candidates: int) -> int:
    return max(1, math.ceil(ONE_PERCENT * n_candidates))


def allowed(excluded: IntArray, n_users: int, n_rows: int) -> IntArray:
    """Per row, the candidates not excluded for it."""
    return n_users - np.bincount(excluded // n_users, minlength=n_rows).astype(np.int64)


def random_expected(
    relevant: IntArray, allowed: IntArray, ks: tuple[int, ...]
) -> dict[str, FloatArray]:
    """`quality.per_product` in expectation over uniformly random rankings, per row.

    With A allowed candidates of which T are relevant, each of the first
    m = min(k, A) ranks holds a relevant user with probability T / A, so
    E[hits] = m T / A, E[DCG] = T / A x sum of the first m discounts, and
    P(no hit) = C(A - T, m) / C(A, m). Rows without a relevant user are dropped.
    """
    keep = relevant > 0
    t, a = relevant[keep].astype(np.float64), allowed[keep].astype(np.float64)
    discount = 1.0 / np.log2(np.arange(max(ks)) + 2.0)
    out: dict[str, FloatArray] = {}
    for k in ks:
        m = np.minimum(k, a)
        cumulative = np.concatenate([[0.0], np.cumsum(discount[:k])])
        ideal = cumulative[np.minimum(t, k).astype(np.int64)]
        with np.errstate(invalid="ignore"):  # gammaln(<= 0) = inf where a hit is certain
            log_miss = (
                special.gammaln(a - t + 1)
                - special.gammaln(a - t - m + 1)
                - special.gammaln(a + 1)
                + special.gammaln(a - m + 1)
            )
        out[f"precision@{k}"] = m * t / a / k
        out[f"recall@{k}"] = m / a
        out[f"ndcg@{k}"] = t / a * cumulative[m.astype(np.int64)] / ideal
        out[f"hit_rate@{k}"] = np.where(a - t >= m, 1.0 - np.exp(log_miss), 1.0)
    return out


def concentration(ranking: IntArray, n_candidates: int) -> float:
    """Share of filled audience slots held by the 1% of candidates with the most slots."""
    slots = np.bincount(ranking[ranking >= 0])
    if not slots.sum():
        return 0.0
    top = np.sort(slots)[::-1][: one_percent(n_candidates)]
    return float(top.sum() / slots.sum())


def subset(codes: IntArray, rows: IntArray, n_users: int, n_rows: int) -> IntArray:
    """Codes row * n_users + user of the given (sorted) rows, renumbered 0..len(rows)-1."""
    new = np.full(n_rows, -1, dtype=np.int64)
    new[rows] = np.arange(rows.size)
    mapped = new[codes // n_users]
    return mapped[mapped >= 0] * n_users + codes[mapped >= 0] % n_users


def audience_ranking(audiences: pl.DataFrame, task: cf.Task, n: int) -> IntArray:
    """`build`'s (product_id, rank, user_id) rows as the task's (rows x n) ranking."""
    coded = task.index.codes(audiences.filter(pl.col("rank") <= n))
    row_of = np.full(task.index.products.len(), -1, dtype=np.int64)
    row_of[task.rows] = np.arange(task.rows.size)
    row = row_of[coded.get_column("p").to_numpy()]
    rank = coded.get_column("rank").to_numpy().astype(np.int64) - 1
    user = coded.get_column("u").to_numpy()
    out = np.full((task.rows.size, n), -1, dtype=np.int64)
    out[row[row >= 0], rank[row >= 0]] = user[row >= 0]
    return out


def _aligned(users: pl.Series, scores: pl.LazyFrame) -> FloatArray:
    """Scores in the task's user order (users without a score last)."""
    frame = pl.DataFrame({USER: users}).join(
        scores.select(USER, "score").collect(), on=USER, how="left", maintain_order="left"
    )
    return frame.get_column("score").fill_null(-np.inf).to_numpy().astype(np.float64)


class ModelScores:
    """Task (a) per model: per-product metrics at depth N on every evaluated product and
    at the 1% depth on a seeded sample of them (the same sample for every model)."""

    def __init__(self, task: cf.Task, n: int, seed: int) -> None:
        self.task, self.n, self.seed = task, n, seed
        self.k1 = one_percent(task.n_users)
        rows = task.rows.size
        rng = np.random.default_rng(seed)
        size = min(ONE_PERCENT_PRODUCTS, rows)
        self.sample = np.sort(rng.choice(rows, size, replace=False)).astype(np.int64)
        self.excluded_1 = subset(task.excluded, self.sample, task.n_users, rows)
        self.truth_1 = quality.Truth(
            codes=subset(task.truth.codes, self.sample, task.n_users, rows),
            n_users=task.n_users,
            counts=task.truth.counts[self.sample],
        )
        self.per: dict[str, dict[str, FloatArray]] = {}
        self.per_1: dict[str, dict[str, FloatArray]] = {}
        self.shape: dict[str, dict[str, Any]] = {}
        self.skipped: dict[str, str] = {}

    def _one_percent(self, per: dict[str, FloatArray]) -> dict[str, FloatArray]:
        k = self.k1
        return {"hits@1%": per[f"hit_rate@{k}"], "recall@1%": per[f"recall@{k}"]}

    def add(self, name: str, ranking: IntArray, ranking_1: IntArray | None = None) -> None:
        """Score a (rows x N) ranking, and optionally a (sample x k1) one."""
        self.per[name] = quality.per_product(ranking, self.task.truth, (self.n,))
        self.shape[name] = {
            "user_coverage": quality.user_coverage(ranking, self.task.n_users),
            "concentration": concentration(ranking, self.task.n_users),
        }
        if ranking_1 is not None:
            per_1 = quality.per_product(ranking_1, self.truth_1, (self.k1,))
            self.per_1[name] = self._one_percent(per_1)

    def add_random(self) -> None:
        """Random's metrics in expectation; its coverage and concentration from one draw."""
        task = self.task
        draw = baselines.random(task.n_users, task.excluded, task.rows.size, self.n, self.seed)
        self.add("random", draw)
        free = allowed(task.excluded, task.n_users, task.rows.size)
        self.per["random"] = random_expected(task.truth.counts, free, (self.n,))
        expected_1 = random_expected(self.truth_1.counts, free[self.sample], (self.k1,))
        self.per_1["random"] = self._one_percent(expected_1)

    def add_global(self, name: str, score: FloatArray) -> None:
        task = self.task
        self.add(
            name,
            baselines.ranked(score, task.excluded, task.rows.size, self.n),
            baselines.ranked(score, self.excluded_1, self.sample.size, self.k1),
        )

    def _lifts(
        self, per: dict[str, FloatArray], random: dict[str, FloatArray]
    ) -> dict[str, dict[str, float | None]]:
        return {m: metrics.lift_ci(v, random[m], self.seed) for m, v in per.items()}

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, per in self.per.items():
            out[name] = {
                "metrics": metrics.summarize(per, self.seed),
                "lift_over_random": self._lifts(per, self.per["random"]),
                **self.shape[name],
            }
            if name in self.per_1:
                out[name]["one_percent"] = {
                    "metrics": metrics.summarize(self.per_1[name], self.seed),
                    "lift_over_random": self._lifts(self.per_1[name], self.per_1["random"]),
                }
        return out | {name: {"skipped": why} for name, why in self.skipped.items()}


def favoured(
    per: dict[str, dict[str, FloatArray]], metric: str, candidates: tuple[str, ...], seed: int
) -> dict[str, Any]:
    """The candidate with the highest mean metric, and its paired gain over the runner-up."""
    ranked = sorted(
        (c for c in candidates if c in per), key=lambda c: -float(per[c][metric].mean())
    )
    if not ranked:
        return {"metric": metric, "best": None}
    out: dict[str, Any] = {
        "metric": metric,
        "order": [{"model": c, "mean": float(per[c][metric].mean())} for c in ranked],
        "best": ranked[0],
    }
    if len(ranked) > 1:
        gain = metrics.mean_ci(per[ranked[0]][metric] - per[ranked[1]][metric], seed)
        out |= {"runner_up": ranked[1], "gain_over_runner_up": gain, "clear": gain["ci95_low"] > 0}
    return out


def hybrid_differences(
    per: dict[str, dict[str, FloatArray]], metric: str, seed: int
) -> dict[str, Any]:
    """The hybrid audiences' `metric` minus ALS's and the fitted audiences', product by
    product (the same products), with paired bootstrap intervals."""
    mine = per.get("audiences_hybrid")
    if mine is None:
        return {}
    return {
        f"audiences_hybrid - {other}": {"metric": metric}
        | metrics.mean_ci(mine[metric] - per[other][metric], seed)
        for other in ("als", "audiences_fitted")
        if other in per
    }


def _binomial_lift(k: int, n: int, k_all: int, n_all: int, seed: int) -> dict[str, float | None]:
    """(k / n) / (k_all / n_all) with a percentile interval over 1000 bootstrap resamples.

    Resampling 0/1 outcomes with replacement gives a Binomial(n, k / n) count, so
    the two samples are drawn as binomials (independently: the top N are a subset
    of all candidates, whose positive covariance this ignores, widening the interval).
    """
    if k_all == 0:
        return {"lift": None, "ci95_low": None, "ci95_high": None}
    rng = np.random.default_rng(seed)
    top = rng.binomial(n, k / n, 1000) / n
    base = rng.binomial(n_all, k_all / n_all, 1000) / n_all
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample with no active user
        low, high = np.percentile(top / base, [2.5, 97.5])
    return {
        "lift": (k / n) / (k_all / n_all),
        "ci95_low": float(low),
        "ci95_high": float(high) if np.isfinite(high) else None,
    }


def activity_targeting(
    scores: dict[str, FloatArray], active: NDArray[np.bool_], ns: tuple[int, ...], seed: int
) -> dict[str, Any]:
    """Task (b): precision@N of each global score's top N users, and lift over the base rate."""
    n_all, k_all = active.size, int(active.sum())
    ci = binomtest(k_all, n_all).proportion_ci(method="exact") if n_all else None
    base = {
        "mean": k_all / max(n_all, 1),
        "ci95_low": float(ci.low) if ci else 0.0,
        "ci95_high": float(ci.high) if ci else 0.0,
    }
    one = {"lift": 1.0, "ci95_low": 1.0, "ci95_high": 1.0}
    models: dict[str, Any] = {"random": {f"@{n}": {"precision": base, "lift": one} for n in ns}}
    for name, score in scores.items():
        order = np.lexsort((np.arange(score.size), -score))
        entry = {}
        for n in ns:
            outcome = active[order[:n]].astype(np.float64)
            entry[f"@{n}"] = {
                "users": int(outcome.size),
                "precision": metrics.mean_ci(outcome, seed),
                "lift": _binomial_lift(int(outcome.sum()), outcome.size, k_all, n_all, seed),
            }
        models[name] = entry
    return {
        "candidates": n_all,
        "active_after_cutoff": k_all,
        "base_rate": base,
        "ns": list(ns),
        "models": models,
        "skipped": {
            "als and audiences_*": "product-specific rankings: no single global order of users"
        },
    }


def _scorers(
    early: Log, weights: dict[str, float], cutoff: datetime, progress: Progress
) -> tuple[dict[str, Engagement], dict[str, str]]:
    """The engagement per scorer fitted on the early events; failures by name."""
    out, failed = {}, {}
    for model in MODELS:
        progress(f"scoring users at the cutoff ({model})")
        try:
            out[model] = engagement(early.events, weights, model, cutoff)
        except ConfigError as e:
            failed[model] = str(e)
    return out, failed


def _als(
    task: cf.Task, tuning: dict[str, Any], models: ModelScores, seed: int, progress: Progress
) -> dict[str, Any]:
    """The analysis's ALS baseline: tuned inside the early period (`tuning`, from
    `cf.tune`), fitted on all of it."""
    if tuning["best"] is None:
        models.skipped["als"] = tuning["skipped"]
        return {"skipped": tuning["skipped"]}
    progress("fitting ALS on the early events and ranking users")
    model = cf.fit(task.items, tuning["best"], seed)
    models.add(
        "als",
        cf.rank(model, task.items, task.rows, models.n, task.repeat),
        cf.rank(model, task.items, task.rows[models.sample], models.k1, task.repeat),
    )
    return {
        "method": "audience.model.cf.tune: factors x alpha, then regularization, "
        "by NDCG@10 on the last 20% (by time) of the pre-cutoff events",
        "chosen": tuning["best"].as_dict(),
        "validation_products": tuning["validation_products"],
        "trials": tuning["trials"],
    }


def _split_summary(
    early: pl.DataFrame, late: pl.DataFrame, cutoff: datetime, given: bool
) -> dict[str, Any]:
    early_users, late_users = early.select(USER).unique(), late.select(USER).unique()
    return {
        "cutoff": cutoff.isoformat(),
        "rule": "given (--cutoff)"
        if given
        else "time of the event at the 80th percentile of event times "
        "(audience.data.stats.time_split)",
        "early_events": early.height,
        "late_events": late.height,
        "early_users": early_users.height,
        "late_users": late_users.height,
        "returning_users": early_users.join(late_users, on=USER, how="semi").height,
    }


def _setup(task: cf.Task, late: pl.DataFrame, n: int) -> dict[str, Any]:
    late_products = late.get_column(PRODUCT).unique()
    unknown = int((~late_products.is_in(task.index.products.implode())).sum())
    return {
        "mode": "repeat" if task.repeat else "new pairs",
        "candidate_users": task.n_users,
        "n": n,
        "late_products": late_products.len(),
        "late_products_unknown_at_cutoff": unknown,
        "known_late_products_without_relevant_user": late_products.len() - unknown - task.rows.size,
        "evaluated_products": int(task.rows.size),
        "relevant_pairs": int(task.truth.codes.size),
    }


def _one_percent_setup(models: ModelScores) -> dict[str, Any]:
    return {
        "k_1pct": models.k1,
        "one_percent": {
            "products": int(models.sample.size),
            "sampling": f"a seeded sample of min({ONE_PERCENT_PRODUCTS}, evaluated) products, "
            "the same for every model, so each ranks k_1pct users for fewer products",
            "models": list(models.per_1),
            "audiences_*": "ranked to the 1% depth on demand, as segments are "
            "(audience.model.kernels.scores), for the sampled products only",
        },
    }


def deep_ranking(
    linked: Affinity, engaged: Engagement, task: cf.Task, sample: IntArray, k: int
) -> IntArray:
    """The audiences' top k users (task user codes) for the task rows `sample`, ranked to
    that depth on demand as segments are (`segments.best_users`): the stored lists'
    ranking."""
    if not linked.users.equals(task.index.users):
        raise ValueError("the audiences and the task must number the same users")
    ids = task.index.products.gather(task.rows[sample])
    codes = linked.ids.search_sorted(ids).to_numpy().astype(np.int64)
    return segments.best_users(linked, engaged, codes, k)


def _product_audiences(
    task: cf.Task,
    log: Log,
    early: pl.DataFrame,
    scored: dict[str, Engagement],
    failed: dict[str, str],
    global_scores: dict[str, FloatArray],
    weights: dict[str, float],
    n: int,
    seed: int,
    progress: Progress,
) -> tuple[ModelScores, dict[str, Any]]:
    """Task (a) for every model: its scores and the ALS tuning (or why ALS was skipped)."""
    models = ModelScores(task, n, seed)
    models.add_random()
    for name, score in global_scores.items():
        models.add_global(name, score)
    repeat = task.repeat
    configs = {
        "": AudienceConfig(n=n, repeat=repeat),
        "_no_affinity": replace(NO_AFFINITY, n=n, repeat=repeat),
    }
    if repeat:  # today's default mode on the same task: which mode should train use?
        configs["_no_repeat"] = AudienceConfig(n=n)
    progress("relating products on the early events")
    linked = {suffix: affinity(log, weights, c) for suffix, c in configs.items()}
    for name in MODELS:
        for suffix in configs:
            label = f"audiences_{name}{suffix}"
            if name in failed:
                models.skipped[label] = failed[name]
                continue
            progress(f"building product audiences ({label}), and at the 1% depth")
            built = build(linked[suffix], scored[name]).rows()
            deep = deep_ranking(linked[suffix], scored[name], task, models.sample, models.k1)
            models.add(label, audience_ranking(built, task, n), deep)
    models.skipped |= failed
    tuning = cf.tune(early, weights, seed, progress, task.repeat)
    _hybrid(log, tuning, linked[""], scored, models, weights, seed, progress)
    return models, _als(task, tuning, models, seed, progress)


def _hybrid(
    log: Log,
    tuning: dict[str, Any],
    linked: Affinity,
    scored: dict[str, Engagement],
    models: ModelScores,
    weights: dict[str, float],
    seed: int,
    progress: Progress,
) -> None:
    """The fitted audiences with the collaborative term on (`audience train --cf on`), its
    weight chosen on the last 20% of the pre-cutoff events, ALS's parameters as tuned
    for the ALS baseline on the same slice."""
    label = "audiences_hybrid"
    why = (
        "repeat mode: the collaborative term proposes only users new to a product"
        if models.task.repeat
        else tuning.get("skipped") or models.skipped.get("fitted")
    )
    if why:
        models.skipped[label] = why
        return
    progress(f"building product audiences ({label}): the collaborative term on")

    def engage(events: pl.DataFrame, as_of: datetime) -> Engagement:
        return engagement(events, weights, "fitted", as_of)

    try:
        cut = hybrid.sliced(log, weights, tuning["best"], seed)
        made = hybrid.fit(log, weights, linked, engage, cut, progress)
    except ConfigError as exc:  # e.g. a slice too short for the fitted scorer
        models.skipped[label] = str(exc)
        return
    mixed = made.applied(linked)
    built = build(mixed, scored["fitted"]).rows()
    deep = deep_ranking(mixed, scored["fitted"], models.task, models.sample, models.k1)
    models.add(label, audience_ranking(built, models.task, models.n), deep)
    models.shape[label] |= {"collaborative_term": made.as_dict()}


#: The Spark engine's hybrid on a canonical log and catalog: its stored lists
#: (product_id, rank, user_id) and its manifest's `cf` (`spark.train.hybrid_lists`).
SparkHybrid = Callable[[pl.DataFrame, pl.DataFrame | None], tuple[pl.DataFrame, dict[str, Any]]]


def _spark_hybrid(
    models: ModelScores,
    early: pl.DataFrame,
    catalog: pl.DataFrame | pl.LazyFrame | None,
    spark_hybrid: SparkHybrid,
    progress: Progress,
) -> None:
    """`audiences_hybrid_spark`: the Spark engine's `--cf on` lists trained on the same
    pre-cutoff events, judged on the same task as the Polars engine's hybrid (its ALS is
    MLlib's, so the two are compared by their metrics, not row by row)."""
    label = "audiences_hybrid_spark"
    if models.task.repeat:
        models.skipped[label] = "repeat mode: the collaborative term proposes only new users"
        return
    progress(f"building product audiences ({label}): the Spark engine, collaborative term on")
    listed = catalog.collect() if isinstance(catalog, pl.LazyFrame) else catalog
    try:
        lists, said = spark_hybrid(early, listed)
    except ConfigError as exc:  # e.g. a validation slice with nothing to judge
        models.skipped[label] = str(exc)
        return
    models.add(label, audience_ranking(lists, models.task, models.n))
    models.shape[label] |= {"collaborative_term": said}


def backtest(
    events: pl.DataFrame,
    catalog: pl.DataFrame | pl.LazyFrame | None,
    weights: dict[str, float],
    n: int = 10,
    activity_ns: tuple[int, ...] = ACTIVITY_NS,
    cutoff: datetime | None = None,
    seed: int = 0,
    repeat: bool = False,
    progress: Progress = quiet,
    spark_hybrid: SparkHybrid | None = None,
) -> dict[str, Any]:
    """Both tasks for every model, trained before `cutoff` and judged after it. A task
    with nothing to judge is reported with the reason (`skipped`), and the other runs.
    With `repeat`, product audiences keep a product's past users as candidates and count
    their return as a hit (`audience train --repeat`). `spark_hybrid` (`audience evaluate
    --engine spark`) adds the Spark engine's hybrid, judged by its stored lists."""
    if n < 1 or min(activity_ns, default=0) < 1:
        raise ConfigError("--n/--activity-n", "every N must be at least 1")
    given = cutoff is not None
    early, late, cutoff = split(events, cutoff)
    progress(f"cutoff {cutoff.isoformat()}: setting up the product -> users task")
    task = cf.Task(early, late, weights, repeat=repeat)
    log = coded(early, catalog, weights)
    scored, failed = _scorers(log, weights, cutoff, progress)
    global_scores = {"popularity": task.activity.astype(np.float64)}
    for name, engaged in scored.items():
        global_scores[name] = _aligned(task.index.users, log.named(engaged.scores.lazy()))
    task_a: dict[str, Any] = {"setup": _setup(task, late, n)}
    per: dict[str, dict[str, FloatArray]] = {}
    if task.empty is None:
        models, als = _product_audiences(
            task, log, early, scored, failed, global_scores, weights, n, seed, progress
        )
        if spark_hybrid is not None:
            _spark_hybrid(models, early, catalog, spark_hybrid, progress)
        task_a["setup"] |= _one_percent_setup(models)
        task_a |= {"als_tuning": als}
        progress("bootstrapping confidence intervals")
        task_a["models"], per = models.summary(), models.per
        task_a["hybrid_differences"] = hybrid_differences(per, f"ndcg@{n}", seed)
    else:
        progress(f"product audiences not judged: {task.empty}")
        task_a["skipped"] = task.empty
    active = task.index.users.is_in(late.get_column(USER).unique().implode()).to_numpy()
    candidates = tuple(m for m in per if m != "random")
    train_choices = (
        *(f"audiences_{m}{s}" for m in MODELS for s in ("", "_no_repeat")),
        "audiences_hybrid",  # --cf on, or auto where the log supports CF
    )
    return {
        "split": _split_summary(early, late, cutoff, given),
        "ceiling": ceiling(early, late),
        "task_a": task_a,
        "task_b": activity_targeting(global_scores, active, activity_ns, seed),
        "favoured": {
            "overall": favoured(per, f"ndcg@{n}", candidates, seed),
            "train_default": favoured(per, f"ndcg@{n}", train_choices, seed),
        },
        "definitions": DEFINITIONS,
        "seed": seed,
    }
