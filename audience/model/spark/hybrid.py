"""The collaborative term on Spark (`audience.model.hybrid` defines it): Spark MLlib's
implicit-feedback ALS in place of `implicit`'s, the term's weight chosen on the same
validation slice, the same way.

- `--cf auto`'s cheap criteria (30-day retention, the ceiling) computed by Spark, as
  `hybrid.criteria` defines them, and judged by the same `hybrid.judged`.
- The validation slice: the log's last 20% of events by time (`time_split`'s cut). ALS
  is fitted on the first 80% with each of `cf.QUICK`'s parameters and judged by
  NDCG@10 on at most `cf.VALIDATION_PRODUCTS` of the slice's products; the model is
  trained on the first 80% like the real one, and each of `hybrid.WEIGHTS` ranks at
  most `hybrid.WEIGHT_PRODUCTS` of them over every user (`dense.ranked`).
- The whole log's ALS: MLlib has no warm start, so it is fitted from its own random
  start, in the parameters' full iterations.

The samples of products are seeded draws of the products' places (`fitted.sampled`), so
only their count, never the products, comes to the driver; the NDCG of each sampled
product (at most `cf.VALIDATION_PRODUCTS` rows) and the half point do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
from pyspark.sql import DataFrame
from pyspark.sql import functions as fn

from audience.data.schema import PRODUCT, TIME, USER
from audience.errors import ConfigError
from audience.model import cf, fitted
from audience.model.audiences import AudienceConfig
from audience.model.hybrid import CANDIDATES, DAY_US, WEIGHT_PRODUCTS, WEIGHTS
from audience.model.spark import affinity, codes, dense, scoring
from audience.model.spark.audiences import Factors, evidence, rounded
from audience.model.spark.features import moment
from audience.model.spark.session import cut

Progress = Callable[[str], None]
#: The share of events before the validation slice (`data.stats.time_split`'s).
SHARE = 0.8


def criteria(events: DataFrame) -> dict[str, float]:
    """`hybrid.criteria` of a canonical log's events on Spark: the ceiling at
    `time_split`'s cut and the 30-day retention."""
    t = fn.unix_micros(fn.col(TIME))
    timed = events.select(fn.col(USER).alias("u"), fn.col(PRODUCT).alias("p"), t.alias("t"))
    at = _cut(timed)
    if at is None:
        return {"retention_30d": 0.0, "ceiling": 0.0}
    early = timed.where(fn.col("t") < at)
    late = timed.where(fn.col("t") >= at)
    users = early.select("u").distinct().withColumn("known_u", fn.lit(True))
    products = early.select("p").distinct().withColumn("known_p", fn.lit(True))
    known = (
        late.join(users, "u", "left")
        .join(products, "p", "left")
        .agg(fn.avg((fn.col("known_u") & fn.col("known_p")).isNotNull().cast("double")))
    )
    day = timed.select("u", fn.expr(f"t div {DAY_US}").alias("day"))
    first = day.groupBy("u").agg(fn.min("day").alias("first"))
    after = (
        day.join(first, "u")
        .where(fn.col("day") > fn.col("first"))
        .groupBy("u")
        .agg(fn.min("day").alias("next"))
    )
    last = day.agg(fn.max("day")).first()[0]  # type: ignore[index]
    users_back = (
        first.join(after, "u", "left")
        .where(fn.col("first") <= last - 30)
        .agg(
            fn.count(fn.lit(1)).alias("eligible"),
            fn.sum((fn.col("next") - fn.col("first") <= 30).cast("long")).alias("retained"),
        )
        .first()
    )
    ceiling = known.first()[0]  # type: ignore[index]
    assert users_back is not None
    eligible, retained = users_back["eligible"], users_back["retained"] or 0
    return {
        "retention_30d": retained / eligible if eligible else 0.0,
        "ceiling": float(ceiling or 0.0),
    }


def _cut(timed: DataFrame) -> int | None:
    """`time_split`'s cut (micros): the time of the event at the `SHARE` quantile of
    event times (None: no events)."""
    count = timed.count()
    if count == 0:
        return None
    at = min(int(SHARE * count), count - 1)
    placed = codes.placed(timed.select("t"), "i", [fn.col("t")])
    return int(placed.where(fn.col("i") == at).first()["t"])  # type: ignore[index]


def als(pairs: DataFrame, params: cf.AlsParams, seed: int) -> Factors:
    """MLlib's implicit ALS on the (p, u, w) confidences, products as its "users" (as
    `cf.fit` lays out the matrix): the products' and the users' factors."""
    from pyspark.ml.recommendation import ALS

    fitted_model = ALS(
        rank=params.factors,
        maxIter=params.iterations,
        regParam=params.regularization,
        alpha=params.alpha,
        implicitPrefs=True,
        userCol="p",
        itemCol="u",
        ratingCol="w",
        seed=seed,
    ).fit(pairs.select(fn.col("p").cast("int"), fn.col("u").cast("int"), fn.col("w").cast("float")))
    products = fitted_model.userFactors.select(
        fn.col("id").cast("long").alias("p"), fn.col("features").alias("x")
    )
    users = fitted_model.itemFactors.select(
        fn.col("id").cast("long").alias("u"), fn.col("features").alias("x")
    )
    return Factors(cut(products), cut(users))


@dataclass(frozen=True)
class Made:
    """The collaborative term as trained on Spark: ALS's parameters, the weight and how
    it was chosen, the half point and the whole log's factors (None when the weight is 0)."""

    params: cf.AlsParams
    weight: float
    half: float | None
    factors: Factors | None
    validation: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "als": self.params.as_dict(),
            "solver": "Spark MLlib, implicit feedback",
            "whole_log": {
                "iterations": self.params.iterations,
                "start": "MLlib's random start (it has no warm start)",
            },
            "weight": self.weight,
            "half": self.half,
            "half_from_top_users": CANDIDATES,
            "validation": self.validation,
        }


def fit(
    events: DataFrame,
    catalog: DataFrame | None,
    weights: dict[str, float],
    model: str,
    config: AudienceConfig,
    pairs: DataFrame,
    seed: int = 0,
    progress: Progress | None = None,
) -> Made:
    """The collaborative term of the log `events` (canonical), whose (p, u, w) `pairs`
    are the whole log's confidences: ALS's parameters and the term's weight chosen on
    the validation slice, then ALS on the whole log when the weight is above 0."""
    say = progress or (lambda _: None)
    timed = events.withColumn("t", fn.unix_micros(fn.col(TIME)))
    at = _cut(timed)
    assert at is not None  # the train refuses an empty log
    fit_part = timed.where(fn.col("t") < at).drop("t")
    validation = timed.where(fn.col("t") >= at).drop("t")
    early = codes.coded(fit_part, catalog, weights)
    linked = affinity.terms(early, weights, config)
    seen = linked.touched.select(fn.col("q").alias("p"), "u", "w")
    tested = (
        validation.join(early.users, USER)
        .join(early.products.select(PRODUCT, "p"), PRODUCT)
        .select("p", "u")
        .distinct()
    )
    relevant = tested.join(seen, ["p", "u"], "left_anti").transform(cut)
    rows = _sample(relevant.select("p").distinct(), cf.VALIDATION_PRODUCTS, seed)
    if rows.isEmpty():
        raise ConfigError(
            "cf", "the validation slice has nothing to judge: no product has a user new to it"
        )
    params, factors, trials = _search(seen, rows, relevant, seed, say)
    say("choosing the collaborative term's weight on the validation slice")
    last = fit_part.agg(fn.max(fn.unix_micros(fn.col(TIME)))).first()[0]  # type: ignore[index]
    try:
        engaged = scoring.engagement(
            fit_part, weights, model, moment(last) + timedelta(microseconds=1)
        )
    except ConfigError as exc:  # e.g. too short a slice for the fitted scorer's horizons
        raise ConfigError(
            "cf", f"the validation slice's model cannot be trained ({exc}): use --cf off"
        ) from None
    judged = _sample(rows, WEIGHT_PRODUCTS, seed)
    half = _half(judged.join(factors.products, "p"), factors.users, seen)
    e = engaged.components.join(early.users, USER).select("u", rounded(fn.col("score")).alias("e"))
    active = early.products.where(fn.col("interactions") > 0).select("p", "c")
    top = dense.ranked(
        judged.join(active, "p").join(factors.products, "p"),
        e.join(factors.users, "u", "left"),
        cf.K,
        banned=linked.excluded,
        weights=WEIGHTS,
        cf_half=half,
        category=linked.category,
        evidence=evidence(active.join(judged, "p", "left_semi"), linked),
        co=config.co,
        half=config.half,
    )
    by_weight = _ndcg(top, relevant, judged, len(WEIGHTS))
    chosen = max(range(len(WEIGHTS)), key=lambda w: (by_weight[w], -WEIGHTS[w]))
    said = {
        "als_trials": trials,
        "slice": {"cut": str(moment(at)), "products": judged.count()},
        f"ndcg@{cf.K}_by_weight": {f"{w:g}": by_weight[i] for i, w in enumerate(WEIGHTS)},
    }
    weight = WEIGHTS[chosen]
    if weight == 0.0:
        return Made(params, 0.0, None, None, said)
    say("fitting ALS on the whole log for the collaborative term")
    whole = als(pairs, params, seed)
    sampled = _sample(whole.products.select("p"), WEIGHT_PRODUCTS, seed)
    half_whole = _half(sampled.join(whole.products, "p"), whole.users, pairs.select("p", "u"))
    return Made(params, weight, half_whole, whole, said)


def _search(
    seen: DataFrame, rows: DataFrame, relevant: DataFrame, seed: int, say: Progress
) -> tuple[cf.AlsParams, Factors, list[dict[str, Any]]]:
    """ALS's quick search (`cf.QUICK`) on the validation slice: each trial fitted on the
    slice's first part (`seen`: p, u, w), its top K new users of the products `rows`
    judged against the `relevant` pairs. The best trial's parameters and factors, and
    every trial's NDCG@K."""
    trials, best = [], None
    say(f"tuning ALS on the validation slice (Spark MLlib): {[p.as_dict() for p in cf.QUICK]}")
    for params in cf.QUICK:
        factors = als(seen, params, seed)
        top = _als_top(rows.join(factors.products, "p"), factors.users, seen, cf.K)
        score = _ndcg(top, relevant, rows, 1)[0]
        trials.append(params.as_dict() | {f"validation_ndcg@{cf.K}": score})
        if best is None or score > best[1]:
            best = (params, score, factors)
    assert best is not None
    return best[0], best[2], trials


def _sample(frame: DataFrame, size: int, seed: int) -> DataFrame:
    """`frame` (distinct p) or a seeded draw of `size` of its rows by p order
    (`fitted.sampled`): only the count and the drawn places pass the driver."""
    count = frame.count()
    if count <= size:
        return frame.transform(cut)
    placed = codes.placed(frame, "i", [fn.col("p")])
    spark = frame.sparkSession
    drawn = spark.createDataFrame([(int(i),) for i in fitted.sampled(count, size, seed)], "i long")
    return placed.join(drawn, "i").drop("i").transform(cut)


def _half(products: DataFrame, users: DataFrame, seen: DataFrame) -> float:
    """The term's half point (`hybrid.half_of`): the median ALS score of the
    `CANDIDATES` best users (scores above 0, new to the product) of each product."""
    top = _als_top(products, users, seen, CANDIDATES)
    found = top.where(fn.col("s") > 0).agg(fn.median("s")).first()[0]  # type: ignore[index]
    return float(found) if found is not None else 1.0


def _als_top(products: DataFrame, users: DataFrame, seen: DataFrame, n: int) -> DataFrame:
    """Each of `products`' (p, x) n best `users` (u, x) by ALS's score alone, above 0,
    none of its `seen` (p, u) pairs: ALS's own top n (`cf.rank`)."""
    return dense.ranked(
        products.withColumn("c", fn.lit(None).cast("long")),
        users.withColumn("e", fn.lit(0.0)),
        n,
        banned=seen.select("p", "u"),
        alone=True,
    )


def _ndcg(top: DataFrame, relevant: DataFrame, rows: DataFrame, weights: int) -> list[float]:
    """Mean NDCG@K (`quality.per_product`'s) of each of the `weights` rankings in `top`
    over the products `rows`, against the `relevant` (p, u) pairs: a row per product and
    weight comes to the driver."""
    gains = (
        top.join(relevant, ["p", "u"])
        .groupBy("w", "p")
        .agg(fn.sum(1.0 / fn.log2(fn.col("rank") + 1.0)).alias("dcg"))
    )
    wanted = relevant.join(rows, "p", "left_semi").groupBy("p").agg(fn.count(fn.lit(1)).alias("m"))
    found = gains.join(wanted, "p").collect()
    discount = 1.0 / np.log2(np.arange(cf.K) + 2.0)
    ideal = np.cumsum(discount)
    count = rows.count()
    sums = np.zeros(weights)
    for row in found:
        sums[row["w"]] += row["dcg"] / ideal[min(row["m"], cf.K) - 1]
    return [float(v / count) for v in sums]
