"""Per-user engagement features on Spark: `audience.model.features.user_features`, the
same columns and definitions, in one aggregation by user."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from itertools import chain
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as fn

from audience.data.schema import EVENT, PRODUCT, PURCHASED, TIME, USER
from audience.model.features import DAY_US, RECENCY_DAYS

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def micros(moment: datetime) -> int:
    """`moment` in microseconds since the epoch, exactly (no float on the way)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def moment(us: int) -> datetime:
    """`micros`' inverse, in UTC (PySpark hands timestamps over in the local zone)."""
    return _EPOCH + timedelta(microseconds=us)


def literal_map(values: dict[str, Any]) -> Column:
    """A map column of `values`' keys to their values."""
    return fn.create_map(*chain.from_iterable((fn.lit(k), fn.lit(v)) for k, v in values.items()))


def event_weight(weights: dict[str, float]) -> Column:
    """Each event's weight by its type (0 for a type without one)."""
    return fn.coalesce(literal_map(weights)[fn.col(EVENT)], fn.lit(0.0))


def user_features(events: DataFrame, as_of: datetime, weights: dict[str, float]) -> DataFrame:
    """One row per user with an event before `as_of`, sorted by user_id: the Polars
    engine's columns, in its order."""
    at = fn.lit(micros(as_of))
    time = fn.unix_micros(fn.col(TIME))
    days_ago = (at - time).cast("double") / DAY_US
    before = events.where(time < at).select(
        USER,
        PRODUCT,
        fn.col(EVENT),
        time.alias("us"),
        fn.to_date(fn.col(TIME)).alias("day"),
        event_weight(weights).alias("weight"),
        days_ago.alias("days_ago"),
    )
    span_days = fn.floor((fn.max("us") - fn.min("us")) / DAY_US)
    features = before.groupBy(USER).agg(
        fn.count(fn.lit(1)).alias("interactions"),
        fn.countDistinct(PRODUCT).alias("unique_products"),
        fn.avg("weight").alias("mean_weight"),
        (fn.count(fn.lit(1)) / (span_days + 1)).alias("per_active_day"),
        fn.min("days_ago").alias("days_since_last"),
        fn.max("days_ago").alias("days_since_first"),
        fn.countDistinct("day").alias("active_days"),
        fn.sum((fn.col("days_ago") <= 7).cast("long")).alias("events_7d"),
        fn.sum((fn.col("days_ago") <= 30).cast("long")).alias("events_30d"),
        fn.avg((fn.col(EVENT) == PURCHASED).cast("double")).alias("purchase_share"),
    )
    recency = fn.exp(-fn.col("days_since_last") / RECENCY_DAYS)
    return features.withColumn("recency", recency).orderBy(USER)
