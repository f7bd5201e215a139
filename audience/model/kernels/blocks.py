"""A block of products' best users among a block of users, with the collaborative
term: the sums of a segment's pass (`scores._totals`), user by user, so that the
Spark engine, which scores every (product block, user block) pair on its executors and
merges the blocks' bests, ranks as a segment of its artifact does.

Each user's total uses the compiled pass's own functions (`pooled`, `with_evidence`,
`with_cf`) and each ALS score its factor-order float64 sum (`_als_all`: a user's sum
does not depend on the other users of its block). `alone` ranks by ALS's score only
(users with a score above 0, not banned), as ALS's own top k does.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from audience.model.kernels.scores import (
    _als_all,
    _best,
    _descending,
    pooled,
    with_cf,
    with_evidence,
)


@numba.njit(nogil=True, cache=True)
def best(
    e: Any,
    users: Any,
    kc_ptr: Any,
    kc_u: Any,
    kc_t: Any,
    items: Any,
    of: Any,
    x_ptr: Any,
    x_u: Any,
    x_direct: Any,
    x_r: Any,
    x_k: Any,
    b_ptr: Any,
    b_u: Any,
    weights: Any,
    cf_half: float,
    co: float,
    half: float,
    n: int,
    alone: bool,
) -> Any:
    """For each product j of the block (factors `items[j]`, category `of[j]`, < 0: none)
    and each of `weights`, its n best users of the block, best first, ties by the
    smaller place: rows (j, weight's place, user's place, total, s, direct, r, k,
    category term).

    Users by place: `e` their engagement (NaN: unscored), `users` their factors
    (factors x users, float32), `kc_*` each category's users and terms (CSR by
    category code). Product j's evidence in CSR by j: `x_u` users, `x_direct` direct
    terms, `x_r` co-interaction sums, `x_k` related products that brought them; `b_u`
    its banned users."""
    size = e.size
    rows = of.size * weights.size * min(n, size)
    out_j = np.empty(rows, np.int64)
    out_w, out_u = np.empty(rows, np.int64), np.empty(rows, np.int64)
    out_total, out_s = np.empty(rows), np.empty(rows)
    out_direct, out_r = np.empty(rows), np.empty(rows)
    out_k, out_category = np.empty(rows, np.int64), np.empty(rows)
    at = 0
    slot = np.full(size, -1, np.int64)
    values = np.empty(size)
    for j in range(of.size):
        s = _als_all(users, items[j])
        category_of = np.zeros(size)
        for w in range(weights.size):
            weight = weights[w]
            if alone:
                for u in range(size):
                    values[u] = s[u] if s[u] > 0.0 else -np.inf
            else:
                for u in range(size):
                    values[u] = -np.inf if np.isnan(e[u]) else e[u]
                pooled(values, e, kc_ptr, kc_u, kc_t, of[j], category_of)
                for i in range(x_ptr[j], x_ptr[j + 1]):
                    u = x_u[i]
                    slot[u] = i
                    su = s[u] if weight > 0.0 else 0.0
                    values[u] = with_evidence(
                        values[u], e[u], category_of[u], x_direct[i], x_r[i], x_k[i],
                        co, half, su, weight, cf_half,
                    )  # fmt: skip
                if weight > 0.0:
                    for u in range(size):
                        values[u] = with_cf(
                            values[u], e[u], s[u], category_of[u], slot[u], weight, cf_half
                        )
            for i in range(b_ptr[j], b_ptr[j + 1]):
                values[b_u[i]] = -np.inf
            best_v, best_c = _best(values, n)
            by_place = np.argsort(best_c)
            order = by_place[_descending(best_v[by_place])]
            for o in order:
                u = best_c[o]
                i = slot[u]
                out_j[at], out_w[at], out_u[at] = j, w, u
                out_total[at], out_s[at], out_category[at] = best_v[o], s[u], category_of[u]
                has = i >= 0 and not alone
                out_direct[at] = x_direct[i] if has else 0.0
                out_r[at] = x_r[i] if has else 0.0
                out_k[at] = x_k[i] if has else 0
                at += 1
        for i in range(x_ptr[j], x_ptr[j + 1]):
            slot[x_u[i]] = -1
    return (
        out_j[:at],
        out_w[:at],
        out_u[:at],
        out_total[:at],
        out_s[:at],
        out_direct[:at],
        out_r[:at],
        out_k[:at],
        out_category[:at],
    )
