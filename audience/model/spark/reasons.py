"""The reasons of the rows shown on Spark. What they name (the user's heaviest event
type on the product and in its category, the terms) is computed by Spark; the texts
are written by the Polars engine's own functions (`audiences.engagement_why`,
`audiences.explained`) on the executors, a batch of rows at a time (`mapInArrow`), so
that each text has one definition."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import polars as pl
import pyarrow as pa
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as fn

from audience.data.schema import CATEGORY, EVENT, USER
from audience.model.audiences import AudienceConfig, engagement_why, explained
from audience.model.spark.affinity import excludes
from audience.model.spark.codes import Coded
from audience.model.spark.features import event_weight
from audience.model.spark.scoring import Engaged

#: The engagement reasons of a user (`audiences.engagement_why`).
WHY = "u long, t_e0 double, r_e0 string, t_e1 double, r_e1 string"


def explain(
    rows: DataFrame,
    keys: list[str],
    log: Coded,
    engaged: Engaged,
    weights: dict[str, float],
    config: AudienceConfig,
) -> DataFrame:
    """`keys` of `rows` (u, c, t_direct, t_co, r_k, t_category, and t_cf with the
    collaborative term; p may be null: a category's head) with their reasons, a list
    of at most two texts."""
    named = _kinds(rows, log, weights, config)
    if "t_cf" not in named.columns:
        named = named.withColumn("t_cf", fn.lit(0.0))
    why = _why(rows.select("u").distinct(), log, engaged)
    joined = named.join(why, "u", "left")
    schema = ", ".join([*(f"{k} {joined.schema[k].dataType.simpleString()}" for k in keys)])

    def texts(frame: pl.DataFrame) -> pl.DataFrame:
        return frame.select(keys).with_columns(explained(frame).alias("reasons"))

    return _in_polars(joined, texts, f"{schema}, reasons array<string>")


def _in_polars(
    frame: DataFrame, run: Callable[[pl.DataFrame], pl.DataFrame], schema: str
) -> DataFrame:
    """`run` on the executors, over each Arrow batch of `frame` as a Polars frame."""

    def batches(given: Iterable[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in given:
            found = pl.from_arrow(batch)
            assert isinstance(found, pl.DataFrame)
            yield from _arrow(run(found))

    return frame.mapInArrow(batches, schema)


def _arrow(frame: pl.DataFrame) -> list[pa.RecordBatch]:
    """`frame` as Arrow batches of the types Spark reads: lists and strings with 32-bit
    offsets (Polars writes 64-bit ones, which Spark refuses)."""
    table = frame.to_arrow(compat_level=pl.CompatLevel.oldest())

    def plain(kind: pa.DataType) -> pa.DataType:
        if pa.types.is_large_list(kind):
            return pa.list_(plain(kind.value_type))
        return pa.string() if pa.types.is_large_string(kind) else kind

    schema = pa.schema([pa.field(f.name, plain(f.type)) for f in table.schema])
    batches: list[pa.RecordBatch] = table.cast(schema).to_batches()
    return batches


def _why(users: DataFrame, log: Coded, engaged: Engaged) -> DataFrame:
    """u and the texts and terms of each user's two largest engagement components."""
    coded = log.users.join(users, "u", "left_semi")
    parts = engaged.components.join(coded, USER).drop(USER).withColumnRenamed("u", USER)
    quoted = engaged.features.join(coded, USER).drop(USER).withColumnRenamed("u", "q")
    both = parts.join(quoted, fn.col(USER) == fn.col("q")).drop("q")
    components = [c for c in parts.columns if c.startswith("c_")]
    features = [c for c in quoted.columns if c != "q"]

    def why(frame: pl.DataFrame) -> pl.DataFrame:
        frame = frame.sort(USER)
        return engagement_why(frame.select(USER, *components), frame.select(USER, *features))

    return _in_polars(both, why, WHY)


def _heaviest(frame: DataFrame, keys: list[str], prefix: str) -> DataFrame:
    """Per key: the heaviest event type (summed weight; ties by name) and its count."""
    sums = frame.groupBy(*keys, EVENT).agg(fn.count(fn.lit(1)).alias("n"), fn.sum("w").alias("w"))
    first = fn.row_number().over(Window.partitionBy(*keys).orderBy(fn.desc("w"), EVENT))
    return (
        sums.withColumn("at", first)
        .where(fn.col("at") == 1)
        .select(*keys, fn.col(EVENT).alias(f"{prefix}_type"), fn.col("n").alias(f"{prefix}_n"))
    )


def _kinds(
    rows: DataFrame, log: Coded, weights: dict[str, float], config: AudienceConfig
) -> DataFrame:
    """`rows` with `audiences._kinds`' columns: d_type, d_n (where the row has a direct
    term), k_type, k_n (the user in the row's category) and the category's name."""
    events = (
        log.events.join(rows.select("u").distinct(), "u", "left_semi")
        .join(log.products.select("p", "c"), "p")
        .select(
            "p",
            "u",
            "c",
            EVENT,
            event_weight(weights).alias("w"),
            excludes(weights, config).alias("x"),
        )
    )
    on_product = rows.where(fn.col("t_direct") > 0).select("p", "u").distinct()
    direct = _heaviest(
        events.where(~fn.col("x")).join(on_product, ["p", "u"], "left_semi"), ["p", "u"], "d"
    )
    in_category = rows.select("u", "c").distinct()
    category = _heaviest(events.join(in_category, ["u", "c"], "left_semi"), ["u", "c"], "k")
    names = log.categories.select("c", CATEGORY)
    return (
        rows.join(direct, ["p", "u"], "left")
        .join(category, ["u", "c"], "left")
        .join(names, "c", "left")
    )
