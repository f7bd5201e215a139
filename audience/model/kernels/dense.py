"""Products' best users over every user when the model has a collaborative term,
without summing every user's ALS score exactly: the stored lists of such a model, and
`segments.best_users` at a backtest's or a weight choice's depth.

With the term every user has product-level evidence for every product, so no category
pool can stand in for a list's tail (`topn`): each product's top n is taken over every
user. A segment's pass (`scores.scored`) sums every user's ALS score s in float64,
factor by factor, and allocates its arrays anew, a product at a time. Here a batch of
products is scored in float32 first, by one BLAS matrix product, which bounds each
user's exact s:

    |s32 - s| <= GAMMA * |item| * |user|

(a dot product's rounding error is at most k u sum |x_i y_i|, and Cauchy-Schwarz bounds
the sum by the norms; GAMMA is twice (k + 1) u, u float32's unit roundoff). The term
weight * s / (s + half) rises at most weight / half times as fast as s, so a user
without evidence has its total within a margin of its float32 estimate (plus `SLACK`
for the rounding to 12 decimals). The users with evidence are summed exactly; from
their totals and the others' lower ends comes a bound that n users reach (the n-th best
of runs' highest lower ends, `BLOCK`), so only the users whose upper ends reach it can
be among the n best, and only they are summed exactly, with `scores`' own terms (about
one a product on the loyal sample, besides the ~300 with evidence). The n best are
those of the segments' pass, bit for bit (tested), in one compiled pass per batch.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt
import polars as pl
from threadpoolctl import threadpool_limits

from audience.model.kernels.csr import Csr, fixed, in_threads
from audience.model.kernels.scores import (
    _best,
    _descending,
    candidates,
    category_term,
    cf_term,
    pooled,
    with_cf,
    with_evidence,
)
from audience.model.kernels.topn import CHOSEN, TERMS, Evidence

#: Products per unit of work (a thread takes one at a time).
UNIT = 256
#: Products scored by one float32 matrix product: 32 x 50,000 users is 6 MB.
BATCH = 32
#: Users per run of the tail's bound: the bound from a quarter of the users, n runs'
#: maxima, is looser than the n-th best total, and costs a few more users summed exactly.
BLOCK = 64
#: Totals are rounded to 12 decimals and summed in float64: a margin far above both.
SLACK = 1e-9
#: The terms of each stored row: `topn.TERMS` and the collaborative one.
TERMS_CF = TERMS | pl.Schema({"t_cf": pl.Float64})


class Lists(NamedTuple):
    """Products' best users, a row each, by product and rank (`lists`)."""

    at: npt.NDArray[np.int64]  # the product's place in the products asked for
    rank: npt.NDArray[np.int64]  # 1 = best
    u: npt.NDArray[np.int64]
    total: npt.NDArray[np.float64]
    direct: npt.NDArray[np.float64]  # the direct term
    co: npt.NDArray[np.float64]  # the co-interaction sum r (before saturation)
    related: npt.NDArray[np.int64]  # how many related products brought the user
    category: npt.NDArray[np.float64]  # the category term
    s: npt.NDArray[np.float64]  # ALS's score


def lists(
    evidence: Evidence,
    turned: Csr,
    products: npt.NDArray[np.int64],
    of: npt.NDArray[np.int64],
    n: int,
) -> Lists:
    """Each of `products`' (codes, with evidence) n best users, best first, ties by the
    smaller code (the segments' ranking); `of`: category code by product code (< 0:
    none), `turned`: `scores.by_category(evidence.category)`. The evidence must have a
    collaborative term."""
    cf = evidence.cf
    assert cf is not None and cf.weight > 0
    users = evidence.e.size
    k = cf.items.shape[1]
    gamma = 2 * (k + 1) * float(np.finfo(np.float32).eps) / 2  # eps / 2: unit roundoff
    norms = np.sqrt(np.einsum("ku,ku->u", cf.users, cf.users, dtype=np.float64))
    e = fixed(evidence.e)
    tables = [*evidence.arrays(), *turned.flat(), e, np.where(np.isnan(e), -np.inf, e)]
    by_user = cf.by_user
    most = int(evidence.reach(products.astype(np.uint32)).max(initial=0))  # with evidence

    def scratch() -> list[npt.NDArray[Any]]:
        # A thread's working arrays, back to their state after each product.
        slot, banned = np.full(users, -1, np.int64), np.zeros(users, np.bool_)
        picked = np.empty(users + most, np.int64)
        return [np.empty(users), np.empty(users + most), picked, slot, banned]

    def args_of(todo: npt.NDArray[np.int64]) -> list[Any]:
        items = cf.items[todo]
        approx = items @ cf.users  # float32, by BLAS
        error = gamma * np.sqrt(np.einsum("pk,pk->p", items, items, dtype=np.float64))
        args = [*tables, float(evidence.co), float(evidence.half), todo, of[todo]]
        return [*args, approx, norms, error, by_user, items, float(cf.weight), float(cf.half), n]

    def unit(at: int, own: list[npt.NDArray[Any]]) -> list[tuple[Any, ...]]:
        found = []
        for start in range(at * UNIT, min((at + 1) * UNIT, products.size), BATCH):
            todo = products[start : start + BATCH]
            counts, *rows = _lists(*[*args_of(todo), *own])
            found.append((start + np.repeat(np.arange(todo.size), counts), *rows))
        return found

    with threadpool_limits(1, "blas"):  # each thread runs its own matrix products
        done = in_threads(-(-products.size // UNIT), scratch, unit)
    parts = [part for unit_parts in done for part in unit_parts]
    if not parts:  # no products: the columns of a batch without rows
        parts = [(np.zeros(0, np.int64), *_lists(*[*args_of(products[:0]), *scratch()])[1:])]
    return Lists(*(np.concatenate(column) for column in zip(*parts, strict=True)))


def top_n(
    evidence: Evidence,
    turned: Csr,
    products: npt.NDArray[np.int64],
    of: npt.NDArray[np.int64],
    n: int,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Each of `products`' top n (`lists`), in their order: the rows (`topn.CHOSEN`, all
    with evidence) and their terms (`TERMS_CF`, in their order)."""
    found = lists(evidence, turned, products, of, n)
    cf = evidence.cf
    assert cf is not None
    p = products[found.at]
    r, k = found.co, found.related
    rows = pl.DataFrame(
        {
            "p": p,
            "c": np.maximum(of[p], 0),
            "u": found.u,
            "total": found.total,
            "explicit": np.ones(p.size, np.bool_),
            "rank": found.rank,
            "slot": pl.Series([None] * p.size, dtype=pl.UInt32),
            "t_direct": found.direct,
            "t_co": np.where(k > 0, evidence.co * (r / (r + evidence.half)), 0.0),
            "r_k": k,
            "t_category": found.category,
            "t_cf": cf.term(found.s),
        }
    )
    return (
        rows.select(pl.col(key).cast(t) for key, t in CHOSEN.items()),
        rows.select(pl.col(key).cast(t) for key, t in TERMS_CF.items()),
    )


@numba.njit(nogil=True, cache=True)
def _lists(
    rel_ptr: Any,
    rel_q: Any,
    rel_cos: Any,
    t_ptr: Any,
    t_u: Any,
    t_w: Any,
    d_ptr: Any,
    d_u: Any,
    d_t: Any,
    x_ptr: Any,
    x_u: Any,
    k_ptr: Any,
    k_c: Any,
    k_t: Any,
    kc_ptr: Any,
    kc_u: Any,
    kc_t: Any,
    e: Any,
    e_pool: Any,
    co: float,
    half: float,
    products: Any,
    of: Any,
    approx: Any,
    norms: Any,
    error: Any,
    by_user: Any,
    items: Any,
    weight: float,
    cf_half: float,
    n: int,
    out: Any,
    lo: Any,
    picked: Any,
    slot: Any,
    banned: Any,
) -> Any:
    """(rows per product, then `Lists`' columns from rank on) for a batch of products;
    `approx` their float32 scores of every user, `error` GAMMA * their items' norms.
    `of` their categories. `out`, `lo` and `picked` (users + products' evidence long),
    `slot` (all -1) and `banned` (all False) are the thread's scratch."""
    rows = products.size * n
    ranks, ru, rk = np.empty((3, rows), np.int64)
    rt, rd, rr, rc, rs = np.empty((5, rows))
    counts = np.zeros(products.size, np.int64)
    at = 0
    for i in range(products.size):
        p, c, item = products[i], of[i], items[i]
        out[:] = e_pool
        pooled(out, e, kc_ptr, kc_u, kc_t, c, np.zeros(0))
        for j in range(x_ptr[p], x_ptr[p + 1]):
            banned[x_u[j]] = True
        bu, bdirect, bco, bk = candidates(
            rel_ptr, rel_q, rel_cos, t_ptr, t_u, t_w, d_ptr, d_u, d_t, p, banned, slot
        )
        bs = np.zeros(bu.size)
        for s_ in range(bu.size):  # as `scores._totals` sums them
            u = bu[s_]
            bs[s_] = _als_one(by_user, item, u)
            category = category_term(k_ptr, k_c, k_t, u, c)
            out[u] = with_evidence(
                out[u],
                e[u],
                category,
                bdirect[s_],
                bco[s_],
                bk[s_],
                co,
                half,
                bs[s_],
                weight,
                cf_half,
            )
        # The tail: the n-th best of the highest lower ends (the exact total, with
        # evidence) of runs of BLOCK users, one run in 4: n users reach it, so it is a
        # bound that holds, and a run's maximum is found without branches.
        slope = error[i] * weight / cf_half
        m = 0
        for start in range(0, out.size, 4 * BLOCK):
            high = -np.inf
            for u in range(start, min(start + BLOCK, out.size)):
                v = max(np.float64(approx[i, u]), 0.0)
                low = out[u] + cf_term(v, weight, cf_half) - (slope * norms[u] + SLACK)
                low = out[u] if slot[u] >= 0 else low
                high = max(high, -np.inf if banned[u] else low)
            lo[m] = high
            m += 1
        kept = _best(lo[:m], n)[0]
        tail = kept.min() if kept.size == n else -np.inf
        # The candidates: with evidence, then those whose upper ends reach the tail.
        reach = bu.size
        for u in range(out.size):
            v = max(np.float64(approx[i, u]), 0.0)
            hi = out[u] + cf_term(v, weight, cf_half) + (slope * norms[u] + SLACK)
            if (slot[u] < 0) & (hi >= tail) & ~banned[u]:
                picked[reach] = u
                reach += 1
        picked[: bu.size] = bu
        cu = picked[:reach]
        cs = np.empty(reach)
        cs[: bu.size] = bs
        for j in range(bu.size, reach):
            u = cu[j]
            cs[j] = _als_one(by_user, item, u)
            category = category_term(k_ptr, k_c, k_t, u, c)
            out[u] = with_cf(out[u], e[u], cs[j], category, -1, weight, cf_half)
        by_code = np.argsort(cu)  # codes ascending, so that a stable sort breaks ties so
        order = by_code[_descending(out[cu[by_code]])]
        for j in range(cu.size):
            u = cu[order[j]]
            if counts[i] == n or not np.isfinite(out[u]):
                break
            s_ = slot[u]
            ranks[at] = counts[i] + 1
            ru[at], rt[at], rs[at] = u, out[u], cs[order[j]]
            rd[at] = bdirect[s_] if s_ >= 0 else 0.0
            rr[at] = bco[s_] if s_ >= 0 else 0.0
            rk[at] = bk[s_] if s_ >= 0 else 0
            rc[at] = category_term(k_ptr, k_c, k_t, u, c)
            counts[i] += 1
            at += 1
        for u in bu:
            slot[u] = -1
        for j in range(x_ptr[p], x_ptr[p + 1]):
            banned[x_u[j]] = False
    return counts, ranks[:at], ru[:at], rt[:at], rd[:at], rr[:at], rk[:at], rc[:at], rs[:at]


@numba.njit(nogil=True, cache=True, inline="always")
def _als_one(by_user: Any, item: Any, u: int) -> float:
    """ALS's score of user u (`by_user`: users x factors), summed as the segments' pass
    sums it (`scores._als_all`): the same bits."""
    s = 0.0
    for k in range(item.size):
        s += np.float64(by_user[u, k]) * np.float64(item[k])
    return s
