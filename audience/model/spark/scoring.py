"""Engagement scores on Spark: `audience.model.train.engagement`'s scorers, their
parameters found as the Polars engine finds them.

The seed scorer's min-max bounds are one aggregated row. The fitted scorer is fitted
on the driver (`FittedScorer.of_frames`, the Polars engine's own fit) from the labelled
features Spark computes for at most `fitted.MAX_USERS` users, a seeded sample beyond;
the scoring, one expression per user, runs on the executors."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import polars as pl
import pyarrow as pa
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as fn

from audience.data.schema import TIME, USER
from audience.errors import ConfigError
from audience.model.fitted import (
    LABEL,
    LOG_FEATURES,
    MAX_USERS,
    FittedScorer,
    fit_period,
    sampled,
)
from audience.model.scoring import SeedScorer
from audience.model.spark.codes import numbered
from audience.model.spark.features import micros, moment, user_features
from audience.model.spark.session import cut

MODELS = ("seed", "fitted")


@dataclass(frozen=True)
class Engaged:
    """`scoring.Engagement` on Spark: `components` (user_id, score, a `c_<name>` column
    per component), the raw `features` their reasons quote, the scorer's `params`."""

    components: DataFrame
    features: DataFrame
    params: dict[str, Any]


def engagement(
    events: DataFrame, weights: dict[str, float], model: str, as_of: datetime, seed: int = 0
) -> Engaged:
    """The engagement of every user with an event before `as_of`, sorted by user_id."""
    # Computed once: the scores, their reasons and the user_scores table all read them.
    features = user_features(events, as_of, weights).transform(cut)
    if model == "seed":
        scorer = SeedScorer()
        return Engaged(seed_scores(features, scorer), features, scorer.params())
    if model == "fitted":
        fitted = fit(events, weights, seed)
        return Engaged(fitted_scores(features, fitted), features, fitted.params())
    raise ConfigError("model", f"unknown model {model!r}; choose {' or '.join(MODELS)}")


def seed_scores(features: DataFrame, scorer: SeedScorer) -> DataFrame:
    """`SeedScorer.score`: each feature min-max normalised over the users (0.5 where it
    is constant), weighted."""
    names = list(scorer.weights)
    bounds = features.agg(
        *(fn.min(fn.col(n).cast("double")).alias(f"lo_{n}") for n in names),
        *(fn.max(fn.col(n).cast("double")).alias(f"hi_{n}") for n in names),
    ).first()
    assert bounds is not None
    terms = []
    for name, weight in scorer.weights.items():
        low, high = bounds[f"lo_{name}"], bounds[f"hi_{name}"]
        spread = high - low
        x = fn.col(name).cast("double")
        normal = (x - fn.lit(low)) / fn.lit(spread) if spread > 0 else fn.lit(0.5)
        terms.append((normal * weight).alias(f"c_{name}"))
    return _summed(features.select(USER, *terms), [f"c_{n}" for n in names], fn.lit(0.0))


def fit(
    events: DataFrame,
    weights: dict[str, float],
    seed: int = 0,
    horizon_days: float = 30.0,
    max_users: int = MAX_USERS,
) -> FittedScorer:
    """`FittedScorer.fit` of the Spark log: the labelled features of at most `max_users`
    users (a seeded sample beyond) collected to the driver and fitted there."""
    time = fn.unix_micros(fn.col(TIME))
    span = events.agg(
        fn.min(time).alias("first"), fn.max(time).alias("last"), fn.countDistinct(USER).alias("n")
    ).first()
    if span is None or span["n"] == 0:
        raise ConfigError("events", "the log is empty")
    t, end = fit_period(moment(span["first"]), moment(span["last"]), horizon_days)
    h = timedelta(days=horizon_days)
    users = int(span["n"])
    if users > max_users:  # the users the Polars engine samples (`fitted.sampled`)
        spark = SparkSession.getActiveSession()
        assert spark is not None
        places = spark.createDataFrame(pa.table({"place": sampled(users, max_users, seed)}))
        known = numbered(events.select(USER).distinct(), USER, "place")
        chosen = known.join(places, "place", "left_semi").select(USER)
        events = events.join(chosen, USER, "left_semi")
    train, valid = (_collected(_labelled(events, at, h, weights)) for at in (t, t + h))
    return FittedScorer.of_frames(train, valid, weights, horizon_days, (t, end), users, max_users)


def fitted_scores(features: DataFrame, scorer: FittedScorer) -> DataFrame:
    """`FittedScorer.score`: P(return within the horizon) and the log-odds terms."""
    terms = []
    for name, coefficient in scorer.coefficients.items():
        x = fn.col(name).cast("double")
        x = fn.log1p(x) if name in LOG_FEATURES else x
        terms.append(((x - scorer.mean[name]) / scorer.std[name] * coefficient).alias(f"c_{name}"))
    names = [f"c_{n}" for n in scorer.coefficients]
    logit = _summed(features.select(USER, *terms), names, fn.lit(scorer.intercept))
    return logit.select(USER, (1 / (1 + fn.exp(-fn.col("score")))).alias("score"), *names)


def _summed(frame: DataFrame, names: list[str], start: Column) -> DataFrame:
    """`frame` with score = start + the named columns, left to right, after user_id."""
    total = start
    for name in names:
        total = total + fn.col(name)
    return frame.select(USER, total.alias("score"), *names)


def _labelled(
    events: DataFrame, as_of: datetime, horizon: timedelta, weights: dict[str, float]
) -> DataFrame:
    """`fitted.labelled_features`: the features at `as_of` and whether the user had an
    event in [as_of, as_of + horizon)."""
    time = fn.unix_micros(fn.col(TIME))
    window = events.where((time >= micros(as_of)) & (time < micros(as_of + horizon)))
    back = window.select(USER).distinct().withColumn(LABEL, fn.lit(True))
    features = user_features(events, as_of, weights)
    labelled = features.join(back, USER, "left").fillna(False, subset=[LABEL])
    return labelled.orderBy(USER)


def _collected(frame: DataFrame) -> pl.DataFrame:
    """A bounded Spark frame on the driver, as Polars holds it."""
    found = pl.from_arrow(frame.toArrow())
    assert isinstance(found, pl.DataFrame)
    return found
