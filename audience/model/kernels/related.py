"""Each product's related products: its most similar by the cosine of their user sets.

cosine(p, q) = (users of both) / sqrt(users of p x users of q). A product's related
products are its `related` most similar (ties by product code), if at least
`min_cosine`: a product sharing one user with p among thousands says nothing about p,
and would add all its users as p's candidates. Only users of two or more products
relate products (most users have one).

As a Polars plan (a self-join of the (product, user) pairs on the user, then a
group-by of the product pairs) this was most of the 29-42 s that relating products
took at 100x the sample; the compiled pass below counts each product's shared users
in an array, one product at a time (~6 s).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
import numpy.typing as npt

from audience.model.kernels.csr import Csr, in_threads, keep_best

#: Products per unit of work.
CHUNK = 500_000


def relate(touched: Csr, users: int, related: int, min_cosine: float) -> Csr:
    """p -> (q, cos), best first, from `touched`: p -> (u, ...) for every product code."""
    ptr, who = touched.ptr, touched.columns[0]
    products = ptr.size - 1
    by_user, their = _by_user(ptr, who, users)
    units = range(0, products, CHUNK)

    def scratch() -> list[npt.NDArray[np.int32]]:
        """`seen`, `shared`, `found` (per product) and the `clock` of `_relate`."""
        return [np.zeros(products, dtype=np.int32) for _ in range(3)] + [np.zeros(1, np.int32)]

    def unit(k: int, own: list[npt.NDArray[np.int32]]) -> tuple[npt.NDArray[Any], ...]:
        lo = units[k]
        found: tuple[npt.NDArray[Any], ...] = _relate(
            lo, min(lo + CHUNK, products), ptr, who, by_user, their, related, min_cosine, *own
        )
        return found

    parts = in_threads(len(units), scratch, unit)
    counts = np.concatenate([part[0] for part in parts]) if parts else np.zeros(0, np.int64)
    out = np.zeros(products + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    q = np.concatenate([part[1] for part in parts]) if parts else np.zeros(0, np.uint32)
    cos = np.concatenate([part[2] for part in parts]) if parts else np.zeros(0)
    return Csr(out, (q, cos))  # made here, of the types the passes take


@numba.njit(nogil=True, cache=True)
def _by_user(ptr: Any, who: Any, users: int) -> Any:
    """The transpose of p -> u: u -> p, each user's products in code order."""
    starts = np.zeros(users + 1, np.int64)
    for j in range(who.size):
        starts[who[j] + 1] += 1
    for u in range(users):
        starts[u + 1] += starts[u]
    products = np.empty(who.size, np.uint32)
    at = starts[:-1].copy()
    for p in range(ptr.size - 1):
        for j in range(ptr[p], ptr[p + 1]):
            u = who[j]
            products[at[u]] = p
            at[u] += 1
    return starts, products


@numba.njit(nogil=True, cache=True)
def _relate(
    lo: int,
    hi: int,
    ptr: Any,
    who: Any,
    by_user: Any,
    their: Any,
    related: int,
    min_cosine: float,
    seen: Any,
    shared: Any,
    found: Any,
    clock: Any,
) -> Any:
    """The related products of products lo..hi-1: (how many each has, q, cos).
    `seen`, `shared` and `found` are per-product scratch arrays, valid for a product
    where `seen` holds its stamp (`clock`), so they are never cleared."""
    counts = np.zeros(hi - lo, np.int64)
    out_q = np.empty((hi - lo) * related, np.uint32)
    out_cos = np.empty((hi - lo) * related, np.float64)
    top_cos = np.empty(related, np.float64)
    top_q = np.empty(related, np.int64)
    unused = np.empty(related, np.int64)
    m = 0
    for p in range(lo, hi):
        n_p = ptr[p + 1] - ptr[p]
        if n_p == 0 or related == 0:
            continue
        clock[0] += 1
        stamp = clock[0]
        k = 0
        for j in range(ptr[p], ptr[p + 1]):
            u = who[j]
            if by_user[u + 1] - by_user[u] < 2:
                continue
            for i in range(by_user[u], by_user[u + 1]):
                q = np.int64(their[i])
                if q == p:
                    continue
                if seen[q] != stamp:
                    seen[q] = stamp
                    shared[q] = 0
                    found[k] = q
                    k += 1
                shared[q] += 1
        kept = 0
        for f in range(k):
            q = np.int64(found[f])
            cos = shared[q] / np.sqrt(np.float64(n_p) * np.float64(ptr[q + 1] - ptr[q]))
            if cos < min_cosine:
                continue
            kept = keep_best(top_cos, top_q, unused, kept, cos, q, 0)
        for t in range(kept):
            out_q[m], out_cos[m] = top_q[t], top_cos[t]
            m += 1
        counts[p - lo] = kept
    return counts, out_q[:m].copy(), out_cos[:m].copy()
