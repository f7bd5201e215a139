"""Every product's audience on Spark: its n best users by total, ties by user code, as
`audience.model.audiences.build` ranks them (the segments' pass ranks every user alike),
and each category's head for cold start.

A product's total for a user with evidence (a direct term, or users of its related
products) that counts (direct + co-interaction term > 0), not excluded:
((e + direct) + co) + category, rounded to `DIGITS`; the co-interaction sum r is summed
over the related products in their order, best first, as the compiled pass sums it.
Every other scored user, not excluded, has the category pool's total: e + category
(rounded) where the user has a term for the product's category, else e. So a product's
list is its counted candidates merged with the head of its category's pool, as deep as
n plus its excluded and counted users (those may sit in the head). A product with no
counted candidate and no excluded user in its pool's first n takes that head as it is
(stored once, for its category)."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as fn

from audience.data.schema import USER
from audience.model.audiences import DIGITS, AudienceConfig
from audience.model.spark import dense
from audience.model.spark.affinity import Terms
from audience.model.spark.codes import Coded
from audience.model.spark.session import cut

SCALE = 10.0**DIGITS


def rounded(x: Column) -> Column:
    """`x` rounded to `DIGITS` decimals as the Polars engine rounds (half to even)."""
    return fn.rint(x * SCALE) / SCALE


#: A list's row: its user, total, whether the user has evidence that counts, the
#: product's category and the terms (`kernels.topn.TERMS`; r_k: related products).
ROW = ("u", "total", "explicit", "c", "t_direct", "t_co", "r_k", "t_category")


@dataclass(frozen=True)
class Factors:
    """ALS's factors: products (p, x) and users (u, x), x an array of floats."""

    products: DataFrame
    users: DataFrame


@dataclass(frozen=True)
class Lists:
    """own: p, rank and `ROW` (the products with a list of their own); plain: p, c (the
    products whose list is their category's head); heads: c, rank, u, total, t_category
    (each category's n best by its pool's totals)."""

    own: DataFrame
    plain: DataFrame
    heads: DataFrame


def lists(log: Coded, scores: DataFrame, terms: Terms, config: AudienceConfig) -> Lists:
    """The lists of every product with an event, from the users' engagement `scores`
    (user_id, score) and the affinity `terms`."""
    n = config.n
    e, active = _engaged(log, scores), _active(log)
    counted = _counted(e, active, terms, config).transform(cut)
    # The pool's depth each product needs, and each category's widest.
    banned = terms.excluded.groupBy("p").agg(fn.count(fn.lit(1)).alias("b"))
    held = counted.groupBy("p").agg(fn.count(fn.lit(1)).alias("h"))
    depth = (
        active.join(banned, "p", "left")
        .join(held, "p", "left")
        .select(
            "p", "c", (n + fn.coalesce("b", fn.lit(0)) + fn.coalesce("h", fn.lit(0))).alias("d")
        )
    )
    widest = depth.groupBy("c").agg(fn.max("d").alias("width"))
    pool = _pool(e.transform(cut), terms.category, widest.transform(cut))
    head = (
        depth.join(pool, "c")
        .where(fn.col("slot") <= fn.col("d"))
        .join(terms.excluded, ["p", "u"], "left_anti")
        .join(counted.select("p", "u"), ["p", "u"], "left_anti")
        .select(
            "p",
            "u",
            "total",
            fn.lit(False).alias("explicit"),
            fn.lit(0.0).alias("t_direct"),
            fn.lit(0.0).alias("t_co"),
            fn.lit(0).cast("long").alias("r_k"),
            "t_category",
        )
    )
    rows = head.unionByName(counted.withColumn("explicit", fn.lit(True)))
    place = fn.row_number().over(Window.partitionBy("p").orderBy(fn.desc("total"), "u"))
    ranked = rows.withColumn("rank", place).where(fn.col("rank") <= n)
    # Plain: nothing counted, and no excluded user in the pool's first n.
    first = active.join(pool.where(fn.col("slot") <= n), "c")
    hit = first.join(terms.excluded, ["p", "u"], "left_semi").select("p").distinct()
    plain = active.join(held, "p", "left_anti").join(hit, "p", "left_anti")
    own = ranked.join(plain, "p", "left_anti").join(active, "p").select("p", "rank", *ROW)
    first_n = pool.where(fn.col("slot") <= n)
    heads = first_n.select("c", fn.col("slot").alias("rank"), "u", "total", "t_category")
    made = (own.orderBy("p", "rank"), plain.orderBy("p"), heads.orderBy("c", "rank"))
    return Lists(*(t.transform(cut) for t in made))


def everyone(
    log: Coded,
    scores: DataFrame,
    terms: Terms,
    config: AudienceConfig,
    factors: Factors,
    weight: float,
    cf_half: float,
) -> Lists:
    """`lists` with the collaborative term of `factors` at `weight` (half point
    `cf_half`): every user has a term for every product, so each product with an event
    ranks every user (`dense.ranked`), none takes its category's head, and the heads
    are each category's pool's n best."""
    n = config.n
    e, active = _engaged(log, scores), _active(log)
    s = fn.col("s")
    found = dense.ranked(
        active.join(factors.products, "p"),
        e.join(factors.users, "u", "left"),
        n,
        banned=terms.excluded,
        weights=(weight,),
        cf_half=cf_half,
        category=terms.category,
        evidence=evidence(active, terms),
        co=config.co,
        half=config.half,
    )
    own = found.join(active, "p").select(
        "p",
        "rank",
        "u",
        "total",
        fn.lit(True).alias("explicit"),
        "c",
        fn.col("direct").alias("t_direct"),
        co_term(config).alias("t_co"),
        fn.col("k").alias("r_k"),
        fn.col("category").alias("t_category"),
        fn.when(s > 0, weight * (s / (s + cf_half))).otherwise(fn.lit(0.0)).alias("t_cf"),
    )
    widest = log.categories.select("c", fn.lit(n).alias("width"))
    pool = _pool(e.transform(cut), terms.category, widest.transform(cut))
    heads = pool.select("c", fn.col("slot").alias("rank"), "u", "total", "t_category")
    plain = active.where(fn.lit(False))
    made = (own.orderBy("p", "rank"), plain, heads.orderBy("c", "rank"))
    return Lists(*(t.transform(cut) for t in made))


def _engaged(log: Coded, scores: DataFrame) -> DataFrame:
    """u, e: each user's engagement score, rounded as totals are."""
    return scores.join(log.users, USER).select("u", rounded(fn.col("score")).alias("e"))


def _active(log: Coded) -> DataFrame:
    """p, c of the products with an event."""
    return log.products.where(fn.col("interactions") > 0).select("p", "c")


def evidence(active: DataFrame, terms: Terms) -> DataFrame:
    """p, u, direct, r, k of every (p, u) with product-level evidence, not excluded, of
    the `active` products (p): the direct term (0: none), the co-interaction sum r over
    the related products in their order, best first (as the compiled pass sums it), and
    how many related products (k) brought the user."""
    brought = terms.related.join(terms.touched, "q").select(
        "p", "u", "j", (fn.col("cos") * fn.col("w")).alias("x")
    )
    in_order = fn.array_sort(fn.collect_list(fn.struct("j", "x")))
    co = brought.groupBy("p", "u").agg(
        fn.aggregate(in_order, fn.lit(0.0), lambda acc, y: acc + y["x"]).alias("r"),
        fn.count(fn.lit(1)).alias("k"),
    )
    return (
        terms.direct.withColumnRenamed("t", "direct")
        .join(co, ["p", "u"], "full")
        .join(terms.excluded, ["p", "u"], "left_anti")
        .join(active.select("p"), "p")
        .select(
            "p",
            "u",
            fn.coalesce("direct", fn.lit(0.0)).alias("direct"),
            fn.coalesce("r", fn.lit(0.0)).alias("r"),
            fn.coalesce("k", fn.lit(0)).cast("long").alias("k"),
        )
    )


def co_term(config: AudienceConfig) -> Column:
    """The co-interaction term of a row's sum r from k related products."""
    r = fn.col("r")
    return fn.when(fn.col("k") > 0, config.co * (r / (r + config.half))).otherwise(fn.lit(0.0))


def _counted(e: DataFrame, active: DataFrame, terms: Terms, config: AudienceConfig) -> DataFrame:
    """p, u, total, t_direct, t_co, r_k, t_category of every candidate with evidence
    that counts, not excluded."""
    both = (
        evidence(active, terms)
        .join(active, "p")
        .join(e, "u")
        .join(terms.category.withColumnRenamed("t", "category"), ["u", "c"], "left")
    )
    term, d = co_term(config), fn.col("direct")
    category = fn.coalesce("category", fn.lit(0.0))
    total = ((fn.col("e") + d) + term) + category
    return both.where(d + term > 0).select(
        "p",
        "u",
        rounded(total).alias("total"),
        d.alias("t_direct"),
        term.alias("t_co"),
        fn.col("k").alias("r_k"),
        category.alias("t_category"),
    )


def _pool(e: DataFrame, category: DataFrame, widest: DataFrame) -> DataFrame:
    """c, u, total, slot (1 = best): each category's pool, every scored user's e +
    category term (rounded) where the user has one, else e, as deep as the category's
    widest product needs (`widest`: c, width).

    The users without a term come from the m best by e: enough while each category's
    deepest row ranks before the m-th (a user past it ranks after it too); else m
    doubles, as the Polars engine widens its pools."""
    termed = e.join(category, "u").select(
        "c", "u", rounded(fn.col("e") + fn.col("t")).alias("total"), fn.col("t").alias("t_category")
    )
    users, deepest = e.count(), widest.agg(fn.max("width")).first()
    m = int(deepest[0]) if deepest is not None and deepest[0] is not None else 0
    slot = fn.row_number().over(Window.partitionBy("c").orderBy(fn.desc("total"), "u"))
    while True:
        top = e.orderBy(fn.desc("e"), "u").limit(m)
        rest = (
            widest.select("c")
            .crossJoin(top)
            .join(category.select("u", "c"), ["u", "c"], "left_anti")
            .select("c", "u", fn.col("e").alias("total"), fn.lit(0.0).alias("t_category"))
        )
        ranked = termed.unionByName(rest).join(widest, "c").withColumn("slot", slot)
        pool = ranked.where(fn.col("slot") <= fn.col("width")).drop("width").transform(cut)
        last = top.orderBy("e", fn.desc("u")).first()
        if m >= users or last is None:
            return pool
        deep = ranked.where(fn.col("slot") == fn.col("width"))
        before = (fn.col("total") > last["e"]) | (
            (fn.col("total") == last["e"]) & (fn.col("u") < last["u"])
        )
        if deep.where(before).count() == widest.count():
            return pool
        m *= 2
