"""Per-product audiences: the top-N users for every product, with reasons, in a few group-bys.

A product's candidates are the known users minus those excluded for it (users
who interacted with it through an event type in `exclude`; by default any
type). A candidate's score for product p is

    engagement(u) + direct * sat(d) + co * sat(r) + category * sat(k)

- engagement(u): the scorer's score (seed: 0..1; fitted: a probability);
- d: u's summed event weights on p itself through types that do not exclude
  (a cart abandoner kept for a reminder);
- r: sum over p's `related` most similar products q (cosine of their user
  sets) of cosine(p, q) x u's summed event weights on q;
- k: u's summed event weights on products of p's category;
- sat(x) = x / (x + half): one purchase (weight 5) is half of the most an
  affinity can add, so no amount of activity swamps the other terms.

Ties break by user_id. Users without affinity to a product are ranked by
engagement plus category affinity, which is the same list for every product of
a category: it is computed once per category (a "pool") and joined to its
products, so nothing loops over products. A pool holds the best `width` users
of the category; a product whose exclusions eat into it is recomputed with a
wider pool. The optional `cap` limits how many audiences a user appears in: a
user over the cap keeps the products where they score highest (ties by
product_id) and the other products take their next candidates.

Every row carries its two largest score contributions as reasons, e.g.
"3 purchases in Phones", "active 2 days ago".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from audience.errors import ConfigError
from audience.schema import CATEGORY, EVENT, PRODUCT, USER

NO_CATEGORY = ""
MAX_ROUNDS = 12


@dataclass(frozen=True)
class AudienceConfig:
    n: int = 10
    #: Event types that exclude a user from a product they touched; None = every type.
    exclude: tuple[str, ...] | None = None
    related: int = 10
    min_cosine: float = 0.1
    direct: float = 2.0
    co: float = 2.0
    category: float = 0.5
    half: float = 2.0
    cap: int | None = None

    def check(self, event_types: frozenset[str]) -> None:
        if self.n < 1:
            raise ConfigError("n", f"must be at least 1, got {self.n}")
        if self.cap is not None and self.cap < 1:
            raise ConfigError("cap", f"must be at least 1 when given, got {self.cap}")
        if self.related < 0 or self.half <= 0 or not 0 <= self.min_cosine <= 1:
            raise ConfigError(
                "related/half/min_cosine", "need related >= 0, half > 0, 0 <= min_cosine <= 1"
            )
        if min(self.direct, self.co, self.category) < 0:
            raise ConfigError("affinity weights", "direct, co and category must be >= 0")
        unknown = set(self.exclude or ()) - event_types
        if unknown:
            raise ConfigError("exclude", f"unknown event types {sorted(unknown)}")


@dataclass(frozen=True)
class Audiences:
    products: pl.DataFrame  # product_id, rank, user_id, score, reasons
    categories: pl.DataFrame  # category, rank, user_id, score, reasons (cold start)
    stats: dict[str, Any]


def _sat(x: pl.Expr, half: float) -> pl.Expr:
    return x / (x + half)


def _plural(kind: str, n: str) -> pl.Expr:
    label = pl.col(kind).replace({"purchased": "purchase", "search_keyword": "search"})
    return pl.when(pl.col(n) == 1).then(label).otherwise(label + pl.lit("s"))


def _by_type(frame: pl.DataFrame, keys: list[str], prefix: str) -> pl.DataFrame:
    """Per key: total weight, and the heaviest event type with its count (for reasons)."""
    return (
        frame.group_by(*keys, EVENT)
        .agg(n=pl.len(), w=pl.col("w").sum())
        .sort("w", EVENT, descending=[True, False])
        .group_by(keys, maintain_order=True)
        .agg(
            pl.col("w").sum().alias(f"{prefix}_w"),
            pl.col(EVENT).first().alias(f"{prefix}_type"),
            pl.col("n").first().alias(f"{prefix}_n"),
        )
    )


#: What a candidate row carries: its total score, each affinity term and what a
#: reason needs to name it.
_COLUMNS = {
    "p": pl.UInt32,
    "u": pl.UInt32,
    "c": pl.String,
    "total": pl.Float64,
    "t_direct": pl.Float64,
    "d_type": pl.String,
    "d_n": pl.UInt32,
    "t_co": pl.Float64,
    "r_k": pl.UInt32,
    "t_category": pl.Float64,
    "k_type": pl.String,
    "k_n": pl.UInt32,
}


def _fill(frame: pl.DataFrame) -> pl.DataFrame:
    """`frame` with every candidate column, missing terms as 0 / null."""
    missing = [
        pl.lit(0.0 if name.startswith("t_") else None, dtype=dtype).alias(name)
        for name, dtype in _COLUMNS.items()
        if name not in frame.columns
    ]
    return (
        frame.with_columns(missing)
        .select(pl.col(n).cast(t) for n, t in _COLUMNS.items())
        .with_columns(pl.col("t_direct", "t_co", "t_category").fill_null(0.0))
    )


def build(
    events: pl.DataFrame,
    catalog: pl.DataFrame,
    engagement: pl.DataFrame,
    reasons: pl.DataFrame,
    weights: dict[str, float],
    config: AudienceConfig,
) -> Audiences:
    """Audiences for every product with an event, and per category (for cold start).

    `catalog` maps product_id to category (may be empty); `engagement` holds
    user_id, score and the scorer's `c_<name>` components for every user with an
    event; `reasons` holds user_id and an `r_<name>` text per component.
    """
    config.check(frozenset(weights))
    exclude = list(weights) if config.exclude is None else list(config.exclude)
    users = engagement.select(USER, e="score").sort(USER).with_row_index("u")
    products = (
        events.select(PRODUCT)
        .unique()
        .join(catalog.select(PRODUCT, CATEGORY), on=PRODUCT, how="left")
        .unique(PRODUCT)
        .sort(PRODUCT)
        .select(PRODUCT, c=pl.col(CATEGORY).fill_null(NO_CATEGORY))
        .with_row_index("p")
    )
    coded = (
        events.join(users.select(USER, "u"), on=USER)
        .join(products, on=PRODUCT)
        .select("p", "u", "c", EVENT, w=pl.col(EVENT).replace_strict(weights, default=0.0))
    )
    excludes = pl.col(EVENT).is_in(exclude)
    excluded = coded.filter(excludes).select("p", "u").unique()
    half = config.half
    direct = _by_type(coded.filter(~excludes), ["p", "u", "c"], "d").with_columns(
        t_direct=config.direct * _sat(pl.col("d_w"), half)
    )
    co = _co_affinity(coded.group_by("p", "u", "c").agg(pl.col("w").sum()), config)
    category = _by_type(coded.filter(pl.col("c") != NO_CATEGORY), ["u", "c"], "k").with_columns(
        t_category=config.category * _sat(pl.col("k_w"), half)
    )
    e = users.select("u", "e")
    explicit = (
        direct.join(co, on=["p", "u", "c"], how="full", coalesce=True)
        .join(category, on=["u", "c"], how="left")
        .join(e, on="u")
        .with_columns(pl.col("t_direct", "t_co", "t_category").fill_null(0.0))
        .with_columns(total=pl.sum_horizontal("e", "t_direct", "t_co", "t_category"))
        .filter(pl.col("t_direct") + pl.col("t_co") > 0)
        .join(excluded, on=["p", "u"], how="anti")
    )
    if config.cap is None:  # only a product's n best can be chosen; the cap may need more
        best = _top(explicit.select("p", "u", "total"), config.n)
        explicit = explicit.join(best.select("p", "u"), on=["p", "u"], how="semi")
    affinity = category.join(e, on="u").with_columns(total=pl.col("e") + pl.col("t_category"))
    ranked = users.select("u", "e", total="e").sort("total", "u", descending=[True, False])
    selector = _Selector(products.select("p", "c"), explicit, affinity, ranked, excluded, config.n)
    chosen = selector.select(config.cap)
    pool = _fill(selector.pool(selector.width))
    per_category = pool.group_by("c", maintain_order=True).head(config.n)
    explicit = _fill(explicit.join(chosen.filter("explicit").select("p", "u"), on=["p", "u"]))
    why = _engagement_reasons(
        engagement, reasons, users, pl.concat([explicit.select("u"), pool.select("u")])
    )
    pool_reasons = _explain(pool, why).select("c", "u", pool_reasons="reasons")
    uid = users.select("u", USER)
    # `chosen` is in (product code, rank) order, and codes follow product_id order:
    # left joins that keep it avoid sorting two million rows again.
    audiences = (
        chosen.join(
            _explain(explicit, why).select("p", "u", "reasons"),
            on=["p", "u"],
            how="left",
            maintain_order="left",
        )
        .join(pool_reasons, on=["c", "u"], how="left", maintain_order="left")
        .join(products.select("p", PRODUCT), on="p", how="left", maintain_order="left")
        .join(uid, on="u", how="left", maintain_order="left")
    )
    return Audiences(
        products=audiences.select(
            PRODUCT,
            "rank",
            USER,
            score="total",
            reasons=pl.coalesce("reasons", "pool_reasons"),
        ),
        categories=_explain(per_category, why)
        .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).over("c"))
        .join(uid, on="u")
        .select(pl.col("c").alias(CATEGORY), "rank", USER, score="total", reasons="reasons")
        .sort(CATEGORY, "rank"),
        stats=selector.stats,
    )


def _co_affinity(pairs: pl.DataFrame, config: AudienceConfig) -> pl.DataFrame:
    """(p, u) with t_co and the number of p's related products u touched.

    Related products of p: its `related` most similar products by the cosine of
    their user sets (ties by product code), if at least `min_cosine`: a product
    sharing one user with p among thousands says nothing about p, and would add
    all its users as candidates.
    """
    users_of = pairs.group_by("p").agg(n=pl.len())
    related = (
        pairs.select("p", "u")
        .join(pairs.select(q="p", u="u"), on="u")
        .filter(pl.col("p") != pl.col("q"))
        .group_by("p", "q")
        .agg(shared=pl.len())
        .join(users_of, on="p")
        .join(users_of.select(q="p", n_q="n"), on="q")
        .with_columns(cos=pl.col("shared") / (pl.col("n") * pl.col("n_q")).cast(pl.Float64).sqrt())
        .filter(pl.col("cos") >= config.min_cosine)
        .sort("p", "cos", "q", descending=[False, True, False])
        .group_by("p", maintain_order=True)
        .head(config.related)
    )
    return (
        related.select("p", "q", "cos")
        .join(pairs.select(q="p", u="u", w="w"), on="q")
        .group_by("p", "u")
        .agg(r=(pl.col("cos") * pl.col("w")).sum(), r_k=pl.len())
        .join(pairs.select("p", "c").unique(), on="p")
        .with_columns(t_co=config.co * _sat(pl.col("r"), config.half))
    )


def _top(candidates: pl.DataFrame, n: int) -> pl.DataFrame:
    """Each product's n best rows by total, ties by user code (= user_id order)."""
    best = pl.all().top_k_by(["total", "u"], n, reverse=[False, True])
    return candidates.group_by("p").agg(best).explode([c for c in candidates.columns if c != "p"])


class _Selector:
    """Top-n per product from its explicit candidates and its category's pool, in rounds.

    Ranking uses only (p, u, total); reasons are attached once at the end. Round
    1 ranks every product against a pool of width n; later rounds re-rank only
    the products left short by exclusions (with a pool twice as wide) or that
    lost users to the cap.
    """

    def __init__(
        self,
        products: pl.DataFrame,
        explicit: pl.DataFrame,
        affinity: pl.DataFrame,
        ranked: pl.DataFrame,
        excluded: pl.DataFrame,
        n: int,
    ) -> None:
        self.products, self.affinity, self.ranked = products, affinity, ranked
        self.explicit = explicit.select("p", "u", "total", explicit=pl.lit(True))
        self.excluded, self.n, self.width = excluded, n, n
        self.stats: dict[str, Any] = {}
        self._pools: dict[int, pl.DataFrame] = {}

    def pool(self, width: int) -> pl.DataFrame:
        """Per category, its `width` best users by engagement + category affinity.

        They are among the category's `width` best users with affinity and the
        `width` best overall, so only those are sorted. Computed once per width.
        """
        if width not in self._pools:
            cats = self.products.select("c").unique()
            best = pl.all().top_k_by(["total", "u"], width, reverse=[False, True])
            near = self.affinity.join(cats, on="c").group_by("c").agg(best)
            top = cats.join(self.ranked.head(width), how="cross")
            self._pools[width] = (
                pl.concat(
                    [near.explode([c for c in near.columns if c != "c"]), top],
                    how="diagonal_relaxed",
                )
                .sort("c", "total", "u", descending=[False, True, False])
                .unique(["c", "u"], keep="first", maintain_order=True)
                .group_by("c", maintain_order=True)
                .head(width)
            )
        return self._pools[width]

    def _rank(self, todo: pl.DataFrame, banned: pl.DataFrame) -> pl.DataFrame:
        """Top-n of `todo`'s products; those the pool alone decides skip the per-product top-k.

        A product with no explicit candidate and no excluded or banned user in its
        category's pool gets the pool's first n users as they are.
        """
        explicit = self.explicit.join(todo.select("p"), on="p")
        pool = self.pool(self.width).select("c", "u", "total")
        removed = pl.concat([self.excluded, banned]).join(todo, on="p")
        affected = pl.concat(
            [explicit.select("p"), removed.join(pool, on=["c", "u"]).select("p")]
        ).unique()
        plain = (
            todo.join(affected, on="p", how="anti")
            .join(pool.group_by("c", maintain_order=True).head(self.n), on="c")
            .select("p", "u", "total", explicit=pl.lit(False))
        )
        pooled = (
            todo.join(affected, on="p", how="semi")
            .join(pool, on="c")
            .join(explicit.select("p", "u"), on=["p", "u"], how="anti")
            .select("p", "u", "total", explicit=pl.lit(False))
        )
        candidates = pl.concat([explicit, pooled]).join(
            removed.select("p", "u"), on=["p", "u"], how="anti"
        )
        return pl.concat([plain, _top(candidates, self.n)])

    def select(self, cap: int | None) -> pl.DataFrame:
        """p, c, u, total, explicit (the row's source) and rank of every chosen pair."""
        banned = pl.DataFrame(schema={"p": pl.UInt32, "u": pl.UInt32})
        chosen = self._rank(self.products, banned)
        rounds = 1
        while rounds < MAX_ROUNDS:
            sizes = self.products.join(chosen.group_by("p").len(), on="p", how="left")
            short = sizes.filter(pl.col("len").fill_null(0) < self.n).select("p", "c")
            if self.width >= self.ranked.height:
                short = short.clear()
            over = self._over_cap(chosen, cap)
            if short.is_empty() and over.is_empty():
                break
            if not short.is_empty():
                self.width *= 2
            banned = pl.concat([banned, over])
            redo = over.select("p").unique().join(self.products, on="p")
            todo = pl.concat([short, redo]).unique("p")
            chosen = pl.concat([chosen.join(todo, on="p", how="anti"), self._rank(todo, banned)])
            rounds += 1
        final = chosen.join(self._over_cap(chosen, cap), on=["p", "u"], how="anti")
        full = final.group_by("p").len().filter(pl.col("len") >= self.n).height
        self.stats = {
            "rounds": rounds,
            "pool_width": self.width,
            "products": self.products.height,
            "rows": final.height,
            "products_short": self.products.height - full,
            "distinct_users": final.get_column("u").n_unique(),
            "explicit_rows": int(final.get_column("explicit").sum()),
        }
        return (
            final.join(self.products, on="p")
            .sort("p", "total", "u", descending=[False, True, False])
            .with_columns(rank=pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).over("p"))
        )

    @staticmethod
    def _over_cap(chosen: pl.DataFrame, cap: int | None) -> pl.DataFrame:
        """(p, u) appearances beyond a user's `cap` best, by score then product."""
        if cap is None:
            return pl.DataFrame(schema={"p": pl.UInt32, "u": pl.UInt32})
        return (
            chosen.sort("u", "total", "p", descending=[False, True, False])
            .filter(pl.int_range(pl.len()).over("u") >= cap)
            .select("p", "u")
        )


def _engagement_reasons(
    engagement: pl.DataFrame, reasons: pl.DataFrame, users: pl.DataFrame, rows: pl.DataFrame
) -> pl.DataFrame:
    """Per user in `rows`: the two largest positive engagement components and their texts."""
    needed = rows.select("u").unique().join(users.select("u", USER), on="u")
    parts = engagement.join(needed, on=USER).drop("score", USER)
    texts = reasons.join(needed, on=USER)
    long = (
        parts.unpivot(index="u", variable_name="name", value_name="t")
        .filter(pl.col("name").str.starts_with("c_"))
        .with_columns(pl.col("name").str.strip_prefix("c_"))
        .join(
            texts.drop(USER)
            .unpivot(index="u", variable_name="name", value_name="r")
            .with_columns(pl.col("name").str.strip_prefix("r_")),
            on=["u", "name"],
        )
        .filter(pl.col("t") > 0)
        .sort("u", "t", "name", descending=[False, True, False])
        .group_by("u", maintain_order=True)
        .head(2)
        .with_columns(slot=pl.int_range(pl.len()).over("u"))
    )
    first, second = (
        long.filter(pl.col("slot") == i).select(
            "u", pl.col("t").alias(f"t_e{i}"), pl.col("r").alias(f"r_e{i}")
        )
        for i in (0, 1)
    )
    return needed.select("u").join(first, on="u", how="left").join(second, on="u", how="left")


def _explain(rows: pl.DataFrame, why: pl.DataFrame) -> pl.DataFrame:
    """`score` and `reasons`: the texts of the row's two largest positive contributions."""
    terms = ["t_direct", "t_co", "t_category", "t_e0", "t_e1"]
    texts = [
        pl.format("{} {} on this product", "d_n", _plural("d_type", "d_n")),
        pl.format(
            "{} related product{}",
            "r_k",
            pl.when(pl.col("r_k") == 1).then(pl.lit("")).otherwise(pl.lit("s")),
        ),
        pl.format("{} {} in {}", "k_n", _plural("k_type", "k_n"), "c"),
        pl.col("r_e0"),
        pl.col("r_e1"),
    ]
    joined = rows.join(why, on="u", how="left").with_columns(pl.col(terms).fill_null(0.0))
    values = joined.select(terms).to_numpy()
    order = np.argsort(-values, axis=1, kind="stable")[:, :2]
    best = np.take_along_axis(values, order, axis=1)
    slots = [np.where(best[:, i] > 0, order[:, i], -1) for i in (0, 1)]

    def text(slot: int) -> pl.Expr:
        chosen = pl.lit(None, dtype=pl.String)
        for i in reversed(range(len(texts))):
            chosen = pl.when(pl.col(f"slot{slot}") == i).then(texts[i]).otherwise(chosen)
        return chosen

    return joined.with_columns(
        pl.Series("slot0", slots[0]), pl.Series("slot1", slots[1])
    ).with_columns(
        score=pl.col("total"), reasons=pl.concat_list(text(0), text(1)).list.drop_nulls()
    )


def user_reasons(features: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """user_id and an `r_<name>` text per engagement component, from the raw features."""

    def value(name: str, digits: int = 0) -> pl.Expr:
        rounded = pl.col(name).round(digits)
        return (rounded.cast(pl.Int64) if digits == 0 else rounded).cast(pl.String)

    known = {
        "interactions": pl.format("{} interactions", value("interactions")),
        "unique_products": pl.format("{} products", value("unique_products")),
        "mean_weight": pl.format("avg event weight {}", value("mean_weight", 1)),
        "per_active_day": pl.format("{} events per active day", value("per_active_day", 1)),
        "recency": pl.format("active {} days ago", value("days_since_last")),
        "days_since_last": pl.format("active {} days ago", value("days_since_last")),
        "days_since_first": pl.format("first seen {} days ago", value("days_since_first")),
        "active_days": pl.format("{} active days", value("active_days")),
        "events_7d": pl.format("{} events in the last 7 days", value("events_7d")),
        "events_30d": pl.format("{} events in the last 30 days", value("events_30d")),
        "purchase_share": pl.format(
            "{}% purchases", (pl.col("purchase_share") * 100).round(0).cast(pl.Int64)
        ),
    }
    return features.select(
        USER,
        *(
            known.get(name, pl.format(f"{name} {{}}", value(name, 2))).alias(f"r_{name}")
            for name in names
        ),
    )
