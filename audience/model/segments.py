"""Segments: any product's audience at any depth, ranked as the stored lists are.

`audience train` stores each product's best n users. A campaign needs thousands, so
train also keeps the evidence its ranking reads (`TABLES`), and `Ranking` scores every
known user for one product from it with `kernels.scores`: the same terms, summed in the
same order and rounded alike, so the first n users of a segment are the stored list
(the cap of `--cap` governs the stored lists only). Per product that is one pass over
its evidence and the users' category terms: ~2-6 ms on the sample log.

    segment_related   p, q, cos      each product's related products
    segment_touched   q, u, w, kinds each (product, user) pair: summed weight, event types
    segment_direct    p, u, t        the direct terms
    segment_category  u, c, t        the category terms
    segment_codes     c, category    category codes (products' codes: `products` order)
    segment_cf_users     x           ALS's factors by user code, and by product code,
    segment_cf_products  x           when the model has a collaborative term (else empty;
                                     its weight and half point are in model.json's `cf`)

What the other tables hold already is not written again: a product's excluded users
are its pairs with an excluding event type (`kinds`, and the model's `exclude`), and
each user's engagement as ranked is `user_scores`' score, rounded as `build` rounds it.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import polars as pl

from audience import artifact
from audience.data.schema import CATEGORY, EVENT, PRODUCT, USER
from audience.model.audiences import DIGITS, NO_CATEGORY, Affinity, AudienceConfig
from audience.model.kernels import dense, scores
from audience.model.kernels.csr import THREADS, Csr
from audience.model.kernels.scores import by_category, totals
from audience.model.kernels.topn import Collaborative, Evidence
from audience.model.scoring import Engagement

TABLES: Final = artifact.SEGMENT_TABLES


def event_types(events: pl.DataFrame) -> list[str]:
    """The event types of a coded log by code: bit k of `kinds` is type k."""
    types = events.get_column(EVENT).dtype
    assert isinstance(types, pl.Enum)  # as `audience.model.codes.coded` makes it
    return [str(t) for t in types.categories.to_list()]


def export(linked: Affinity) -> dict[str, pl.DataFrame]:
    """The segment tables of a trained model (`linked`'s evidence)."""
    touched = linked.touched.frame("q", ["u", "w"])
    return {
        "segment_related": linked.related.frame("p", ["q", "cos"]),
        "segment_touched": touched.with_columns(kinds=pl.Series(linked.kinds)),
        "segment_direct": linked.direct.frame("p", ["u", "t"]),
        "segment_category": linked.category.frame("u", ["c", "t"]),
        "segment_codes": linked.names.select(pl.col("c").cast(pl.UInt32), CATEGORY),
        **factor_tables(linked.collaborative),
    }


def factor_tables(cf: Collaborative | None) -> dict[str, pl.DataFrame]:
    """The collaborative term's factor tables (empty without the term)."""
    users, items = (cf.users.T, cf.items) if cf is not None else (_NO_FACTORS, _NO_FACTORS)
    return {
        "segment_cf_users": pl.DataFrame({"x": pl.Series(np.ascontiguousarray(users))}),
        "segment_cf_products": pl.DataFrame({"x": pl.Series(np.ascontiguousarray(items))}),
    }


_NO_FACTORS = np.zeros((0, 1), np.float32)


def _collaborative(
    tables: dict[str, pl.DataFrame], model: dict[str, Any], users: int, products: int
) -> Collaborative | None:
    """The collaborative term of an artifact's tables and model.json, if it has one."""
    by_user, by_product = tables["segment_cf_users"], tables["segment_cf_products"]
    if by_user.is_empty():
        return None
    if (by_user.height, by_product.height) != (users, products):
        raise ValueError(
            f"the factors cover {by_user.height} users and {by_product.height} products, "
            f"the model {users} and {products}"
        )
    cf = model["cf"]
    return Collaborative(
        np.ascontiguousarray(by_user.get_column("x").to_numpy().T, dtype=np.float32),
        np.ascontiguousarray(by_product.get_column("x").to_numpy(), dtype=np.float32),
        float(cf["weight"]),
        float(cf["half"]),
    )


def _bits(types: list[str], names: list[str]) -> int:
    """The mask of event types `names` (bit k: type k of `types`)."""
    return sum(1 << types.index(t) for t in names if t in types)


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return None if values is None else tuple(values)


@dataclass(frozen=True)
class Ranking:
    """A trained model's segment evidence, loaded: ranks every known user for a product."""

    evidence: Evidence
    turned: Csr  # the category terms by category (`kernels.scores.by_category`)
    users: pl.Series  # user_id by code
    products: pl.Series  # product_id by code (sorted: codes are in id order)
    of: npt.NDArray[np.int64]  # category code by product code (-1: none)
    categories: dict[str, int]  # category -> code
    kinds: npt.NDArray[np.uint32]  # event-type bits, beside evidence.touched's entries
    types: list[str]  # event type by bit

    @classmethod
    def of_tables(
        cls,
        tables: dict[str, pl.DataFrame],
        model: dict[str, Any],
    ) -> Ranking:
        """From an artifact's tables (`user_scores` and `products` in code order, and the
        segment tables) and its `model.json`."""
        products, scores = tables["products"], tables["user_scores"]
        users = scores.get_column(USER)
        fields = model["audiences"]
        config = AudienceConfig(**fields | {"exclude": _tuple(fields["exclude"])})
        types = list(model["event_types"])
        n_products, n_users = products.height, users.len()
        if not products.get_column(PRODUCT).is_sorted():
            raise ValueError("the products table must be in code order, which is id order")
        touched = tables["segment_touched"]
        # A product's excluded users: its pairs with an excluding type, as `affinity` says.
        bits = _bits(types, config.excluding(types))
        excluded = touched.filter((pl.col("kinds") & bits) != 0).select(p="q", u="u")
        evidence = Evidence(
            related=Csr.of(tables["segment_related"], "p", n_products, ["q", "cos"]),
            touched=Csr.of(touched, "q", n_products, ["u", "w"]),
            direct=Csr.of(tables["segment_direct"], "p", n_products, ["u", "t"]),
            excluded=Csr.of(excluded, "p", n_products, ["u"]),
            category=Csr.of(tables["segment_category"], "u", n_users, ["c", "t"]),
            e=scores.get_column("score").round(DIGITS).to_numpy().astype(np.float64),
            co=config.co,
            half=config.half,
            cf=_collaborative(tables, model, n_users, n_products),
        )
        codes = tables["segment_codes"]
        categories = dict(zip(codes.get_column(CATEGORY), codes.get_column("c"), strict=True))
        named = products.get_column(CATEGORY).fill_null(NO_CATEGORY)
        of = named.replace_strict(categories, default=-1, return_dtype=pl.Int64).to_numpy()
        return cls(
            evidence=evidence,
            turned=by_category(evidence.category, codes.height),
            users=users,
            products=products.get_column(PRODUCT),
            of=of,
            categories={str(k): int(v) for k, v in categories.items()},
            kinds=touched.get_column("kinds").to_numpy(),
            types=types,
        )

    def code(self, product_id: str) -> int | None:
        """The product's code, found by binary search (no dict of every product: a load
        allocates columns, not objects), or None."""
        at = int(self.products.search_sorted(product_id))
        known = at < self.products.len() and self.products[at] == product_id
        return at if known else None

    def product(self, product_id: str) -> npt.NDArray[np.float64]:
        """Every user's total for a product with evidence (-inf: never named)."""
        p = self.code(product_id)
        if p is None:
            raise KeyError(product_id)
        return totals(self.evidence, self.turned, p, int(self.of[p]))[0]

    def category(self, category: str) -> npt.NDArray[np.float64]:
        """Every user's total for a product known only by its category."""
        return totals(self.evidence, self.turned, -1, self.categories[category])[0]

    def touched_with(self, product_id: str, types: list[str]) -> npt.NDArray[np.int64]:
        """The users who had an event of one of `types` with the product."""
        p = self.code(product_id)
        if p is None:
            return np.zeros(0, np.int64)
        touched = self.evidence.touched
        start, end = touched.ptr[p], touched.ptr[p + 1]
        kinds = self.kinds[start:end].astype(np.int64)
        users = touched.columns[0][start:end]
        found: npt.NDArray[np.int64] = users[(kinds & _bits(self.types, types)) != 0].astype(
            np.int64
        )
        return found


def best_users(
    linked: Affinity, engaged: Engagement, products: npt.NDArray[np.int64], k: int
) -> npt.NDArray[np.int64]:
    """Each of `products`' (codes) top k users (codes; -1 past the end), ranked at that
    depth on demand as segments are (`kernels.scores`, or with a collaborative term
    `kernels.dense`, which ranks alike): the stored lists' ranking."""
    evidence = linked.evidence(engaged.scores.get_column("score").round(DIGITS))
    of = linked.of.cast(pl.Int64).fill_null(-1).to_numpy()
    turned = scores.by_category(evidence.category, linked.names.height)
    out = np.full((products.size, k), -1, dtype=np.int64)
    if evidence.cf is not None and evidence.cf.weight > 0:
        found = dense.lists(evidence, turned, products, of, k)
        out[found.at, found.rank - 1] = found.u
        return out

    def rank(i: int) -> None:
        p = int(products[i])
        best = scores.top(scores.totals(evidence, turned, p, int(of[p]))[0], k)
        out[i, : best.size] = best

    with ThreadPoolExecutor(THREADS) as threads:  # the pass releases the GIL
        list(threads.map(rank, range(products.size)))
    return out
