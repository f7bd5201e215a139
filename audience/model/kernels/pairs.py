"""The log's (product, user) and (user, category) sums, in one compiled pass each.

The coded events come sorted by user (`audience.model.codes.Log`). A stable counting sort by
product puts each product's events in user order, so each (product, user) pair is a
run of adjacent events; a user's events are already adjacent for their category sums.
Each pass writes its sums as a CSR table (`csr`), summed in the events' order.
As Polars sorts and group-bys of the same sums this took 13 s at 100x the sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numba
import numpy as np
import numpy.typing as npt
import polars as pl

from audience.model.kernels.csr import Csr, fixed


@dataclass(frozen=True)
class Events:
    """The log's events as both passes read them: product code `p`, user code `u`
    (ascending) and type code `kind`, with each type's `weight` and whether it `excludes`
    (indexed by type code). The passes look the weight and the exclusion up per event:
    as columns they took 0.5 GB at 100x the sample, and more as NumPy copies."""

    p: npt.NDArray[np.uint32]
    u: npt.NDArray[np.uint32]
    kind: npt.NDArray[np.uint32]
    weight: npt.NDArray[np.float64]
    excludes: npt.NDArray[np.bool_]

    @classmethod
    def of(
        cls,
        p: npt.NDArray[Any],
        u: npt.NDArray[Any],
        kind: npt.NDArray[Any],
        weight: npt.NDArray[Any],
        excludes: npt.NDArray[Any],
    ) -> Events:
        """The events, checked to come sorted by user: both passes read a user's events
        as one run."""
        if not pl.Series(u).is_sorted():
            raise ValueError(
                "the events must come sorted by user code (as audience.model.codes makes them)"
            )
        return cls(fixed(p), fixed(u), fixed(kind), fixed(weight), np.asarray(excludes, np.bool_))


@dataclass(frozen=True)
class Pairs:
    """Per product, its users with their summed event weights (`touched`: p -> (u, w)),
    the event types of each of those pairs (`kinds`, beside touched's entries: bit k is
    type code k), the users with a direct term (`direct`: p -> (u, t_direct), from the
    types that do not exclude) and the excluded users (`excluded`: p -> (u))."""

    touched: Csr
    kinds: npt.NDArray[np.uint32]
    direct: Csr
    excluded: Csr


def pairs(events: Events, products: int, direct: float, half: float) -> Pairs:
    """The (product, user) sums of `events`; t_direct = direct x d / (d + half), d the
    summed weight of the user's events on the product through types that do not exclude."""
    e = events
    found = _pairs(e.p, e.u, e.kind, e.weight, e.excludes, products, direct, half)
    t_ptr, t_u, t_w, t_k, d_ptr, d_u, d_t, x_ptr, x_u = found
    return Pairs(Csr(t_ptr, (t_u, t_w)), t_k, Csr(d_ptr, (d_u, d_t)), Csr(x_ptr, (x_u,)))


def by_category(
    events: Events,
    of: npt.NDArray[Any],
    users: int,
    categories: int,
    scale: float,
    half: float,
) -> Csr:
    """u -> (c, t_category), c ascending: t_category = scale x k / (k + half), k the
    user's summed event weight on products of category c, `of` each product code's
    category code (< 0: none, left out)."""
    e = events
    ptr, cs, ts = _by_category(
        e.p, e.u, e.kind, e.weight, fixed(of), users, categories, scale, half
    )
    return Csr(ptr, (cs, ts))


@numba.njit(nogil=True, cache=True)
def _pairs(
    p: Any, u: Any, kind: Any, weight: Any, excludes: Any, products: int, direct: float, half: float
) -> Any:
    n = p.size
    starts = np.zeros(products + 1, np.int64)
    for i in range(n):
        starts[p[i] + 1] += 1
    for k in range(products):
        starts[k + 1] += starts[k]
    # Each event's user, weight and whether it excludes, by product (each product's in
    # user order): written at random once, then read in order. Read at random through
    # the events' order by product instead, they took 1.5-2 s more at 100x the sample.
    su, sw, sx = np.empty(n, np.uint32), np.empty(n), np.empty(n, np.bool_)
    sk = np.empty(n, np.uint8)
    at = starts[:-1].copy()
    for i in range(n):
        j = at[p[i]]
        su[j], sw[j], sx[j], sk[j] = u[i], weight[kind[i]], excludes[kind[i]], kind[i]
        at[p[i]] = j + 1
    t_ptr, d_ptr, x_ptr = np.zeros((3, products + 1), np.int64)
    t_u, d_u, x_u, t_k = np.empty((4, n), np.uint32)
    t_w, d_t = np.empty(n), np.empty(n)
    t = d = e = 0
    for k in range(products):
        j = starts[k]
        while j < starts[k + 1]:
            user = su[j]
            total, kept, some, banned, bits = 0.0, 0.0, False, False, np.uint32(0)
            while j < starts[k + 1] and su[j] == user:
                total += sw[j]
                bits |= np.uint32(1) << np.uint32(sk[j])
                if sx[j]:
                    banned = True
                else:
                    kept += sw[j]
                    some = True
                j += 1
            t_u[t], t_w[t], t_k[t] = user, total, bits
            t += 1
            if some:
                d_u[d], d_t[d] = user, direct * (kept / (kept + half))
                d += 1
            if banned:
                x_u[e] = user
                e += 1
        t_ptr[k + 1], d_ptr[k + 1], x_ptr[k + 1] = t, d, e
    # Their heads, not copies: the unused tails were never written, so they hold no
    # memory, and copying the heads asked for 1.2 GB more at 100x the sample.
    return t_ptr, t_u[:t], t_w[:t], t_k[:t], d_ptr, d_u[:d], d_t[:d], x_ptr, x_u[:e]


@numba.njit(nogil=True, cache=True)
def _by_category(
    p: Any,
    u: Any,
    kind: Any,
    weight: Any,
    of: Any,
    users: int,
    categories: int,
    scale: float,
    half: float,
) -> Any:
    n = u.size
    ptr = np.zeros(users + 1, np.int64)
    out_c = np.empty(n, np.uint32)
    out_t = np.empty(n)
    sums = np.zeros(categories)
    seen = np.zeros(categories, np.bool_)
    m, i = 0, 0
    while i < n:
        user = u[i]
        first = m
        while i < n and u[i] == user:
            k = of[p[i]]
            if k >= 0:
                if not seen[k]:  # kept in order as found: a user has few categories
                    seen[k] = True
                    at = m
                    while at > first and out_c[at - 1] > k:
                        out_c[at] = out_c[at - 1]
                        at -= 1
                    out_c[at] = k
                    m += 1
                sums[k] += weight[kind[i]]
            i += 1
        for j in range(first, m):
            k = out_c[j]
            out_t[j] = scale * (sums[k] / (sums[k] + half))
            sums[k], seen[k] = 0.0, False
        ptr[user + 1] = m
    for k in range(users):  # users without a category term hold no entries
        ptr[k + 1] = max(ptr[k + 1], ptr[k])
    return ptr, out_c[:m], out_t[:m]  # heads, not copies (see `_pairs`)
