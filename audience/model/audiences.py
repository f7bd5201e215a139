"""Per-product audiences: the top-N users for every product, with reasons.

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
a category: it is computed once per category (a "pool"). A pool holds the best
`width` users of the category; a product whose exclusions eat into it is ranked
again with a wider pool. The sums (`kernels.pairs`), the related products
(`kernels.related`) and each product's top n (`kernels.topn`) are compiled passes
over arrays sorted by product or user; nothing loops over products in Python, and a
product whose audience is its category pool's head as it is is not ranked at all.
The optional `cap` limits how many audiences a user appears in: each
user keeps up to `cap` of their rows with product-level evidence (where they score
highest), and the other places are dealt from the category pools like cards, each
product of a category getting its k-th user before any gets its (k+1)-th, so the
best users are spread over the category instead of all going to its first
products, and each user's capacity goes to the categories where they score highest.

Every row carries its two largest score contributions as reasons, e.g.
"3 purchases in Phones", "active 2 days ago".
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from audience.data.schema import CATEGORY, EVENT, PRODUCT, TIME, USER
from audience.errors import ConfigError
from audience.model import repeat
from audience.model.codes import Log, spelled
from audience.model.kernels import dense, scores
from audience.model.kernels.csr import Csr, fixed
from audience.model.kernels.pairs import Events, by_category, pairs
from audience.model.kernels.related import relate
from audience.model.kernels.topn import CHOSEN, TERMS, Collaborative, Evidence, best_users, top_n
from audience.model.scoring import Engagement

NO_CATEGORY = ""
#: Scores and totals are ranked rounded to this many decimals: their last bits differ
#: between runs (parallel sums in the features, the fit and the co-interaction terms),
#: and ties break by user_id, so unrounded a tie could go either way. Rounded, only sums
#: that straddle a rounding boundary can still differ (rare, not impossible; the fitted
#: score's last bit also depends on the thread count). Only totals are rounded, never
#: a term before saturation, which would scale the rounding error.
DIGITS = 12
#: The reason of the collaborative term (`audience.model.hybrid`).
CF_REASON = "shoppers like this one buy it"
#: Event types a log may have: a (product, user) pair's types are kept as one 32-bit mask.
MAX_EVENT_TYPES = 32


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
    #: Repeat mode (`audience.model.repeat`): no type excludes, and a past user's own
    #: history on the product counts as far as they are due for it again.
    repeat: bool = False

    def excluding(self, event_types: Sequence[str]) -> list[str]:
        """The event types that exclude a user from a product they touched."""
        if self.repeat:
            return []
        return list(event_types) if self.exclude is None else list(self.exclude)

    def check(self, event_types: frozenset[str]) -> None:
        if self.n < 1:
            raise ConfigError("n", f"must be at least 1, got {self.n}")
        if self.cap is not None and self.cap < 1:
            raise ConfigError("cap", f"must be at least 1 when given, got {self.cap}")
        if self.related < 0 or self.half <= 0 or not 0 <= self.min_cosine <= 1:
            raise ConfigError(
                "related/half/min_cosine", "need related >= 0, half > 0, 0 <= min_cosine <= 1"
            )
        if self.repeat and self.exclude is not None:
            raise ConfigError(
                "repeat", "repeat mode keeps every past user as a candidate: drop --exclude"
            )
        if min(self.direct, self.co, self.category) < 0:
            raise ConfigError("affinity weights", "direct, co and category must be >= 0")
        unknown = set(self.exclude or ()) - event_types
        if unknown:
            raise ConfigError(
                "exclude", f"unknown event types {sorted(unknown)}; known: {sorted(event_types)}"
            )


@dataclass(frozen=True)
class Audiences:
    """Every product's audience, each list stored once.

    Most products' audience is exactly their category's head: no user has evidence
    on them and none of their excluded users is in that head. Those are listed in
    `shared` (with the category whose head they take) instead of being copied: at
    10x the sample that is 14 of 20 million rows.
    """

    ranked: pl.DataFrame  # p, rank, u, total, i: the own lists by code (i: in `texts`)
    ids: pl.Series  # product_id, by product code
    users: pl.Series  # user_id, by user code
    texts: pl.Series  # reason lists
    categories: pl.DataFrame  # category, rank, user_id, score, reasons (also for cold start)
    shared: pl.DataFrame  # p (code), product_id, category: products with the category's audience
    stats: dict[str, Any]

    @property
    def own(self) -> pl.LazyFrame:
        """product_id, rank, user_id, score, reasons of the products with a list of their
        own, spelled out as it is read, a batch at a time: at 100x the sample, 57 million
        rows of ids and reasons (4 GB) need never be held."""
        return self._spelled(self.ranked.lazy())

    def _spelled(self, ranked: pl.LazyFrame) -> pl.LazyFrame:
        return ranked.select(
            spelled("p", self.ids).alias(PRODUCT),
            "rank",
            spelled("u", self.users).alias(USER),
            score="total",
            reasons=spelled("i", self.texts),
        )

    def rows(self, products: pl.Series | None = None) -> pl.DataFrame:
        """Each product's audience spelled out (`own`'s columns), sorted by product and
        rank; only `products` if given (picked by code, before any row is spelled out)."""
        ranked, shared = self.ranked.lazy(), self.shared.lazy()
        if products is not None:
            # Product codes are in id order: each id's code is found by binary search.
            products = products.cast(pl.String)
            known = pl.DataFrame({"p": self.ids.search_sorted(products), PRODUCT: products})
            codes = known.filter(pl.col("p") < self.ids.len()).filter(
                spelled("p", self.ids) == pl.col(PRODUCT)
            )
            ranked = ranked.join(
                codes.lazy().select(pl.col("p").cast(pl.UInt32)), on="p", how="semi"
            )
            shared = shared.filter(pl.col(PRODUCT).is_in(products.implode()))
        own = self._spelled(ranked)
        columns = own.collect_schema().names()
        spread = shared.join(self.categories.lazy(), on=CATEGORY).select(columns)
        return pl.concat([own, spread]).sort(PRODUCT, "rank").collect()


def _plural(kind: str, n: str) -> pl.Expr:
    label = pl.col(kind).replace({"purchased": "purchase", "search_keyword": "search"})
    return pl.when(pl.col(n) == 1).then(label).otherwise(label + pl.lit("s"))


def _by_type(frame: pl.LazyFrame, keys: list[str], prefix: str) -> pl.LazyFrame:
    """Per key: the heaviest event type with its count (for reasons)."""
    return (
        frame.group_by(*keys, EVENT)
        .agg(n=pl.len(), w=pl.col("w").sum())
        .sort("w", EVENT, descending=[True, False])
        .group_by(keys, maintain_order=True)
        .agg(
            pl.col(EVENT).first().cast(pl.String).alias(f"{prefix}_type"),
            pl.col("n").first().alias(f"{prefix}_n"),
        )
    )


#: What a candidate row carries: its total score, each affinity term, and how many
#: related products the user touched (for its reason).
_COLUMNS = {
    "p": pl.UInt32,
    "u": pl.UInt32,
    "c": pl.UInt32,
    "total": pl.Float64,
    "t_direct": pl.Float64,
    "t_co": pl.Float64,
    "r_k": pl.UInt32,
    "t_category": pl.Float64,
    "t_cf": pl.Float64,
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
        .with_columns(pl.col("t_direct", "t_co", "t_category", "t_cf").fill_null(0.0))
    )


@dataclass(frozen=True)
class Affinity:
    """What product audiences take from the log, whichever scorer ranks the users.

    Users and products are coded as in `audience.model.codes.Log` (`u`, `p`: id order),
    categories by name (`c`). `events` are the log's (`audience.model.codes.Log`), with the
    `weights` of their types; `direct` every (p, u) with a direct term, by
    product; `related` each product's related products q with their cosine; `touched`
    every user's summed event weight on each product q, by q; `category` every (u, c)
    category affinity; `excluded` the (p, u) pairs that may not be chosen. The (p, u)
    co-interaction candidates are spelled out only once the users are scored
    (`audience.model.kernels.topn`), a product at a time, because on a large log they outnumber the
    events and only each product's best few are kept.
    """

    config: AudienceConfig
    users: pl.Series  # user_id, by user code
    ids: pl.Series  # product_id, by product code
    of: pl.Series  # c (category code), by product code (null: no product with an event)
    products: pl.DataFrame  # p, c: the products with an event
    names: pl.DataFrame  # c, category
    events: pl.DataFrame  # the log's: user_id, product_id (codes), event_type, event_time
    weights: dict[str, float]  # by event type
    exclude: list[str]  # the event types that exclude a user from a product
    excluded: Csr  # p -> (u)
    direct: Csr  # p -> (u, t_direct)
    related: Csr  # p -> (q, cos)
    touched: Csr  # q -> (u, w)
    kinds: npt.NDArray[np.uint32]  # beside touched's entries: bit k is event type code k
    category: Csr  # u -> (c, t_category)
    refills: pl.DataFrame | None  # p, u, refill, ...: in repeat mode (`repeat.refill`)
    #: ALS's factors and the term's weight (`audience.model.hybrid`), when it has one
    collaborative: Collaborative | None = None

    def evidence(self, e: pl.Series) -> Evidence:
        """The evidence of every product, with `e`, each user code's engagement (null:
        not scored, never a candidate)."""
        e_ = fixed(e.cast(pl.Float64).fill_null(float("nan")).to_numpy())  # fixed once
        return Evidence(
            self.related,
            self.touched,
            self.direct,
            self.excluded,
            self.category,
            e_,
            self.config.co,
            self.config.half,
            self.collaborative,
        )


def affinity(log: Log, weights: dict[str, float], config: AudienceConfig) -> Affinity:
    """The affinity terms of every product with an event in `log`."""
    config.check(frozenset(weights))
    exclude = config.excluding(list(weights))
    table = log.products
    active = table.get_column("interactions") > 0
    category = pl.col(CATEGORY).fill_null(NO_CATEGORY)
    names = table.filter(active).select(category).unique().sort(CATEGORY).with_row_index("c")
    # Categories as codes: null for a category that no product with an event has.
    kind = pl.Enum(names.get_column(CATEGORY))
    of = table.select(c=category.cast(kind, strict=False).to_physical().cast(pl.UInt32))["c"]
    products = of.to_frame().with_row_index("p").filter(active)
    events = log.events
    types = events.get_column(EVENT)
    assert isinstance(types.dtype, pl.Enum)  # as `audience.model.codes.coded` makes it
    names_of_types = types.dtype.categories.to_list()  # type code i: the Enum's i-th
    if len(names_of_types) > MAX_EVENT_TYPES:
        raise ConfigError(
            "event types", f"at most {MAX_EVENT_TYPES} (each pair's types are one 32-bit mask)"
        )
    coded = Events.of(
        events.get_column(PRODUCT).to_numpy(),
        events.get_column(USER).to_numpy(),
        types.to_physical().to_numpy(),
        np.array([weights.get(t, 0.0) for t in names_of_types]),
        np.array([t in exclude for t in names_of_types]),
    )
    rows, users = table.height, log.users.len()
    blank = names.filter(pl.col(CATEGORY) == NO_CATEGORY).get_column("c")
    termed = of.cast(pl.Int64).fill_null(-1).to_numpy().copy()  # by product code
    termed[np.isin(termed, blank.to_numpy())] = -1  # no category term for the blank category
    # The category terms are summed on a second core while the pairs are, and products
    # related (both compiled passes release the GIL): alone, at 100x the sample, they
    # took 1.5-3 s. Both read one copy of the events (`Events`).
    with ThreadPoolExecutor(1) as aside:
        terms = aside.submit(
            by_category, coded, termed, users, names.height, config.category, config.half
        )
        sums = pairs(coded, rows, config.direct, config.half)
        related = relate(sums.touched, users, config.related, config.min_cosine)
        affinities = terms.result()
    refills = None
    if config.repeat:
        last = events.get_column(TIME).max()
        assert isinstance(last, datetime)
        refills = repeat.refill(events, of, last)
        ptr, (u, t) = sums.direct.ptr, sums.direct.columns
        assert refills.height == u.size  # every pair has a direct term: nothing excludes
        scaled = fixed(t * refills.get_column("refill").to_numpy())
        sums = replace(sums, direct=Csr(ptr, (u, scaled)))
    return Affinity(
        config,
        log.users,
        table.get_column(PRODUCT),
        of,
        products,
        names,
        events,
        weights,
        exclude,
        sums.excluded,
        sums.direct,
        related,
        sums.touched,
        sums.kinds,
        affinities,
        refills,
    )


def build(linked: Affinity, engaged: Engagement) -> Audiences:
    """Audiences for every product with an event, and per category (for cold start),
    from the engagement of every user with an event (only the shown users' components
    and features are read, for their reasons)."""
    config, users, names = linked.config, linked.users, linked.names
    scored = engaged.scores
    # Scores come by user code, every user of the log: checked, so they are read by code.
    if not scored.get_column(USER).equals(pl.int_range(users.len(), dtype=pl.UInt32, eager=True)):
        raise ValueError("engagement must score exactly the log's users, in code order")
    selector = _Selector(linked, linked.evidence(scored.get_column("score").round(DIGITS)))
    chosen, terms, plain = selector.select(config.cap)
    pool, stride, stats = selector.pool(selector.width), selector.stride, selector.stats
    del selector
    # Pool rows are numbered c * stride + slot; only those chosen (and the category
    # audiences' heads) get reasons: a capped run's pool can be far wider than what it uses.
    at = pl.col("c").cast(pl.Int64) * stride + pl.col("slot")
    # Selected before filtered, lazily: filtering all of the chosen rows' columns first
    # copied 3 GB at 100x the sample.
    spots = chosen.lazy().filter(~pl.col("explicit")).select(at).collect().to_series().to_numpy()
    heads = (
        pool.lazy().filter(pl.col("slot") < config.n).select(at).collect().to_series().to_numpy()
    )
    # The pool rows used, marked in an array as long as the pool (a few thousand rows
    # unless capped): a unique and a binary search over the 51M pool rows chosen at 100x
    # the sample took 2 s.
    marks = np.zeros(pool.height, dtype=np.bool_)
    marks[spots], marks[heads] = True, True
    shown = pool[np.flatnonzero(marks)]
    explicit = chosen.lazy().filter("explicit").select("p", "u", "c", "total").collect()
    picked = pl.concat([explicit, terms.drop("p")], how="horizontal")
    # Each row's reasons come from one list of texts, the picked explicit rows' then the
    # used pool rows', by position instead of a join. In NumPy, as 32-bit numbers: as a
    # Polars expression over all 57M rows at 100x, it held 1.6 GB of 64-bit temporaries.
    pooled = ~chosen.get_column("explicit").to_numpy()
    index = np.empty(chosen.height, dtype=np.uint32)
    index[~pooled] = np.arange(picked.height)
    index[pooled] = (np.cumsum(marks) + (picked.height - 1))[spots]
    del spots, pooled
    rows = chosen.select("p", "u", "rank", "total").with_columns(i=pl.Series(index))
    del chosen  # 57M rows of 7 columns at 100x the sample: let go before the reasons
    why = _engagement_reasons(engaged, pl.concat([picked.select("u"), shown.select("u")]))

    def explain(rows: pl.DataFrame) -> pl.Series:
        """The reasons of `rows`, in their order, written a slice of rows at a time: the
        texts' working columns for all 5.7M explicit rows at 100x the sample held 1 GB."""
        named = _kinds(linked, _fill(rows)).join(names, on="c", how="left", maintain_order="left")
        slices = range(0, max(named.height, 1), SLICE_ROWS)
        with ThreadPoolExecutor(2) as threads:  # a slice is written on one core
            return pl.concat(
                threads.map(lambda at: _explain(named.slice(at, SLICE_ROWS), why), slices)
            )

    shown = shown.with_columns(reasons=explain(shown))
    texts = pl.concat([explain(picked), shown.get_column("reasons")], rechunk=True)

    return Audiences(
        ranked=rows,
        ids=linked.ids,
        users=users,
        texts=texts,
        categories=shown.filter(pl.col("slot") < config.n)
        .join(names, on="c")
        .select(
            CATEGORY,
            rank=pl.col("slot") + 1,
            user_id=spelled("u", users),
            score="total",
            reasons="reasons",
        )
        .sort(CATEGORY, "rank"),
        shared=plain.join(names, on="c", maintain_order="left").select(
            "p", spelled("p", linked.ids).alias(PRODUCT), CATEGORY
        ),
        stats=stats,
    )


def _top(candidates: pl.DataFrame, n: int) -> pl.DataFrame:
    """Each product's n best rows by total, ties by user code (= user_id order), with rank."""
    rank = pl.int_range(1, pl.len() + 1, dtype=pl.UInt32).over("p")
    # Sorted by score alone, then numbered within each product: 30% faster than sorting
    # by product first. The rows come in score order, not grouped by product.
    return (
        candidates.sort("total", "u", descending=[True, False])
        .with_columns(rank=rank)
        .filter(pl.col("rank") <= n)
    )


#: Products are first ranked with pools of POOL x n users per category: one pass over
#: the users finds them (as cheaply as n), a product takes only the users it needs, and
#: few products need more (at 10x the sample, some need 4n).
POOL = 4


class _Selector:
    """Top-n per product from its explicit candidates and its category's pool, in rounds.

    Ranking uses only (p, u, total); reasons are attached once at the end. A
    product with no explicit candidate and no removed (excluded or over-cap) user
    among its pool's first n takes those n as they are ("plain": no per-product
    work). The others rank their explicit candidates with the pool. Round 1 does
    every product with a pool of width n; later rounds redo only the products
    whose top-n may lie beyond the pool (with a pool twice as wide) or that lost
    users to the cap.
    """

    def __init__(self, linked: Affinity, evidence: Evidence) -> None:
        self.products, self.of, self.evidence = linked.products, linked.of, evidence
        self.users = evidence.scored
        self.n, self.width = linked.config.n, linked.config.n
        self.categories = linked.names.height
        self.stats: dict[str, Any] = {}
        self.candidates: pl.DataFrame | None = None
        self._pools: dict[int, pl.DataFrame] = {}
        self._tables: dict[int, Csr] = {}
        self._best: tuple[int, pl.DataFrame, pl.DataFrame] = (0, pl.DataFrame(), pl.DataFrame())
        self._lock = threading.Lock()

    @property
    def stride(self) -> int:
        """Rows per category in the current pool: its width, or every user if fewer."""
        return min(self.width, self.users)

    def pool(self, width: int) -> pl.DataFrame:
        """Per category, its `width` best users by engagement + category affinity.

        Sorted by category code and `slot` (0 = best). They are among the
        category's `width` best users with affinity and the `width` best overall,
        so only those are sorted. A wider pool starts with the narrower one, so one
        pass over the users finds the best for pools up to `POOL` x n wide.
        """
        if width not in self._pools:
            if self._best[0] < width:
                reach = max(width, POOL * self.n)
                self._best = (reach, *best_users(self.evidence, self.categories, reach))
            _, near, top = self._best
            near = near.filter(pl.int_range(pl.len()).over("c") < width)
            cats = self.products.select("c").unique()
            self._pools[width] = (
                pl.concat(
                    [near.join(cats, on="c"), cats.join(top.head(width), how="cross")],
                    how="diagonal",
                )
                .sort("c", "total", "u", descending=[False, True, False])
                .unique(["c", "u"], keep="first", maintain_order=True)
                .group_by("c", maintain_order=True)
                .head(width)
                .with_columns(slot=pl.int_range(pl.len(), dtype=pl.UInt32).over("c"))
            )
        return self._pools[width]

    def _pool(self, width: int) -> Csr:
        """The pool of `width` as `kernels.topn.top_n` takes it; safe from its threads."""
        with self._lock:
            if width not in self._tables:
                pool = self.pool(width)
                self._tables[width] = Csr.of(pool, "c", self.categories, ["u", "total"])
                self.width = max(self.width, width)
            return self._tables[width]

    def select(self, cap: int | None) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """(the chosen rows (`kernels.topn.CHOSEN`) of the products with an audience of their own,
        sorted by product code and rank; the terms (`kernels.topn.TERMS`) of those with
        evidence, in their order; the plain products (p, c) by code, whose audience is
        their category pool's head)."""
        if self.evidence.cf is not None:
            return self._ranked_over_everyone()
        of = self.of.fill_null(0).to_numpy()  # a product without a category has no event
        todo = self.products.get_column("p").to_numpy()
        width, every = POOL * self.n, cap is not None
        found = top_n(self.evidence, todo, of, self._pool, self.n, width, every)
        self.candidates = found.candidates
        ranked, terms = found.chosen, found.terms
        # Gathered, not joined: at 100x the sample, 14 of 20 million products are plain.
        codes = pl.Series("p", found.plain).sort()
        plain = pl.DataFrame([codes, self.of.gather(codes).alias("c")])
        if cap is not None:  # dealing gives every product a list of its own
            (ranked, terms), plain = self._deal(ranked, cap), plain.clear()
        head = self.pool(self.width).filter(pl.col("slot") < self.n).select("c", "u")
        heads = plain.join(head.group_by("c").len(), on="c")
        full = int((ranked.get_column("rank") == self.n).sum())
        seen = np.zeros(self.evidence.e.size, dtype=bool)
        seen[ranked.get_column("u").to_numpy()] = True
        seen[head.join(plain.select("c").unique(), on="c").get_column("u").to_numpy()] = True
        self.stats = {
            "rounds": int(np.log2(found.width // width)) + 1,
            "pool_width": self.width,
            "products": self.products.height,
            "rows": ranked.height + int(heads.get_column("len").sum()),
            "products_short": self.products.height
            - full
            - heads.filter(pl.col("len") >= self.n).height,
            "products_sharing_category_audience": plain.height,
            "distinct_users": int(seen.sum()),
            "explicit_rows": int(ranked.get_column("explicit").sum()),
            "candidate_rows": found.count,
        }
        return ranked, terms, plain

    def _ranked_over_everyone(self) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
        """`select` with a collaborative term: every user has a term for every product,
        so no category pool stands for a list's tail, and each product ranks all of its
        users, as a segment does (`kernels.dense`). The cap is refused with the
        term (`hybrid.decide`)."""
        of = self.of.cast(pl.Int64).fill_null(-1).to_numpy()
        todo = self.products.get_column("p").to_numpy().astype(np.int64)
        turned = scores.by_category(self.evidence.category, self.categories)
        ranked, terms = dense.top_n(self.evidence, turned, todo, of, self.n)
        full = int((ranked.get_column("rank") == self.n).sum())
        self.stats = {
            "rounds": 1,
            "products": self.products.height,
            "rows": ranked.height,
            "products_short": self.products.height - full,
            "products_sharing_category_audience": 0,
            "distinct_users": ranked.get_column("u").n_unique(),
            "explicit_rows": ranked.height,
        }
        return ranked, terms, pl.DataFrame(schema={"p": pl.UInt32, "c": pl.UInt32})

    def _excluded(self) -> pl.DataFrame:
        """The (p, u) pairs that may not be chosen."""
        excluded = self.evidence.excluded
        p = np.repeat(np.arange(excluded.ptr.size - 1, dtype=np.uint32), np.diff(excluded.ptr))
        return pl.DataFrame({"p": p, "u": excluded.columns[0]})

    def _deal(self, chosen: pl.DataFrame, cap: int) -> tuple[pl.DataFrame, pl.DataFrame]:
        """Every product's rows and their terms (as `select` gives them), dealt so that no
        user is in more than `cap` audiences; of `chosen` only the rows with evidence count.

        Evidence first: of the chosen rows with product-level evidence, each user
        keeps the `cap` where they score highest (ties by product). The other places
        are dealt like cards from the categories' pools (see `_Dealer`), so a
        category's best users are spread over its products instead of all going to
        the same few, and a user's capacity goes to the categories where they score
        highest. The pool widens while places are open and users are left.
        """
        n = self.n
        kept = (
            chosen.filter("explicit")
            .sort("u", "total", "p", descending=[False, True, False])
            .filter(pl.int_range(pl.len()).over("u") < cap)
        )
        # A product's open places are its ranks after its kept evidence rows, one a turn.
        held = kept.group_by("p").agg(first=pl.len().cast(pl.UInt32))
        places = (
            self.products.join(held, on="p", how="left")
            .with_columns(pl.col("first").fill_null(0))
            .filter(pl.col("first") < n)
            .select("c", "p", turn=pl.int_ranges("first", n, dtype=pl.UInt32))
            .explode("turn")
            .sort("c", "turn", "p")
        )
        users = self.users
        left = np.full(self.evidence.e.size, cap, dtype=np.int64)
        taken = kept.group_by("u").len()
        np.subtract.at(left, taken.get_column("u").to_numpy(), taken.get_column("len").to_numpy())
        blocked = pl.concat([self._excluded(), kept.select("p", "u")]).join(
            places.select("p", "c").unique(), on="p"
        )
        dealer = _Dealer(places, left)
        dealt = [kept.select("p", "c", "u", "total", "slot")]
        # Twice the users the largest category needs: room for those spent elsewhere.
        most = places.group_by("c").len().select(pl.col("len").max()).item() or 0
        done, width = 0, max(self.width, 2 * (most // cap + 1))
        later = self.pool(self.width).clear()
        while dealer.open:
            width = self.width = min(width, users)
            open_ = pl.DataFrame({"c": dealer.categories()}, schema={"c": pl.UInt32})
            pool = self.pool(width).join(open_, on="c", how="semi")
            entries = pl.concat(
                [later.join(open_, on="c", how="semi"), pool.filter(pl.col("slot") >= done)]
            ).sort("total", "u", "c", descending=[True, False, False])
            # One score order across passes: an entry is dealt only once no entry beyond
            # this pool (scoring at most its last slot) could come before it.
            frontier = pool.filter(pl.col("slot") == width - 1).get_column("total").max()
            if width == users or frontier is None:
                ready, later = entries, entries.clear()
            else:
                ready = entries.filter(pl.col("total") > frontier)
                later = entries.filter(pl.col("total") <= frontier)
            near = blocked.join(ready.select("c", "u"), on=["c", "u"], how="semi")
            dealt.append(dealer.deal(ready, near))
            if width == users:
                break
            done, width = width, 2 * width
        # A dealt user with evidence on the product (below its top n) scores by it.
        assert self.candidates is not None  # asked for when there is a cap
        evidence = self.candidates.rename({"total": "e_total"})
        rows = (
            pl.concat(dealt, how="diagonal_relaxed")
            .join(evidence, on=["p", "u"], how="left")
            .select(
                "p",
                "c",
                "u",
                total=pl.coalesce("e_total", "total"),
                explicit=pl.col("e_total").is_not_null(),
                slot=pl.when(pl.col("e_total").is_null()).then("slot"),
                t_direct="t_direct",
                t_co="t_co",
                r_k="r_k",
                t_category="t_category",
            )
        )
        top = _top(rows, n).sort("p", "rank")
        return top.select(list(CHOSEN)), top.filter("explicit").select(list(TERMS))


class _Dealer:
    """Deals the open places of each category to pool entries, like cards.

    A category's places are in turn order (every product's k-th place before any
    (k+1)-th, products in code order). Going down the entries by score, each user
    takes the next open places of the entry's category, one per product, as many as
    their capacity (`left`) allows; a place they cannot take (excluded from the
    product, or already in it) waits for the next user. A loop over pool entries,
    not products: a run of places inside one turn, for a user with nothing blocked
    in the category, is taken as a slice; only the rest is looked at place by place.
    """

    def __init__(self, places: pl.DataFrame, left: np.ndarray) -> None:
        """`places`: (c, turn, p) sorted by category, turn and product."""
        self.places, self.left = places, left
        per = places.group_by("c", maintain_order=True).agg(
            "p", ends=pl.col("turn").rle().struct.field("len").cum_sum()
        )
        counts = per.get_column("p").list.len()
        cs = per.get_column("c").to_list()
        self.base = dict(zip(cs, (counts.cum_sum() - counts).to_list(), strict=True))
        self.products: dict[int, list[int]] = dict(
            zip(cs, per.get_column("p").to_list(), strict=True)
        )
        self.ends: dict[int, list[int]] = dict(
            zip(cs, per.get_column("ends").to_list(), strict=True)
        )
        self.next = dict.fromkeys(self.products, 0)
        self.waiting: dict[int, list[int]] = {c: [] for c in self.products}

    def categories(self) -> list[int]:
        """The categories with places still open."""
        return [c for c, ps in self.products.items() if self.waiting[c] or self.next[c] < len(ps)]

    @property
    def open(self) -> bool:
        return bool(self.categories())

    def deal(self, entries: pl.DataFrame, blocked: pl.DataFrame) -> pl.DataFrame:
        """(p, c, u, total, slot) for each place dealt to one of `entries` (in score
        order); `blocked` holds the (p, c, u) that may not be dealt."""
        cant = _Blocked(blocked)
        left, ends, nexts, waiting = self.left, self.ends, self.next, self.waiting
        which: list[int] = []
        spots: list[int] = []
        cs, us = entries.get_column("c").to_list(), entries.get_column("u").to_list()
        for i, (c, u) in enumerate(zip(cs, us, strict=True)):
            room = int(left[u])
            if room == 0 or c not in nexts:
                continue
            products, start = self.products[c], nexts[c]
            if start == len(products) and not waiting[c]:
                continue
            no = cant.of(c, u)
            mine = self._from_waiting(c, room, no, spots) if waiting[c] else set()
            rest = room - len(mine)
            if rest and start < len(products):
                end = ends[c][bisect.bisect_right(ends[c], start)]
                block = products[start : start + rest]
                if start + rest <= end and no.isdisjoint(block) and mine.isdisjoint(block):
                    base = self.base[c]  # inside one turn: all different
                    spots.extend(range(base + start, base + start + rest))
                    nexts[c] = start + rest
                    mine.update(block)
                else:
                    self._from_next(c, rest, no, mine, spots)
            which.extend([i] * len(mine))
            left[u] -= len(mine)
        return pl.concat(
            [self.places[spots].select("p", "c"), entries[which].select("u", "total", "slot")],
            how="horizontal",
        )

    def _from_waiting(self, c: int, room: int, no: frozenset[int], spots: list[int]) -> set[int]:
        """Up to `room` of category c's waiting places that the user can take, in turn
        order; returns their products."""
        products, waiting, base = self.products[c], self.waiting[c], self.base[c]
        mine: set[int] = set()
        kept: list[int] = []
        for i, spot in enumerate(waiting):
            if len(mine) == room:
                kept.extend(waiting[i:])
                break
            p = products[spot]
            if p in no or p in mine:
                kept.append(spot)
            else:
                mine.add(p)
                spots.append(base + spot)
        self.waiting[c] = kept
        return mine

    def _from_next(
        self, c: int, room: int, no: frozenset[int], mine: set[int], spots: list[int]
    ) -> None:
        """Up to `room` more of category c's next places, one by one; a place the user
        cannot take (blocked, or a product in `mine`) waits for the next user."""
        products, base, goal = self.products[c], self.base[c], len(mine) + room
        while len(mine) < goal and self.next[c] < len(products):
            spot = self.next[c]
            self.next[c] += 1
            p = products[spot]
            if p in no or p in mine:
                self.waiting[c].append(spot)
            else:
                mine.add(p)
                spots.append(base + spot)


class _Blocked:
    """The products each (category, user) may not be dealt, as sets made on demand."""

    NONE: frozenset[int] = frozenset()

    def __init__(self, blocked: pl.DataFrame) -> None:
        rows = blocked.sort("c", "u")
        keys = rows.group_by("c", "u", maintain_order=True).len()
        ends = keys.get_column("len").cum_sum()
        pairs = zip(keys.get_column("c").to_list(), keys.get_column("u").to_list(), strict=True)
        spans = zip((ends - keys.get_column("len")).to_list(), ends.to_list(), strict=True)
        self._spans = dict(zip(pairs, spans, strict=True))
        self._products = rows.get_column("p").to_list()

    def of(self, c: int, u: int) -> frozenset[int]:
        span = self._spans.get((c, u))
        return self.NONE if span is None else frozenset(self._products[span[0] : span[1]])


def _kinds(linked: Affinity, rows: pl.DataFrame) -> pl.DataFrame:
    """`rows` with what their reasons name: the user's heaviest event type and its count
    on the product (`d_type`, `d_n`; where the row has a direct term) and in its
    category (`k_type`, `k_n`). Looked up only for the rows shown, not every candidate,
    in the events of their users alone."""
    u, shown = linked.events.get_column(USER).to_numpy(), rows.get_column("u").to_numpy()
    theirs = np.zeros(max(u.max(initial=0), shown.max(initial=0)) + 1, dtype=np.bool_)
    theirs[shown] = True
    events = (
        linked.events.filter(pl.Series(theirs[u]))
        .lazy()
        .select(
            p=PRODUCT,
            u=USER,
            c=spelled(PRODUCT, linked.of),
            event_type=EVENT,
            w=pl.col(EVENT).replace_strict(linked.weights, default=0.0, return_dtype=pl.Float64),
            x=pl.col(EVENT).is_in(linked.exclude),
        )
    )
    on_product = rows.lazy().filter(pl.col("t_direct") > 0).select("p", "u").unique()
    in_category = rows.lazy().select("u", "c").unique()
    direct, category = pl.collect_all(
        [
            _by_type(
                events.filter(~pl.col("x")).join(on_product, on=["p", "u"], how="semi"),
                ["p", "u"],
                "d",
            ),
            _by_type(events.join(in_category, on=["u", "c"], how="semi"), ["u", "c"], "k"),
        ]
    )
    if linked.refills is not None:  # repeat mode: when the user's last event on it was
        direct = direct.join(
            linked.refills.select("p", "u", d_days="days"), on=["p", "u"], how="left"
        )
    return rows.join(direct, on=["p", "u"], how="left", maintain_order="left").join(
        category, on=["u", "c"], how="left", maintain_order="left"
    )


def _engagement_reasons(engaged: Engagement, rows: pl.DataFrame) -> pl.DataFrame:
    """Per user in `rows`: the two largest positive engagement components (ties by name),
    `t_e0`, `t_e1`, and their texts, `r_e0`, `r_e1`. Only those two texts are written per
    user: every component's text for every user shown took 12 GB at 100x the sample."""
    needed = rows.select(pl.col("u").unique().sort().alias(USER))
    parts = engaged.components.join(needed.lazy(), on=USER).sort(USER).collect(engine="streaming")
    quoted = engaged.features.join(needed.lazy(), on=USER, how="semi").sort(USER).collect()
    return engagement_why(parts, quoted)


def engagement_why(parts: pl.DataFrame, quoted: pl.DataFrame) -> pl.DataFrame:
    """`_engagement_reasons` of the users of `parts` (user_id and their `c_<name>`
    components) and `quoted` (their raw features), both in the same user order. Rows
    are independent: the Spark engine runs this on its executors, a batch at a time."""
    names = sorted(c.removeprefix("c_") for c in parts.columns if c.startswith("c_"))
    columns = [parts.get_column(f"c_{name}").to_numpy() for name in names]
    terms, which = _two_largest(columns, parts.height)
    said = [reason_text(name) for name in names]
    why = parts.select(u=USER)
    for slot in (0, 1):
        named = pl.Series(f"t_e{slot}", np.where(which[slot] >= 0, terms[slot], np.nan))
        text = _spelled(quoted, which[slot], said).alias(f"r_e{slot}")
        why = why.with_columns(named.fill_nan(None), text)
    return why


def _explain(rows: pl.DataFrame, why: pl.DataFrame) -> pl.Series:
    """The reasons of `rows`: the texts of each row's two largest positive contributions."""
    return explained(rows.join(why, on="u", how="left", maintain_order="left"))


#: A row's terms, in the order their reasons are picked (a tie goes to the earlier).
_TERMS = ("t_direct", "t_co", "t_cf", "t_category", "t_e0", "t_e1")


def explained(joined: pl.DataFrame) -> pl.Series:
    """`_explain` of rows already joined with their users' engagement reasons. Rows are
    independent: the Spark engine runs this on its executors, a batch at a time."""
    terms = list(_TERMS)
    on_product = pl.format("{} {} on this product", "d_n", _plural("d_type", "d_n"))
    if "d_days" in joined.columns:  # repeat mode
        days = pl.col("d_days").round(0).cast(pl.Int64)
        on_product = pl.format("{}, the last {} days ago", on_product, days)
    texts = [
        on_product,
        pl.format(
            "{} related product{}",
            "r_k",
            pl.when(pl.col("r_k") == 1).then(pl.lit("")).otherwise(pl.lit("s")),
        ),
        pl.lit(CF_REASON),
        pl.format("{} {} in {}", "k_n", _plural("k_type", "k_n"), CATEGORY),
        pl.col("r_e0"),
        pl.col("r_e1"),
    ]
    joined = joined.with_columns(pl.col(terms).fill_null(0.0))
    # Rounded like the totals, so two equal terms tie (the first named wins) whatever
    # order their sums were added in.
    columns = [joined.get_column(t).round(DIGITS).to_numpy() for t in terms]
    _, which = _two_largest(columns, joined.height)
    pair = pl.DataFrame([_spelled(joined, which[slot], texts).alias(f"r{slot}") for slot in (0, 1)])
    # A row has a second reason only with a first. The list is made by joining the two
    # texts and splitting them again: concat_list(...).list.drop_nulls() took 7 times
    # as long. A text holding the separator (say, a category named with it) cannot be
    # split back, so then the list is made the slow way.
    if pair.select(pl.any_horizontal(pl.all().str.contains(_SEP, literal=True).any())).item():
        return pair.select(pl.concat_list("r0", "r1").list.drop_nulls()).to_series()
    joined_texts = pl.concat_str("r0", "r1", separator=_SEP, ignore_nulls=True)
    none = pl.lit([], dtype=pl.List(pl.String))
    listed = pl.when(pl.col("r0").is_null()).then(none).otherwise(joined_texts.str.split(_SEP))
    return pair.select(listed).to_series()


#: Rows whose reasons are written at a time (see `build`).
SLICE_ROWS = 1_000_000
#: Joins a row's two reason texts before they are split into a list (see `_explain`).
_SEP = "\x1f"


def _two_largest(
    columns: list[npt.NDArray[np.float64]], height: int
) -> tuple[list[npt.NDArray[np.float64]], list[npt.NDArray[np.int64]]]:
    """Per row, the two largest positive values among `columns` and their column numbers
    (-1: none), largest first; a tie goes to the earlier column. One column at a time:
    sorting a rows x columns matrix took gigabytes at 100x the sample."""
    best = [np.zeros(height), np.zeros(height)]
    which = [np.full(height, -1), np.full(height, -1)]
    for j, values in enumerate(columns):
        top, second = values > best[0], (values > best[1]) & (values <= best[0])
        best[1] = np.where(top, best[0], np.where(second, values, best[1]))
        which[1] = np.where(top, which[0], np.where(second, j, which[1]))
        best[0], which[0] = np.where(top, values, best[0]), np.where(top, j, which[0])
    return best, which


def _spelled(frame: pl.DataFrame, which: npt.NDArray[np.int64], texts: list[pl.Expr]) -> pl.Series:
    """Per row of `frame`, the text `texts[which]` (null where -1). Each text is written
    only for its own rows, not for every row and then picked."""
    out = pl.Series([None] * frame.height, dtype=pl.String)
    frame = frame.rechunk()  # Polars 2.1 panics formatting a filtered two-chunk column
    for i, text in enumerate(texts):
        mine = which == i
        if mine.any():
            # Lazily, so that only the columns the text names are filtered.
            said = frame.lazy().filter(pl.Series(mine)).select(text).collect().to_series()
            out = out.scatter(np.flatnonzero(mine), said)
    return out


def reason_text(name: str) -> pl.Expr:
    """The text of engagement component `name` ("3 interactions"), from the raw features."""

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
    return known.get(name, pl.format(f"{name} {{}}", value(name, 2)))
