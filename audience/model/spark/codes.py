"""The log numbered on Spark as `audience.model.codes` numbers it: users and products
by id order (their codes are their places, as the artifact's tables hold them), event
types by name, categories of the products with an event by name."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as fn

from audience.data.schema import CATEGORY, DEFAULT_EVENT_WEIGHTS, EVENT, PRODUCT, USER
from audience.errors import ConfigError
from audience.model.audiences import MAX_EVENT_TYPES, NO_CATEGORY
from audience.model.spark.features import literal_map
from audience.model.spark.session import cut


@dataclass(frozen=True)
class Coded:
    """`events` with codes beside the ids: u, p, kind (the event type's code); `users`
    (user_id, u), `products` (product_id, p, category, interactions, c: the category's
    code, null when no product with an event has it), `categories` (c, category) and
    the event types by code."""

    events: DataFrame
    users: DataFrame
    products: DataFrame
    categories: DataFrame
    types: list[str]


def numbered(frame: DataFrame, key: str, code: str) -> DataFrame:
    """`frame` (distinct `key`s) with `code`: each key's place in key order."""
    return placed(frame, code, [fn.col(key)])


def placed(frame: DataFrame, code: str, order: list[Column], start: int = 0) -> DataFrame:
    """`frame` with `code`: each row's place in `order` (from `start`), counted by Spark
    per partition, never on one machine: the sorted rows keep their partition and their
    place in it (`monotonically_increasing_id`), and a row's code is its place plus the
    rows of the partitions before it (a count per partition reaches the driver)."""
    part, at_id = fn.spark_partition_id().alias("_part"), fn.monotonically_increasing_id()
    # Computed once: the counts and the codes must read the same rows.
    ordered: DataFrame = cut(frame.orderBy(*order).select("*", part, at_id.alias("_id")))
    counts = ordered.groupBy("_part").agg(
        fn.count(fn.lit(1)).alias("rows"), fn.min("_id").alias("first")
    )
    shifts, at = [], start
    for row in sorted(counts.collect(), key=lambda row: row["_part"]):
        shifts.append((row["_part"], at - row["first"]))
        at += row["rows"]
    shift = frame.sparkSession.createDataFrame(shifts, "_part int, shift long")
    placed_code = (fn.col("_id") + fn.col("shift")).alias(code)
    return ordered.join(fn.broadcast(shift), "_part").select(*frame.columns, placed_code)


def coded(events: DataFrame, catalog: DataFrame | None, weights: dict[str, float]) -> Coded:
    """`audience.model.codes.coded` of a canonical event table and catalog (if any)."""
    seen = events.select(EVENT).distinct().limit(MAX_EVENT_TYPES + 1).collect()
    types = sorted({row[EVENT] for row in seen} | set(weights) | set(DEFAULT_EVENT_WEIGHTS))
    if len(types) > MAX_EVENT_TYPES:
        raise ConfigError(
            "event types", f"at most {MAX_EVENT_TYPES} (each pair's types are one 32-bit mask)"
        )
    users = numbered(events.select(USER).distinct(), USER, "u")
    ids = events.select(PRODUCT)
    if catalog is not None:
        ids = ids.unionByName(catalog.select(PRODUCT))
    products = numbered(ids.distinct(), PRODUCT, "p")
    counts = events.groupBy(PRODUCT).agg(fn.count(fn.lit(1)).alias("interactions"))
    listed = (
        catalog.select(PRODUCT, CATEGORY)
        if catalog is not None
        else products.select(PRODUCT, fn.lit(None).cast("string").alias(CATEGORY))
    )
    products = (
        products.join(listed, PRODUCT, "left")
        .join(counts, PRODUCT, "left")
        .fillna(0, subset=["interactions"])
    )
    named = fn.coalesce(fn.col(CATEGORY), fn.lit(NO_CATEGORY))
    active = products.where(fn.col("interactions") > 0).select(named.alias(CATEGORY))
    categories = numbered(active.distinct(), CATEGORY, "c")
    products = products.join(
        categories.withColumnRenamed(CATEGORY, "named"), named == fn.col("named"), "left"
    ).drop("named")
    kind = literal_map({t: i for i, t in enumerate(types)})
    coded_events = (
        events.join(users, USER)
        .join(products.select(PRODUCT, "p"), PRODUCT)
        .withColumn("kind", kind[fn.col(EVENT)])
        .transform(cut)  # joined once: the terms and the reasons read them
    )
    return Coded(coded_events, users, products, categories, types)
