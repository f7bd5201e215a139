"""The affinity terms on Spark, as `audience.model.audiences.affinity` sums them, in the
artifact's segment tables (`audience.model.segments.export`): each (product, user)
pair's summed weight and event types, the direct terms, the category terms and each
product's related products."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as fn

from audience.data.schema import EVENT
from audience.model.audiences import NO_CATEGORY, AudienceConfig
from audience.model.spark.codes import Coded
from audience.model.spark.features import event_weight
from audience.model.spark.session import cut


def excludes(weights: dict[str, float], config: AudienceConfig) -> Column:
    """Whether each event's type excludes its user from its product."""
    exclude = sorted(config.excluding(list(weights)))
    return fn.col(EVENT).isin(exclude) if exclude else fn.lit(False)


def _saturated(scale: float, x: Column, half: float) -> Column:
    """scale x x / (x + half): the terms' saturation, as the compiled passes write it."""
    return fn.lit(scale) * (x / (x + fn.lit(half)))


@dataclass(frozen=True)
class Terms:
    """The affinity terms (`audiences.Affinity`'s tables): touched (q, u, w, kinds),
    direct (p, u, t), excluded (p, u), category (u, c, t), related (p, q, cos, j: its
    place among p's related products, 1 = the most similar), codes (c, category)."""

    touched: DataFrame
    direct: DataFrame
    excluded: DataFrame
    category: DataFrame
    related: DataFrame
    codes: DataFrame

    def segment_tables(self) -> dict[str, DataFrame]:
        """The artifact's segment tables of these terms (`segments.export`), each sorted
        as the artifact holds it."""
        return {
            "segment_touched": self.touched.orderBy("q", "u"),
            "segment_direct": self.direct.orderBy("p", "u"),
            "segment_category": self.category.orderBy("u", "c"),
            "segment_related": self.related.orderBy("p", "j").select("p", "q", "cos"),
            "segment_codes": self.codes.orderBy("c"),
        }


def terms(log: Coded, weights: dict[str, float], config: AudienceConfig) -> Terms:
    """The affinity terms of the coded log."""
    config.check(frozenset(weights))
    weight, excluding = event_weight(weights), excludes(weights, config)
    events = log.events.select("p", "u", "kind", weight.alias("w"), excluding.alias("x"))
    # Computed once (checkpointed): each table below reads it.
    pairs = (
        events.groupBy("p", "u")
        .agg(
            fn.sum("w").alias("w"),
            fn.bit_or(fn.expr("shiftleft(cast(1 as bigint), kind)")).alias("kinds"),
            fn.sum(fn.when(~fn.col("x"), fn.col("w"))).alias("kept"),
            fn.max(~fn.col("x")).alias("some"),
            fn.max(fn.col("x")).alias("banned"),
        )
        .transform(cut)
    )
    touched = pairs.select(fn.col("p").alias("q"), "u", "w", "kinds")
    direct = pairs.where("some").select(
        "p", "u", _saturated(config.direct, fn.col("kept"), config.half).alias("t")
    )
    termed = log.products.where(
        fn.col("c").isNotNull() & (fn.coalesce("category", fn.lit(NO_CATEGORY)) != NO_CATEGORY)
    ).select("p", "c")
    category = (
        events.join(termed, "p")
        .groupBy("u", "c")
        .agg(_saturated(config.category, fn.sum("w"), config.half).alias("t"))
    )
    excluded = pairs.where("banned").select("p", "u")
    relating = related(pairs.select("p", "u"), config)
    codes = log.categories.select("c", "category")
    # Each table computed once and its plan cut there: the lists and their reasons
    # read them several times, and their plans grew past the driver's memory.
    made = [t.transform(cut) for t in (touched, direct, excluded, category, relating)]
    return Terms(made[0], made[1], made[2], made[3], made[4], codes)


def related(pairs: DataFrame, config: AudienceConfig) -> DataFrame:
    """p, q, cos, j: each product's `config.related` most similar products by the cosine
    of their user sets, at least `config.min_cosine`, best first, ties by q
    (`kernels.related`): a self-join of the pairs of users with two or more products,
    on the user."""
    sizes = pairs.groupBy("p").agg(fn.count(fn.lit(1)).alias("n"))
    many = pairs.groupBy("u").agg(fn.count(fn.lit(1)).alias("k")).where("k >= 2").select("u")
    shared = pairs.join(many, "u")
    both = (
        shared.alias("a")
        .join(shared.alias("b"), "u")
        .where(fn.col("a.p") != fn.col("b.p"))
        .groupBy(fn.col("a.p").alias("p"), fn.col("b.p").alias("q"))
        .agg(fn.count(fn.lit(1)).alias("shared"))
    )
    cos = fn.col("shared") / fn.sqrt(fn.col("np").cast("double") * fn.col("nq").cast("double"))
    scored = (
        both.join(sizes.select("p", fn.col("n").alias("np")), "p")
        .join(sizes.select(fn.col("p").alias("q"), fn.col("n").alias("nq")), "q")
        .select("p", "q", cos.alias("cos"))
        .where(fn.col("cos") >= config.min_cosine)
    )
    place = fn.row_number().over(Window.partitionBy("p").orderBy(fn.desc("cos"), "q"))
    return scored.withColumn("j", place).where(fn.col("j") <= config.related)
