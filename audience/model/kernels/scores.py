"""Every user's audience total for one product, in one compiled pass (numba).

The same sums, in the same order, as `topn` makes for a product's candidates, so a
segment's users, ranks and totals agree with the stored lists bit for bit:

- every scored user: engagement + category term, rounded (the category pool's total);
  engagement alone for a user without affinity to the category;
- a user with product-level evidence (direct, or via a related product) whose terms
  sum above 0: ((engagement + direct) + co) + category, rounded;
- an excluded or unscored user: -inf (never in a segment).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numba
import numpy as np
import numpy.typing as npt

from audience.model.kernels.csr import Csr, fixed
from audience.model.kernels.topn import Evidence

#: Totals are rounded to 12 decimals, as `topn` rounds them.
_SCALE = 1e12


def by_category(category: Csr, categories: int) -> Csr:
    """The category terms u -> (c, t) turned around, c -> (u, t): a product's baseline
    touches only its category's users instead of scanning every user's categories."""
    users = np.repeat(np.arange(category.ptr.size - 1, dtype=np.uint32), np.diff(category.ptr))
    c, t = category.columns
    order = np.argsort(c, kind="stable")  # users ascending within each category
    ptr = np.zeros(categories + 1, dtype=np.int64)
    np.cumsum(np.bincount(c, minlength=categories), out=ptr[1:])
    return Csr(fixed(ptr), (fixed(users[order]), fixed(t[order])))


class Scored(NamedTuple):
    """One product's pass (`scored`): every user's total, and how it was made."""

    totals: npt.NDArray[np.float64]  # by user code; -inf: never in a segment
    explicit: npt.NDArray[np.int64]  # the users with product-level evidence, by slot
    slot: npt.NDArray[np.int64]  # by user code: its slot among `explicit` (-1: none;
    # empty for a product without evidence)
    direct: npt.NDArray[np.float64]  # by slot: the direct term
    co: npt.NDArray[np.float64]  # by slot: the co-interaction sum r (before saturation)
    related: npt.NDArray[np.int64]  # by slot: how many related products brought it
    s: npt.NDArray[np.float64]  # by user code: ALS's score (empty: no collaborative term)
    category: npt.NDArray[np.float64]  # by user code: its category term (the same)


def totals(
    evidence: Evidence, turned: Csr, p: int, c: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """(total per user code, the users with product-level evidence) for product code `p`
    (< 0: a product without evidence) of category code `c` (< 0: none); `turned` is
    `by_category(evidence.category)`."""
    found = scored(evidence, turned, p, c)
    return found.totals, found.explicit


def scored(
    evidence: Evidence,
    turned: Csr,
    p: int,
    c: int,
) -> Scored:
    """`totals` with the parts they were summed from (for the reasons of stored rows)."""
    e, cf = evidence, evidence.cf
    if cf is None or p < 0 or cf.weight <= 0:
        users, item, weight, half = _NO_FACTORS, _NO_ITEM, 0.0, 1.0
    else:
        users, item, weight, half = cf.users, cf.items[p], cf.weight, cf.half
    args = [*e.arrays(), *turned.flat(), fixed(e.e), float(e.co), float(e.half), p, c]
    args += [users, item, float(weight), float(half)]
    return Scored(*_totals(*args))


_NO_FACTORS = np.zeros((0, 0), np.float32)
_NO_ITEM = np.zeros(0, np.float32)
#: Users per block of the pass that scores every user by ALS: a block's sum stays in
#: cache while the factors go by, and its rows vectorize.
_BLOCK = 256


@numba.njit(nogil=True, cache=True)
def _als_all(users: Any, item: Any) -> Any:
    """ALS's score of every user: the factors' products summed in float64, in factor
    order (the same bits on any machine), by blocks of users, factor by factor."""
    out = np.zeros(users.shape[1])
    for start in range(0, out.size, _BLOCK):
        end = min(start + _BLOCK, out.size)
        sums = out[start:end]
        for k in range(item.size):
            row, y = users[k, start:end], np.float64(item[k])
            for i in range(row.size):
                sums[i] += np.float64(row[i]) * y
    return out


@numba.njit(nogil=True, cache=True)
def _totals(
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
    co: float,
    half: float,
    p: int,
    c: int,
    cf_users: Any,
    cf_item: Any,
    cf_weight: float,
    cf_half: float,
) -> Any:
    users = e.size
    out = np.where(np.isnan(e), -np.inf, e)
    dense = cf_item.size > 0
    # A user's category term, kept for the collaborative pass (which needs every user's).
    category_of = np.zeros(users if dense else 0)
    pooled(out, e, kc_ptr, kc_u, kc_t, c, category_of)
    if p < 0:
        none, nobody = np.zeros(0), np.zeros(0, np.int64)
        return out, nobody, nobody, none, none, nobody, none, none  # no evidence
    s = _als_all(cf_users, cf_item) if dense else np.zeros(0)
    # Each user's slot among the product's candidates, in the order topn meets them.
    slot = np.full(users, -1, np.int64)
    banned = np.zeros(users, np.bool_)
    for j in range(x_ptr[p], x_ptr[p + 1]):
        banned[x_u[j]] = True
    bu, bdirect, bco, bk = candidates(
        rel_ptr, rel_q, rel_cos, t_ptr, t_u, t_w, d_ptr, d_u, d_t, p, banned, slot
    )
    for s_ in range(bu.size):
        u = bu[s_]
        su = s[u] if dense else 0.0
        category = category_term(k_ptr, k_c, k_t, u, c)
        out[u] = with_evidence(
            out[u], e[u], category, bdirect[s_], bco[s_], bk[s_], co, half, su, cf_weight, cf_half
        )
    if dense:
        # Every other user with an ALS score above 0, summed as a candidate's total is
        # (with no co-interaction term); without branches, so that the loop vectorizes.
        for u in range(users):
            out[u] = with_cf(out[u], e[u], s[u], category_of[u], slot[u], cf_weight, cf_half)
    for j in range(x_ptr[p], x_ptr[p + 1]):
        out[x_u[j]] = -np.inf
    return out, bu, slot, bdirect, bco, bk, s, category_of


@numba.njit(nogil=True, cache=True, inline="always")
def pooled(out: Any, e: Any, kc_ptr: Any, kc_u: Any, kc_t: Any, c: int, category_of: Any) -> None:
    """Every scored user of category c's `out`: its category pool's total, engagement +
    category term, rounded (`category_of`, unless empty, keeps the term)."""
    if c < 0:
        return
    for j in range(kc_ptr[c], kc_ptr[c + 1]):
        u = kc_u[j]
        if not np.isnan(e[u]):
            out[u] = np.rint((e[u] + kc_t[j]) * _SCALE) / _SCALE
            if category_of.size:
                category_of[u] = kc_t[j]


@numba.njit(nogil=True, cache=True)
def candidates(
    rel_ptr: Any,
    rel_q: Any,
    rel_cos: Any,
    t_ptr: Any,
    t_u: Any,
    t_w: Any,
    d_ptr: Any,
    d_u: Any,
    d_t: Any,
    p: int,
    banned: Any,
    slot: Any,
) -> Any:
    """Product p's users with product-level evidence, not `banned`, in the order topn
    meets them: (users, direct term, co-interaction sum r, related products that
    brought each); `slot` (-1 elsewhere) gets each one's place."""
    reach = d_ptr[p + 1] - d_ptr[p]
    for j in range(rel_ptr[p], rel_ptr[p + 1]):
        q = rel_q[j]
        reach += t_ptr[q + 1] - t_ptr[q]
    bu = np.empty(reach, np.int64)
    bdirect, bco = np.zeros(reach), np.zeros(reach)
    bk = np.zeros(reach, np.int64)
    b = 0
    for j in range(d_ptr[p], d_ptr[p + 1]):
        u = d_u[j]
        if not banned[u]:
            slot[u] = b
            bu[b], bdirect[b] = u, d_t[j]
            b += 1
    for j in range(rel_ptr[p], rel_ptr[p + 1]):
        q, cos = rel_q[j], rel_cos[j]
        for k in range(t_ptr[q], t_ptr[q + 1]):
            u = t_u[k]
            if banned[u]:
                continue
            s_ = slot[u]
            if s_ < 0:
                s_ = b
                slot[u] = s_
                bu[b] = u
                b += 1
            bco[s_] += cos * t_w[k]
            bk[s_] += 1
    return bu[:b], bdirect[:b], bco[:b], bk[:b]


@numba.njit(nogil=True, cache=True, inline="always")
def with_evidence(
    total: float,
    e: float,
    category: float,
    direct: float,
    r: float,
    k: int,
    co: float,
    half: float,
    s: float,
    weight: float,
    cf_half: float,
) -> float:
    """A user's total with product-level evidence: ((e + d) + term) + category, rounded,
    with d the direct term plus the collaborative one (of ALS score s; a user with a
    direct term is excluded when that term is on, so at most one is above 0) and term
    the co-interaction term of sum r from k related products. `total` (the pool's)
    when no evidence counts (d + term <= 0) or the user is not scored."""
    d = direct + (cf_term(s, weight, cf_half) if s > 0.0 else 0.0)
    term = co * (r / (r + half)) if k > 0 else 0.0
    if d + term <= 0.0 or np.isnan(e):
        return total
    return float(np.rint((((e + d) + term) + category) * _SCALE) / _SCALE)


@numba.njit(nogil=True, cache=True, inline="always")
def cf_term(s: float, weight: float, half: float) -> float:
    """The collaborative term of ALS score s > 0 (`topn.Collaborative.term`)."""
    return weight * (s / (s + half))


@numba.njit(nogil=True, cache=True, inline="always")
def category_term(k_ptr: Any, k_c: Any, k_t: Any, u: int, c: int) -> float:
    """User u's term for category c (0: none)."""
    for j in range(k_ptr[u], k_ptr[u + 1]):
        if k_c[j] == c:
            return float(k_t[j])
    return 0.0


@numba.njit(nogil=True, cache=True, inline="always")
def with_cf(
    total: float, e: float, s: float, category: float, slot: int, weight: float, half: float
) -> float:
    """A user's total with its collaborative term, if it has one and no evidence."""
    d = cf_term(s, weight, half)
    summed = np.rint((((e + d) + 0.0) + category) * _SCALE) / _SCALE
    return summed if (s > 0.0) & (slot < 0) & (e == e) else total


#: Up to this k, `top` takes the k best in one compiled pass instead of a partition.
SMALL_K = 64


#: Values sampled to guess the k-th best value (`_top_large`).
SAMPLE = 8192


def top(values: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.int64]:
    """The codes of the k best finite values, best first, ties by the smaller code."""
    if k <= 0:
        return np.zeros(0, np.int64)
    if k <= SMALL_K:
        found: npt.NDArray[np.int64] = _top_small(values, k)
        return found
    best: npt.NDArray[np.int64] = _top_large(values, k)
    return best


@numba.njit(nogil=True, cache=True)
def _at_least(values: Any, threshold: float) -> Any:
    """The codes (ascending) of the finite values >= threshold."""
    count = 0
    for i in range(values.size):
        if values[i] >= threshold and np.isfinite(values[i]):
            count += 1
    out = np.empty(count, np.int64)
    j = 0
    for i in range(values.size):
        if values[i] >= threshold and np.isfinite(values[i]):
            out[j] = i
            j += 1
    return out


@numba.njit(nogil=True, cache=True)
def _top_large(values: Any, k: int) -> Any:
    """`top` for a large k without sorting or partitioning every value: a strided sample
    guesses a value a little below the k-th best, one pass keeps the values at or above
    it, and only those are sorted. When the guess keeps fewer than k (the sample missed
    the best values), every finite value is kept instead, so the answer is exact."""
    step = max(1, values.size // SAMPLE)
    sample = values[::step]
    sample = sample[np.isfinite(sample)]
    threshold = -np.inf
    if sample.size > 0:
        finite = values.size * (sample.size / ((values.size + step - 1) // step))
        # The k-th best's place in the sample, with a margin of a quarter and 32 values.
        at = int(k / finite * sample.size * 1.25) + 32
        if at < sample.size:
            threshold = np.partition(-sample, at)[at] * -1.0
    kept = _at_least(values, threshold)
    if kept.size < k and threshold > -np.inf:
        kept = _at_least(values, -np.inf)
    # A stable sort of the kept codes (ascending) by value, best first: ties by code.
    return kept[_descending(values[kept])[:k]]


@numba.njit(nogil=True, cache=True)
def _descending(values: Any) -> Any:
    """The stable order of finite `values`, largest first: a radix sort, 8 bits at a
    time, of keys whose unsigned order is the values', skipping the digits every key
    shares (under half a merge sort's time for 14,000 values). -0.0 and 0.0 are one
    value, as they compare."""
    n = values.size
    keys = np.empty(n, np.uint64)
    sign = np.uint64(1) << np.uint64(63)
    for i in range(n):
        bits = np.float64(values[i] + 0.0).view(np.uint64)  # -0.0 + 0.0 is 0.0
        # Ascending unsigned order of the values, then flipped: largest first.
        keys[i] = ~(~bits if bits & sign else bits | sign)
    order = np.arange(n)
    spare = np.empty(n, np.int64)
    counts = np.zeros(257, np.int64)
    for shift in range(0, 64, 8):
        counts[:] = 0
        for i in range(n):
            counts[((keys[order[i]] >> np.uint64(shift)) & np.uint64(255)) + 1] += 1
        if counts.max() == n:
            continue  # every key has this digit (the sign and exponent bits, often)
        for b in range(256):
            counts[b + 1] += counts[b]
        for i in range(n):
            digit = (keys[order[i]] >> np.uint64(shift)) & np.uint64(255)
            spare[counts[digit]] = order[i]
            counts[digit] += 1
        order, spare = spare, order
    return order


@numba.njit(nogil=True, cache=True)
def _worst(best_v: Any, best_c: Any) -> int:
    """The slot of the worst kept value (on a tie, the larger code)."""
    worst = 0
    for j in range(1, best_v.size):
        if best_v[j] < best_v[worst] or (best_v[j] == best_v[worst] and best_c[j] > best_c[worst]):
            worst = j
    return worst


@numba.njit(nogil=True, cache=True)
def _best(values: Any, k: int) -> Any:
    """The k best finite values and their codes, unordered, in one pass. Codes come in
    ascending order, so a later value equal to the worst kept loses its tie."""
    best_v = np.empty(k)
    best_c = np.empty(k, np.int64)
    held = 0
    worst = 0
    for i in range(values.size):
        v = values[i]
        if not np.isfinite(v):
            continue
        if held < k:
            best_v[held], best_c[held] = v, i
            held += 1
            if held == k:
                worst = _worst(best_v, best_c)
        elif v > best_v[worst]:
            best_v[worst], best_c[worst] = v, i
            worst = _worst(best_v, best_c)
    return best_v[:held], best_c[:held]


def _top_small(values: npt.NDArray[np.float64], k: int) -> npt.NDArray[np.int64]:
    best_v, best_c = _best(values, k)
    found: npt.NDArray[np.int64] = best_c[np.lexsort((best_c, -best_v))]
    return found
