"""Each product's top n users, in one compiled pass over the products (numba).

For every product p, its candidates with product-level evidence (its direct users,
and the users of its related products) are spelled out, scored, and merged with its
category's pool (the category's best users by engagement + category affinity); the
score is described in `audience.model.audiences`. As a Polars plan, the same work (joins
and group-bys over 108 million (product, user) rows at 100x the sample) took about
two minutes; this loop reads each product's evidence once, from arrays sorted by
product, and keeps its best n as it goes: ~15 s at 100x. It runs in machine code on
two threads, never in Python.

Every input is a CSR table: row k's entries are `ptr[k]:ptr[k + 1]` of each column.
Users are coded in id order, so "ties by user_id" is "ties by the smaller code".
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import polars as pl

from audience.model.kernels.csr import Csr, before, fixed, in_threads, keep_best

#: A product's state after a pass: its own top n (RANKED), its category pool's head as
#: it is (PLAIN: no candidate with evidence and no excluded user in the head), or SHORT
#: (its top n may lie beyond the pool: to redo with a wider one).
RANKED, PLAIN, SHORT = 0, 1, 2
#: Products per unit of work; a unit's chosen rows (n per product) are held until done.
CHUNK = 100_000
#: What a user is to the product at hand, in the low 32 bits of its `mark` (see `_rank`).
_LOW = (1 << 32) - 1
_BANNED = _LOW
_OTHER = _LOW - 1
#: Totals are rounded to 12 decimals before ranking, as `audiences.DIGITS` says, the way
#: Polars' round does (half to even).
_SCALE = 1e12

#: A chosen row: product, its category, user, total, whether it is a candidate with
#: evidence (else a pool row, with its slot), and its rank.
CHOSEN = pl.Schema(
    {
        "p": pl.UInt32,
        "c": pl.UInt32,
        "u": pl.UInt32,
        "total": pl.Float64,
        "explicit": pl.Boolean,
        "slot": pl.UInt32,
        "rank": pl.UInt32,
    }
)
#: The terms of a chosen row with evidence, a row each, in their order (with its product).
#: Pool rows have none: nine tenths of the chosen rows at 100x the sample (57M) are pool
#: rows, and their zero terms took 1.4 GB.
TERMS = pl.Schema(
    {
        "p": pl.UInt32,
        "t_direct": pl.Float64,
        "t_co": pl.Float64,
        "r_k": pl.UInt32,
        "t_category": pl.Float64,
    }
)
#: A candidate with evidence (all of them are returned on request, for the cap).
CANDIDATE = pl.Schema({k: (CHOSEN | TERMS)[k] for k in ("p", "u", "total", *list(TERMS)[1:])})


@dataclass(frozen=True)
class Collaborative:
    """The collaborative term (`audience.model.hybrid`) from ALS's factors: every pair
    (p, u) has the score s = items[p] . users[:, u], summed in float64 over the factors
    in order (the same bits on any machine), and where s > 0 the term
    weight * s / (s + half)."""

    users: npt.NDArray[np.float32]  # factors x users, factor-major: one product's s is
    # a pass over contiguous rows
    items: npt.NDArray[np.float32]  # products x factors (a zero row: no term)
    weight: float
    half: float

    @functools.cached_property
    def by_user(self) -> npt.NDArray[np.float32]:
        """`users` turned around, users x factors: one user's factors are adjacent (a
        pass that scores a few users reads them from 2 cache lines instead of 32)."""
        return np.ascontiguousarray(self.users.T)

    def scores(self, p: int, users: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """ALS's score of `users` for product code p, summed as the compiled pass sums
        it (float64, in factor order): the same bits."""
        s = np.zeros(users.size)
        for k, y in enumerate(self.items[p].astype(np.float64)):
            s += self.users[k, users].astype(np.float64) * y
        return s

    def term(self, s: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The term of ALS scores `s`: weight * s / (s + half) where s > 0, else 0."""
        return np.where(s > 0, self.weight * (s / (s + self.half)), 0.0)


@dataclass(frozen=True)
class Evidence:
    """What ranks a product's users besides their engagement `e` (by user code; NaN:
    not scored, never a candidate): related p -> (q, cos); touched q -> (u, w); direct
    p -> (u, t_direct); excluded p -> (u); category u -> (c, t_category); the
    collaborative term, when the model has one (`cf`)."""

    related: Csr
    touched: Csr
    direct: Csr
    excluded: Csr
    category: Csr
    e: npt.NDArray[np.float64]
    co: float
    half: float
    cf: Collaborative | None = None

    def arrays(self) -> list[Any]:
        """The five tables' arrays, in the order the compiled passes take them (`topn`'s
        and `scores`')."""
        tables = (self.related, self.touched, self.direct, self.excluded, self.category)
        return [a for t in tables for a in t.flat()]

    @functools.cached_property
    def scored(self) -> int:
        """How many users are scored (the rest are never candidates)."""
        return int(np.count_nonzero(~np.isnan(self.e)))

    def reach(self, todo: npt.NDArray[np.uint32]) -> npt.NDArray[np.int64]:
        """Per product of `todo`, at most how many candidates it has: its direct users
        plus the users of each of its related products."""
        related, touched = self.related, self.touched
        brings = np.zeros(related.columns[0].size + 1, dtype=np.int64)
        np.cumsum(np.diff(touched.ptr)[related.columns[0]], out=brings[1:])
        todo = todo.astype(np.int64)
        direct = self.direct.ptr[todo + 1] - self.direct.ptr[todo]
        return brings[related.ptr[todo + 1]] - brings[related.ptr[todo]] + direct


@dataclass(frozen=True)
class Ranked:
    """Every product's top n, or that it takes its category pool's head as it is."""

    chosen: pl.DataFrame  # CHOSEN, by product and rank: the products with a list of their own
    terms: pl.DataFrame  # TERMS of the chosen rows with evidence, in their order
    plain: npt.NDArray[np.uint32]  # the products that take their category pool's head
    candidates: pl.DataFrame | None  # CANDIDATE: every candidate with evidence, if asked
    count: int  # candidates with evidence that are not excluded
    width: int  # the widest pool used


def top_n(
    evidence: Evidence,
    todo: npt.NDArray[np.uint32],
    of: npt.NDArray[np.uint32],
    pools: Callable[[int], Csr],
    n: int,
    width: int,
    every: bool = False,
) -> Ranked:
    """Rank the products `todo` (codes, ascending; `of`: each product code's category).

    `pools(width)` holds each category's `width` best users by engagement + category
    affinity, as (u, total), best first (a wider pool starts with a narrower one). A
    product is ranked with a pool of `width` (at least n); if its top n may lie beyond the
    pool (its users there were excluded, say), again with one twice as wide, and so on.
    With `every`, every candidate with evidence is returned too (the cap needs them all)."""
    reach = evidence.reach(todo)
    largest = int(reach.max()) if reach.size else 0
    units = [slice(at, at + CHUNK) for at in range(0, todo.size, CHUNK)]
    flat = [*evidence.arrays(), fixed(evidence.e), float(evidence.co), float(evidence.half)]
    todo, of = fixed(todo), fixed(of)

    def unit(k: int, scratch: list[Any]) -> tuple[Any, ...]:
        """(chosen rows, their terms, plain products, candidates, their count, widest pool)
        of unit k."""
        products, wide = todo[units[k]], width
        bound = int(reach[units[k]].sum()) if every else -1
        chosen: list[pl.DataFrame] = []
        terms: list[pl.DataFrame] = []
        plain: list[npt.NDArray[np.uint32]] = []
        found: pl.DataFrame | None = None
        count = 0
        while products.size:
            # A pool of every scored user: no product is short.
            exact = -1 if wide >= evidence.scored else wide
            m, t, state, *out = _rank(  # type: ignore[call-arg]
                products, of, *flat, *pools(wide).flat(), exact, n, bound, *scratch
            )
            chosen.append(_frame(tuple(column[:m].copy() for column in scratch[2]), CHOSEN))
            terms.append(_frame(tuple(column[:t].copy() for column in scratch[3]), TERMS))
            plain.append(products[state == PLAIN])
            if wide == width:  # the first round: each candidate is counted (and kept) once
                found, count = (_frame(out[:7], CANDIDATE) if every else None), out[7]
            bound, products = -1, products[state == SHORT]
            wide = wide * 2 if products.size else wide
        # Each round's rows are in product order, and a product's are all from one round:
        # merged, not sorted, the terms in the same order as their rows.
        rows, kept = chosen[0], terms[0]
        for again, more in zip(chosen[1:], terms[1:], strict=True):
            rows = rows.set_sorted("p").merge_sorted(again.set_sorted("p"), key="p")
            kept = kept.set_sorted("p").merge_sorted(more.set_sorted("p"), key="p")
        return rows, kept, np.concatenate(plain), found, count, wide

    def scratch() -> list[Any]:
        """The per-user `mark` and the `clock` of `_rank`, the buffers of its chosen rows
        and their terms (n per product of a unit) and of one product's candidates (at most
        `largest`), made once per thread: made anew for each unit, Linux handed the same
        memory back and forth, and the page faults cost more than the pass."""
        rows = n * min(CHUNK, todo.size)
        chosen, terms = (_buffers(schema, rows) for schema in (CHOSEN, TERMS))
        kinds = (np.int64, np.float64, np.float64, np.int64, np.float64)
        candidates = tuple(np.empty(largest, dtype=kind) for kind in kinds)
        mark, clock = np.zeros(evidence.e.size, dtype=np.int64), np.zeros(1, dtype=np.int64)
        return [mark, clock, chosen, terms, candidates]

    parts = in_threads(len(units), scratch, unit)
    chosen, terms, plain, found, count, wides = zip(*parts, strict=True) if parts else ([],) * 6
    return Ranked(
        chosen=pl.concat(chosen) if chosen else pl.DataFrame(schema=CHOSEN),
        terms=pl.concat(terms) if terms else pl.DataFrame(schema=TERMS),
        plain=np.concatenate(plain) if plain else np.zeros(0, dtype=np.uint32),
        candidates=(pl.concat(found) if found else pl.DataFrame(schema=CANDIDATE))
        if every
        else None,
        count=sum(count),
        width=max(wides, default=width),
    )


_NUMPY: dict[Any, type] = {pl.UInt32: np.uint32, pl.Float64: np.float64, pl.Boolean: np.bool_}


def _buffers(schema: pl.Schema, rows: int) -> tuple[npt.NDArray[Any], ...]:
    return tuple(np.empty(rows, dtype=_NUMPY[kind]) for kind in schema.values())


def _frame(columns: tuple[npt.NDArray[Any], ...], schema: pl.Schema) -> pl.DataFrame:
    return pl.DataFrame(dict(zip(schema, columns, strict=True)), schema=schema)


def best_users(
    evidence: Evidence, categories: int, width: int
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(per category, its `width` best users with category affinity by engagement +
    affinity: c, u, total, t_category; the `width` best users by engagement alone: u,
    total). A category's best users are among the two (a user without affinity to it
    scores their engagement), and that is all `width` of them cost: one pass over the
    users' category terms."""
    (c, t), e = evidence.category.columns, fixed(evidence.e)
    width = min(width, e.size)  # no wider than every user
    totals, users, terms, kept = _best(evidence.category.ptr, c, t, e, categories, width)
    held = np.arange(width) < kept[:, None]  # (categories + 1) x width
    columns = {"c": np.nonzero(held)[0], "u": users[held], "total": totals[held]}
    found = pl.DataFrame(
        columns | {"t_category": terms[held]},
        schema={"c": pl.UInt32, "u": pl.UInt32, "total": pl.Float64, "t_category": pl.Float64},
    ).sort("c", "total", "u", descending=[False, True, False])
    near = found.filter(pl.col("c") < categories)
    return near, found.filter(pl.col("c") == categories).select("u", "total")


@numba.njit(nogil=True, cache=True)
def _best(k_ptr: Any, k_c: Any, k_t: Any, e: Any, categories: int, width: int) -> Any:
    """Per category, the `width` best (total, u, t_category) of the users with affinity to
    it, and in row `categories` the best by engagement alone (in no order); with how
    many each row holds. Kept in heaps: a capped run may ask for every user."""
    totals = np.empty((categories + 1, width), np.float64)
    users = np.empty((categories + 1, width), np.int64)
    terms = np.empty((categories + 1, width), np.float64)
    kept = np.zeros(categories + 1, np.int64)
    for u in range(e.size):
        if np.isnan(e[u]):
            continue
        row = categories
        kept[row] = _offer(totals[row], users[row], terms[row], kept[row], e[u], u, 0.0)
        for j in range(k_ptr[u], k_ptr[u + 1]):
            c, term = k_c[j], k_t[j]
            total = np.rint((e[u] + term) * _SCALE) / _SCALE
            kept[c] = _offer(totals[c], users[c], terms[c], kept[c], total, u, term)
    return totals, users, terms, kept


@numba.njit(cache=True, inline="always")
def _offer(
    totals: Any, users: Any, terms: Any, kept: int, total: float, u: Any, term: float
) -> int:
    """Keep (total, u, term) if it is among the best `totals.size` offered so far, in a
    heap whose root is the worst kept (each entry ranks after its children); returns
    how many are kept."""
    size = totals.size
    if kept < size:  # room: sift the entry up past the better parents
        at = kept
        while at > 0 and before(totals[(at - 1) // 2], users[(at - 1) // 2], total, u):
            parent = (at - 1) // 2
            totals[at], users[at], terms[at] = totals[parent], users[parent], terms[parent]
            at = parent
        totals[at], users[at], terms[at] = total, u, term
        return kept + 1
    if size == 0 or not before(total, u, totals[0], users[0]):
        return kept
    at = 0  # it replaces the worst: sift it down past the worse children
    while 2 * at + 1 < size:
        child = 2 * at + 1
        other = child + 1
        if other < size and before(totals[child], users[child], totals[other], users[other]):
            child = other
        if before(totals[child], users[child], total, u):
            break
        totals[at], users[at], terms[at] = totals[child], users[child], terms[child]
        at = child
    totals[at], users[at], terms[at] = total, u, term
    return kept


@numba.njit(nogil=True, cache=True)
def _rank(
    todo: Any,
    of: Any,
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
    e: Any,
    co: float,
    half: float,
    pool_ptr: Any,
    pool_u: Any,
    pool_total: Any,
    width: int,
    n: int,
    bound: int,
    mark: Any,
    clock: Any,
    chosen: Any,
    terms: Any,
    candidates: Any,
) -> Any:
    """One pass over `todo` (see `top_n`); `bound` >= 0 asks for every candidate (at
    most `bound`). `mark` holds, per user, the stamp of the product last looking at them
    (`clock`, in the high 32 bits: an older stamp means not seen, so it is never cleared)
    and what they are to it: excluded (`_BANNED`), seen but not a candidate (`_OTHER`),
    or a candidate (their slot). One word per user, so a product's evidence rows cost one
    random read each. The chosen rows (at most n per product) are written to the first
    `m` of the `chosen` buffers (CHOSEN's columns), and the terms of the `t` of them with
    evidence to the `terms` buffers (TERMS'); returns m, t, each product's state, and
    (with `bound`) every candidate and their count."""
    size = todo.size
    cp, cc, cu, ctotal, cexplicit, cslot, crank = chosen
    tp, tdirect, tco, tk, tcategory = terms
    state = np.empty(size, np.int8)
    every = max(bound, 0)
    ap = np.empty(every, np.uint32)
    au = np.empty(every, np.uint32)
    atotal = np.empty(every, np.float64)
    adirect = np.empty(every, np.float64)
    aco = np.empty(every, np.float64)
    ak = np.empty(every, np.uint32)
    acategory = np.empty(every, np.float64)
    # One product's candidates (users, terms, totals) and its best n of them.
    bu, bdirect, bco, bk, bcategory = candidates
    top_total = np.empty(n, np.float64)
    top_u = np.empty(n, np.int64)
    top_s = np.empty(n, np.int64)
    m = 0
    t = 0
    a = 0
    count = 0
    for i in range(size):
        p = np.int64(todo[i])
        c = np.int64(of[p])
        clock[0] += 1
        base = clock[0] << 32
        for j in range(x_ptr[p], x_ptr[p + 1]):
            mark[x_u[j]] = base | _BANNED
        b = 0
        for j in range(d_ptr[p], d_ptr[p + 1]):
            u = np.int64(d_u[j])
            if mark[u] != base | _BANNED:
                mark[u] = base | b
                bu[b], bdirect[b], bco[b], bk[b] = u, d_t[j], 0.0, 0
                b += 1
        for j in range(rel_ptr[p], rel_ptr[p + 1]):
            q, cos = np.int64(rel_q[j]), rel_cos[j]
            for k in range(t_ptr[q], t_ptr[q + 1]):
                u = np.int64(t_u[k])
                seen = mark[u]
                if seen < base:
                    mark[u] = base | b
                    s = b
                    bu[b], bdirect[b], bco[b], bk[b] = u, 0.0, 0.0, 0
                    b += 1
                else:
                    s = seen & _LOW
                    if s == _BANNED:
                        continue
                bco[s] += cos * t_w[k]
                bk[s] += 1
        kept = 0
        for s in range(b):
            u = bu[s]
            r = bco[s]
            bco[s] = co * (r / (r + half)) if bk[s] > 0 else 0.0
            if bdirect[s] + bco[s] <= 0.0:
                mark[u] = base | _OTHER  # not a candidate: may still come from the pool
                continue
            count += 1
            if np.isnan(e[u]):
                mark[u] = base | _OTHER
                continue
            bcategory[s] = 0.0
            for j in range(k_ptr[u], k_ptr[u + 1]):
                if k_c[j] == c:
                    bcategory[s] = k_t[j]
                    break
            total = np.rint((((e[u] + bdirect[s]) + bco[s]) + bcategory[s]) * _SCALE) / _SCALE
            if bound >= 0:
                ap[a], au[a], atotal[a] = p, u, total
                adirect[a], aco[a], ak[a], acategory[a] = bdirect[s], bco[s], bk[s], bcategory[s]
                a += 1
            kept = keep_best(top_total, top_u, top_s, kept, total, u, s)
        start, end = pool_ptr[c], pool_ptr[c + 1]
        if kept == 0:
            hit = False
            for j in range(start, min(start + n, end)):
                if mark[pool_u[j]] == base | _BANNED:
                    hit = True
                    break
            if not hit:
                state[i] = PLAIN
                continue
        first, had, x, j, rank = m, t, 0, start, 0
        while rank < n:
            # Skipped: the excluded, and the candidates (ranked by their evidence).
            while j < end and mark[pool_u[j]] >= base and mark[pool_u[j]] != base | _OTHER:
                j += 1
            if x == kept and j == end:
                break
            rank += 1
            cp[m], cc[m], crank[m] = p, c, rank
            if x < kept and (j == end or before(top_total[x], top_u[x], pool_total[j], pool_u[j])):
                s = top_s[x]
                cu[m], ctotal[m], cexplicit[m], cslot[m] = top_u[x], top_total[x], True, 0
                tp[t], tdirect[t], tco[t] = p, bdirect[s], bco[s]
                tk[t], tcategory[t] = bk[s], bcategory[s]
                t += 1
                x += 1
            else:
                cu[m], ctotal[m], cexplicit[m] = pool_u[j], pool_total[j], False
                cslot[m] = j - start
                j += 1
            m += 1
        state[i] = RANKED
        if width >= 0:  # users beyond the pool rank below its last: is the n-th above it?
            last = end - 1
            exact = (
                rank == n
                and end - start == width
                and not before(pool_total[last], pool_u[last], ctotal[m - 1], cu[m - 1])
            )
            if not exact:
                m, t = first, had
                state[i] = SHORT
    return (
        m,
        t,
        state,
        ap[:a].copy(),
        au[:a].copy(),
        atotal[:a].copy(),
        adirect[:a].copy(),
        aco[:a].copy(),
        ak[:a].copy(),
        acategory[:a].copy(),
        count,
    )
